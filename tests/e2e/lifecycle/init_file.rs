//! The init file (`--init-file` / `SLUICE_INIT_FILE`): basins and streams declared in it are
//! ensured at every start, with human-readable durations; an invalid file stops the
//! server at start (API.md §3.3, §4.3, §8).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{
    basin_config, in_basin, listed_stream_names, listed_streams, read_records_with, record_bodies,
    stream_config,
};
use crate::data_plane::{append_ok, bodies, stream_path};
use crate::harness::{http_json, unique_basin, Server};

/// How long a server given an invalid init file may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

fn write_init_file(dir: &Path, name: &str, spec: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(spec).expect("serialize the init file"),
    )
    .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
    path
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

/// The fully resolved StreamConfig as `GET /v1/streams/{stream}` shows it.
fn resolved(
    storage_class: &str,
    retention: Value,
    mode: &str,
    uncapped: bool,
    min_age_secs: u64,
) -> Value {
    json!({
        "storage_class": storage_class,
        "retention_policy": retention,
        "timestamping": { "mode": mode, "uncapped": uncapped },
        "delete_on_empty": { "min_age_secs": min_age_secs },
    })
}

fn default_basin_config() -> Value {
    json!({
        "default_stream_config": null,
        "stream_cipher": null,
        "create_stream_on_append": false,
        "create_stream_on_read": false,
    })
}

// B-254 B-094 B-109 B-240
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_init_file_creates_basins_and_streams_with_their_configs() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let full = unique_basin("lc-init-full");
    let bare = unique_basin("lc-init-bare");
    let sealed = unique_basin("lc-init-sealed");
    let spec = json!({ "basins": [
        {
            "name": full,
            "config": {
                "default_stream_config": {
                    "storage_class": "standard",
                    "retention_policy": "1h",
                    "timestamping": { "mode": "arrival", "uncapped": true },
                    "delete_on_empty": { "min_age": "1h" },
                },
                "stream_cipher": "aegis-256",
                "create_stream_on_append": true,
                "create_stream_on_read": false,
            },
            "streams": [
                { "name": "inherits" },
                {
                    "name": "custom",
                    "config": {
                        "retention_policy": "infinite",
                        "timestamping": { "mode": "client-require" },
                        "delete_on_empty": { "min_age": "2h" },
                    },
                },
                { "name": "logs/app", "config": { "retention_policy": "7days" } },
            ],
        },
        { "name": bare },
        {
            "name": sealed,
            "config": { "stream_cipher": "aes-256-gcm", "create_stream_on_read": true },
            "streams": [{ "name": "s", "config": { "retention_policy": "2days" } }],
        },
    ] });
    let path = write_init_file(dir.path(), "init.json", &spec);
    let server = Server::start(&["--shards", "2", "--init-file", path_text(&path)]);
    let port = server.port();

    assert_eq!(
        basin_config(port, &full),
        json!({
            "default_stream_config": {
                "storage_class": "standard",
                "retention_policy": { "age": 3600 },
                "timestamping": { "mode": "arrival", "uncapped": true },
                "delete_on_empty": { "min_age_secs": 3600 },
            },
            "stream_cipher": "aegis-256",
            "create_stream_on_append": true,
            "create_stream_on_read": false,
        })
    );
    assert_eq!(
        listed_stream_names(port, &full),
        vec!["custom", "inherits", "logs/app"]
    );
    for info in listed_streams(port, &full) {
        assert_eq!(info["cipher"], "aegis-256", "{info}");
        assert_eq!(info["deleted_at"], Value::Null, "{info}");
    }
    assert_eq!(
        stream_config(port, &full, "inherits"),
        resolved("standard", json!({ "age": 3600 }), "arrival", true, 3600)
    );
    assert_eq!(
        stream_config(port, &full, "custom"),
        resolved(
            "standard",
            json!({ "infinite": {} }),
            "client-require",
            true,
            7200
        )
    );
    assert_eq!(
        stream_config(port, &full, "logs/app"),
        resolved("standard", json!({ "age": 604800 }), "arrival", true, 3600)
    );

    assert_eq!(basin_config(port, &bare), default_basin_config());
    assert!(listed_stream_names(port, &bare).is_empty());

    assert_eq!(
        basin_config(port, &sealed),
        json!({
            "default_stream_config": null,
            "stream_cipher": "aes-256-gcm",
            "create_stream_on_append": false,
            "create_stream_on_read": true,
        })
    );
    let listed = listed_streams(port, &sealed);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "s");
    assert_eq!(listed[0]["cipher"], "aes-256-gcm");
    assert_eq!(
        stream_config(port, &sealed, "s"),
        resolved(
            "express",
            json!({ "age": 172800 }),
            "client-prefer",
            false,
            0
        )
    );
}

// B-254 B-067 B-097
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_init_file_is_ensured_again_at_every_start() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root_dir = tempfile::tempdir().expect("temporary directory");
    let root = path_text(root_dir.path()).to_owned();
    let basin = unique_basin("lc-init-again");
    let first = json!({ "basins": [{
        "name": basin,
        "config": { "default_stream_config": { "retention_policy": "1h" } },
        "streams": [
            { "name": "declared" },
            { "name": "tuned", "config": { "retention_policy": "30m" } },
        ],
    }] });
    let path = write_init_file(dir.path(), "init.json", &first);
    let mut server = Server::start(&[
        "--shards",
        "2",
        "--local-root",
        root.as_str(),
        "--init-file",
        path_text(&path),
    ]);
    let port = server.port();
    assert_eq!(
        stream_config(port, &basin, "tuned")["retention_policy"],
        json!({ "age": 1800 })
    );

    // Changes made through the API in between.
    append_ok(port, &basin, "declared", &bodies(&["kept-0", "kept-1"]));
    let response = in_basin(
        port,
        &basin,
        "PATCH",
        &stream_path("declared"),
        Some(&json!({ "storage_class": "standard" })),
    );
    response.expect_status(200);
    let response = in_basin(
        port,
        &basin,
        "POST",
        "/v1/streams",
        Some(&json!({ "stream": "manual", "config": { "retention_policy": { "age": 60 } } })),
    );
    response.expect_status(201);
    let response = http_json(
        port,
        "PATCH",
        &format!("/v1/basins/{basin}"),
        &[],
        &json!({ "create_stream_on_read": true }),
    );
    response.expect_status(200);
    server.kill9();

    // A second start from the environment, with one stream's config changed and one more
    // stream declared.
    let second = json!({ "basins": [{
        "name": basin,
        "config": { "default_stream_config": { "retention_policy": "1h" } },
        "streams": [
            { "name": "declared" },
            { "name": "tuned", "config": { "retention_policy": "45m" } },
            { "name": "added", "config": { "timestamping": { "uncapped": true } } },
        ],
    }] });
    write_init_file(dir.path(), "init.json", &second);
    let server = Server::start_with_env(
        &["--shards", "1", "--local-root", root.as_str()],
        &[("SLUICE_INIT_FILE", path_text(&path))],
    );
    let port = server.port();

    // The basin config is the declared one again.
    assert_eq!(
        basin_config(port, &basin),
        json!({
            "default_stream_config": {
                "storage_class": null,
                "retention_policy": { "age": 3600 },
                "timestamping": null,
                "delete_on_empty": null,
            },
            "stream_cipher": null,
            "create_stream_on_append": false,
            "create_stream_on_read": false,
        })
    );
    // Declared streams get their declared configs; their records stay.
    assert_eq!(
        stream_config(port, &basin, "declared"),
        resolved("express", json!({ "age": 3600 }), "client-prefer", false, 0)
    );
    let records = read_records_with(port, &basin, "declared", "seq_num=0", &[]);
    assert_eq!(record_bodies(&records), vec!["kept-0", "kept-1"]);
    assert_eq!(
        stream_config(port, &basin, "tuned")["retention_policy"],
        json!({ "age": 2700 })
    );
    assert_eq!(
        stream_config(port, &basin, "added"),
        resolved("express", json!({ "age": 3600 }), "client-prefer", true, 0)
    );
    // What the file does not mention is left alone.
    assert_eq!(
        stream_config(port, &basin, "manual")["retention_policy"],
        json!({ "age": 60 })
    );
    assert_eq!(
        listed_stream_names(port, &basin),
        vec!["added", "declared", "manual", "tuned"]
    );
}

/// Runs the server with this init file and asserts that it exits unsuccessfully, on its
/// own and quickly, saying something on stderr.
fn assert_refused(dir: &Path, label: &str, contents: &[u8]) {
    let path = dir.join(format!("{label}.json"));
    std::fs::write(&path, contents)
        .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
    refuse_to_start(label, &path);
}

fn refuse_to_start(label: &str, path: &Path) {
    let stderr_path = path.with_extension("stderr");
    let stderr = std::fs::File::create(&stderr_path)
        .unwrap_or_else(|err| panic!("cannot create {}: {err}", stderr_path.display()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--host", "127.0.0.1", "--port", "0", "--shards", "1"])
        .arg("--init-file")
        .arg(path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .spawn()
        .unwrap_or_else(|err| panic!("cannot spawn sluice: {err}"));
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{label}: sluice kept running with an invalid init file");
            }
            Err(err) => panic!("{label}: cannot query the sluice process: {err}"),
        }
    };
    let message = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        !status.success(),
        "{label}: sluice exited successfully with an invalid init file"
    );
    assert!(
        !message.trim().is_empty(),
        "{label}: sluice exited ({status}) without saying why on stderr"
    );
}

// B-254
#[test]
fn an_invalid_init_file_stops_the_server_at_start() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let basin = unique_basin("lc-init-bad");
    // One entry for `basin` with these fields besides its name.
    let one_basin = |fields: Value| {
        let mut entry = json!({ "name": basin });
        for (key, value) in fields.as_object().expect("basin fields are an object") {
            entry[key.as_str()] = value.clone();
        }
        json!({ "basins": [entry] })
    };
    // One stream `s` with this config in that basin.
    let one_stream =
        |config: Value| one_basin(json!({ "streams": [{ "name": "s", "config": config }] }));
    let cases: Vec<(&str, Value)> = vec![
        ("unknown-basin-field", one_basin(json!({ "colour": "red" }))),
        (
            "unknown-config-field",
            one_basin(json!({ "config": { "stream_cipher": "aegis-256", "shiny": true } })),
        ),
        (
            "unknown-stream-field",
            one_stream(json!({ "retention": "1h" })),
        ),
        (
            "unknown-cipher",
            one_basin(json!({ "config": { "stream_cipher": "rot13" } })),
        ),
        (
            "bad-duration",
            one_stream(json!({ "retention_policy": "soon" })),
        ),
        (
            "zero-retention",
            one_basin(
                json!({ "config": { "default_stream_config": { "retention_policy": "0s" } } }),
            ),
        ),
        (
            "bad-min-age",
            one_stream(json!({ "delete_on_empty": { "min_age": "later" } })),
        ),
        (
            "bad-mode",
            one_stream(json!({ "timestamping": { "mode": "sometimes" } })),
        ),
        (
            "bad-basin-name",
            json!({ "basins": [{ "name": "Not_A_Basin" }] }),
        ),
        ("basins-not-a-list", json!({ "basins": { "name": basin } })),
    ];
    for (label, spec) in &cases {
        assert_refused(
            dir.path(),
            label,
            &serde_json::to_vec(spec).expect("serialize"),
        );
    }
    assert_refused(dir.path(), "not-json", b"{\"basins\": [");
    refuse_to_start("missing-file", &dir.path().join("does-not-exist.json"));
}
