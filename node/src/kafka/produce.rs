//! Produce: validate, route each partition's records to its owner, answer per
//! partition. acks=-1 answers once the batch is durable; acks=0 gets no response.

use std::rc::Rc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{errors, topic_name};
use crate::router::{Op, OpResult};
use crate::shard::Shard;

fn partition_response(
    index: i32,
    error_code: i16,
    base_offset: i64,
    log_start: i64,
) -> PartitionProduceResponse {
    let mut p = PartitionProduceResponse::default();
    p.index = index;
    p.error_code = error_code;
    p.base_offset = base_offset;
    p.log_append_time_ms = -1;
    p.log_start_offset = log_start;
    p
}

pub async fn handle(shard: &Rc<Shard>, r: ProduceRequest, version: i16) -> Option<ProduceResponse> {
    let acks = r.acks;
    let view = shard.topics();
    let mut pending = Vec::new();
    for topic in r.topic_data {
        let name = topic.name.0.to_string();
        for part in topic.partition_data {
            let index = part.index;
            let early_error = if !matches!(acks, -1..=1) {
                Some(errors::INVALID_REQUIRED_ACKS)
            } else if r.transactional_id.is_some() {
                Some(errors::INVALID_REQUEST)
            } else if name == crate::group::OFFSETS_TOPIC {
                // Only the group coordinators write there.
                Some(errors::INVALID_TOPIC_EXCEPTION)
            } else if view
                .get(&name)
                .is_none_or(|m| index < 0 || index >= m.partitions)
            {
                Some(errors::UNKNOWN_TOPIC_OR_PARTITION)
            } else if part.records.as_ref().is_none_or(|b| b.is_empty()) {
                Some(errors::CORRUPT_MESSAGE)
            } else {
                None
            };
            let task = match (early_error, part.records) {
                (None, Some(records)) => {
                    let max_message_bytes = view
                        .get(&name)
                        .map_or(shard.config().max_message_bytes as u32, |m| {
                            m.config.max_message_bytes
                        });
                    let shard = shard.clone();
                    let topic = name.clone();
                    Some(glommio::spawn_local(async move {
                        let owner = shard.owner_of(&topic, index);
                        let op = Op::Produce {
                            topic,
                            partition: index,
                            records,
                            acks,
                            max_message_bytes,
                        };
                        match shard.run_op(owner, op).await {
                            Some(OpResult::Produced(p)) => {
                                (p.error_code, p.base_offset, p.log_start_offset)
                            }
                            _ => (errors::UNKNOWN_SERVER_ERROR, -1, -1),
                        }
                    }))
                }
                _ => None,
            };
            pending.push((name.clone(), index, early_error, task));
        }
    }
    let mut out = ProduceResponse::default();
    for (name, index, early_error, task) in pending {
        let (code, base, start) = match (early_error, task) {
            (Some(code), _) => (code, -1, -1),
            (None, Some(task)) => task.await,
            (None, None) => (errors::UNKNOWN_SERVER_ERROR, -1, -1),
        };
        // Fields a version lacks must keep their defaults, or encoding fails.
        let start = if version >= 5 { start } else { -1 };
        let resp = partition_response(index, code, base, start);
        match out.responses.iter_mut().find(|t| t.name.0.as_str() == name) {
            Some(t) => t.partition_responses.push(resp),
            None => {
                let mut t = TopicProduceResponse::default();
                t.name = topic_name(&name);
                t.partition_responses.push(resp);
                out.responses.push(t);
            }
        }
    }
    (acks != 0).then_some(out)
}
