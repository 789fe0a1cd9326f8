//! The controller: the cluster's metadata (brokers, topics, partition assignments) as
//! a replicated state machine.
//!
//! The controller's log is a Raft group like any partition's (group
//! [`CONTROLLER_GROUP`], every member a voter, on shard 0 of each node); each entry is
//! one record whose value is a JSON [`Command`]. Every node applies the committed
//! commands in log order with [`apply`], so every node holds the same [`Topics`] and
//! any node can answer Metadata. Commands are checked against the state when they are
//! applied, not when they are proposed: two racing creations of one topic both commit,
//! and the first one wins everywhere.

use serde::{Deserialize, Serialize};

use crate::replication::Index;
use crate::topics::{BrokerAddr, TopicMeta, Topics};

/// The replication group of the controller log.
pub const CONTROLLER_GROUP: u64 = 1;
/// Group ids of a topic's partitions are `seq * GROUP_PARTITIONS + partition`;
/// `seq >= 1`, so they never meet the controller's.
pub const GROUP_PARTITIONS: u64 = 1 << 14;
const _: () = assert!(crate::topics::PARTITIONS_MAX as u64 <= GROUP_PARTITIONS);

/// The replication group of a topic partition.
pub fn group_id(seq: u64, partition: i32) -> u64 {
    debug_assert!(seq >= 1 && partition >= 0);
    seq * GROUP_PARTITIONS + partition as u64
}

/// One change to the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// A node says where clients reach it.
    RegisterBroker {
        id: u32,
        host: String,
        port: u16,
    },
    /// Create (`create`: only if absent) or replace (only if present, same id) a topic.
    PutTopic {
        name: String,
        meta: TopicMeta,
        create: bool,
    },
    RemoveTopic {
        name: String,
    },
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Command> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Apply the command committed at `index`. Returns whether the state changed.
pub fn apply(topics: &mut Topics, index: Index, command: Command) -> bool {
    debug_assert!(index > topics.version || topics.version == 0);
    topics.version = topics.version.max(index);
    match command {
        Command::RegisterBroker { id, host, port } => {
            let addr = BrokerAddr { host, port };
            topics.brokers.insert(id, addr.clone()) != Some(addr)
        }
        Command::PutTopic { name, meta, create } => match topics.topics.get_mut(&name) {
            None if create => {
                topics.topics.insert(name, TopicMeta { seq: index, ..meta });
                true
            }
            Some(current) if !create && current.id == meta.id => {
                let seq = current.seq;
                *current = TopicMeta { seq, ..meta };
                true
            }
            _ => false,
        },
        Command::RemoveTopic { name } => topics.topics.remove(&name).is_some(),
    }
}

/// Replicas of partitions `partitions` of topic `name`: `factor` consecutive members
/// from a start that depends on the name and the partition, so leaders (the first
/// replica is preferred) spread over the members.
pub fn assign_replicas(
    name: &str,
    partitions: std::ops::Range<i32>,
    factor: usize,
    members: &[u32],
) -> Vec<Vec<u32>> {
    let n = members.len().max(1);
    let start = crc32c::crc32c(name.as_bytes()) as usize;
    partitions
        .map(|p| {
            (0..factor.min(n))
                .map(|k| members[(start + p as usize + k) % n])
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::TopicConfig;

    fn meta(id: u8, partitions: i32) -> TopicMeta {
        TopicMeta {
            id: [id; 16],
            partitions,
            config: TopicConfig {
                retention_ms: None,
                retention_bytes: None,
                max_message_bytes: 1 << 20,
                segment_bytes: 1 << 27,
            },
            replicas: assign_replicas("t", 0..partitions, 3, &[1, 2, 3]),
            seq: 0,
        }
    }

    #[test]
    fn first_creation_wins_and_keeps_its_seq() {
        let mut t = Topics::default();
        let put = |m, create| Command::PutTopic {
            name: "t".into(),
            meta: m,
            create,
        };
        assert!(apply(&mut t, 5, put(meta(1, 2), true)));
        assert!(
            !apply(&mut t, 6, put(meta(2, 4), true)),
            "second create loses"
        );
        assert_eq!(t.topics["t"].id, [1; 16]);
        assert_eq!(t.topics["t"].seq, 5);
        assert!(apply(&mut t, 7, put(meta(1, 4), false)));
        assert_eq!(t.topics["t"].partitions, 4);
        assert_eq!(t.topics["t"].seq, 5, "replacing keeps the groups");
        assert!(
            !apply(&mut t, 8, put(meta(9, 8), false)),
            "other id: refused"
        );
        assert!(apply(&mut t, 9, Command::RemoveTopic { name: "t".into() }));
        assert!(t.topics.is_empty());
        assert_eq!(t.version, 9);
        let encoded = put(meta(1, 1), true).encode();
        assert_eq!(Command::decode(&encoded), Some(put(meta(1, 1), true)));
    }

    #[test]
    fn assignments_spread_leaders_and_never_repeat_a_member() {
        let a = assign_replicas("orders", 0..6, 3, &[1, 2, 3]);
        for r in &a {
            let mut s = r.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), 3);
        }
        let leaders: std::collections::BTreeSet<u32> = a.iter().map(|r| r[0]).collect();
        assert_eq!(leaders.len(), 3);
        assert_eq!(assign_replicas("x", 0..2, 3, &[7]), vec![vec![7], vec![7]]);
        assert_ne!(group_id(1, 0), CONTROLLER_GROUP);
        assert_eq!(group_id(2, 3), 2 * GROUP_PARTITIONS + 3);
    }
}
