//! Errors of the QUIC transport.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::replication::FrameError;

/// Why a transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    #[error("cannot read the {what} {}: {source}", path.display())]
    TlsFileRead {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} {} is not usable: {reason}", path.display())]
    TlsFileInvalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the node certificate {} does not fit this node: {source}", path.display())]
    NodeCertificateMismatch {
        path: PathBuf,
        #[source]
        source: super::IdentityError,
    },
    #[error("cannot build the TLS configuration: {reason}")]
    TlsConfig { reason: String },
    #[error("invalid transport setting: {reason}")]
    InvalidConfig { reason: String },
    #[error("cannot bind the QUIC socket to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why [`super::Transport::send`] dropped a frame. The caller (Raft) retransmits on its
/// own schedule, so none of these needs handling beyond perhaps a log line.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the transport is closed")]
    Closed,
    #[error("not a frame: {0}")]
    InvalidFrame(#[source] FrameError),
    #[error("the frame header says {expected} bytes but {got} were given")]
    FrameLength { expected: usize, got: usize },
    #[error("{queued_bytes} bytes are already queued for node {to}, over the limit of {queued_bytes_max} bytes with this frame")]
    QueueFull {
        to: u32,
        queued_bytes: usize,
        queued_bytes_max: usize,
    },
    #[error("node {to} at {addr} is unreachable for now (retrying in {retry_in:?})")]
    Unreachable {
        to: u32,
        addr: SocketAddr,
        retry_in: Duration,
    },
    #[error("cannot connect to node {to} at {addr}: {reason}")]
    Connect {
        to: u32,
        addr: SocketAddr,
        reason: String,
    },
}
