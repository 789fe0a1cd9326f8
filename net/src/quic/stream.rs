//! The byte layout of one transport stream: the stream key, then frames back to back.
//! [`FrameReader`] splits received bytes into frames; [`OutStream`] holds the frames
//! queued for one key of one peer.

use std::collections::VecDeque;

use bytes::Bytes;
use quinn_proto::StreamId;

use super::STREAM_KEY_BYTES;
use crate::replication::{FrameBuffer, FrameError, FrameHeader, FRAME_HEADER_BYTES};

/// A frame buffer starts at most this big and grows as the body arrives, so a header
/// claiming a huge body costs nothing until the bytes are actually sent.
const FRAME_BUFFER_INITIAL_BYTES: usize = 256 * 1024;

/// Reassembles one received stream: the key, then whole frames, each copied once
/// into its own 16-byte-aligned buffer (so the archive is read zero-copy).
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    key: [u8; STREAM_KEY_BYTES],
    key_len: usize,
    header: [u8; FRAME_HEADER_BYTES],
    header_len: usize,
    /// Bytes of the frame being read (header included); 0 while reading a header.
    frame_bytes: usize,
    frame: FrameBuffer,
}

impl FrameReader {
    /// The stream key, once its bytes have arrived.
    pub fn key(&self) -> Option<u64> {
        (self.key_len == STREAM_KEY_BYTES).then(|| u64::from_le_bytes(self.key))
    }

    /// Consumes `bytes`, handing each completed frame to `deliver` with the stream key.
    /// After an error the stream is unusable (its framing is lost).
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        deliver: &mut impl FnMut(u64, FrameBuffer),
    ) -> Result<(), FrameError> {
        while !bytes.is_empty() {
            if self.key_len < STREAM_KEY_BYTES {
                let n = (STREAM_KEY_BYTES - self.key_len).min(bytes.len());
                self.key[self.key_len..self.key_len + n].copy_from_slice(&bytes[..n]);
                self.key_len += n;
                bytes = &bytes[n..];
            } else if self.frame_bytes == 0 {
                let n = (FRAME_HEADER_BYTES - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len == FRAME_HEADER_BYTES {
                    self.start_frame(deliver)?;
                }
            } else {
                let n = (self.frame_bytes - self.frame.len()).min(bytes.len());
                self.frame.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                if self.frame.len() == self.frame_bytes {
                    self.finish_frame(deliver);
                }
            }
        }
        Ok(())
    }

    fn start_frame(
        &mut self,
        deliver: &mut impl FnMut(u64, FrameBuffer),
    ) -> Result<(), FrameError> {
        let header = FrameHeader::parse(&self.header)?;
        self.frame_bytes = header.frame_bytes();
        self.header_len = 0;
        self.frame = FrameBuffer::with_capacity(self.frame_bytes.min(FRAME_BUFFER_INITIAL_BYTES));
        self.frame.extend_from_slice(&self.header);
        if self.frame.len() == self.frame_bytes {
            self.finish_frame(deliver);
        }
        Ok(())
    }

    fn finish_frame(&mut self, deliver: &mut impl FnMut(u64, FrameBuffer)) {
        let key = u64::from_le_bytes(self.key);
        self.frame_bytes = 0;
        deliver(key, std::mem::take(&mut self.frame));
    }
}

/// The frames queued for one stream key of one peer, and its QUIC stream on the
/// current connection.
#[derive(Debug, Default)]
pub(crate) struct OutStream {
    /// The stream on the current connection, once opened.
    pub id: Option<StreamId>,
    /// Bytes of the key prefix still to write on `id`.
    pub prefix_left: usize,
    /// Whole frames, the first possibly partly written already.
    pub frames: VecDeque<Bytes>,
    /// Whether the key is in its peer's list of streams with frames to write.
    pub pending: bool,
}

impl OutStream {
    /// Forgets the stream (its connection is gone); returns how many frames were dropped.
    pub fn reset(&mut self) -> usize {
        let dropped = self.frames.len();
        self.frames.clear();
        self.id = None;
        self.prefix_left = 0;
        self.pending = false;
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::{encode, is_zero_copy_aligned, HeartbeatBatch};

    fn frame(from: u32) -> FrameBuffer {
        let batch = HeartbeatBatch {
            from,
            to: 9,
            heartbeats: Vec::new(),
            responses: Vec::new(),
        };
        match encode(&batch) {
            Ok(frame) => frame,
            Err(e) => panic!("encode: {e}"),
        }
    }

    /// Every split of the stream into chunks yields the same frames.
    #[test]
    fn frames_survive_any_chunking() {
        let frames: Vec<FrameBuffer> = (0..5).map(frame).collect();
        let mut stream = 77u64.to_le_bytes().to_vec();
        for f in &frames {
            stream.extend_from_slice(f);
        }
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let mut reader = FrameReader::default();
            let mut got = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let n = rng.usize(1..=rest.len().min(40));
                let result = reader.feed(&rest[..n], &mut |key, f| got.push((key, f)));
                assert!(result.is_ok());
                rest = &rest[n..];
            }
            assert_eq!(got.len(), frames.len());
            for ((key, got), want) in got.iter().zip(&frames) {
                assert_eq!(*key, 77);
                assert_eq!(got.as_slice(), want.as_slice());
                assert!(is_zero_copy_aligned(got));
            }
        }
    }

    #[test]
    fn bad_header_is_an_error() {
        let mut reader = FrameReader::default();
        let mut stream = 1u64.to_le_bytes().to_vec();
        stream.extend_from_slice(&[0xEE; 32]);
        let result = reader.feed(&stream, &mut |_, _| panic!("no frame expected"));
        assert!(matches!(result, Err(FrameError::BadMagic { .. })));
        assert_eq!(reader.key(), Some(1));
    }
}
