//! `streams`: create K streams with bounded concurrency; report creates per second, the
//! time per create, and (when the server's pid is known) its RSS before and after. With
//! `--touch`, each stream also gets one record, and the RSS is read again after the server
//! has idled: what a server keeps of every stream it ever served.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures::StreamExt;
use s2_sdk::types::{AppendInput, AppendRecord, AppendRecordBatch, CreateStreamInput};
use s2_sdk::S2Basin;

use super::{counted_bar, stream_name, Ctx};
use crate::report::{Latency, Outcome};
use crate::server::rss_mib;

pub async fn run(ctx: &Ctx, basin: &S2Basin) -> Result<Outcome> {
    let count = ctx.pick(ctx.knobs.stream_count, 10_000, 1_000);
    if count == 0 {
        bail!("--stream-count must be at least 1");
    }
    let concurrency = ctx.knobs.create_concurrency.max(1);
    let touch = ctx.knobs.touch;
    let rss_before = ctx.server_pid.and_then(rss_mib);

    let bar = counted_bar("streams", count as u64, "created");
    let started = Instant::now();
    let mut creates = Box::pin(
        futures::stream::iter(0..count)
            .map(|i| {
                let basin = basin.clone();
                async move {
                    let name = format!("stream-{i:06}");
                    let parsed = stream_name(&name).map_err(|err| err.to_string())?;
                    let begun = Instant::now();
                    basin
                        .create_stream(CreateStreamInput::new(parsed.clone()))
                        .await
                        .map_err(|err| format!("create stream {name}: {err}"))?;
                    let created = begun.elapsed();
                    if touch {
                        basin
                            .stream(parsed)
                            .append(one_record(i)?)
                            .await
                            .map_err(|err| format!("append to {name}: {err}"))?;
                    }
                    Ok::<_, String>(created)
                }
            })
            .buffer_unordered(concurrency),
    );

    let mut latency = Latency::new();
    let mut created: u64 = 0;
    let mut errors: u64 = 0;
    while let Some(result) = creates.next().await {
        match result {
            Ok(elapsed) => {
                latency.record(elapsed);
                created += 1;
            }
            Err(err) => {
                errors += 1;
                if errors <= 5 {
                    bar.println(err);
                }
            }
        }
        bar.inc(1);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let rss_after = ctx.server_pid.and_then(rss_mib);

    let mut outcome = Outcome::new("streams");
    outcome.records_per_s = Some(created as f64 / elapsed.as_secs_f64().max(1e-9));
    outcome.set_latency(&latency);
    outcome.errors = errors;
    let mut note = format!("records/s = creates/s; time per create; {count} streams");
    if let Some(before) = rss_before {
        outcome.extra.insert("rss_before_mib".to_owned(), before);
    }
    if let Some(after) = rss_after {
        outcome.extra.insert("rss_after_mib".to_owned(), after);
    }
    if touch {
        // Long enough for background work after the last append (flushes, the segment
        // sweep) to have run, so what remains is what the server keeps.
        tokio::time::sleep(IDLE).await;
        if let Some(idle) = ctx.server_pid.and_then(rss_mib) {
            outcome.extra.insert("rss_idle_mib".to_owned(), idle);
        }
        note.push_str(&format!("; one record each, then {IDLE:?} idle"));
    }
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let per_stream_kib = (after - before) * 1024.0 / count as f64;
        outcome
            .extra
            .insert("rss_per_stream_kib".to_owned(), per_stream_kib);
        note.push_str(&format!("; RSS {before:.1} -> {after:.1} MiB"));
    }
    outcome.note = note;
    Ok(outcome)
}

/// How long the server idles after a `--touch` run before its RSS is read.
const IDLE: Duration = Duration::from_secs(5);

fn one_record(i: usize) -> Result<AppendInput, String> {
    let record = AppendRecord::new(format!("touch-{i}")).map_err(|err| err.to_string())?;
    let batch = AppendRecordBatch::try_from_iter([record]).map_err(|err| err.to_string())?;
    Ok(AppendInput::new(batch))
}
