//! The command line. Every flag can also be set from the environment.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sluice_shards::storage::{StorageLocation, WalLocation};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "A thread-per-core server for the S2 durable streams API"
)]
pub struct Cli {
    /// Address to listen on.
    #[arg(long, env = "SLUICE_HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// Port to listen on (0 picks a free one). Default: 8080.
    #[arg(long, env = "SLUICE_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Number of shards, one per core. Default: the cores this process may use.
    #[arg(long, env = "SLUICE_SHARDS")]
    pub shards: Option<usize>,

    /// Threads of the storage runtime (SlateDB and object-store I/O).
    #[arg(long, env = "SLUICE_IO_THREADS", default_value_t = 2)]
    pub io_threads: usize,

    /// Keep data in this local directory (fsynced) instead of in memory.
    #[arg(
        long,
        env = "SLUICE_LOCAL_ROOT",
        conflicts_with = "bucket",
        group = "main_store"
    )]
    pub local_root: Option<PathBuf>,

    /// Keep data in this S3-compatible bucket (endpoint, region and keys from the standard
    /// AWS environment variables).
    #[arg(long, env = "SLUICE_BUCKET", group = "main_store")]
    pub bucket: Option<String>,

    /// Keep the write-ahead log (the log's commits, which acknowledgements wait for) in
    /// this local directory, apart from the data at rest in `--bucket` or `--local-root`,
    /// whither the runs are moved within seconds.
    #[arg(
        long,
        env = "SLUICE_WAL_LOCAL_ROOT",
        conflicts_with = "wal_bucket",
        requires = "main_store"
    )]
    pub wal_local_root: Option<PathBuf>,

    /// Keep the write-ahead log in this S3 bucket (e.g. a zonal, low-latency one), apart from
    /// the data at rest. Configured as `--bucket` is, but for `S2LITE_WAL_AWS_ENDPOINT_URL_S3`,
    /// `S2LITE_WAL_AWS_REGION`, `S2LITE_WAL_AWS_ACCESS_KEY_ID`,
    /// `S2LITE_WAL_AWS_SECRET_ACCESS_KEY` and `S2LITE_WAL_AWS_SESSION_TOKEN`, as `s2 lite` reads them.
    #[arg(long, env = "SLUICE_WAL_BUCKET", requires = "main_store")]
    pub wal_bucket: Option<String>,

    /// Path prefix inside the bucket.
    #[arg(long, env = "SLUICE_PATH", requires = "bucket")]
    pub path: Option<String>,

    /// Serve TLS with a self-signed certificate for localhost.
    #[arg(long, env = "SLUICE_TLS_SELF", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_self: bool,

    /// PEM certificate chain to serve TLS with.
    #[arg(long, env = "SLUICE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "SLUICE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Do not send permissive CORS headers.
    #[arg(long, env = "SLUICE_NO_CORS")]
    pub no_cors: bool,

    /// Do not serve the web dashboard at `/dashboard` (it then answers 404, as any unknown
    /// path does).
    #[arg(long, env = "SLUICE_NO_DASHBOARD")]
    pub no_dashboard: bool,

    /// JSON file of basins and streams to ensure at every start.
    #[arg(long, env = "SLUICE_INIT_FILE")]
    pub init_file: Option<PathBuf>,

    /// Bound on the metered bytes of appends in flight across the server; appends past it
    /// wait. Accepts a plain byte count or a KiB/MiB/GiB suffix; at most 1GiB.
    #[arg(long, env = "SLUICE_APPEND_INFLIGHT_BYTES", default_value = "128MiB", value_parser = parse_inflight_bytes)]
    pub append_inflight_bytes: u64,

    /// How long a deleted basin or stream is reported as "deletion pending" before it is
    /// removed in the background, in milliseconds.
    #[arg(long, env = "SLUICE_DELETION_DELAY_MS", default_value_t = 2000)]
    pub deletion_delay_ms: u64,

    /// On SIGTERM, how long to keep serving with `/health` failing before the drain starts,
    /// in milliseconds: time for load balancers to notice and stop sending new requests.
    #[arg(long, env = "SLUICE_DRAIN_GRACE_MS", default_value_t = 0)]
    pub drain_grace_ms: u64,

    /// Enforce access tokens, with this as the root token: every request but `/health`,
    /// `/ping` and `/metrics` then needs `Authorization: Bearer` with this token or one
    /// issued through `/v1/access-tokens`. Off by default (any token is accepted).
    #[arg(
        long,
        env = "SLUICE_ROOT_TOKEN",
        hide_env_values = true,
        conflicts_with = "root_token_file"
    )]
    pub root_token: Option<String>,

    /// Like `--root-token`, read from a file (surrounding whitespace is ignored).
    #[arg(long, env = "SLUICE_ROOT_TOKEN_FILE")]
    pub root_token_file: Option<PathBuf>,

    /// Issued tokens each shard keeps verified in memory; past this, the least recently
    /// used is dropped and looked up again in storage on its next request.
    #[arg(long, env = "SLUICE_VERIFIED_TOKENS", default_value_t = sluice_shards::tokens::VERIFIED_CACHE_MAX as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub verified_tokens: u64,
}

impl Cli {
    pub fn storage_location(&self) -> StorageLocation {
        match (&self.local_root, &self.bucket) {
            (Some(dir), _) => StorageLocation::Local(dir.clone()),
            (None, Some(bucket)) => StorageLocation::S3 {
                bucket: bucket.clone(),
                path: self.path.clone(),
            },
            (None, None) => StorageLocation::Memory,
        }
    }

    pub fn wal_location(&self) -> Option<WalLocation> {
        match (&self.wal_local_root, &self.wal_bucket) {
            (Some(dir), _) => Some(WalLocation::Local(dir.clone())),
            (None, Some(bucket)) => Some(WalLocation::S3 {
                bucket: bucket.clone(),
            }),
            (None, None) => None,
        }
    }

    pub fn shard_count(&self) -> usize {
        self.shards
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn deletion_delay(&self) -> Duration {
        Duration::from_millis(self.deletion_delay_ms)
    }

    pub fn drain_grace(&self) -> Duration {
        Duration::from_millis(self.drain_grace_ms)
    }

    /// The root token, when enforcement is on.
    pub fn root_token(&self) -> anyhow::Result<Option<String>> {
        let token = match (&self.root_token, &self.root_token_file) {
            (Some(token), _) => token.trim().to_owned(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| {
                    anyhow::anyhow!("reading the root token from {}: {e}", path.display())
                })?
                .trim()
                .to_owned(),
            (None, None) => return Ok(None),
        };
        if token.is_empty() {
            anyhow::bail!("the root token is empty");
        }
        Ok(Some(token))
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls_self || self.tls_cert.is_some()
    }
}

fn parse_inflight_bytes(text: &str) -> Result<u64, String> {
    let bytes = parse_bytes(text)?;
    let max = sluice_shards::shard::APPEND_INFLIGHT_BYTES_MAX;
    if bytes > max {
        return Err(format!(
            "`{text}` is more than the most allowed, {}GiB",
            max >> 30
        ));
    }
    Ok(bytes)
}

/// `1048576`, `64KiB`, `128MiB`, `1GiB`.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a byte count"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit `{other}`: use KiB, MiB or GiB")),
    };
    n.checked_mul(scale)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("`{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("128MiB"), Ok(128 << 20));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("12MB").is_err());
    }

    #[test]
    fn a_write_ahead_store_needs_a_main_one_and_is_one_of_two() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            super::Cli::try_parse_from(std::iter::once("sluice").chain(args.iter().copied()))
                .map(|cli| cli.wal_location())
        };
        assert!(parse(&["--wal-local-root", "/tmp/w"]).is_err(), "in memory");
        assert!(parse(&["--wal-bucket", "b"]).is_err(), "in memory");
        assert!(parse(&[
            "--local-root",
            "/d",
            "--wal-local-root",
            "/w",
            "--wal-bucket",
            "b"
        ])
        .is_err());
        assert!(matches!(
            parse(&["--local-root", "/d", "--wal-local-root", "/w"]),
            Ok(Some(super::WalLocation::Local(_)))
        ));
        assert!(matches!(
            parse(&["--bucket", "main", "--wal-bucket", "fast"]),
            Ok(Some(super::WalLocation::S3 { .. }))
        ));
        assert!(matches!(parse(&["--bucket", "main"]), Ok(None)));
    }

    #[test]
    fn the_inflight_budget_is_refused_past_its_bound() {
        use clap::Parser;
        let parse = |value: &str| {
            super::Cli::try_parse_from(["sluice", "--append-inflight-bytes", value])
                .map(|cli| cli.append_inflight_bytes)
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        let refused = parse("1073741825").unwrap_err();
        assert!(
            refused.contains("more than the most allowed, 1GiB"),
            "{refused}"
        );
        assert!(parse("8GiB").is_err());
    }
}
