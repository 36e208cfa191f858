//! Server-sent events of an SSE read session (WIRE §4): the event builders and the
//! `Last-Event-ID` resumption token.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use sluice_shards::records::Position;

/// The id of a `batch` event: the seq_num of the batch's last record, and the record count
/// and metered bytes delivered so far over the whole logical read (earlier connections
/// included). Sent back by clients as `Last-Event-ID` to resume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastEventId {
    /// Seq_num of the last record delivered.
    pub seq_num: u64,
    /// Records delivered so far.
    pub count: u64,
    /// Metered bytes delivered so far.
    pub bytes: u64,
}

impl LastEventId {
    /// Parse `<seq_num>,<count>,<bytes>`. The error text becomes the reason of a 400
    /// `bad_header`.
    ///
    /// The value is split into at most three parts, so a fourth field makes the third fail
    /// to parse rather than being silently dropped.
    pub fn parse(value: &str) -> Result<LastEventId, String> {
        let mut parts = value.trim().splitn(3, ',');
        let mut next = |field: &str| -> Result<u64, String> {
            let part = parts
                .next()
                .ok_or_else(|| format!("missing {field} in Last-Event-ID"))?;
            part.parse::<u64>()
                .map_err(|e| format!("invalid {field} in Last-Event-ID: {e}"))
        };
        let seq_num = next("seq_num")?;
        let count = next("count")?;
        let bytes = next("bytes")?;
        Ok(LastEventId {
            seq_num,
            count,
            bytes,
        })
    }
}

impl FromStr for LastEventId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LastEventId::parse(s)
    }
}

impl fmt::Display for LastEventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}", self.seq_num, self.count, self.bytes)
    }
}

/// `event: batch` carrying a ReadBatch JSON document and its resumption id.
pub fn batch_event(id: &LastEventId, data_json: &str) -> Bytes {
    let mut out = String::with_capacity(data_json.len() + 64);
    out.push_str("event: batch\nid: ");
    out.push_str(&id.to_string());
    out.push('\n');
    push_data(&mut out, data_json);
    out.push('\n');
    Bytes::from(out)
}

/// `event: ping` heartbeat with the server's clock (Unix ms) and the stream tail.
pub fn ping_event(timestamp_ms: u64, tail: Position) -> Bytes {
    Bytes::from(format!(
        "event: ping\ndata: {{\"timestamp\":{timestamp_ms},\"tail\":{{\"seq_num\":{},\"timestamp\":{}}}}}\n\n",
        tail.seq_num, tail.timestamp
    ))
}

/// `event: error` carrying the same JSON body a unary request would have received. The
/// stream ends after it, with no `[DONE]`.
pub fn error_event(data_json: &str) -> Bytes {
    let mut out = String::with_capacity(data_json.len() + 32);
    out.push_str("event: error\n");
    push_data(&mut out, data_json);
    out.push('\n');
    Bytes::from(out)
}

/// The `data: [DONE]` event (no `event:` line) that ends a session normally.
pub fn done_event() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// Append `data:` lines for `data`. Compact JSON is a single line, but a line break inside
/// a `data:` field would end the field early and corrupt the event, so any CR, LF or CRLF is
/// turned into a field continuation, which the client joins back with `\n`.
fn push_data(out: &mut String, data: &str) {
    let mut rest = data;
    loop {
        match rest.find(['\r', '\n']) {
            None => {
                push_line(out, rest);
                return;
            }
            Some(i) => {
                push_line(out, &rest[..i]);
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
        }
    }
}

fn push_line(out: &mut String, line: &str) {
    out.push_str("data: ");
    out.push_str(line);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn last_event_id_parses_and_renders() {
        let id = LastEventId::parse("5,10,1234").unwrap();
        assert_eq!(
            id,
            LastEventId {
                seq_num: 5,
                count: 10,
                bytes: 1234
            }
        );
        assert_eq!(id.to_string(), "5,10,1234");
        assert_eq!(LastEventId::parse(" 5,10,1234\t"), Ok(id));
        assert_eq!("0,0,0".parse::<LastEventId>(), Ok(LastEventId::default()));
        let max = format!("{0},{0},{0}", u64::MAX);
        assert_eq!(LastEventId::parse(&max).unwrap().to_string(), max);
    }

    #[test]
    fn last_event_id_rejects_malformed() {
        for bad in [
            "", "5", "5,10", "5,10,", "5,,1", "a,1,2", "1,2,3,4", "-1,2,3", "1, 2,3", "1,2,3.0",
        ] {
            assert!(LastEventId::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            LastEventId::parse("5,10").unwrap_err(),
            "missing bytes in Last-Event-ID"
        );
        assert!(LastEventId::parse("x,1,2")
            .unwrap_err()
            .starts_with("invalid seq_num in Last-Event-ID: "));
    }

    #[test]
    fn batch_event_layout() {
        let id = LastEventId {
            seq_num: 4,
            count: 5,
            bytes: 60,
        };
        assert_eq!(
            text(batch_event(&id, r#"{"records":[]}"#)),
            "event: batch\nid: 4,5,60\ndata: {\"records\":[]}\n\n"
        );
    }

    #[test]
    fn ping_event_layout() {
        let tail = Position {
            seq_num: 7,
            timestamp: 99,
        };
        let event = text(ping_event(1_700_000_000_000, tail));
        assert_eq!(
            event,
            "event: ping\ndata: {\"timestamp\":1700000000000,\"tail\":{\"seq_num\":7,\"timestamp\":99}}\n\n"
        );
        let data = event
            .strip_prefix("event: ping\ndata: ")
            .and_then(|s| s.strip_suffix("\n\n"))
            .unwrap();
        let value: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(value["tail"]["seq_num"], 7);
    }

    #[test]
    fn error_and_done_layout() {
        assert_eq!(
            text(error_event(r#"{"code":"storage","message":"x"}"#)),
            "event: error\ndata: {\"code\":\"storage\",\"message\":\"x\"}\n\n"
        );
        assert_eq!(text(done_event()), "data: [DONE]\n\n");
    }

    #[test]
    fn line_breaks_become_continuation_lines() {
        assert_eq!(
            text(error_event("{\n\"a\":1\r\n}\rx")),
            "event: error\ndata: {\ndata: \"a\":1\ndata: }\ndata: x\n\n"
        );
        assert_eq!(text(error_event("")), "event: error\ndata: \n\n");
    }
}
