//! Kafka RecordBatch v2 framing: the header fields the engine reads, checks and
//! rewrites. Record bodies are opaque here (they may be compressed).
//!
//! Layout (big-endian), from KIP-98 / the Kafka protocol guide:
//!
//! | bytes  | field                |
//! |--------|----------------------|
//! | 0..8   | baseOffset i64       |
//! | 8..12  | batchLength i32 (bytes after this field) |
//! | 12..16 | partitionLeaderEpoch i32 |
//! | 16     | magic i8 (= 2)       |
//! | 17..21 | crc u32 (CRC32C of bytes 21..end) |
//! | 21..23 | attributes i16       |
//! | 23..27 | lastOffsetDelta i32  |
//! | 27..35 | baseTimestamp i64    |
//! | 35..43 | maxTimestamp i64     |
//! | 43..51 | producerId i64       |
//! | 51..53 | producerEpoch i16    |
//! | 53..57 | baseSequence i32     |
//! | 57..61 | recordsCount i32     |

use crate::constants::BATCH_BYTES_MAX;
use crate::error::BatchError;

/// Bytes of the fixed RecordBatch v2 header.
pub const HEADER_BYTES: usize = 61;
/// Bytes before the `batchLength`-counted part (baseOffset + batchLength).
pub const LOG_OVERHEAD_BYTES: usize = 12;
const CRC_START: usize = 21;
const MAGIC_V2: i8 = 2;

const _: () = assert!(HEADER_BYTES == 61);
const _: () = assert!(BATCH_BYTES_MAX < i32::MAX as usize);

/// The header fields of one validated batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Total bytes of the batch, header included.
    pub size: usize,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
    pub crc: u32,
}

impl BatchHeader {
    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Number of offsets the batch occupies.
    pub fn offset_count(&self) -> u64 {
        self.last_offset_delta as u64 + 1
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes & 0x7) as u8
    }

    /// True when timestamps are the broker's append time (attribute bit 3).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & 0x8 != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

/// Total size of the batch starting at `bytes[0]`, from its length field alone, or an
/// error when the length is impossible. Needs at least [`LOG_OVERHEAD_BYTES`].
pub fn peek_size(bytes: &[u8]) -> Result<usize, BatchError> {
    if bytes.len() < LOG_OVERHEAD_BYTES {
        return Err(BatchError::Truncated {
            needed: LOG_OVERHEAD_BYTES,
            available: bytes.len(),
        });
    }
    let batch_length = i64::from(be_i32(bytes, 8));
    let min = HEADER_BYTES - LOG_OVERHEAD_BYTES;
    if batch_length < min as i64 || batch_length as usize > BATCH_BYTES_MAX {
        return Err(BatchError::BadLength {
            batch_length,
            min,
            max: BATCH_BYTES_MAX,
        });
    }
    Ok(LOG_OVERHEAD_BYTES + batch_length as usize)
}

/// Parse the header of the batch at `bytes[0]` without checking the CRC.
pub fn parse_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let size = peek_size(bytes)?;
    if bytes.len() < HEADER_BYTES {
        return Err(BatchError::Truncated {
            needed: HEADER_BYTES,
            available: bytes.len(),
        });
    }
    let magic = bytes[16] as i8;
    if magic != MAGIC_V2 {
        return Err(BatchError::UnsupportedMagic { magic });
    }
    let header = BatchHeader {
        base_offset: be_i64(bytes, 0),
        size,
        partition_leader_epoch: be_i32(bytes, 12),
        crc: be_i32(bytes, 17) as u32,
        attributes: be_i16(bytes, 21),
        last_offset_delta: be_i32(bytes, 23),
        base_timestamp: be_i64(bytes, 27),
        max_timestamp: be_i64(bytes, 35),
        producer_id: be_i64(bytes, 43),
        producer_epoch: be_i16(bytes, 51),
        base_sequence: be_i32(bytes, 53),
        records_count: be_i32(bytes, 57),
    };
    if header.last_offset_delta < 0 {
        return Err(BatchError::BadHeader {
            reason: "lastOffsetDelta is negative",
        });
    }
    // As Kafka's LogValidator: a v2 batch holds lastOffsetDelta + 1 records. A
    // batch that claims more offsets than records would burn offsets (2^31 with one
    // record) and a false count makes record decoders over-allocate.
    if header.records_count < 1
        || i64::from(header.last_offset_delta) + 1 != i64::from(header.records_count)
    {
        return Err(BatchError::BadHeader {
            reason: "recordsCount must be lastOffsetDelta + 1 and at least 1",
        });
    }
    if header.compression() > 4 {
        return Err(BatchError::BadHeader {
            reason: "unknown compression codec",
        });
    }
    Ok(header)
}

/// Parse and fully validate (length, magic, header fields, CRC32C) the batch at
/// `bytes[0]`. Bytes past the batch are ignored.
pub fn validate(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_header(bytes)?;
    if bytes.len() < header.size {
        return Err(BatchError::Truncated {
            needed: header.size,
            available: bytes.len(),
        });
    }
    let got = crc32c::crc32c(&bytes[CRC_START..header.size]);
    if got != header.crc {
        return Err(BatchError::ChecksumMismatch {
            expected: header.crc,
            got,
        });
    }
    Ok(header)
}

/// Rewrite `baseOffset`; the CRC does not cover it, so the batch stays valid.
pub fn set_base_offset(bytes: &mut [u8], base_offset: i64) {
    bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrite `partitionLeaderEpoch`; the CRC does not cover it either.
pub fn set_partition_leader_epoch(bytes: &mut [u8], epoch: i32) {
    bytes[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Validate every batch of a blob of concatenated batches (a Kafka `records` field).
/// Returns the headers in order, or the position and reason of the first bad batch.
pub fn validate_all(bytes: &[u8]) -> Result<Vec<BatchHeader>, (usize, BatchError)> {
    split(bytes, validate)
}

/// Parse the headers of a blob of concatenated batches (lengths and header fields
/// checked, CRCs not): for callers that only route or inspect, leaving the CRC to
/// the append that follows.
pub fn parse_all(bytes: &[u8]) -> Result<Vec<BatchHeader>, (usize, BatchError)> {
    split(bytes, |b| {
        let header = parse_header(b)?;
        if b.len() < header.size {
            return Err(BatchError::Truncated {
                needed: header.size,
                available: b.len(),
            });
        }
        Ok(header)
    })
}

fn split(
    bytes: &[u8],
    check: impl Fn(&[u8]) -> Result<BatchHeader, BatchError>,
) -> Result<Vec<BatchHeader>, (usize, BatchError)> {
    if bytes.is_empty() {
        return Err((0, BatchError::Empty));
    }
    let mut headers = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let header = check(&bytes[position..]).map_err(|e| (position, e))?;
        position += header.size;
        headers.push(header);
    }
    Ok(headers)
}

/// Build a valid uncompressed RecordBatch v2 holding `records` records whose values
/// are `value`. For tests, benchmarks and tools; real batches come from clients.
pub fn build(base_timestamp: i64, records: usize, value: &[u8]) -> Vec<u8> {
    assert!(records >= 1);
    let mut body = Vec::with_capacity(records * (value.len() + 16));
    for i in 0..records {
        let mut rec = Vec::with_capacity(value.len() + 16);
        rec.push(0u8); // attributes
        put_varint(&mut rec, 0); // timestampDelta
        put_varint(&mut rec, i as i64); // offsetDelta
        put_varint(&mut rec, -1); // key length: null
        put_varint(&mut rec, value.len() as i64);
        rec.extend_from_slice(value);
        put_varint(&mut rec, 0); // headers count
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let mut b = Vec::with_capacity(HEADER_BYTES + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_BYTES - LOG_OVERHEAD_BYTES + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes
    b.extend_from_slice(&((records - 1) as i32).to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    b.extend_from_slice(&(records as i32).to_be_bytes());
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_batch_validates_and_base_offset_rewrite_keeps_crc() {
        let mut b = build(1_700_000_000_000, 3, b"hello");
        let h = validate(&b).expect("valid batch");
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.size, b.len());
        set_base_offset(&mut b, 42);
        let h = validate(&b).expect("still valid after rewrite");
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.last_offset(), 44);
    }

    #[test]
    fn every_single_byte_flip_in_crc_range_is_caught() {
        let b = build(7, 2, b"abcdefgh");
        for i in CRC_START..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x01;
            assert!(validate(&c).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn record_count_must_match_the_offsets_the_batch_claims() {
        let recrc = |b: &mut Vec<u8>| {
            let crc = crc32c::crc32c(&b[CRC_START..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
        };
        // One real record claiming 2^31 - 1 records: decoders would over-allocate.
        let mut b = build(7, 1, b"x");
        b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        recrc(&mut b);
        assert!(matches!(validate(&b), Err(BatchError::BadHeader { .. })));
        // One record claiming 2^31 offsets: would burn the offset space.
        let mut b = build(7, 1, b"x");
        b[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        recrc(&mut b);
        assert!(matches!(validate(&b), Err(BatchError::BadHeader { .. })));
    }

    #[test]
    fn bad_magic_length_and_truncation_are_typed() {
        let b = build(7, 1, b"x");
        let mut m = b.clone();
        m[16] = 1;
        assert!(matches!(
            validate(&m),
            Err(BatchError::UnsupportedMagic { magic: 1 })
        ));
        let mut l = b.clone();
        l[8..12].copy_from_slice(&5i32.to_be_bytes());
        assert!(matches!(validate(&l), Err(BatchError::BadLength { .. })));
        assert!(matches!(
            validate(&b[..b.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(validate_all(&[]), Err((0, BatchError::Empty))));
    }
}
