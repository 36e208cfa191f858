//! A loopback TCP proxy that delays every byte by a fixed time in each direction: a
//! stand-in for the round trip to a real object store in front of a loopback moto, which
//! answers in about a millisecond where S3 takes tens.
//!
//! Each direction of a connection is a reader that stamps what it reads and a writer that
//! sends it on once its stamp is `delay` old, so the delay is added once per direction, not
//! once per chunk, and a large body streams through at full speed.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Chunks read but not yet forwarded, per direction: bounds what the proxy holds for a
/// connection whose far end reads slowly.
const CHUNKS_IN_FLIGHT_MAX: usize = 256;
const CHUNK_BYTES: usize = 64 << 10;

/// A running proxy; dropping it stops accepting (connections already open run out).
pub struct LatencyProxy {
    port: u16,
    accepting: JoinHandle<()>,
}

impl LatencyProxy {
    /// A proxy on a free loopback port to `upstream`, adding `delay` each way.
    pub async fn start(upstream: u16, delay: Duration) -> Result<LatencyProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the latency proxy")?;
        let port = listener.local_addr()?.port();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, delay));
            }
        });
        Ok(LatencyProxy { port, accepting })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn relay(client: TcpStream, upstream: u16, delay: Duration) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // The connection itself takes a round trip, as a new TCP connection to a store does.
    tokio::time::sleep(delay * 2).await;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        one_way(client_read, server_write, delay),
        one_way(server_read, client_write, delay),
    );
}

/// Forward `from` to `to`, each chunk `delay` after it was read; a close is forwarded the
/// same way.
async fn one_way(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (stamped, mut due) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT_MAX);
    let reading = async move {
        loop {
            let mut chunk = vec![0u8; CHUNK_BYTES];
            let n = from.read(&mut chunk).await.unwrap_or(0);
            chunk.truncate(n);
            // An empty chunk stands for the end of the stream.
            if stamped.send((Instant::now() + delay, chunk)).await.is_err() || n == 0 {
                return;
            }
        }
    };
    let writing = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if chunk.is_empty() || to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reading, writing);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn adds_the_delay_each_way_and_forwards_every_byte() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut conn, _) = echo.accept().await.unwrap();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = conn.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                conn.write_all(&buf[..n]).await.unwrap();
            }
        });
        let delay = Duration::from_millis(30);
        let proxy = LatencyProxy::start(upstream, delay).await.unwrap();
        let mut conn = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        let sent: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let started = std::time::Instant::now();
        conn.write_all(&sent).await.unwrap();
        let mut back = vec![0u8; sent.len()];
        conn.read_exact(&mut back).await.unwrap();
        assert_eq!(back, sent);
        // The connection's round trip, then one delay each way.
        assert!(started.elapsed() >= delay * 4, "{:?}", started.elapsed());
    }
}
