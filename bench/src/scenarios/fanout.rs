//! `fanout`: N read sessions tail one stream while a single writer appends at a modest
//! rate. Reports deliveries per second, delivery latency and reader errors.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use s2_sdk::S2Basin;
use tokio::sync::{mpsc, watch};

use super::{
    check_batch_shape, create_stream, run_writer, tail_reader, timed_bar, Ctx, WriterSpec,
};
use crate::report::{Latency, Outcome};

pub async fn run(ctx: &Ctx, basin: &S2Basin) -> Result<Outcome> {
    let readers = ctx.pick(ctx.knobs.readers, 100, 20);
    if readers == 0 {
        bail!("--readers must be at least 1");
    }
    let rate = ctx.knobs.fanout_rate;
    if rate.is_nan() || rate <= 0.0 {
        bail!("--fanout-rate must be positive");
    }
    let record_size = ctx.knobs.record_size;
    check_batch_shape(record_size, 1)?;

    let name = "fanout";
    let stream = create_stream(basin, name).await?;

    let (total_tx, total_rx) = watch::channel(None);
    let (ready_tx, mut ready_rx) = mpsc::channel(readers);
    let delivered = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..readers)
        .map(|_| {
            tokio::spawn(tail_reader(
                stream.clone(),
                name.to_owned(),
                ready_tx.clone(),
                total_rx.clone(),
                delivered.clone(),
            ))
        })
        .collect();
    drop(ready_tx);
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        for _ in 0..readers {
            if ready_rx.recv().await.is_none() {
                break;
            }
        }
    })
    .await;

    let duration = ctx.duration();
    let (bar, ticker) = timed_bar("fanout", duration, delivered, "deliveries", 1);
    let started = Instant::now();
    let spec = WriterSpec::paced_records(record_size, rate, started + duration);
    let written = run_writer(stream, name.to_owned(), spec, Arc::new(AtomicU64::new(0))).await;
    let written = match written {
        Ok(written) => written,
        Err(err) => {
            for task in &tasks {
                task.abort();
            }
            ticker.abort();
            bar.finish_and_clear();
            return Err(err);
        }
    };
    let _ = total_tx.send(Some(written.records));

    let mut deliveries = Latency::new();
    let mut records: u64 = 0;
    let mut bytes: u64 = 0;
    let mut errors: u64 = 0;
    let mut fatal = None;
    for task in tasks {
        match task.await {
            Ok(Ok(read)) => {
                deliveries.merge(&read.deliveries);
                records += read.records;
                bytes += read.bytes;
                if let Some(err) = read.error {
                    errors += 1;
                    if errors <= 5 {
                        bar.println(format!("fanout reader error: {err}"));
                    }
                }
            }
            Ok(Err(err)) => {
                if fatal.is_none() {
                    fatal = Some(err);
                }
            }
            Err(err) => {
                if fatal.is_none() {
                    fatal = Some(anyhow!("reader task failed: {err}"));
                }
            }
        }
    }
    let elapsed = started.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    if let Some(err) = fatal {
        return Err(err);
    }

    let mut outcome = Outcome::new("fanout");
    outcome.set_rates(bytes, records, elapsed);
    outcome.set_latency(&deliveries);
    outcome.errors = errors;
    outcome.add_latency_extra("ack", &written.acks);
    outcome.note = format!(
        "records/s = deliveries/s; delivery latency; {readers} readers, writer at {rate} records/s"
    );
    Ok(outcome)
}
