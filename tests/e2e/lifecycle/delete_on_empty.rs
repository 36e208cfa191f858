//! Delete-on-empty: a stream with `delete_on_empty.min_age_secs` is deleted in the
//! background once it holds no live records and has been idle for that long, and is kept
//! while it holds live records (SEMANTICS.md §7; API.md §4.5).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{
    append_trim, create_stream_ok, get_stream_config, listed_stream_names, numbered,
    read_records_with, record_bodies, start, stream_config, wait_stream_gone, DELETION_DELAY_MS,
};
use crate::data_plane::{append_ok, check_tail, create_basin};
use crate::harness::assert_error;

/// How often the stream config is polled.
const POLL: Duration = Duration::from_millis(100);

fn doe_config(retention: Value) -> Value {
    json!({ "delete_on_empty": { "min_age_secs": 1 }, "retention_policy": retention })
}

/// Polls the stream config until it answers 404. The stream may show 200 and then 409
/// `stream_deletion_pending` on the way, but only after `not_before` has passed since
/// `since`; it must be gone within `within` of `since`.
async fn wait_deleted_in_background(
    port: u16,
    basin: &str,
    stream: &str,
    since: Instant,
    not_before: Duration,
    within: Duration,
) {
    loop {
        let response = get_stream_config(port, basin, stream);
        let elapsed = since.elapsed();
        match response.status {
            200 => {}
            409 | 404 => {
                let code = if response.status == 409 {
                    "stream_deletion_pending"
                } else {
                    "stream_not_found"
                };
                assert_error(&response, response.status, code);
                assert!(
                    elapsed >= not_before,
                    "{stream:?} was deleted after {elapsed:?}, before {not_before:?} had passed"
                );
                if response.status == 404 {
                    return;
                }
            }
            other => panic!(
                "unexpected answer {other} for the config of {stream:?}: {:?}",
                response.text()
            ),
        }
        assert!(
            elapsed < within,
            "{stream:?} was not deleted within {within:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

// B-250 B-107
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_written_stream_is_deleted_after_its_min_age() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "lc-doe-idle", json!({}));
    create_stream_ok(port, &basin, "keeper", None);
    let created = Instant::now();
    create_stream_ok(
        port,
        &basin,
        "idle",
        Some(json!({ "delete_on_empty": { "min_age_secs": 1 } })),
    );
    assert_eq!(
        stream_config(port, &basin, "idle")["delete_on_empty"],
        json!({ "min_age_secs": 1 })
    );

    let within = Duration::from_millis(1000 + DELETION_DELAY_MS + 3000 + 1000);
    wait_deleted_in_background(
        port,
        &basin,
        "idle",
        created,
        Duration::from_millis(950),
        within,
    )
    .await;
    wait_stream_gone(port, &basin, "idle").await;
    assert_eq!(listed_stream_names(port, &basin), vec!["keeper"]);
    assert_eq!(
        stream_config(port, &basin, "keeper")["delete_on_empty"],
        json!({ "min_age_secs": 0 })
    );

    // The name is free again, for a stream that starts empty.
    create_stream_ok(port, &basin, "idle", None);
    assert_eq!(check_tail(port, &basin, "idle"), (0, 0));
}

// B-251
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_with_live_records_are_not_deleted() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "lc-doe-busy", json!({}));
    create_stream_ok(
        port,
        &basin,
        "forever",
        Some(doe_config(json!({ "infinite": {} }))),
    );
    create_stream_ok(
        port,
        &basin,
        "week",
        Some(json!({ "delete_on_empty": { "min_age_secs": 1 } })),
    );
    for stream in ["forever", "week"] {
        append_ok(port, &basin, stream, &numbered(stream, 0..2));
    }

    // Every look for four seconds finds both streams with their records.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        for stream in ["forever", "week"] {
            get_stream_config(port, &basin, stream).expect_status(200);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for stream in ["forever", "week"] {
        let records = read_records_with(port, &basin, stream, "seq_num=0", &[]);
        assert_eq!(
            record_bodies(&records),
            vec![format!("{stream}-0"), format!("{stream}-1")],
            "{stream}"
        );
    }
    assert_eq!(listed_stream_names(port, &basin), vec!["forever", "week"]);
}

// B-250 B-185
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_records_expired_is_deleted() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "lc-doe-fade", json!({}));
    create_stream_ok(
        port,
        &basin,
        "fading",
        Some(doe_config(json!({ "age": 1 }))),
    );
    let appended = Instant::now();
    append_ok(port, &basin, "fading", &numbered("f", 0..2));

    // Expiry (1 s) and idleness (1 s) overlap; allow the background checks some lag.
    wait_deleted_in_background(
        port,
        &basin,
        "fading",
        appended,
        Duration::from_millis(950),
        Duration::from_secs(10),
    )
    .await;
    wait_stream_gone(port, &basin, "fading").await;
    create_stream_ok(port, &basin, "fading", None);
    assert_eq!(check_tail(port, &basin, "fading"), (0, 0));
}

// B-250 B-181
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fully_trimmed_stream_is_deleted() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "lc-doe-trim", json!({}));
    create_stream_ok(
        port,
        &basin,
        "cut",
        Some(doe_config(json!({ "infinite": {} }))),
    );
    append_ok(port, &basin, "cut", &numbered("c", 0..3));
    let trimmed = Instant::now();
    append_trim(port, &basin, "cut", u64::MAX, &[]);

    // The trim removed every record including itself, so only idleness is left to wait for.
    wait_deleted_in_background(
        port,
        &basin,
        "cut",
        trimmed,
        Duration::from_millis(950),
        Duration::from_secs(8),
    )
    .await;
    wait_stream_gone(port, &basin, "cut").await;
}
