//! Error mapping and HTTP-level behaviour over raw HTTP/1.1: routes, methods, headers,
//! query strings, JSON bodies, compression, CORS and the non-API routes (API.md §0, §1, §7;
//! WIRE.md §2–§3).

use std::io::{Read, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use s2_sdk::types::ListAccessTokensInput;
use serde_json::{json, Value};

use crate::harness::{
    assert_error, assert_json_content_type, expect_server_error, get, http, http_json, send_raw,
    unique_basin, Response, Server, HTTP_TIMEOUT,
};

fn start() -> Server {
    Server::start(&["--shards", "2"])
}

const JSON: (&str, &str) = ("Content-Type", "application/json");
const EXPECTED_JSON_CONTENT_TYPE: &str = "Expected request with `Content-Type: application/json`";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("gzip write");
    encoder.finish().expect("gzip finish")
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("the body is valid gzip");
    out
}

/// For responses whose body may be empty: a non-empty body must be a JSON error.
fn assert_empty_or_json_error(response: &Response) {
    if !response.body.is_empty() {
        assert_json_error_shape(response);
    }
}

/// A JSON body with string `code` and `message`, whatever the code is.
fn assert_json_error_shape(response: &Response) {
    assert_json_content_type(response);
    let body = response.json();
    assert!(
        body["code"].is_string() && body["message"].is_string(),
        "expected {{\"code\", \"message\"}} in a {} response, got {body}",
        response.status
    );
}

fn create_basin(port: u16, prefix: &str) -> String {
    let name = unique_basin(prefix);
    http_json(port, "POST", "/v1/basins", &[], &json!({ "basin": name })).expect_status(201);
    name
}

fn basin_count(port: u16) -> usize {
    get(port, "/v1/basins").expect_status(200).json()["basins"]
        .as_array()
        .expect("basins array")
        .len()
}

// B-002 (every raw request here is HTTP/1.1), B-004
#[test]
fn unknown_paths_answer_404() {
    let server = start();
    let port = server.port();
    for path in [
        "/",
        "/nope",
        "/v1",
        "/v1/nope",
        "/v2/basins",
        "/v1/basins/abcdefgh/extra",
        "/v1/streams/a/records/nope",
    ] {
        let response = get(port, path);
        assert_eq!(response.status, 404, "GET {path}: {:?}", response.text());
        assert_empty_or_json_error(&response);
    }
}

// B-005
#[test]
fn known_paths_with_the_wrong_method_answer_405() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "method");
    let cases = [
        ("DELETE", "/v1/basins".to_owned()),
        ("PATCH", "/v1/basins".to_owned()),
        ("PUT", "/v1/basins".to_owned()),
        ("POST", format!("/v1/basins/{basin}")),
        ("PUT", "/v1/streams".to_owned()),
        ("DELETE", "/v1/streams".to_owned()),
        ("POST", "/v1/streams/some-stream".to_owned()),
    ];
    for (method, path) in &cases {
        let response = http(
            port,
            method,
            path,
            &[("S2-Basin", basin.as_str()), JSON],
            b"{}",
        );
        assert_eq!(
            response.status,
            405,
            "{method} {path}: {:?}",
            response.text()
        );
        assert_empty_or_json_error(&response);
    }
}

// B-006
#[test]
fn authorization_is_accepted_and_ignored() {
    let server = start();
    let port = server.port();
    let name = unique_basin("auth");
    http(
        port,
        "POST",
        "/v1/basins",
        &[
            ("Authorization", "Bearer definitely-not-a-real-token"),
            JSON,
        ],
        json!({ "basin": name }).to_string().as_bytes(),
    )
    .expect_status(201);
    for authorization in [
        None,
        Some("Bearer ignored"),
        Some("Bearer "),
        Some("Basic Zm9vOmJhcg=="),
        Some("complete nonsense"),
    ] {
        let headers: Vec<(&str, &str)> = authorization
            .map(|value| vec![("Authorization", value)])
            .unwrap_or_default();
        let response = http(port, "GET", "/v1/basins", &headers, b"");
        response.expect_status(200);
        assert_eq!(
            response.json()["basins"][0]["name"],
            name,
            "{authorization:?}"
        );
        http(port, "GET", &format!("/v1/basins/{name}"), &headers, b"").expect_status(200);
    }
}

// B-007, B-008
#[test]
fn compressed_request_bodies_are_decompressed_and_unknown_encodings_rejected() {
    let server = start();
    let port = server.port();

    let gzipped = unique_basin("gzipped");
    let body = json!({ "basin": gzipped, "config": { "create_stream_on_append": true } });
    let created = http(
        port,
        "POST",
        "/v1/basins",
        &[JSON, ("Content-Encoding", "gzip")],
        &gzip(body.to_string().as_bytes()),
    );
    created.expect_status(201);
    assert_eq!(created.json()["name"], gzipped);
    let config = get(port, &format!("/v1/basins/{gzipped}")).json();
    assert_eq!(config["create_stream_on_append"], true, "{config}");

    let zstded = unique_basin("zstded");
    let body = json!({ "basin": zstded, "config": { "create_stream_on_read": true } });
    let compressed = zstd::encode_all(body.to_string().as_bytes(), 3).expect("zstd");
    let created = http(
        port,
        "POST",
        "/v1/basins",
        &[JSON, ("Content-Encoding", "zstd")],
        &compressed,
    );
    created.expect_status(201);
    let config = get(port, &format!("/v1/basins/{zstded}")).json();
    assert_eq!(config["create_stream_on_read"], true, "{config}");

    // Basin-scoped routes decompress too.
    let stream_body = json!({ "stream": "squeezed", "config": { "storage_class": "standard" } });
    http(
        port,
        "POST",
        "/v1/streams",
        &[
            ("S2-Basin", gzipped.as_str()),
            JSON,
            ("Content-Encoding", "gzip"),
        ],
        &gzip(stream_body.to_string().as_bytes()),
    )
    .expect_status(201);
    let patch = json!({ "storage_class": "squeezed-class" });
    let patched = http(
        port,
        "PATCH",
        "/v1/streams/squeezed",
        &[
            ("S2-Basin", gzipped.as_str()),
            JSON,
            ("Content-Encoding", "zstd"),
        ],
        &zstd::encode_all(patch.to_string().as_bytes(), 3).expect("zstd"),
    );
    patched.expect_status(200);
    assert_eq!(patched.json()["storage_class"], "squeezed-class");

    // Encodings the server does not decode are refused with a JSON error, and nothing is created.
    let before = basin_count(port);
    for encoding in ["br", "deflate", "foo"] {
        let name = unique_basin("unsupported");
        let response = http(
            port,
            "POST",
            "/v1/basins",
            &[JSON, ("Content-Encoding", encoding)],
            json!({ "basin": name }).to_string().as_bytes(),
        );
        assert_eq!(response.status, 415, "{encoding}: {:?}", response.text());
        assert_json_error_shape(&response);
    }
    // A gzip header on a body that is not gzip is not accepted either.
    let response = http(
        port,
        "POST",
        "/v1/basins",
        &[JSON, ("Content-Encoding", "gzip")],
        json!({ "basin": unique_basin("not-gzip") })
            .to_string()
            .as_bytes(),
    );
    assert!(
        (400..500).contains(&response.status),
        "a body that is not gzip: {} {:?}",
        response.status,
        response.text()
    );
    assert_eq!(basin_count(port), before);
}

// B-009
#[test]
fn large_json_responses_are_compressed_when_the_client_asks() {
    let server = start();
    let port = server.port();
    let names: Vec<String> = (0..12)
        .map(|i| format!("compression-check-basin-with-a-long-name-{i:03}"))
        .collect();
    for name in &names {
        http_json(port, "POST", "/v1/basins", &[], &json!({ "basin": name })).expect_status(201);
    }
    let path = "/v1/basins?prefix=compression-check";

    let plain = get(port, path);
    plain.expect_status(200);
    assert_eq!(plain.header("content-encoding"), None);
    assert!(
        plain.body.len() > 1024,
        "the list should exceed 1 KiB: {}",
        plain.body.len()
    );
    let plain_json = plain.json();
    assert_eq!(
        plain_json["basins"].as_array().map(Vec::len),
        Some(names.len())
    );

    let gzipped = http(port, "GET", path, &[("Accept-Encoding", "gzip")], b"");
    gzipped.expect_status(200);
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    assert_json_content_type(&gzipped);
    let decoded: Value = serde_json::from_slice(&gunzip(&gzipped.body)).expect("gzip body is JSON");
    assert_eq!(decoded, plain_json);

    let zstded = http(port, "GET", path, &[("Accept-Encoding", "zstd")], b"");
    zstded.expect_status(200);
    assert_eq!(zstded.header("content-encoding"), Some("zstd"));
    let decoded: Value = serde_json::from_slice(
        &zstd::decode_all(zstded.body.as_slice()).expect("the body is valid zstd"),
    )
    .expect("zstd body is JSON");
    assert_eq!(decoded, plain_json);

    // The same negotiator as S2S frames: `x-gzip`, refusals with weights in any spelling.
    for (accept, expected) in [
        ("x-gzip", Some("gzip")),
        ("zstd;Q=0, gzip", Some("gzip")),
        ("zstd; q = 0.000, x-gzip", Some("gzip")),
        ("gzip;Q=0", None),
        ("br, *", None),
    ] {
        let reply = http(port, "GET", path, &[("Accept-Encoding", accept)], b"");
        reply.expect_status(200);
        assert_eq!(reply.header("content-encoding"), expected, "{accept}");
    }

    // Small responses are sent as they are.
    let small_path = format!("/v1/basins/{}", names[0]);
    let small_plain = get(port, &small_path);
    for encoding in ["gzip", "zstd"] {
        let small = http(
            port,
            "GET",
            &small_path,
            &[("Accept-Encoding", encoding)],
            b"",
        );
        small.expect_status(200);
        assert_eq!(small.header("content-encoding"), None, "{encoding}");
        assert!(small.body.len() <= 1024);
        assert_eq!(small.json(), small_plain.json());
    }
    // Non-API routes are never compressed.
    let health = http(port, "GET", "/health", &[("Accept-Encoding", "gzip")], b"");
    health.expect_status(200);
    assert_eq!(health.header("content-encoding"), None);
}

// B-011
#[test]
fn cors_mirrors_the_origin_unless_disabled() {
    let origin = "http://dashboard.example.test";
    let server = start();
    let port = server.port();

    let response = http(port, "GET", "/v1/basins", &[("Origin", origin)], b"");
    response.expect_status(200);
    assert_eq!(response.header("access-control-allow-origin"), Some(origin));
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );

    let preflight = http(
        port,
        "OPTIONS",
        "/v1/basins",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "content-type,s2-request-token",
            ),
        ],
        b"",
    );
    assert!(
        (200..300).contains(&preflight.status),
        "preflight answered {} {:?}",
        preflight.status,
        preflight.text()
    );
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(origin)
    );
    let methods = preflight
        .header("access-control-allow-methods")
        .unwrap_or("")
        .to_ascii_uppercase();
    assert!(methods.contains("POST"), "allow-methods: {methods:?}");
    let headers = preflight
        .header("access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(
        headers.contains("s2-request-token"),
        "allow-headers: {headers:?}"
    );

    let strict = Server::start(&["--shards", "2", "--no-cors"]);
    let response = http(
        strict.port(),
        "GET",
        "/v1/basins",
        &[("Origin", origin)],
        b"",
    );
    response.expect_status(200);
    assert_eq!(response.header("access-control-allow-origin"), None);
    assert_eq!(response.header("access-control-allow-credentials"), None);
}

// B-012, B-013
#[test]
fn health_ping_and_metrics_routes() {
    let server = start();
    let port = server.port();
    for path in ["/health", "/ping"] {
        let response = get(port, path);
        response.expect_status(200);
        let content_type = response.header("content-type").unwrap_or("");
        assert!(
            content_type.starts_with("text/plain"),
            "{path}: {content_type:?}"
        );
        assert_eq!(response.text().trim(), "OK", "{path}");
    }

    create_basin(port, "metrics");
    let metrics = get(port, "/metrics");
    metrics.expect_status(200);
    let content_type = metrics.header("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "content-type: {content_type:?}"
    );
    // Prometheus text: comments, or `name[{labels}] value [timestamp]`.
    let text = metrics.text();
    let mut samples = 0;
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        if line.starts_with('#') {
            continue;
        }
        let after_name = match line.rfind('}') {
            Some(end) if line.contains('{') => &line[end + 1..],
            _ => line.split_once(' ').map(|(_, rest)| rest).unwrap_or(""),
        };
        let value = after_name.split_whitespace().next().unwrap_or("");
        assert!(
            value.parse::<f64>().is_ok(),
            "not a Prometheus sample line: {line:?}"
        );
        samples += 1;
    }
    assert!(samples > 0, "no samples in /metrics:\n{text}");
}

// B-014, B-015
#[test]
fn json_bodies_allow_unknown_fields_and_media_type_parameters() {
    let server = start();
    let port = server.port();

    let lenient = unique_basin("lenient");
    let created = http_json(
        port,
        "POST",
        "/v1/basins",
        &[],
        &json!({
            "basin": lenient,
            "surprise": 1,
            "config": {
                "create_stream_on_read": true,
                "mystery": [1, 2, 3],
                "default_stream_config": { "retention_policy": { "age": 60 }, "extra": {} }
            }
        }),
    );
    created.expect_status(201);
    let config = get(port, &format!("/v1/basins/{lenient}")).json();
    assert_eq!(config["create_stream_on_read"], true);
    assert_eq!(
        config["default_stream_config"]["retention_policy"],
        json!({ "age": 60 })
    );

    for content_type in [
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "application/vnd.sluice-test+json",
    ] {
        let name = unique_basin("media");
        let response = http(
            port,
            "POST",
            "/v1/basins",
            &[("Content-Type", content_type)],
            json!({ "basin": name }).to_string().as_bytes(),
        );
        assert_eq!(
            response.status,
            201,
            "{content_type}: {:?}",
            response.text()
        );
    }

    let patched = http(
        port,
        "PATCH",
        &format!("/v1/basins/{lenient}"),
        &[("Content-Type", "application/json; charset=utf-8")],
        json!({ "create_stream_on_append": true, "ignored": "yes" })
            .to_string()
            .as_bytes(),
    );
    patched.expect_status(200);
    assert_eq!(patched.json()["create_stream_on_append"], true);

    let stream = http(
        port,
        "POST",
        "/v1/streams",
        &[
            ("S2-Basin", lenient.as_str()),
            ("Content-Type", "application/json; charset=utf-8"),
        ],
        json!({ "stream": "tolerant", "unexpected": true, "config": { "novel": 1 } })
            .to_string()
            .as_bytes(),
    );
    stream.expect_status(201);

    // Only the first media type of Accept counts; control-plane answers are JSON.
    let listed = http(
        port,
        "GET",
        "/v1/basins",
        &[("Accept", "application/json, text/plain;q=0.5")],
        b"",
    );
    listed.expect_status(200);
    assert_json_content_type(&listed);
    listed.json();
}

// B-020, B-021, B-022, B-023
#[test]
fn basin_header_problems_are_bad_header() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "header");

    for (method, path) in [
        ("GET", "/v1/streams"),
        ("POST", "/v1/streams"),
        ("GET", "/v1/streams/s"),
        ("PUT", "/v1/streams/s"),
        ("DELETE", "/v1/streams/s"),
    ] {
        let message = assert_error(&http(port, method, path, &[JSON], b"{}"), 400, "bad_header");
        assert_eq!(message, "Missing header `s2-basin`", "{method} {path}");
    }

    for bad in [
        "NOT_A_BASIN",
        "short",
        "-leading-hyphen",
        "trailing-hyphen-",
    ] {
        let message = assert_error(
            &http(port, "GET", "/v1/streams", &[("S2-Basin", bad)], b""),
            400,
            "bad_header",
        );
        assert!(
            message.starts_with("Invalid header `s2-basin`"),
            "{bad}: {message:?}"
        );
    }

    let request = b"GET /v1/streams HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nS2-Basin: caf\xe9-basin\r\n\r\n";
    let reply = send_raw(port, request, HTTP_TIMEOUT);
    let response = reply
        .response()
        .unwrap_or_else(|| panic!("no response to a non-UTF-8 S2-Basin: {reply:?}"));
    let message = assert_error(&response, 400, "bad_header");
    assert_eq!(message, "Invalid header `s2-basin`: not UTF-8");

    // Extraction order: S2-Basin, then path, then query, then other headers, then body.
    let message = assert_error(
        &get(port, "/v1/streams/bad%00name?limit=abc"),
        400,
        "bad_header",
    );
    assert_eq!(message, "Missing header `s2-basin`");
    assert_error(
        &http(
            port,
            "GET",
            "/v1/streams/bad%00name?limit=abc",
            &[("S2-Basin", basin.as_str())],
            b"",
        ),
        400,
        "bad_path",
    );
    assert_error(
        &http(
            port,
            "GET",
            "/v1/streams?limit=abc",
            &[("S2-Basin", basin.as_str())],
            b"",
        ),
        400,
        "bad_query",
    );
    let long_token = "t".repeat(37);
    assert_error(
        &http(
            port,
            "POST",
            "/v1/streams",
            &[
                ("S2-Basin", basin.as_str()),
                ("S2-Request-Token", long_token.as_str()),
                JSON,
            ],
            b"{not json",
        ),
        400,
        "bad_header",
    );
}

// B-020, B-021, B-024, B-025
#[test]
fn bad_paths_and_queries() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "query");

    let message = assert_error(&get(port, "/v1/basins/NOT_VALID"), 400, "bad_path");
    assert!(message.contains("basin name"), "{message:?}");

    let too_long = format!("prefix={}", "a".repeat(49));
    for (query, reason) in [
        ("limit=abc", None),
        ("limit=-1", None),
        ("limit=1.5", None),
        (
            "prefix=UPPER",
            Some("basin prefix must begin with a lowercase letter or number"),
        ),
        (
            "prefix=ab_c",
            Some("basin prefix must comprise lowercase letters, numbers, and hyphens"),
        ),
        (
            "start_after=-abc",
            Some("basin start-after must begin with a lowercase letter or number"),
        ),
        (
            too_long.as_str(),
            Some("basin prefix must not exceed 48 bytes"),
        ),
    ] {
        let message = assert_error(&get(port, &format!("/v1/basins?{query}")), 400, "bad_query");
        assert!(
            message.starts_with("Failed to deserialize query string"),
            "{query}: {message:?}"
        );
        if let Some(reason) = reason {
            assert!(
                message.contains(reason),
                "{query}: {message:?} lacks {reason:?}"
            );
        }
    }
    // Relaxed rules for prefixes: short and hyphen-ended prefixes are fine.
    get(port, "/v1/basins?prefix=q").expect_status(200);
    get(port, "/v1/basins?prefix=query-&start_after=query-").expect_status(200);

    for query in ["limit=abc", "limit=-5"] {
        assert_error(
            &http(
                port,
                "GET",
                &format!("/v1/streams?{query}"),
                &[("S2-Basin", basin.as_str())],
                b"",
            ),
            400,
            "bad_query",
        );
    }
}

// B-020, B-021, B-026, B-027
#[test]
fn json_bodies_need_the_json_content_type_and_valid_json() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "json");
    let before = basin_count(port);

    let create = json!({ "basin": unique_basin("unsent") }).to_string();
    for headers in [
        vec![],
        vec![("Content-Type", "text/plain")],
        vec![("Content-Type", "application/xml")],
    ] {
        let message = assert_error(
            &http(port, "POST", "/v1/basins", &headers, create.as_bytes()),
            400,
            "bad_json",
        );
        assert_eq!(message, EXPECTED_JSON_CONTENT_TYPE, "{headers:?}");
    }
    let message = assert_error(
        &http(port, "PATCH", &format!("/v1/basins/{basin}"), &[], b"{}"),
        400,
        "bad_json",
    );
    assert_eq!(message, EXPECTED_JSON_CONTENT_TYPE);
    let message = assert_error(
        &http(
            port,
            "POST",
            "/v1/streams",
            &[("S2-Basin", basin.as_str())],
            br#"{"stream":"s"}"#,
        ),
        400,
        "bad_json",
    );
    assert_eq!(message, EXPECTED_JSON_CONTENT_TYPE);

    let bad_bodies: [&[u8]; 10] = [
        b"",
        b"{\"basin\":",
        b"not json at all",
        b"[]",
        b"{}",
        br#"{"basin": 5}"#,
        br#"{"basin": "abcdefgh", "config": {"stream_cipher": "rot13"}}"#,
        br#"{"basin": "abcdefgh", "config": {"create_stream_on_append": null}}"#,
        br#"{"basin": "abcdefgh", "config": {"default_stream_config": {"retention_policy": {"age": -1}}}}"#,
        br#"{"basin": "abcdefgh", "config": {"default_stream_config": {"timestamping": {"mode": "sundial"}}}}"#,
    ];
    for body in bad_bodies {
        assert_error(
            &http(port, "POST", "/v1/basins", &[JSON], body),
            400,
            "bad_json",
        );
    }
    assert_eq!(basin_count(port), before, "a rejected body created a basin");

    let bad_stream_bodies: [&[u8]; 3] = [
        br#"{"stream": 5}"#,
        b"{}",
        br#"{"stream": "s", "config": {"retention_policy": {"age": "ten"}}}"#,
    ];
    for body in bad_stream_bodies {
        assert_error(
            &http(
                port,
                "POST",
                "/v1/streams",
                &[("S2-Basin", basin.as_str()), JSON],
                body,
            ),
            400,
            "bad_json",
        );
    }
    http(
        port,
        "POST",
        "/v1/streams",
        &[("S2-Basin", basin.as_str()), JSON],
        br#"{"stream":"s"}"#,
    )
    .expect_status(201);
    assert_error(
        &http(
            port,
            "PATCH",
            "/v1/streams/s",
            &[("S2-Basin", basin.as_str()), JSON],
            br#"{"storage_class": 7}"#,
        ),
        400,
        "bad_json",
    );
    assert_error(
        &http(
            port,
            "PATCH",
            &format!("/v1/basins/{basin}"),
            &[JSON],
            b"{\"create_stream_on_read\": tru",
        ),
        400,
        "bad_json",
    );
}

// B-064
#[test]
fn request_tokens_longer_than_36_bytes_are_bad_headers() {
    let server = start();
    let port = server.port();
    let long = "x".repeat(37);
    let longest = "y".repeat(36);

    let message = assert_error(
        &http_json(
            port,
            "POST",
            "/v1/basins",
            &[("S2-Request-Token", long.as_str())],
            &json!({ "basin": unique_basin("token") }),
        ),
        400,
        "bad_header",
    );
    assert!(message.contains("s2-request-token"), "{message:?}");
    let basin = unique_basin("token");
    http_json(
        port,
        "POST",
        "/v1/basins",
        &[("S2-Request-Token", longest.as_str())],
        &json!({ "basin": basin }),
    )
    .expect_status(201);

    assert_error(
        &http_json(
            port,
            "POST",
            "/v1/streams",
            &[
                ("S2-Basin", basin.as_str()),
                ("S2-Request-Token", long.as_str()),
            ],
            &json!({ "stream": "s" }),
        ),
        400,
        "bad_header",
    );
    http_json(
        port,
        "POST",
        "/v1/streams",
        &[
            ("S2-Basin", basin.as_str()),
            ("S2-Request-Token", longest.as_str()),
        ],
        &json!({ "stream": "s" }),
    )
    .expect_status(201);
    assert_eq!(basin_count(port), 1);
}

// B-029, B-030, B-031
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_errors_metrics_queries_and_unimplemented_locations() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "unimpl");

    // With enforcement off, the root token is listed under its fixed id.
    let listed = get(port, "/v1/access-tokens");
    listed.expect_status(200);
    assert_eq!(listed.json()["access_tokens"][0]["id"], "root");
    assert_error(&get(port, "/v1/access-tokens?limit=abc"), 400, "bad_query");
    assert_error(
        &http_json(
            port,
            "POST",
            "/v1/access-tokens",
            &[],
            &json!({ "id": "token-1", "scope": {} }),
        ),
        422,
        "invalid",
    );
    assert_error(
        &http(port, "POST", "/v1/access-tokens", &[JSON], b"{"),
        400,
        "bad_json",
    );
    assert_error(
        &http(
            port,
            "POST",
            "/v1/access-tokens",
            &[],
            br#"{"id":"token-1","scope":{}}"#,
        ),
        400,
        "bad_json",
    );
    assert_error(
        &http(port, "DELETE", "/v1/access-tokens/token-1", &[], b""),
        404,
        "access_token_not_found",
    );
    assert_error(
        &http(
            port,
            "DELETE",
            &format!("/v1/access-tokens/{}", "t".repeat(97)),
            &[],
            b"",
        ),
        400,
        "bad_path",
    );

    // The metrics query (the rest of it is in operations::usage).
    assert_error(&get(port, "/v1/metrics"), 400, "bad_query");
    assert_error(&get(port, "/v1/metrics?set=bogus"), 400, "bad_query");
    assert_error(
        &get(port, &format!("/v1/metrics/{basin}")),
        400,
        "bad_query",
    );
    get(
        port,
        "/v1/metrics?set=account-ops&start=1&end=2&interval=hour",
    )
    .expect_status(200);

    assert_error(&get(port, "/v1/locations"), 501, "not_implemented");
    assert_error(&get(port, "/v1/locations/default"), 501, "not_implemented");
    assert_error(
        &http_json(
            port,
            "PUT",
            "/v1/locations/default",
            &[],
            &json!("aws:us-east-1"),
        ),
        501,
        "not_implemented",
    );
    assert_error(
        &http(
            port,
            "PUT",
            "/v1/locations/default",
            &[JSON],
            b"\"unterminated",
        ),
        400,
        "bad_json",
    );

    // The SDK sees the same codes.
    let s2 = server.sdk();
    let tokens = s2
        .list_access_tokens(ListAccessTokensInput::new())
        .await
        .expect("list access tokens");
    assert_eq!(tokens.values.len(), 1, "the root token only: {tokens:?}");
    expect_server_error(s2.list_locations().await, 501, "not_implemented");
}
