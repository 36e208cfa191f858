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

/// A matrix entry: its label, its scenario, and how it reshapes the command line's knobs.
struct Entry {
    label: &'static str,
    scenario: Scenario,
    shape: fn(&mut Knobs, bool),
}

const KIB64: usize = 64 * 1024;

const MATRIX: &[Entry] = &[
    Entry {
        label: "append-64k-100",
        scenario: Scenario::Append,
        shape: |knobs, _| {
            knobs.streams = 100;
            knobs.record_size = KIB64;
            knobs.batch = 8;
        },
    },
    Entry {
        // Smaller batches than with 100 streams: one in flight per stream already makes a
        // 256 MiB backlog.
        label: "append-64k-1000",
        scenario: Scenario::Append,
        shape: |knobs, _| {
            knobs.streams = 1000;
            knobs.record_size = KIB64;
            knobs.batch = 4;
        },
    },
    Entry {
        label: "append-100b-100",
        scenario: Scenario::Append,
        shape: |knobs, _| {
            knobs.streams = 100;
            knobs.record_size = 100;
            knobs.batch = 1;
        },
    },
    Entry {
        // Full 1 MiB batches, next to what loopback TCP moves on the same machine.
        label: "append-1m-batches",
        scenario: Scenario::Append,
        shape: |knobs, _| {
            knobs.streams = 10;
            knobs.record_size = KIB64;
            knobs.batch = 16;
            knobs.iperf3 = true;
        },
    },
    Entry {
        label: "latency",
        scenario: Scenario::Latency,
        shape: |_, _| {},
    },
    Entry {
        label: "catchup-256m",
        scenario: Scenario::Catchup,
        shape: |knobs, quick| knobs.prefill_mib = Some(if quick { 32 } else { 256 }),
    },
    Entry {
        label: "fanout-1000",
        scenario: Scenario::Fanout,
        shape: |knobs, quick| knobs.readers = Some(if quick { 100 } else { 1000 }),
    },
    Entry {
        label: "streams-10k",
        scenario: Scenario::Streams,
        shape: |knobs, quick| knobs.stream_count = Some(if quick { 1000 } else { 10_000 }),
    },
];

/// The jobs for `names`: matrix labels take the matrix's shape; plain scenario names
/// (`append`, `latency`, ...) run with the command line's knobs as given. No names: the
/// whole matrix.
pub fn jobs(names: &[String], knobs: &Knobs, quick: bool) -> Result<Vec<Job>> {
    let from_matrix = |entry: &Entry| {
        let mut shaped = knobs.clone();
        (entry.shape)(&mut shaped, quick);
        Job {
            label: entry.label.to_owned(),
            scenario: entry.scenario,
            knobs: shaped,
        }
    };
    if names.is_empty() {
        return Ok(MATRIX.iter().map(from_matrix).collect());
    }
    names
        .iter()
        .map(|name| {
            if let Some(entry) = MATRIX.iter().find(|entry| entry.label == name) {
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
