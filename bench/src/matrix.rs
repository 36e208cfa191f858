//! The standard matrix: the runs behind `all`, `make bench` and `make bench-compare`, each a
//! scenario with the shape its target is stated for (issue #5's table in BENCHMARKS.md).

use anyhow::{bail, Result};

use crate::scenarios::{Knobs, Scenario};

/// One run of a scenario under a label, with the knobs it runs with.
#[derive(Clone)]
pub struct Job {
    pub label: String,
    pub scenario: Scenario,
    pub knobs: Knobs,
}

/// A matrix entry: its label and the shape it gives its scenario.
struct Entry {
    label: &'static str,
    shape: Shape,
}

/// What a matrix entry sets; everything else comes from the command line.
enum Shape {
    Append {
        streams: usize,
        record_size: usize,
        batch: usize,
        /// Measure loopback TCP first, to report the append rate's share of it.
        iperf3: bool,
        /// Seconds to write for and a total pace in MiB/s, for the sustained entry
        /// (`None`: the command line's, by default 10 s unbounded).
        sustained: Option<(f64, f64)>,
    },
    Latency,
    /// Full and `--quick` sizes.
    Catchup {
        mib: [u64; 2],
    },
    /// Readers (full and `--quick`) and the writer's records per second.
    Fanout {
        readers: [usize; 2],
        rate: f64,
    },
    Streams {
        count: [usize; 2],
        /// Append one record to each stream, then idle (`--touch`).
        touch: bool,
    },
}

const KIB64: usize = 64 * 1024;

const MATRIX: &[Entry] = &[
    Entry {
        label: "append-64k-100",
        shape: Shape::Append {
            streams: 100,
            record_size: KIB64,
            batch: 8,
            iperf3: false,
            sustained: None,
        },
    },
    Entry {
        // Smaller batches than with 100 streams: one in flight per stream already makes a
        // 256 MiB backlog.
        label: "append-64k-1000",
        shape: Shape::Append {
            streams: 1000,
            record_size: KIB64,
            batch: 4,
            iperf3: false,
            sustained: None,
        },
    },
    Entry {
        label: "append-100b-100",
        shape: Shape::Append {
            streams: 100,
            record_size: 100,
            batch: 1,
            iperf3: false,
            sustained: None,
        },
    },
    Entry {
        label: "append-100b-1000",
        shape: Shape::Append {
            streams: 1000,
            record_size: 100,
            batch: 1,
            iperf3: false,
            sustained: None,
        },
    },
    Entry {
        // A minute of 64 KiB appends, paced so that what both servers keep in memory fits
        // this machine (at full speed a minute is tens of GiB): ack latency over the whole
        // minute, seconds without a single ack, RSS at the end.
        label: "sustained-64k-100",
        shape: Shape::Append {
            streams: 100,
            record_size: KIB64,
            batch: 8,
            iperf3: false,
            sustained: Some((60.0, 50.0)),
        },
    },
    Entry {
        // Full 1 MiB batches, next to what loopback TCP moves on the same machine.
        label: "append-1m-batches",
        shape: Shape::Append {
            streams: 10,
            record_size: KIB64,
            batch: 16,
            iperf3: true,
            sustained: None,
        },
    },
    Entry {
        label: "latency",
        shape: Shape::Latency,
    },
    Entry {
        label: "catchup-256m",
        shape: Shape::Catchup { mib: [256, 32] },
    },
    Entry {
        // 20 records/s makes 20,000 deliveries/s to verify: within what one client process
        // keeps up with here, so the latencies are the server's (at 200/s they were the
        // client's, on both servers).
        label: "fanout-1000",
        shape: Shape::Fanout {
            readers: [1000, 100],
            rate: 20.0,
        },
    },
    Entry {
        label: "streams-10k",
        shape: Shape::Streams {
            count: [10_000, 1000],
            touch: false,
        },
    },
    Entry {
        // What the server keeps of every stream it has served: streamers past the bound
        // are unloaded once idle.
        label: "touch-100k",
        shape: Shape::Streams {
            count: [100_000, 10_000],
            touch: true,
        },
    },
];

/// Entries run only when named: their figures mean something only on a bucket.
const ON_REQUEST: &[Entry] = &[
    Entry {
        // Light, steady load on a store that bills per request (run it with --moto and
        // --store-latency-ms): 1 KiB appends, one record each, 100 a second over 100
        // streams. What counts is ack latency and object writes per second.
        label: "paced-1k-100",
        shape: Shape::Append {
            streams: 100,
            record_size: 1024,
            batch: 1,
            iperf3: false,
            sustained: Some((30.0, 100.0 / 1024.0)),
        },
    },
    Entry {
        // The same at 1,000 appends a second.
        label: "paced-1k-1000",
        shape: Shape::Append {
            streams: 100,
            record_size: 1024,
            batch: 1,
            iperf3: false,
            sustained: Some((30.0, 1000.0 / 1024.0)),
        },
    },
];

impl Entry {
    fn job(&self, knobs: &Knobs, quick: bool) -> Job {
        let mut knobs = knobs.clone();
        let size = usize::from(quick);
        let scenario = match self.shape {
            Shape::Append {
                streams,
                record_size,
                batch,
                iperf3,
                sustained,
            } => {
                knobs.streams = streams;
                knobs.record_size = record_size;
                knobs.batch = batch;
                knobs.iperf3 = iperf3;
                if let Some((seconds, mibps)) = sustained {
                    knobs.duration = Some(if quick { seconds / 10.0 } else { seconds });
                    knobs.target_mibps = Some(mibps);
                }
                Scenario::Append
            }
            Shape::Latency => Scenario::Latency,
            Shape::Catchup { mib } => {
                knobs.prefill_mib = Some(mib[size]);
                Scenario::Catchup
            }
            Shape::Fanout { readers, rate } => {
                knobs.readers = Some(readers[size]);
                knobs.fanout_rate = rate;
                Scenario::Fanout
            }
            Shape::Streams { count, touch } => {
                knobs.stream_count = Some(count[size]);
                knobs.touch = touch;
                Scenario::Streams
            }
        };
        Job {
            label: self.label.to_owned(),
            scenario,
            knobs,
        }
    }
}

/// The jobs for `names`: matrix labels take the matrix's shape; plain scenario names
/// (`append`, `latency`, ...) run with the command line's knobs as given. No names: the
/// whole matrix.
pub fn jobs(names: &[String], knobs: &Knobs, quick: bool) -> Result<Vec<Job>> {
    let from_matrix = |entry: &Entry| entry.job(knobs, quick);
    if names.is_empty() {
        return Ok(MATRIX.iter().map(from_matrix).collect());
    }
    names
        .iter()
        .map(|name| {
            if let Some(entry) = MATRIX
                .iter()
                .chain(ON_REQUEST)
                .find(|entry| entry.label == name)
            {
                return Ok(from_matrix(entry));
            }
            match Scenario::ALL
                .iter()
                .find(|scenario| scenario.name() == name)
            {
                Some(&scenario) => Ok(Job::plain(scenario, knobs)),
                None => bail!(
                    "unknown scenario {name:?}; matrix entries: {}; scenarios: {}",
                    MATRIX
                        .iter()
                        .map(|e| e.label)
                        .collect::<Vec<_>>()
                        .join(", "),
                    Scenario::ALL.map(Scenario::name).join(", ")
                ),
            }
        })
        .collect()
}

impl Job {
    /// `scenario` as the command line's knobs shape it.
    pub fn plain(scenario: Scenario, knobs: &Knobs) -> Job {
        Job {
            label: scenario.name().to_owned(),
            scenario,
            knobs: knobs.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        knobs: Knobs,
    }

    fn defaults() -> Knobs {
        Cli::parse_from(["bench"]).knobs
    }

    #[test]
    fn no_names_is_the_whole_matrix_with_its_shapes() {
        let jobs = jobs(&[], &defaults(), false).unwrap();
        assert_eq!(jobs.len(), MATRIX.len());
        let thousand = jobs.iter().find(|j| j.label == "append-64k-1000").unwrap();
        assert_eq!(
            (thousand.knobs.streams, thousand.knobs.record_size),
            (1000, KIB64)
        );
        let fanout = jobs.iter().find(|j| j.label == "fanout-1000").unwrap();
        assert_eq!(fanout.knobs.readers, Some(1000));
        let sustained = jobs
            .iter()
            .find(|j| j.label == "sustained-64k-100")
            .unwrap();
        assert_eq!(
            (sustained.knobs.duration, sustained.knobs.target_mibps),
            (Some(60.0), Some(50.0))
        );
        let unbounded = jobs.iter().find(|j| j.label == "append-64k-100").unwrap();
        assert_eq!(
            (unbounded.knobs.duration, unbounded.knobs.target_mibps),
            (None, None)
        );
    }

    #[test]
    fn plain_names_keep_the_command_line_knobs() {
        let mut knobs = defaults();
        knobs.streams = 7;
        let jobs = jobs(&["append".to_owned()], &knobs, false).unwrap();
        assert_eq!(jobs[0].scenario, Scenario::Append);
        assert_eq!(jobs[0].knobs.streams, 7);
        assert!(!jobs[0].knobs.iperf3);
    }

    #[test]
    fn unknown_names_are_refused_with_the_choices() {
        let err = jobs(&["nope".to_owned()], &defaults(), false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("append-64k-100") && err.contains("latency"),
            "{err}"
        );
    }
}
