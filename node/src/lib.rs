//! The Strand node: shards, the Kafka API, and (later) replication and cluster
//! state. See ARCHITECTURE.md for which core owns what.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod group;
pub mod kafka;
pub mod launch;
pub mod metrics;
pub mod partition;
pub mod replication;
pub mod router;
pub mod server;
pub mod shard;
pub mod topics;
