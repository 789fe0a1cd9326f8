//! A consumer: reads its partitions from where the log ended when the run started, and
//! records each message's end-to-end latency (its intended send time, carried in its
//! first 8 bytes, to the moment the fetch response arrived).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, Bytes};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ListOffsetsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use strand_tools::errors::error_name;
use strand_tools::topic::list_offsets_request;

use crate::cluster::PartitionRef;
use crate::connection::Connection;
use crate::run::RunContext;

/// Fetch v4 is the first with RecordBatch v2 and isolation levels; v13 names topics by
/// id, which this client does not track.
const FETCH_VERSIONS: (i16, i16) = (4, 12);
const LIST_OFFSETS_VERSIONS: (i16, i16) = (1, 7);
const LATEST: i64 = -1;

const MAX_WAIT_MS: i32 = 100;
const PARTITION_MAX_BYTES: i32 = 8 << 20;
const RESPONSE_MAX_BYTES: i32 = 64 << 20;

/// After the producers are done, consumers read until they are caught up, or this long.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What one consumer reads.
#[derive(Debug, Clone)]
pub struct ConsumerPlan {
    pub id: u32,
    pub partitions: Vec<PartitionRef>,
}

/// Runs one consumer (one thread per leader broker of its partitions) to the end of the run.
pub fn run(ctx: &Arc<RunContext>, plan: &ConsumerPlan) -> Result<()> {
    let mut by_leader: BTreeMap<i32, Vec<PartitionRef>> = BTreeMap::new();
    for p in &plan.partitions {
        by_leader.entry(p.leader).or_default().push(p.clone());
    }
    let mut threads = Vec::new();
    for (leader, partitions) in by_leader {
        let addr = ctx.layout.broker_addr(leader)?.to_owned();
        let ctx = ctx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("consumer-{}-{leader}", plan.id))
                .spawn(move || fetch_loop(&ctx, &addr, &partitions))
                .context("cannot start a consumer thread")?,
        );
    }
    let mut result = Ok(());
    for t in threads {
        let r = t
            .join()
            .map_err(|_| anyhow!("a consumer thread panicked"))?;
        if result.is_ok() {
            result = r;
        }
    }
    result
}

fn fetch_loop(ctx: &RunContext, addr: &str, partitions: &[PartitionRef]) -> Result<()> {
    let mut conn = Connection::open(addr)?;
    let fetch_version = conn.version(ApiKey::Fetch, FETCH_VERSIONS)?;
    let offsets_version = conn.version(ApiKey::ListOffsets, LIST_OFFSETS_VERSIONS)?;
    // (topic, partition) → next offset to read.
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for p in partitions {
        by_topic.entry(&p.topic).or_default().push(p.partition);
    }
    for (topic, ids) in &by_topic {
        let response: ListOffsetsResponse = conn.call(
            ApiKey::ListOffsets,
            offsets_version,
            &list_offsets_request(topic, ids, LATEST),
        )?;
        for t in &response.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    bail!(
                        "cannot find the end of {topic}-{}: {}",
                        p.partition_index,
                        error_name(p.error_code)
                    );
                }
                next.insert((topic.to_string(), p.partition_index), p.offset);
            }
        }
    }
    let mut drain_deadline: Option<Instant> = None;
    let mut intended = Vec::new();
    loop {
        if ctx.stopped() {
            return Ok(());
        }
        if ctx.workload.producers == 0 && Instant::now() >= ctx.end {
            return Ok(());
        }
        let producers_done = ctx.producers_done();
        if producers_done && drain_deadline.is_none() {
            drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
        }
        let request = fetch_request(&next, fetch_version);
        let response: FetchResponse = conn.call(ApiKey::Fetch, fetch_version, &request)?;
        let now_ns = ctx.recorder.clock.now_ns();
        if response.error_code != 0 {
            ctx.recorder
                .error(&error_name(response.error_code).to_string(), 1);
        }
        let mut received = 0u64;
        let mut caught_up = true;
        for t in &response.responses {
            let topic = t.topic.0.as_str();
            for p in &t.partitions {
                if p.error_code != 0 {
                    ctx.recorder.error(&error_name(p.error_code).to_string(), 1);
                    continue;
                }
                let key = (topic.to_owned(), p.partition_index);
                let Some(offset) = next.get_mut(&key) else {
                    continue;
                };
                intended.clear();
                let mut bytes = 0;
                if let Some(records) = &p.records {
                    let (new_offset, value_bytes) =
                        read_batches(records.clone(), *offset, &mut intended).with_context(
                            || format!("bad records from {addr} for {topic}-{}", p.partition_index),
                        )?;
                    *offset = new_offset;
                    bytes = value_bytes;
                }
                if !intended.is_empty() {
                    ctx.recorder.consumed(&intended, now_ns, bytes);
                    received += intended.len() as u64;
                }
                if *offset < p.high_watermark {
                    caught_up = false;
                }
            }
        }
        if let Some(deadline) = drain_deadline {
            if (received == 0 && caught_up) || Instant::now() >= deadline {
                return Ok(());
            }
        }
    }
}

fn fetch_request(next: &BTreeMap<(String, i32), i64>, version: i16) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for ((topic, partition), offset) in next {
        let part = FetchPartition::default()
            .with_partition(*partition)
            .with_fetch_offset(*offset)
            .with_partition_max_bytes(PARTITION_MAX_BYTES);
        match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
            Some(t) => t.partitions.push(part),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![part]),
            ),
        }
    }
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(RESPONSE_MAX_BYTES)
        .with_topics(topics);
    if version >= 7 {
        request.with_session_id(0).with_session_epoch(-1)
    } else {
        request
    }
}

/// Decodes the whole batches in `records` (a broker may cut the last one short), pushes
/// the send time of every record at or after `from`, and returns the next offset to
/// fetch and the value bytes read.
pub fn read_batches(mut records: Bytes, from: i64, intended: &mut Vec<u64>) -> Result<(i64, u64)> {
    const LOG_OVERHEAD: usize = 12; // baseOffset + batchLength
    let mut next = from;
    let mut bytes = 0u64;
    while records.len() >= LOG_OVERHEAD {
        let length = i32::from_be_bytes([records[8], records[9], records[10], records[11]]);
        let Ok(length) = usize::try_from(length) else {
            bail!("negative batch length {length}");
        };
        if records.len() < LOG_OVERHEAD + length {
            break; // A partial batch at the end: fetch it again from its start.
        }
        let mut batch = records.split_to(LOG_OVERHEAD + length);
        // The batch's own last offset, so that a batch whose records were compacted
        // away (or skipped below) still moves the reader on.
        if batch.len() >= 27 {
            let base = i64::from_be_bytes(batch[0..8].try_into().unwrap_or([0; 8]));
            let last_delta = i32::from_be_bytes(batch[23..27].try_into().unwrap_or([0; 4]));
            next = next.max(base + i64::from(last_delta) + 1);
        }
        let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| anyhow!("{e}"))?;
        for record in &set.records {
            if record.offset < from {
                continue;
            }
            next = next.max(record.offset + 1);
            if let Some(value) = &record.value {
                bytes += value.len() as u64;
                if value.len() >= 8 {
                    intended.push(value.clone().get_u64_le());
                }
            }
        }
    }
    Ok((next, bytes))
}
