//! Query strings and S2 headers: the bytes before the first newline are a query string,
//! each later line a `name: value` header. Every query a route parses and every header
//! parser gets them; none may panic or allocate out of proportion, and a `Last-Event-ID`
//! that parses prints back to the same id.

use http::{HeaderMap, HeaderName, HeaderValue};
use sluice::api::inputs::{
    accepts_event_stream, accepts_protobuf, basin, content_is_json, content_is_protobuf,
    encryption_key, format, is_s2s, query, request_token, stream_config_header, text, AccountSet,
    BasinSet, Coding, ListQuery, MetricsQuery, Range, ReadQuery, StreamSet,
};
use sluice::wire::sse::LastEventId;

use crate::alloc_meter::bounded;

fn headers(lines: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        // What hyper would hand the API: names and values it accepts, values trimmed.
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    map
}

fn metrics<S: serde::de::DeserializeOwned>(q: Option<&str>) {
    if let Ok(m) = query::<MetricsQuery<S>>(q) {
        let _ = Range::parse(m.start, m.end, 1_800_000_000);
    }
}

pub fn run(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let raw_query = String::from_utf8_lossy(&data[..split]);
    let q = Some(raw_query.as_ref());
    let map = headers(data.get(split + 1..).unwrap_or_default());
    let bound = 64 * data.len() + (64 << 10);
    bounded("parsing query strings and headers", bound, || {
        if let Ok(read) = query::<ReadQuery>(q) {
            let _ = read.start();
        }
        let _ = query::<ListQuery>(q);
        metrics::<AccountSet>(q);
        metrics::<BasinSet>(q);
        metrics::<StreamSet>(q);
        let _ = basin(&map);
        let _ = request_token(&map);
        let _ = format(&map);
        let _ = encryption_key(&map);
        let _ = stream_config_header(&map);
        let _ = Coding::accepted(&map);
        let _ = (
            is_s2s(&map),
            accepts_protobuf(&map),
            accepts_event_stream(&map),
            content_is_protobuf(&map),
            content_is_json(&map),
        );
    });
    if let Ok(Some(value)) = text(&map, "last-event-id") {
        if let Ok(id) = LastEventId::parse(value) {
            assert_eq!(LastEventId::parse(&id.to_string()), Ok(id));
        }
    }
}
