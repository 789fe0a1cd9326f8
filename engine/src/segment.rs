//! One segment file: a header page, then Kafka record batches back to back. Holds the
//! segment header codec and the scan used by recovery, index rebuilds and lookups.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use crate::batch::{self, BatchHeader, LOG_OVERHEAD_BYTES};
use crate::constants::{
    page_down, page_up, PAGE_BYTES, SCAN_READ_BYTES, SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_BYTES,
};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::storage::StorageFile;

pub const SEGMENT_MAGIC: &[u8; 8] = b"STRNDSEG";
const HEADER_CRC_AT: usize = 32;

/// File name of the segment starting at `base_offset`.
pub fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

/// File name of the index of the segment starting at `base_offset`.
pub fn index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.index")
}

/// Parse `00000000000000000042.log` into 42.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The segment header page (see docs/format.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub base_offset: u64,
    pub created_ms: i64,
}

impl SegmentHeader {
    pub fn encode_into(&self, page: &mut [u8]) {
        debug_assert!(page.len() >= SEGMENT_HEADER_BYTES as usize);
        page[..SEGMENT_HEADER_BYTES as usize].fill(0);
        page[0..8].copy_from_slice(SEGMENT_MAGIC);
        page[8..10].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
        page[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        page[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        page[24..32].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32c::crc32c(&page[..HEADER_CRC_AT]);
        page[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    }

    pub fn decode(page: &[u8]) -> std::result::Result<Self, &'static str> {
        if page.len() < SEGMENT_HEADER_BYTES as usize {
            return Err("segment shorter than its header page");
        }
        if &page[0..8] != SEGMENT_MAGIC {
            return Err("bad segment magic");
        }
        let crc = u32::from_le_bytes([page[32], page[33], page[34], page[35]]);
        if crc != crc32c::crc32c(&page[..HEADER_CRC_AT]) {
            return Err("segment header CRC mismatch");
        }
        if u16::from_le_bytes([page[8], page[9]]) != SEGMENT_FORMAT_VERSION {
            return Err("unsupported segment format version");
        }
        let mut b8 = [0u8; 8];
        b8.copy_from_slice(&page[16..24]);
        let base_offset = u64::from_le_bytes(b8);
        b8.copy_from_slice(&page[24..32]);
        Ok(Self {
            base_offset,
            created_ms: i64::from_le_bytes(b8),
        })
    }
}

/// One segment of a partition log, in memory.
///
/// Owned by the shard that owns the partition; never crosses threads.
#[derive(Debug)]
pub struct Segment<F> {
    pub base_offset: u64,
    pub path: PathBuf,
    pub index_path: PathBuf,
    pub file: Rc<F>,
    pub created_ms: i64,
    /// Logical end: file position after the last appended batch (maybe not yet written).
    pub end_pos: u64,
    /// File position up to which every write has completed (readable from disk).
    pub written_pos: u64,
    /// Offset after the last appended batch.
    pub next_offset: u64,
    pub max_timestamp: i64,
    pub index: Index,
    /// Bytes preallocated on disk (fallocate).
    pub allocated_bytes: u64,
    /// Sealed: immutable, truncated to `end_pos`, index persisted.
    pub sealed: bool,
}

impl<F> Segment<F> {
    pub fn data_bytes(&self) -> u64 {
        self.end_pos - SEGMENT_HEADER_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.next_offset == self.base_offset
    }

    /// Account for a batch appended at the logical end.
    pub fn on_append(&mut self, header: &BatchHeader) {
        debug_assert_eq!(header.base_offset as u64, self.next_offset);
        let relative = (self.next_offset - self.base_offset) as u32;
        self.index.on_batch(
            relative,
            self.end_pos as u32,
            header.size as u32,
            self.max_timestamp,
        );
        self.end_pos += header.size as u64;
        self.next_offset = header.last_offset() as u64 + 1;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
    }
}

/// A batch boundary to scan from.
#[derive(Debug, Clone, Copy)]
pub struct ScanFrom {
    pub pos: u64,
    pub next_offset: u64,
    /// Base offset of the segment (index entries are relative to it).
    pub base_offset: u64,
    /// Largest batch timestamp before `pos`.
    pub max_timestamp: i64,
}

/// Where a scan stopped and what it found.
#[derive(Debug)]
pub struct ScanOutcome {
    pub end_pos: u64,
    pub next_offset: u64,
    pub max_timestamp: i64,
    /// Why the scan stopped before `limit_pos`, when data there was not a valid
    /// continuation (torn or corrupt); None at a clean end (zeroes or `limit_pos`).
    pub stopped_because: Option<String>,
}

/// What a [`BatchCursor`] found at its position.
#[derive(Debug)]
pub enum Next {
    /// A whole batch whose CRC checks out.
    Batch(BatchHeader, Bytes),
    /// Zeroes or the limit: no more data.
    End,
    /// A batch header whose batch runs past the limit (torn, or not yet written).
    Incomplete { size: usize },
    /// Bytes that are not a valid batch.
    Invalid(String),
}

/// A cursor over the batches of a file, reading aligned chunks.
#[derive(Debug)]
pub struct BatchCursor<'f, F> {
    file: &'f F,
    path: &'f Path,
    /// Bytes of the file starting at `chunk_pos`.
    chunk: Bytes,
    chunk_pos: u64,
    pub pos: u64,
    limit_pos: u64,
}

impl<'f, F: StorageFile> BatchCursor<'f, F> {
    pub fn new(file: &'f F, path: &'f Path, pos: u64, limit_pos: u64) -> Self {
        Self {
            file,
            path,
            chunk: Bytes::new(),
            chunk_pos: pos,
            pos,
            limit_pos,
        }
    }

    /// Make `[pos, pos + len)` available in the chunk; false if past `limit_pos`.
    async fn ensure(&mut self, len: usize, read_hint: usize) -> Result<bool> {
        let end = self.pos + len as u64;
        if end > self.limit_pos {
            return Ok(false);
        }
        if self.pos >= self.chunk_pos && end <= self.chunk_pos + self.chunk.len() as u64 {
            return Ok(true);
        }
        let start = page_down(self.pos);
        let want = page_up(end - start).max(read_hint as u64);
        let want = want.min(page_up(self.limit_pos) - start) as usize;
        let chunk = self
            .file
            .read_at(start, want)
            .await
            .map_err(|e| Error::io("reading", self.path, e))?;
        self.chunk_pos = start;
        self.chunk = chunk;
        Ok(end <= self.chunk_pos + self.chunk.len() as u64)
    }

    /// The next batch at `pos`, advancing past it when it is whole and valid.
    pub async fn next_batch(&mut self, read_hint: usize) -> Result<Next> {
        if !self.ensure(LOG_OVERHEAD_BYTES, read_hint).await? {
            return Ok(Next::End);
        }
        let at = (self.pos - self.chunk_pos) as usize;
        let head = &self.chunk[at..at + LOG_OVERHEAD_BYTES];
        if head.iter().all(|&b| b == 0) {
            return Ok(Next::End);
        }
        let size = match batch::peek_size(head) {
            Ok(size) => size,
            Err(e) => return Ok(Next::Invalid(e.to_string())),
        };
        if !self.ensure(size, read_hint).await? {
            return Ok(Next::Incomplete { size });
        }
        let at = (self.pos - self.chunk_pos) as usize;
        let bytes = self.chunk.slice(at..at + size);
        match batch::validate(&bytes) {
            Ok(header) => {
                self.pos += size as u64;
                Ok(Next::Batch(header, bytes))
            }
            Err(e) => Ok(Next::Invalid(e.to_string())),
        }
    }
}

/// Scan forward from `(pos, offset)`, a batch boundary, verifying every batch, and
/// feed the index. Stops at the first batch that is torn, corrupt, or does not
/// continue the offsets.
pub async fn scan<F: StorageFile>(
    file: &F,
    path: &Path,
    from: ScanFrom,
    limit_pos: u64,
    index: &mut Index,
) -> Result<ScanOutcome> {
    let ScanFrom {
        mut pos,
        mut next_offset,
        base_offset,
        mut max_timestamp,
    } = from;
    let mut cursor = BatchCursor::new(file, path, pos, limit_pos);
    let stopped_because = loop {
        match cursor.next_batch(SCAN_READ_BYTES).await? {
            Next::End => break None,
            Next::Invalid(reason) => break Some(reason),
            Next::Incomplete { size } => {
                break Some(format!(
                    "batch of {size} bytes runs past the end of the data"
                ))
            }
            Next::Batch(header, _) => {
                if header.base_offset as u64 != next_offset {
                    break Some(format!(
                        "batch base offset {} does not continue the log at {next_offset}",
                        header.base_offset
                    ));
                }
                index.on_batch(
                    (next_offset - base_offset) as u32,
                    pos as u32,
                    header.size as u32,
                    max_timestamp,
                );
                pos += header.size as u64;
                next_offset = header.last_offset() as u64 + 1;
                max_timestamp = max_timestamp.max(header.max_timestamp);
            }
        }
    };
    // The cursor also steps over a valid batch that does not continue the offsets.
    debug_assert!(stopped_because.is_some() || pos == cursor.pos);
    Ok(ScanOutcome {
        end_pos: pos,
        next_offset,
        max_timestamp,
        stopped_because,
    })
}

const _: () = assert!(SEGMENT_HEADER_BYTES as usize == PAGE_BYTES);
