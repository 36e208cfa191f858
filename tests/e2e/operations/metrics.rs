//! `/metrics`, scraped over HTTP and parsed by the official Prometheus Python client's
//! text parser (in the test virtualenv): families are well-formed, and the counters move
//! by exactly what the test appended and read, per API kind, summed over shards.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::data_plane::{
    append_ok, basin_with_stream, bodies, input_frame, open_s2s_read, open_sse, proto,
    read_records, records_path, Next, StreamingResponse,
};
use crate::harness::{get, Server};

const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
json.dump(samples, sys.stdout)
"#;
const WAIT: Duration = Duration::from_secs(10);

/// One scrape: every sample by name and labels.
struct Scrape(Vec<(String, BTreeMap<String, String>, f64)>);

impl Scrape {
    fn take(port: u16) -> Scrape {
        let response = get(port, "/metrics");
        response.expect_status(200);
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; version=0.0.4")
        );
        Scrape(parse(&response.text()))
    }

    /// The values of `name` in every sample whose labels include `labels`.
    fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, value)| *value)
            .collect()
    }

    /// The sum of `name` over every sample whose labels include `labels`; there must be
    /// one.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching = self.matching(name, labels);
        assert!(
            !matching.is_empty(),
            "no sample {name} with labels {labels:?} in the scrape"
        );
        matching.iter().sum()
    }
}

fn parse(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python3");
    assert!(
        python.exists(),
        "{} is missing: run `make test`, which creates the virtualenv",
        python.display()
    );
    let mut child = Command::new(&python)
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the parser");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed the parser");
    let output = child.wait_with_output().expect("run the parser");
    assert!(
        output.status.success(),
        "the Prometheus parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("parser output")
}

/// Polls until `check` holds of a scrape; returns that scrape.
fn scrape_until(port: u16, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + WAIT;
    loop {
        let scrape = Scrape::take(port);
        if check(&scrape) {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {WAIT:?}; last scrape's sluice samples: {:?}",
            scrape
                .0
                .iter()
                .filter(|(n, _, _)| n.starts_with("sluice_sessions")
                    || n.starts_with("sluice_followers"))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Metered bytes of body-only records.
fn metered(bodies: &[&str]) -> f64 {
    bodies.iter().map(|b| 8 + b.len()).sum::<usize>() as f64
}

fn events_until_done(response: &mut StreamingResponse, records: &mut usize) -> usize {
    let mut batches = 0;
    loop {
        match response.next_event(WAIT) {
            Next::Item(event) if event.is_done() => return batches,
            Next::Item(event) if event.kind() == "batch" => {
                batches += 1;
                *records += event.json()["records"].as_array().map_or(0, Vec::len);
            }
            Next::Item(_) => {}
            other => panic!("expected events up to [DONE], got {other:?}"),
        }
    }
}

#[test]
fn counters_move_by_exactly_what_was_appended_and_read() {
    let server = Server::start(&["--shards", "2"]);
    let port = server.port();
    let before = Scrape::take(port);
    // A family with no sample yet (a label set never recorded) counts as zero before.
    let delta = |after: &Scrape, name: &str, labels: &[(&str, &str)]| {
        after.sum(name, labels) - before.matching(name, labels).iter().sum::<f64>()
    };

    let basin = basin_with_stream(port, "ops-metrics", "m");
    // Unary: two batches of three records.
    let unary = ["a", "bb", "ccc"];
    append_ok(port, &basin, "m", &bodies(&unary));
    append_ok(port, &basin, "m", &bodies(&unary));
    // S2S: two inputs of two records, in one raw session.
    let s2s = ["dd", "e"];
    let frames = [
        input_frame(&proto::input(&s2s)),
        input_frame(&proto::input(&s2s)),
    ];
    let mut session = StreamingResponse::open(
        port,
        "POST",
        &records_path("m", ""),
        &[("S2-Basin", basin.as_str()), ("Content-Type", "s2s/proto")],
        &frames.concat(),
    );
    assert_eq!(session.frames_to_end(WAIT).len(), 2, "two acks");
    let written = 2.0 * metered(&unary) + 2.0 * metered(&s2s);

    // Reads of all ten records: unary, then S2S.
    assert_eq!(
        read_records(port, &basin, "m", "seq_num=0&count=10").len(),
        10
    );
    let mut read = open_s2s_read(port, &basin, "m", "seq_num=0&count=10", &[]);
    let s2s_batches = read
        .frames_to_end(WAIT)
        .iter()
        .filter(|f| !f.is_terminal() && !f.read_batch().records.is_empty())
        .count();

    // SSE: catch up on ten, then follow until an eleventh arrives.
    let mut sse = open_sse(port, &basin, "m", "seq_num=0&count=11&wait=30", &[]);
    let mut sse_records = 0;
    let mut sse_batches = 0;
    while sse_records < 10 {
        match sse.next_event(WAIT) {
            Next::Item(event) if event.kind() == "batch" => {
                sse_batches += 1;
                sse_records += event.json()["records"].as_array().map_or(0, Vec::len);
            }
            Next::Item(_) => {}
            other => panic!("expected the catch-up events, got {other:?}"),
        }
    }
    scrape_until(port, "one open SSE session following the stream", |s| {
        s.sum("sluice_sessions_open", &[("kind", "read_sse")]) == 1.0
            && s.sum("sluice_followers", &[]) == 1.0
    });
    append_ok(port, &basin, "m", &bodies(&["f"]));
    sse_batches += events_until_done(&mut sse, &mut sse_records);
    assert_eq!(sse_records, 11);
    scrape_until(port, "the SSE session closed", |s| {
        s.sum("sluice_sessions_open", &[("kind", "read_sse")]) == 0.0
            && s.sum("sluice_followers", &[]) == 0.0
    });

    let after = Scrape::take(port);
    let unary_bytes = 2.0 * metered(&unary) + metered(&["f"]);
    for (name, kind, want) in [
        ("sluice_append_records_total", "unary", 7.0),
        ("sluice_append_metered_bytes_total", "unary", unary_bytes),
        ("sluice_append_batches_total", "unary", 3.0),
        ("sluice_append_records_total", "s2s", 4.0),
        (
            "sluice_append_metered_bytes_total",
            "s2s",
            2.0 * metered(&s2s),
        ),
        ("sluice_append_batches_total", "s2s", 2.0),
        ("sluice_read_records_total", "unary", 10.0),
        ("sluice_read_metered_bytes_total", "unary", written),
        ("sluice_read_batches_total", "unary", 1.0),
        ("sluice_read_records_total", "s2s", 10.0),
        ("sluice_read_metered_bytes_total", "s2s", written),
        ("sluice_read_batches_total", "s2s", s2s_batches as f64),
        ("sluice_read_records_total", "sse", 11.0),
        (
            "sluice_read_metered_bytes_total",
            "sse",
            written + metered(&["f"]),
        ),
        ("sluice_read_batches_total", "sse", sse_batches as f64),
    ] {
        assert_eq!(
            delta(&after, name, &[("kind", kind)]),
            want,
            "{name}{{kind={kind}}}"
        );
    }
    let appends = 5.0;
    for name in [
        "s2_append_ack_latency_seconds_count",
        "s2_append_permit_latency_seconds_count",
        "s2_append_batch_records_count",
        "s2_append_batch_bytes_count",
        "sluice_append_ack_seconds_count",
        "sluice_append_durable_seconds_count",
        "sluice_append_admission_wait_seconds_count",
    ] {
        assert_eq!(delta(&after, name, &[]), appends, "{name}");
    }
    assert_eq!(delta(&after, "s2_append_batch_records_sum", &[]), 11.0);
    assert_eq!(
        delta(&after, "s2_append_batch_bytes_sum", &[]),
        written + metered(&["f"])
    );
    // Every record is in a durable segment and index entry.
    assert!(
        delta(
            &after,
            "sluice_storage_operation_seconds_count",
            &[("op", "object_put")]
        ) >= 1.0
    );
    assert!(
        delta(
            &after,
            "sluice_storage_operation_seconds_count",
            &[("op", "slatedb_write")]
        ) >= 1.0
    );
    assert_eq!(after.sum("sluice_storage_operation_errors_total", &[]), 0.0);
    // Nothing is left in flight, the stream's state is loaded, the shards did work.
    assert_eq!(after.sum("sluice_append_inflight_bytes", &[]), 0.0);
    assert_eq!(after.sum("sluice_sessions_open", &[]), 0.0);
    assert!(after.sum("sluice_streamers_loaded", &[]) >= 1.0);
    assert_eq!(after.sum("sluice_shards", &[]), 2.0);
    assert!(after.sum("sluice_shard_busy_seconds_total", &[]) > 0.0);
    assert_eq!(
        after.sum("sluice_shard_inbox_depth", &[("shard", "0")]),
        0.0
    );
    // The process, under the standard names.
    assert!(after.sum("process_resident_memory_bytes", &[]) > 0.0);
    assert!(after.sum("process_open_fds", &[]) > 0.0);
    assert!(after.sum("process_threads", &[]) >= 3.0);
    assert!(after.sum("process_cpu_seconds_total", &[]) >= 0.0);
}
