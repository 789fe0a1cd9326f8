//! Limits and fixed sizes of the engine, in one place. Names carry their unit last.

/// Every O_DIRECT write and read is aligned to this many bytes. 4 KiB covers both
/// 512-byte and 4 KiB logical-block devices.
pub const PAGE_BYTES: usize = 4096;

/// Size of the segment header page; batch data starts right after it.
pub const SEGMENT_HEADER_BYTES: u64 = PAGE_BYTES as u64;

/// Segment file format version (see docs/format.md).
pub const SEGMENT_FORMAT_VERSION: u16 = 1;

/// Index file format version (see docs/format.md).
pub const INDEX_FORMAT_VERSION: u16 = 1;

/// The largest single record batch the engine accepts. Kafka's own hard cap is
/// `message.max.bytes` (1 MiB by default); node enforces the topic's limit, this is
/// the engine's sanity bound.
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Bytes read at once while scanning a segment during recovery or an index rebuild.
pub const SCAN_READ_BYTES: usize = 1024 * 1024;

/// Smallest read issued for a cold read (from disk, not the tail cache).
pub const COLD_READ_BYTES_MIN: usize = 64 * 1024;

const _: () = assert!(PAGE_BYTES.is_power_of_two());
const _: () = assert!(SCAN_READ_BYTES.is_multiple_of(PAGE_BYTES));
const _: () = assert!(COLD_READ_BYTES_MIN.is_multiple_of(PAGE_BYTES));

/// Round `v` down to a page boundary.
pub const fn page_down(v: u64) -> u64 {
    v & !(PAGE_BYTES as u64 - 1)
}

/// Round `v` up to a page boundary.
pub const fn page_up(v: u64) -> u64 {
    (v + PAGE_BYTES as u64 - 1) & !(PAGE_BYTES as u64 - 1)
}
