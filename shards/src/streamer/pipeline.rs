//! The append pipeline's sequencing and release, apart from encoding and I/O: what a
//! streamer's appends are checked against, the queue they wait in until durable, and the
//! order their outcomes go out in.
//!
//! The contract with the writer: an append is sequenced against the *assigned* state and
//! handed to the writer with its ticket and the generation it was sequenced in. The writer
//! completes only tickets of the current generation, and successes in the order they were
//! sequenced; a failure may be reported while earlier appends are still pending (a later
//! segment's PUT failed first), and the writer then completes nothing after it but the
//! earlier ones. The invariants, asserted here in debug builds and checked over random
//! interleavings by the property test below:
//! - acks go out in ticket order, and each starts where the previous one ended (dense);
//! - an ack goes out only once its own write completed successfully, never before;
//! - a failure fails every append in flight behind it, and the assigned state falls back
//!   to the durable one, so the next append is sequenced right after the last ack;
//! - every submission gets exactly one outcome.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use super::codec::StreamState;
use crate::error::{ConditionFailed, EngineError, Result};
use crate::records::{AppendAck, FencingToken, Position};

/// Where an append stands in the writer's eyes: which of its completions it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub number: u64,
    pub generation: u64,
}

/// An outcome leaving the pipeline, in order.
pub(crate) enum Released<T> {
    Acked {
        ack: AppendAck,
        /// The durable trim point moved with this append.
        trimmed: bool,
        payload: T,
    },
    /// Refused when it was sequenced, or failed (its own write or one before it).
    Refused { error: EngineError, payload: T },
}

enum Kind {
    Append { start: Position, after: StreamState },
    Reject(EngineError),
}

struct Entry<T> {
    number: u64,
    /// `None` while the write is pending.
    outcome: Option<Result<()>>,
    kind: Kind,
    payload: T,
}

/// Generations are drawn from one counter for the whole process, so a stream's later
/// generation is always greater than any earlier one, across unloading and reloading its
/// streamer: the log's committer tells a late run of a failed generation by it.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

fn fresh_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

pub(crate) struct Pipeline<T> {
    /// Includes appends in flight: what the next append is checked and sequenced against.
    assigned: StreamState,
    /// What is durable and acknowledged.
    durable: StreamState,
    inflight: VecDeque<Entry<T>>,
    next_number: u64,
    /// Bumped whenever in-flight appends fail and sequencing restarts from the durable
    /// state: the writer completes and indexes only tickets of the current generation.
    generation: u64,
}

impl<T> Pipeline<T> {
    pub(crate) fn new(durable: StreamState) -> Pipeline<T> {
        Pipeline {
            assigned: durable.clone(),
            durable,
            inflight: VecDeque::new(),
            next_number: 0,
            generation: fresh_generation(),
        }
    }

    pub(crate) fn assigned(&self) -> &StreamState {
        &self.assigned
    }

    pub(crate) fn durable(&self) -> &StreamState {
        &self.durable
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    /// Check an append's conditions against the assigned state, appends in flight
    /// included.
    pub(crate) fn check(
        &self,
        fencing_token: Option<&FencingToken>,
        match_seq_num: Option<u64>,
    ) -> std::result::Result<(), ConditionFailed> {
        if fencing_token.is_some_and(|token| *token != self.assigned.fencing_token) {
            return Err(ConditionFailed::FencingTokenMismatch(
                self.assigned.fencing_token.clone(),
            ));
        }
        if match_seq_num.is_some_and(|expected| expected != self.assigned.tail.seq_num) {
            return Err(ConditionFailed::SeqNumMismatch(self.assigned.tail.seq_num));
        }
        Ok(())
    }

    /// Queue an append sequenced against [`Pipeline::assigned`]: `start` is where it
    /// begins and `after` the state once it is durable.
    pub(crate) fn sequence(&mut self, start: Position, after: StreamState, payload: T) -> Ticket {
        debug_assert_eq!(
            start.seq_num, self.assigned.tail.seq_num,
            "an append is sequenced at the assigned tail"
        );
        debug_assert!(
            after.tail.seq_num > start.seq_num,
            "an append holds at least one record"
        );
        debug_assert!(
            after.trim_point >= self.assigned.trim_point,
            "trim points only rise"
        );
        self.assigned = after.clone();
        let number = self.take_number();
        self.inflight.push_back(Entry {
            number,
            outcome: None,
            kind: Kind::Append { start, after },
            payload,
        });
        Ticket {
            number,
            generation: self.generation,
        }
    }

    /// Queue a refusal behind the appends in flight: a refusal that depends on them is not
    /// shown before they are durable.
    pub(crate) fn reject(&mut self, error: EngineError, payload: T) -> Vec<Released<T>> {
        let number = self.take_number();
        self.inflight.push_back(Entry {
            number,
            outcome: Some(Err(error.clone())),
            kind: Kind::Reject(error),
            payload,
        });
        self.release()
    }

    fn take_number(&mut self) -> u64 {
        let n = self.next_number;
        self.next_number += 1;
        n
    }

    /// Record the outcome of one write; `numbers` are its tickets', ascending, all of the
    /// current generation.
    pub(crate) fn complete(&mut self, numbers: &[u64], result: Result<()>) -> Vec<Released<T>> {
        debug_assert!(numbers.windows(2).all(|w| w[0] < w[1]), "tickets ascend");
        let mut pending_before = false;
        for entry in self.inflight.iter_mut() {
            if entry.outcome.is_none() {
                if numbers.binary_search(&entry.number).is_ok() {
                    debug_assert!(
                        !pending_before || result.is_err(),
                        "successful writes complete in sequencing order"
                    );
                    entry.outcome = Some(result.clone());
                } else {
                    pending_before = true;
                }
            }
        }
        self.release()
    }

    /// Release finished entries from the front of the queue, in order.
    fn release(&mut self) -> Vec<Released<T>> {
        let mut released = Vec::new();
        while let Some(entry) = self.inflight.pop_front_if(|front| front.outcome.is_some()) {
            match (entry.outcome, entry.kind) {
                (_, Kind::Reject(error)) => released.push(Released::Refused {
                    error,
                    payload: entry.payload,
                }),
                (Some(Ok(())), Kind::Append { start, after }) => {
                    debug_assert_eq!(start.seq_num, self.durable.tail.seq_num, "acks are dense");
                    let trimmed = after.trim_point > self.durable.trim_point;
                    self.durable = after;
                    let tail = self.durable.tail;
                    released.push(Released::Acked {
                        ack: AppendAck {
                            start,
                            end: tail,
                            tail,
                        },
                        trimmed,
                        payload: entry.payload,
                    });
                }
                (outcome, Kind::Append { .. }) => {
                    let error = match outcome {
                        Some(Err(e)) => e,
                        _ => EngineError::Unavailable("append failed"),
                    };
                    released.push(Released::Refused {
                        error: error.clone(),
                        payload: entry.payload,
                    });
                    self.fail_all(error, &mut released);
                }
            }
        }
        released
    }

    /// A write failed: everything after it fails too, and sequencing resumes from the
    /// durable state.
    fn fail_all(&mut self, error: EngineError, released: &mut Vec<Released<T>>) {
        released.extend(self.inflight.drain(..).map(|entry| Released::Refused {
            error: error.clone(),
            payload: entry.payload,
        }));
        self.generation = fresh_generation();
        self.assigned = self.durable.clone();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;
    use crate::error::ConditionFailed;

    /// One thing that happens to a stream's pipeline.
    #[derive(Debug, Clone)]
    enum Step {
        /// An append of `records` records. `fence` and `match_tail` are its conditions,
        /// `Some(true)` for one that holds; `set_fence` and `trim` add a command record.
        Submit {
            records: u64,
            fence: Option<bool>,
            match_tail: Option<bool>,
            set_fence: Option<u8>,
            trim: Option<u64>,
        },
        /// The writer takes everything sequenced since the last seal as one write.
        Seal,
        /// The oldest write finishes.
        Finish { ok: bool },
        /// The second oldest write fails while the oldest is still pending (its PUT
        /// failed first); the writer then completes nothing after it but the oldest.
        FailSecond,
    }

    fn step() -> impl Strategy<Value = Step> {
        let submit = (
            1u64..4,
            prop::option::weighted(0.3, any::<bool>()),
            prop::option::weighted(0.3, any::<bool>()),
            prop::option::weighted(0.15, 0u8..3),
            prop::option::weighted(0.15, 0u64..6),
        )
            .prop_map(
                |(records, fence, match_tail, set_fence, trim)| Step::Submit {
                    records,
                    fence,
                    match_tail,
                    set_fence,
                    trim,
                },
            );
        prop_oneof![
            4 => submit,
            2 => Just(Step::Seal),
            2 => prop::bool::weighted(0.85).prop_map(|ok| Step::Finish { ok }),
            1 => Just(Step::FailSecond),
        ]
    }

    struct Submission {
        /// The condition that refused it, as the model predicts; `None` if sequenced.
        refused: Option<ConditionFailed>,
        start: u64,
        after: StreamState,
        ticket: Option<Ticket>,
    }

    /// The pipeline, a writer that completes writes in order, and an independent model of
    /// what every outcome must be.
    struct Harness {
        pipeline: Pipeline<usize>,
        unsealed: Vec<Ticket>,
        writes: VecDeque<Vec<Ticket>>,
        submissions: Vec<Submission>,
        /// Ticket numbers whose write completed successfully.
        written: Vec<u64>,
        /// Outcomes go out in submission order: the next one due.
        next_outcome: usize,
        /// The state after the last ack.
        durable: StreamState,
        /// The durable state plus what is in flight.
        assigned: StreamState,
        /// A failure is waiting behind the oldest write: nothing sequenced now may be
        /// handed to the writer, since the writer drops it.
        doomed: bool,
    }

    const INJECTED: EngineError = EngineError::Unavailable("injected write failure");

    impl Harness {
        fn new(tail: u64) -> Harness {
            let state = StreamState {
                tail: Position {
                    seq_num: tail,
                    timestamp: tail,
                },
                ..StreamState::default()
            };
            Harness {
                pipeline: Pipeline::new(state.clone()),
                unsealed: Vec::new(),
                writes: VecDeque::new(),
                submissions: Vec::new(),
                written: Vec::new(),
                next_outcome: 0,
                durable: state.clone(),
                assigned: state,
                doomed: false,
            }
        }

        fn run(&mut self, step: Step) {
            match step {
                Step::Submit {
                    records,
                    fence,
                    match_tail,
                    set_fence,
                    trim,
                } => self.submit(records, fence, match_tail, set_fence, trim),
                Step::Seal => {
                    if !self.unsealed.is_empty() {
                        self.writes.push_back(std::mem::take(&mut self.unsealed));
                    }
                }
                Step::Finish { ok } => self.finish(ok),
                Step::FailSecond => self.fail_second(),
            }
        }

        fn fail_second(&mut self) {
            let current = self.pipeline.generation();
            if self.writes.len() < 2
                || self
                    .writes
                    .iter()
                    .take(2)
                    .any(|w| w[0].generation != current)
            {
                return;
            }
            let write = self.writes.remove(1).expect("a second write");
            let numbers: Vec<u64> = write.iter().map(|t| t.number).collect();
            let released = self.pipeline.complete(&numbers, Err(INJECTED));
            assert!(
                released.is_empty(),
                "a failure waits behind the pending write before it"
            );
            // What the writer drops: every later write of this generation, and what is
            // still unsealed (it would join a run after the gap).
            for w in self.writes.iter_mut().skip(1) {
                if w[0].generation == current {
                    w.clear();
                }
            }
            self.writes.retain(|w| !w.is_empty());
            self.unsealed.clear();
            self.doomed = true;
        }

        fn submit(
            &mut self,
            records: u64,
            fence: Option<bool>,
            match_tail: Option<bool>,
            set_fence: Option<u8>,
            trim: Option<u64>,
        ) {
            assert_eq!(
                self.pipeline.assigned(),
                &self.assigned,
                "sequencing continues from the durable state plus what is in flight"
            );
            let id = self.submissions.len();
            let current = self.assigned.fencing_token.clone();
            let token = fence.map(|holds| {
                if holds {
                    current.clone()
                } else {
                    FencingToken::new(format!("not-{}", current.as_str())).unwrap()
                }
            });
            let tail = self.assigned.tail.seq_num;
            let expected = match_tail.map(|holds| if holds { tail } else { tail + 1 });
            let predicted = match (fence, match_tail) {
                (Some(false), _) => Some(ConditionFailed::FencingTokenMismatch(current)),
                (_, Some(false)) => Some(ConditionFailed::SeqNumMismatch(tail)),
                _ => None,
            };
            match self.pipeline.check(token.as_ref(), expected) {
                Err(condition) => {
                    assert_eq!(
                        Some(&condition),
                        predicted.as_ref(),
                        "the condition's verdict"
                    );
                    self.submissions.push(Submission {
                        refused: Some(condition.clone()),
                        start: tail,
                        after: self.assigned.clone(),
                        ticket: None,
                    });
                    let released = self
                        .pipeline
                        .reject(EngineError::ConditionFailed(condition), id);
                    self.observe(released);
                }
                Ok(()) => {
                    assert_eq!(predicted, None, "the condition's verdict");
                    let mut after = self.assigned.clone();
                    after.tail = Position {
                        seq_num: tail + records,
                        timestamp: tail + records,
                    };
                    if let Some(t) = set_fence {
                        after.fencing_token = FencingToken::new(format!("token-{t}")).unwrap();
                    }
                    if let Some(back) = trim {
                        let to = (tail + records).saturating_sub(back);
                        after.trim_point = after.trim_point.max(to);
                    }
                    let start = Position {
                        seq_num: tail,
                        timestamp: tail,
                    };
                    let ticket = self.pipeline.sequence(start, after.clone(), id);
                    assert_eq!(ticket.generation, self.pipeline.generation());
                    self.submissions.push(Submission {
                        refused: None,
                        start: tail,
                        after: after.clone(),
                        ticket: Some(ticket),
                    });
                    self.assigned = after;
                    // As the writer does: a run of a failed generation is dropped when the
                    // stream's next append arrives.
                    self.unsealed.retain(|t| t.generation == ticket.generation);
                    if !self.doomed {
                        self.unsealed.push(ticket);
                    }
                }
            }
        }

        fn finish(&mut self, ok: bool) {
            let Some(write) = self.writes.pop_front() else {
                return;
            };
            let numbers: Vec<u64> = write.iter().map(|t| t.number).collect();
            if write[0].generation != self.pipeline.generation() {
                // The writer drops a failed generation's writes; completing them anyway
                // must change nothing.
                assert!(
                    numbers.iter().all(|n| self.outcome_given_for_ticket(*n)),
                    "a stale write's appends were already failed"
                );
                let released = self.pipeline.complete(&numbers, Ok(()));
                assert!(released.is_empty(), "a stale completion releases nothing");
                return;
            }
            if ok {
                self.written.extend(&numbers);
            }
            let result = if ok { Ok(()) } else { Err(INJECTED) };
            let released = self.pipeline.complete(&numbers, result);
            self.observe(released);
        }

        fn outcome_given_for_ticket(&self, number: u64) -> bool {
            self.submissions
                .iter()
                .position(|s| s.ticket.is_some_and(|t| t.number == number))
                .is_some_and(|id| id < self.next_outcome)
        }

        /// Check every released outcome against the model, in order.
        fn observe(&mut self, released: Vec<Released<usize>>) {
            let mut failed = false;
            for outcome in released {
                let id = match &outcome {
                    Released::Acked { payload, .. } | Released::Refused { payload, .. } => *payload,
                };
                assert_eq!(id, self.next_outcome, "outcomes go out once each, in order");
                self.next_outcome += 1;
                let submission = &self.submissions[id];
                match outcome {
                    Released::Acked { ack, trimmed, .. } => {
                        assert!(!failed, "nothing is acked behind a failure");
                        let ticket = submission.ticket.expect("only sequenced appends are acked");
                        assert!(
                            self.written.contains(&ticket.number),
                            "no ack before its write is durable"
                        );
                        assert_eq!(ack.start.seq_num, submission.start);
                        assert_eq!(
                            ack.start.seq_num, self.durable.tail.seq_num,
                            "acks are dense"
                        );
                        assert_eq!(ack.end, submission.after.tail);
                        assert_eq!(ack.tail, ack.end);
                        assert_eq!(
                            trimmed,
                            submission.after.trim_point > self.durable.trim_point
                        );
                        self.durable = submission.after.clone();
                    }
                    Released::Refused { error, .. } => match (&submission.refused, error) {
                        (Some(predicted), EngineError::ConditionFailed(condition)) if !failed => {
                            assert_eq!(&condition, predicted);
                        }
                        (_, EngineError::Unavailable(reason)) => {
                            assert_eq!(reason, "injected write failure");
                            failed = true;
                        }
                        (_, other) => panic!("unexpected refusal {other:?}"),
                    },
                }
            }
            if failed {
                self.doomed = false;
                assert!(
                    self.pipeline.is_empty(),
                    "a failure fails everything in flight"
                );
                assert_eq!(self.pipeline.durable(), &self.durable);
                assert_eq!(
                    self.pipeline.assigned(),
                    &self.durable,
                    "after a failure the state is the last durable one"
                );
                self.assigned = self.durable.clone();
            }
            assert_eq!(self.pipeline.durable(), &self.durable);
        }

        /// Let the writer finish everything; every submission must then have its outcome.
        fn drain(&mut self) {
            self.run(Step::Seal);
            while !self.writes.is_empty() {
                self.finish(true);
            }
            assert!(self.pipeline.is_empty());
            assert_eq!(
                self.next_outcome,
                self.submissions.len(),
                "every append answered"
            );
            assert_eq!(self.pipeline.assigned(), self.pipeline.durable());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn acks_are_ordered_dense_durable_and_failures_fall_back(
            tail in 0u64..1000,
            steps in prop::collection::vec(step(), 1..80),
        ) {
            let mut harness = Harness::new(tail);
            for step in steps {
                harness.run(step);
            }
            harness.drain();
        }
    }

    #[test]
    fn a_refusal_waits_behind_the_appends_before_it() {
        let mut harness = Harness::new(0);
        harness.run(Step::Submit {
            records: 2,
            fence: None,
            match_tail: None,
            set_fence: None,
            trim: None,
        });
        // Expects seq_num 0, but the append in flight moved the tail to 2.
        harness.run(Step::Submit {
            records: 1,
            fence: None,
            match_tail: Some(false),
            set_fence: None,
            trim: None,
        });
        assert_eq!(harness.next_outcome, 0, "the refusal is not shown yet");
        harness.run(Step::Seal);
        harness.run(Step::Finish { ok: true });
        assert_eq!(harness.next_outcome, 2);
        assert_eq!(
            harness.submissions[1].refused,
            Some(ConditionFailed::SeqNumMismatch(2))
        );
    }
}
