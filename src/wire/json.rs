//! The JSON encoding of records (WIRE §3.1, API §5.2–§5.3): append inputs in, read batches,
//! acks and tails out, with record bytes carried as strings per the `S2-Format` header.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use sluice_shards::records::{
    AppendAck, AppendBatch, AppendRecord, FencingToken, Header, Position, ReadBatch,
    SequencedRecord,
};

/// How record bytes (header names, header values, bodies) are carried in JSON strings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// Incoming strings are stored as their UTF-8 bytes; outgoing bytes are rendered as
    /// UTF-8 with invalid sequences replaced, so binary data is not preserved.
    #[default]
    Raw,
    /// Standard base64 alphabet with `=` padding, in both directions.
    Base64,
}

impl Format {
    /// Parse the `S2-Format` header. An absent header means `raw`.
    ///
    /// The error is the offending value itself, which is what the reference reports; the
    /// caller wraps it as ``Invalid header `s2-format`: <value>`` (400 `bad_header`).
    pub fn from_header(value: Option<&str>) -> Result<Format, String> {
        let Some(value) = value else {
            return Ok(Format::Raw);
        };
        match value.trim() {
            "raw" | "json" => Ok(Format::Raw),
            "base64" | "json-binsafe" => Ok(Format::Base64),
            _ => Err(value.to_owned()),
        }
    }

    fn decode(self, text: String) -> Result<Bytes, JsonError> {
        match self {
            Format::Raw => Ok(Bytes::from(text.into_bytes())),
            Format::Base64 => STANDARD
                .decode(text.as_bytes())
                .map(Bytes::from)
                .map_err(|_| JsonError::Invalid("invalid Base64 encoding".to_owned())),
        }
    }

    fn encode(self, bytes: &[u8]) -> String {
        match self {
            Format::Raw => String::from_utf8_lossy(bytes).into_owned(),
            Format::Base64 => STANDARD.encode(bytes),
        }
    }
}

/// Why a JSON append body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Syntax, type or shape error, or a fencing token over 36 bytes: 400 `bad_json`.
    #[error("{0}")]
    BadJson(String),
    /// Well-formed but invalid: bad base64, or a record/batch rule: 422 `invalid`.
    #[error("{0}")]
    Invalid(String),
}

// Struct names are renamed to the reference's so serde's "expected ..." texts read the same.

#[derive(Deserialize)]
#[serde(rename = "AppendInput")]
struct AppendInputJson {
    records: Vec<AppendRecordJson>,
    #[serde(default)]
    match_seq_num: Option<u64>,
    #[serde(default, deserialize_with = "fencing_token")]
    fencing_token: Option<FencingToken>,
}

#[derive(Deserialize)]
#[serde(rename = "AppendRecord")]
struct AppendRecordJson {
    #[serde(default)]
    timestamp: Option<u64>,
    #[serde(default)]
    headers: Vec<HeaderJson>,
    #[serde(default)]
    body: String,
}

#[derive(Deserialize)]
#[serde(rename = "Header")]
struct HeaderJson(String, String);

/// The token length is a shape error in JSON (400), so it is checked while deserializing,
/// which also gives the message serde_json's line and column suffix.
fn fencing_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FencingToken>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(token) => FencingToken::new(token)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

impl AppendRecordJson {
    fn decode(self, format: Format) -> Result<AppendRecord, JsonError> {
        let headers = self
            .headers
            .into_iter()
            .map(|HeaderJson(name, value)| -> Result<Header, JsonError> {
                Ok(Header {
                    name: format.decode(name)?,
                    value: format.decode(value)?,
                })
            })
            .collect::<Result<Vec<_>, JsonError>>()?;
        Ok(AppendRecord {
            timestamp: self.timestamp,
            headers,
            body: format.decode(self.body)?,
        })
    }
}

/// Parse and validate a JSON `AppendInput` body.
///
/// Every record's strings are decoded before batch rules are applied, so bad base64 anywhere
/// is reported ahead of, say, an over-long batch, as the reference does.
pub fn parse_append_input(body: &[u8], format: Format) -> Result<AppendBatch, JsonError> {
    let input: AppendInputJson =
        serde_json::from_slice(body).map_err(|e| JsonError::BadJson(e.to_string()))?;
    let records = input
        .records
        .into_iter()
        .map(|r| r.decode(format))
        .collect::<Result<Vec<_>, _>>()?;
    AppendBatch::new(records, input.match_seq_num, input.fencing_token)
        .map_err(|e| JsonError::Invalid(e.0))
}

/// `{"seq_num": .., "timestamp": ..}`.
pub fn position_json(position: Position) -> Value {
    let mut object = Map::new();
    object.insert("seq_num".to_owned(), Value::from(position.seq_num));
    object.insert("timestamp".to_owned(), Value::from(position.timestamp));
    Value::Object(object)
}

/// The check-tail response and the 416 error body: `{"tail": {"seq_num", "timestamp"}}`.
pub fn tail_json(tail: Position) -> Value {
    let mut object = Map::new();
    object.insert("tail".to_owned(), position_json(tail));
    Value::Object(object)
}

/// An append acknowledgement: `{"start": .., "end": .., "tail": ..}`.
pub fn append_ack_json(ack: &AppendAck) -> Value {
    let mut object = Map::new();
    object.insert("start".to_owned(), position_json(ack.start));
    object.insert("end".to_owned(), position_json(ack.end));
    object.insert("tail".to_owned(), position_json(ack.tail));
    Value::Object(object)
}

/// A read batch: `{"records": [..], "tail"?: ..}`, with `tail` omitted when unknown.
///
/// Command records need no special case: they are stored with their single `["", op]`
/// header and their payload as body, which is exactly how they are rendered.
pub fn read_batch_json(batch: &ReadBatch, format: Format) -> Value {
    let records = batch
        .records
        .iter()
        .map(|r| record_json(r, format))
        .collect();
    let mut object = Map::new();
    object.insert("records".to_owned(), Value::Array(records));
    if let Some(tail) = batch.tail {
        object.insert("tail".to_owned(), position_json(tail));
    }
    Value::Object(object)
}

fn record_json(record: &SequencedRecord, format: Format) -> Value {
    let mut object = Map::new();
    object.insert("seq_num".to_owned(), Value::from(record.seq_num));
    object.insert("timestamp".to_owned(), Value::from(record.timestamp));
    if !record.headers.is_empty() {
        let headers = record
            .headers
            .iter()
            .map(|h| {
                Value::Array(vec![
                    Value::String(format.encode(&h.name)),
                    Value::String(format.encode(&h.value)),
                ])
            })
            .collect();
        object.insert("headers".to_owned(), Value::Array(headers));
    }
    if !record.body.is_empty() {
        object.insert(
            "body".to_owned(),
            Value::String(format.encode(&record.body)),
        );
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sluice_shards::records::Command;

    use super::*;

    fn parse(body: &str, format: Format) -> Result<AppendBatch, JsonError> {
        parse_append_input(body.as_bytes(), format)
    }

    fn invalid_base64() -> Result<AppendBatch, JsonError> {
        Err(JsonError::Invalid("invalid Base64 encoding".into()))
    }

    fn seq(seq_num: u64, timestamp: u64, headers: &[(&str, &str)], body: &[u8]) -> SequencedRecord {
        SequencedRecord {
            seq_num,
            timestamp,
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: Bytes::copy_from_slice(n.as_bytes()),
                    value: Bytes::copy_from_slice(v.as_bytes()),
                })
                .collect(),
            body: Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn format_header() {
        assert_eq!(Format::from_header(None), Ok(Format::Raw));
        assert_eq!(Format::from_header(Some("raw")), Ok(Format::Raw));
        assert_eq!(Format::from_header(Some(" json ")), Ok(Format::Raw));
        assert_eq!(Format::from_header(Some("base64")), Ok(Format::Base64));
        assert_eq!(
            Format::from_header(Some("json-binsafe\t")),
            Ok(Format::Base64)
        );
        assert_eq!(
            Format::from_header(Some("BASE64")),
            Err("BASE64".to_owned())
        );
        assert_eq!(Format::from_header(Some("")), Err(String::new()));
    }

    #[test]
    fn parse_raw() {
        let batch = parse(
            r#"{"records":[{"timestamp":5,"headers":[["k","v"]],"body":"hé"},{},
                {"timestamp":null,"body":""}],
               "match_seq_num":3,"fencing_token":"tok","unknown":[1,2]}"#,
            Format::Raw,
        )
        .unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.match_seq_num, Some(3));
        assert_eq!(
            batch.fencing_token.as_ref().map(|t| t.as_str()),
            Some("tok")
        );
        let first = &batch.records()[0];
        assert_eq!(first.timestamp, Some(5));
        assert_eq!(&first.headers[0].name[..], b"k");
        assert_eq!(&first.headers[0].value[..], b"v");
        assert_eq!(&first.body[..], "hé".as_bytes());
        let second = &batch.records()[1];
        assert_eq!(second.timestamp, None);
        assert!(second.headers.is_empty() && second.body.is_empty());
        assert_eq!(batch.records()[2].timestamp, None);
    }

    #[test]
    fn parse_nulls_for_optional_conditions() {
        let batch = parse(
            r#"{"records":[{}],"match_seq_num":null,"fencing_token":null}"#,
            Format::Raw,
        )
        .unwrap();
        assert_eq!(batch.match_seq_num, None);
        assert_eq!(batch.fencing_token, None);
    }

    #[test]
    fn parse_base64() {
        let batch = parse(
            r#"{"records":[{"headers":[["aw==","dg=="]],"body":"/wA="},
                {"headers":[["","ZmVuY2U="]],"body":"dG9r"}]}"#,
            Format::Base64,
        )
        .unwrap();
        let first = &batch.records()[0];
        assert_eq!(&first.headers[0].name[..], b"k");
        assert_eq!(&first.headers[0].value[..], b"v");
        assert_eq!(&first.body[..], &[0xff, 0x00]);
        assert_eq!(
            batch.records()[1].command(),
            Some(Command::Fence(FencingToken::new("tok".into()).unwrap()))
        );
    }

    #[test]
    fn invalid_base64_is_invalid() {
        let b64 = Format::Base64;
        assert_eq!(
            parse(r#"{"records":[{"body":"aGk"}]}"#, b64),
            invalid_base64()
        );
        assert_eq!(
            parse(r#"{"records":[{"body":"a b="}]}"#, b64),
            invalid_base64()
        );
        assert_eq!(
            parse(r#"{"records":[{"headers":[["!!","dg=="]]}]}"#, b64),
            invalid_base64()
        );
        assert_eq!(
            parse(r#"{"records":[{"headers":[["aw==","dg"]]}]}"#, b64),
            invalid_base64()
        );
        // The same strings are fine as raw text.
        assert!(parse(r#"{"records":[{"body":"aGk"}]}"#, Format::Raw).is_ok());
    }

    #[test]
    fn fencing_token_length_is_bad_json() {
        let ok = format!(
            r#"{{"records":[{{}}],"fencing_token":"{}"}}"#,
            "a".repeat(36)
        );
        assert!(parse(&ok, Format::Raw).is_ok());
        let long = format!(
            r#"{{"records":[{{}}],"fencing_token":"{}"}}"#,
            "a".repeat(37)
        );
        match parse(&long, Format::Raw) {
            Err(JsonError::BadJson(m)) => assert!(m.contains("36 bytes"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn shape_errors_are_bad_json() {
        for body in [
            "",
            "{",
            "[]",
            "{}",
            r#"{"records":{}}"#,
            r#"{"records":[{"timestamp":-1}]}"#,
            r#"{"records":[{"body":5}]}"#,
            r#"{"records":[{"body":null}]}"#,
            r#"{"records":[{"headers":[["k"]]}]}"#,
            r#"{"records":[{"headers":[["k","v","w"]]}]}"#,
            r#"{"records":[],"match_seq_num":"1"}"#,
            r#"{"records":[]} x"#,
        ] {
            assert!(
                matches!(parse(body, Format::Raw), Err(JsonError::BadJson(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn batch_rules_are_invalid() {
        assert_eq!(
            parse(r#"{"records":[]}"#, Format::Raw),
            Err(JsonError::Invalid("record batch must not be empty".into()))
        );
        assert_eq!(
            parse(r#"{"records":[{"headers":[["","nope"]]}]}"#, Format::Raw),
            Err(JsonError::Invalid("unknown command".into()))
        );
    }

    #[test]
    fn renders_read_batch() {
        let batch = ReadBatch {
            records: vec![
                seq(0, 10, &[("k", "v")], b"hello"),
                seq(1, 11, &[], b""),
                seq(2, 12, &[], &[0xff, b'a']),
            ],
            tail: Some(Position {
                seq_num: 3,
                timestamp: 12,
            }),
        };
        assert_eq!(
            read_batch_json(&batch, Format::Raw),
            json!({"records": [
                {"seq_num": 0, "timestamp": 10, "headers": [["k", "v"]], "body": "hello"},
                {"seq_num": 1, "timestamp": 11},
                {"seq_num": 2, "timestamp": 12, "body": "\u{FFFD}a"},
            ], "tail": {"seq_num": 3, "timestamp": 12}})
        );
        assert_eq!(
            read_batch_json(&batch, Format::Base64),
            json!({"records": [
                {"seq_num": 0, "timestamp": 10, "headers": [["aw==", "dg=="]], "body": "aGVsbG8="},
                {"seq_num": 1, "timestamp": 11},
                {"seq_num": 2, "timestamp": 12, "body": "/2E="},
            ], "tail": {"seq_num": 3, "timestamp": 12}})
        );
    }

    #[test]
    fn renders_command_records() {
        let batch = ReadBatch {
            records: vec![
                seq(7, 1, &[("", "fence")], b""),
                seq(8, 1, &[("", "fence")], b"tok"),
                seq(9, 1, &[("", "trim")], &42u64.to_be_bytes()),
            ],
            tail: None,
        };
        assert_eq!(
            read_batch_json(&batch, Format::Base64),
            json!({"records": [
                {"seq_num": 7, "timestamp": 1, "headers": [["", "ZmVuY2U="]]},
                {"seq_num": 8, "timestamp": 1, "headers": [["", "ZmVuY2U="]], "body": "dG9r"},
                {"seq_num": 9, "timestamp": 1, "headers": [["", "dHJpbQ=="]], "body": "AAAAAAAAACo="},
            ]})
        );
        let raw = read_batch_json(&batch, Format::Raw);
        assert_eq!(
            raw["records"][0],
            json!({"seq_num": 7, "timestamp": 1, "headers": [["", "fence"]]})
        );
        assert!(raw.get("tail").is_none());
    }

    #[test]
    fn renders_positions() {
        let p = |seq_num, timestamp| Position { seq_num, timestamp };
        assert_eq!(
            append_ack_json(&AppendAck {
                start: p(10, 1_700_000_000_000),
                end: p(12, 1_700_000_000_001),
                tail: p(12, 1_700_000_000_001),
            }),
            json!({
                "start": {"seq_num": 10, "timestamp": 1_700_000_000_000u64},
                "end": {"seq_num": 12, "timestamp": 1_700_000_000_001u64},
                "tail": {"seq_num": 12, "timestamp": 1_700_000_000_001u64},
            })
        );
        assert_eq!(
            tail_json(p(0, 0)),
            json!({"tail": {"seq_num": 0, "timestamp": 0}})
        );
        assert_eq!(
            position_json(p(u64::MAX, 1)).to_string(),
            format!(r#"{{"seq_num":{},"timestamp":1}}"#, u64::MAX)
        );
    }
}
