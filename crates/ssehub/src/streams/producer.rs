//! Idempotent producers (PROTOCOL.md §5.2.1): what an append with
//! `Producer-Id`, `Producer-Epoch` and `Producer-Seq` does, given what the
//! stream remembers of that producer.

use serde::{Deserialize, Serialize};

/// The largest epoch or seq (2^53 - 1, for JavaScript clients).
pub const MAX: u64 = (1 << 53) - 1;

/// What a stream remembers of one producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Its current epoch.
    pub epoch: u64,
    /// The highest seq accepted in that epoch.
    pub last_seq: u64,
}

/// One append's producer headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tuple {
    /// `Producer-Id`.
    pub id: String,
    /// `Producer-Epoch`.
    pub epoch: u64,
    /// `Producer-Seq`.
    pub seq: u64,
}

/// The verdict on one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New data: append it and remember this state.
    Accept(State),
    /// Already appended (a retry): succeed without appending.
    Duplicate(State),
    /// An older epoch than the stream knows (a zombie): 403 with the
    /// current epoch.
    StaleEpoch {
        /// The stream's epoch.
        current: u64,
    },
    /// A seq past the next one: 409 with the one expected.
    Gap {
        /// The next seq.
        expected: u64,
        /// The request's.
        received: u64,
    },
    /// A new epoch must start at seq 0: 400.
    NewEpochNotAtZero,
}

/// Judges `(epoch, seq)` against what the stream knows of the producer.
pub fn judge(known: Option<State>, epoch: u64, seq: u64) -> Verdict {
    let Some(state) = known else {
        // A producer the stream has not seen starts at seq 0.
        return if seq == 0 {
            Verdict::Accept(State { epoch, last_seq: 0 })
        } else {
            Verdict::Gap {
                expected: 0,
                received: seq,
            }
        };
    };
    if epoch < state.epoch {
        return Verdict::StaleEpoch {
            current: state.epoch,
        };
    }
    if epoch > state.epoch {
        return if seq == 0 {
            Verdict::Accept(State { epoch, last_seq: 0 })
        } else {
            Verdict::NewEpochNotAtZero
        };
    }
    if seq <= state.last_seq {
        Verdict::Duplicate(state)
    } else if seq == state.last_seq + 1 {
        Verdict::Accept(State {
            epoch,
            last_seq: seq,
        })
    } else {
        Verdict::Gap {
            expected: state.last_seq + 1,
            received: seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64, last_seq: u64) -> Option<State> {
        Some(State { epoch, last_seq })
    }

    #[test]
    fn a_new_producer_starts_at_zero() {
        assert_eq!(
            judge(None, 3, 0),
            Verdict::Accept(State {
                epoch: 3,
                last_seq: 0
            })
        );
        assert_eq!(
            judge(None, 0, 2),
            Verdict::Gap {
                expected: 0,
                received: 2
            }
        );
    }

    #[test]
    fn within_an_epoch_retries_are_duplicates_and_gaps_are_refused() {
        assert_eq!(judge(at(1, 4), 1, 4), Verdict::Duplicate(at(1, 4).unwrap()));
        assert_eq!(judge(at(1, 4), 1, 0), Verdict::Duplicate(at(1, 4).unwrap()));
        assert_eq!(judge(at(1, 4), 1, 5), Verdict::Accept(at(1, 5).unwrap()));
        assert_eq!(
            judge(at(1, 4), 1, 7),
            Verdict::Gap {
                expected: 5,
                received: 7
            }
        );
    }

    #[test]
    fn epochs_fence_zombies_and_start_over_at_zero() {
        assert_eq!(judge(at(2, 9), 1, 10), Verdict::StaleEpoch { current: 2 });
        assert_eq!(judge(at(2, 9), 3, 0), Verdict::Accept(at(3, 0).unwrap()));
        assert_eq!(judge(at(2, 9), 3, 1), Verdict::NewEpochNotAtZero);
    }
}
