//! Unary appends through the SDK (protobuf), raw JSON and raw protobuf: acks, batch and
//! record limits, command records, fencing, match_seq_num, timestamping, formats,
//! auto-creation, atomicity and concurrency (API.md §5.2, SEMANTICS.md §2–§4).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use prost::Message;
use s2_sdk::error::{AppendConditionFailed, AppendError, ReadError};
use s2_sdk::types::{
    AppendAck, AppendInput, AppendRecord, AppendRecordBatch, CommandRecord, CreateBasinInput,
    CreateStreamInput, FencingToken, Header, ReadFrom, ReadInput, ReadLimits, ReadStart, ReadStop,
};
use s2_sdk::S2Stream;
use serde_json::{json, Value};

use super::proto;
use super::{
    append_json, append_ok, basin_with_stream, bodies, check_tail, create_basin, create_stream,
    now_ms, position, read_raw, read_records, records_path, seq_nums, start, stream_path,
};
use crate::harness::{
    assert_error, assert_json_content_type, assert_keys, basin_name, http, stream_name,
    unique_basin, Response, Server,
};

const PROTOBUF: &str = "application/protobuf";

fn sdk_batch(records: Vec<AppendRecord>) -> AppendInput {
    AppendInput::new(AppendRecordBatch::try_from_iter(records).expect("valid batch"))
}

fn fencing_token(text: &str) -> FencingToken {
    text.parse()
        .unwrap_or_else(|err| panic!("invalid fencing token {text:?}: {err}"))
}

fn sdk_read_from(seq_num: u64) -> ReadInput {
    ReadInput::new().with_start(ReadStart::new().with_from(ReadFrom::SeqNum(seq_num)))
}

/// Asserts a 412 whose body is exactly `expected`.
fn assert_precondition_failed(response: &Response, expected: Value) {
    response.expect_status(412);
    assert_json_content_type(response);
    assert_eq!(response.json(), expected, "unexpected 412 body");
}

/// The SDK scenario: appends to several streams (spread over the shards by placement),
/// reads them back, and uses check-tail, fence and trim.
// B-120 B-131 B-133 B-149 B-160 B-164 B-253 B-263
async fn sdk_append_read_scenario(shards: &str) {
    let server = Server::start(&["--shards", shards]);
    let s2 = server.sdk();
    let basin_text = unique_basin("dp-sdk");
    s2.create_basin(CreateBasinInput::new(basin_name(&basin_text)))
        .await
        .expect("create basin");
    let basin = s2.basin(basin_name(&basin_text));
    let names: Vec<String> = (0..6).map(|i| format!("events-{i}")).collect();
    for name in &names {
        basin
            .create_stream(CreateStreamInput::new(stream_name(name)))
            .await
            .unwrap_or_else(|err| panic!("create stream {name}: {err}"));
    }

    for (index, name) in names.iter().enumerate() {
        let stream = basin.stream(stream_name(name));
        match stream.read(sdk_read_from(0)).await {
            Err(ReadError::ReadUnwritten(tail)) => {
                assert_eq!(
                    (tail.seq_num, tail.timestamp),
                    (0, 0),
                    "tail of an empty stream"
                )
            }
            other => panic!("reading an empty stream from 0 must be unwritten, got {other:?}"),
        }

        // (headers, body) of every record, in order.
        let mut expected: Vec<(Vec<(String, String)>, String)> = Vec::new();
        let mut acks: Vec<(usize, AppendAck)> = Vec::new();
        for batch in 0..4usize {
            let count = 1 + (batch + index) % 4;
            let mut records = Vec::new();
            for i in 0..count {
                let body = format!("{name}/{batch}/{i}");
                let headers = vec![
                    ("batch".to_owned(), batch.to_string()),
                    ("stream".to_owned(), name.clone()),
                ];
                let record = AppendRecord::new(body.clone())
                    .expect("record")
                    .with_headers(
                        headers
                            .iter()
                            .map(|(n, v)| Header::new(n.clone(), v.clone())),
                    )
                    .expect("record headers");
                records.push(record);
                expected.push((headers, body));
            }
            let before = now_ms();
            let ack = stream
                .append(sdk_batch(records))
                .await
                .unwrap_or_else(|err| panic!("append to {name}: {err}"));
            let after = now_ms();
            let first = (expected.len() - count) as u64;
            assert_eq!(ack.start.seq_num, first, "ack start of batch {batch}");
            assert_eq!(
                ack.end.seq_num,
                first + count as u64,
                "ack end of batch {batch}"
            );
            assert_eq!(
                (ack.tail.seq_num, ack.tail.timestamp),
                (ack.end.seq_num, ack.end.timestamp),
                "a lone writer's ack tail is its end"
            );
            assert!(
                (before..=after).contains(&ack.start.timestamp),
                "arrival timestamp {} outside [{before}, {after}]",
                ack.start.timestamp
            );
            assert!(ack.start.timestamp <= ack.end.timestamp);
            if let Some((_, previous)) = acks.last() {
                assert!(ack.start.timestamp >= previous.end.timestamp);
            }
            // Visible at once (B-253).
            let tail = stream.check_tail().await.expect("check tail");
            assert_eq!(
                (tail.seq_num, tail.timestamp),
                (ack.end.seq_num, ack.end.timestamp)
            );
            acks.push((count, ack));
        }

        let batch = stream.read(sdk_read_from(0)).await.expect("read all");
        assert!(batch.tail.is_none(), "a catch-up read carries no tail");
        assert_eq!(batch.records.len(), expected.len());
        for (at, (record, (headers, body))) in batch.records.iter().zip(&expected).enumerate() {
            assert_eq!(record.seq_num, at as u64);
            assert_eq!(record.body.as_ref(), body.as_bytes());
            let got: Vec<(Vec<u8>, Vec<u8>)> = record
                .headers
                .iter()
                .map(|h| (h.name.to_vec(), h.value.to_vec()))
                .collect();
            let want: Vec<(Vec<u8>, Vec<u8>)> = headers
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
            assert_eq!(got, want, "headers of record {at}");
        }
        for (count, ack) in &acks {
            let first = &batch.records[ack.start.seq_num as usize];
            let last = &batch.records[ack.start.seq_num as usize + count - 1];
            assert_eq!(first.timestamp, ack.start.timestamp);
            assert_eq!(last.timestamp, ack.end.timestamp);
        }
        assert!(batch
            .records
            .windows(2)
            .all(|pair| pair[0].timestamp <= pair[1].timestamp));

        let total = expected.len() as u64;
        let some = stream
            .read(
                sdk_read_from(1)
                    .with_stop(ReadStop::new().with_limits(ReadLimits::new().with_count(2))),
            )
            .await
            .expect("read with count");
        let got: Vec<u64> = some.records.iter().map(|r| r.seq_num).collect();
        assert_eq!(got, vec![1, 2]);
        let last = stream
            .read(ReadInput::new().with_start(ReadStart::new().with_from(ReadFrom::TailOffset(1))))
            .await
            .expect("read tail_offset 1");
        let got: Vec<u64> = last.records.iter().map(|r| r.seq_num).collect();
        assert_eq!(got, vec![total - 1]);
        match stream.read(sdk_read_from(total + 5)).await {
            Err(ReadError::ReadUnwritten(tail)) => assert_eq!(tail.seq_num, total),
            other => panic!("reading past the tail must be unwritten, got {other:?}"),
        }

        // Fence, conditional appends and trim (B-263).
        let token = format!("owner-{index}");
        let fence = stream
            .append(sdk_batch(vec![AppendRecord::from(CommandRecord::fence(
                fencing_token(&token),
            ))]))
            .await
            .expect("fence");
        assert_eq!(fence.start.seq_num, total);
        let fenced = stream
            .append(
                sdk_batch(vec![AppendRecord::new("fenced").expect("record")])
                    .with_fencing_token(fencing_token(&token))
                    .with_match_seq_num(total + 1),
            )
            .await
            .expect("append with the current token and the tail as match_seq_num");
        assert_eq!(fenced.start.seq_num, total + 1);
        match stream
            .append(
                sdk_batch(vec![AppendRecord::new("stale").expect("record")])
                    .with_fencing_token(fencing_token("someone-else")),
            )
            .await
        {
            Err(AppendError::ConditionFailed(AppendConditionFailed::FencingTokenMismatch(
                current,
            ))) => assert_eq!(current.to_string(), token),
            other => panic!("expected a fencing token mismatch, got {other:?}"),
        }
        match stream
            .append(
                sdk_batch(vec![AppendRecord::new("late").expect("record")])
                    .with_fencing_token(fencing_token(&token))
                    .with_match_seq_num(0),
            )
            .await
        {
            Err(AppendError::ConditionFailed(AppendConditionFailed::SeqNumMismatch(next))) => {
                assert_eq!(next, total + 2)
            }
            other => panic!("expected a seq_num mismatch, got {other:?}"),
        }
        let trim = stream
            .append(sdk_batch(vec![AppendRecord::from(CommandRecord::trim(2))]))
            .await
            .expect("trim");
        assert_eq!(trim.start.seq_num, total + 2);
        let tail = stream.check_tail().await.expect("check tail after trim");
        assert_eq!(tail.seq_num, total + 3, "a trim never moves the tail back");
    }
}

// B-120 B-131 B-133 B-149 B-160 B-164 B-253 B-263, on one shard
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_append_and_read_with_one_shard() {
    sdk_append_read_scenario("1").await;
}

// B-120 B-131 B-133 B-149 B-160 B-164 B-253 B-263, on four shards
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_append_and_read_with_four_shards() {
    sdk_append_read_scenario("4").await;
}

// B-120 B-253
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_append_acks_start_end_and_tail() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-json", "s");

    let before = now_ms();
    let response = append_json(port, &basin, "s", &[], &bodies(&["one"]));
    let after = now_ms();
    response.expect_status(200);
    assert_json_content_type(&response);
    let ack = response.json();
    assert_keys(&ack, &["start", "end", "tail"]);
    for key in ["start", "end", "tail"] {
        assert_keys(&ack[key], &["seq_num", "timestamp"]);
    }
    let (start_seq, ts) = position(&ack["start"]);
    assert_eq!(start_seq, 0);
    assert!(
        (before..=after).contains(&ts),
        "timestamp {ts} outside [{before}, {after}]"
    );
    assert_eq!(position(&ack["end"]), (1, ts));
    assert_eq!(position(&ack["tail"]), (1, ts));
    assert_eq!(check_tail(port, &basin, "s"), (1, ts));

    let ack = append_ok(port, &basin, "s", &bodies(&["two", "three"]));
    let (start_seq, ts2) = position(&ack["start"]);
    assert_eq!(start_seq, 1);
    assert!(ts2 >= ts);
    let end = position(&ack["end"]);
    assert_eq!(end.0, 3);
    assert_eq!(position(&ack["tail"]), end);
    assert_eq!(check_tail(port, &basin, "s"), end);
    let records = read_records(port, &basin, "s", "seq_num=0");
    assert_eq!(seq_nums(&records), vec![0, 1, 2]);
    let texts: Vec<&str> = records
        .iter()
        .map(|r| r["body"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["one", "two", "three"]);
}

// B-028 B-121 B-122 B-131 B-142
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_appends() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-proto", "p");
    let path = records_path("p", "");
    let proto_headers = [
        ("S2-Basin", basin.as_str()),
        ("Content-Type", PROTOBUF),
        ("Accept", PROTOBUF),
    ];

    let mut input = proto::input(&["a", "b"]);
    input.records[0].headers.push(proto::Header {
        name: b"bin".to_vec(),
        value: vec![0, 255, 7],
    });
    input.records[1].body = vec![1, 2, 255, 0];
    let response = http(port, "POST", &path, &proto_headers, &input.encode_to_vec());
    response.expect_status(200);
    assert!(response
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase()
        .starts_with(PROTOBUF));
    let ack = proto::AppendAck::decode(response.body.as_slice()).expect("protobuf AppendAck");
    let [start_pos, end_pos, tail_pos] = proto::ack_positions(&ack);
    assert_eq!(start_pos.0, 0);
    assert_eq!(end_pos, (2, start_pos.1));
    assert_eq!(tail_pos, end_pos);

    // The x- alias in both directions.
    let response = http(
        port,
        "POST",
        &path,
        &[
            ("S2-Basin", basin.as_str()),
            ("Content-Type", "application/x-protobuf"),
            ("Accept", "application/x-protobuf"),
        ],
        &proto::input(&["c"]).encode_to_vec(),
    );
    response.expect_status(200);
    let ack = proto::AppendAck::decode(response.body.as_slice()).expect("protobuf AppendAck");
    assert_eq!(proto::ack_positions(&ack)[0].0, 2);

    // JSON in, protobuf out (B-122).
    let response = http(
        port,
        "POST",
        &path,
        &[
            ("S2-Basin", basin.as_str()),
            ("Content-Type", "application/json"),
            ("Accept", PROTOBUF),
        ],
        bodies(&["d"]).to_string().as_bytes(),
    );
    response.expect_status(200);
    assert!(response
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase()
        .starts_with(PROTOBUF));
    let ack = proto::AppendAck::decode(response.body.as_slice()).expect("protobuf AppendAck");
    assert_eq!(proto::ack_positions(&ack)[0].0, 3);

    // Protobuf in, no Accept: a JSON ack.
    let response = http(
        port,
        "POST",
        &path,
        &[("S2-Basin", basin.as_str()), ("Content-Type", PROTOBUF)],
        &proto::input(&["e"]).encode_to_vec(),
    );
    response.expect_status(200);
    assert_json_content_type(&response);
    assert_eq!(position(&response.json()["start"]).0, 4);

    // Undecodable protobuf (B-028).
    let response = http(port, "POST", &path, &proto_headers, &[0xff, 0xff, 0xff]);
    assert_error(&response, 400, "bad_proto");

    // A fencing token over 36 bytes is 422 in protobuf (400 in JSON).
    let mut long_token = proto::input(&["x"]);
    long_token.fencing_token = Some("t".repeat(37));
    let response = http(
        port,
        "POST",
        &path,
        &proto_headers,
        &long_token.encode_to_vec(),
    );
    assert_error(&response, 422, "invalid");

    // A failed condition answers the JSON 412 body even to a protobuf client.
    let mut stale = proto::input(&["x"]);
    stale.match_seq_num = Some(1);
    let response = http(port, "POST", &path, &proto_headers, &stale.encode_to_vec());
    assert_precondition_failed(&response, json!({ "seq_num_mismatch": 5 }));

    assert_eq!(
        check_tail(port, &basin, "p").0,
        5,
        "failed appends stored nothing"
    );
    let response = read_raw(port, &basin, "p", "seq_num=0", &[("Accept", PROTOBUF)]);
    response.expect_status(200);
    let batch = proto::ReadBatch::decode(response.body.as_slice()).expect("protobuf ReadBatch");
    let got: Vec<(u64, Vec<u8>)> = batch
        .records
        .iter()
        .map(|r| (r.seq_num, r.body.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, b"a".to_vec()),
            (1, vec![1, 2, 255, 0]),
            (2, b"c".to_vec()),
            (3, b"d".to_vec()),
            (4, b"e".to_vec()),
        ]
    );
    assert_eq!(
        batch.records[0].headers,
        vec![proto::Header {
            name: b"bin".to_vec(),
            value: vec![0, 255, 7],
        }]
    );
}

// B-123 B-124 B-125 B-150
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_limits() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-limits", "l");

    let message = assert_error(
        &append_json(port, &basin, "l", &[], &json!({ "records": [] })),
        422,
        "invalid",
    );
    assert!(
        message.contains("record batch must not be empty"),
        "{message}"
    );

    let many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let message = assert_error(
        &append_json(port, &basin, "l", &[], &bodies(&many_refs)),
        422,
        "invalid",
    );
    assert!(
        message.contains("must not exceed 1000 records"),
        "{message}"
    );
    assert_eq!(
        check_tail(port, &basin, "l").0,
        0,
        "a rejected batch stores nothing"
    );

    let ack = append_ok(port, &basin, "l", &bodies(&many_refs[..1000]));
    assert_eq!(position(&ack["end"]).0, 1000);

    // Two records of 600 KB: over the 1 MiB batch limit.
    let big = "b".repeat(600_000);
    let message = assert_error(
        &append_json(
            port,
            &basin,
            "l",
            &[],
            &bodies(&[big.as_str(), big.as_str()]),
        ),
        422,
        "invalid",
    );
    assert!(message.contains("1 MiB"), "{message}");
    assert_eq!(check_tail(port, &basin, "l").0, 1000);

    // Exactly 1 MiB metered: 8 + body.
    let exact = "e".repeat(1_048_576 - 8);
    let ack = append_ok(port, &basin, "l", &bodies(&[exact.as_str()]));
    assert_eq!(position(&ack["start"]).0, 1000);
    // Exactly 1 MiB with a header: 8 + 2 + len("k") + len("v") + body.
    let exact_with_header = "h".repeat(1_048_576 - 12);
    let ack = append_ok(
        port,
        &basin,
        "l",
        &json!({ "records": [{ "headers": [["k", "v"]], "body": exact_with_header }] }),
    );
    assert_eq!(position(&ack["start"]).0, 1001);
    // One byte more.
    let over = "o".repeat(1_048_576 - 7);
    let message = assert_error(
        &append_json(port, &basin, "l", &[], &bodies(&[over.as_str()])),
        422,
        "invalid",
    );
    assert!(message.contains("1 MiB"), "{message}");
    assert_eq!(check_tail(port, &basin, "l").0, 1002);

    // A unary read holds at most 1 MiB, so each of these comes alone.
    let records = read_records(port, &basin, "l", "seq_num=1000");
    assert_eq!(seq_nums(&records), vec![1000]);
    assert_eq!(records[0]["body"].as_str().map(str::len), Some(1_048_568));
    let records = read_records(port, &basin, "l", "seq_num=1001");
    assert_eq!(seq_nums(&records), vec![1001]);
    assert_eq!(records[0]["headers"], json!([["k", "v"]]));
}

// B-127 B-128 B-129 B-130 B-150
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_command_record_validation() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-cmds", "c");
    let none: &[(&str, &str)] = &[];
    let base64: &[(&str, &str)] = &[("S2-Format", "base64")];

    append_ok(port, &basin, "c", &bodies(&["first"]));

    let cases = [
        (
            json!({ "records": [{ "headers": [["a", "1"], ["", "x"]], "body": "b" }] }),
            none,
            "invalid header: empty name",
        ),
        (
            json!({ "records": [{ "headers": [["", "fence"], ["b", "2"]] }] }),
            none,
            "invalid header: empty name",
        ),
        (
            json!({ "records": [{ "headers": [["", "bogus"]] }] }),
            none,
            "unknown command",
        ),
        (
            json!({ "records": [{ "headers": [["", "fence"]], "body": "f".repeat(37) }] }),
            none,
            "fencing token must not exceed 36 bytes",
        ),
        (
            json!({ "records": [{ "headers": [["", "ZmVuY2U="]], "body": "/w==" }] }),
            base64,
            "invalid UTF-8",
        ),
        (
            json!({ "records": [{ "headers": [["", "trim"]], "body": "abc" }] }),
            none,
            "must be 8",
        ),
        // A valid record first does not save the batch.
        (
            json!({ "records": [{ "body": "ok" }, { "headers": [["", "nope"]] }] }),
            none,
            "unknown command",
        ),
    ];
    for (body, headers, expected) in cases {
        let message = assert_error(
            &append_json(port, &basin, "c", headers, &body),
            422,
            "invalid",
        );
        assert!(
            message.contains(expected),
            "message for {body} should contain {expected:?}: {message}"
        );
        assert_eq!(
            check_tail(port, &basin, "c").0,
            1,
            "{body} stored something"
        );
    }

    // The limits themselves are fine.
    let fence36 = "f".repeat(36);
    let ack = append_ok(
        port,
        &basin,
        "c",
        &json!({ "records": [{ "headers": [["", "fence"]], "body": fence36 }] }),
    );
    assert_eq!(position(&ack["start"]).0, 1);
    let trim_body = BASE64.encode(1u64.to_be_bytes());
    let response = append_json(
        port,
        &basin,
        "c",
        base64,
        &json!({ "records": [{ "headers": [["", BASE64.encode("trim")]], "body": trim_body }] }),
    );
    response.expect_status(200);
    assert_eq!(position(&response.json()["start"]).0, 2);
    // Records without headers and with an empty body are valid.
    let ack = append_ok(port, &basin, "c", &json!({ "records": [{}] }));
    assert_eq!(position(&ack["start"]).0, 3);
}

// B-132 B-133 B-134 B-135 B-136 B-142
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-fence", "f");
    let fence = |token: &str| json!({ "headers": [["", "fence"]], "body": token });
    let with_token =
        |token: &str| json!({ "records": [{ "body": "data" }], "fencing_token": token });
    let mut stored = 0u64;

    // The initial token is "".
    append_ok(port, &basin, "f", &with_token(""));
    stored += 1;
    assert_precondition_failed(
        &append_json(port, &basin, "f", &[], &with_token("x")),
        json!({ "fencing_token_mismatch": "" }),
    );

    append_ok(port, &basin, "f", &json!({ "records": [fence("abc")] }));
    stored += 1;
    append_ok(port, &basin, "f", &with_token("abc"));
    stored += 1;
    assert_precondition_failed(
        &append_json(port, &basin, "f", &[], &with_token("x")),
        json!({ "fencing_token_mismatch": "abc" }),
    );
    append_ok(port, &basin, "f", &bodies(&["no token"]));
    stored += 1;

    // The batch carrying a fence is checked against the token before it.
    assert_precondition_failed(
        &append_json(
            port,
            &basin,
            "f",
            &[],
            &json!({ "records": [fence("new")], "fencing_token": "new" }),
        ),
        json!({ "fencing_token_mismatch": "abc" }),
    );
    append_ok(
        port,
        &basin,
        "f",
        &json!({ "records": [fence("new"), { "body": "after" }], "fencing_token": "abc" }),
    );
    stored += 2;
    assert_precondition_failed(
        &append_json(port, &basin, "f", &[], &with_token("abc")),
        json!({ "fencing_token_mismatch": "new" }),
    );

    // Fencing is checked before match_seq_num.
    assert_precondition_failed(
        &append_json(
            port,
            &basin,
            "f",
            &[],
            &json!({ "records": [{ "body": "x" }], "fencing_token": "wrong", "match_seq_num": 999 }),
        ),
        json!({ "fencing_token_mismatch": "new" }),
    );
    assert_precondition_failed(
        &append_json(
            port,
            &basin,
            "f",
            &[],
            &json!({ "records": [{ "body": "x" }], "fencing_token": "new", "match_seq_num": 999 }),
        ),
        json!({ "seq_num_mismatch": stored }),
    );

    // An empty fence resets the token to "".
    append_ok(
        port,
        &basin,
        "f",
        &json!({ "records": [fence("")], "fencing_token": "new" }),
    );
    stored += 1;
    append_ok(port, &basin, "f", &with_token(""));
    stored += 1;
    assert_precondition_failed(
        &append_json(port, &basin, "f", &[], &with_token("new")),
        json!({ "fencing_token_mismatch": "" }),
    );

    // Over 36 bytes in JSON is a body error.
    assert_error(
        &append_json(port, &basin, "f", &[], &with_token(&"t".repeat(37))),
        400,
        "bad_json",
    );
    assert_eq!(check_tail(port, &basin, "f").0, stored);
}

// B-131 B-150
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_seq_num_conditions() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-match", "m");
    let with_match = |seq: u64, n: usize| {
        let records: Vec<Value> = (0..n).map(|i| json!({ "body": format!("r{i}") })).collect();
        json!({ "records": records, "match_seq_num": seq })
    };

    let ack = append_ok(port, &basin, "m", &with_match(0, 1));
    assert_eq!(position(&ack["start"]).0, 0);
    for stale in [0, 5, u64::MAX] {
        assert_precondition_failed(
            &append_json(port, &basin, "m", &[], &with_match(stale, 2)),
            json!({ "seq_num_mismatch": 1 }),
        );
    }
    let ack = append_ok(port, &basin, "m", &with_match(1, 3));
    assert_eq!(position(&ack["start"]).0, 1);
    assert_eq!(position(&ack["end"]).0, 4);
    let ack = append_ok(
        port,
        &basin,
        "m",
        &json!({ "records": [{ "body": "null match" }], "match_seq_num": null }),
    );
    assert_eq!(position(&ack["start"]).0, 4);
    append_ok(port, &basin, "m", &with_match(5, 1));
    assert_eq!(check_tail(port, &basin, "m").0, 6);
}

// B-137 B-138 B-139 B-140 B-141
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamping_modes() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "dp-time", json!({}));
    create_stream(port, &basin, "prefer", None);
    create_stream(
        port,
        &basin,
        "require",
        Some(json!({ "timestamping": { "mode": "client-require" } })),
    );
    create_stream(
        port,
        &basin,
        "arrival",
        Some(json!({ "timestamping": { "mode": "arrival" } })),
    );
    create_stream(
        port,
        &basin,
        "uncapped",
        Some(json!({ "timestamping": { "mode": "client-prefer", "uncapped": true } })),
    );
    let timestamps = |stream: &str| -> Vec<u64> {
        read_records(port, &basin, stream, "seq_num=0")
            .iter()
            .map(|record| position(record).1)
            .collect()
    };

    // client-prefer: a past client timestamp is kept; a missing one is the arrival time;
    // a smaller one is raised to the running maximum.
    append_ok(
        port,
        &basin,
        "prefer",
        &json!({ "records": [{ "timestamp": 1_000_000 }] }),
    );
    let before = now_ms();
    append_ok(port, &basin, "prefer", &json!({ "records": [{}] }));
    let after = now_ms();
    append_ok(
        port,
        &basin,
        "prefer",
        &json!({ "records": [{ "timestamp": 5 }, { "timestamp": 7 }] }),
    );
    let future = now_ms() + 3_600_000;
    let before_capped = now_ms();
    append_ok(
        port,
        &basin,
        "prefer",
        &json!({ "records": [{ "timestamp": future }] }),
    );
    let after_capped = now_ms();
    let got = timestamps("prefer");
    assert_eq!(got.len(), 5);
    assert_eq!(got[0], 1_000_000);
    assert!(
        (before..=after).contains(&got[1]),
        "arrival {} outside [{before}, {after}]",
        got[1]
    );
    assert_eq!(
        got[2], got[1],
        "a smaller timestamp is raised to the previous one"
    );
    assert_eq!(got[3], got[1]);
    assert!(
        (before_capped..=after_capped).contains(&got[4]),
        "a future timestamp is capped to arrival: {} outside [{before_capped}, {after_capped}]",
        got[4]
    );

    // client-require: a missing timestamp fails the whole batch.
    let message = assert_error(
        &append_json(
            port,
            &basin,
            "require",
            &[],
            &json!({ "records": [{ "timestamp": 10 }, {}] }),
        ),
        422,
        "invalid",
    );
    assert!(
        message.contains("record timestamp was required but was missing"),
        "{message}"
    );
    assert_eq!(check_tail(port, &basin, "require"), (0, 0));
    append_ok(
        port,
        &basin,
        "require",
        &json!({ "records": [{ "timestamp": 10 }, { "timestamp": 20 }] }),
    );
    assert_eq!(timestamps("require"), vec![10, 20]);

    // arrival: client timestamps are ignored.
    let before = now_ms();
    append_ok(
        port,
        &basin,
        "arrival",
        &json!({ "records": [{ "timestamp": 1_000_000 }, {}] }),
    );
    let after = now_ms();
    let got = timestamps("arrival");
    assert_eq!(got.len(), 2);
    for ts in got {
        assert!(
            (before..=after).contains(&ts),
            "arrival {ts} outside [{before}, {after}]"
        );
    }

    // uncapped: a future timestamp is kept, and later arrivals are raised to it.
    let future = now_ms() + 3_600_000;
    append_ok(
        port,
        &basin,
        "uncapped",
        &json!({ "records": [{ "timestamp": future }] }),
    );
    append_ok(port, &basin, "uncapped", &json!({ "records": [{}] }));
    assert_eq!(timestamps("uncapped"), vec![future, future]);
    assert_eq!(check_tail(port, &basin, "uncapped"), (2, future));
}

// B-143 B-144
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_record_formats() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-format", "x");
    let record = json!({ "records": [{ "headers": [["aGRy", "AAE="]], "body": "aGVsbG8=" }] });

    for format in ["base64", "json-binsafe", " base64 "] {
        append_json(port, &basin, "x", &[("S2-Format", format)], &record).expect_status(200);
    }
    for format in ["raw", "json"] {
        append_json(port, &basin, "x", &[("S2-Format", format)], &record).expect_status(200);
    }
    let records = read_records(port, &basin, "x", "seq_num=0");
    assert_eq!(records.len(), 5);
    for decoded in &records[..3] {
        assert_eq!(decoded["body"], "hello");
        assert_eq!(decoded["headers"], json!([["hdr", "\u{0}\u{1}"]]));
    }
    for literal in &records[3..] {
        assert_eq!(literal["body"], "aGVsbG8=");
        assert_eq!(literal["headers"], json!([["aGRy", "AAE="]]));
    }

    let message = assert_error(
        &append_json(
            port,
            &basin,
            "x",
            &[("S2-Format", "base64")],
            &json!({ "records": [{ "body": "!!!not base64" }] }),
        ),
        422,
        "invalid",
    );
    assert!(message.contains("invalid Base64 encoding"), "{message}");
    assert_error(
        &append_json(port, &basin, "x", &[("S2-Format", "xml")], &record),
        400,
        "bad_header",
    );
    assert_eq!(check_tail(port, &basin, "x").0, 5);
}

// B-145
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_to_missing_stream_or_basin() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "dp-missing", json!({}));
    assert_error(
        &append_json(port, &basin, "nowhere", &[], &bodies(&["x"])),
        404,
        "stream_not_found",
    );
    let response = http(
        port,
        "POST",
        &records_path("nowhere", ""),
        &[
            ("S2-Basin", basin.as_str()),
            ("Content-Type", PROTOBUF),
            ("Accept", PROTOBUF),
        ],
        &proto::input(&["x"]).encode_to_vec(),
    );
    assert_error(&response, 404, "stream_not_found");
    let missing = unique_basin("dp-nobasin");
    assert_error(
        &append_json(port, &missing, "s", &[], &bodies(&["x"])),
        404,
        "basin_not_found",
    );
}

// B-146 B-147 B-148
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_create_on_append() {
    let server = start();
    let port = server.port();
    let basin = create_basin(
        port,
        "dp-auto",
        json!({
            "create_stream_on_append": true,
            "default_stream_config": { "retention_policy": { "age": 7200 } }
        }),
    );
    let config_of = |stream: &str| {
        let response = http(
            port,
            "GET",
            &stream_path(stream),
            &[("S2-Basin", basin.as_str())],
            b"",
        );
        response.expect_status(200);
        response.json()
    };

    let ack = append_ok(port, &basin, "plain", &bodies(&["x"]));
    assert_eq!(position(&ack["start"]).0, 0);
    assert_eq!(
        config_of("plain")["retention_policy"],
        json!({ "age": 7200 })
    );

    let header =
        json!({ "retention_policy": { "age": 3600 }, "delete_on_empty": { "min_age_secs": 300 } })
            .to_string();
    let response = append_json(
        port,
        &basin,
        "configured",
        &[("S2-Stream-Config", header.as_str())],
        &bodies(&["x", "y"]),
    );
    response.expect_status(200);
    assert_eq!(position(&response.json()["end"]).0, 2);
    let config = config_of("configured");
    assert_eq!(config["retention_policy"], json!({ "age": 3600 }));
    assert_eq!(config["delete_on_empty"], json!({ "min_age_secs": 300 }));
    assert_eq!(config["storage_class"], "express");
    assert_eq!(
        config["timestamping"],
        json!({ "mode": "client-prefer", "uncapped": false })
    );

    // Ignored once the stream exists.
    let other = json!({ "retention_policy": { "age": 60 } }).to_string();
    append_json(
        port,
        &basin,
        "configured",
        &[("S2-Stream-Config", other.as_str())],
        &bodies(&["z"]),
    )
    .expect_status(200);
    assert_eq!(
        config_of("configured")["retention_policy"],
        json!({ "age": 3600 })
    );
    assert_eq!(check_tail(port, &basin, "configured").0, 3);

    // Invalid headers fail before anything is created.
    for (stream, value, needle) in [
        ("bad-json", "{nope", "invalid json"),
        ("bad-age", r#"{"retention_policy":{"age":0}}"#, "age"),
    ] {
        let message = assert_error(
            &append_json(
                port,
                &basin,
                stream,
                &[("S2-Stream-Config", value)],
                &bodies(&["x"]),
            ),
            400,
            "bad_header",
        );
        let lower = message.to_ascii_lowercase();
        assert!(lower.contains("s2-stream-config"), "{message}");
        assert!(lower.contains(needle), "{message}");
        let response = http(
            port,
            "GET",
            &stream_path(stream),
            &[("S2-Basin", basin.as_str())],
            b"",
        );
        assert_error(&response, 404, "stream_not_found");
    }

    // An explicitly created stream ignores the header too.
    create_stream(port, &basin, "explicit", None);
    append_json(
        port,
        &basin,
        "explicit",
        &[("S2-Stream-Config", header.as_str())],
        &bodies(&["x"]),
    )
    .expect_status(200);
    assert_eq!(
        config_of("explicit")["retention_policy"],
        json!({ "age": 7200 })
    );
}

// B-149
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_disjoint_contiguous_ranges() {
    const WRITERS: usize = 8;
    const BATCHES: usize = 8;
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-concurrent", "c");
    let s2 = server.sdk();
    let stream: S2Stream = s2.basin(basin_name(&basin)).stream(stream_name("c"));

    let size = |writer: usize, batch: usize| 1 + (writer * 3 + batch) % 5;
    let body = |writer: usize, batch: usize, i: usize| format!("w{writer}-b{batch}-r{i}");
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for batch in 0..BATCHES {
                let records = (0..size(writer, batch))
                    .map(|i| AppendRecord::new(body(writer, batch, i)).expect("record"))
                    .collect();
                let ack = stream
                    .append(sdk_batch(records))
                    .await
                    .unwrap_or_else(|err| panic!("writer {writer} batch {batch}: {err}"));
                acks.push((writer, batch, ack));
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for task in tasks {
        acks.extend(task.await.expect("writer task"));
    }
    acks.sort_by_key(|(_, _, ack)| ack.start.seq_num);

    let mut next = 0u64;
    let mut expected = Vec::new();
    for (writer, batch, ack) in &acks {
        let n = size(*writer, *batch) as u64;
        assert_eq!(
            ack.start.seq_num, next,
            "ranges must be contiguous and disjoint"
        );
        assert_eq!(ack.end.seq_num, next + n);
        assert!(
            ack.tail.seq_num >= ack.end.seq_num,
            "ack tail behind its end: {ack:?}"
        );
        next += n;
        for i in 0..n as usize {
            expected.push(body(*writer, *batch, i));
        }
    }
    assert_eq!(check_tail(port, &basin, "c").0, next);
    let records = read_records(port, &basin, "c", "seq_num=0");
    let got: Vec<&str> = records
        .iter()
        .map(|r| r["body"].as_str().unwrap())
        .collect();
    assert_eq!(got, expected.iter().map(String::as_str).collect::<Vec<_>>());
}
