//! The in-memory tail of a log: the most recently appended batches. O_DIRECT
//! bypasses the page cache, so without this every consumer that keeps up with the
//! producers would read from the device. Batches not yet written to disk are always
//! here; written ones are evicted oldest first once the cache exceeds its budget.

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Debug, Clone)]
pub struct CachedBatch {
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
    pub bytes: Bytes,
}

#[derive(Debug)]
pub struct TailCache {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
    budget_bytes: usize,
}

impl TailCache {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            batches: VecDeque::new(),
            bytes: 0,
            budget_bytes,
        }
    }

    pub fn push(&mut self, batch: CachedBatch) {
        if let Some(last) = self.batches.back() {
            assert_eq!(
                last.last_offset + 1,
                batch.base_offset,
                "tail cache offsets must be contiguous"
            );
        }
        self.bytes += batch.bytes.len();
        self.batches.push_back(batch);
    }

    /// Evict written batches (those ending before `written_offset`) while over budget.
    pub fn evict(&mut self, written_offset: u64) {
        while self.bytes > self.budget_bytes {
            match self.batches.front() {
                Some(b) if b.last_offset < written_offset => {
                    self.bytes -= b.bytes.len();
                    self.batches.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Drop every batch at or after `offset` (truncation).
    pub fn truncate(&mut self, offset: u64) {
        while let Some(b) = self.batches.back() {
            if b.base_offset < offset {
                break;
            }
            self.bytes -= b.bytes.len();
            self.batches.pop_back();
        }
    }

    /// Drop every batch before `offset` (retention).
    pub fn drop_before(&mut self, offset: u64) {
        while let Some(b) = self.batches.front() {
            if b.last_offset >= offset {
                break;
            }
            self.bytes -= b.bytes.len();
            self.batches.pop_front();
        }
    }

    /// First offset served from memory, if any.
    pub fn first_offset(&self) -> Option<u64> {
        self.batches.front().map(|b| b.base_offset)
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (at least one
    /// batch) and before `end_offset`.
    pub fn read(&self, offset: u64, max_bytes: usize, end_offset: u64) -> Vec<Bytes> {
        let start = self.batches.partition_point(|b| b.last_offset < offset);
        let mut out = Vec::new();
        let mut total = 0;
        for b in self.batches.range(start..) {
            if b.base_offset >= end_offset || (!out.is_empty() && total + b.bytes.len() > max_bytes)
            {
                break;
            }
            total += b.bytes.len();
            out.push(b.bytes.clone());
        }
        out
    }

    /// Batches from the one holding `offset` on (for timestamp lookups).
    pub fn iter_from(&self, offset: u64) -> impl Iterator<Item = &CachedBatch> {
        let start = self.batches.partition_point(|b| b.last_offset < offset);
        self.batches.range(start..)
    }
}
