//! The QUIC transport between nodes: replication frames over TLS 1.3, mutually
//! authenticated against the cluster CA.
//!
//! [`Transport`] drives the `quinn-proto` state machine (sans-IO) from one glommio
//! executor: one task reads datagrams, one task runs timers, stream I/O and sends. It
//! lives on the executor that bound it (it is `!Send`, shared as `Rc`); a node runs one
//! per shard that talks to peers.
//!
//! **Connections.** Each node sends on its own outgoing connection to a peer and
//! receives on the connections peers opened to it: two connections per pair, and no
//! rule about who dials. Connections are made lazily by [`Transport::send`], and after
//! a loss again by a later `send`, once a backoff has passed.
//!
//! **Streams.** A caller's stream key (a `u64`: say 0 for heartbeats, one per partition
//! group for appends) maps to one unidirectional QUIC stream per connection, opened on
//! first use. The stream starts with the key (8 bytes, little-endian), then frames back
//! to back, each delimited by its own header ([`crate::replication::frame`]). So a slow
//! stream only holds up itself, and frames of one key arrive in order or not at all.
//! The transport never decodes archives; it only splits a stream at frame boundaries.
//!
//! **Identity.** See [`tls`]: the server requires a client certificate chained to the
//! cluster CA and reads the peer's node id from it; the client checks the server's
//! certificate names the node it meant to reach. A certificate from another CA, or for
//! another cluster, does not deliver a single frame.
//!
//! **Architecture invariant:** nothing here knows about partitions, Raft or shards: a
//! stream key is a number, a frame is bytes with a valid header.

mod error;
mod identity;
mod stream;
pub mod tls;
mod transport;

pub use error::{QuicError, SendError};
pub use identity::IdentityError;
pub use tls::TlsFiles;
pub use transport::{Incoming, Transport, TransportConfig, TransportStats};

use std::time::Duration;

/// The ALPN protocol both ends must offer: a node of another wire version fails the
/// handshake instead of exchanging frames it cannot read.
pub const ALPN_PROTOCOL: &[u8] = b"strand-replication/1";
/// Stream keys are written as this many bytes (u64 little-endian) at the start of a stream.
pub const STREAM_KEY_BYTES: usize = 8;
/// Concurrent unidirectional streams a peer may open to us: the stream keys in use
/// per connection.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 10_000;
/// Flow-control window of one stream: a large append frame moves in one round trip.
pub const STREAM_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// Flow-control window of a connection (all its streams), and our send window.
pub const CONNECTION_WINDOW_BYTES: u32 = 64 * 1024 * 1024;
/// The first wait before reconnecting to a peer after a failed or lost connection; it
/// doubles on every failure up to [`RECONNECT_BACKOFF_MAX`] and resets on success.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Application error codes sent in CONNECTION_CLOSE.
pub mod close_code {
    /// The node is shutting down.
    pub const SHUTDOWN: u32 = 0;
    /// The peer's certificate chains to our CA but is not a node of this cluster.
    pub const REFUSED: u32 = 1;
    /// A stream carried bytes that are not a frame (bad header).
    pub const BAD_FRAME: u32 = 2;
    /// The peer stopped one of our streams, which Strand never does.
    pub const STREAM_STOPPED: u32 = 3;
    /// The caller now addresses this peer at another address.
    pub const READDRESSED: u32 = 4;
}
