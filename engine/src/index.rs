//! The sparse per-segment index: one entry every `index_interval_bytes` of batch
//! data, mapping a relative offset to a file position, and carrying the largest batch
//! timestamp *before* that batch, so one index serves both offset and timestamp
//! lookups. Persisted when a segment is sealed; rebuilt by a scan when missing or bad.

use crate::constants::INDEX_FORMAT_VERSION;

pub const INDEX_MAGIC: &[u8; 8] = b"STRNDIDX";
pub const INDEX_HEADER_BYTES: usize = 64;
pub const INDEX_ENTRY_BYTES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Batch base offset minus the segment base offset.
    pub relative_offset: u32,
    /// File position of the batch.
    pub position: u32,
    /// Largest `maxTimestamp` of all batches before this one in the segment
    /// (i64::MIN when none).
    pub max_timestamp_before: i64,
}

/// The sparse index of one segment.
#[derive(Debug, Clone)]
pub struct Index {
    entries: Vec<IndexEntry>,
    interval_bytes: u32,
    bytes_since_entry: u64,
}

/// What a sealed segment's index file says about its segment.
#[derive(Debug, Clone)]
pub struct SealedIndex {
    pub index: Index,
    pub segment_bytes: u64,
    pub next_offset: u64,
    pub max_timestamp: i64,
    pub created_ms: i64,
}

impl Index {
    pub fn new(interval_bytes: u32) -> Self {
        Self {
            entries: Vec::new(),
            interval_bytes,
            bytes_since_entry: 0,
        }
    }

    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Account for one batch appended at `position`; adds an entry when a full
    /// interval of bytes has passed since the last one.
    pub fn on_batch(&mut self, relative_offset: u32, position: u32, size: u32, max_ts_before: i64) {
        if let Some(last) = self.entries.last() {
            debug_assert!(relative_offset > last.relative_offset && position > last.position);
        }
        if self.bytes_since_entry >= u64::from(self.interval_bytes) {
            self.entries.push(IndexEntry {
                relative_offset,
                position,
                max_timestamp_before: max_ts_before,
            });
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += u64::from(size);
    }

    /// The last entry at or before `relative_offset` (a batch boundary from which to
    /// scan forward), or None: scan from the first batch.
    pub fn floor_offset(&self, relative_offset: u32) -> Option<IndexEntry> {
        let i = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last entry before which every batch has `maxTimestamp < ts`: the first
    /// batch with `maxTimestamp >= ts` is at or after it. None: scan from the start.
    pub fn floor_timestamp(&self, ts: i64) -> Option<IndexEntry> {
        let i = self
            .entries
            .partition_point(|e| e.max_timestamp_before < ts);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// Drop entries at or past `relative_offset` (for truncation).
    pub fn truncate(&mut self, relative_offset: u32) {
        let i = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(i);
        self.bytes_since_entry = 0;
    }

    /// Encode as an index file body (see docs/format.md).
    pub fn encode(
        &self,
        base_offset: u64,
        segment_bytes: u64,
        next_offset: u64,
        max_timestamp: i64,
        created_ms: i64,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(INDEX_HEADER_BYTES + self.entries.len() * 16);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&INDEX_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(INDEX_ENTRY_BYTES as u16).to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&base_offset.to_le_bytes());
        out.extend_from_slice(&segment_bytes.to_le_bytes());
        out.extend_from_slice(&next_offset.to_le_bytes());
        out.extend_from_slice(&max_timestamp.to_le_bytes());
        out.extend_from_slice(&[0u8; 4]); // crc, filled below
        out.extend_from_slice(&self.interval_bytes.to_le_bytes());
        out.extend_from_slice(&created_ms.to_le_bytes());
        debug_assert_eq!(out.len(), INDEX_HEADER_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.relative_offset.to_le_bytes());
            out.extend_from_slice(&e.position.to_le_bytes());
            out.extend_from_slice(&e.max_timestamp_before.to_le_bytes());
        }
        let crc = index_crc(&out);
        out[48..52].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decode an index file; None when it is not a valid index for this segment, in
    /// which case the caller rebuilds it by scanning.
    pub fn decode(bytes: &[u8], base_offset: u64) -> Option<SealedIndex> {
        if bytes.len() < INDEX_HEADER_BYTES || &bytes[0..8] != INDEX_MAGIC {
            return None;
        }
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        if u16_at(8) != INDEX_FORMAT_VERSION || u16_at(10) as usize != INDEX_ENTRY_BYTES {
            return None;
        }
        let count = u32_at(12) as usize;
        let len = INDEX_HEADER_BYTES.checked_add(count.checked_mul(INDEX_ENTRY_BYTES)?)?;
        if bytes.len() < len || u64_at(16) != base_offset {
            return None;
        }
        let body = &bytes[..len];
        if u32_at(48) != index_crc(body) {
            return None;
        }
        let segment_bytes = u64_at(24);
        let next_offset = u64_at(32);
        let max_timestamp = u64_at(40) as i64;
        let interval_bytes = u32_at(52);
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let at = INDEX_HEADER_BYTES + i * INDEX_ENTRY_BYTES;
            let e = IndexEntry {
                relative_offset: u32_at(at),
                position: u32_at(at + 4),
                max_timestamp_before: u64_at(at + 8) as i64,
            };
            if let Some(prev) = entries.last() {
                let prev: &IndexEntry = prev;
                if e.relative_offset <= prev.relative_offset || e.position <= prev.position {
                    return None;
                }
            }
            if u64::from(e.position) >= segment_bytes
                || base_offset + u64::from(e.relative_offset) >= next_offset
            {
                return None;
            }
            entries.push(e);
        }
        Some(SealedIndex {
            index: Index {
                entries,
                interval_bytes,
                bytes_since_entry: 0,
            },
            segment_bytes,
            next_offset,
            max_timestamp,
            created_ms: u64_at(56) as i64,
        })
    }
}

fn index_crc(body: &[u8]) -> u32 {
    let head = crc32c::crc32c(&body[..48]);
    crc32c::crc32c_append(head, &body[52..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_entries_and_lookups() {
        let mut idx = Index::new(100);
        // 10 batches of 60 bytes, 2 offsets each, timestamps 10, 20, ...
        let mut max_before = i64::MIN;
        for i in 0..10u32 {
            idx.on_batch(i * 2, 4096 + i * 60, 60, max_before);
            max_before = max_before.max(i64::from(i + 1) * 10);
        }
        assert!(idx.entries().len() >= 3);
        let e = idx.floor_offset(9).expect("an entry at or before 9");
        assert!(e.relative_offset <= 9);
        assert!(idx.floor_offset(0).is_none());
        let t = idx.floor_timestamp(55);
        assert!(t.is_none_or(|e| e.max_timestamp_before < 55));
        let bytes = idx.encode(1000, 5000, 1020, 100, 77);
        let back = Index::decode(&bytes, 1000).expect("round trip");
        assert_eq!(back.index.entries(), idx.entries());
        assert_eq!(back.next_offset, 1020);
        assert_eq!(back.created_ms, 77);
        assert!(Index::decode(&bytes, 999).is_none(), "wrong base offset");
        let mut bad = bytes.clone();
        bad[INDEX_HEADER_BYTES + 3] ^= 1;
        assert!(Index::decode(&bad, 1000).is_none(), "crc catches a flip");
    }
}
