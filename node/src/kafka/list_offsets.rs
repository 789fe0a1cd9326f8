//! ListOffsets: earliest, latest (the high watermark: last record's offset + 1), and
//! by timestamp (the first *record* at or after it, as Kafka answers).

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;

use super::errors;
use crate::partition::Partition;
use crate::router::{Op, OpResult};
use crate::shard::Shard;

pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;

/// (error code, offset, timestamp) for one partition.
pub async fn lookup(p: &Partition, timestamp: i64) -> (i16, i64, i64) {
    let hw = p.high_watermark();
    match timestamp {
        EARLIEST => (errors::NONE, p.log.start_offset() as i64, -1),
        LATEST => {
            // acks=0/1 producers never ask for a sync: make what is appended durable
            // (briefly) so "latest" is not a stale high watermark.
            let end = p.log.end_offset();
            if end > hw {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
                p.wait_for_data(end - 1, deadline).await;
            }
            (errors::NONE, p.high_watermark() as i64, -1)
        }
        t if t >= 0 => match p.log.find_by_timestamp(t).await {
            Ok(Some((base, batch))) if base < hw => {
                let mut bytes = batch;
                match RecordBatchDecoder::decode(&mut bytes) {
                    Ok(set) => set
                        .records
                        .iter()
                        .find(|r| r.timestamp >= t && !r.control)
                        .map_or((errors::NONE, -1, -1), |r| {
                            (errors::NONE, r.offset, r.timestamp)
                        }),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot decode a stored batch");
                        (errors::CORRUPT_MESSAGE, -1, -1)
                    }
                }
            }
            Ok(_) => (errors::NONE, -1, -1),
            Err(e) => {
                tracing::error!(error = %e, "timestamp lookup failed");
                (errors::KAFKA_STORAGE_ERROR, -1, -1)
            }
        },
        _ => (errors::INVALID_REQUEST, -1, -1),
    }
}

pub async fn handle(shard: &Rc<Shard>, r: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let mut out = ListOffsetsResponse::default();
    for topic in r.topics {
        let name = topic.name.0.to_string();
        let mut t = ListOffsetsTopicResponse::default();
        t.name = topic.name.clone();
        for part in topic.partitions {
            let owner = shard.owner_of(&name, part.partition_index);
            let op = Op::ListOffset {
                topic: name.clone(),
                partition: part.partition_index,
                timestamp: part.timestamp,
            };
            let (code, offset, ts) = match shard.run_op(owner, op).await {
                Some(OpResult::Offset {
                    error_code,
                    offset,
                    timestamp,
                }) => (error_code, offset, timestamp),
                _ => (errors::UNKNOWN_SERVER_ERROR, -1, -1),
            };
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = part.partition_index;
            p.error_code = code;
            p.offset = offset;
            p.timestamp = ts;
            if version >= 4 {
                p.leader_epoch = 0;
            }
            t.partitions.push(p);
        }
        out.topics.push(t);
    }
    out
}
