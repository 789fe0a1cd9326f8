//! The cluster: static membership, the controller (replicated metadata), and the
//! replication groups of the partitions, driven on their shards.
//!
//! - Membership is static ([`crate::config::NodeConfig::peers`]): every node lists
//!   every member's id and replication address. A node proves its id with its TLS
//!   certificate (CN `strand-node-<id>`, signed by the cluster CA, O = cluster id).
//! - Every member runs the same number of shards, and a group lives on the same shard
//!   index everywhere (`shard::owner_of` hashes the topic name), so shard s of one
//!   node talks only to shard s of the others, over its own QUIC endpoint
//!   (replication port + s): replication never crosses shards.
//! - The controller ([`controller`]) is the Raft group [`controller::CONTROLLER_GROUP`]
//!   on shard 0 of every node; its committed commands build the same
//!   [`crate::topics::Topics`] on every node.
//! - Each partition is a Raft group over its replicas ([`replica::Replica`]); the
//!   Kafka leader is the Raft leader, the leader epoch is the term (stamped in every
//!   batch's `partitionLeaderEpoch`), the high watermark is the published commit.
//! - Leaders are learned from the local replicas and from the leader reports every
//!   node's shards send each other ([`runtime::Runtime`]), so any node answers
//!   Metadata, also for partitions it does not host.

pub mod checkpoint;
pub mod controller;
pub mod entry_offsets;
pub mod records;
pub mod replica;
pub mod runtime;

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A group's leader as known somewhere: sent between shards of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderUpdate {
    pub group: u64,
    /// None: the sender's replica has lost its leader (it is campaigning), so
    /// clients are told LEADER_NOT_AVAILABLE and look again soon, rather than being
    /// sent to a leader that may be dead.
    pub leader: Option<u32>,
    pub term: u64,
    /// In-sync replicas (the leader included); empty when unknown.
    pub isr: Vec<u32>,
}

/// What a data directory belongs to, written the first time a node starts on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    cluster_id: String,
    node_id: u32,
}

const IDENTITY_FILE: &str = "identity.json";

/// Refuse a data directory that belongs to another cluster or node; stamp a fresh one.
pub fn check_identity(data_dir: &Path, cluster_id: &str, node_id: u32) -> Result<(), String> {
    let path = data_dir.join(IDENTITY_FILE);
    let ours = Identity {
        cluster_id: cluster_id.to_string(),
        node_id,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let found: Identity = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is corrupt: {e}", path.display()))?;
            if found.cluster_id != ours.cluster_id {
                return Err(format!(
                    "the data directory {} belongs to cluster {:?}, but this node is \
                     configured for cluster {:?}: fix cluster_id, or use another data_dir",
                    data_dir.display(),
                    found.cluster_id,
                    ours.cluster_id
                ));
            }
            if found.node_id != ours.node_id {
                return Err(format!(
                    "the data directory {} belongs to node {}, but this node is node {}: \
                     fix node_id, or use another data_dir",
                    data_dir.display(),
                    found.node_id,
                    ours.node_id
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = serde_json::to_vec_pretty(&ours).map_err(|e| e.to_string())?;
            crate::topics::write_durably(&path, &bytes)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_of_another_cluster_or_node_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        check_identity(dir.path(), "prod", 1).expect("fresh dir is stamped");
        check_identity(dir.path(), "prod", 1).expect("same identity");
        let e = check_identity(dir.path(), "staging", 1).expect_err("other cluster");
        assert!(e.contains("belongs to cluster \"prod\""), "{e}");
        let e = check_identity(dir.path(), "prod", 2).expect_err("other node");
        assert!(e.contains("belongs to node 1"), "{e}");
    }
}
