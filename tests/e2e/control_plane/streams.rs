//! Stream control plane: names, listing, create/ensure/get/reconfigure/delete and config
//! resolution (API.md §2, §4).

use std::collections::BTreeMap;

use s2_sdk::types::{
    BasinConfig, CreateBasinInput, CreateStreamInput, DeleteOnEmptyConfig, DeleteStreamInput,
    EncryptionAlgorithm, EnsureStreamInput, ListStreamsInput, ReconfigureStreamInput,
    RetentionPolicy, StreamConfig, StreamInfo, StreamNamePrefix, StreamNameStartAfter,
    StreamReconfiguration, TimestampingConfig, TimestampingMode, TimestampingReconfiguration,
};
use s2_sdk::S2Basin;
use serde_json::{json, Value};

use crate::harness::{
    assert_error, assert_json_content_type, assert_keys, assert_timestamp, basin_name, encode,
    eventually, expect_server_error, http, http_json, provision, stream_name, unique_basin,
    Response, Server, DELETION_TIMEOUT,
};

fn start() -> Server {
    Server::start(&["--shards", "2"])
}

/// The fully resolved config of a stream when neither it nor its basin sets anything.
fn global_defaults_json() -> Value {
    json!({
        "storage_class": "express",
        "retention_policy": { "age": 604800 },
        "timestamping": { "mode": "client-prefer", "uncapped": false },
        "delete_on_empty": { "min_age_secs": 0 }
    })
}

fn global_defaults() -> StreamConfig {
    StreamConfig::new()
        .with_storage_class("express")
        .with_retention_policy(RetentionPolicy::Age(604_800))
        .with_timestamping(
            TimestampingConfig::new()
                .with_mode(TimestampingMode::ClientPrefer)
                .with_uncapped(false),
        )
        .with_delete_on_empty(DeleteOnEmptyConfig::new())
}

fn stream_path(stream: &str) -> String {
    format!("/v1/streams/{}", encode(stream))
}

/// Creates a basin over raw HTTP with the given config (JSON) and returns its name.
fn create_basin(port: u16, prefix: &str, config: Value) -> String {
    let name = unique_basin(prefix);
    http_json(
        port,
        "POST",
        "/v1/basins",
        &[],
        &json!({ "basin": name, "config": config }),
    )
    .expect_status(201);
    name
}

/// A raw request to a basin-scoped route.
fn in_basin(port: u16, basin: &str, method: &str, path: &str, body: Option<&Value>) -> Response {
    match body {
        Some(body) => http_json(port, method, path, &[("S2-Basin", basin)], body),
        None => http(port, method, path, &[("S2-Basin", basin)], b""),
    }
}

fn stream_config_json(port: u16, basin: &str, stream: &str) -> Value {
    let response = in_basin(port, basin, "GET", &stream_path(stream), None);
    response.expect_status(200);
    assert_json_content_type(&response);
    response.json()
}

/// The StreamInfo items listed over raw HTTP (shape-checked), and `has_more`.
fn listed_streams(port: u16, basin: &str, query: &str) -> (Vec<Value>, bool) {
    let path = if query.is_empty() {
        "/v1/streams".to_owned()
    } else {
        format!("/v1/streams?{query}")
    };
    let page = in_basin(port, basin, "GET", &path, None)
        .expect_status(200)
        .json();
    assert_keys(&page, &["streams", "has_more"]);
    let items = page["streams"].as_array().expect("streams array").clone();
    for item in &items {
        assert_keys(item, &["name", "created_at", "deleted_at", "cipher"]);
        assert_timestamp(&item["created_at"]);
    }
    (
        items,
        page["has_more"].as_bool().expect("has_more is a bool"),
    )
}

fn stream_prefix(text: &str) -> StreamNamePrefix {
    text.parse()
        .unwrap_or_else(|err| panic!("invalid stream prefix {text:?}: {err}"))
}

fn stream_start_after(text: &str) -> StreamNameStartAfter {
    text.parse()
        .unwrap_or_else(|err| panic!("invalid stream start_after {text:?}: {err}"))
}

async fn list_stream_names(basin: &S2Basin, input: ListStreamsInput) -> (Vec<String>, bool) {
    let page = basin
        .list_streams(input)
        .await
        .unwrap_or_else(|err| panic!("list_streams failed: {err}"));
    let names = page
        .values
        .iter()
        .map(|info| info.name.to_string())
        .collect();
    (names, page.has_more)
}

async fn create_stream(basin: &S2Basin, name: &str) -> StreamInfo {
    basin
        .create_stream(CreateStreamInput::new(stream_name(name)))
        .await
        .unwrap_or_else(|err| panic!("create stream {name:?}: {err}"))
}

/// The main SDK scenario. Streams are spread over the shards by placement, so running it
/// with different shard counts checks that every shard answers the same way and that
/// listing merges what all shards own.
async fn stream_control_plane_scenario(shards: &str) {
    let server = Server::start(&["--shards", shards]);
    let port = server.port();
    let s2 = server.sdk();
    let basin_text = unique_basin("scenario");
    s2.create_basin(CreateBasinInput::new(basin_name(&basin_text)))
        .await
        .expect("create basin");
    let basin = s2.basin(basin_name(&basin_text));

    let mut names: Vec<String> = (0..10).map(|i| format!("log-{i:02}")).collect();
    names.push("metrics".to_owned());
    names.push("orders/2024/01".to_owned());
    names.push("a stream 🎉".to_owned());
    let mut created_at = BTreeMap::new();
    for name in &names {
        let info = create_stream(&basin, name).await;
        assert_eq!(info.name.to_string(), *name);
        assert!(info.deleted_at.is_none(), "{info:?}");
        assert_eq!(info.cipher, None);
        created_at.insert(name.clone(), info.created_at);
    }
    let mut sorted = names.clone();
    sorted.sort();

    // Listing: sorted, filtered, paged, and limit 0 / > 1000 meaning 1000.
    for input in [
        ListStreamsInput::new(),
        ListStreamsInput::new().with_limit(0),
        ListStreamsInput::new().with_limit(5000),
    ] {
        assert_eq!(
            list_stream_names(&basin, input).await,
            (sorted.clone(), false)
        );
    }
    let logs: Vec<String> = sorted
        .iter()
        .filter(|name| name.starts_with("log-"))
        .cloned()
        .collect();
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut input = ListStreamsInput::new()
        .with_prefix(stream_prefix("log-"))
        .with_limit(3);
    loop {
        let (page, has_more) = list_stream_names(&basin, input.clone()).await;
        pages += 1;
        assert!(pages <= 4, "too many pages; seen so far {seen:?}");
        seen.extend(page.iter().cloned());
        if !has_more {
            break;
        }
        assert_eq!(
            page.len(),
            3,
            "a page followed by more must be full: {page:?}"
        );
        input = input.with_start_after(stream_start_after(page.last().expect("items")));
    }
    assert_eq!((seen, pages), (logs, 4));
    assert_eq!(
        list_stream_names(
            &basin,
            ListStreamsInput::new()
                .with_prefix(stream_prefix("log-0"))
                .with_start_after(stream_start_after("log-05"))
        )
        .await,
        (
            vec![
                "log-06".to_owned(),
                "log-07".to_owned(),
                "log-08".to_owned(),
                "log-09".to_owned()
            ],
            false
        )
    );
    assert_eq!(
        list_stream_names(
            &basin,
            ListStreamsInput::new().with_prefix(stream_prefix("nothing"))
        )
        .await,
        (Vec::new(), false)
    );

    // Every stream reports the global defaults, whichever shard owns it.
    for name in &names {
        assert_eq!(
            basin
                .get_stream_config(stream_name(name))
                .await
                .expect("get config"),
            global_defaults(),
            "stream {name:?}"
        );
    }

    // Duplicates conflict; a replay with the same token does not.
    let message = expect_server_error(
        basin
            .create_stream(CreateStreamInput::new(stream_name("log-00")))
            .await,
        409,
        "resource_already_exists",
    );
    assert!(
        message.contains(&format!(
            "stream `log-00` in basin `{basin_text}` already exists"
        )),
        "{message:?}"
    );
    let input = CreateStreamInput::new(stream_name("replayed"))
        .with_config(StreamConfig::new().with_storage_class("standard"));
    let first = basin.create_stream(input.clone()).await.expect("create");
    let replay = basin.create_stream(input.clone()).await.expect("replay");
    assert_eq!(replay, first);

    // Ensure: replace an existing config, then a noop, then a fresh stream.
    let infinite = StreamConfig::new().with_retention_policy(RetentionPolicy::Infinite);
    let (kind, info) = provision(
        basin
            .ensure_stream(
                EnsureStreamInput::new(stream_name("metrics")).with_config(infinite.clone()),
            )
            .await
            .expect("ensure"),
    );
    assert_eq!(kind, "updated");
    assert_eq!(Some(&info.created_at), created_at.get("metrics"));
    assert_eq!(
        basin
            .get_stream_config(stream_name("metrics"))
            .await
            .expect("get"),
        global_defaults().with_retention_policy(RetentionPolicy::Infinite)
    );
    let (kind, _) = provision(
        basin
            .ensure_stream(EnsureStreamInput::new(stream_name("metrics")).with_config(infinite))
            .await
            .expect("ensure"),
    );
    assert_eq!(kind, "noop");
    let (kind, fresh) = provision(
        basin
            .ensure_stream(EnsureStreamInput::new(stream_name("fresh")))
            .await
            .expect("ensure"),
    );
    assert_eq!(kind, "created");
    assert!(fresh.deleted_at.is_none());

    // Reconfigure one nested field.
    let expected = global_defaults().with_timestamping(
        TimestampingConfig::new()
            .with_mode(TimestampingMode::Arrival)
            .with_uncapped(false),
    );
    let config = basin
        .reconfigure_stream(ReconfigureStreamInput::new(
            stream_name("orders/2024/01"),
            StreamReconfiguration::new().with_timestamping(
                TimestampingReconfiguration::new().with_mode(TimestampingMode::Arrival),
            ),
        ))
        .await
        .expect("reconfigure");
    assert_eq!(config, expected);
    assert_eq!(
        basin
            .get_stream_config(stream_name("orders/2024/01"))
            .await
            .expect("get"),
        expected
    );

    // Delete: pending, then gone, then reusable.
    basin
        .delete_stream(DeleteStreamInput::new(stream_name("log-03")))
        .await
        .expect("delete");
    basin
        .delete_stream(DeleteStreamInput::new(stream_name("log-03")))
        .await
        .expect("a second delete while pending is accepted");
    expect_server_error(
        basin.get_stream_config(stream_name("log-03")).await,
        409,
        "stream_deletion_pending",
    );
    expect_server_error(
        basin
            .delete_stream(DeleteStreamInput::new(stream_name("never-created")))
            .await,
        404,
        "stream_not_found",
    );
    eventually(
        "the deleted stream leaves the listing",
        DELETION_TIMEOUT,
        || {
            listed_streams(port, &basin_text, "prefix=log-03")
                .0
                .is_empty()
        },
    )
    .await;
    create_stream(&basin, "log-03").await;

    let mut expected_names = sorted;
    expected_names.push("replayed".to_owned());
    expected_names.push("fresh".to_owned());
    expected_names.sort();
    assert_eq!(
        list_stream_names(&basin, ListStreamsInput::new()).await,
        (expected_names, false)
    );
}

// B-046, B-047, B-048, B-049, B-091, B-095, B-097, B-104, B-106, B-107, B-264
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_control_plane_with_one_shard() {
    stream_control_plane_scenario("1").await;
}

// B-046, B-047, B-048, B-049, B-091, B-095, B-097, B-104, B-106, B-107, B-264
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_control_plane_with_four_shards() {
    stream_control_plane_scenario("4").await;
}

// B-090, B-091, B-110
#[test]
fn create_stream_answers_201_and_replays_only_with_the_same_token_and_config() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "create", json!(null));

    let created = in_basin(
        port,
        &basin,
        "POST",
        "/v1/streams",
        Some(&json!({ "stream": "events" })),
    );
    created.expect_status(201);
    assert_json_content_type(&created);
    assert_eq!(created.header("s2-provision-result"), Some("created"));
    let info = created.json();
    assert_keys(&info, &["name", "created_at", "deleted_at", "cipher"]);
    assert_eq!(info["name"], "events");
    assert_eq!(info["deleted_at"], Value::Null);
    assert_eq!(info["cipher"], Value::Null);
    assert_timestamp(&info["created_at"]);
    assert_eq!(listed_streams(port, &basin, "").0, vec![info]);

    let message = assert_error(
        &in_basin(
            port,
            &basin,
            "POST",
            "/v1/streams",
            Some(&json!({ "stream": "events" })),
        ),
        409,
        "resource_already_exists",
    );
    assert!(
        message.contains(&format!(
            "stream `events` in basin `{basin}` already exists"
        )),
        "{message:?}"
    );

    let body = json!({ "stream": "tokened", "config": { "retention_policy": { "age": 3600 } } });
    let with_token = |token: &str, body: &Value| {
        http_json(
            port,
            "POST",
            "/v1/streams",
            &[("S2-Basin", basin.as_str()), ("S2-Request-Token", token)],
            body,
        )
    };
    let first = with_token("stream-token-1", &body);
    first.expect_status(201);
    assert_eq!(first.header("s2-provision-result"), Some("created"));
    let replay = with_token("stream-token-1", &body);
    replay.expect_status(201);
    assert_eq!(replay.header("s2-provision-result"), Some("noop"));
    assert_eq!(replay.json(), first.json());

    // The replay compares the config as requested, so new basin defaults do not break it.
    http_json(
        port,
        "PATCH",
        &format!("/v1/basins/{basin}"),
        &[],
        &json!({ "default_stream_config": { "storage_class": "standard" } }),
    )
    .expect_status(200);
    let replay = with_token("stream-token-1", &body);
    replay.expect_status(201);
    assert_eq!(replay.header("s2-provision-result"), Some("noop"));
    assert_eq!(replay.json(), first.json());

    let other_config =
        json!({ "stream": "tokened", "config": { "retention_policy": { "age": 60 } } });
    assert_error(
        &with_token("stream-token-1", &other_config),
        409,
        "resource_already_exists",
    );
    assert_error(
        &with_token("stream-token-2", &body),
        409,
        "resource_already_exists",
    );

    // Resolved at creation, before the basin default changed.
    let mut expected = global_defaults_json();
    expected["retention_policy"] = json!({ "age": 3600 });
    assert_eq!(stream_config_json(port, &basin, "tokened"), expected);
    assert_eq!(
        stream_config_json(port, &basin, "events"),
        global_defaults_json()
    );
}

// B-043, B-044, B-045, B-050, B-093
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_names_allow_any_utf8_except_nul_dot_and_dotdot() {
    let server = start();
    let port = server.port();
    let s2 = server.sdk();
    let basin_text = unique_basin("names");
    s2.create_basin(CreateBasinInput::new(basin_name(&basin_text)))
        .await
        .expect("create basin");
    let basin = s2.basin(basin_name(&basin_text));

    let accepted = [
        "a/b/c".to_owned(),
        "/leading-slash".to_owned(),
        "with space".to_owned(),
        "trailing space ".to_owned(),
        "tab\there".to_owned(),
        "emoji 🎉🚀".to_owned(),
        "query?x=1#frag".to_owned(),
        "percent%2Fliteral".to_owned(),
        "...".to_owned(),
        ".hidden".to_owned(),
        "ünïcödé".to_owned(),
        "ctrl\u{1}\u{7f}".to_owned(),
        "x".repeat(512),
    ];
    for name in &accepted {
        create_stream(&basin, name).await;
        // The SDK percent-encodes the name as one path segment; so does the raw client.
        assert_eq!(
            basin
                .get_stream_config(stream_name(name))
                .await
                .expect("get via SDK"),
            global_defaults(),
            "{name:?}"
        );
        assert_eq!(
            stream_config_json(port, &basin_text, name),
            global_defaults_json(),
            "{name:?}"
        );
    }
    let mut sorted = accepted.to_vec();
    sorted.sort();
    let listed: Vec<Value> = listed_streams(port, &basin_text, "").0;
    let listed_names: Vec<&str> = listed
        .iter()
        .map(|item| item["name"].as_str().expect("name"))
        .collect();
    assert_eq!(listed_names, sorted);
    let (slashed, _) = listed_streams(port, &basin_text, &format!("prefix={}", encode("a/")));
    assert_eq!(slashed.len(), 1);
    assert_eq!(slashed[0]["name"], "a/b/c");

    // A literal "%2F" in a name is decoded exactly once.
    let response = in_basin(
        port,
        &basin_text,
        "GET",
        "/v1/streams/percent%252Fliteral",
        None,
    );
    response.expect_status(200);
    assert_error(
        &in_basin(
            port,
            &basin_text,
            "GET",
            "/v1/streams/percent%2Fliteral",
            None,
        ),
        404,
        "stream_not_found",
    );

    let rejected = [
        (String::new(), "stream name must not be empty"),
        (".".to_owned(), "stream name must not be \".\" or \"..\""),
        ("..".to_owned(), "stream name must not be \".\" or \"..\""),
        (
            "nul\u{0}byte".to_owned(),
            "stream name must not contain NUL bytes",
        ),
        (
            "y".repeat(513),
            "stream name must not exceed 512 bytes in length",
        ),
    ];
    for (name, reason) in &rejected {
        let message = assert_error(
            &in_basin(
                port,
                &basin_text,
                "POST",
                "/v1/streams",
                Some(&json!({ "stream": name })),
            ),
            400,
            "bad_json",
        );
        assert!(
            message.contains(reason),
            "{name:?}: {message:?} lacks {reason:?}"
        );
        if !name.is_empty() {
            let path = format!("/v1/streams/{}", encode(name).replace('.', "%2E"));
            let message = assert_error(
                &in_basin(port, &basin_text, "GET", &path, None),
                400,
                "bad_path",
            );
            assert!(
                message.contains(reason),
                "{name:?}: {message:?} lacks {reason:?}"
            );
            assert_error(
                &in_basin(port, &basin_text, "PUT", &path, None),
                400,
                "bad_path",
            );
        }
    }
    assert_eq!(
        listed_streams(port, &basin_text, "").0.len(),
        accepted.len()
    );

    // List parameters: NUL is rejected, "." is a fine prefix.
    for query in ["prefix=%00", "start_after=a%00b"] {
        let message = assert_error(
            &in_basin(
                port,
                &basin_text,
                "GET",
                &format!("/v1/streams?{query}"),
                None,
            ),
            400,
            "bad_query",
        );
        assert!(
            message.contains("must not contain NUL bytes"),
            "{query}: {message:?}"
        );
    }
    let (dotted, has_more) = listed_streams(port, &basin_text, "prefix=.");
    assert_eq!(dotted.len(), 2, "{dotted:?}");
    assert!(!has_more);
}

// B-094, B-095, B-103, B-110
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_config_resolves_stream_then_basin_then_global_defaults() {
    let server = start();
    let port = server.port();
    let s2 = server.sdk();
    let basin = create_basin(
        port,
        "resolve",
        json!({
            "default_stream_config": {
                "storage_class": "standard",
                "retention_policy": { "age": 3600 },
                "timestamping": { "mode": "arrival" }
            }
        }),
    );
    let create = |stream: &str, config: Value| {
        in_basin(
            port,
            &basin,
            "POST",
            "/v1/streams",
            Some(&json!({ "stream": stream, "config": config })),
        )
        .expect_status(201)
        .json()
    };

    create("plain", json!(null));
    let plain = json!({
        "storage_class": "standard",
        "retention_policy": { "age": 3600 },
        "timestamping": { "mode": "arrival", "uncapped": false },
        "delete_on_empty": { "min_age_secs": 0 }
    });
    assert_eq!(stream_config_json(port, &basin, "plain"), plain);

    create(
        "override",
        json!({
            "retention_policy": { "infinite": {} },
            "timestamping": { "uncapped": true },
            "delete_on_empty": { "min_age_secs": 300 }
        }),
    );
    let overridden = json!({
        "storage_class": "standard",
        "retention_policy": { "infinite": {} },
        "timestamping": { "mode": "arrival", "uncapped": true },
        "delete_on_empty": { "min_age_secs": 300 }
    });
    assert_eq!(stream_config_json(port, &basin, "override"), overridden);
    let sdk_config = s2
        .basin(basin_name(&basin))
        .get_stream_config(stream_name("override"))
        .await
        .expect("get via SDK");
    assert_eq!(
        sdk_config,
        StreamConfig::new()
            .with_storage_class("standard")
            .with_retention_policy(RetentionPolicy::Infinite)
            .with_timestamping(
                TimestampingConfig::new()
                    .with_mode(TimestampingMode::Arrival)
                    .with_uncapped(true)
            )
            .with_delete_on_empty(
                DeleteOnEmptyConfig::new().with_min_age(std::time::Duration::from_secs(300))
            )
    );

    // Any storage class string is stored and echoed.
    create("custom-class", json!({ "storage_class": "fancy-tier-9" }));
    let mut custom = plain.clone();
    custom["storage_class"] = json!("fancy-tier-9");
    assert_eq!(stream_config_json(port, &basin, "custom-class"), custom);

    // A basin with no defaults gives the global defaults.
    let bare = create_basin(port, "resolve-bare", json!({}));
    in_basin(
        port,
        &bare,
        "POST",
        "/v1/streams",
        Some(&json!({ "stream": "global" })),
    )
    .expect_status(201);
    assert_eq!(
        stream_config_json(port, &bare, "global"),
        global_defaults_json()
    );

    // Changing basin defaults and cipher leaves existing streams exactly as they were.
    let listed_before = listed_streams(port, &basin, "").0;
    http_json(
        port,
        "PATCH",
        &format!("/v1/basins/{basin}"),
        &[],
        &json!({
            "default_stream_config": { "storage_class": "express", "retention_policy": { "age": 60 } },
            "stream_cipher": "aegis-256"
        }),
    )
    .expect_status(200);
    assert_eq!(stream_config_json(port, &basin, "plain"), plain);
    assert_eq!(stream_config_json(port, &basin, "override"), overridden);
    assert_eq!(stream_config_json(port, &basin, "custom-class"), custom);
    assert_eq!(listed_streams(port, &basin, "").0, listed_before);

    // A stream created now picks up the new defaults (and the unchanged timestamping mode).
    let after = create("after", json!(null));
    assert_eq!(after["cipher"], "aegis-256");
    assert_eq!(
        stream_config_json(port, &basin, "after"),
        json!({
            "storage_class": "express",
            "retention_policy": { "age": 60 },
            "timestamping": { "mode": "arrival", "uncapped": false },
            "delete_on_empty": { "min_age_secs": 0 }
        })
    );
}

// B-097, B-264
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_stream_creates_or_fully_replaces_the_config() {
    let server = start();
    let port = server.port();
    let s2 = server.sdk();
    let basin = create_basin(
        port,
        "ensure",
        json!({ "default_stream_config": { "retention_policy": { "age": 3600 } } }),
    );
    let path = stream_path("ensured");
    let mut basin_resolved = global_defaults_json();
    basin_resolved["retention_policy"] = json!({ "age": 3600 });

    let put = |body: Option<&Value>, expected_status: u16, expected_result: &str| {
        let response = in_basin(port, &basin, "PUT", &path, body);
        response.expect_status(expected_status);
        assert_eq!(
            response.header("s2-provision-result"),
            Some(expected_result),
            "PUT {body:?}"
        );
        let info = response.json();
        assert_keys(&info, &["name", "created_at", "deleted_at", "cipher"]);
        assert_eq!(info["name"], "ensured");
        info
    };

    let created = put(None, 201, "created");
    assert_eq!(stream_config_json(port, &basin, "ensured"), basin_resolved);

    let tuned = json!({ "storage_class": "standard", "timestamping": { "mode": "arrival" } });
    let updated = put(Some(&tuned), 200, "updated");
    assert_eq!(updated["created_at"], created["created_at"]);
    let mut expected = basin_resolved.clone();
    expected["storage_class"] = json!("standard");
    expected["timestamping"]["mode"] = json!("arrival");
    assert_eq!(stream_config_json(port, &basin, "ensured"), expected);
    put(Some(&tuned), 200, "noop");

    // A full replace: what the body leaves out goes back to basin or global defaults.
    put(
        Some(&json!({ "delete_on_empty": { "min_age_secs": 120 } })),
        200,
        "updated",
    );
    let mut expected = basin_resolved.clone();
    expected["delete_on_empty"] = json!({ "min_age_secs": 120 });
    assert_eq!(stream_config_json(port, &basin, "ensured"), expected);

    put(None, 200, "updated");
    assert_eq!(stream_config_json(port, &basin, "ensured"), basin_resolved);
    // A config that resolves to what is stored is a noop.
    put(
        Some(&json!({ "retention_policy": { "age": 3600 } })),
        200,
        "noop",
    );
    let same = put(Some(&json!({ "storage_class": "express" })), 200, "noop");
    assert_eq!(same["created_at"], created["created_at"]);

    assert_error(
        &in_basin(
            port,
            &basin,
            "PUT",
            &path,
            Some(&json!({ "retention_policy": { "age": 0 } })),
        ),
        422,
        "invalid",
    );
    assert_error(
        &http(
            port,
            "PUT",
            &path,
            &[("S2-Basin", basin.as_str()), ("Content-Type", "text/plain")],
            b"{}",
        ),
        400,
        "bad_json",
    );
    assert_eq!(stream_config_json(port, &basin, "ensured"), basin_resolved);

    // The SDK maps the header to its EnsureOutput variants.
    let sdk_basin = s2.basin(basin_name(&basin));
    let ensure = |config: Option<StreamConfig>| {
        let input = match config {
            Some(config) => EnsureStreamInput::new(stream_name("sdk-ensured")).with_config(config),
            None => EnsureStreamInput::new(stream_name("sdk-ensured")),
        };
        let sdk_basin = sdk_basin.clone();
        async move {
            provision(
                sdk_basin
                    .ensure_stream(input)
                    .await
                    .unwrap_or_else(|err| panic!("ensure_stream failed: {err}")),
            )
        }
    };
    let (kind, created) = ensure(None).await;
    assert_eq!(kind, "created");
    let (kind, same) = ensure(None).await;
    assert_eq!(kind, "noop");
    assert_eq!(same.created_at, created.created_at);
    let (kind, updated) = ensure(Some(StreamConfig::new().with_storage_class("standard"))).await;
    assert_eq!(kind, "updated");
    assert_eq!(updated.created_at, created.created_at);
    assert_eq!(
        sdk_basin
            .get_stream_config(stream_name("sdk-ensured"))
            .await
            .expect("get"),
        global_defaults()
            .with_storage_class("standard")
            .with_retention_policy(RetentionPolicy::Age(3600))
    );
}

// B-098, B-099, B-100, B-101, B-102
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfigure_stream_applies_absent_null_and_set_fields() {
    let server = start();
    let port = server.port();
    let s2 = server.sdk();
    let basin = create_basin(
        port,
        "patch",
        json!({
            "default_stream_config": {
                "retention_policy": { "age": 3600 },
                "timestamping": { "uncapped": true }
            }
        }),
    );
    let initial = json!({
        "storage_class": "standard",
        "retention_policy": { "age": 100 },
        "timestamping": { "mode": "client-require", "uncapped": false },
        "delete_on_empty": { "min_age_secs": 60 }
    });
    in_basin(
        port,
        &basin,
        "POST",
        "/v1/streams",
        Some(&json!({ "stream": "tuned", "config": initial })),
    )
    .expect_status(201);
    assert_eq!(stream_config_json(port, &basin, "tuned"), initial);

    let path = stream_path("tuned");
    let patch = |body: Value| -> Value {
        let response = in_basin(port, &basin, "PATCH", &path, Some(&body));
        response.expect_status(200);
        assert_json_content_type(&response);
        let config = response.json();
        assert_eq!(
            stream_config_json(port, &basin, "tuned"),
            config,
            "GET disagrees with PATCH {body}"
        );
        config
    };

    let mut expected = initial.clone();
    assert_eq!(patch(json!({})), expected, "{{}} changes nothing");

    expected["retention_policy"] = json!({ "age": 3600 });
    assert_eq!(
        patch(json!({ "retention_policy": null })),
        expected,
        "basin default"
    );

    expected["storage_class"] = json!("express");
    assert_eq!(
        patch(json!({ "storage_class": null })),
        expected,
        "global default"
    );

    expected["timestamping"]["mode"] = json!("client-prefer");
    assert_eq!(patch(json!({ "timestamping": { "mode": null } })), expected);

    expected["timestamping"]["uncapped"] = json!(true);
    assert_eq!(
        patch(json!({ "timestamping": { "uncapped": null } })),
        expected
    );

    expected["timestamping"]["mode"] = json!("arrival");
    assert_eq!(
        patch(json!({ "timestamping": { "mode": "arrival" } })),
        expected
    );

    expected["timestamping"] = json!({ "mode": "client-prefer", "uncapped": true });
    assert_eq!(patch(json!({ "timestamping": null })), expected);

    expected["delete_on_empty"] = json!({ "min_age_secs": 0 });
    assert_eq!(patch(json!({ "delete_on_empty": null })), expected);

    expected["delete_on_empty"] = json!({ "min_age_secs": 30 });
    assert_eq!(
        patch(json!({ "delete_on_empty": { "min_age_secs": 30 } })),
        expected
    );

    expected["retention_policy"] = json!({ "infinite": {} });
    assert_eq!(
        patch(json!({ "retention_policy": { "infinite": {} } })),
        expected
    );

    expected["storage_class"] = json!("another-class");
    assert_eq!(patch(json!({ "storage_class": "another-class" })), expected);

    let message = assert_error(
        &in_basin(
            port,
            &basin,
            "PATCH",
            &path,
            Some(&json!({ "retention_policy": { "age": 0 } })),
        ),
        422,
        "invalid",
    );
    assert!(
        message.contains("age must be greater than 0 seconds"),
        "{message:?}"
    );
    assert_error(
        &in_basin(
            port,
            &basin,
            "PATCH",
            &path,
            Some(&json!({ "retention_policy": "forever" })),
        ),
        400,
        "bad_json",
    );
    assert_error(
        &in_basin(
            port,
            &basin,
            "PATCH",
            &path,
            Some(&json!({ "timestamping": { "mode": "sundial" } })),
        ),
        400,
        "bad_json",
    );
    assert_eq!(stream_config_json(port, &basin, "tuned"), expected);

    // The SDK sends only the fields it sets.
    let config = s2
        .basin(basin_name(&basin))
        .reconfigure_stream(ReconfigureStreamInput::new(
            stream_name("tuned"),
            StreamReconfiguration::new().with_retention_policy(RetentionPolicy::Age(7200)),
        ))
        .await
        .expect("reconfigure");
    assert_eq!(config.retention_policy, Some(RetentionPolicy::Age(7200)));
    assert_eq!(config.storage_class.as_deref(), Some("another-class"));
    expected["retention_policy"] = json!({ "age": 7200 });
    assert_eq!(stream_config_json(port, &basin, "tuned"), expected);

    // Missing stream, missing basin.
    let message = assert_error(
        &in_basin(
            port,
            &basin,
            "PATCH",
            &stream_path("absent"),
            Some(&json!({})),
        ),
        404,
        "stream_not_found",
    );
    assert!(
        message.contains(&format!("stream `absent` in basin `{basin}` not found")),
        "{message:?}"
    );
    let ghost = unique_basin("ghost");
    assert_error(
        &in_basin(port, &ghost, "PATCH", &path, Some(&json!({}))),
        404,
        "basin_not_found",
    );
}

// B-051, B-104, B-105, B-106, B-107
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_stream_is_pending_then_gone_and_reusable() {
    let server = start();
    let port = server.port();
    let s2 = server.sdk();
    let basin_text = create_basin(port, "delete", json!(null));
    let basin = s2.basin(basin_name(&basin_text));
    for name in ["doomed", "keeper"] {
        create_stream(&basin, name).await;
    }
    let path = stream_path("doomed");

    let deleted = in_basin(port, &basin_text, "DELETE", &path, None);
    deleted.expect_status(202);
    assert!(deleted.body.is_empty(), "DELETE body: {:?}", deleted.text());

    // While deletion is pending.
    let again = in_basin(port, &basin_text, "DELETE", &path, None);
    again.expect_status(202);
    assert_error(
        &in_basin(port, &basin_text, "GET", &path, None),
        409,
        "stream_deletion_pending",
    );
    assert_error(
        &in_basin(port, &basin_text, "PATCH", &path, Some(&json!({}))),
        409,
        "stream_deletion_pending",
    );
    assert_error(
        &in_basin(
            port,
            &basin_text,
            "POST",
            "/v1/streams",
            Some(&json!({ "stream": "doomed" })),
        ),
        409,
        "stream_deletion_pending",
    );
    assert_error(
        &in_basin(port, &basin_text, "PUT", &path, None),
        409,
        "stream_deletion_pending",
    );
    let (listed, _) = listed_streams(port, &basin_text, "prefix=doomed");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_timestamp(&listed[0]["deleted_at"]);
    let page = basin
        .list_streams(ListStreamsInput::new().with_prefix(stream_prefix("doomed")))
        .await
        .expect("list");
    assert!(page.values[0].deleted_at.is_some(), "{:?}", page.values);
    expect_server_error(
        basin
            .ensure_stream(EnsureStreamInput::new(stream_name("doomed")))
            .await,
        409,
        "stream_deletion_pending",
    );
    expect_server_error(
        basin
            .reconfigure_stream(ReconfigureStreamInput::new(
                stream_name("doomed"),
                StreamReconfiguration::new().with_storage_class("standard"),
            ))
            .await,
        409,
        "stream_deletion_pending",
    );

    assert_error(
        &in_basin(
            port,
            &basin_text,
            "DELETE",
            &stream_path("never-created"),
            None,
        ),
        404,
        "stream_not_found",
    );

    eventually("the deleted stream is gone", DELETION_TIMEOUT, || {
        listed_streams(port, &basin_text, "prefix=doomed")
            .0
            .is_empty()
    })
    .await;
    assert_error(
        &in_basin(port, &basin_text, "GET", &path, None),
        404,
        "stream_not_found",
    );
    let (remaining, _) = listed_streams(port, &basin_text, "");
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0]["name"], "keeper");

    let reborn = in_basin(
        port,
        &basin_text,
        "POST",
        "/v1/streams",
        Some(&json!({ "stream": "doomed" })),
    );
    reborn.expect_status(201);
    assert_eq!(reborn.json()["deleted_at"], Value::Null);
    assert_eq!(
        stream_config_json(port, &basin_text, "doomed"),
        global_defaults_json()
    );
}

// B-092, B-096, B-102, B-108
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_routes_report_missing_basins_and_streams() {
    let server = start();
    let port = server.port();
    let s2 = server.sdk();
    let ghost = unique_basin("ghost");
    let ghost_basin = s2.basin(basin_name(&ghost));

    assert_error(
        &in_basin(
            port,
            &ghost,
            "POST",
            "/v1/streams",
            Some(&json!({ "stream": "s" })),
        ),
        404,
        "basin_not_found",
    );
    assert_error(
        &in_basin(port, &ghost, "GET", "/v1/streams", None),
        404,
        "basin_not_found",
    );
    assert_error(
        &in_basin(port, &ghost, "PUT", &stream_path("s"), None),
        404,
        "basin_not_found",
    );
    assert_error(
        &in_basin(port, &ghost, "PATCH", &stream_path("s"), Some(&json!({}))),
        404,
        "basin_not_found",
    );
    // Getting a config does not look at the basin.
    assert_error(
        &in_basin(port, &ghost, "GET", &stream_path("s"), None),
        404,
        "stream_not_found",
    );

    expect_server_error(
        ghost_basin
            .create_stream(CreateStreamInput::new(stream_name("s")))
            .await,
        404,
        "basin_not_found",
    );
    expect_server_error(
        ghost_basin.list_streams(ListStreamsInput::new()).await,
        404,
        "basin_not_found",
    );
    expect_server_error(
        ghost_basin.get_stream_config(stream_name("s")).await,
        404,
        "stream_not_found",
    );

    let real = create_basin(port, "real", json!(null));
    let message = assert_error(
        &in_basin(port, &real, "GET", &stream_path("absent"), None),
        404,
        "stream_not_found",
    );
    assert!(
        message.contains(&format!("stream `absent` in basin `{real}` not found")),
        "{message:?}"
    );
    let (listed, has_more) = listed_streams(port, &real, "");
    assert!(listed.is_empty() && !has_more);
}

// B-109
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_in_an_encrypted_basin_show_the_cipher() {
    let server = start();
    let port = server.port();
    let s2 = server.sdk();
    let basin_text = unique_basin("encrypted");
    s2.create_basin(
        CreateBasinInput::new(basin_name(&basin_text))
            .with_config(BasinConfig::new().with_stream_cipher(EncryptionAlgorithm::Aes256Gcm)),
    )
    .await
    .expect("create basin");

    let info = s2
        .basin(basin_name(&basin_text))
        .create_stream(CreateStreamInput::new(stream_name("sealed")))
        .await
        .expect("create stream");
    assert_eq!(info.cipher, Some(EncryptionAlgorithm::Aes256Gcm));

    let created = in_basin(
        port,
        &basin_text,
        "POST",
        "/v1/streams",
        Some(&json!({ "stream": "raw-sealed" })),
    );
    created.expect_status(201);
    assert_eq!(created.json()["cipher"], "aes-256-gcm");

    let (listed, _) = listed_streams(port, &basin_text, "");
    let ciphers: Vec<Value> = listed.iter().map(|item| item["cipher"].clone()).collect();
    assert_eq!(ciphers, vec![json!("aes-256-gcm"), json!("aes-256-gcm")]);
    // The cipher is not part of the stream config.
    assert_eq!(
        stream_config_json(port, &basin_text, "sealed"),
        global_defaults_json()
    );
}
