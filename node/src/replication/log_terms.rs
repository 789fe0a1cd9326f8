//! Which term each entry of a replication log was written in.
//!
//! The state machine never holds payloads (a partition log is gigabytes of record
//! batches; the engine keeps them). What Raft needs from the log is only the term of
//! each index: for the log-matching check, for the election restriction, for the
//! commit rule and for the conflict hints. Terms change rarely, so the map is kept as
//! the first entry of every term, like Kafka's leader-epoch checkpoint file
//! (`leader-epoch-checkpoint`: epoch → start offset).

use super::{EntryId, Index, Term};

/// The terms of a log holding the entries `base.index + 1 ..= last_index`.
///
/// `base` is the entry just before the first one held: `(0, 0)` for a log that never
/// lost a prefix, otherwise the last entry removed by retention (or the last entry
/// before an installed snapshot range). Its term is kept because the entry after it
/// is checked against it (`prev` of an append).
///
/// Invariants (checked by [`LogTerms::new`], kept by every method):
/// `term_starts` is strictly increasing in index and in term, every start lies in
/// `base.index + 1 ..= last_index`, the first start is at `base.index + 1` whenever
/// the log holds an entry, and no term is below `base.term`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogTerms {
    base: EntryId,
    term_starts: Vec<EntryId>,
    last_index: Index,
}

/// Why a description of a log was refused (from a recovery scan or a snapshot
/// message: both are input).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidLogTerms {
    #[error("last index {last_index} is below the base index {base_index}")]
    LastBelowBase {
        base_index: Index,
        last_index: Index,
    },
    #[error("term start {start:?} is outside {base_index}+1..={last_index}")]
    StartOutOfRange {
        start: EntryId,
        base_index: Index,
        last_index: Index,
    },
    #[error("term start {start:?} does not increase index and term over {previous:?}")]
    StartNotIncreasing { start: EntryId, previous: EntryId },
    #[error("the log holds entries but none starts at {expected_index}")]
    FirstStartMissing { expected_index: Index },
    #[error("entry {entry:?} does not follow index {last_index}")]
    EntryNotContiguous { entry: EntryId, last_index: Index },
    #[error("entry {entry:?} has term 0, which no leader ever writes")]
    ZeroTerm { entry: EntryId },
    #[error("index {index} is beyond the largest accepted ({index_max})")]
    IndexTooLarge { index: Index, index_max: Index },
}

impl LogTerms {
    /// The log of a group that never wrote anything.
    pub fn empty() -> Self {
        LogTerms {
            base: EntryId::ZERO,
            term_starts: Vec::new(),
            last_index: 0,
        }
    }

    /// A log of `base.index + 1 ..= last_index` whose terms start at `term_starts`.
    pub fn new(
        base: EntryId,
        term_starts: Vec<EntryId>,
        last_index: Index,
    ) -> Result<Self, InvalidLogTerms> {
        if last_index > super::INDEX_MAX {
            return Err(InvalidLogTerms::IndexTooLarge {
                index: last_index,
                index_max: super::INDEX_MAX,
            });
        }
        if last_index < base.index {
            return Err(InvalidLogTerms::LastBelowBase {
                base_index: base.index,
                last_index,
            });
        }
        let mut previous = base;
        for (i, &start) in term_starts.iter().enumerate() {
            if start.term == 0 {
                return Err(InvalidLogTerms::ZeroTerm { entry: start });
            }
            if start.index <= base.index || start.index > last_index {
                return Err(InvalidLogTerms::StartOutOfRange {
                    start,
                    base_index: base.index,
                    last_index,
                });
            }
            // The first start may repeat the base's term (the run crosses the base).
            let term_ok = if i == 0 {
                start.term >= previous.term
            } else {
                start.term > previous.term
            };
            if start.index <= previous.index || !term_ok {
                return Err(InvalidLogTerms::StartNotIncreasing { start, previous });
            }
            previous = start;
        }
        let holds_entries = last_index > base.index;
        let first_ok = term_starts
            .first()
            .is_some_and(|s| s.index == base.index + 1);
        if holds_entries && !first_ok {
            return Err(InvalidLogTerms::FirstStartMissing {
                expected_index: base.index + 1,
            });
        }
        Ok(LogTerms {
            base,
            term_starts,
            last_index,
        })
    }

    /// The terms of `entries`, which must follow `base` one index at a time with
    /// terms that never decrease (a recovery scan builds its log this way).
    pub fn from_entries(
        base: EntryId,
        entries: impl IntoIterator<Item = EntryId>,
    ) -> Result<Self, InvalidLogTerms> {
        let mut log = LogTerms {
            base,
            term_starts: Vec::new(),
            last_index: base.index,
        };
        for entry in entries {
            if entry.index != log.last_index + 1 || entry.term < log.last().term {
                return Err(InvalidLogTerms::EntryNotContiguous {
                    entry,
                    last_index: log.last_index,
                });
            }
            if entry.term == 0 {
                return Err(InvalidLogTerms::ZeroTerm { entry });
            }
            if entry.index > super::INDEX_MAX {
                return Err(InvalidLogTerms::IndexTooLarge {
                    index: entry.index,
                    index_max: super::INDEX_MAX,
                });
            }
            log.append(entry);
        }
        Ok(log)
    }

    /// The entry just before the first one held.
    pub fn base(&self) -> EntryId {
        self.base
    }

    /// The first index held (one past the last when the log is empty).
    pub fn start_index(&self) -> Index {
        self.base.index + 1
    }

    /// The last index held (the base index when the log is empty).
    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// The last entry (the base when the log is empty).
    pub fn last(&self) -> EntryId {
        match self.term_starts.last() {
            Some(start) => EntryId {
                index: self.last_index,
                term: start.term,
            },
            None => self.base,
        }
    }

    /// The first entry of every term, ascending.
    pub fn term_starts(&self) -> &[EntryId] {
        &self.term_starts
    }

    /// The term of the entry at `index`, for `base.index ..= last_index`; `None`
    /// outside (removed by retention, or not written yet).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.base.index {
            return Some(self.base.term);
        }
        if index < self.base.index || index > self.last_index {
            return None;
        }
        let run = self.term_starts.partition_point(|s| s.index <= index);
        // `index > base.index` and the first start is at `base.index + 1`.
        run.checked_sub(1).map(|i| self.term_starts[i].term)
    }

    /// Whether the log holds `entry` (same index, same term). The base counts.
    pub fn contains(&self, entry: EntryId) -> bool {
        self.term_at(entry.index) == Some(entry.term)
    }

    /// The first index of the run of equal terms that holds `index`, but not below
    /// the first index held. Used for the conflict hint of a rejected append.
    pub fn run_start(&self, index: Index) -> Index {
        let run = self.term_starts.partition_point(|s| s.index <= index);
        match run.checked_sub(1) {
            Some(i) => self.term_starts[i].index,
            None => self.start_index(),
        }
    }

    /// The last index holding `term`, if any entry held has that term.
    pub fn last_index_of_term(&self, term: Term) -> Option<Index> {
        let run = self.term_starts.iter().position(|s| s.term == term)?;
        match self.term_starts.get(run + 1) {
            Some(next) => Some(next.index - 1),
            None => Some(self.last_index),
        }
    }

    /// Add `entry` at the end. The caller guarantees the index follows and the term
    /// does not go down (the state machine checks messages before it gets here).
    pub(crate) fn append(&mut self, entry: EntryId) {
        debug_assert_eq!(
            entry.index,
            self.last_index + 1,
            "append must be contiguous"
        );
        debug_assert!(
            entry.term >= self.last().term,
            "terms never decrease in a log"
        );
        let new_run = self.term_starts.last().is_none_or(|s| s.term != entry.term);
        if new_run {
            self.term_starts.push(entry);
        }
        self.last_index = entry.index;
    }

    /// Remove the entries at and after `from_index` (`from_index > base.index`).
    pub(crate) fn truncate_from(&mut self, from_index: Index) {
        debug_assert!(from_index > self.base.index, "cannot truncate the base");
        if from_index > self.last_index {
            return;
        }
        let keep = self.term_starts.partition_point(|s| s.index < from_index);
        self.term_starts.truncate(keep);
        self.last_index = from_index - 1;
    }

    /// Forget the entries up to and including `index` (retention removed them).
    /// `index` must be held (`base.index ..= last_index`).
    pub(crate) fn remove_prefix(&mut self, index: Index) {
        let Some(term) = self.term_at(index) else {
            debug_assert!(false, "remove_prefix({index}) outside the log");
            return;
        };
        let later = self.term_starts.partition_point(|s| s.index <= index);
        let mut starts: Vec<EntryId> = Vec::with_capacity(self.term_starts.len() - later + 1);
        if index < self.last_index
            && self.term_starts.get(later).map(|s| s.index) != Some(index + 1)
        {
            // The run holding `index + 1` began at or before the new base.
            starts.push(EntryId {
                index: index + 1,
                term,
            });
        }
        starts.extend_from_slice(&self.term_starts[later..]);
        self.term_starts = starts;
        self.base = EntryId { index, term };
    }

    /// The terms of `base.index + 1 ..= up_to` as a log of their own (a snapshot
    /// range). `up_to` must be held.
    pub(crate) fn prefix_through(&self, up_to: Index) -> LogTerms {
        debug_assert!(up_to >= self.base.index && up_to <= self.last_index);
        let keep = self.term_starts.partition_point(|s| s.index <= up_to);
        LogTerms {
            base: self.base,
            term_starts: self.term_starts[..keep].to_vec(),
            last_index: up_to,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: Index, term: Term) -> EntryId {
        EntryId { index, term }
    }

    fn log_of(terms: &[Term]) -> LogTerms {
        let entries = terms.iter().enumerate().map(|(i, &t)| id(i as u64 + 1, t));
        LogTerms::from_entries(EntryId::ZERO, entries).expect("valid log")
    }

    #[test]
    fn terms_by_index() {
        let log = log_of(&[1, 1, 2, 2, 2, 5]);
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(2), Some(1));
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(6), Some(5));
        assert_eq!(log.term_at(7), None);
        assert_eq!(log.last(), id(6, 5));
        assert_eq!(log.run_start(5), 3);
        assert_eq!(log.last_index_of_term(2), Some(5));
        assert_eq!(log.last_index_of_term(3), None);
    }

    #[test]
    fn truncate_and_append() {
        let mut log = log_of(&[1, 1, 2, 2, 2, 5]);
        log.truncate_from(4);
        assert_eq!(log.last(), id(3, 2));
        log.append(id(4, 3));
        assert_eq!(log.term_starts(), &[id(1, 1), id(3, 2), id(4, 3)]);
        log.truncate_from(1);
        assert_eq!(log.last(), EntryId::ZERO);
        assert!(log.term_starts().is_empty());
    }

    #[test]
    fn remove_prefix_keeps_the_base_term() {
        let mut log = log_of(&[1, 1, 2, 2, 2, 5]);
        log.remove_prefix(4);
        assert_eq!(log.base(), id(4, 2));
        assert_eq!(log.term_at(3), None);
        assert_eq!(log.term_at(4), Some(2));
        assert_eq!(log.term_at(5), Some(2));
        assert_eq!(log.term_starts(), &[id(5, 2), id(6, 5)]);
        log.remove_prefix(6);
        assert_eq!(log.base(), id(6, 5));
        assert!(log.term_starts().is_empty());
        assert_eq!(log.last(), id(6, 5));
        let again = LogTerms::new(log.base(), log.term_starts().to_vec(), log.last_index());
        assert_eq!(again, Ok(log));
    }

    #[test]
    fn refuses_malformed_descriptions() {
        assert!(matches!(
            LogTerms::new(id(5, 2), vec![], 3),
            Err(InvalidLogTerms::LastBelowBase { .. })
        ));
        assert!(matches!(
            LogTerms::new(id(5, 2), vec![id(7, 3)], 8),
            Err(InvalidLogTerms::FirstStartMissing { .. })
        ));
        assert!(matches!(
            LogTerms::new(id(0, 0), vec![id(1, 3), id(2, 2)], 4),
            Err(InvalidLogTerms::StartNotIncreasing { .. })
        ));
        assert!(matches!(
            LogTerms::new(id(0, 0), vec![id(1, 3), id(9, 4)], 4),
            Err(InvalidLogTerms::StartOutOfRange { .. })
        ));
        assert!(matches!(
            LogTerms::from_entries(id(0, 0), [id(1, 1), id(3, 1)]),
            Err(InvalidLogTerms::EntryNotContiguous { .. })
        ));
        assert!(matches!(
            LogTerms::new(id(0, 0), vec![], u64::MAX),
            Err(InvalidLogTerms::IndexTooLarge { .. })
        ));
    }
}
