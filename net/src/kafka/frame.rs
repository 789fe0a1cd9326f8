//! Length-prefixed frames: a big-endian i32 size, then that many bytes.

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncReadExt};

/// Why a frame could not be read. Every variant ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {size} is negative")]
    Negative { size: i32 },
    #[error("frame of {size} bytes is over the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Read one frame. `Ok(None)` when the peer closed the connection between frames.
/// The size is checked before anything is allocated.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> Result<Option<BytesMut>, FrameError> {
    match read_frame_size(reader, max_bytes).await? {
        None => Ok(None),
        Some(size) => read_frame_body(reader, size).await.map(Some),
    }
}

/// Read a frame's size prefix, checked against `max_bytes`, so the caller can admit
/// the memory before the body is read. `Ok(None)` on a clean close.
pub async fn read_frame_size<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> Result<Option<usize>, FrameError> {
    let mut size = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut size[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let size = i32::from_be_bytes(size);
    if size < 0 {
        return Err(FrameError::Negative { size });
    }
    let size = size as usize;
    if size > max_bytes {
        return Err(FrameError::TooLarge {
            size,
            max: max_bytes,
        });
    }
    Ok(Some(size))
}

/// Read a frame body of `size` bytes (after [`read_frame_size`]).
pub async fn read_frame_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: usize,
) -> Result<BytesMut, FrameError> {
    let mut frame = BytesMut::zeroed(size);
    reader.read_exact(&mut frame).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], max: usize) -> Result<Option<BytesMut>, FrameError> {
        futures_lite::future::block_on(read_frame(&mut &bytes[..], max))
    }

    #[test]
    fn frames_and_their_failures() {
        let mut ok = 3i32.to_be_bytes().to_vec();
        ok.extend_from_slice(b"abc");
        assert_eq!(&read(&ok, 10).expect("frame").expect("some")[..], b"abc");
        assert!(matches!(read(&[], 10), Ok(None)));
        assert!(matches!(read(&[0, 0], 10), Err(FrameError::Truncated)));
        assert!(matches!(read(&ok[..5], 10), Err(FrameError::Truncated)));
        assert!(matches!(
            read(&(-1i32).to_be_bytes(), 10),
            Err(FrameError::Negative { size: -1 })
        ));
        // A 2 GiB size prefix is refused before any allocation.
        assert!(matches!(
            read(&i32::MAX.to_be_bytes(), 100 << 20),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
