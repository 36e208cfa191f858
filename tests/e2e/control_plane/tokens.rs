//! Access tokens over raw HTTP/1.1 (API.md §3.7): issue, list and revoke with their
//! validation, and with `--root-token` their enforcement: op groups, ops and resource sets
//! on every route, lists narrowed to what a token may see, auto-prefixed stream names, no
//! escalation, revocation and expiry on every shard, and secrets that never reach storage.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::harness::{
    assert_error, assert_keys, assert_timestamp, get, http, unique_basin, Response, Server,
};
use crate::lifecycle::{fence_input, trim_input, BASE64_FORMAT};

const ROOT: &str = "e2e-root-token-secret";

/// Requests made with one bearer token.
#[derive(Clone)]
struct Client {
    port: u16,
    token: String,
}

impl Client {
    fn new(port: u16, token: &str) -> Client {
        Client {
            port,
            token: token.to_owned(),
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        basin: Option<&str>,
        extra: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Response {
        let bearer = format!("Bearer {}", self.token);
        let mut headers = vec![("Authorization", bearer.as_str())];
        if let Some(basin) = basin {
            headers.push(("S2-Basin", basin));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        headers.extend_from_slice(extra);
        let body = body.map(Value::to_string).unwrap_or_default();
        http(self.port, method, path, &headers, body.as_bytes())
    }

    fn get(&self, path: &str, basin: Option<&str>) -> Response {
        self.send("GET", path, basin, &[], None)
    }

    fn post(&self, path: &str, basin: Option<&str>, body: &Value) -> Response {
        self.send("POST", path, basin, &[], Some(body))
    }

    fn create_basin(&self, name: &str) -> Response {
        self.post("/v1/basins", None, &json!({ "basin": name }))
    }

    fn create_stream(&self, basin: &str, stream: &str) -> Response {
        self.post("/v1/streams", Some(basin), &json!({ "stream": stream }))
    }

    fn append(&self, basin: &str, stream: &str, bodies: &[&str]) -> Response {
        let records: Vec<Value> = bodies.iter().map(|b| json!({ "body": b })).collect();
        self.post(
            &format!("/v1/streams/{stream}/records"),
            Some(basin),
            &json!({ "records": records }),
        )
    }

    fn read_bodies(&self, basin: &str, stream: &str) -> Vec<String> {
        let response = self.get(
            &format!("/v1/streams/{stream}/records?seq_num=0"),
            Some(basin),
        );
        response.expect_status(200);
        response.json()["records"]
            .as_array()
            .expect("records array")
            .iter()
            .map(|r| r["body"].as_str().expect("a text body").to_owned())
            .collect()
    }

    /// Issues a token; returns its secret.
    fn issue(&self, request: &Value) -> String {
        let response = self.post("/v1/access-tokens", None, request);
        response.expect_status(201);
        let body = response.json();
        assert_keys(&body, &["access_token"]);
        body["access_token"]
            .as_str()
            .expect("the secret is a string")
            .to_owned()
    }

    fn listed(&self, query: &str) -> Value {
        let response = self.get(&format!("/v1/access-tokens{query}"), None);
        response.expect_status(200);
        response.json()
    }

    fn names(&self, path: &str, basin: Option<&str>, key: &str) -> Vec<String> {
        let response = self.get(path, basin);
        response.expect_status(200);
        response.json()[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} array"))
            .iter()
            .map(|item| item["name"].as_str().expect("a name").to_owned())
            .collect()
    }
}

fn ids(list: &Value) -> Vec<String> {
    list["access_tokens"]
        .as_array()
        .expect("access_tokens array")
        .iter()
        .map(|t| t["id"].as_str().expect("an id").to_owned())
        .collect()
}

fn rfc3339_in(seconds: u64, nanos: u32) -> String {
    let at = SystemTime::now() + Duration::from_secs(seconds);
    let secs = at
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs();
    let at = time::OffsetDateTime::from_unix_timestamp(secs as i64).expect("a valid time")
        + time::Duration::nanoseconds(i64::from(nanos));
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

fn enforcing(shards: &str) -> Server {
    Server::start(&["--shards", shards, "--root-token", ROOT])
}

fn all_stream_ops() -> Value {
    json!({ "stream": { "read": true, "write": true } })
}

// ---------------------------------------------------------------------------------------
// Issue, list, revoke
// ---------------------------------------------------------------------------------------

#[test]
fn issue_validates_before_storing_and_answers_exact_errors() {
    let server = Server::start(&["--shards", "2"]);
    let anyone = Client::new(server.port(), "ignored");
    let invalid = |request: Value| {
        assert_error(
            &anyone.post("/v1/access-tokens", None, &request),
            422,
            "invalid",
        )
    };
    let message = invalid(json!({
        "id": "bad-prefix",
        "auto_prefix_streams": true,
        "scope": { "streams": { "exact": "s" }, "op_groups": all_stream_ops() },
    }));
    assert_eq!(
        message,
        "Auto prefixing is only allowed for streams with prefix matching"
    );
    let message = invalid(json!({
        "id": "bad-prefix",
        "auto_prefix_streams": true,
        "scope": { "op_groups": all_stream_ops() },
    }));
    assert_eq!(
        message,
        "Auto prefixing is only allowed for streams with prefix matching"
    );
    for empty in [
        json!({}),
        json!({ "ops": [], "op_groups": { "account": { "read": false } } }),
        json!({ "basins": { "prefix": "" }, "op_groups": null, "ops": null }),
    ] {
        let message = invalid(json!({ "id": "empty", "scope": empty }));
        assert_eq!(message, "Access token permissions cannot be empty");
    }
    let message = invalid(json!({
        "id": "expired",
        "expires_at": "2020-01-01T00:00:00Z",
        "scope": { "ops": ["list-basins"] },
    }));
    assert_eq!(message, "Access token expiration must be in the future");
    for id in [String::new(), "t".repeat(97)] {
        let message = invalid(json!({ "id": id, "scope": { "ops": ["list-basins"] } }));
        assert!(message.contains("between 1 and 96 bytes"), "{message}");
    }
    assert_error(
        &anyone.post(
            "/v1/access-tokens",
            None,
            &json!({ "id": "x", "scope": { "ops": ["no-such-op"] } }),
        ),
        400,
        "bad_json",
    );
    // None of the refused tokens was stored.
    assert_eq!(ids(&anyone.listed("")), ["root"]);

    // A 96-byte id is fine; issuing it again is a conflict, and so is the root's id.
    let long_id = "t".repeat(96);
    let secret = anyone.issue(&json!({ "id": long_id, "scope": { "ops": ["list-basins"] } }));
    // 256 random bits, base64url without padding.
    assert_eq!(secret.len(), 43, "{secret}");
    assert!(secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let other = anyone.issue(&json!({ "id": "second", "scope": { "ops": ["list-basins"] } }));
    assert_ne!(secret, other, "secrets are random");
    for id in [long_id.as_str(), "root"] {
        let message = assert_error(
            &anyone.post(
                "/v1/access-tokens",
                None,
                &json!({ "id": id, "scope": { "ops": ["list-basins"] } }),
            ),
            409,
            "resource_already_exists",
        );
        assert!(!message.is_empty());
    }

    // Revocation: 204 with no body, then 404; the root token cannot be revoked.
    let revoked = anyone.send("DELETE", "/v1/access-tokens/second", None, &[], None);
    revoked.expect_status(204);
    assert!(revoked.body.is_empty());
    assert_error(
        &anyone.send("DELETE", "/v1/access-tokens/second", None, &[], None),
        404,
        "access_token_not_found",
    );
    assert_error(
        &anyone.send("DELETE", "/v1/access-tokens/root", None, &[], None),
        422,
        "invalid",
    );
}

#[test]
fn listing_is_sorted_paged_and_echoes_what_was_issued() {
    let server = Server::start(&["--shards", "4"]);
    let anyone = Client::new(server.port(), "ignored");
    let expires_at = rfc3339_in(3600, 123_456_789);
    anyone.issue(&json!({
        "id": "svc-b",
        "expires_at": expires_at,
        "auto_prefix_streams": true,
        "scope": {
            "basins": { "exact": "tenant-basin" },
            "streams": { "prefix": "svc-b/" },
            "access_tokens": { "prefix": "svc-b-" },
            "op_groups": { "stream": { "read": true, "write": true } },
            "ops": ["get-basin-config", "list-streams"],
        },
    }));
    for id in ["svc-a", "svc-c", "other", "svc-d"] {
        anyone.issue(&json!({ "id": id, "scope": { "ops": ["list-basins"] } }));
    }

    assert_eq!(
        ids(&anyone.listed("")),
        ["other", "root", "svc-a", "svc-b", "svc-c", "svc-d"]
    );
    let page = anyone.listed("?prefix=svc-&limit=2");
    assert_eq!(ids(&page), ["svc-a", "svc-b"]);
    assert_eq!(page["has_more"], true);
    let page = anyone.listed("?prefix=svc-&start_after=svc-b&limit=2");
    assert_eq!(ids(&page), ["svc-c", "svc-d"]);
    assert_eq!(page["has_more"], false);
    assert_eq!(ids(&anyone.listed("?start_after=root&limit=1")), ["svc-a"]);
    assert_eq!(
        ids(&anyone.listed("?limit=5000")).len(),
        6,
        "limits over 1000 are capped"
    );

    let listed = anyone.listed("?prefix=svc-b");
    let info = &listed["access_tokens"][0];
    assert_keys(info, &["id", "expires_at", "auto_prefix_streams", "scope"]);
    assert_eq!(
        info["expires_at"],
        expires_at.as_str(),
        "sub-second precision is kept"
    );
    assert_timestamp(&info["expires_at"]);
    assert_eq!(info["auto_prefix_streams"], true);
    let scope = &info["scope"];
    assert_eq!(scope["basins"], json!({ "exact": "tenant-basin" }));
    assert_eq!(scope["streams"], json!({ "prefix": "svc-b/" }));
    assert_eq!(scope["access_tokens"], json!({ "prefix": "svc-b-" }));
    assert_eq!(
        scope["op_groups"]["stream"],
        json!({ "read": true, "write": true })
    );
    assert_eq!(scope["ops"], json!(["get-basin-config", "list-streams"]));
    let plain = &anyone.listed("?prefix=svc-a")["access_tokens"][0];
    assert_eq!(plain["auto_prefix_streams"], false, "always present");
    assert_eq!(plain["expires_at"], Value::Null);
    let root = &anyone.listed("?prefix=root")["access_tokens"][0];
    assert_eq!(root["id"], "root");
    assert!(!root.to_string().contains(ROOT), "no secret is ever listed");
}

// ---------------------------------------------------------------------------------------
// Enforcement
// ---------------------------------------------------------------------------------------

#[test]
fn without_a_valid_token_only_health_ping_and_metrics_answer() {
    let server = enforcing("2");
    let port = server.port();
    for path in ["/health", "/ping", "/metrics"] {
        get(port, path).expect_status(200);
    }
    for (method, path) in [
        ("GET", "/v1/basins"),
        ("GET", "/v1/access-tokens"),
        ("POST", "/v1/basins"),
        ("GET", "/dashboard/server"),
        ("GET", "/v1/metrics?set=active-basins&start=0&end=1"),
    ] {
        assert_error(&http(port, method, path, &[], b"{}"), 401, "authn");
        for value in ["Bearer wrong-token", "Basic abc", "Bearer ", ROOT] {
            assert_error(
                &http(port, method, path, &[("Authorization", value)], b"{}"),
                401,
                "authn",
            );
        }
    }
    // The dashboard page itself loads (it asks for a token); the root token works.
    get(port, "/dashboard").expect_status(200);
    Client::new(port, ROOT)
        .get("/v1/basins", None)
        .expect_status(200);
}

#[test]
fn op_groups_ops_and_resource_sets_are_enforced_on_every_route() {
    let server = enforcing("2");
    let port = server.port();
    let root = Client::new(port, ROOT);
    let mine = unique_basin("tok-mine");
    let theirs = unique_basin("tok-theirs");
    for basin in [&mine, &theirs] {
        root.create_basin(basin).expect_status(201);
        for stream in ["app-1", "app-2", "sys-1"] {
            root.create_stream(basin, stream).expect_status(201);
            root.append(basin, stream, &["seed"]).expect_status(200);
        }
    }
    let denied = |response: Response| assert_error(&response, 403, "permission_denied");

    // Basin read on one basin: its config and stream list, nothing else.
    let basin_reader = Client::new(
        port,
        &root.issue(&json!({
            "id": "basin-reader",
            "scope": {
                "basins": { "exact": mine },
                "streams": { "prefix": "" },
                "op_groups": { "basin": { "read": true } },
            },
        })),
    );
    basin_reader
        .get(&format!("/v1/basins/{mine}"), None)
        .expect_status(200);
    assert_eq!(
        basin_reader.names("/v1/streams", Some(&mine), "streams"),
        ["app-1", "app-2", "sys-1"]
    );
    denied(basin_reader.get(&format!("/v1/basins/{theirs}"), None));
    denied(basin_reader.get("/v1/streams", Some(&theirs)));
    denied(basin_reader.get("/v1/basins", None));
    denied(basin_reader.create_stream(&mine, "new"));
    denied(basin_reader.append(&mine, "app-1", &["x"]));
    denied(basin_reader.get("/v1/streams/app-1/records?seq_num=0", Some(&mine)));
    denied(basin_reader.get("/v1/access-tokens", None));

    // Stream read and write on `app-` streams of one basin.
    let app_writer = Client::new(
        port,
        &root.issue(&json!({
            "id": "app-writer",
            "scope": {
                "basins": { "exact": mine },
                "streams": { "prefix": "app-" },
                "op_groups": all_stream_ops(),
            },
        })),
    );
    app_writer
        .append(&mine, "app-1", &["by-app-writer"])
        .expect_status(200);
    assert_eq!(
        app_writer.read_bodies(&mine, "app-1"),
        ["seed", "by-app-writer"]
    );
    app_writer
        .get("/v1/streams/app-2/records/tail", Some(&mine))
        .expect_status(200);
    app_writer
        .get("/v1/streams/app-2", Some(&mine))
        .expect_status(200);
    denied(app_writer.append(&mine, "sys-1", &["x"]));
    denied(app_writer.get("/v1/streams/sys-1/records?seq_num=0", Some(&mine)));
    denied(app_writer.append(&theirs, "app-1", &["x"]));
    denied(app_writer.create_stream(&mine, "app-3"));
    denied(app_writer.send("DELETE", "/v1/streams/app-1", Some(&mine), &[], None));
    denied(app_writer.get("/v1/streams", Some(&mine)));
    // The trim command and fencing: they come with the write group.
    app_writer
        .send(
            "POST",
            "/v1/streams/app-2/records",
            Some(&mine),
            &[BASE64_FORMAT],
            Some(&trim_input(0)),
        )
        .expect_status(200);

    // Single ops: an append-only token cannot smuggle a trim or fence in an append.
    let appender = Client::new(
        port,
        &root.issue(&json!({
            "id": "appender",
            "scope": {
                "basins": { "prefix": "" },
                "streams": { "prefix": "" },
                "ops": ["append"],
            },
        })),
    );
    appender
        .append(&theirs, "sys-1", &["appended"])
        .expect_status(200);
    let message = denied(appender.send(
        "POST",
        "/v1/streams/sys-1/records",
        Some(&theirs),
        &[BASE64_FORMAT],
        Some(&trim_input(1)),
    ));
    assert!(message.contains("trim"), "{message}");
    let message = denied(appender.post(
        "/v1/streams/sys-1/records",
        Some(&theirs),
        &fence_input("f"),
    ));
    assert!(message.contains("fence"), "{message}");
    denied(appender.get("/v1/streams/sys-1/records?seq_num=0", Some(&theirs)));
    assert_eq!(
        root.read_bodies(&theirs, "sys-1"),
        ["seed", "appended"],
        "nothing else landed"
    );

    // Account read narrowed to a basin prefix: lists show only what the token may see.
    let lister = Client::new(
        port,
        &root.issue(&json!({
            "id": "lister",
            "scope": {
                "basins": { "prefix": "tok-mine" },
                "streams": { "prefix": "sys-" },
                "access_tokens": { "prefix": "app-" },
                "op_groups": { "account": { "read": true }, "basin": { "read": true } },
            },
        })),
    );
    let basins = lister.names("/v1/basins", None, "basins");
    assert!(
        basins.contains(&mine) && !basins.contains(&theirs),
        "{basins:?}"
    );
    assert!(lister
        .names("/v1/basins?prefix=tok-", None, "basins")
        .iter()
        .all(|b| b.starts_with("tok-mine")));
    assert!(lister
        .names("/v1/basins?prefix=tok-theirs", None, "basins")
        .is_empty());
    assert_eq!(
        lister.names("/v1/streams", Some(&mine), "streams"),
        ["sys-1"]
    );
    assert_eq!(
        ids(&lister.listed("")),
        ["app-writer"],
        "`appender` has no `app-`"
    );
    denied(lister.create_basin(&unique_basin("tok-mine-new")));
    denied(lister.send("DELETE", "/v1/access-tokens/lister", None, &[], None));
}

#[test]
fn no_token_can_issue_more_than_it_has() {
    let server = enforcing("2");
    let port = server.port();
    let root = Client::new(port, ROOT);
    let expires_at = rfc3339_in(600, 0);
    let issuer = Client::new(port, &root.issue(&json!({
        "id": "team-issuer",
        "expires_at": expires_at,
        "scope": {
            "basins": { "prefix": "team-" },
            "streams": { "prefix": "" },
            "access_tokens": { "prefix": "team-" },
            "op_groups": { "stream": { "read": true } },
            "ops": ["issue-access-token", "list-access-tokens", "revoke-access-token", "append"],
        },
    })));
    let denied = |request: Value| {
        assert_error(
            &issuer.post("/v1/access-tokens", None, &request),
            403,
            "permission_denied",
        )
    };
    // Within its scope: fine, and the child inherits the issuer's expiry.
    issuer.issue(&json!({
        "id": "team-child",
        "scope": { "basins": { "prefix": "team-a" }, "streams": { "exact": "s" }, "ops": ["read", "append"] },
    }));
    let child = &issuer.listed("?prefix=team-child")["access_tokens"][0];
    assert_eq!(child["expires_at"], expires_at.as_str());
    // Outside it: an id, a basin set, an op, a group, or a later expiry.
    denied(
        json!({ "id": "other-child", "scope": { "basins": { "prefix": "team-" }, "ops": ["read"] } }),
    );
    denied(json!({ "id": "team-2", "scope": { "basins": { "prefix": "" }, "ops": ["read"] } }));
    denied(
        json!({ "id": "team-3", "scope": { "basins": { "prefix": "team-" }, "ops": ["trim"] } }),
    );
    denied(
        json!({ "id": "team-4", "scope": { "basins": { "prefix": "team-" }, "op_groups": { "stream": { "write": true } } } }),
    );
    denied(
        json!({ "id": "team-5", "scope": { "basins": { "prefix": "team-" }, "ops": ["create-basin"] } }),
    );
    denied(json!({
        "id": "team-6",
        "expires_at": rfc3339_in(7200, 0),
        "scope": { "basins": { "prefix": "team-" }, "ops": ["read"] },
    }));
    assert_eq!(ids(&issuer.listed("")), ["team-child", "team-issuer"]);
    assert_error(
        &issuer.send("DELETE", "/v1/access-tokens/app-writer", None, &[], None),
        403,
        "permission_denied",
    );
    issuer
        .send("DELETE", "/v1/access-tokens/team-child", None, &[], None)
        .expect_status(204);
}

#[test]
fn auto_prefixed_tokens_see_names_relative_to_their_prefix() {
    let server = enforcing("2");
    let port = server.port();
    let root = Client::new(port, ROOT);
    let basin = unique_basin("tok-prefix");
    root.create_basin(&basin).expect_status(201);
    root.create_stream(&basin, "tenant-b/orders")
        .expect_status(201);
    let tenant = Client::new(port, &root.issue(&json!({
        "id": "tenant-a",
        "auto_prefix_streams": true,
        "scope": {
            "basins": { "exact": basin },
            "streams": { "prefix": "tenant-a/" },
            "op_groups": { "basin": { "read": true, "write": true }, "stream": { "read": true, "write": true } },
        },
    })));

    let created = tenant.create_stream(&basin, "orders");
    created.expect_status(201);
    assert_eq!(created.json()["name"], "orders");
    tenant.create_stream(&basin, "audit").expect_status(201);
    tenant
        .append(&basin, "orders", &["o-1", "o-2"])
        .expect_status(200);
    assert_eq!(tenant.read_bodies(&basin, "orders"), ["o-1", "o-2"]);
    assert_eq!(
        tenant.names("/v1/streams", Some(&basin), "streams"),
        ["audit", "orders"]
    );
    assert_eq!(
        tenant.names("/v1/streams?prefix=or", Some(&basin), "streams"),
        ["orders"]
    );
    assert_eq!(
        tenant.names("/v1/streams?start_after=audit", Some(&basin), "streams"),
        ["orders"]
    );
    tenant
        .get("/v1/streams/orders", Some(&basin))
        .expect_status(200);
    // The other tenant's stream is not reachable under any name.
    assert_error(
        &tenant.get("/v1/streams/tenant-b%2Forders", Some(&basin)),
        404,
        "stream_not_found",
    );

    // The root token sees the full names and the same records.
    assert_eq!(
        root.names("/v1/streams", Some(&basin), "streams"),
        ["tenant-a/audit", "tenant-a/orders", "tenant-b/orders"]
    );
    assert_eq!(
        root.read_bodies(&basin, "tenant-a%2Forders"),
        ["o-1", "o-2"]
    );
    tenant
        .send("DELETE", "/v1/streams/audit", Some(&basin), &[], None)
        .expect_status(202);
}

#[test]
fn revocation_and_expiry_take_effect_on_every_shard() {
    let server = enforcing("4");
    let port = server.port();
    let root = Client::new(port, ROOT);
    let scope = json!({ "ops": ["list-basins"] });
    let kept = Client::new(port, &root.issue(&json!({ "id": "kept", "scope": scope })));
    let revoked = Client::new(
        port,
        &root.issue(&json!({ "id": "revoked", "scope": scope })),
    );
    let expiring = Client::new(
        port,
        &root.issue(&json!({
            "id": "expiring",
            "expires_at": rfc3339_in(3, 0),
            "scope": scope,
        })),
    );
    // Each request is a new connection, so over many of them every shard verifies (and
    // caches) each token.
    const REQUESTS: usize = 48;
    for _ in 0..REQUESTS {
        for client in [&kept, &revoked, &expiring] {
            client.get("/v1/basins", None).expect_status(200);
        }
    }
    let cached = cached_tokens(port);
    assert_eq!(cached.len(), 4, "one gauge per shard: {cached:?}");

    root.send("DELETE", "/v1/access-tokens/revoked", None, &[], None)
        .expect_status(204);
    for _ in 0..REQUESTS {
        assert_error(&revoked.get("/v1/basins", None), 401, "authn");
        kept.get("/v1/basins", None).expect_status(200);
    }
    assert!(
        cached_tokens(port).iter().all(|&n| n <= 2),
        "revoked tokens are forgotten"
    );

    let deadline = SystemTime::now() + Duration::from_secs(10);
    while expiring.get("/v1/basins", None).status == 200 {
        assert!(SystemTime::now() < deadline, "the token did not expire");
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..REQUESTS {
        assert_error(&expiring.get("/v1/basins", None), 401, "authn");
    }
    kept.get("/v1/basins", None).expect_status(200);
}

/// `sluice_tokens_cached`, per shard.
fn cached_tokens(port: u16) -> Vec<u64> {
    get(port, "/metrics")
        .text()
        .lines()
        .filter(|line| line.starts_with("sluice_tokens_cached{"))
        .map(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a gauge value in {line:?}"))
        })
        .collect()
}

#[test]
fn the_verified_token_cache_holds_its_bound_and_evicts() {
    let server = Server::start(&[
        "--shards",
        "1",
        "--root-token",
        ROOT,
        "--verified-tokens",
        "2",
    ]);
    let port = server.port();
    let root = Client::new(port, ROOT);
    let clients: Vec<Client> = (0..3)
        .map(|i| {
            Client::new(
                port,
                &root.issue(
                    &json!({ "id": format!("cached-{i}"), "scope": { "ops": ["list-basins"] } }),
                ),
            )
        })
        .collect();
    for round in 0..2 {
        for client in &clients {
            client.get("/v1/basins", None).expect_status(200);
            assert!(cached_tokens(port)[0] <= 2, "round {round}: over the bound");
        }
    }
    assert_eq!(cached_tokens(port), [2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_storage_and_tokens_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root_dir = dir.path().to_str().expect("UTF-8 path").to_owned();
    let start = || enforcing_on(&root_dir);
    let mut server = start();
    let root = Client::new(server.port(), ROOT);
    let mut secrets = Vec::new();
    for i in 0..20 {
        secrets.push(root.issue(&json!({
            "id": format!("stored-token-{i:02}"),
            "scope": { "ops": ["list-basins"] },
        })));
    }
    root.send(
        "DELETE",
        "/v1/access-tokens/stored-token-00",
        None,
        &[],
        None,
    )
    .expect_status(204);
    assert_eq!(server.terminate(Duration::from_secs(30)).code(), Some(0));

    let stored = read_tree(dir.path());
    assert!(!stored.is_empty());
    let contains = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    // The scan sees what was written: the ids and the hashes are there.
    assert!(
        contains(b"stored-token-07"),
        "the scan does not see the stored tokens"
    );
    for secret in &secrets {
        use sha2::Digest;
        let hash: String = sha2::Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(
            !contains(secret.as_bytes()),
            "a secret is stored in the clear"
        );
        let raw = base64_url_decode(secret);
        assert!(!contains(&raw), "a secret's bytes are stored");
        if secret != &secrets[0] {
            assert!(
                contains(hash.as_bytes()),
                "the hash of a live token is stored"
            );
        }
    }
    assert!(!contains(ROOT.as_bytes()), "the root token is never stored");
    let stderr = server.stderr_text();
    assert!(secrets.iter().all(|s| !stderr.contains(s.as_str())) && !stderr.contains(ROOT));

    let server = start();
    let port = server.port();
    Client::new(port, &secrets[1])
        .get("/v1/basins", None)
        .expect_status(200);
    assert_error(
        &Client::new(port, &secrets[0]).get("/v1/basins", None),
        401,
        "authn",
    );
    assert_eq!(
        ids(&Client::new(port, ROOT).listed("?prefix=stored-")).len(),
        19
    );
}

fn enforcing_on(root: &str) -> Server {
    Server::start(&["--shards", "2", "--local-root", root, "--root-token", ROOT])
}

/// Every byte of every file under `dir`.
fn read_tree(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).expect("read a directory") {
            let entry = entry.expect("a directory entry");
            let kind = entry.file_type().expect("a file type");
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                out.extend(std::fs::read(entry.path()).expect("read a file"));
            }
        }
    }
    out
}

fn base64_url_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("a base64url secret")
}
