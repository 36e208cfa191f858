//! `latency`: one writer appends one record per batch at a fixed rate while a read session
//! tails the same stream. Every record carries its send time; the reader reports
//! append-to-delivery latency and the writer reports submit-to-ack latency.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use s2_sdk::S2Basin;
use tokio::sync::{mpsc, watch};

use super::{
    check_batch_shape, create_stream, run_writer, tail_reader, timed_bar, Ctx, WriterSpec, MIB,
};
use crate::report::Outcome;

pub async fn run(ctx: &Ctx, basin: &S2Basin) -> Result<Outcome> {
    let record_size = ctx.knobs.record_size;
    check_batch_shape(record_size, 1)?;
    let mibps = ctx.knobs.latency_mibps;
    if mibps.is_nan() || mibps <= 0.0 {
        bail!("--latency-mibps must be positive");
    }
    let records_per_sec = mibps * MIB as f64 / record_size as f64;

    let name = "latency";
    let stream = create_stream(basin, name).await?;

    // The reader starts at seq_num 0 of the empty stream, i.e. at its tail, before any
    // record is written.
    let (total_tx, total_rx) = watch::channel(None);
    let (ready_tx, mut ready_rx) = mpsc::channel(1);
    let delivered = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn(tail_reader(
        stream.clone(),
        name.to_owned(),
        ready_tx,
        total_rx,
        delivered.clone(),
    ));
    let _ = tokio::time::timeout(Duration::from_secs(15), ready_rx.recv()).await;

    let duration = ctx.duration();
    let (bar, ticker) = timed_bar("latency", duration, delivered, "records delivered", 1);
    let started = Instant::now();
    let spec = WriterSpec::paced_records(record_size, records_per_sec, started + duration);
    let written = run_writer(stream, name.to_owned(), spec, Arc::new(AtomicU64::new(0))).await;
    let written = match written {
        Ok(written) => written,
        Err(err) => {
            reader.abort();
            ticker.abort();
            bar.finish_and_clear();
            return Err(err);
        }
    };
    let _ = total_tx.send(Some(written.records));
    let read = reader
        .await
        .map_err(|err| anyhow!("reader task failed: {err}"));
    let elapsed = started.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    let read = read??;
    if let Some(err) = read.error {
        bail!(err);
    }

    let mut outcome = Outcome::new("latency");
    outcome.set_rates(read.bytes, read.records, elapsed);
    outcome.set_latency(&read.deliveries);
    outcome.add_latency_extra("ack", &written.acks);
    outcome.note = format!(
        "append-to-delivery latency (ack latency in extras); {mibps} MiB/s of {record_size} B records"
    );
    Ok(outcome)
}
