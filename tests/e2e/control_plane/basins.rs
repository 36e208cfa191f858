//! Basin control plane: names, listing, create/ensure/get/reconfigure/delete (API.md §2–§3).

use s2_sdk::types::{
    BasinConfig, BasinNamePrefix, BasinNameStartAfter, BasinReconfiguration, CreateBasinInput,
    CreateStreamInput, DeleteBasinInput, EncryptionAlgorithm, EnsureBasinInput, ListBasinsInput,
    ReconfigureBasinInput, RetentionPolicy, StreamConfig, StreamReconfiguration,
};
use s2_sdk::S2;
use serde_json::{json, Value};

use crate::harness::{
    assert_error, assert_json_content_type, assert_keys, assert_timestamp, basin_name, eventually,
    expect_server_error, get, http, http_json, provision, stream_name, unique_basin, Server,
    DELETION_TIMEOUT,
};

fn start() -> Server {
    Server::start(&["--shards", "2"])
}

fn default_basin_config() -> Value {
    json!({
        "default_stream_config": null,
        "stream_cipher": null,
        "create_stream_on_append": false,
        "create_stream_on_read": false
    })
}

/// Asserts a BasinInfo object: all five keys, `location: null`, RFC 3339 times, and
/// `deleted_at`/`state` consistent with `state`.
fn assert_basin_info(info: &Value, name: &str, state: &str) {
    assert_keys(
        info,
        &["name", "location", "created_at", "deleted_at", "state"],
    );
    assert_eq!(info["name"], name, "{info}");
    assert_eq!(info["location"], Value::Null, "{info}");
    assert_eq!(info["state"], state, "{info}");
    assert_timestamp(&info["created_at"]);
    if state == "active" {
        assert_eq!(info["deleted_at"], Value::Null, "{info}");
    } else {
        assert_timestamp(&info["deleted_at"]);
    }
}

fn prefix(text: &str) -> BasinNamePrefix {
    text.parse()
        .unwrap_or_else(|err| panic!("invalid basin prefix {text:?}: {err}"))
}

fn start_after(text: &str) -> BasinNameStartAfter {
    text.parse()
        .unwrap_or_else(|err| panic!("invalid basin start_after {text:?}: {err}"))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

async fn list_names(s2: &S2, input: ListBasinsInput) -> (Vec<String>, bool) {
    let page = s2
        .list_basins(input)
        .await
        .unwrap_or_else(|err| panic!("list_basins failed: {err}"));
    let names = page
        .values
        .iter()
        .map(|info| info.name.to_string())
        .collect();
    (names, page.has_more)
}

// B-060, B-069
#[test]
fn create_basin_answers_201_with_basin_info_and_provision_header() {
    let server = start();
    let port = server.port();
    let name = unique_basin("shape");

    let created = http_json(port, "POST", "/v1/basins", &[], &json!({ "basin": name }));
    created.expect_status(201);
    assert_json_content_type(&created);
    assert_eq!(created.header("s2-provision-result"), Some("created"));
    let info = created.json();
    assert_basin_info(&info, &name, "active");

    let config = get(port, &format!("/v1/basins/{name}"));
    config.expect_status(200);
    assert_json_content_type(&config);
    assert_eq!(config.json(), default_basin_config());

    let listed = get(port, "/v1/basins");
    listed.expect_status(200);
    assert_json_content_type(&listed);
    let page = listed.json();
    assert_keys(&page, &["basins", "has_more"]);
    assert_eq!(page["basins"], json!([info]));
    assert_eq!(page["has_more"], false);
}

// B-040, B-041, B-042, B-024
#[test]
fn basin_names_follow_the_naming_rules_in_bodies_and_paths() {
    let server = start();
    let port = server.port();

    let accepted = [
        "abcdefgh".to_owned(),
        "12345678".to_owned(),
        "0basin-9".to_owned(),
        "a-b-c-d-e".to_owned(),
        "x".repeat(48),
    ];
    for name in &accepted {
        http_json(port, "POST", "/v1/basins", &[], &json!({ "basin": name })).expect_status(201);
        get(port, &format!("/v1/basins/{name}")).expect_status(200);
    }

    let rejected = [
        (
            "abcdefg".to_owned(),
            "basin name should be at least 8 bytes in length",
        ),
        (
            "y".repeat(49),
            "basin name must not exceed 48 bytes in length",
        ),
        (
            "-abcdefgh".to_owned(),
            "basin name must begin with a lowercase letter or number",
        ),
        (
            "Abcdefgh".to_owned(),
            "basin name must begin with a lowercase letter or number",
        ),
        (
            "abcdefgh-".to_owned(),
            "basin name must end with a lowercase letter or number",
        ),
        (
            "abcDefgh".to_owned(),
            "basin name must comprise lowercase letters, numbers, and hyphens",
        ),
        (
            "abc_defgh".to_owned(),
            "basin name must comprise lowercase letters, numbers, and hyphens",
        ),
        (
            "abc.defgh".to_owned(),
            "basin name must comprise lowercase letters, numbers, and hyphens",
        ),
    ];
    for (name, reason) in &rejected {
        let message = assert_error(
            &http_json(port, "POST", "/v1/basins", &[], &json!({ "basin": name })),
            400,
            "bad_json",
        );
        assert!(
            message.contains(reason),
            "{name:?}: {message:?} lacks {reason:?}"
        );

        let path = format!("/v1/basins/{name}");
        let message = assert_error(&get(port, &path), 400, "bad_path");
        assert!(
            message.contains(reason),
            "{name:?}: {message:?} lacks {reason:?}"
        );
        assert_error(&http(port, "PUT", &path, &[], b""), 400, "bad_path");
        assert_error(&http(port, "DELETE", &path, &[], b""), 400, "bad_path");
        assert_error(
            &http_json(port, "PATCH", &path, &[], &json!({})),
            400,
            "bad_path",
        );
    }

    // None of the rejected names was created on the way.
    let listed = get(port, "/v1/basins").json();
    let mut names: Vec<String> = listed["basins"]
        .as_array()
        .expect("basins array")
        .iter()
        .map(|info| info["name"].as_str().expect("name").to_owned())
        .collect();
    let mut expected = accepted.to_vec();
    expected.sort();
    names.sort();
    assert_eq!(names, expected);
}

// B-001 (the SDK speaks h2c with prior knowledge), B-061, B-062, B-063
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_basin_conflicts_unless_replayed_with_the_same_token_and_config() {
    let server = start();
    let port = server.port();
    let s2 = server.sdk();

    // SDK: a cloned input carries the same request token, so sending it again is a replay.
    let name = basin_name(&unique_basin("replay"));
    let config = BasinConfig::new().with_create_stream_on_append(true);
    let input = CreateBasinInput::new(name.clone()).with_config(config.clone());
    let first = s2.create_basin(input.clone()).await.expect("create");
    assert_eq!(first.name, name);
    assert!(first.deleted_at.is_none());
    let replay = s2
        .create_basin(input.clone())
        .await
        .expect("replay with the same token");
    assert_eq!(replay, first, "a replay must return the original BasinInfo");
    let message = expect_server_error(
        s2.create_basin(CreateBasinInput::new(name.clone()).with_config(config))
            .await,
        409,
        "resource_already_exists",
    );
    assert!(
        message.contains(&format!("basin `{name}` already exists")),
        "{message:?}"
    );

    // Raw: explicit tokens and the provision header.
    let raw = unique_basin("replay-raw");
    let body = json!({ "basin": raw, "config": { "create_stream_on_read": true } });
    let token = [("S2-Request-Token", "create-token-1")];
    let created = http_json(port, "POST", "/v1/basins", &token, &body);
    created.expect_status(201);
    assert_eq!(created.header("s2-provision-result"), Some("created"));

    let replayed = http_json(port, "POST", "/v1/basins", &token, &body);
    replayed.expect_status(201);
    assert_eq!(replayed.header("s2-provision-result"), Some("noop"));
    assert_eq!(replayed.json(), created.json(), "same name and created_at");

    // The config is compared after normalization: an explicit default equals an absent one.
    let normalized = json!({
        "basin": raw,
        "config": { "create_stream_on_read": true, "create_stream_on_append": false }
    });
    let replayed = http_json(port, "POST", "/v1/basins", &token, &normalized);
    replayed.expect_status(201);
    assert_eq!(replayed.header("s2-provision-result"), Some("noop"));

    let other_config = json!({ "basin": raw, "config": { "create_stream_on_read": false } });
    assert_error(
        &http_json(port, "POST", "/v1/basins", &token, &other_config),
        409,
        "resource_already_exists",
    );
    assert_error(
        &http_json(port, "POST", "/v1/basins", &[], &body),
        409,
        "resource_already_exists",
    );
    assert_error(
        &http_json(
            port,
            "POST",
            "/v1/basins",
            &[("S2-Request-Token", "create-token-2")],
            &body,
        ),
        409,
        "resource_already_exists",
    );
    let config = get(port, &format!("/v1/basins/{raw}")).json();
    assert_eq!(
        config["create_stream_on_read"], true,
        "failed creates changed {config}"
    );
}

// B-065
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_basin_with_zero_retention_age_is_invalid() {
    let server = start();
    let port = server.port();
    let s2 = server.sdk();
    let name = unique_basin("zero-age");
    let config = BasinConfig::new().with_default_stream_config(
        StreamConfig::new().with_retention_policy(RetentionPolicy::Age(0)),
    );

    let message = expect_server_error(
        s2.create_basin(CreateBasinInput::new(basin_name(&name)).with_config(config.clone()))
            .await,
        422,
        "invalid",
    );
    assert!(
        message.contains("age must be greater than 0 seconds"),
        "{message:?}"
    );
    expect_server_error(
        s2.ensure_basin(EnsureBasinInput::new(basin_name(&name)).with_config(config))
            .await,
        422,
        "invalid",
    );

    let body = json!({
        "basin": name,
        "config": { "default_stream_config": { "retention_policy": { "age": 0 } } }
    });
    let message = assert_error(
        &http_json(port, "POST", "/v1/basins", &[], &body),
        422,
        "invalid",
    );
    assert!(
        message.contains("age must be greater than 0 seconds"),
        "{message:?}"
    );

    assert_error(
        &get(port, &format!("/v1/basins/{name}")),
        404,
        "basin_not_found",
    );
}

// B-066, B-067, B-068, B-264
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_basin_creates_replaces_and_reports_provision_results() {
    let server = start();
    let port = server.port();
    let s2 = server.sdk();

    // SDK: created, noop, updated (a full replace), then reset by an ensure without config.
    let name = basin_name(&unique_basin("ensure"));
    let first_config = BasinConfig::new()
        .with_default_stream_config(
            StreamConfig::new().with_retention_policy(RetentionPolicy::Age(3600)),
        )
        .with_create_stream_on_append(true);
    let ensure = |config: Option<BasinConfig>| {
        let input = match config {
            Some(config) => EnsureBasinInput::new(name.clone()).with_config(config),
            None => EnsureBasinInput::new(name.clone()),
        };
        let s2 = s2.clone();
        async move {
            provision(
                s2.ensure_basin(input)
                    .await
                    .unwrap_or_else(|err| panic!("ensure_basin failed: {err}")),
            )
        }
    };

    let (kind, created) = ensure(Some(first_config.clone())).await;
    assert_eq!(kind, "created");
    assert_eq!(created.name, name);
    assert!(created.deleted_at.is_none());
    assert_eq!(
        s2.get_basin_config(name.clone()).await.expect("get"),
        first_config
    );

    let (kind, same) = ensure(Some(first_config.clone())).await;
    assert_eq!(kind, "noop");
    assert_eq!(same.created_at, created.created_at);

    let second_config = BasinConfig::new().with_create_stream_on_read(true);
    let (kind, updated) = ensure(Some(second_config.clone())).await;
    assert_eq!(kind, "updated");
    assert_eq!(updated.created_at, created.created_at);
    assert_eq!(
        s2.get_basin_config(name.clone()).await.expect("get"),
        second_config,
        "ensure replaces the whole config; fields not given return to their defaults"
    );

    let (kind, _) = ensure(None).await;
    assert_eq!(kind, "updated");
    assert_eq!(
        s2.get_basin_config(name.clone()).await.expect("get"),
        BasinConfig::new()
    );
    let (kind, reset) = ensure(None).await;
    assert_eq!(kind, "noop");
    assert_eq!(reset.created_at, created.created_at);

    // Raw: status codes, header values and the rules for an absent body.
    let raw = unique_basin("ensure-raw");
    let path = format!("/v1/basins/{raw}");
    let created = http(port, "PUT", &path, &[], b"");
    created.expect_status(201);
    assert_eq!(created.header("s2-provision-result"), Some("created"));
    let created = created.json();
    assert_basin_info(&created, &raw, "active");
    assert_eq!(get(port, &path).json(), default_basin_config());

    let body = json!({
        "config": {
            "create_stream_on_read": true,
            "default_stream_config": { "storage_class": "standard" }
        }
    });
    let updated = http_json(port, "PUT", &path, &[], &body);
    updated.expect_status(200);
    assert_eq!(updated.header("s2-provision-result"), Some("updated"));
    assert_eq!(updated.json()["created_at"], created["created_at"]);
    assert_eq!(
        get(port, &path).json(),
        json!({
            "default_stream_config": {
                "storage_class": "standard",
                "retention_policy": null,
                "timestamping": null,
                "delete_on_empty": null
            },
            "stream_cipher": null,
            "create_stream_on_append": false,
            "create_stream_on_read": true
        })
    );
    let same = http_json(port, "PUT", &path, &[], &body);
    same.expect_status(200);
    assert_eq!(same.header("s2-provision-result"), Some("noop"));

    // Without a Content-Type the body is ignored, so this resets the config.
    let reset = http(port, "PUT", &path, &[], body.to_string().as_bytes());
    reset.expect_status(200);
    assert_eq!(reset.header("s2-provision-result"), Some("updated"));
    assert_eq!(get(port, &path).json(), default_basin_config());

    // A JSON content type with an empty body also counts as no body.
    let empty = http(
        port,
        "PUT",
        &path,
        &[("Content-Type", "application/json")],
        b"",
    );
    empty.expect_status(200);
    assert_eq!(empty.header("s2-provision-result"), Some("noop"));

    // `config: null` means defaults and `location` is accepted and ignored.
    let null_config = http_json(
        port,
        "PUT",
        &path,
        &[],
        &json!({ "config": null, "location": "aws:us-east-1" }),
    );
    null_config.expect_status(200);
    assert_eq!(null_config.header("s2-provision-result"), Some("noop"));
    assert_eq!(null_config.json()["location"], Value::Null);

    assert_error(
        &http(
            port,
            "PUT",
            &path,
            &[("Content-Type", "text/plain")],
            body.to_string().as_bytes(),
        ),
        400,
        "bad_json",
    );
    assert_error(
        &http_json(
            port,
            "PUT",
            &path,
            &[],
            &json!({ "config": { "default_stream_config": { "retention_policy": { "age": 0 } } } }),
        ),
        422,
        "invalid",
    );
    let listed = get(port, &format!("/v1/basins?prefix={raw}")).json();
    assert_eq!(listed["basins"][0]["created_at"], created["created_at"]);

    // The creation token survives an ensure: a later replay of the create is still a noop.
    let tokened = unique_basin("ensure-token");
    let create = json!({ "basin": tokened, "config": { "create_stream_on_append": true } });
    let token = [("S2-Request-Token", "ensure-keeps-token")];
    http_json(port, "POST", "/v1/basins", &token, &create).expect_status(201);
    let ensured = http_json(
        port,
        "PUT",
        &format!("/v1/basins/{tokened}"),
        &[],
        &json!({ "config": { "create_stream_on_append": true } }),
    );
    ensured.expect_status(200);
    assert_eq!(ensured.header("s2-provision-result"), Some("noop"));
    let replayed = http_json(port, "POST", "/v1/basins", &token, &create);
    replayed.expect_status(201);
    assert_eq!(replayed.header("s2-provision-result"), Some("noop"));
}

// B-069, B-070
#[test]
fn basin_config_responses_use_the_documented_null_rules() {
    let server = start();
    let port = server.port();

    let cases = [
        (json!(null), default_basin_config()),
        (json!({}), default_basin_config()),
        (
            json!({
                "default_stream_config": { "retention_policy": { "age": 3600 } },
                "create_stream_on_append": true
            }),
            json!({
                "default_stream_config": {
                    "storage_class": null,
                    "retention_policy": { "age": 3600 },
                    "timestamping": null,
                    "delete_on_empty": null
                },
                "stream_cipher": null,
                "create_stream_on_append": true,
                "create_stream_on_read": false
            }),
        ),
        (
            json!({
                "default_stream_config": {
                    "timestamping": { "mode": "arrival" },
                    "delete_on_empty": { "min_age_secs": 0 }
                },
                "stream_cipher": "aegis-256"
            }),
            json!({
                "default_stream_config": {
                    "storage_class": null,
                    "retention_policy": null,
                    "timestamping": { "mode": "arrival", "uncapped": null },
                    "delete_on_empty": { "min_age_secs": 0 }
                },
                "stream_cipher": "aegis-256",
                "create_stream_on_append": false,
                "create_stream_on_read": false
            }),
        ),
        (
            json!({
                "default_stream_config": {
                    "storage_class": "standard",
                    "retention_policy": { "infinite": {} },
                    "timestamping": { "uncapped": true }
                },
                "stream_cipher": "aes-256-gcm",
                "create_stream_on_read": true
            }),
            json!({
                "default_stream_config": {
                    "storage_class": "standard",
                    "retention_policy": { "infinite": {} },
                    "timestamping": { "mode": null, "uncapped": true },
                    "delete_on_empty": null
                },
                "stream_cipher": "aes-256-gcm",
                "create_stream_on_append": false,
                "create_stream_on_read": true
            }),
        ),
        // No default field set at all: `default_stream_config` is null.
        (
            json!({ "default_stream_config": {} }),
            default_basin_config(),
        ),
        (
            json!({ "default_stream_config": { "timestamping": {} } }),
            default_basin_config(),
        ),
        // `min_age_secs` defaults to 0 inside a given object, and an explicit 0 is kept.
        (
            json!({ "default_stream_config": { "delete_on_empty": {} } }),
            json!({
                "default_stream_config": {
                    "storage_class": null,
                    "retention_policy": null,
                    "timestamping": null,
                    "delete_on_empty": { "min_age_secs": 0 }
                },
                "stream_cipher": null,
                "create_stream_on_append": false,
                "create_stream_on_read": false
            }),
        ),
    ];
    for (i, (config, expected)) in cases.iter().enumerate() {
        let name = unique_basin(&format!("nulls-{i}"));
        let created = http_json(
            port,
            "POST",
            "/v1/basins",
            &[],
            &json!({ "basin": name, "config": config }),
        );
        created.expect_status(201);
        let response = get(port, &format!("/v1/basins/{name}"));
        response.expect_status(200);
        assert_json_content_type(&response);
        assert_eq!(&response.json(), expected, "config created from {config}");
    }

    let missing = unique_basin("missing");
    let message = assert_error(
        &get(port, &format!("/v1/basins/{missing}")),
        404,
        "basin_not_found",
    );
    assert!(
        message.contains(&format!("basin `{missing}` not found")),
        "{message:?}"
    );
}

// B-046, B-047, B-048, B-049
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_basins_sorts_filters_and_pages() {
    let server = start();
    let port = server.port();
    let s2 = server.sdk();

    // Created out of order; `alpha-...` sorts before `alpha0000` because '-' < '0'.
    let names = [
        "alpha-003",
        "alpha-001",
        "alpha-005",
        "beta-0001",
        "alpha-002",
        "alpha0000",
        "alpha-004",
    ];
    for name in names {
        s2.create_basin(CreateBasinInput::new(basin_name(name)))
            .await
            .unwrap_or_else(|err| panic!("create {name}: {err}"));
    }
    let mut sorted = strings(&names);
    sorted.sort();

    assert_eq!(
        list_names(&s2, ListBasinsInput::new()).await,
        (sorted.clone(), false)
    );
    assert_eq!(
        list_names(&s2, ListBasinsInput::new().with_limit(0)).await,
        (sorted.clone(), false),
        "limit=0 means 1000"
    );
    assert_eq!(
        list_names(&s2, ListBasinsInput::new().with_limit(5000)).await,
        (sorted.clone(), false),
        "limit>1000 means 1000"
    );

    let alpha = ListBasinsInput::new()
        .with_prefix(prefix("alpha-"))
        .with_limit(2);
    assert_eq!(
        list_names(&s2, alpha.clone()).await,
        (strings(&["alpha-001", "alpha-002"]), true)
    );
    assert_eq!(
        list_names(
            &s2,
            alpha.clone().with_start_after(start_after("alpha-002"))
        )
        .await,
        (strings(&["alpha-003", "alpha-004"]), true)
    );
    assert_eq!(
        list_names(
            &s2,
            alpha.clone().with_start_after(start_after("alpha-004"))
        )
        .await,
        (strings(&["alpha-005"]), false)
    );
    // start_after need not be an existing name.
    assert_eq!(
        list_names(
            &s2,
            alpha.clone().with_start_after(start_after("alpha-0025"))
        )
        .await,
        (strings(&["alpha-003", "alpha-004"]), true)
    );

    // has_more is true only when something is left.
    let (page, has_more) = list_names(
        &s2,
        ListBasinsInput::new()
            .with_prefix(prefix("alpha-"))
            .with_limit(5),
    )
    .await;
    assert_eq!((page.len(), has_more), (5, false));
    let (page, has_more) = list_names(
        &s2,
        ListBasinsInput::new()
            .with_prefix(prefix("alpha-"))
            .with_limit(4),
    )
    .await;
    assert_eq!((page.len(), has_more), (4, true));

    assert_eq!(
        list_names(
            &s2,
            ListBasinsInput::new()
                .with_prefix(prefix("alpha"))
                .with_start_after(start_after("alpha-005"))
        )
        .await,
        (strings(&["alpha0000"]), false)
    );
    assert_eq!(
        list_names(
            &s2,
            ListBasinsInput::new()
                .with_prefix(prefix("alpha-"))
                .with_start_after(start_after("alpha-005"))
        )
        .await,
        (Vec::new(), false)
    );
    assert_eq!(
        list_names(
            &s2,
            ListBasinsInput::new().with_start_after(start_after("zzzzzzzz"))
        )
        .await,
        (Vec::new(), false)
    );
    assert_eq!(
        list_names(&s2, ListBasinsInput::new().with_prefix(prefix("gamma"))).await,
        (Vec::new(), false)
    );

    // Paging one at a time visits every basin once, in order.
    let mut seen = Vec::new();
    let mut input = ListBasinsInput::new().with_limit(1);
    loop {
        let (page, has_more) = list_names(&s2, input.clone()).await;
        assert!(page.len() <= 1, "limit=1 returned {page:?}");
        seen.extend(page.iter().cloned());
        assert!(seen.len() <= names.len(), "paging repeats items: {seen:?}");
        if !has_more {
            break;
        }
        let last = page.last().expect("a page with has_more has items");
        input = input.with_start_after(start_after(last));
    }
    assert_eq!(seen, sorted);

    // Raw query forms.
    let page = get(port, "/v1/basins?prefix=alpha-&limit=2")
        .expect_status(200)
        .json();
    assert_keys(&page, &["basins", "has_more"]);
    assert_eq!(page["has_more"], true);
    let items = page["basins"].as_array().expect("basins array");
    assert_eq!(items.len(), 2);
    assert_basin_info(&items[0], "alpha-001", "active");
    assert_basin_info(&items[1], "alpha-002", "active");
    for query in ["limit=0", "limit=1001", "limit=1000"] {
        let page = get(port, &format!("/v1/basins?{query}"))
            .expect_status(200)
            .json();
        assert_eq!(
            page["basins"].as_array().map(Vec::len),
            Some(names.len()),
            "{query}"
        );
        assert_eq!(page["has_more"], false, "{query}");
    }
    let page = get(port, "/v1/basins?prefix=alpha&start_after=alpha-005")
        .expect_status(200)
        .json();
    assert_eq!(page["basins"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["basins"][0]["name"], "alpha0000");
    // Unknown query parameters are ignored.
    let page = get(port, "/v1/basins?prefix=beta&colour=blue")
        .expect_status(200)
        .json();
    assert_eq!(page["basins"][0]["name"], "beta-0001");
}

// B-051, B-071, B-072, B-073, B-074, B-075, B-076, B-082
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_basin_blocks_changes_until_it_is_gone() {
    let server = start();
    let port = server.port();
    let s2 = server.sdk();

    let missing = basin_name(&unique_basin("missing"));
    expect_server_error(
        s2.delete_basin(DeleteBasinInput::new(missing.clone()))
            .await,
        404,
        "basin_not_found",
    );
    assert_error(
        &http(port, "DELETE", &format!("/v1/basins/{missing}"), &[], b""),
        404,
        "basin_not_found",
    );
    s2.delete_basin(DeleteBasinInput::new(missing).with_ignore_not_found(true))
        .await
        .expect("ignore_not_found turns 404 into success");

    // A basin with streams, so that background deletion has some work to do.
    let name = unique_basin("doomed");
    let path = format!("/v1/basins/{name}");
    s2.create_basin(
        CreateBasinInput::new(basin_name(&name))
            .with_config(BasinConfig::new().with_create_stream_on_append(true)),
    )
    .await
    .expect("create basin");
    let basin = s2.basin(basin_name(&name));
    for i in 0..8 {
        basin
            .create_stream(CreateStreamInput::new(stream_name(&format!("stream-{i}"))))
            .await
            .expect("create stream");
    }
    let config_before = get(port, &path).expect_status(200).json();

    let deleted = http(port, "DELETE", &path, &[], b"");
    deleted.expect_status(202);
    assert!(deleted.body.is_empty(), "DELETE body: {:?}", deleted.text());

    // While deletion is pending.
    let again = http(port, "DELETE", &path, &[], b"");
    again.expect_status(202);
    assert!(again.body.is_empty());
    assert_eq!(
        get(port, &path).expect_status(200).json(),
        config_before,
        "the config stays readable while the basin is being deleted"
    );
    let message = assert_error(
        &http_json(port, "POST", "/v1/basins", &[], &json!({ "basin": name })),
        409,
        "basin_deletion_pending",
    );
    assert!(
        message.contains(&format!("basin `{name}` is being deleted")),
        "{message:?}"
    );
    assert_error(
        &http(port, "PUT", &path, &[], b""),
        409,
        "basin_deletion_pending",
    );
    assert_error(
        &http_json(
            port,
            "PATCH",
            &path,
            &[],
            &json!({ "create_stream_on_read": true }),
        ),
        409,
        "basin_deletion_pending",
    );
    assert_error(
        &http_json(
            port,
            "POST",
            "/v1/streams",
            &[("S2-Basin", name.as_str())],
            &json!({ "stream": "late-stream" }),
        ),
        409,
        "basin_deletion_pending",
    );
    http(
        port,
        "GET",
        "/v1/streams",
        &[("S2-Basin", name.as_str())],
        b"",
    )
    .expect_status(200);
    let listed = get(port, &format!("/v1/basins?prefix={name}"))
        .expect_status(200)
        .json();
    assert_basin_info(&listed["basins"][0], &name, "deleting");
    let page = s2
        .list_basins(ListBasinsInput::new().with_prefix(prefix(&name)))
        .await
        .expect("list");
    assert!(page.values[0].deleted_at.is_some(), "{:?}", page.values);
    expect_server_error(
        s2.create_basin(CreateBasinInput::new(basin_name(&name)))
            .await,
        409,
        "basin_deletion_pending",
    );
    expect_server_error(
        s2.reconfigure_basin(ReconfigureBasinInput::new(
            basin_name(&name),
            BasinReconfiguration::new().with_create_stream_on_read(true),
        ))
        .await,
        409,
        "basin_deletion_pending",
    );

    // Eventually it is gone everywhere, and the name is free again.
    eventually("the deleted basin is gone", DELETION_TIMEOUT, || {
        get(port, &path).status == 404
    })
    .await;
    assert_error(&get(port, &path), 404, "basin_not_found");
    let listed = get(port, &format!("/v1/basins?prefix={name}")).json();
    assert_eq!(listed["basins"], json!([]), "{listed}");
    assert_error(
        &http(
            port,
            "GET",
            "/v1/streams",
            &[("S2-Basin", name.as_str())],
            b"",
        ),
        404,
        "basin_not_found",
    );
    assert_error(
        &http(port, "DELETE", &path, &[], b""),
        404,
        "basin_not_found",
    );

    let reborn = s2
        .create_basin(CreateBasinInput::new(basin_name(&name)))
        .await
        .expect("the name is reusable");
    assert!(reborn.deleted_at.is_none());
    assert_eq!(get(port, &path).json(), default_basin_config());
    let streams = http(
        port,
        "GET",
        "/v1/streams",
        &[("S2-Basin", name.as_str())],
        b"",
    )
    .expect_status(200)
    .json();
    assert_eq!(
        streams["streams"],
        json!([]),
        "old streams came back: {streams}"
    );
}

// B-077, B-078, B-079, B-080, B-081, B-082
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfigure_basin_applies_absent_null_and_nested_fields() {
    let server = start();
    let port = server.port();
    let s2 = server.sdk();
    let name = unique_basin("patch");
    let path = format!("/v1/basins/{name}");
    let initial = json!({
        "default_stream_config": {
            "storage_class": "standard",
            "retention_policy": { "age": 3600 },
            "timestamping": { "mode": "client-require", "uncapped": true },
            "delete_on_empty": { "min_age_secs": 60 }
        },
        "stream_cipher": null,
        "create_stream_on_append": false,
        "create_stream_on_read": true
    });
    http_json(
        port,
        "POST",
        "/v1/basins",
        &[],
        &json!({ "basin": name, "config": initial }),
    )
    .expect_status(201);
    assert_eq!(get(port, &path).json(), initial);

    let patch = |body: Value| -> Value {
        let response = http_json(port, "PATCH", &path, &[], &body);
        response.expect_status(200);
        assert_json_content_type(&response);
        let config = response.json();
        assert_eq!(
            get(port, &path).json(),
            config,
            "GET disagrees with PATCH {body}"
        );
        config
    };

    assert_eq!(patch(json!({})), initial, "{{}} changes nothing");

    let mut expected = initial.clone();
    expected["create_stream_on_append"] = json!(true);
    assert_eq!(patch(json!({ "create_stream_on_append": true })), expected);

    expected["default_stream_config"]["timestamping"]["mode"] = json!("arrival");
    assert_eq!(
        patch(json!({ "default_stream_config": { "timestamping": { "mode": "arrival" } } })),
        expected,
        "a nested field changes alone"
    );

    expected["default_stream_config"]["timestamping"]["uncapped"] = Value::Null;
    assert_eq!(
        patch(json!({ "default_stream_config": { "timestamping": { "uncapped": null } } })),
        expected
    );

    // With both sub-fields unset, timestamping itself is null.
    expected["default_stream_config"]["timestamping"] = Value::Null;
    assert_eq!(
        patch(json!({ "default_stream_config": { "timestamping": { "mode": null } } })),
        expected
    );

    expected["default_stream_config"]["retention_policy"] = Value::Null;
    assert_eq!(
        patch(json!({ "default_stream_config": { "retention_policy": null } })),
        expected
    );

    expected["default_stream_config"]["retention_policy"] = json!({ "infinite": {} });
    assert_eq!(
        patch(json!({ "default_stream_config": { "retention_policy": { "infinite": {} } } })),
        expected
    );

    expected["default_stream_config"] = Value::Null;
    assert_eq!(patch(json!({ "default_stream_config": null })), expected);

    expected["default_stream_config"] = json!({
        "storage_class": null,
        "retention_policy": { "age": 60 },
        "timestamping": null,
        "delete_on_empty": null
    });
    assert_eq!(
        patch(json!({ "default_stream_config": { "retention_policy": { "age": 60 } } })),
        expected
    );

    // Clearing the only default field makes `default_stream_config` null again.
    expected["default_stream_config"] = Value::Null;
    assert_eq!(
        patch(json!({ "default_stream_config": { "retention_policy": null } })),
        expected
    );

    // Rejected changes leave the config alone.
    assert_error(
        &http_json(
            port,
            "PATCH",
            &path,
            &[],
            &json!({ "create_stream_on_read": null }),
        ),
        400,
        "bad_json",
    );
    assert_error(
        &http_json(
            port,
            "PATCH",
            &path,
            &[],
            &json!({ "create_stream_on_append": null }),
        ),
        400,
        "bad_json",
    );
    assert_error(
        &http_json(
            port,
            "PATCH",
            &path,
            &[],
            &json!({ "stream_cipher": "rot13" }),
        ),
        400,
        "bad_json",
    );
    let message = assert_error(
        &http_json(
            port,
            "PATCH",
            &path,
            &[],
            &json!({ "default_stream_config": { "retention_policy": { "age": 0 } } }),
        ),
        422,
        "invalid",
    );
    assert!(
        message.contains("age must be greater than 0 seconds"),
        "{message:?}"
    );
    assert_eq!(get(port, &path).json(), expected);

    let missing = unique_basin("patch-missing");
    assert_error(
        &http_json(
            port,
            "PATCH",
            &format!("/v1/basins/{missing}"),
            &[],
            &json!({}),
        ),
        404,
        "basin_not_found",
    );

    // The SDK sends only the fields it sets.
    let config = s2
        .reconfigure_basin(ReconfigureBasinInput::new(
            basin_name(&name),
            BasinReconfiguration::new().with_create_stream_on_read(false),
        ))
        .await
        .expect("reconfigure");
    assert!(!config.create_stream_on_read);
    assert!(config.create_stream_on_append);
    assert!(config.default_stream_config.is_none());
    expected["create_stream_on_read"] = json!(false);
    assert_eq!(get(port, &path).json(), expected);

    let config = s2
        .reconfigure_basin(ReconfigureBasinInput::new(
            basin_name(&name),
            BasinReconfiguration::new().with_default_stream_config(
                StreamReconfiguration::new().with_storage_class("standard"),
            ),
        ))
        .await
        .expect("reconfigure");
    assert_eq!(
        config.default_stream_config,
        Some(StreamConfig::new().with_storage_class("standard"))
    );
    assert_eq!(
        config,
        s2.get_basin_config(basin_name(&name)).await.expect("get")
    );

    expect_server_error(
        s2.reconfigure_basin(ReconfigureBasinInput::new(
            basin_name(&missing),
            BasinReconfiguration::new(),
        ))
        .await,
        404,
        "basin_not_found",
    );
}

// B-083, B-109
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basin_stream_cipher_applies_only_to_streams_created_later() {
    let server = start();
    let port = server.port();
    let s2 = server.sdk();
    let name = unique_basin("cipher");
    let path = format!("/v1/basins/{name}");
    s2.create_basin(CreateBasinInput::new(basin_name(&name)))
        .await
        .expect("create basin");
    let basin = s2.basin(basin_name(&name));
    let create = |stream: &'static str| {
        let basin = basin.clone();
        async move {
            basin
                .create_stream(CreateStreamInput::new(stream_name(stream)))
                .await
                .unwrap_or_else(|err| panic!("create stream {stream}: {err}"))
        }
    };

    assert_eq!(create("before").await.cipher, None);

    let config = http_json(
        port,
        "PATCH",
        &path,
        &[],
        &json!({ "stream_cipher": "aegis-256" }),
    );
    assert_eq!(
        config.expect_status(200).json()["stream_cipher"],
        "aegis-256"
    );
    assert_eq!(
        create("during").await.cipher,
        Some(EncryptionAlgorithm::Aegis256)
    );

    let config = s2
        .reconfigure_basin(ReconfigureBasinInput::new(
            basin_name(&name),
            BasinReconfiguration::new().with_stream_cipher(EncryptionAlgorithm::Aes256Gcm),
        ))
        .await
        .expect("reconfigure");
    assert_eq!(config.stream_cipher, Some(EncryptionAlgorithm::Aes256Gcm));
    assert_eq!(
        create("later").await.cipher,
        Some(EncryptionAlgorithm::Aes256Gcm)
    );

    let config = http_json(port, "PATCH", &path, &[], &json!({ "stream_cipher": null }));
    assert_eq!(
        config.expect_status(200).json()["stream_cipher"],
        Value::Null
    );
    assert_eq!(create("after").await.cipher, None);

    let listed = http(
        port,
        "GET",
        "/v1/streams",
        &[("S2-Basin", name.as_str())],
        b"",
    )
    .expect_status(200)
    .json();
    let ciphers: Vec<(String, Value)> = listed["streams"]
        .as_array()
        .expect("streams array")
        .iter()
        .map(|info| {
            assert_keys(info, &["name", "created_at", "deleted_at", "cipher"]);
            (
                info["name"].as_str().expect("name").to_owned(),
                info["cipher"].clone(),
            )
        })
        .collect();
    assert_eq!(
        ciphers,
        vec![
            ("after".to_owned(), Value::Null),
            ("before".to_owned(), Value::Null),
            ("during".to_owned(), json!("aegis-256")),
            ("later".to_owned(), json!("aes-256-gcm")),
        ]
    );
}
