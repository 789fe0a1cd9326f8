//! Replication traffic between nodes: the wire types of the Raft messages and their
//! frames (issue 5).
//!
//! A frame is a 16-byte header and an rkyv archive, validated (`bytecheck`) and then
//! read zero-copy; see [`frame`] for the byte layout and the alignment rules. The
//! types in [`message`] mirror `strand_node::replication::Message` (this crate cannot
//! depend on the node); the node converts, and checks what it decoded with
//! `Message::is_well_formed` like any other input.
//!
//! **Architecture invariant:** nothing here knows about partitions, logs or shards:
//! a group id is a number, a payload is opaque bytes.

pub mod frame;
pub mod message;

pub use frame::{
    decode, encode, is_zero_copy_aligned, DecodedFrame, EncodeError, FrameBody, FrameError,
    FrameHeader, FrameKind, FRAME_ALIGNMENT_BYTES, FRAME_BODY_BYTES_MAX, FRAME_HEADER_BYTES,
    FRAME_MAGIC, FRAME_VERSION,
};
pub use message::*;
/// The 16-byte-aligned buffer frames are encoded into, and misaligned frames are
/// copied into (rkyv's `AlignedVec`).
pub type FrameBuffer = rkyv::util::AlignedVec<FRAME_ALIGNMENT_BYTES>;
