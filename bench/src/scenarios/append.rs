//! `append`: S streams x C append sessions each, writing batches of chained records for a
//! duration, unbounded or paced to a total target rate. Reports acked throughput and
//! submit-to-ack latency, then reads every stream back and verifies it.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use s2_sdk::S2Basin;

use super::{
    check_batch_shape, counted_bar, create_stream, read_back, run_writer, timed_bar,
    unacked_batches_per_session, Ctx, WriterSpec, MIB,
};
use crate::moto::object_writes_in;
use crate::report::{Latency, Outcome};
use crate::server::{cpu_seconds, rss_mib};

/// Unacknowledged bytes all writers together may hold (each gets 1 to 5 MiB of it).
const UNACKED_BUDGET: u64 = 256 * MIB;

pub async fn run(ctx: &Ctx, basin: &S2Basin) -> Result<Outcome> {
    let knobs = &ctx.knobs;
    check_batch_shape(knobs.record_size, knobs.batch)?;
    if knobs.streams == 0 || knobs.sessions == 0 {
        bail!("--streams and --sessions must be at least 1");
    }
    if knobs.sessions > usize::from(u16::MAX) {
        bail!("--sessions must be at most {}", u16::MAX);
    }
    let writers = knobs.streams * knobs.sessions;
    let batch_bytes = (knobs.batch * knobs.record_size) as f64;
    // The SDK lets each session hold 5 MiB unacknowledged; across 1,000 sessions that is a
    // backlog no server acks within the SDK's 30 s ack timeout. Share one budget instead,
    // in whole batches (at least one per session).
    let share = UNACKED_BUDGET / writers as u64;
    let batch_len = (knobs.batch * knobs.record_size) as u64;
    let unacked_bytes = share.clamp(MIB, 5 * MIB) as u32;
    let unacked_batches = u32::try_from(share / batch_len.max(1))
        .ok()
        .and_then(NonZeroU32::new)
        .map_or(NonZeroU32::MIN, |fits| {
            fits.min(unacked_batches_per_session(writers))
        });
    let batches_per_sec = match knobs.target_mibps {
        Some(mibps) if mibps > 0.0 => Some(mibps * MIB as f64 / writers as f64 / batch_bytes),
        Some(_) => bail!("--target-mibps must be positive"),
        None => None,
    };

    // Before the writes, so the two never share the machine.
    let loopback = if knobs.iperf3 {
        let seconds = if ctx.quick { 2 } else { 5 };
        Some(crate::loopback::iperf3_mib_per_s(seconds).await?)
    } else {
        None
    };

    let mut streams = Vec::with_capacity(knobs.streams);
    for i in 0..knobs.streams {
        let name = format!("append-{i:04}");
        let stream = create_stream(basin, &name).await?;
        streams.push((name, stream));
    }

    let duration = ctx.duration();
    let acked = Arc::new(AtomicU64::new(0));
    let (bar, ticker) = timed_bar("append", duration, acked.clone(), "MiB acked", MIB);
    let stalls = tokio::spawn(stalled_seconds(acked.clone(), duration));
    let cpu_start = ctx.server_pid.and_then(cpu_seconds);
    let writes_start = object_writes(ctx)?;
    let dir_peak = ctx.data_dir.clone().map(|dir| {
        tokio::spawn(async move {
            let mut peak = 0u64;
            let end = Instant::now() + duration;
            while Instant::now() < end {
                let dir = dir.clone();
                let bytes = tokio::task::spawn_blocking(move || crate::server::dir_bytes(&dir))
                    .await
                    .unwrap_or(0);
                peak = peak.max(bytes);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            peak
        })
    });
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(writers);
    for (index, (name, stream)) in streams.iter().enumerate() {
        for session in 0..knobs.sessions {
            let spec = WriterSpec {
                writer: session as u16,
                record_size: knobs.record_size,
                batch_records: knobs.batch,
                batches_per_sec,
                phase: (index * knobs.sessions + session) as f64 / writers as f64,
                deadline: Some(deadline),
                max_records: None,
                max_unacked_bytes: Some(unacked_bytes),
                max_unacked_batches: unacked_batches,
            };
            let task = tokio::spawn(run_writer(
                stream.clone(),
                name.clone(),
                spec,
                acked.clone(),
            ));
            tasks.push((index, task));
        }
    }

    let mut acks = Latency::new();
    let mut per_stream: Vec<Vec<(u16, u64)>> = vec![Vec::new(); streams.len()];
    let mut records: u64 = 0;
    let mut bytes: u64 = 0;
    let mut first_error = None;
    for (index, task) in tasks {
        match task.await {
            Ok(Ok(result)) => {
                acks.merge(&result.acks);
                records += result.records;
                bytes += result.bytes;
                per_stream[index].push((result.writer, result.records));
            }
            Ok(Err(err)) => {
                if first_error.is_none() {
                    first_error = Some(err);
                }
            }
            Err(err) => {
                if first_error.is_none() {
                    first_error = Some(anyhow!("writer task failed: {err}"));
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let writes_during = object_writes(ctx)?
        .zip(writes_start)
        .map(|(end, start)| end - start);
    // Before reading back, which makes the server hold more.
    let rss_end = ctx.server_pid.and_then(rss_mib);
    let dir_peak_mib = match dir_peak {
        Some(task) => task.await.ok().map(|bytes| bytes as f64 / MIB as f64),
        None => None,
    };
    let cpu_used = ctx
        .server_pid
        .and_then(cpu_seconds)
        .zip(cpu_start)
        .map(|(end, start)| end - start);
    ticker.abort();
    bar.finish_and_clear();
    let stalled = stalls.await.unwrap_or(0);
    if let Some(err) = first_error {
        return Err(err);
    }

    let verify_bar = counted_bar("verify", records, "records");
    for ((name, stream), writers) in streams.iter().zip(&per_stream) {
        let count = writers.iter().map(|(_, n)| n).sum();
        read_back(stream, name, count, writers, &verify_bar).await?;
    }
    verify_bar.finish_and_clear();

    let mut outcome = Outcome::new("append");
    outcome.set_rates(bytes, records, elapsed);
    outcome.set_latency(&acks);
    outcome
        .extra
        .insert("stalled_seconds".to_owned(), stalled as f64);
    outcome
        .extra
        .insert("appended_mib".to_owned(), bytes as f64 / MIB as f64);
    if let Some(cpu) = cpu_used {
        // What the server spends per unit of work: unlike throughput, it does not depend
        // on how much of the machine the load generator takes.
        outcome.extra.insert(
            "server_cpu_us_per_record".to_owned(),
            cpu * 1e6 / records.max(1) as f64,
        );
        outcome.extra.insert(
            "server_cpu_ms_per_mib".to_owned(),
            cpu * 1e3 / (bytes as f64 / MIB as f64).max(1e-9),
        );
    }
    if let Some(writes) = writes_during {
        // While the writers ran, not counting set-up and read-back: at a paced load, what
        // the server bills per second.
        outcome.extra.insert(
            "object_writes_per_s".to_owned(),
            writes as f64 / elapsed.as_secs_f64().max(1e-9),
        );
    }
    if let Some(peak) = dir_peak_mib {
        outcome.extra.insert("data_dir_peak_mib".to_owned(), peak);
    }
    if let Some(rss) = rss_end {
        let appended_mib = bytes as f64 / MIB as f64;
        outcome.extra.insert("rss_end_mib".to_owned(), rss);
        outcome
            .extra
            .insert("rss_per_appended".to_owned(), rss / appended_mib.max(1.0));
    }
    if let (Some(loopback), Some(appended)) = (loopback, outcome.mib_per_s) {
        outcome
            .extra
            .insert("iperf3_mib_per_s".to_owned(), loopback);
        outcome
            .extra
            .insert("share_of_iperf3".to_owned(), appended / loopback);
    }
    outcome.note = format!(
        "ack latency; {}x{} sessions, {} B records, {}/batch{}",
        knobs.streams,
        knobs.sessions,
        knobs.record_size,
        knobs.batch,
        knobs
            .target_mibps
            .map_or(String::new(), |mibps| format!(", target {mibps} MiB/s"))
    );
    Ok(outcome)
}

/// Whole seconds of the run in which not one byte was acknowledged.
async fn stalled_seconds(acked: Arc<AtomicU64>, duration: std::time::Duration) -> u64 {
    let mut stalled = 0;
    let mut last = 0;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.tick().await;
    for _ in 0..duration.as_secs() {
        tick.tick().await;
        let now = acked.load(Ordering::Relaxed);
        if now == last {
            stalled += 1;
        }
        last = now;
    }
    stalled
}

/// The object writes the server's moto has logged so far, if it has one.
fn object_writes(ctx: &Ctx) -> Result<Option<u64>> {
    ctx.moto_log.as_deref().map(object_writes_in).transpose()
}
