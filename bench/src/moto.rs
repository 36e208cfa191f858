//! A moto S3 server per compared server, so `--bucket` runs can count the object writes each
//! server makes. moto logs one line per request (`"PUT /bucket/key HTTP/1.1" 200`), which
//! is all the counting needs, with or without the latency proxy in front of it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server::free_port;

/// How long moto may take to answer after being spawned.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The bucket every server is pointed at; each moto holds only this one.
pub const BUCKET: &str = "bench";

pub struct Moto {
    child: Child,
    port: u16,
    /// Where servers reach it: its own port, or a proxy's in front of it.
    reached_at: u16,
    log: PathBuf,
}

impl Moto {
    /// Starts `binary` (moto_server) on a free port, logging its requests to `log`, and
    /// creates [`BUCKET`].
    pub async fn start(binary: &Path, log: PathBuf) -> Result<Self> {
        let port = free_port()?;
        let log_file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut moto = Self {
            child,
            port,
            reached_at: port,
            log,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = moto.child.try_wait()? {
                bail!("moto exited during startup ({status})");
            }
            if let Some(status) = moto.request("PUT", &format!("/{BUCKET}")).await {
                if status != 200 {
                    bail!("moto answered {status} to creating the bucket");
                }
                return Ok(moto);
            }
            if Instant::now() >= deadline {
                bail!("moto did not answer on port {port} within {STARTUP_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Servers reach this moto through a proxy on `port` from now on.
    pub fn reach_through(&mut self, port: u16) {
        self.reached_at = port;
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The environment that points an S3 client (Sluice's or `s2 lite`'s) at this moto.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let endpoint = format!("http://127.0.0.1:{}", self.reached_at);
        vec![
            ("AWS_ENDPOINT_URL_S3", endpoint.clone()),
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "bench".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "bench".to_owned()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// Object writes so far: PUTs (whole objects and multipart parts) and POSTs (multipart
    /// starts and completions), the requests S3 bills as writes.
    pub fn object_writes(&self) -> Result<u64> {
        object_writes_in(&self.log)
    }

    /// One unsigned request (moto accepts them); its status, or `None` if moto is not up.
    async fn request(&self, method: &str, path: &str) -> Option<u16> {
        let attempt = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.ok()?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.ok()?;
            let text = String::from_utf8_lossy(&response);
            text.split_whitespace().nth(1)?.parse().ok()
        };
        tokio::time::timeout(Duration::from_secs(5), attempt)
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Object writes so far in the request log at `path`.
pub fn object_writes_in(path: &Path) -> Result<u64> {
    let log =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(count_object_writes(&log))
}

fn count_object_writes(log: &str) -> u64 {
    let put = format!("\"PUT /{BUCKET}/");
    let post = format!("\"POST /{BUCKET}/");
    log.lines()
        .filter(|line| line.contains(&put) || line.contains(&post))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_object_puts_and_posts_but_not_the_bucket_or_reads() {
        let log = "\
 * Running on http://127.0.0.1:1234
127.0.0.1 - - [01/Dec/2026 23:37:21] \"PUT /bench HTTP/1.1\" 200 -
127.0.0.1 - - [01/Dec/2026 23:37:21] \"PUT /bench/a/b HTTP/1.1\" 200 -
127.0.0.1 - - [01/Dec/2026 23:37:21] \"GET /bench/a/b HTTP/1.1\" 200 -
127.0.0.1 - - [01/Dec/2026 23:37:21] \"POST /bench/c?uploads HTTP/1.1\" 200 -
127.0.0.1 - - [01/Dec/2026 23:37:21] \"DELETE /bench/a/b HTTP/1.1\" 204 -
127.0.0.1 - - [01/Dec/2026 23:37:21] \"PUT /bench/c?partNumber=1 HTTP/1.1\" 200 -
";
        assert_eq!(count_object_writes(log), 3);
    }
}
