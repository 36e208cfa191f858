//! `catchup`: prefill one stream with 64 KiB records, then read all of it from seq_num 0
//! with a read session bounded by the record count, verifying the chain on the way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use s2_sdk::S2Basin;

use super::{
    check_batch_shape, counted_bar, create_stream, read_back, run_writer,
    unacked_batches_per_session, Ctx, WriterSpec, MIB,
};
use crate::report::Outcome;
use crate::server::cpu_seconds;

const RECORD_SIZE: usize = 64 * 1024;
/// 15 x 64 KiB stays under the 1 MiB batch limit.
const RECORDS_PER_BATCH: usize = 15;

pub async fn run(ctx: &Ctx, basin: &S2Basin) -> Result<Outcome> {
    check_batch_shape(RECORD_SIZE, RECORDS_PER_BATCH)?;
    let mib = ctx.pick(ctx.knobs.prefill_mib, 64, 16);
    if mib == 0 {
        bail!("--prefill-mib must be at least 1");
    }
    let total = mib * (MIB / RECORD_SIZE as u64);

    let name = "catchup";
    let stream = create_stream(basin, name).await?;

    let acked = Arc::new(AtomicU64::new(0));
    let prefill_bar = counted_bar("prefill", mib, "MiB");
    let prefill_started = Instant::now();
    let spec = WriterSpec {
        writer: 0,
        record_size: RECORD_SIZE,
        batch_records: RECORDS_PER_BATCH,
        batches_per_sec: None,
        phase: 0.0,
        deadline: None,
        max_records: Some(total),
        max_unacked_bytes: None,
        max_unacked_batches: unacked_batches_per_session(1),
    };
    let mut writer = tokio::spawn(run_writer(
        stream.clone(),
        name.to_owned(),
        spec,
        acked.clone(),
    ));
    let written = loop {
        tokio::select! {
            done = &mut writer => break done,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                prefill_bar.set_position(acked.load(Ordering::Relaxed) / MIB);
            }
        }
    };
    let prefill_elapsed = prefill_started.elapsed();
    prefill_bar.finish_and_clear();
    let written = written.map_err(|err| anyhow!("prefill task failed: {err}"))??;

    let read_bar = counted_bar("catchup", written.records, "records");
    let cpu_start = ctx.server_pid.and_then(cpu_seconds);
    let started = Instant::now();
    let bytes = read_back(
        &stream,
        name,
        written.records,
        &[(0, written.records)],
        &read_bar,
    )
    .await?;
    let elapsed = started.elapsed();
    let cpu_used = ctx
        .server_pid
        .and_then(cpu_seconds)
        .zip(cpu_start)
        .map(|(end, start)| end - start);
    read_bar.finish_and_clear();

    let mut outcome = Outcome::new("catchup");
    outcome.set_rates(bytes, written.records, elapsed);
    outcome.extra.insert(
        "prefill_mib_per_s".to_owned(),
        written.bytes as f64 / MIB as f64 / prefill_elapsed.as_secs_f64().max(1e-9),
    );
    if let Some(cpu) = cpu_used {
        outcome.extra.insert(
            "server_cpu_ms_per_mib".to_owned(),
            cpu * 1e3 / (bytes as f64 / MIB as f64).max(1e-9),
        );
    }
    outcome.note = format!("read of {mib} MiB from seq_num 0; no latency");
    Ok(outcome)
}
