//! Where each entry of a replicated partition log sits in Kafka offsets.
//!
//! Raft counts entries (one RecordBatch each, dense from 1); Kafka counts records.
//! Appends, truncations, the high watermark and the reads behind an outgoing append
//! all need one in terms of the other, so the replica keeps this map in memory: the
//! first offset of every entry, 8 bytes a batch. It is rebuilt from the batch headers
//! when the partition opens.

use std::collections::VecDeque;

use crate::replication::Index;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryOffsets {
    /// The entry before the first one held (0: the log never lost a prefix).
    base_index: Index,
    /// `starts[k]` is the first offset of entry `base_index + 1 + k`.
    starts: VecDeque<u64>,
    /// The offset after the last entry.
    end: u64,
}

impl EntryOffsets {
    /// An empty map whose next entry starts at `end`.
    pub fn new(base_index: Index, end: u64) -> Self {
        EntryOffsets {
            base_index,
            starts: VecDeque::new(),
            end,
        }
    }

    pub fn last_index(&self) -> Index {
        self.base_index + self.starts.len() as Index
    }

    /// The offset the next entry starts at (the log's end offset).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Record the entry after the last one: offsets `start..next`.
    pub fn push(&mut self, start: u64, next: u64) {
        debug_assert_eq!(start, self.end, "entries are contiguous in offsets");
        debug_assert!(next > start, "an entry holds at least one offset");
        self.starts.push_back(start);
        self.end = next;
    }

    /// The first offset of entry `index`, if held.
    pub fn start_of(&self, index: Index) -> Option<u64> {
        let k = index.checked_sub(self.base_index + 1)?;
        self.starts.get(usize::try_from(k).ok()?).copied()
    }

    /// The offset after entry `index` (for `index == base_index`: where the held
    /// entries start). This is the high watermark when `index` is the commit index.
    pub fn end_of(&self, index: Index) -> Option<u64> {
        if index == self.last_index() {
            return Some(self.end);
        }
        if index == self.base_index {
            return Some(self.starts.front().copied().unwrap_or(self.end));
        }
        self.start_of(index + 1)
    }

    /// The entry holding `offset`, if any.
    pub fn index_of(&self, offset: u64) -> Option<Index> {
        if offset >= self.end {
            return None;
        }
        let k = self
            .starts
            .partition_point(|&s| s <= offset)
            .checked_sub(1)?;
        Some(self.base_index + 1 + k as Index)
    }

    /// Forget the entries at and after `from_index`; returns the offset the log must
    /// be truncated to.
    pub fn truncate(&mut self, from_index: Index) -> Option<u64> {
        let offset = self.start_of(from_index)?;
        let keep = (from_index - self.base_index - 1) as usize;
        self.starts.truncate(keep);
        self.end = offset;
        Some(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_indexes_to_offsets_both_ways_and_truncates() {
        let mut m = EntryOffsets::new(0, 0);
        assert_eq!(m.end_of(0), Some(0));
        m.push(0, 3); // entry 1: offsets 0..3
        m.push(3, 4); // entry 2: offset 3
        m.push(4, 10); // entry 3: 4..10
        assert_eq!(m.last_index(), 3);
        assert_eq!(m.start_of(1), Some(0));
        assert_eq!(m.start_of(3), Some(4));
        assert_eq!(m.start_of(4), None);
        assert_eq!(m.start_of(0), None);
        assert_eq!(m.end_of(0), Some(0));
        assert_eq!(m.end_of(1), Some(3));
        assert_eq!(m.end_of(3), Some(10));
        assert_eq!(m.index_of(0), Some(1));
        assert_eq!(m.index_of(2), Some(1));
        assert_eq!(m.index_of(3), Some(2));
        assert_eq!(m.index_of(9), Some(3));
        assert_eq!(m.index_of(10), None);
        assert_eq!(m.truncate(2), Some(3));
        assert_eq!(m.last_index(), 1);
        assert_eq!(m.end(), 3);
        m.push(3, 5);
        assert_eq!(m.end_of(2), Some(5));
        assert_eq!(m.truncate(9), None);
    }
}
