//! Test harness: runs the `sluice` binary, speaks raw HTTP/1.1 to it over
//! `std::net::TcpStream`, and builds SDK clients pointed at it.
//!
//! The raw client always sends `Connection: close` and never asks for compression, so a
//! response is exactly what the server chose to send for that request.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use s2_sdk::error::RequestError;
use s2_sdk::types::{BasinName, EnsureOutput, S2Config, S2Endpoints, StreamName};
use s2_sdk::S2;
use serde_json::Value;

/// How long the server may take to print its endpoint line after being spawned.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a server's stderr is kept for failure messages.
const STDERR_KEEP_BYTES: usize = 256 * 1024;
/// The server prints this, followed by `http://127.0.0.1:PORT`, once it serves requests.
const ENDPOINT_LINE_PREFIX: &str = "export S2_ACCOUNT_ENDPOINT=";
/// How long one raw HTTP exchange may take before the test fails.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long background deletion of a basin or stream may take to finish.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------------------

/// A running `sluice` process. Dropping it kills the process.
pub struct Server {
    child: Child,
    port: u16,
    args: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `sluice --host 127.0.0.1 --port 0 <args>` and waits until it serves.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// Like [`Server::start`], with extra environment variables for the child.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_under(&[], args, env)
    }

    /// Like [`Server::start_with_env`], run through `wrapper` (a program and its
    /// arguments, given the sluice command line to exec).
    pub fn start_under(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Server {
        let sluice = env!("CARGO_BIN_EXE_sluice");
        let mut command = match wrapper.split_first() {
            None => Command::new(sluice),
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(sluice);
                command
            }
        };
        command
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot spawn sluice {args:?}: {err}"));

        // Both pipes are drained for the whole life of the process so it never blocks on a
        // full pipe. Stderr is kept (bounded) for failure messages.
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr_sink = Arc::clone(&stderr);
        let stderr_thread = std::thread::spawn(move || {
            for_each_line(stderr_pipe, |line| {
                let mut kept = stderr_sink
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                if kept.len() < STDERR_KEEP_BYTES {
                    kept.push_str(line);
                }
            });
        });
        let (endpoint_tx, endpoint_rx) = mpsc::channel::<String>();
        let stdout_pipe = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            let mut endpoint_tx = Some(endpoint_tx);
            for_each_line(stdout_pipe, |line| {
                if line.trim_start().starts_with(ENDPOINT_LINE_PREFIX) {
                    if let Some(tx) = endpoint_tx.take() {
                        let _ = tx.send(line.trim().to_owned());
                    }
                }
            });
        });

        let mut server = Server {
            child,
            port: 0,
            args: args.iter().map(|arg| arg.to_string()).collect(),
            stderr,
        };
        match endpoint_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(line) => match parse_endpoint_port(&line) {
                Some(port) => server.port = port,
                None => panic!("cannot parse a port from the endpoint line {line:?}"),
            },
            Err(err) => {
                let stacks = thread_stacks(server.child.id());
                let status = server.stop();
                let _ = stderr_thread.join();
                panic!(
                    "sluice {:?} did not print `{ENDPOINT_LINE_PREFIX}http://127.0.0.1:PORT` \
                     within {STARTUP_TIMEOUT:?} ({err}); exit status: {status:?}; stderr:\n{}\n\
                     threads:\n{stacks}",
                    server.args,
                    server.stderr_text()
                );
            }
        }
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An SDK client whose account and basin endpoints are this server.
    pub fn sdk(&self) -> S2 {
        sdk_client(&self.endpoint())
    }

    /// What the server wrote to stderr so far (bounded).
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Fails the test if the process has exited.
    pub fn assert_alive(&mut self) {
        match self.child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => panic!(
                "sluice {:?} exited unexpectedly ({status}); stderr:\n{}",
                self.args,
                self.stderr_text()
            ),
            Err(err) => panic!("cannot query the sluice process: {err}"),
        }
    }

    /// Sends SIGKILL (what `Child::kill` does on Unix) and waits for the process to go.
    pub fn kill9(&mut self) {
        self.assert_alive();
        self.child
            .kill()
            .unwrap_or_else(|err| panic!("cannot SIGKILL sluice: {err}"));
        self.child
            .wait()
            .unwrap_or_else(|err| panic!("cannot reap sluice: {err}"));
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit on its own.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit(timeout)
    }

    /// Sends `signal` (as `kill` names it, e.g. `TERM`) and returns at once.
    pub fn signal(&mut self, signal: &str) {
        self.assert_alive();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|err| panic!("cannot run kill: {err}"));
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => panic!(
                    "sluice did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr_text()
                ),
                Err(err) => panic!("cannot query the sluice process: {err}"),
            }
        }
    }

    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn for_each_line(pipe: impl Read, mut on_line: impl FnMut(&str)) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => on_line(&String::from_utf8_lossy(&line)),
        }
    }
}

fn parse_endpoint_port(line: &str) -> Option<u16> {
    let url = line.trim().strip_prefix(ENDPOINT_LINE_PREFIX)?;
    let authority = url.strip_prefix("http://")?.trim_end_matches('/');
    let port: u16 = authority.rsplit(':').next()?.parse().ok()?;
    (port != 0).then_some(port)
}

// ---------------------------------------------------------------------------------------
// SDK
// ---------------------------------------------------------------------------------------

/// An SDK client for a self-hosted endpoint: plain `http://`, so the SDK speaks HTTP/2 with
/// prior knowledge, and the basin is sent in the `S2-Basin` header.
/// Every thread's stack of a process that hangs, from gdb when the machine has it (a
/// diagnosis for a rare hang, not something a test needs).
fn thread_stacks(pid: u32) -> String {
    let output = Command::new("timeout")
        .args(["30", "gdb", "-batch", "-nx", "-p", &pid.to_string()])
        .args(["-ex", "thread apply all bt 40"])
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            text.chars().take(STDERR_KEEP_BYTES).collect()
        }
        Ok(out) => format!("(gdb gave nothing: {})", out.status),
        Err(e) => format!("(no gdb: {e})"),
    }
}

pub fn sdk_client(endpoint: &str) -> S2 {
    let endpoints = S2Endpoints::for_endpoint(endpoint)
        .unwrap_or_else(|err| panic!("invalid endpoint {endpoint}: {err}"));
    let config = S2Config::new("e2e-ignored-token")
        .with_endpoints(endpoints)
        .with_request_timeout(Duration::from_secs(20));
    S2::new(config).unwrap_or_else(|err| panic!("cannot build the SDK client: {err}"))
}

pub fn basin_name(name: &str) -> BasinName {
    name.parse()
        .unwrap_or_else(|err| panic!("invalid basin name {name:?}: {err}"))
}

pub fn stream_name(name: &str) -> StreamName {
    name.parse()
        .unwrap_or_else(|err| panic!("invalid stream name {name:?}: {err}"))
}

/// The provision result an ensure call reported, as the `s2-provision-result` value.
pub fn provision<T>(output: EnsureOutput<T>) -> (&'static str, T) {
    match output {
        EnsureOutput::Created(info) => ("created", info),
        EnsureOutput::ConfigUpdated(info) => ("updated", info),
        EnsureOutput::ConfigUnchanged(info) => ("noop", info),
    }
}

static NAME_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A basin name that is unique within this test process: `<prefix>-<counter>`.
pub fn unique_basin(prefix: &str) -> String {
    let n = NAME_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}-{n:04}");
    assert!(
        (8..=48).contains(&name.len()),
        "generated basin name {name:?} has an invalid length"
    );
    name
}

/// Asserts that an SDK call failed with a server error of this status and code, and
/// returns the error message.
pub fn expect_server_error<T: std::fmt::Debug>(
    result: Result<T, RequestError>,
    status: u16,
    code: &str,
) -> String {
    let err = match result {
        Ok(value) => panic!("expected a {status} {code} error, got success: {value:?}"),
        Err(err) => err,
    };
    let server = err
        .server_error()
        .unwrap_or_else(|| panic!("expected a {status} {code} server error, got {err:?}"));
    assert_eq!(server.code, code, "unexpected error code: {server:?}");
    assert_eq!(
        server.status.as_u16(),
        status,
        "unexpected status: {server:?}"
    );
    server.message.clone()
}

// ---------------------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names are lowercased; values are as sent.
    pub headers: Vec<(String, String)>,
    /// The body with any chunked transfer coding removed.
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body of a {} response is not JSON ({err}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Asserts the status code, printing the body when it differs.
    pub fn expect_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "unexpected status; headers {:?}; body {:?}",
            self.headers,
            self.text()
        );
        self
    }
}

/// How a raw read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A complete HTTP response was received (only with [`Until::Response`]).
    Complete,
    /// The server closed the connection.
    Closed,
    /// The connection failed, e.g. it was reset.
    Failed(ErrorKind),
    /// Nothing ended the read before the timeout.
    TimedOut,
}

/// When a raw read stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// At the first complete response, or when the connection ends.
    Response,
    /// Only when the connection ends.
    Close,
}

#[derive(Debug)]
pub struct RawReply {
    pub bytes: Vec<u8>,
    pub ending: Ending,
    pub elapsed: Duration,
}

impl RawReply {
    /// The response contained in the received bytes, if they hold a complete one.
    pub fn response(&self) -> Option<Response> {
        parse_response(&self.bytes, self.ending != Ending::Complete)
    }

    /// True when the server ended the connection (cleanly or not) before the timeout.
    pub fn connection_ended(&self) -> bool {
        matches!(self.ending, Ending::Closed | Ending::Failed(_))
    }
}

pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|err| panic!("cannot connect to 127.0.0.1:{port}: {err}"));
    let _ = stream.set_nodelay(true);
    stream
}

/// Sends one HTTP/1.1 request and returns the response.
///
/// Adds `Host` and `Connection: close`, and `Content-Length` unless the caller passed
/// `Content-Length` or `Transfer-Encoding` (always for POST, PUT and PATCH, otherwise only
/// with a body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n")
            .into_bytes();
    let mut framed = false;
    for (name, value) in headers {
        framed |= name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding");
        request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !framed && (!body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH")) {
        request.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);

    let mut stream = connect(port);
    stream
        .write_all(&request)
        .unwrap_or_else(|err| panic!("cannot send {method} {path}: {err}"));
    let reply = read_reply(&mut stream, HTTP_TIMEOUT, Until::Response);
    reply.response().unwrap_or_else(|| {
        panic!(
            "no complete HTTP response to {method} {path} (read ended: {:?}); received {:?}",
            reply.ending,
            String::from_utf8_lossy(&reply.bytes)
        )
    })
}

/// Sends a JSON body with `Content-Type: application/json`.
pub fn http_json(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Response {
    let mut all_headers = vec![("Content-Type", "application/json")];
    all_headers.extend_from_slice(headers);
    http(
        port,
        method,
        path,
        &all_headers,
        body.to_string().as_bytes(),
    )
}

/// `GET path` with no extra headers.
pub fn get(port: u16, path: &str) -> Response {
    http(port, "GET", path, &[], b"")
}

/// Writes arbitrary bytes on a fresh connection and reads until the server closes it or
/// `timeout` passes. Write errors are ignored: a server may answer and close early.
pub fn send_raw(port: u16, bytes: &[u8], timeout: Duration) -> RawReply {
    let mut stream = connect(port);
    let _ = stream.write_all(bytes);
    read_reply(&mut stream, timeout, Until::Close)
}

/// Reads from `stream` until `until` is satisfied, the connection ends, or `timeout` passes.
pub fn read_reply(stream: &mut TcpStream, timeout: Duration, until: Until) -> RawReply {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut bytes = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let ending = loop {
        let now = Instant::now();
        if now >= deadline {
            break Ending::TimedOut;
        }
        if stream.set_read_timeout(Some(deadline - now)).is_err() {
            break Ending::TimedOut;
        }
        match stream.read(&mut buffer) {
            Ok(0) => break Ending::Closed,
            Ok(n) => {
                bytes.extend_from_slice(&buffer[..n]);
                if until == Until::Response && parse_response(&bytes, false).is_some() {
                    break Ending::Complete;
                }
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break Ending::TimedOut
            }
            Err(err) => break Ending::Failed(err.kind()),
        }
    };
    RawReply {
        bytes,
        ending,
        elapsed: started.elapsed(),
    }
}

/// Parses one HTTP/1.x response. Returns `None` while it is incomplete; a body without
/// framing is complete only at end of stream (`at_eof`).
pub fn parse_response(bytes: &[u8], at_eof: bool) -> Option<Response> {
    let head_end = find(bytes, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..head_end]);
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next()?.splitn(3, ' ');
    if !status_line.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = status_line.next()?.parse().ok()?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let rest = &bytes[head_end + 4..];
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let body = if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        decode_chunked(rest)?
    } else if let Some(length) = header("content-length") {
        let length: usize = length.parse().ok()?;
        if rest.len() < length {
            return None;
        }
        rest[..length].to_vec()
    } else if at_eof {
        rest.to_vec()
    } else {
        return None;
    };
    Some(Response {
        status,
        headers,
        body,
    })
}

fn decode_chunked(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_line = std::str::from_utf8(&data[..line_end]).ok()?;
        let size_hex = size_line.split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            // Optional trailer fields, then an empty line.
            loop {
                let end = find(data, b"\r\n")?;
                if end == 0 {
                    return Some(body);
                }
                data = &data[end + 2..];
            }
        }
        if data.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Percent-encodes everything except RFC 3986 unreserved characters, so the result is one
/// path segment or one query value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------

/// The HTTP status fixed for each error code (API.md §1.2).
pub fn code_status(code: &str) -> Option<u16> {
    let status = match code {
        "access_token_not_found" => 404,
        "authn" => 401,
        "bad_frame" | "bad_header" | "bad_json" | "bad_path" | "bad_proto" | "bad_query" => 400,
        "basin_deletion_pending" => 409,
        "basin_not_found" => 404,
        "client_hangup" => 499,
        "decryption_failed" => 400,
        "header_fields_too_large" => 431,
        "hot_server" => 502,
        "invalid" => 422,
        "not_implemented" => 501,
        "other" => 500,
        "permission_denied" | "quota_exhausted" => 403,
        "rate_limited" => 429,
        "request_timeout" => 408,
        "resource_already_exists" => 409,
        "server_draining" => 503,
        "storage" => 500,
        "stream_deletion_pending" => 409,
        "stream_not_found" => 404,
        "transaction_conflict" => 409,
        "unavailable" => 503,
        "upstream_timeout" => 504,
        _ => return None,
    };
    Some(status)
}

/// Asserts the response has `content-type: application/json` (parameters allowed).
pub fn assert_json_content_type(response: &Response) {
    let content_type = response.header("content-type").unwrap_or("");
    assert!(
        content_type
            .to_ascii_lowercase()
            .starts_with("application/json"),
        "expected content-type application/json on a {} response, got {content_type:?}; body {:?}",
        response.status,
        response.text()
    );
}

/// Asserts an S2 error response: this status, JSON content type, a body of exactly
/// `{"code", "message"}` with this code, and a code whose table status is this status.
/// Returns the message.
pub fn assert_error(response: &Response, status: u16, code: &str) -> String {
    assert_eq!(
        response.status,
        status,
        "expected {status} {code}; got body {:?}",
        response.text()
    );
    assert_json_content_type(response);
    let body = response.json();
    assert_eq!(body["code"], code, "unexpected error body {body}");
    assert_eq!(
        code_status(code),
        Some(status),
        "error code {code} is not answered with its table status"
    );
    assert_keys(&body, &["code", "message"]);
    body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("error message is not a string: {body}"))
        .to_owned()
}

/// Asserts that a JSON object has exactly these keys.
pub fn assert_keys(value: &Value, keys: &[&str]) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("expected a JSON object, got {value}"));
    let mut actual: Vec<&str> = object.keys().map(String::as_str).collect();
    actual.sort_unstable();
    let mut expected = keys.to_vec();
    expected.sort_unstable();
    assert_eq!(actual, expected, "unexpected keys in {value}");
}

/// Asserts an RFC 3339 UTC timestamp such as `2026-05-14T19:01:27.123456789Z`.
pub fn assert_timestamp(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("expected an RFC 3339 string, got {value}"));
    let bytes = text.as_bytes();
    let date_time_ok = bytes.len() >= 20
        && bytes[..19].iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            13 | 16 => *b == b':',
            _ => b.is_ascii_digit(),
        })
        && bytes[bytes.len() - 1] == b'Z';
    assert!(date_time_ok, "not an RFC 3339 UTC timestamp: {text:?}");
    // Between the seconds and the `Z`: nothing, or a dot and non-zero fractional digits.
    let fraction = &bytes[19..bytes.len() - 1];
    let fraction_ok = fraction.is_empty()
        || (fraction.len() >= 2
            && fraction[0] == b'.'
            && fraction[1..].iter().all(u8::is_ascii_digit)
            && fraction[1..].iter().any(|b| *b != b'0'));
    assert!(fraction_ok, "bad fractional seconds in {text:?}");
}

/// Polls `check` every 200 ms until it holds; fails the test after `timeout`.
pub async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const MOTO_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A moto S3 server (the S3-compatible test server from PyPI) on a free loopback port, killed on drop.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
        if !binary.exists() {
            panic!(
                "{} is missing: run `make test`, which creates the virtualenv with moto[server]",
                binary.display()
            );
        }
        let port = free_port();
        let port_text = port.to_string();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", port_text.as_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));
        let mut moto = Moto { child, port };

        let deadline = Instant::now() + MOTO_STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited during startup: {status}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let probe = format!(
                    "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                );
                if send_raw(port, probe.as_bytes(), Duration::from_secs(5))
                    .response()
                    .is_some()
                {
                    return moto;
                }
            }
            if Instant::now() >= deadline {
                panic!("moto_server did not answer HTTP on port {port} within {MOTO_STARTUP_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// moto accepts unsigned requests, so a bare `PUT /<bucket>` creates the bucket.
    pub fn create_bucket(&self, bucket: &str) {
        let response = http(self.port, "PUT", &format!("/{bucket}"), &[], b"");
        assert_eq!(
            response.status,
            200,
            "creating bucket {bucket}: {:?}",
            response.text()
        );
    }
}

impl Moto {
    /// A Sluice server started with `args` and the environment that points it at moto.
    pub fn server(&self, args: &[&str]) -> Server {
        self.server_via(&self.endpoint(), args)
    }

    /// A Sluice server that reaches moto's buckets at `endpoint` (a proxy in front of it).
    pub fn server_via(&self, endpoint: &str, args: &[&str]) -> Server {
        let env = [
            ("AWS_ENDPOINT_URL_S3", endpoint),
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_ALLOW_HTTP", "true"),
        ];
        Server::start_with_env(args, &env)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}
