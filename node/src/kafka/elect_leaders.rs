//! ElectLeaders (preferred election): hand each named partition's leadership back
//! to its preferred replica (the first of its replica list), by a Raft leadership
//! transfer. Rolling upgrades use it to put leaders back after a restart.
//!
//! A partition is handled by the node that leads it (its owning shard); elsewhere
//! the answer is NOT_LEADER_OR_FOLLOWER and the client asks the leader (`strand
//! cluster elect-leaders` does).

use std::rc::Rc;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};
use kafka_protocol::protocol::StrBytes;

use super::{errors, topic_name};
use crate::router::{Op, OpResult};
use crate::shard::Shard;

pub const ELECTION_NOT_NEEDED: i16 = 84;
pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
pub const INVALID_REQUEST: i16 = errors::INVALID_REQUEST;

pub async fn handle(
    shard: &Rc<Shard>,
    r: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    let mut out = ElectLeadersResponse::default();
    if version >= 1 && r.election_type != 0 {
        out.error_code = INVALID_REQUEST;
        return out;
    }
    let view = shard.topics();
    let wanted: Vec<(String, Vec<i32>)> = match r.topic_partitions {
        Some(list) => list
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
        None => view
            .topics
            .iter()
            .map(|(name, meta)| (name.clone(), (0..meta.partitions).collect()))
            .collect(),
    };
    let timeout_ms = u64::try_from(r.timeout_ms).unwrap_or(0).clamp(100, 60_000);
    for (topic, partitions) in wanted {
        let mut result = ReplicaElectionResult::default();
        result.topic = topic_name(&topic);
        for partition in partitions {
            let owner = shard.owner_of(&topic, partition);
            let (code, message) = match shard
                .run_op(
                    owner,
                    Op::ElectPreferred {
                        topic: topic.clone(),
                        partition,
                        timeout_ms,
                    },
                )
                .await
            {
                Some(OpResult::Admin(code, message)) => (code, message),
                _ => (errors::UNKNOWN_SERVER_ERROR, None),
            };
            let mut p = PartitionResult::default();
            p.partition_id = partition;
            p.error_code = code;
            p.error_message = message.map(StrBytes::from_string);
            result.partition_result.push(p);
        }
        out.replica_election_results.push(result);
    }
    out
}
