//! Starting and stopping a server command for compare mode, and reading a process's RSS.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use s2_sdk::types::ListBasinsInput;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::moto::{self, Moto};
use crate::scenarios::{random_hex, sdk_client};

/// How long a server may take to answer after being spawned.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// A server spawned from a command template. Dropping it kills the process.
pub struct ServerProcess {
    label: String,
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl ServerProcess {
    /// The directory `{dir}` named.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Picks a free port and a fresh temp dir, substitutes `{port}`, `{dir}` and `{bucket}`
    /// in `template`, runs it with `sh -c` (pointed at `moto` if given), and waits until
    /// the server answers.
    pub async fn start(label: &str, template: &str, moto: Option<&Moto>) -> Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "sluice-bench-{}-{}",
            std::process::id(),
            &random_hex()[..8]
        ));
        let data = dir.join("data");
        std::fs::create_dir_all(&data)
            .with_context(|| format!("cannot create {}", data.display()))?;
        let command = template
            .replace("{port}", &port.to_string())
            .replace("{dir}", &data.display().to_string())
            .replace("{bucket}", moto::BUCKET);
        let log = dir.join("server.log");
        let log_file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        // `exec` makes the shell become the server, so the pid is the server's.
        let mut shell = Command::new("sh");
        if let Some(moto) = moto {
            shell.envs(moto.env());
        }
        let child = shell
            .arg("-c")
            .arg(format!("exec {command}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot spawn `{command}`"))?;
        eprintln!(
            "{label}: started `{command}` (pid {}, port {port})",
            child.id()
        );
        let mut server = Self {
            label: label.to_owned(),
            child: Some(child),
            port,
            dir,
            log,
        };
        if let Err(err) = server.wait_ready().await {
            let tail = log_tail(&server.log);
            server.shutdown().await;
            bail!("{err}; server log tail:\n{tail}");
        }
        Ok(server)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = sdk_client(&self.endpoint())?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("{} exited during startup ({status})", self.label);
                }
            }
            if health_ok(self.port).await {
                return Ok(());
            }
            // A server without an HTTP/1.1 `/health` still counts once the SDK can list basins.
            if tcp_open(self.port).await {
                let listed = tokio::time::timeout(
                    Duration::from_secs(5),
                    client.list_basins(ListBasinsInput::new()),
                )
                .await;
                if matches!(listed, Ok(Ok(_))) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not answer on port {} within {STARTUP_TIMEOUT:?}",
                    self.label,
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then SIGKILL if the process is still there after the grace period.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + STOP_GRACE;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    _ => {
                        eprintln!(
                            "{}: no exit {STOP_GRACE:?} after SIGTERM, killing",
                            self.label
                        );
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

async fn tcp_open(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            TcpStream::connect(("127.0.0.1", port))
        )
        .await,
        Ok(Ok(_))
    )
}

/// `GET /health` over HTTP/1.1 answers 200.
async fn health_ok(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 32];
        let mut filled = 0;
        while filled < 12 {
            let n = stream.read(&mut head[filled..]).await.ok()?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let text = std::str::from_utf8(&head[..filled]).ok()?;
        Some(text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

/// The last few KiB of a log file.
fn log_tail(path: &Path) -> String {
    const KEEP: u64 = 4096;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(KEEP)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Resident set size of `pid` in MiB, from `/proc/<pid>/status` (`VmRSS`, in kB).
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Fails early with a clear message when the command cannot possibly bind the port, or
/// would not use the bucket it is given.
pub fn check_template(template: &str, with_moto: bool) -> Result<()> {
    if !template.contains("{port}") {
        return Err(anyhow!(
            "server command `{template}` has no {{port}} placeholder"
        ));
    }
    if with_moto && !template.contains("{bucket}") {
        return Err(anyhow!(
            "server command `{template}` has no {{bucket}} placeholder, but --moto is set"
        ));
    }
    Ok(())
}

/// CPU time `pid` has used so far (user and system, all threads), in seconds, from
/// `/proc/<pid>/stat`. Clock ticks are 100 a second on every Linux this runs on.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after its closing parenthesis don't.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Bytes of the files under `dir`, however deep.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_this_process_grows_while_it_computes() {
        let pid = std::process::id();
        let before = cpu_seconds(pid).expect("this process's /proc stat");
        let spin = Instant::now();
        let mut x: u64 = 1;
        while spin.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = cpu_seconds(pid).expect("this process's /proc stat");
        assert!(
            after - before >= 0.1,
            "{before} -> {after} after 300 ms of spinning"
        );
    }
}
