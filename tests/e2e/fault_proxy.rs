//! A loopback TCP proxy in front of the S3-compatible test server that injects faults into
//! the object store's traffic: added latency, 500/503 answers, connections reset part way
//! through a response, a full outage in which every connection is reset at once, and
//! connects that time out.
//!
//! It speaks just enough HTTP/1.1 to give each request its own fault: it reads a request's
//! head and `Content-Length` body, asks the server to close after answering
//! (`Connection: close`), and buffers the whole answer before deciding how much of it the
//! client gets. The proxy runs on a runtime of its own, so a test that blocks its thread
//! does not stall the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What to inject, changed by the test while traffic flows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Added before each request is forwarded, uniform in the range (ms).
    pub latency_ms: Option<(u64, u64)>,
    /// Share of requests answered by the proxy itself with a 500 or 503.
    pub error_rate: f64,
    /// Share of requests whose answer is cut part way and the connection reset.
    pub reset_rate: f64,
    /// Every connection, new or in flight, is reset.
    pub down: bool,
    /// New connections are never established: the proxy stops accepting and keeps its
    /// accept queue full, so the kernel drops every SYN and the client's connect times out.
    /// Since every request opens a connection of its own here, no request gets through.
    pub connects_time_out: bool,
}

/// What the proxy did, by kind.
#[derive(Debug, Default)]
pub struct Counts {
    pub forwarded: AtomicU64,
    pub errors: AtomicU64,
    pub resets: AtomicU64,
    pub refused: AtomicU64,
}

struct Shared {
    upstream: u16,
    faults: Mutex<Faults>,
    counts: Counts,
    rng: Mutex<u64>,
}

impl Shared {
    fn faults(&self) -> Faults {
        *self.faults.lock().expect("faults")
    }

    /// xorshift64*: reproducible enough, and no dependency.
    fn uniform(&self) -> f64 {
        let mut s = self.rng.lock().expect("rng");
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        let x = s.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `upstream`, injecting nothing yet.
    pub fn start(upstream: u16, seed: u64) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(Faults::default()),
            counts: Counts::default(),
            rng: Mutex::new(seed | 1),
        });
        // Bound here, served there: the test may itself be running on a runtime.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let serving = shared.clone();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("proxy listener");
            accept(listener, serving).await
        });
        FaultProxy {
            port,
            shared,
            runtime: Some(runtime),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, faults: Faults) {
        *self.shared.faults.lock().expect("faults") = faults;
    }

    pub fn counts(&self) -> &Counts {
        &self.shared.counts
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The listening socket's usual accept queue.
const BACKLOG: i32 = 1024;
/// How often the accept loop looks at the faults while it waits.
const FAULTS_POLL: Duration = Duration::from_millis(10);

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    // While connects time out: `Some`, with the connection that keeps the queue full, if
    // it was ours.
    let mut blocked: Option<Option<TcpStream>> = None;
    loop {
        if shared.faults().connects_time_out {
            if blocked.is_none() {
                blocked = Some(fill_accept_queue(&listener).await);
            }
            tokio::time::sleep(FAULTS_POLL).await;
            continue;
        }
        if blocked.take().is_some() {
            // What waited in the queue is accepted below; the filler's end reads nothing.
            let _ = socket2::SockRef::from(&listener).listen(BACKLOG);
        }
        let accepted = tokio::time::timeout(FAULTS_POLL, listener.accept()).await;
        let Ok(Ok((client, _))) = accepted else {
            continue;
        };
        if shared.faults().down {
            shared.counts.refused.fetch_add(1, Ordering::Relaxed);
            reset(client);
            continue;
        }
        tokio::spawn(serve(client, shared.clone()));
    }
}

/// Shrink the accept queue to one connection and fill it with one of our own: Linux then
/// drops every SYN to the port until the queue is drained, so connects time out rather
/// than fail at once.
async fn fill_accept_queue(listener: &TcpListener) -> Option<TcpStream> {
    socket2::SockRef::from(listener)
        .listen(0)
        .expect("shrink the accept queue");
    let address = listener.local_addr().expect("proxy address");
    // If a client's connection got there first, the queue is full already.
    tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(address))
        .await
        .ok()
        .and_then(Result::ok)
}

/// Close with RST rather than FIN, as a crashed or unreachable peer would.
fn reset(stream: TcpStream) {
    if let Ok(std) = stream.into_std() {
        let _ = socket2::SockRef::from(&std).set_linger(Some(Duration::ZERO));
    }
}

const HEAD_MAX: usize = 64 << 10;

/// One request and its answer.
async fn serve(mut client: TcpStream, shared: Arc<Shared>) {
    let Some((head, mut body)) = read_head(&mut client).await else {
        return;
    };
    let length = content_length(&head);
    while body.len() < length {
        let mut chunk = vec![0u8; (length - body.len()).min(64 << 10)];
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let faults = shared.faults();
    if let Some((lo, hi)) = faults.latency_ms {
        let ms = lo + ((hi - lo) as f64 * shared.uniform()) as u64;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let roll = shared.uniform();
    if shared.faults().down {
        shared.counts.refused.fetch_add(1, Ordering::Relaxed);
        return reset(client);
    }
    if roll < faults.error_rate {
        shared.counts.errors.fetch_add(1, Ordering::Relaxed);
        let (status, code) = if shared.uniform() < 0.5 {
            ("500 Internal Server Error", "InternalError")
        } else {
            ("503 Service Unavailable", "SlowDown")
        };
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected</Message></Error>"
        );
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
            xml.len()
        );
        let _ = client.write_all(answer.as_bytes()).await;
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", shared.upstream)).await else {
        return reset(client);
    };
    let request = [close_after(&head).as_slice(), &body].concat();
    if upstream.write_all(&request).await.is_err() {
        return reset(client);
    }
    let mut answer = Vec::new();
    if upstream.read_to_end(&mut answer).await.is_err() || shared.faults().down {
        shared.counts.refused.fetch_add(1, Ordering::Relaxed);
        return reset(client);
    }
    if roll < faults.error_rate + faults.reset_rate && !answer.is_empty() {
        shared.counts.resets.fetch_add(1, Ordering::Relaxed);
        // Some of the answer, never all of it: the request may well have been applied.
        let cut = (answer.len() as f64 * shared.uniform()) as usize;
        let _ = client.write_all(&answer[..cut.min(answer.len() - 1)]).await;
        return reset(client);
    }
    shared.counts.forwarded.fetch_add(1, Ordering::Relaxed);
    let _ = client.write_all(&answer).await;
}

/// The request head (through the blank line) and whatever of the body came with it.
async fn read_head(client: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let body = buf.split_off(end + 4);
            return Some((buf, body));
        }
        if buf.len() > HEAD_MAX {
            return None;
        }
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn header_lines(head: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(head)
        .unwrap_or("")
        .split("\r\n")
        .skip(1)
}

fn content_length(head: &[u8]) -> usize {
    header_lines(head)
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

/// The head with its `Connection` header replaced by `Connection: close`.
fn close_after(head: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(head).unwrap_or("");
    let mut lines: Vec<&str> = text.trim_end_matches("\r\n").split("\r\n").collect();
    lines.retain(|line| {
        !line
            .split_once(':')
            .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("connection"))
    });
    let mut out = lines.join("\r\n");
    out.push_str("\r\nConnection: close\r\n\r\n");
    out.into_bytes()
}
