//! The committer's decisions, apart from any I/O: which sealed runs a commit carries, when
//! the next commit is due, and, as commits resolve in position order, which runs are live
//! (indexed and acknowledged) and which failed.
//!
//! The committer feeds it what happens (runs sealed by shards, a shard's word that it has
//! closed a failed generation of a stream, PUT outcomes in any order) and carries out what
//! it returns. The rules (decision 0011):
//! - commits resolve in position order, whatever order their PUTs finish in;
//! - a run is live only if its commit was written and no run of its stream's generation
//!   failed before it; so once a run fails, nothing of that generation is live again,
//!   however late it arrives (a run sealed before its shard heard of the failure);
//! - a generation's failure is remembered until its shard has closed the generation,
//!   which it does after it has failed its appends and resequenced: no run of it can be on
//!   its way after that;
//! - once a commit meets a newer writer's object (fenced), it and every commit after it
//!   fail, and no commit starts again;
//! - every submitted run gets exactly one verdict.
//!
//! Paired with those, debug builds assert that a stream's live runs are dense, and that no
//! run of a closed generation arrives.

use std::collections::{HashMap, VecDeque};

use crate::config::StorageClass;

/// Least time between the starts of two commits, unless [`COMMIT_TARGET_BYTES`] are
/// waiting: what bounds object writes per second under any load (decision 0011).
pub const EXPRESS_COMMIT_SPACING_MS: u64 = 35;
/// How long a `standard` append may wait for a commit to start.
pub const STANDARD_LINGER_MS: u64 = 300;
/// A commit starts as soon as this many bytes are waiting, whatever the spacing.
pub const COMMIT_TARGET_BYTES: usize = 8 << 20;
/// A commit carries at most this many bytes (the first run whatever its size), so offsets
/// fit in 32 bits.
pub const COMMIT_BYTES_MAX: usize = 256 << 20;
/// PUTs the committer has in flight at once.
pub const COMMITS_IN_FLIGHT_MAX: usize = 16;

/// What the core needs to know of a sealed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunInfo {
    pub stream: u128,
    /// The stream's generation when the run's appends were sequenced: drawn from a
    /// counter that only grows, so a later generation of a stream is always greater.
    pub generation: u64,
    pub first_seq_num: u64,
    pub record_count: u32,
    /// Bytes the run takes in the object.
    pub bytes: usize,
    pub class: StorageClass,
    /// When its oldest append reached its shard's writer.
    pub oldest_ms: u64,
}

impl RunInfo {
    pub(crate) fn end_seq_num(&self) -> u64 {
        self.first_seq_num + u64::from(self.record_count)
    }
}

/// How a commit's PUT ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The object is durable.
    Written,
    /// It failed, and may or may not have landed.
    Failed,
    /// A newer writer's object holds the position.
    Fenced,
}

/// A run's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Index it, then acknowledge its appends.
    Live,
    Failed,
}

/// A commit resolved in position order, with a verdict for each of its runs.
pub(crate) struct Resolved<R> {
    pub position: u64,
    /// Whether the object is durable and ours (its live runs may be indexed).
    pub written: bool,
    pub runs: Vec<(RunInfo, R, Verdict)>,
}

struct Commit<R> {
    position: u64,
    runs: Vec<(RunInfo, R)>,
    outcome: Option<Outcome>,
}

/// What the core remembers of a stream with runs submitted or a failure not yet closed.
#[derive(Debug, Default)]
struct Cursor {
    /// Runs submitted and not yet resolved.
    runs: usize,
    /// The highest generation with a failed run.
    failed_through: Option<u64>,
    /// The highest generation its shard has closed.
    closed_through: Option<u64>,
    /// Where the next live run must start, once one was live (for the density assertion).
    next_seq_num: Option<u64>,
}

impl Cursor {
    fn forgettable(&self) -> bool {
        self.runs == 0
            && self
                .failed_through
                .is_none_or(|failed| self.closed_through.is_some_and(|c| c >= failed))
    }
}

/// When the oldest appends not yet in a commit arrived, and how many bytes wait: of the
/// runs waiting in the core, or of those shards have not sealed yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Backlog {
    pub oldest_express_ms: Option<u64>,
    pub oldest_standard_ms: Option<u64>,
    pub bytes: usize,
}

impl Backlog {
    pub(crate) fn add(&mut self, class: StorageClass, oldest_ms: u64, bytes: usize) {
        let slot = match class {
            StorageClass::Express => &mut self.oldest_express_ms,
            StorageClass::Standard => &mut self.oldest_standard_ms,
        };
        *slot = Some(slot.map_or(oldest_ms, |t| t.min(oldest_ms)));
        self.bytes += bytes;
    }

    pub(crate) fn merge(mut self, other: Backlog) -> Backlog {
        if let Some(t) = other.oldest_express_ms {
            self.add(StorageClass::Express, t, 0);
        }
        if let Some(t) = other.oldest_standard_ms {
            self.add(StorageClass::Standard, t, 0);
        }
        self.bytes += other.bytes;
        self
    }

    fn is_empty(&self) -> bool {
        self.oldest_express_ms.is_none() && self.oldest_standard_ms.is_none()
    }
}

/// How commits are paced, by what an object write costs where the log lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// A bucket, where every object write is billed and takes tens of milliseconds: a
    /// commit starts at most every [`EXPRESS_COMMIT_SPACING_MS`], several may be in flight,
    /// and the spacing bounds the requests a second whatever the load.
    Bucket,
    /// Local disk or memory, where a write costs little: a commit starts as soon as the one
    /// before it is done (what arrives meanwhile rides the next), so acks wait for no
    /// timer, and under load each commit carries more.
    Local,
}

/// When the next commit should start: as soon as an express append waits, or a standard
/// one has waited [`STANDARD_LINGER_MS`], paced by `cadence` (`in_flight` commits are
/// unresolved); at once when [`COMMIT_TARGET_BYTES`] wait. `None` when nothing waits or
/// the cadence waits for a commit in flight.
pub(crate) fn due_ms(
    cadence: Cadence,
    last_start_ms: Option<u64>,
    in_flight: usize,
    backlog: Backlog,
) -> Option<u64> {
    if backlog.is_empty() {
        return None;
    }
    if backlog.bytes >= COMMIT_TARGET_BYTES {
        return Some(0);
    }
    let wanted = [
        backlog.oldest_express_ms,
        backlog
            .oldest_standard_ms
            .map(|t| t.saturating_add(STANDARD_LINGER_MS)),
    ]
    .into_iter()
    .flatten()
    .min()?;
    match cadence {
        Cadence::Bucket => {
            let spaced = last_start_ms.map_or(0, |t| t.saturating_add(EXPRESS_COMMIT_SPACING_MS));
            Some(wanted.max(spaced))
        }
        Cadence::Local => (in_flight == 0).then_some(wanted),
    }
}

pub(crate) struct Core<R> {
    cadence: Cadence,
    waiting: VecDeque<(RunInfo, R)>,
    in_flight: VecDeque<Commit<R>>,
    next_position: u64,
    last_start_ms: Option<u64>,
    cursors: HashMap<u128, Cursor>,
    /// A PUT met a newer writer's object: no commit starts again.
    stopped: bool,
    /// The fenced commit has resolved: every later one fails.
    fenced: bool,
}

impl<R> Core<R> {
    /// A core whose first commit takes `first_position`.
    pub(crate) fn new(cadence: Cadence, first_position: u64) -> Core<R> {
        Core {
            cadence,
            waiting: VecDeque::new(),
            in_flight: VecDeque::new(),
            next_position: first_position,
            last_start_ms: None,
            cursors: HashMap::new(),
            stopped: false,
            fenced: false,
        }
    }

    /// A run a shard sealed, in the order that shard sealed its runs.
    pub(crate) fn submit(&mut self, info: RunInfo, run: R) {
        let cursor = self.cursors.entry(info.stream).or_default();
        debug_assert!(
            cursor
                .closed_through
                .is_none_or(|closed| info.generation > closed),
            "no run of a closed generation arrives"
        );
        cursor.runs += 1;
        self.waiting.push_back((info, run));
    }

    /// The stream's shard has failed its appends of `generation` and resequenced: no run
    /// of that generation or an earlier one will come.
    pub(crate) fn close(&mut self, stream: u128, generation: u64) {
        if let Some(cursor) = self.cursors.get_mut(&stream) {
            cursor.closed_through = Some(
                cursor
                    .closed_through
                    .map_or(generation, |c| c.max(generation)),
            );
            if cursor.forgettable() {
                self.cursors.remove(&stream);
            }
        }
    }

    /// What waits for a commit.
    pub(crate) fn backlog(&self) -> Backlog {
        let mut backlog = Backlog::default();
        for (info, _) in &self.waiting {
            backlog.add(info.class, info.oldest_ms, info.bytes);
        }
        backlog
    }

    /// When the next commit is due, counting what shards hold unsealed (`unsealed`);
    /// `None` if nothing waits or no commit may start now.
    pub(crate) fn due_ms(&self, unsealed: Backlog) -> Option<u64> {
        if !self.may_start() {
            return None;
        }
        due_ms(
            self.cadence,
            self.last_start_ms,
            self.in_flight.len(),
            self.backlog().merge(unsealed),
        )
    }

    fn may_start(&self) -> bool {
        !self.stopped && self.in_flight.len() < COMMITS_IN_FLIGHT_MAX
    }

    /// Start a commit at `now_ms` with what waits, oldest first, up to
    /// [`COMMIT_BYTES_MAX`]: its position and runs, to PUT as one object.
    pub(crate) fn start(&mut self, now_ms: u64) -> Option<(u64, &[(RunInfo, R)])> {
        if !self.may_start() || self.waiting.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut runs = Vec::new();
        while let Some((info, _)) = self.waiting.front() {
            if !runs.is_empty() && bytes + info.bytes > COMMIT_BYTES_MAX {
                break;
            }
            bytes += info.bytes;
            runs.extend(self.waiting.pop_front());
        }
        let position = self.next_position;
        self.next_position += 1;
        self.last_start_ms = Some(now_ms);
        self.in_flight.push_back(Commit {
            position,
            runs,
            outcome: None,
        });
        let commit = self.in_flight.back()?;
        Some((position, &commit.runs))
    }

    /// Record how the PUT of the commit at `position` ended; returns the commits that are
    /// now resolved, in position order.
    pub(crate) fn complete(&mut self, position: u64, outcome: Outcome) -> Vec<Resolved<R>> {
        let commit = self.in_flight.iter_mut().find(|c| c.position == position);
        debug_assert!(
            commit.as_ref().is_some_and(|c| c.outcome.is_none()),
            "a commit in flight completes once"
        );
        if let Some(commit) = commit {
            commit.outcome = Some(outcome);
        }
        if outcome == Outcome::Fenced {
            self.stopped = true;
        }
        let mut resolved = Vec::new();
        while let Some(commit) = self.in_flight.pop_front_if(|front| front.outcome.is_some()) {
            resolved.push(self.resolve(commit));
        }
        resolved
    }

    /// Runs that will never get a commit, once fenced: failed.
    pub(crate) fn abandon_waiting(&mut self) -> Vec<(RunInfo, R)> {
        if !self.stopped {
            return Vec::new();
        }
        let abandoned: Vec<_> = self.waiting.drain(..).collect();
        for (info, _) in &abandoned {
            self.fail(info);
        }
        abandoned
    }

    /// Stop for good, as when fenced: commits in flight fail as they resolve, what waits
    /// is abandoned, and no commit starts again (nothing more can be indexed).
    pub(crate) fn halt(&mut self) {
        self.stopped = true;
        self.fenced = true;
    }

    /// Whether a PUT met a newer writer's object: no commit starts again.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Streams the core still remembers (for the bound on its memory).
    #[cfg(test)]
    pub(crate) fn remembered_streams(&self) -> usize {
        self.cursors.len()
    }

    fn resolve(&mut self, commit: Commit<R>) -> Resolved<R> {
        if commit.outcome == Some(Outcome::Fenced) {
            self.fenced = true;
        }
        let written = commit.outcome == Some(Outcome::Written) && !self.fenced;
        let mut runs = Vec::with_capacity(commit.runs.len());
        for (info, run) in commit.runs {
            let verdict = if written && self.live(&info) {
                Verdict::Live
            } else {
                self.fail(&info);
                Verdict::Failed
            };
            let cursor = self.cursors.get_mut(&info.stream);
            debug_assert!(cursor.is_some(), "a submitted run's stream is remembered");
            if let Some(cursor) = cursor {
                cursor.runs -= 1;
                if verdict == Verdict::Live {
                    debug_assert!(
                        cursor
                            .next_seq_num
                            .is_none_or(|next| next == info.first_seq_num),
                        "a stream's live runs are dense"
                    );
                    cursor.next_seq_num = Some(info.end_seq_num());
                }
                if cursor.forgettable() {
                    self.cursors.remove(&info.stream);
                }
            }
            runs.push((info, run, verdict));
        }
        Resolved {
            position: commit.position,
            written,
            runs,
        }
    }

    fn live(&self, info: &RunInfo) -> bool {
        self.cursors
            .get(&info.stream)
            .and_then(|c| c.failed_through)
            .is_none_or(|failed| info.generation > failed)
    }

    fn fail(&mut self, info: &RunInfo) {
        let cursor = self.cursors.entry(info.stream).or_default();
        cursor.failed_through = Some(
            cursor
                .failed_through
                .map_or(info.generation, |f| f.max(info.generation)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(express: Option<u64>, standard: Option<u64>, bytes: usize) -> Backlog {
        Backlog {
            oldest_express_ms: express,
            oldest_standard_ms: standard,
            bytes,
        }
    }

    fn bucket(last_start_ms: Option<u64>, backlog: Backlog) -> Option<u64> {
        due_ms(Cadence::Bucket, last_start_ms, 1, backlog)
    }

    #[test]
    fn on_local_storage_a_commit_starts_once_the_one_before_is_done() {
        let waiting = backlog(Some(100), None, 10);
        assert_eq!(due_ms(Cadence::Local, Some(99), 0, waiting), Some(100));
        assert_eq!(due_ms(Cadence::Local, Some(99), 1, waiting), None);
        assert_eq!(
            due_ms(
                Cadence::Local,
                Some(99),
                1,
                backlog(Some(100), None, COMMIT_TARGET_BYTES)
            ),
            Some(0),
            "a full commit does not wait"
        );
        assert_eq!(
            due_ms(Cadence::Local, None, 0, backlog(None, Some(100), 10)),
            Some(400),
            "standard appends linger all the same"
        );
    }

    #[test]
    fn express_commits_at_once_but_spaced() {
        assert_eq!(bucket(None, backlog(Some(100), None, 10)), Some(100));
        assert_eq!(bucket(Some(90), backlog(Some(100), None, 10)), Some(125));
        assert_eq!(bucket(Some(50), backlog(Some(100), None, 10)), Some(100));
        assert_eq!(bucket(Some(90), backlog(None, None, 0)), None);
    }

    #[test]
    fn standard_lingers_unless_an_express_commit_comes_first() {
        assert_eq!(bucket(None, backlog(None, Some(100), 10)), Some(400));
        assert_eq!(
            bucket(Some(0), backlog(Some(150), Some(100), 10)),
            Some(150)
        );
    }

    #[test]
    fn a_full_commit_starts_at_once_whatever_the_spacing() {
        assert_eq!(
            bucket(Some(100), backlog(None, Some(100), COMMIT_TARGET_BYTES)),
            Some(0)
        );
        assert_eq!(
            bucket(Some(100), backlog(None, Some(100), COMMIT_TARGET_BYTES - 1)),
            Some(400)
        );
    }

    fn run(stream: u128, generation: u64, first: u64, count: u32, bytes: usize) -> RunInfo {
        RunInfo {
            stream,
            generation,
            first_seq_num: first,
            record_count: count,
            bytes,
            class: StorageClass::Express,
            oldest_ms: 0,
        }
    }

    #[test]
    fn a_commit_carries_at_most_the_byte_bound_but_always_one_run() {
        let mut core = Core::new(Cadence::Bucket, 1);
        core.submit(run(1, 1, 0, 1, COMMIT_BYTES_MAX), ());
        core.submit(run(2, 1, 0, 1, 1), ());
        core.submit(run(3, 1, 0, 1, COMMIT_BYTES_MAX), ());
        assert_eq!(core.start(0).map(|(p, r)| (p, r.len())), Some((1, 1)));
        assert_eq!(core.start(0).map(|(p, r)| (p, r.len())), Some((2, 1)));
        assert_eq!(core.start(0).map(|(p, r)| (p, r.len())), Some((3, 1)));
        assert!(core.start(0).is_none());
    }

    #[test]
    fn commits_in_flight_are_bounded() {
        let mut core = Core::new(Cadence::Bucket, 1);
        for i in 0..=COMMITS_IN_FLIGHT_MAX as u128 {
            core.submit(run(i, 1, 0, 1, 1), ());
            if i < COMMITS_IN_FLIGHT_MAX as u128 {
                assert!(core.start(0).is_some());
            }
        }
        assert!(core.start(0).is_none(), "at the bound no commit starts");
        assert_eq!(core.due_ms(Backlog::default()), None);
        let resolved = core.complete(1, Outcome::Written);
        assert_eq!(resolved.len(), 1);
        assert!(core.start(0).is_some(), "one finished: one more starts");
    }

    #[test]
    fn a_late_run_of_a_failed_generation_fails_until_the_generation_is_closed() {
        let mut core = Core::new(Cadence::Bucket, 1);
        core.submit(run(7, 3, 0, 2, 1), "a");
        core.start(0);
        let resolved = core.complete(1, Outcome::Failed);
        assert_eq!(resolved[0].runs[0].2, Verdict::Failed);
        // Sealed before its shard heard of the failure.
        core.submit(run(7, 3, 2, 1, 1), "late");
        core.start(0);
        let resolved = core.complete(2, Outcome::Written);
        assert!(resolved[0].written);
        assert_eq!(resolved[0].runs[0].2, Verdict::Failed);
        core.close(7, 3);
        assert_eq!(
            core.remembered_streams(),
            0,
            "closed and settled: forgotten"
        );
        core.submit(run(7, 9, 0, 2, 1), "resequenced");
        core.start(0);
        let resolved = core.complete(3, Outcome::Written);
        assert_eq!(resolved[0].runs[0].2, Verdict::Live);
    }
}
