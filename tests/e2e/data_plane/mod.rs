//! Data-plane tests: appends, reads, SSE, S2S sessions and crash recovery (API.md §5,
//! SEMANTICS.md, WIRE.md).
//!
//! Shared here: basin/stream setup over raw HTTP, JSON append/read helpers, an HTTP/1.1
//! response reader that hands out a streaming body piece by piece (for SSE events and S2S
//! frames), and S2S frame encoding.

mod append;
mod crash;
mod fanout;
mod faulty_store;
mod fencing;
pub mod proto;
mod read;
mod sessions;
mod sse;
mod wal;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::num::NonZeroU32;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;
use s2_sdk::types::{RetryConfig, S2Config, S2Endpoints};
use s2_sdk::S2;
use serde_json::{json, Value};

use crate::harness::{
    connect, encode, http, http_json, unique_basin, Response, Server, HTTP_TIMEOUT,
};

/// The default server for data-plane tests.
pub fn start() -> Server {
    Server::start(&["--shards", "2"])
}

/// Milliseconds since the Unix epoch, as the server's arrival timestamps are.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after the epoch")
        .as_millis() as u64
}

/// An SDK client that never retries, so every acknowledged or failed call happened once.
pub fn sdk_no_retry(endpoint: &str) -> S2 {
    let endpoints = S2Endpoints::for_endpoint(endpoint)
        .unwrap_or_else(|err| panic!("invalid endpoint {endpoint}: {err}"));
    let retry = RetryConfig::new().with_max_attempts(NonZeroU32::new(1).expect("non-zero"));
    let config = S2Config::new("e2e-ignored-token")
        .with_endpoints(endpoints)
        .with_request_timeout(Duration::from_secs(10))
        .with_retry(retry);
    S2::new(config).unwrap_or_else(|err| panic!("cannot build the SDK client: {err}"))
}

// ---------------------------------------------------------------------------------------
// Setup over raw HTTP
// ---------------------------------------------------------------------------------------

/// Creates a basin with this config (JSON BasinConfig) and returns its name.
pub fn create_basin(port: u16, prefix: &str, config: Value) -> String {
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

/// Creates a stream with an optional config (JSON StreamConfig).
pub fn create_stream(port: u16, basin: &str, stream: &str, config: Option<Value>) {
    let body = match config {
        Some(config) => json!({ "stream": stream, "config": config }),
        None => json!({ "stream": stream }),
    };
    http_json(port, "POST", "/v1/streams", &[("S2-Basin", basin)], &body).expect_status(201);
}

/// A fresh basin with default config holding one stream with default config.
pub fn basin_with_stream(port: u16, prefix: &str, stream: &str) -> String {
    let basin = create_basin(port, prefix, json!({}));
    create_stream(port, &basin, stream, None);
    basin
}

pub fn stream_path(stream: &str) -> String {
    format!("/v1/streams/{}", encode(stream))
}

/// `/v1/streams/{stream}/records`, with `?query` when the query is not empty.
pub fn records_path(stream: &str, query: &str) -> String {
    if query.is_empty() {
        format!("{}/records", stream_path(stream))
    } else {
        format!("{}/records?{query}", stream_path(stream))
    }
}

// ---------------------------------------------------------------------------------------
// JSON appends and reads
// ---------------------------------------------------------------------------------------

/// A JSON AppendInput whose records have only these bodies.
pub fn bodies(bodies: &[&str]) -> Value {
    let records: Vec<Value> = bodies.iter().map(|body| json!({ "body": body })).collect();
    json!({ "records": records })
}

/// A JSON append with extra headers (after `S2-Basin` and the JSON content type).
pub fn append_json(
    port: u16,
    basin: &str,
    stream: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Response {
    let mut all_headers = vec![("S2-Basin", basin)];
    all_headers.extend_from_slice(headers);
    http_json(port, "POST", &records_path(stream, ""), &all_headers, body)
}

/// A JSON append that must succeed; returns the AppendAck.
pub fn append_ok(port: u16, basin: &str, stream: &str, body: &Value) -> Value {
    let response = append_json(port, basin, stream, &[], body);
    response.expect_status(200);
    response.json()
}

/// `(seq_num, timestamp)` of a JSON StreamPosition.
pub fn position(value: &Value) -> (u64, u64) {
    let seq_num = value["seq_num"]
        .as_u64()
        .unwrap_or_else(|| panic!("seq_num is not a u64 in {value}"));
    let timestamp = value["timestamp"]
        .as_u64()
        .unwrap_or_else(|| panic!("timestamp is not a u64 in {value}"));
    (seq_num, timestamp)
}

/// A unary read with extra headers (after `S2-Basin`).
pub fn read_raw(
    port: u16,
    basin: &str,
    stream: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut all_headers = vec![("S2-Basin", basin)];
    all_headers.extend_from_slice(headers);
    http(port, "GET", &records_path(stream, query), &all_headers, b"")
}

/// A unary JSON read that must succeed; returns the ReadBatch.
pub fn read_batch(port: u16, basin: &str, stream: &str, query: &str) -> Value {
    let response = read_raw(port, basin, stream, query, &[]);
    response.expect_status(200);
    response.json()
}

/// The records of a successful unary JSON read.
pub fn read_records(port: u16, basin: &str, stream: &str, query: &str) -> Vec<Value> {
    let batch = read_batch(port, basin, stream, query);
    batch["records"]
        .as_array()
        .unwrap_or_else(|| panic!("records is not an array in {batch}"))
        .clone()
}

/// The seq_nums of JSON records.
pub fn seq_nums(records: &[Value]) -> Vec<u64> {
    records.iter().map(|record| position(record).0).collect()
}

/// The tail from check-tail, which must succeed.
pub fn check_tail(port: u16, basin: &str, stream: &str) -> (u64, u64) {
    let response = http(
        port,
        "GET",
        &format!("{}/records/tail", stream_path(stream)),
        &[("S2-Basin", basin)],
        b"",
    );
    response.expect_status(200);
    let body = response.json();
    position(&body["tail"])
}

/// Metered size of a record (SEMANTICS §2).
pub fn metered(headers: &[(&[u8], &[u8])], body: &[u8]) -> usize {
    8 + 2 * headers.len()
        + headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum::<usize>()
        + body.len()
}

// ---------------------------------------------------------------------------------------
// Streaming HTTP/1.1 responses
// ---------------------------------------------------------------------------------------

/// What reading the next piece of a streaming body gave.
#[derive(Debug)]
pub enum Next<T> {
    Item(T),
    /// The body ended (or the connection did) with nothing more buffered.
    End,
    /// Nothing complete arrived before the timeout.
    TimedOut,
}

impl<T: std::fmt::Debug> Next<T> {
    pub fn expect_item(self, what: &str) -> T {
        match self {
            Next::Item(item) => item,
            other => panic!("expected {what}, got {other:?}"),
        }
    }
}

enum Framing {
    Chunked,
    Length(usize),
    UntilClose,
}

enum Fill {
    Data,
    Ended,
    TimedOut,
}

/// One server-sent event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    /// The `data: [DONE]` event that ends a session normally.
    pub fn is_done(&self) -> bool {
        self.event.is_none() && self.data == "[DONE]"
    }

    pub fn kind(&self) -> &str {
        self.event.as_deref().unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|err| panic!("SSE data is not JSON ({err}): {:?}", self.data))
    }
}

#[derive(Default)]
struct PendingEvent {
    event: Option<String>,
    id: Option<String>,
    data: Vec<String>,
    any_field: bool,
}

/// One S2S frame (WIRE §5.2).
#[derive(Debug, Clone)]
pub struct Frame {
    pub flags: u8,
    pub body: Vec<u8>,
}

impl Frame {
    pub fn is_terminal(&self) -> bool {
        self.flags & 0x80 != 0
    }

    /// The CC bits: 0 none, 1 zstd, 2 gzip.
    pub fn compression(&self) -> u8 {
        (self.flags >> 5) & 0b11
    }

    /// The protobuf payload of a regular frame, decompressed.
    pub fn payload(&self) -> Vec<u8> {
        assert!(
            !self.is_terminal(),
            "expected a regular frame, got a terminal one: {:?}",
            self
        );
        decompress(self.compression(), &self.body)
    }

    pub fn read_batch(&self) -> proto::ReadBatch {
        proto::ReadBatch::decode(self.payload().as_slice())
            .unwrap_or_else(|err| panic!("frame payload is not a ReadBatch: {err}"))
    }

    pub fn append_ack(&self) -> proto::AppendAck {
        proto::AppendAck::decode(self.payload().as_slice())
            .unwrap_or_else(|err| panic!("frame payload is not an AppendAck: {err}"))
    }

    /// The status and JSON body of a terminal frame.
    pub fn terminal(&self) -> (u16, Value) {
        assert!(
            self.is_terminal(),
            "expected a terminal frame, got flags {:#04x}",
            self.flags
        );
        assert_eq!(self.flags, 0x80, "a terminal frame has flags 0x80");
        assert!(self.body.len() >= 2, "terminal frame body too short");
        let status = u16::from_be_bytes([self.body[0], self.body[1]]);
        let json = serde_json::from_slice(&self.body[2..]).unwrap_or_else(|err| {
            panic!(
                "terminal frame body is not JSON ({err}): {:?}",
                String::from_utf8_lossy(&self.body[2..])
            )
        });
        (status, json)
    }
}

/// Decompresses a frame payload by its CC bits.
pub fn decompress(compression: u8, data: &[u8]) -> Vec<u8> {
    match compression {
        0 => data.to_vec(),
        1 => zstd::decode_all(data).expect("valid zstd frame payload"),
        2 => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .expect("valid gzip frame payload");
            out
        }
        other => panic!("invalid compression bits {other}"),
    }
}

pub fn zstd_compress(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 0).expect("zstd compression")
}

pub fn gzip_compress(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip write");
    encoder.finish().expect("gzip finish")
}

/// Encodes one frame: 3-byte big-endian length (flags + body), flags, body.
pub fn frame(flags: u8, body: &[u8]) -> Vec<u8> {
    let length = body.len() + 1;
    assert!(length < 1 << 24, "frame too long to encode");
    let mut out = vec![
        (length >> 16) as u8,
        (length >> 8) as u8,
        length as u8,
        flags,
    ];
    out.extend_from_slice(body);
    out
}

/// An uncompressed regular frame carrying this AppendInput.
pub fn input_frame(input: &proto::AppendInput) -> Vec<u8> {
    frame(0, &input.encode_to_vec())
}

/// An HTTP/1.1 response whose body is consumed incrementally.
pub struct StreamingResponse {
    socket: TcpStream,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    raw: Vec<u8>,
    body: Vec<u8>,
    framing: Framing,
    finished: bool,
    pending_event: PendingEvent,
}

impl StreamingResponse {
    /// Sends one request (with `Connection: close`, and `Content-Length` for POST or a
    /// body) and reads the status line and headers.
    pub fn open(
        port: u16,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> StreamingResponse {
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n")
                .into_bytes();
        for (name, value) in headers {
            request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if !body.is_empty() || method == "POST" {
            request.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);

        let mut socket = connect(port);
        // A server may answer and stop reading early; the answer is what matters.
        let _ = socket.write_all(&request);
        StreamingResponse::receive(socket, method, path)
    }

    /// Sends the head of a request whose body is chunked and written later by the caller
    /// through the returned socket (see [`write_chunk`]), and reads the response head.
    pub fn open_chunked(
        port: u16,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StreamingResponse, TcpStream) {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n"
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut socket = connect(port);
        socket
            .write_all(head.as_bytes())
            .expect("send the request head");
        let writer = socket.try_clone().expect("clone the socket");
        (StreamingResponse::receive(socket, method, path), writer)
    }

    /// Reads the status line and headers of the response to a request already sent.
    fn receive(mut socket: TcpStream, method: &str, path: &str) -> StreamingResponse {
        let deadline = Instant::now() + HTTP_TIMEOUT;
        let mut received = Vec::new();
        let head_end = loop {
            if let Some(end) = find(&received, b"\r\n\r\n") {
                break end;
            }
            match read_some(&mut socket, deadline) {
                Ok(Some(bytes)) => received.extend_from_slice(&bytes),
                Ok(None) => panic!(
                    "connection ended before response headers to {method} {path}; got {:?}",
                    String::from_utf8_lossy(&received)
                ),
                Err(kind) => panic!(
                    "no response headers to {method} {path} ({kind:?}); got {:?}",
                    String::from_utf8_lossy(&received)
                ),
            }
        };
        let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut response_headers = Vec::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                response_headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let header = |name: &str| {
            response_headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        let framing = if status == 204 || status == 304 || method == "HEAD" {
            Framing::Length(0)
        } else if header("transfer-encoding")
            .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"))
        {
            Framing::Chunked
        } else if let Some(length) = header("content-length") {
            Framing::Length(length.parse().expect("numeric content-length"))
        } else {
            Framing::UntilClose
        };
        let mut response = StreamingResponse {
            socket,
            status,
            headers: response_headers,
            raw: received[head_end + 4..].to_vec(),
            body: Vec::new(),
            framing,
            finished: false,
            pending_event: PendingEvent::default(),
        };
        response.decode();
        response
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Reads the whole body (for non-streaming answers such as errors).
    pub fn into_response(mut self) -> Response {
        let deadline = Instant::now() + HTTP_TIMEOUT;
        loop {
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Ended => break,
                Fill::TimedOut => panic!(
                    "the {} response body did not end within {HTTP_TIMEOUT:?}",
                    self.status
                ),
            }
        }
        Response {
            status: self.status,
            headers: self.headers,
            body: self.body,
        }
    }

    /// Moves complete pieces of `raw` (still in transfer coding) into `body`.
    fn decode(&mut self) {
        match &mut self.framing {
            Framing::Chunked => loop {
                if self.finished {
                    return;
                }
                let Some(line_end) = find(&self.raw, b"\r\n") else {
                    return;
                };
                let size_line = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
                let size_hex = size_line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_hex, 16)
                    .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
                if size == 0 {
                    self.finished = true;
                    self.raw.clear();
                    return;
                }
                let start = line_end + 2;
                if self.raw.len() < start + size + 2 {
                    return;
                }
                self.body.extend_from_slice(&self.raw[start..start + size]);
                self.raw.drain(..start + size + 2);
            },
            Framing::Length(remaining) => {
                let take = (*remaining).min(self.raw.len());
                self.body.extend(self.raw.drain(..take));
                *remaining -= take;
                if *remaining == 0 {
                    self.finished = true;
                }
            }
            Framing::UntilClose => self.body.append(&mut self.raw),
        }
    }

    fn fill(&mut self, deadline: Instant) -> Fill {
        if self.finished {
            return Fill::Ended;
        }
        match read_some(&mut self.socket, deadline) {
            Ok(Some(bytes)) => {
                self.raw.extend_from_slice(&bytes);
                self.decode();
                Fill::Data
            }
            Ok(None) => {
                self.finished = true;
                Fill::Ended
            }
            Err(ErrorKind::TimedOut) => Fill::TimedOut,
            Err(_) => {
                self.finished = true;
                Fill::Ended
            }
        }
    }

    /// The next server-sent event.
    pub fn next_event(&mut self, timeout: Duration) -> Next<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.take_event() {
                return Next::Item(event);
            }
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Ended => {
                    return match self.take_event() {
                        Some(event) => Next::Item(event),
                        None => Next::End,
                    }
                }
                Fill::TimedOut => return Next::TimedOut,
            }
        }
    }

    fn take_event(&mut self) -> Option<SseEvent> {
        loop {
            let newline = self.body.iter().position(|byte| *byte == b'\n')?;
            let mut line: Vec<u8> = self.body.drain(..=newline).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line).expect("SSE lines are UTF-8");
            if line.is_empty() {
                let pending = std::mem::take(&mut self.pending_event);
                if pending.any_field {
                    return Some(SseEvent {
                        event: pending.event,
                        id: pending.id,
                        data: pending.data.join("\n"),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_str(), ""),
            };
            let pending = &mut self.pending_event;
            match field {
                "event" => pending.event = Some(value.to_owned()),
                "id" => pending.id = Some(value.to_owned()),
                "data" => pending.data.push(value.to_owned()),
                _ => {}
            }
            pending.any_field = true;
        }
    }

    /// The next S2S frame.
    pub fn next_frame(&mut self, timeout: Duration) -> Next<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.body.len() >= 3 {
                let length = (usize::from(self.body[0]) << 16)
                    | (usize::from(self.body[1]) << 8)
                    | usize::from(self.body[2]);
                assert!(length >= 1, "server sent an empty S2S frame");
                if self.body.len() >= 3 + length {
                    let flags = self.body[3];
                    let body = self.body[4..3 + length].to_vec();
                    self.body.drain(..3 + length);
                    return Next::Item(Frame { flags, body });
                }
            }
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Ended => {
                    assert!(
                        self.body.is_empty(),
                        "the S2S response ended inside a frame ({} bytes left)",
                        self.body.len()
                    );
                    return Next::End;
                }
                Fill::TimedOut => return Next::TimedOut,
            }
        }
    }

    /// All remaining frames until the response ends.
    pub fn frames_to_end(&mut self, timeout: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left) {
                Next::Item(frame) => frames.push(frame),
                Next::End => return frames,
                Next::TimedOut => panic!(
                    "the S2S response did not end within {timeout:?}; frames so far: {frames:?}"
                ),
            }
        }
    }
}

/// Reads what is available: `Ok(None)` at end of stream, `Err(TimedOut)` at the deadline.
fn read_some(socket: &mut TcpStream, deadline: Instant) -> Result<Option<Vec<u8>>, ErrorKind> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(ErrorKind::TimedOut);
        }
        if socket.set_read_timeout(Some(deadline - now)).is_err() {
            return Err(ErrorKind::TimedOut);
        }
        match socket.read(&mut buffer) {
            Ok(0) => return Ok(None),
            Ok(n) => return Ok(Some(buffer[..n].to_vec())),
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(ErrorKind::TimedOut)
            }
            Err(err) => return Err(err.kind()),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Writes one chunk of a chunked request body.
pub fn write_chunk(socket: &mut TcpStream, data: &[u8]) {
    socket
        .write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .and_then(|()| socket.write_all(data))
        .and_then(|()| socket.write_all(b"\r\n"))
        .expect("send a body chunk");
}

/// An SSE read session with extra headers.
pub fn open_sse(
    port: u16,
    basin: &str,
    stream: &str,
    query: &str,
    extra: &[(&str, &str)],
) -> StreamingResponse {
    let mut headers = vec![("S2-Basin", basin), ("Accept", "text/event-stream")];
    headers.extend_from_slice(extra);
    StreamingResponse::open(port, "GET", &records_path(stream, query), &headers, b"")
}

/// A raw S2S read session with extra headers.
pub fn open_s2s_read(
    port: u16,
    basin: &str,
    stream: &str,
    query: &str,
    extra: &[(&str, &str)],
) -> StreamingResponse {
    let mut headers = vec![("S2-Basin", basin), ("Content-Type", "s2s/proto")];
    headers.extend_from_slice(extra);
    StreamingResponse::open(port, "GET", &records_path(stream, query), &headers, b"")
}
