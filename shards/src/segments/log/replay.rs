//! What start-up replay keeps of the commits above the durable watermark, apart from any
//! I/O (decision 0011, part 6).
//!
//! Replay sees every position between the watermark and its own fence, in order, each a
//! commit, a fence or a void. It keeps per stream the tail it has reached (from the
//! stream's durable state) and the runs it applied since, and for each run of a commit of
//! the current epoch:
//! - one that starts at the tail is applied;
//! - one that starts below it supersedes what replay applied from there on: a stream that
//!   failed and resequenced starts its next generation at its last acknowledged end, which
//!   is at or below the start of every run of the failed generation;
//! - one that starts above it is skipped: a run before it in its generation is missing.
//!
//! Commits of an epoch older than the latest fence are skipped whole (their writer was
//! fenced before them), and so are voids. Runs below a stream's durable tail never occur
//! (acknowledged runs are never superseded); one that did would be skipped.

use std::collections::HashMap;

use super::commit::Kind;
use super::core::RunInfo;

/// A stream's replayed runs and where they end.
pub(crate) struct Replayed<R> {
    /// The tail of the stream's durable state, where replay began.
    pub durable_tail: u64,
    /// The runs to index, in order, from `durable_tail` on, densely.
    pub runs: Vec<(RunInfo, R)>,
}

impl<R> Replayed<R> {
    pub(crate) fn tail(&self) -> u64 {
        self.runs
            .last()
            .map_or(self.durable_tail, |(info, _)| info.end_seq_num())
    }
}

pub(crate) struct Replay<R> {
    epoch: u64,
    streams: HashMap<u128, Replayed<R>>,
}

impl<R> Replay<R> {
    /// Replay after the durable watermark, written by a writer of `epoch`.
    pub(crate) fn new(epoch: u64) -> Replay<R> {
        Replay {
            epoch,
            streams: HashMap::new(),
        }
    }

    /// The object at the next position. `durable_tail` gives a stream's durable tail the
    /// first time replay meets it.
    pub(crate) fn object(
        &mut self,
        kind: Kind,
        epoch: u64,
        runs: Vec<(RunInfo, R)>,
        mut durable_tail: impl FnMut(u128) -> u64,
    ) {
        match kind {
            Kind::Void => return,
            Kind::Fence => {
                debug_assert!(epoch > self.epoch, "fences come in epoch order");
                self.epoch = self.epoch.max(epoch);
                return;
            }
            Kind::Commit if epoch != self.epoch => {
                debug_assert!(epoch < self.epoch, "a writer's commits follow its fence");
                return;
            }
            Kind::Commit => {}
        }
        for (info, run) in runs {
            let stream = self.streams.entry(info.stream).or_insert_with(|| Replayed {
                durable_tail: durable_tail(info.stream),
                runs: Vec::new(),
            });
            let tail = stream.tail();
            if info.first_seq_num > tail || info.first_seq_num < stream.durable_tail {
                continue;
            }
            if info.first_seq_num < tail {
                stream
                    .runs
                    .retain(|(applied, _)| applied.first_seq_num < info.first_seq_num);
                debug_assert_eq!(
                    stream.tail(),
                    info.first_seq_num,
                    "runs are dense, so superseding ends where the new run starts"
                );
            }
            stream.runs.push((info, run));
        }
    }

    /// Every stream replay applied runs to, with those runs.
    pub(crate) fn finish(self) -> HashMap<u128, Replayed<R>> {
        self.streams
            .into_iter()
            .filter(|(_, replayed)| !replayed.runs.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageClass;

    fn run(stream: u128, first: u64, count: u32) -> (RunInfo, &'static str) {
        let info = RunInfo {
            stream,
            generation: 0,
            first_seq_num: first,
            record_count: count,
            bytes: 1,
            class: StorageClass::Express,
            oldest_ms: 0,
        };
        (info, "")
    }

    fn tails(replay: Replay<&'static str>) -> Vec<(u128, u64, Vec<u64>)> {
        let mut out: Vec<_> = replay
            .finish()
            .into_iter()
            .map(|(stream, r)| {
                let tail = r.tail();
                (
                    stream,
                    tail,
                    r.runs.iter().map(|(i, _)| i.first_seq_num).collect(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_run_below_the_tail_supersedes_one_above_it_is_skipped() {
        let mut replay = Replay::new(1);
        let durable = |_| 10;
        replay.object(Kind::Commit, 1, vec![run(1, 10, 5), run(2, 12, 1)], durable);
        replay.object(Kind::Void, 0, Vec::new(), durable);
        replay.object(Kind::Commit, 1, vec![run(1, 15, 3)], durable);
        replay.object(Kind::Commit, 1, vec![run(1, 10, 2), run(2, 10, 2)], durable);
        assert_eq!(tails(replay), vec![(1, 12, vec![10]), (2, 12, vec![10])]);
    }

    #[test]
    fn after_a_fence_only_its_writer_counts() {
        let mut replay = Replay::new(1);
        let durable = |_| 0;
        replay.object(Kind::Commit, 1, vec![run(1, 0, 1)], durable);
        replay.object(Kind::Fence, 5, Vec::new(), durable);
        // The old writer's commit, landed after the fence.
        replay.object(Kind::Commit, 1, vec![run(1, 1, 1)], durable);
        replay.object(Kind::Commit, 5, vec![run(1, 1, 4)], durable);
        assert_eq!(tails(replay), vec![(1, 5, vec![0, 1])]);
    }
}
