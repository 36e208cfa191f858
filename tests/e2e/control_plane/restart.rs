//! Durability of the control plane across `kill -9` and restarts with a different shard
//! count, on a local directory and on an S3-compatible store (moto).
//!
//! Placement of streams on shards is a runtime fact only (DESIGN.md), so the same data must
//! read back identically whatever `--shards` the restarted server runs with.

use std::time::Duration;

use s2_sdk::types::{
    BasinConfig, BasinReconfiguration, CreateBasinInput, CreateStreamInput, DeleteOnEmptyConfig,
    EncryptionAlgorithm, EnsureStreamInput, ReconfigureBasinInput, ReconfigureStreamInput,
    RetentionPolicy, StreamConfig, StreamReconfiguration, TimestampingConfig, TimestampingMode,
};
use s2_sdk::S2;
use serde_json::{json, Map, Value};

use crate::harness::{
    basin_name, encode, expect_server_error, get, http, stream_name, Moto, Server,
};

/// Everything the control plane shows, read over raw HTTP: the basin list, every basin
/// config, and every stream's info and config.
fn snapshot(port: u16) -> Value {
    let page = get(port, "/v1/basins").expect_status(200).json();
    assert_eq!(page["has_more"], false);
    let basins = page["basins"].as_array().expect("basins array").clone();
    let mut configs = Map::new();
    let mut streams = Map::new();
    for info in &basins {
        let basin = info["name"].as_str().expect("basin name");
        let config = get(port, &format!("/v1/basins/{basin}"))
            .expect_status(200)
            .json();
        configs.insert(basin.to_owned(), config);
        let page = http(port, "GET", "/v1/streams", &[("S2-Basin", basin)], b"")
            .expect_status(200)
            .json();
        assert_eq!(page["has_more"], false);
        let mut entries = Vec::new();
        for stream in page["streams"].as_array().expect("streams array") {
            let name = stream["name"].as_str().expect("stream name");
            let config = http(
                port,
                "GET",
                &format!("/v1/streams/{}", encode(name)),
                &[("S2-Basin", basin)],
                b"",
            )
            .expect_status(200)
            .json();
            entries.push(json!({ "info": stream, "config": config }));
        }
        streams.insert(basin.to_owned(), Value::Array(entries));
    }
    json!({ "basins": basins, "basin_configs": configs, "streams": streams })
}

fn stream_count(snapshot: &Value) -> usize {
    snapshot["streams"]
        .as_object()
        .expect("streams map")
        .values()
        .map(|entries| entries.as_array().map_or(0, Vec::len))
        .sum()
}

/// Basins and streams with non-default configs, including reconfigured ones.
async fn populate(s2: &S2) {
    s2.create_basin(
        CreateBasinInput::new(basin_name("restart-alpha")).with_config(
            BasinConfig::new()
                .with_default_stream_config(
                    StreamConfig::new()
                        .with_retention_policy(RetentionPolicy::Age(3600))
                        .with_timestamping(
                            TimestampingConfig::new().with_mode(TimestampingMode::Arrival),
                        ),
                )
                .with_create_stream_on_append(true),
        ),
    )
    .await
    .expect("create restart-alpha");
    s2.create_basin(
        CreateBasinInput::new(basin_name("restart-beta")).with_config(
            BasinConfig::new()
                .with_stream_cipher(EncryptionAlgorithm::Aegis256)
                .with_create_stream_on_read(true),
        ),
    )
    .await
    .expect("create restart-beta");
    s2.create_basin(CreateBasinInput::new(basin_name("restart-gamma")))
        .await
        .expect("create restart-gamma");
    s2.reconfigure_basin(ReconfigureBasinInput::new(
        basin_name("restart-gamma"),
        BasinReconfiguration::new()
            .with_create_stream_on_append(true)
            .with_default_stream_config(
                StreamReconfiguration::new().with_storage_class("standard"),
            ),
    ))
    .await
    .expect("reconfigure restart-gamma");

    let alpha = s2.basin(basin_name("restart-alpha"));
    let alpha_streams = [
        ("events", None),
        (
            "orders/2024",
            Some(
                StreamConfig::new()
                    .with_storage_class("standard")
                    .with_retention_policy(RetentionPolicy::Infinite)
                    .with_delete_on_empty(
                        DeleteOnEmptyConfig::new().with_min_age(Duration::from_secs(3600)),
                    ),
            ),
        ),
        (
            "émoji 🎉",
            Some(
                StreamConfig::new().with_timestamping(
                    TimestampingConfig::new()
                        .with_mode(TimestampingMode::ClientRequire)
                        .with_uncapped(true),
                ),
            ),
        ),
    ];
    for (name, config) in alpha_streams {
        let input = match config {
            Some(config) => CreateStreamInput::new(stream_name(name)).with_config(config),
            None => CreateStreamInput::new(stream_name(name)),
        };
        alpha
            .create_stream(input)
            .await
            .unwrap_or_else(|err| panic!("create stream {name}: {err}"));
    }

    s2.basin(basin_name("restart-beta"))
        .create_stream(CreateStreamInput::new(stream_name("secret")))
        .await
        .expect("create secret");

    let gamma = s2.basin(basin_name("restart-gamma"));
    gamma
        .create_stream(CreateStreamInput::new(stream_name("reconfigured")))
        .await
        .expect("create reconfigured");
    gamma
        .reconfigure_stream(ReconfigureStreamInput::new(
            stream_name("reconfigured"),
            StreamReconfiguration::new().with_retention_policy(RetentionPolicy::Age(120)),
        ))
        .await
        .expect("reconfigure stream");
    gamma
        .ensure_stream(
            EnsureStreamInput::new(stream_name("ensured"))
                .with_config(StreamConfig::new().with_storage_class("cold-tier")),
        )
        .await
        .expect("ensure stream");
}

/// Spot checks through the SDK, on top of the raw snapshot comparison.
async fn verify_details(s2: &S2) {
    let beta = s2
        .get_basin_config(basin_name("restart-beta"))
        .await
        .expect("get restart-beta");
    assert_eq!(beta.stream_cipher, Some(EncryptionAlgorithm::Aegis256));
    assert!(beta.create_stream_on_read);
    let secret = s2
        .basin(basin_name("restart-beta"))
        .list_streams(Default::default())
        .await
        .expect("list restart-beta");
    assert_eq!(secret.values.len(), 1);
    assert_eq!(secret.values[0].cipher, Some(EncryptionAlgorithm::Aegis256));

    let reconfigured = s2
        .basin(basin_name("restart-gamma"))
        .get_stream_config(stream_name("reconfigured"))
        .await
        .expect("get reconfigured");
    assert_eq!(
        reconfigured.retention_policy,
        Some(RetentionPolicy::Age(120))
    );
    assert_eq!(reconfigured.storage_class.as_deref(), Some("standard"));

    expect_server_error(
        s2.create_basin(CreateBasinInput::new(basin_name("restart-alpha")))
            .await,
        409,
        "resource_already_exists",
    );
}

/// Populate, kill -9, restart with other shard counts, and compare everything.
async fn restart_scenario(start: impl Fn(&str) -> Server) {
    let mut server = start("2");
    let s2 = server.sdk();
    populate(&s2).await;
    let before = snapshot(server.port());
    assert_eq!(
        before["basins"].as_array().map(Vec::len),
        Some(3),
        "{before}"
    );
    assert_eq!(stream_count(&before), 6, "{before}");
    drop(s2);
    server.kill9();
    drop(server);

    let mut server = start("3");
    let after = snapshot(server.port());
    assert_eq!(
        after, before,
        "state differs after kill -9 and a restart with 3 shards"
    );
    let s2 = server.sdk();
    verify_details(&s2).await;

    // Recovered state takes new writes, and those survive the next crash too.
    s2.basin(basin_name("restart-alpha"))
        .create_stream(CreateStreamInput::new(stream_name("after-restart")))
        .await
        .expect("create after restart");
    s2.create_basin(CreateBasinInput::new(basin_name("restart-delta")))
        .await
        .expect("create basin after restart");
    let second = snapshot(server.port());
    assert_eq!(stream_count(&second), 7);
    drop(s2);
    server.kill9();
    drop(server);

    let server = start("1");
    assert_eq!(
        snapshot(server.port()),
        second,
        "state differs after a second kill -9 and a restart with 1 shard"
    );
    verify_details(&server.sdk()).await;
}

// Durability across restarts (DESIGN.md: nothing persisted depends on --shards).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_root_state_survives_kill_and_restart_with_other_shard_counts() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir
        .path()
        .to_str()
        .expect("UTF-8 temporary path")
        .to_owned();
    restart_scenario(|shards| Server::start(&["--shards", shards, "--local-root", root.as_str()]))
        .await;
}

// Durability across restarts on S3-compatible storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_state_survives_kill_and_restart_with_other_shard_counts() {
    let moto = Moto::start();
    let bucket = "sluice-e2e";
    moto.create_bucket(bucket);
    restart_scenario(|shards| moto.server(&["--shards", shards, "--bucket", bucket])).await;
}

/// SIGTERM stops the server cleanly: it exits with success well within the drain bound, and
/// what it acknowledged is there after a restart on the same directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_closes_storage_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_str().expect("utf-8 path");
    let mut server = Server::start(&["--shards", "2", "--local-root", root]);
    let basin = crate::harness::unique_basin("sigterm");
    http(
        server.port(),
        "PUT",
        &format!("/v1/basins/{basin}"),
        &[],
        b"",
    )
    .expect_status(201);
    let status = server.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status}");

    let server = Server::start(&["--shards", "1", "--local-root", root]);
    let listed = get(server.port(), "/v1/basins").json();
    let names: Vec<&str> = listed["basins"]
        .as_array()
        .expect("basins array")
        .iter()
        .filter_map(|b| b["name"].as_str())
        .collect();
    assert_eq!(names, vec![basin.as_str()]);
}
