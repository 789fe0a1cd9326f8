//! Replication frames: a 16-byte header, then an rkyv archive.
//!
//! | bytes  | field        | meaning                                               |
//! |--------|--------------|-------------------------------------------------------|
//! | 0..4   | magic        | `b"SRPL"` (u32 little-endian [`FRAME_MAGIC`])          |
//! | 4..6   | version      | u16 LE, [`FRAME_VERSION`]: header layout + archive format |
//! | 6..8   | kind         | u16 LE, [`FrameKind`]: which type the archive holds    |
//! | 8..12  | body length  | u32 LE, bytes of archive after the header, at most [`FRAME_BODY_BYTES_MAX`] |
//! | 12..16 | body CRC32C  | u32 LE, CRC32C (Castagnoli) of the body                |
//! | 16..   | body         | the rkyv 0.8 archive (little-endian, 32-bit relative pointers) |
//!
//! **Alignment.** An archive must be read from memory aligned for its most aligned
//! field (8 bytes here; we keep 16 for headroom). The header is 16 bytes, so a frame
//! that starts on a 16-byte boundary has its body on one too, and [`decode`] reads
//! the archive in place, zero-copy. A frame anywhere else (a QUIC stream chunk, a
//! slice at an odd offset) is copied once, body only, into the caller's scratch
//! [`AlignedVec`], and read there. [`encode`] returns an [`AlignedVec`], so a frame
//! kept in the buffer it was encoded into always takes the zero-copy path; a stream
//! reader should read the header first ([`FrameHeader::parse`], which refuses huge
//! lengths before anything is allocated) and then the body into an `AlignedVec`.
//!
//! **Checks, in order**, each with its own [`FrameError`]: header length, magic,
//! version, kind, body length against the limit, then against the bytes present,
//! CRC32C, then rkyv validation (`bytecheck`: every pointer, length, enum tag and
//! `bool` of the archive), then the frame's own rules (an append's payload count).
//! Nothing on this path panics or allocates more than the input's length.

use rkyv::rancor::BoxedError;
use rkyv::util::AlignedVec;

use super::message::{
    ArchivedClusterFrame, ArchivedHeartbeatBatch, ArchivedMessage, ArchivedReplicationFrame,
    ClusterFrame, HeartbeatBatch, ReplicationFrame,
};

/// `b"SRPL"` read as a little-endian u32.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"SRPL");
/// Bumped whenever the header layout or any archived type changes.
pub const FRAME_VERSION: u16 = 1;
pub const FRAME_HEADER_BYTES: usize = 16;
/// The alignment a frame buffer needs for the zero-copy path.
pub const FRAME_ALIGNMENT_BYTES: usize = 16;
/// The largest body accepted or produced: a few appends' worth of record batches.
pub const FRAME_BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(FRAME_ALIGNMENT_BYTES));
const _: () = assert!(FRAME_BODY_BYTES_MAX <= u32::MAX as usize);

/// What the archive of a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum FrameKind {
    /// A [`ReplicationFrame`]: one message of one group.
    Replication = 1,
    /// A [`HeartbeatBatch`]: coalesced heartbeats of many groups.
    HeartbeatBatch = 2,
    /// A [`ClusterFrame`]: node-level traffic (forwarded commands, leader reports).
    Cluster = 3,
}

impl FrameKind {
    fn from_u16(value: u16) -> Option<Self> {
        match value {
            1 => Some(FrameKind::Replication),
            2 => Some(FrameKind::HeartbeatBatch),
            3 => Some(FrameKind::Cluster),
            _ => None,
        }
    }
}

/// Why bytes were refused as a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {got} bytes is shorter than its {FRAME_HEADER_BYTES}-byte header")]
    HeaderTruncated { got: usize },
    #[error("bad frame magic {got:#010x} (expected {expected:#010x}): not a replication frame")]
    BadMagic { expected: u32, got: u32 },
    #[error("frame version {got} is not supported (this node speaks version {supported})")]
    UnsupportedVersion { supported: u16, got: u16 },
    #[error("unknown frame kind {got}")]
    UnknownKind { got: u16 },
    #[error("frame body of {body_bytes} bytes is over the limit of {body_bytes_max} bytes")]
    BodyTooLarge {
        body_bytes: usize,
        body_bytes_max: usize,
    },
    #[error("frame body truncated: the header says {expected} bytes, {got} are present")]
    BodyTruncated { expected: usize, got: usize },
    #[error("{extra} bytes follow the end of the frame")]
    TrailingBytes { extra: usize },
    #[error("frame body CRC32C mismatch: header says {expected:#010x}, body has {got:#010x}")]
    ChecksumMismatch { expected: u32, got: u32 },
    #[error("the {kind:?} archive failed validation: {source}")]
    InvalidArchive {
        kind: FrameKind,
        #[source]
        source: BoxedError,
    },
    #[error("append of group {group} carries {payloads} payloads for {entries} entries (must be 0 or equal)")]
    PayloadCountMismatch {
        group: u64,
        entries: usize,
        payloads: usize,
    },
}

/// Why a frame could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(
        "the {kind:?} body would be {body_bytes} bytes, over the limit of {body_bytes_max} bytes"
    )]
    BodyTooLarge {
        kind: FrameKind,
        body_bytes: usize,
        body_bytes_max: usize,
    },
    #[error("append of group {group} carries {payloads} payloads for {entries} entries (must be 0 or equal)")]
    PayloadCountMismatch {
        group: u64,
        entries: usize,
        payloads: usize,
    },
    #[error("rkyv could not serialize the {kind:?}: {source}")]
    Serialize {
        kind: FrameKind,
        #[source]
        source: BoxedError,
    },
}

/// A parsed and checked header (magic, version, kind and body length are valid; the
/// CRC is checked against the body by [`decode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub body_bytes: usize,
    pub body_crc32c: u32,
}

impl FrameHeader {
    /// Parses the first [`FRAME_HEADER_BYTES`] of `bytes` (the rest is ignored). A
    /// stream reader calls this before reading the body, so a length over
    /// [`FRAME_BODY_BYTES_MAX`] is refused before any buffer is sized by it.
    pub fn parse(bytes: &[u8]) -> Result<Self, FrameError> {
        let Some(header) = bytes.first_chunk::<FRAME_HEADER_BYTES>() else {
            return Err(FrameError::HeaderTruncated { got: bytes.len() });
        };
        let u32_at = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let u16_at = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
        let magic = u32_at(0);
        if magic != FRAME_MAGIC {
            return Err(FrameError::BadMagic {
                expected: FRAME_MAGIC,
                got: magic,
            });
        }
        let version = u16_at(4);
        if version != FRAME_VERSION {
            return Err(FrameError::UnsupportedVersion {
                supported: FRAME_VERSION,
                got: version,
            });
        }
        let kind_raw = u16_at(6);
        let kind =
            FrameKind::from_u16(kind_raw).ok_or(FrameError::UnknownKind { got: kind_raw })?;
        // u32 -> usize is lossless on every target Strand builds for (64-bit Linux).
        let body_bytes = u32_at(8) as usize;
        if body_bytes > FRAME_BODY_BYTES_MAX {
            return Err(FrameError::BodyTooLarge {
                body_bytes,
                body_bytes_max: FRAME_BODY_BYTES_MAX,
            });
        }
        Ok(FrameHeader {
            kind,
            body_bytes,
            body_crc32c: u32_at(12),
        })
    }

    /// Header plus body.
    pub fn frame_bytes(&self) -> usize {
        FRAME_HEADER_BYTES + self.body_bytes
    }

    fn write(&self, out: &mut [u8]) {
        assert!(out.len() >= FRAME_HEADER_BYTES);
        assert!(self.body_bytes <= FRAME_BODY_BYTES_MAX);
        out[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
        out[4..6].copy_from_slice(&FRAME_VERSION.to_le_bytes());
        out[6..8].copy_from_slice(&(self.kind as u16).to_le_bytes());
        out[8..12].copy_from_slice(&(self.body_bytes as u32).to_le_bytes());
        out[12..16].copy_from_slice(&self.body_crc32c.to_le_bytes());
    }
}

/// A type that travels as a frame body. Sealed: only the two frame kinds.
pub trait FrameBody: sealed::Sealed {
    const KIND: FrameKind;
    #[doc(hidden)]
    fn serialize_into(
        &self,
        out: AlignedVec<FRAME_ALIGNMENT_BYTES>,
    ) -> Result<AlignedVec<FRAME_ALIGNMENT_BYTES>, BoxedError>;
    #[doc(hidden)]
    fn check(&self) -> Result<(), EncodeError>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ReplicationFrame {}
    impl Sealed for super::HeartbeatBatch {}
    impl Sealed for super::ClusterFrame {}
}

/// The body types and their kinds; each serializes the same way.
macro_rules! frame_body {
    ($($ty:ty => $kind:expr),* $(,)?) => {$(
        impl FrameBody for $ty {
            const KIND: FrameKind = $kind;
            fn serialize_into(
                &self,
                out: AlignedVec<FRAME_ALIGNMENT_BYTES>,
            ) -> Result<AlignedVec<FRAME_ALIGNMENT_BYTES>, BoxedError> {
                rkyv::api::high::to_bytes_in::<_, BoxedError>(self, out)
            }
            fn check(&self) -> Result<(), EncodeError> {
                CheckBody::check_body(self)
            }
        }
    )*};
}

frame_body! {
    ReplicationFrame => FrameKind::Replication,
    HeartbeatBatch => FrameKind::HeartbeatBatch,
    ClusterFrame => FrameKind::Cluster,
}

/// What `encode` refuses before serializing: nothing, except an append whose
/// payloads are neither absent nor one per entry.
trait CheckBody {
    fn check_body(&self) -> Result<(), EncodeError> {
        Ok(())
    }
}

impl CheckBody for HeartbeatBatch {}
impl CheckBody for ClusterFrame {}

impl CheckBody for ReplicationFrame {
    fn check_body(&self) -> Result<(), EncodeError> {
        if let super::Message::Append(append) = &self.message {
            let (entries, payloads) = (append.entries.len(), append.payloads.len());
            if payloads != 0 && payloads != entries {
                return Err(EncodeError::PayloadCountMismatch {
                    group: self.group,
                    entries,
                    payloads,
                });
            }
        }
        Ok(())
    }
}

/// Encodes `value` as one frame (header + archive) in a 16-byte-aligned buffer.
///
/// The archive is serialized straight after a header placeholder, so it is written
/// once and never moved: relative pointers do not care where the archive starts,
/// and the 16-byte header keeps the serializer's padding right.
pub fn encode<T: FrameBody>(value: &T) -> Result<AlignedVec<FRAME_ALIGNMENT_BYTES>, EncodeError> {
    value.check()?;
    let mut out = AlignedVec::<FRAME_ALIGNMENT_BYTES>::with_capacity(256);
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    let mut out = value
        .serialize_into(out)
        .map_err(|source| EncodeError::Serialize {
            kind: T::KIND,
            source,
        })?;
    let body_bytes = out.len() - FRAME_HEADER_BYTES;
    if body_bytes > FRAME_BODY_BYTES_MAX {
        return Err(EncodeError::BodyTooLarge {
            kind: T::KIND,
            body_bytes,
            body_bytes_max: FRAME_BODY_BYTES_MAX,
        });
    }
    let header = FrameHeader {
        kind: T::KIND,
        body_bytes,
        body_crc32c: crc32c::crc32c(&out[FRAME_HEADER_BYTES..]),
    };
    header.write(&mut out[..FRAME_HEADER_BYTES]);
    Ok(out)
}

/// A validated frame, read in place: the archived value borrows the input (or the
/// scratch buffer, after the one copy of the misaligned path).
#[derive(Debug, Clone, Copy)]
pub enum DecodedFrame<'a> {
    Replication(&'a ArchivedReplicationFrame),
    HeartbeatBatch(&'a ArchivedHeartbeatBatch),
    Cluster(&'a ArchivedClusterFrame),
}

impl DecodedFrame<'_> {
    pub fn kind(&self) -> FrameKind {
        match self {
            DecodedFrame::Replication(_) => FrameKind::Replication,
            DecodedFrame::HeartbeatBatch(_) => FrameKind::HeartbeatBatch,
            DecodedFrame::Cluster(_) => FrameKind::Cluster,
        }
    }
}

/// Whether `bytes` starts where [`decode`] can read the archive in place.
pub fn is_zero_copy_aligned(bytes: &[u8]) -> bool {
    (bytes.as_ptr() as usize).is_multiple_of(FRAME_ALIGNMENT_BYTES)
}

/// Checks and validates exactly one frame (`bytes` must end where it ends) and
/// returns a zero-copy view of its archive.
///
/// If `bytes` starts on a 16-byte boundary the archive is read in place and
/// `scratch` is not touched. Otherwise the body (already checked against the
/// header's length and CRC, so at most [`FRAME_BODY_BYTES_MAX`] and never more than
/// the input) is copied once into `scratch`, which is cleared first and can be
/// reused frame after frame.
pub fn decode<'a>(
    bytes: &'a [u8],
    scratch: &'a mut AlignedVec<FRAME_ALIGNMENT_BYTES>,
) -> Result<DecodedFrame<'a>, FrameError> {
    let header = FrameHeader::parse(bytes)?;
    let present = bytes.len() - FRAME_HEADER_BYTES;
    if present < header.body_bytes {
        return Err(FrameError::BodyTruncated {
            expected: header.body_bytes,
            got: present,
        });
    }
    if present > header.body_bytes {
        return Err(FrameError::TrailingBytes {
            extra: present - header.body_bytes,
        });
    }
    let body = &bytes[FRAME_HEADER_BYTES..];
    let crc = crc32c::crc32c(body);
    if crc != header.body_crc32c {
        return Err(FrameError::ChecksumMismatch {
            expected: header.body_crc32c,
            got: crc,
        });
    }
    let body: &'a [u8] = if is_zero_copy_aligned(body) {
        body
    } else {
        scratch.clear();
        scratch.extend_from_slice(body);
        scratch.as_slice()
    };
    let invalid = |source| FrameError::InvalidArchive {
        kind: header.kind,
        source,
    };
    match header.kind {
        FrameKind::Replication => {
            let frame =
                rkyv::access::<ArchivedReplicationFrame, BoxedError>(body).map_err(invalid)?;
            if let ArchivedMessage::Append(append) = &frame.message {
                let (entries, payloads) = (append.entries.len(), append.payloads.len());
                if payloads != 0 && payloads != entries {
                    return Err(FrameError::PayloadCountMismatch {
                        group: frame.group.to_native(),
                        entries,
                        payloads,
                    });
                }
            }
            Ok(DecodedFrame::Replication(frame))
        }
        FrameKind::HeartbeatBatch => {
            let batch =
                rkyv::access::<ArchivedHeartbeatBatch, BoxedError>(body).map_err(invalid)?;
            Ok(DecodedFrame::HeartbeatBatch(batch))
        }
        FrameKind::Cluster => {
            let frame = rkyv::access::<ArchivedClusterFrame, BoxedError>(body).map_err(invalid)?;
            Ok(DecodedFrame::Cluster(frame))
        }
    }
}

impl ArchivedReplicationFrame {
    /// An owned copy (payloads copied out of the archive). Deserializing a
    /// validated archive of these types does not fail in practice; the error is
    /// rkyv's, kept rather than unwrapped.
    pub fn to_owned_frame(&self) -> Result<ReplicationFrame, BoxedError> {
        rkyv::deserialize::<ReplicationFrame, BoxedError>(self)
    }
}

impl ArchivedClusterFrame {
    /// An owned copy.
    pub fn to_owned_frame(&self) -> Result<ClusterFrame, BoxedError> {
        rkyv::deserialize::<ClusterFrame, BoxedError>(self)
    }
}

impl ArchivedHeartbeatBatch {
    /// An owned copy.
    pub fn to_owned_batch(&self) -> Result<HeartbeatBatch, BoxedError> {
        rkyv::deserialize::<HeartbeatBatch, BoxedError>(self)
    }
}
