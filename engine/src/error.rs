//! Typed errors of the engine. Operating errors (bad input, full disk, corrupt data)
//! are values; programmer errors are assertions.

use std::path::PathBuf;

/// Why a record batch was refused by [`crate::batch::validate`]. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("batch length {batch_length} is out of range (min {min}, max {max})")]
    BadLength {
        batch_length: i64,
        min: usize,
        max: usize,
    },
    #[error("unsupported record batch magic {magic} (only v2 is supported)")]
    UnsupportedMagic { magic: i8 },
    #[error("batch CRC32C mismatch: header says {expected:#010x}, bytes give {got:#010x}")]
    ChecksumMismatch { expected: u32, got: u32 },
    #[error("bad batch header: {reason}")]
    BadHeader { reason: &'static str },
    #[error("empty append: no record batch given")]
    Empty,
}

/// Errors of the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid record batch at byte {position} of the append: {source}")]
    InvalidBatch {
        position: usize,
        #[source]
        source: BatchError,
    },
    #[error("disk full while {op} {path}: free space, then appends resume")]
    DiskFull { op: &'static str, path: PathBuf },
    #[error("I/O error while {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is on tmpfs, which does not support O_DIRECT: put the data directory on a real \
         disk (or set allow_buffered_fallback for throwaway tests)"
    )]
    Tmpfs { path: PathBuf },
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("offset {offset} is out of range: log holds [{start}, {end})")]
    OffsetOutOfRange { offset: u64, start: u64, end: u64 },
    #[error("cannot truncate to offset {offset}: {reason}")]
    InvalidTruncation { offset: u64, reason: &'static str },
    #[error("invalid log config: {field} = {value}: {fix}")]
    InvalidConfig {
        field: &'static str,
        value: String,
        fix: &'static str,
    },
    #[error("the log is closed")]
    Closed,
    #[error("an earlier write failed and the log is read-only until reopened: {0}")]
    Failed(String),
}

impl Error {
    /// Map an I/O error, turning ENOSPC/EDQUOT into [`Error::DiskFull`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::DiskFull { op, path },
            _ => Error::Io { op, path, source },
        }
    }

    /// True when retrying after freeing disk space can succeed.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::DiskFull { .. })
    }

    /// A copy for handing the same failure to several waiters.
    pub fn duplicate(&self) -> Self {
        match self {
            Error::DiskFull { op, path } => Error::DiskFull {
                op,
                path: path.clone(),
            },
            Error::Io { op, path, source } => Error::Io {
                op,
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            other => Error::Failed(other.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
