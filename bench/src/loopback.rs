//! What the machine itself moves over loopback TCP, measured with iperf3: the yardstick for
//! large-batch appends, taken in the same run since the machine's speed drifts.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::process::Command;

use crate::scenarios::MIB;
use crate::server::free_port;

/// How long the iperf3 server may take to start listening.
const LISTEN_ATTEMPTS: usize = 50;

/// MiB/s of one TCP stream over 127.0.0.1 for `seconds`, as iperf3's receiver counts it.
pub async fn iperf3_mib_per_s(seconds: u64) -> Result<f64> {
    let port = free_port()?.to_string();
    // `-1`: serve one test, then exit.
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run iperf3 (Debian: apt-get install iperf3)")?;
    let seconds = seconds.max(1).to_string();
    let mut last_error = String::new();
    for _ in 0..LISTEN_ATTEMPTS {
        let output = Command::new("iperf3")
            .args(["-c", "127.0.0.1", "-p", &port, "-t", &seconds, "-J"])
            .stdin(Stdio::null())
            .output()
            .await
            .context("cannot run the iperf3 client")?;
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .map_err(|err| anyhow!("iperf3 printed no JSON report: {err}"))?;
        if let Some(bits) = report["end"]["sum_received"]["bits_per_second"].as_f64() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server.wait()).await;
            return Ok(bits / 8.0 / MIB as f64);
        }
        // Most likely the server is not listening yet.
        last_error = report["error"].as_str().unwrap_or("no result").to_owned();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("iperf3 on port {port}: {last_error}")
}
