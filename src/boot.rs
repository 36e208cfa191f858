//! Boot and shutdown: open storage, reserve the port, start the shards, wait for a signal,
//! drain, close storage.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use crossbeam_channel::RecvTimeoutError;
use sluice_shards::executors::{self, spawn_shards};
use sluice_shards::segments::Cadence;
use sluice_shards::storage::{Sidecar, StorageLocation, WalLocation};
use sluice_shards::EngineOptions;
use tracing::{info, warn};

use crate::api::dashboard::ServerInfo;
use crate::api::{ApiContext, RootToken};
use crate::cli::Cli;
use crate::front::{self, tls, FrontConfig, Phase};

/// How long shards may take to bind the port before boot gives up.
const BIND_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(cli: Cli) -> anyhow::Result<()> {
    abort_on_panic();
    raise_fd_limit();
    executors::check_io_uring()?;
    let shard_count = cli.shard_count();
    let tls = if cli.tls_self {
        Some(tls::self_signed()?)
    } else if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        Some(tls::from_pem_files(cert, key)?)
    } else {
        None
    };

    let init = cli
        .init_file
        .as_deref()
        .map(crate::init_file::InitFile::load)
        .transpose()?
        .map(Arc::new);

    let location = cli.storage_location();
    let wal = cli.wal_location();
    info!(?location, ?wal, shard_count, "opening storage");
    let sidecar =
        Sidecar::open(&location, wal.as_ref(), cli.io_threads).context("opening storage")?;

    let requested: SocketAddr = (cli.host.as_str(), cli.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}:{}", cli.host, cli.port))?
        .next()
        .ok_or_else(|| anyhow!("no address for {}", cli.host))?;
    // Port 0: hold a bound, non-listening SO_REUSEPORT socket so every shard binds the same
    // ephemeral port; it takes no connections and is dropped once the shards listen.
    let (addr, reservation) = reserve_port(requested)?;

    let front = Arc::new(FrontConfig {
        addr,
        tls,
        api: ApiContext {
            cors: !cli.no_cors,
            dashboard: !cli.no_dashboard,
            root_token: cli.root_token()?.as_deref().map(RootToken::new),
            server: Arc::new(ServerInfo {
                version: env!("CARGO_PKG_VERSION"),
                storage: storage_line(&location, wal.as_ref()),
                shards: shard_count,
                tls: cli.tls_enabled(),
                cors: !cli.no_cors,
                append_inflight_bytes: cli.append_inflight_bytes,
                deletion_delay_ms: cli.deletion_delay_ms,
                drain_grace_ms: cli.drain_grace_ms,
            }),
        },
        timers: sidecar.runtime(),
        drained: Default::default(),
    });
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(shard_count);
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Serving);
    let options = EngineOptions {
        append_inflight_bytes: cli.append_inflight_bytes,
        clock: sluice_shards::clock::Clock::system(),
        deletion_delay: cli.deletion_delay(),
        verified_tokens_max: usize::try_from(cli.verified_tokens).unwrap_or(usize::MAX),
        // Paced by what a write costs where the commits go.
        commit_cadence: match (&location, &wal) {
            (_, Some(WalLocation::S3 { .. })) | (StorageLocation::S3 { .. }, None) => {
                Cadence::Bucket
            }
            _ => Cadence::Local,
        },
        ..EngineOptions::default()
    };
    let handles = spawn_shards(shard_count, sidecar.storage(), options, move |shard| {
        let (front, ready, stop, init) = (
            front.clone(),
            ready_tx.clone(),
            phase_rx.clone(),
            init.clone(),
        );
        async move {
            // One shard applies the init file before it reports ready, so the server is
            // announced only once the declared basins and streams exist.
            if let (0, Some(init)) = (shard.id(), init) {
                if let Err(e) = init.apply(&shard).await {
                    let _ = ready.send(Err(std::io::Error::other(format!("{e:#}"))));
                    return;
                }
            }
            front::run(shard, front, ready, stop).await
        }
    })?;
    for _ in 0..shard_count {
        match ready_rx.recv_timeout(BIND_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("starting on {addr}: {e}"),
            Err(RecvTimeoutError::Timeout) => {
                bail!("shards did not start within {BIND_TIMEOUT:?}")
            }
            // A shard's thread ended before it was ready: its executor could not start.
            Err(RecvTimeoutError::Disconnected) => {
                let failure = handles
                    .into_iter()
                    .find_map(|handle| handle.join().err())
                    .map_or_else(|| "it stopped".to_owned(), |e| e.to_string());
                bail!("a shard could not start: {failure}")
            }
        }
    }
    drop(reservation);

    let scheme = if cli.tls_enabled() { "https" } else { "http" };
    let shown = if addr.ip().is_unspecified() {
        format!("{scheme}://localhost:{}", addr.port())
    } else {
        format!("{scheme}://{addr}")
    };
    info!(%addr, shard_count, "sluice is listening");
    println!("export S2_ACCOUNT_ENDPOINT={shown}");
    println!("export S2_BASIN_ENDPOINT={shown}");
    println!("export S2_ACCESS_TOKEN=ignored");
    if !cli.no_dashboard {
        println!("# dashboard: {shown}/dashboard");
    }
    println!("# storage: {}", storage_line(&location, wal.as_ref()));
    if cli.tls_self {
        println!("export S2_SSL_NO_VERIFY=true");
    }

    let mut signals = shutdown_signals()?;
    signals.forever().next();
    // A second signal does not wait for the grace period or the drain.
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            eprintln!("sluice: second signal, exiting without draining");
            std::process::exit(1);
        }
    });
    let _ = phase_tx.send(Phase::Leaving);
    let grace = cli.drain_grace();
    if !grace.is_zero() {
        info!(
            ?grace,
            "shutting down: /health fails, still serving for the grace period"
        );
        std::thread::sleep(grace);
    }
    info!("shutting down: draining connections");
    let _ = phase_tx.send(Phase::Stopping);
    for handle in handles {
        if let Err(e) = handle.join() {
            warn!(error = %e, "shard ended with an error");
        }
    }
    sidecar.close().context("closing storage")?;
    info!("stopped");
    Ok(())
}

/// Where the data is, and the write-ahead log when apart, as the banner and dashboard say.
fn storage_line(location: &StorageLocation, wal: Option<&WalLocation>) -> String {
    let main = match location {
        StorageLocation::Memory => "in memory".to_owned(),
        StorageLocation::Local(dir) => format!("local disk at {}", dir.display()),
        StorageLocation::S3 { bucket, path } => format!(
            "bucket {bucket}{}",
            path.as_deref().map_or(String::new(), |p| format!("/{p}"))
        ),
    };
    match wal {
        None => main,
        Some(WalLocation::Local(dir)) => {
            format!("{main}, write-ahead log on local disk at {}", dir.display())
        }
        Some(WalLocation::S3 { bucket }) => format!("{main}, write-ahead log in bucket {bucket}"),
    }
}

fn reserve_port(requested: SocketAddr) -> anyhow::Result<(SocketAddr, Option<socket2::Socket>)> {
    if requested.port() != 0 {
        return Ok((requested, None));
    }
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(requested),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&requested.into())?;
    let bound = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| anyhow!("reserved address is not an IP socket"))?;
    Ok((bound, Some(socket)))
}

fn shutdown_signals() -> anyhow::Result<signal_hook::iterator::Signals> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    Ok(signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?)
}

/// A shard that panics must not leave the process half alive: report and abort.
fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        std::process::abort();
    }));
}

/// Each connection and each tailing reader holds a descriptor: allow as many as permitted.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => info!(limit = n, "open file limit"),
        Err(e) => warn!(error = %e, "could not raise the open file limit"),
    }
}
