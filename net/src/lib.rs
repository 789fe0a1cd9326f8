//! Strand networking. Today: the Kafka wire framing and request decoding shared by
//! the node and the tools. The QUIC transport between nodes comes with replication.
//!
//! **Architecture invariant:** nothing here knows about partitions, logs or shards.

pub mod kafka;
pub mod quic;
pub mod replication;
