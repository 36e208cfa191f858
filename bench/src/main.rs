//! `sluice-bench`: load generator for S2-compatible servers (Sluice, `s2 lite`).
//!
//! Runs scenarios against an endpoint (`sluice-bench [--endpoint URL] <scenario|all>`), or
//! starts server commands itself and compares them (`sluice-bench compare --a CMD [--b CMD]`).
//! Every record written carries a chained hash that readers verify; any mismatch, gap or
//! duplicate ends the run with a non-zero exit status.

mod latency_proxy;
mod loopback;
mod matrix;
mod moto;
mod report;
mod scenarios;
mod server;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use crate::latency_proxy::LatencyProxy;
use crate::matrix::Job;
use crate::moto::Moto;
use crate::report::{median_outcomes, print_comparison, print_json_line, print_outcomes, Outcome};
use crate::scenarios::{sdk_client, Ctx, Knobs, Scenario};
use crate::server::ServerProcess;

#[derive(Parser)]
#[command(
    name = "sluice-bench",
    version,
    about = "Load generator for Sluice and other S2-compatible servers"
)]
struct Cli {
    /// Endpoint of the server under test, e.g. http://127.0.0.1:8080 (account and basin).
    #[arg(long, env = "S2_ENDPOINT", global = true)]
    endpoint: Option<String>,

    /// Print one JSON object per line instead of a table.
    #[arg(long, global = true)]
    json: bool,

    /// Shorter runs and smaller sizes.
    #[arg(long, global = true)]
    quick: bool,

    /// Pid of the server, for RSS readings in the `streams` scenario.
    #[arg(long, global = true)]
    server_pid: Option<u32>,

    #[command(flatten)]
    knobs: Knobs,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Append throughput and ack latency: S streams x C append sessions.
    Append,
    /// Append-to-delivery latency to a tailing reader at a fixed rate.
    Latency,
    /// Prefill a stream, then read it all from the start.
    Catchup,
    /// Many tailing readers on one stream with a modest writer.
    Fanout,
    /// Stream creation rate and latency (and server RSS with --server-pid).
    Streams,
    /// The standard matrix: every scenario, in the shapes BENCHMARKS.md's targets name.
    All,
    /// Start server commands and compare them over several rounds.
    Compare(CompareArgs),
}

#[derive(Args)]
struct CompareArgs {
    /// Command for server A; `{port}` and `{dir}` (a fresh data directory) are substituted.
    #[arg(long)]
    a: String,

    /// Command for server B; without it only A is measured.
    #[arg(long)]
    b: Option<String>,

    /// Rounds; each round runs every scenario on A, then on B.
    #[arg(long, default_value_t = 3)]
    rounds: usize,

    /// Comma-separated matrix entries (e.g. append-64k-100) or plain scenarios (append,
    /// latency, catchup, fanout, streams: shaped by the other options) [default: the
    /// whole matrix].
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,

    /// Path of moto_server: every server gets a fresh moto, `{bucket}` in the commands
    /// names its bucket, and append entries report the object writes per MiB appended.
    #[arg(long)]
    moto: Option<PathBuf>,

    /// With --moto: put a proxy between each server and its moto that delays every
    /// request and answer by this many milliseconds each way (a real store takes tens
    /// where a loopback moto takes one).
    #[arg(long, default_value_t = 0)]
    store_latency_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("sluice-bench: errors were reported (see the errors column)");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("sluice-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Returns whether every scenario finished without errors.
async fn run(cli: Cli) -> Result<bool> {
    let plain = |scenario| vec![Job::plain(scenario, &cli.knobs)];
    let chosen = match &cli.command {
        Cmd::Append => plain(Scenario::Append),
        Cmd::Latency => plain(Scenario::Latency),
        Cmd::Catchup => plain(Scenario::Catchup),
        Cmd::Fanout => plain(Scenario::Fanout),
        Cmd::Streams => plain(Scenario::Streams),
        Cmd::All => matrix::jobs(&[], &cli.knobs, cli.quick)?,
        Cmd::Compare(args) => return compare(&cli, args).await,
    };
    let Some(endpoint) = cli.endpoint.as_deref() else {
        bail!("no endpoint: pass --endpoint URL or set S2_ENDPOINT");
    };
    let client = sdk_client(endpoint)?;

    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut failure = None;
    for job in chosen {
        let ctx = Ctx {
            client: client.clone(),
            knobs: job.knobs,
            quick: cli.quick,
            server_pid: cli.server_pid,
            moto_log: None,
            data_dir: None,
        };
        match scenarios::run(&ctx, &job.label, job.scenario).await {
            Ok(outcome) => {
                if cli.json {
                    print_json_line(&outcome);
                }
                outcomes.push(outcome);
            }
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    if !cli.json && !outcomes.is_empty() {
        print_outcomes(&outcomes);
    }
    if let Some(err) = failure {
        return Err(err);
    }
    Ok(outcomes.iter().all(|outcome| outcome.errors == 0))
}

async fn compare(cli: &Cli, args: &CompareArgs) -> Result<bool> {
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let with_moto = args.moto.is_some();
    server::check_template(&args.a, with_moto)?;
    if let Some(b) = &args.b {
        server::check_template(b, with_moto)?;
    }
    let chosen = matrix::jobs(&args.scenarios, &cli.knobs, cli.quick)?;
    let mut sides: Vec<(&'static str, &str)> = vec![("A", args.a.as_str())];
    if let Some(b) = &args.b {
        sides.push(("B", b.as_str()));
    }

    // Every scenario gets a fresh server: what one leaves behind (memtable flushes,
    // compaction, a dropped basin's deletion) must not be billed to the next.
    let mut outcomes: Vec<(&'static str, Outcome)> = Vec::new();
    for round in 1..=args.rounds {
        for job in &chosen {
            for &(side, template) in &sides {
                eprintln!(
                    "round {round}/{}: {} on server {side}",
                    args.rounds, job.label
                );
                let mut moto = match &args.moto {
                    Some(binary) => Some(Moto::start(binary, moto_log()).await?),
                    None => None,
                };
                let _proxy = match &mut moto {
                    Some(moto) if args.store_latency_ms > 0 => {
                        let delay = Duration::from_millis(args.store_latency_ms);
                        let proxy = LatencyProxy::start(moto.port(), delay).await?;
                        moto.reach_through(proxy.port());
                        Some(proxy)
                    }
                    _ => None,
                };
                let server = ServerProcess::start(side, template, moto.as_ref()).await?;
                let ctx = Ctx {
                    client: sdk_client(&server.endpoint())?,
                    knobs: job.knobs.clone(),
                    quick: cli.quick,
                    server_pid: server.pid(),
                    moto_log: moto.as_ref().map(|m| m.log().to_owned()),
                    data_dir: Some(server.data_dir()),
                };
                let mut result = scenarios::run(&ctx, &job.label, job.scenario).await;
                drop(ctx);
                server.stop().await;
                if let (Some(moto), Ok(outcome)) = (&moto, &mut result) {
                    add_object_writes(outcome, moto.object_writes()?);
                }
                match result {
                    Ok(outcome) => {
                        eprintln!("  {side} {}", outcome.brief());
                        outcomes.push((side, outcome));
                    }
                    Err(err) => {
                        return Err(
                            err.context(format!("server {side} (`{template}`), round {round}"))
                        );
                    }
                }
            }
        }
    }
    if args.b.is_some() {
        print_comparison(&outcomes, cli.json);
    } else {
        // A single server: one row per scenario with its medians over the rounds.
        let medians = median_outcomes(&outcomes, "A");
        if cli.json {
            medians.iter().for_each(print_json_line);
        } else {
            print_outcomes(&medians);
        }
    }
    Ok(outcomes.iter().all(|(_, outcome)| outcome.errors == 0))
}

/// A fresh file for one moto's request log.
fn moto_log() -> PathBuf {
    std::env::temp_dir().join(format!(
        "sluice-bench-moto-{}-{}.log",
        std::process::id(),
        &scenarios::random_hex()[..8]
    ))
}

/// The object writes a server made during a scenario, from its start to its exit (so
/// flushes and compaction it does in the background count), per MiB the scenario appended.
fn add_object_writes(outcome: &mut Outcome, writes: u64) {
    outcome
        .extra
        .insert("object_writes".to_owned(), writes as f64);
    if let Some(&mib) = outcome.extra.get("appended_mib") {
        outcome.extra.insert(
            "object_writes_per_mib".to_owned(),
            writes as f64 / mib.max(1e-9),
        );
    }
}
