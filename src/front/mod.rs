//! The front acceptor: every shard listens on the shared port (SO_REUSEPORT), accepts,
//! optionally terminates TLS, and serves HTTP/1.1 and HTTP/2 with hyper. Requests are
//! handled on the accepting shard; the engine relays stream work to the owning shard.

pub mod io;
pub mod tls;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{select, Either};
use glommio::net::{TcpListener, TcpStream};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use sluice_shards::Shard;
use tokio::sync::watch;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tracing::{debug, info, warn};

use crate::api::{self, ApiContext};
use io::{Guarded, HeadErrorBody, LocalExec, SidecarTimer};

/// A client must finish sending request headers within this long (slowloris bound), and a
/// new connection must produce its first request within it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses are written through a buffer of this size per connection. HTTP/2 writes
/// every frame as a header and a payload of at most 16 KiB (the clients' frame size);
/// unbuffered, that is two `send` calls per 16 KiB, and the loopback and NIC paths cost
/// per call far more than per byte. hyper flushes it whenever it has nothing more to
/// write, so it adds no latency.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;
/// A TLS handshake must finish within this long.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections per shard; past it new connections are closed at once.
pub const CONNECTIONS_PER_SHARD_MAX: usize = 16_384;
/// Pending connections each shard's listening socket queues.
const LISTEN_BACKLOG: i32 = 1024;
/// Request header bytes (HTTP/1.1 read buffer, HTTP/2 header list) before 431.
pub const HEADER_BYTES_MAX: usize = 64 * 1024;
/// Request headers per HTTP/1.1 request before 431.
pub const HEADERS_COUNT_MAX: usize = 100;
/// Concurrent HTTP/2 streams per connection.
pub const H2_CONCURRENT_STREAMS_MAX: u32 = 256;
/// On shutdown, in-flight requests get this long to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than its own drain a shard waits for the others' (their deadlines start
/// at about the same moment).
const DRAIN_PEERS_MARGIN: Duration = Duration::from_secs(1);
/// HTTP/2 keep-alive: ping an idle peer this often and drop it if no answer comes.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the server is in its life. Boot moves it forward; every shard's front follows.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Phase {
    Serving,
    /// Shutting down soon: `/health` fails so that load balancers stop sending, and
    /// everything else is served as before.
    Leaving,
    /// Accept no more connections, end sessions, finish in-flight requests.
    Stopping,
}

/// What every shard's front end needs; built once at boot.
pub struct FrontConfig {
    pub addr: SocketAddr,
    pub tls: Option<Arc<futures_rustls::rustls::ServerConfig>>,
    pub api: ApiContext,
    pub timers: tokio::runtime::Handle,
    /// Shards whose own connections are done draining.
    pub drained: AtomicUsize,
}

/// Bind, report readiness, serve until `phase` reaches [`Phase::Stopping`], then drain.
pub async fn run(
    shard: Rc<Shard>,
    config: Arc<FrontConfig>,
    ready: crossbeam_channel::Sender<std::io::Result<()>>,
    mut phase: watch::Receiver<Phase>,
) {
    let listener = match listen(config.addr) {
        Ok(l) => {
            let _ = ready.send(Ok(()));
            l
        }
        Err(e) => {
            let _ = ready.send(Err(std::io::Error::other(e.to_string())));
            return;
        }
    };
    let open = Rc::new(Cell::new(0usize));
    let builder = Rc::new(http_builder(&config));
    glommio::spawn_local({
        let (shard, mut phase) = (shard.clone(), phase.clone());
        async move {
            if phase.wait_for(|p| *p >= Phase::Leaving).await.is_ok() {
                shard.begin_leaving();
            }
        }
    })
    .detach();
    loop {
        let accepted = {
            let stop = Box::pin(phase.wait_for(|p| *p == Phase::Stopping));
            match select(Box::pin(listener.accept()), stop).await {
                Either::Left((accepted, _)) => accepted,
                Either::Right(_) => break,
            }
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Typically EMFILE: back off briefly rather than spin.
                warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.get() >= CONNECTIONS_PER_SHARD_MAX {
            debug!("connection limit reached; closing new connection");
            continue;
        }
        let _ = stream.set_nodelay(true);
        open.set(open.get() + 1);
        let guard = OpenGuard(open.clone());
        let (shard, config, builder, phase) = (
            shard.clone(),
            config.clone(),
            builder.clone(),
            phase.clone(),
        );
        glommio::spawn_local(async move {
            let _guard = guard;
            serve_connection(stream, shard, config, builder, phase).await;
        })
        .detach();
    }
    drop(listener);
    shard.begin_drain();
    info!(
        shard = shard.id(),
        open = open.get(),
        "draining connections"
    );
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    while open.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    // A shard whose own connections are done keeps serving the jobs that the others
    // relay to it (appends still arriving on their connections) until every shard is
    // done: an append relayed during the drain is acknowledged, not dropped with its
    // owner's thread.
    config.drained.fetch_add(1, Ordering::AcqRel);
    while config.drained.load(Ordering::Acquire) < shard.shard_count()
        && std::time::Instant::now() < deadline + DRAIN_PEERS_MARGIN
    {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    if let Err(e) = shard.flush_usage().await {
        warn!(shard = shard.id(), error = %e, "writing usage counts at shutdown failed");
    }
}

/// A listening socket on the shared port. SO_REUSEPORT lets every shard listen on it;
/// SO_REUSEADDR lets this or another server bind the port again while connections it
/// closed are still in TIME_WAIT.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    // SAFETY: the descriptor is a listening TCP socket whose ownership moves here.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

struct OpenGuard(Rc<Cell<usize>>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

fn http_builder(config: &FrontConfig) -> auto::Builder<LocalExec> {
    let mut builder = auto::Builder::new(LocalExec);
    let timer = SidecarTimer(config.timers.clone());
    builder
        .http1()
        .timer(timer.clone())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(HEADER_BYTES_MAX)
        .max_headers(HEADERS_COUNT_MAX);
    builder
        .http2()
        .timer(timer)
        .max_concurrent_streams(H2_CONCURRENT_STREAMS_MAX)
        .max_header_list_size(HEADER_BYTES_MAX as u32)
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
    builder
}

async fn serve_connection(
    stream: TcpStream,
    shard: Rc<Shard>,
    config: Arc<FrontConfig>,
    builder: Rc<auto::Builder<LocalExec>>,
    phase: watch::Receiver<Phase>,
) {
    let seen: io::FirstRequestSeen = Rc::new(Cell::new(false));
    match &config.tls {
        None => {
            let io = HeadErrorBody::new(Guarded::new(stream, HEADER_READ_TIMEOUT, seen.clone()));
            serve_http(io, shard, config.clone(), &builder, phase, seen).await
        }
        Some(tls) => {
            let acceptor = futures_rustls::TlsAcceptor::from(tls.clone());
            let handshake = Box::pin(acceptor.accept(stream));
            let timeout = Box::pin(glommio::timer::sleep(TLS_HANDSHAKE_TIMEOUT));
            let tls_stream = match select(handshake, timeout).await {
                Either::Left((Ok(s), _)) => s,
                Either::Left((Err(e), _)) => {
                    debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Either::Right(_) => return,
            };
            let io =
                HeadErrorBody::new(Guarded::new(tls_stream, HEADER_READ_TIMEOUT, seen.clone()));
            serve_http(io, shard, config.clone(), &builder, phase, seen).await
        }
    }
}

async fn serve_http<S>(
    io: HeadErrorBody<Guarded<S>>,
    shard: Rc<Shard>,
    config: Arc<FrontConfig>,
    builder: &auto::Builder<LocalExec>,
    mut phase: watch::Receiver<Phase>,
    seen: io::FirstRequestSeen,
) where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin + 'static,
{
    let service = service_fn(move |req| {
        seen.set(true);
        let (shard, config) = (shard.clone(), config.clone());
        async move { Ok::<_, std::convert::Infallible>(api::handle(&config.api, &shard, req).await) }
    });
    let io = tokio::io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, io.compat());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let stop = Box::pin(phase.wait_for(|p| *p == Phase::Stopping));
    let result = match select(conn.as_mut(), stop).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "connection ended with an error");
    }
}
