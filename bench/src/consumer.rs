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

use crate::cluster::{Layout, PartitionRef};
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

/// What one consumer reads: partitions and the offset to start each at.
#[derive(Debug, Clone)]
pub struct ConsumerPlan {
    pub id: u32,
    pub partitions: Vec<(PartitionRef, i64)>,
}

/// Shares the partitions out among `consumers` (round robin) and finds where each log
/// ends now, so that consumers read exactly what the run's producers write.
pub fn plans(layout: &Layout, consumers: u32) -> Result<Vec<ConsumerPlan>> {
    if consumers == 0 {
        return Ok(Vec::new());
    }
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut by_leader: BTreeMap<i32, BTreeMap<&str, Vec<i32>>> = BTreeMap::new();
    for p in &layout.partitions {
        by_leader
            .entry(p.leader)
            .or_default()
            .entry(&p.topic)
            .or_default()
            .push(p.partition);
    }
    for (leader, topics) in by_leader {
        let mut conn = Connection::open(layout.broker_addr(leader)?)?;
        let version = conn.version(ApiKey::ListOffsets, LIST_OFFSETS_VERSIONS)?;
        for (topic, ids) in topics {
            let response: ListOffsetsResponse = conn.call(
                ApiKey::ListOffsets,
                version,
                &list_offsets_request(topic, &ids, LATEST),
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
                    ends.insert((topic.to_owned(), p.partition_index), p.offset);
                }
            }
        }
    }
    let mut plans: Vec<ConsumerPlan> = (0..consumers)
        .map(|id| ConsumerPlan {
            id,
            partitions: Vec::new(),
        })
        .collect();
    for (i, p) in layout.partitions.iter().enumerate() {
        let end = ends
            .get(&(p.topic.clone(), p.partition))
            .copied()
            .with_context(|| format!("no end offset for {}-{}", p.topic, p.partition))?;
        plans[i % consumers as usize]
            .partitions
            .push((p.clone(), end));
    }
    plans.retain(|p| !p.partitions.is_empty());
    Ok(plans)
}

/// Runs one consumer (one thread per leader broker of its partitions) to the end of the run.
pub fn run(ctx: &Arc<RunContext>, plan: &ConsumerPlan) -> Result<()> {
    let mut by_leader: BTreeMap<i32, Vec<(PartitionRef, i64)>> = BTreeMap::new();
    for (p, from) in &plan.partitions {
        by_leader
            .entry(p.leader)
            .or_default()
            .push((p.clone(), *from));
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

fn fetch_loop(ctx: &RunContext, addr: &str, partitions: &[(PartitionRef, i64)]) -> Result<()> {
    let mut conn = Connection::open(addr)?;
    ctx.watch_socket(&conn);
    let fetch_version = conn.version(ApiKey::Fetch, FETCH_VERSIONS)?;
    // (topic, partition) → next offset to read.
    let mut next: BTreeMap<(String, i32), i64> = partitions
        .iter()
        .map(|(p, from)| ((p.topic.clone(), p.partition), *from))
        .collect();
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
                .error(&format!("fetch {}", error_name(response.error_code)), 1);
        }
        let mut received = 0u64;
        let mut caught_up = true;
        for t in &response.responses {
            let topic = t.topic.0.as_str();
            for p in &t.partitions {
                if p.error_code != 0 {
                    ctx.recorder
                        .error(&format!("fetch {}", error_name(p.error_code)), 1);
                    caught_up = false;
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
        if let Some(value_bytes) = read_plain_batch(&batch, from, intended)? {
            bytes += value_bytes;
            continue;
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

/// RecordBatch v2 header positions (from the start of the batch, baseOffset first).
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const RECORDS_COUNT_AT: usize = 57;
const RECORDS_AT: usize = 61;
const COMPRESSION_MASK: u8 = 0x07;

/// The fast path for an uncompressed batch: checks its CRC32C and walks its records
/// without decoding them into structs (the kafka-protocol decoder allocates per record,
/// which at a few hundred thousand messages a second took CPU from the node under test).
/// Returns `None` for a compressed batch, which the caller decodes in full.
fn read_plain_batch(batch: &[u8], from: i64, intended: &mut Vec<u64>) -> Result<Option<u64>> {
    if batch.len() < RECORDS_AT {
        bail!(
            "a record batch of {} bytes is shorter than its header",
            batch.len()
        );
    }
    if batch[MAGIC_AT] != 2 {
        bail!("record batch magic {} (only v2 is read)", batch[MAGIC_AT]);
    }
    if batch[ATTRIBUTES_AT + 1] & COMPRESSION_MASK != 0 {
        return Ok(None);
    }
    let stored = u32::from_be_bytes([
        batch[CRC_AT],
        batch[CRC_AT + 1],
        batch[CRC_AT + 2],
        batch[CRC_AT + 3],
    ]);
    let computed = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    if stored != computed {
        bail!("record batch CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}");
    }
    let base = i64::from_be_bytes(batch[0..8].try_into().unwrap_or([0; 8]));
    let count = i32::from_be_bytes(
        batch[RECORDS_COUNT_AT..RECORDS_AT]
            .try_into()
            .unwrap_or([0; 4]),
    );
    let mut at = RECORDS_AT;
    let mut bytes = 0u64;
    for _ in 0..count.max(0) {
        let length = varint(batch, &mut at)?;
        let end = usize::try_from(length)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|&e| e <= batch.len())
            .ok_or_else(|| anyhow!("a record of {length} bytes runs past its batch"))?;
        let mut field = at + 1; // attributes
        varint(batch, &mut field)?; // timestampDelta
        let offset_delta = varint(batch, &mut field)?;
        let key_len = varint(batch, &mut field)?;
        field += usize::try_from(key_len.max(0)).unwrap_or(0);
        let value_len = varint(batch, &mut field)?;
        if field > end {
            bail!("a record's fields run past its length");
        }
        if base + offset_delta >= from && value_len >= 0 {
            let value_len = value_len as usize;
            if field + value_len > end {
                bail!("a record's value runs past its length");
            }
            bytes += value_len as u64;
            if value_len >= 8 {
                let sent = &batch[field..field + 8];
                intended.push(u64::from_le_bytes(sent.try_into().unwrap_or([0; 8])));
            }
        }
        at = end;
    }
    Ok(Some(bytes))
}

/// A zigzag varint (Kafka's varint and varlong) at `*at`, moving `*at` past it.
fn varint(buf: &[u8], at: &mut usize) -> Result<i64> {
    let mut raw: u64 = 0;
    for shift in (0..70).step_by(7) {
        let Some(&byte) = buf.get(*at) else {
            bail!("a varint runs past the end of its batch");
        };
        *at += 1;
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    bail!("a varint longer than 10 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn batch(base: i64, sent: &[u64], keyed: bool, compression: Compression) -> Bytes {
        let records: Vec<Record> = sent
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut value = t.to_le_bytes().to_vec();
                value.extend_from_slice(&[7u8; 100]);
                Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: base + i as i64,
                    sequence: i as i32 - 1,
                    timestamp: 1_700_000_000_000 + i as i64,
                    key: keyed.then(|| Bytes::from(format!("key-{i}"))),
                    value: Some(Bytes::from(value)),
                    headers: IndexMap::new(),
                }
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode");
        buf.freeze()
    }

    #[test]
    fn plain_and_compressed_batches_give_the_same_send_times() {
        let sent = [10u64, 20, 30, 40];
        for keyed in [false, true] {
            for compression in [Compression::None, Compression::Lz4] {
                let mut two = BytesMut::new();
                two.extend_from_slice(&batch(100, &sent[..2], keyed, compression));
                two.extend_from_slice(&batch(102, &sent[2..], keyed, compression));
                let mut got = Vec::new();
                let (next, bytes) =
                    read_batches(two.clone().freeze(), 101, &mut got).expect("read");
                assert_eq!(next, 104);
                assert_eq!(
                    got,
                    vec![20, 30, 40],
                    "records before the fetch offset are skipped"
                );
                assert_eq!(bytes, 3 * 108);
                // A partial batch at the end is left for the next fetch.
                let cut = two.len() - 5;
                let mut got = Vec::new();
                let (next, _) =
                    read_batches(two.freeze().slice(..cut), 100, &mut got).expect("read");
                assert_eq!((next, got), (102, vec![10, 20]));
            }
        }
    }

    #[test]
    fn a_corrupt_batch_is_an_error_not_a_panic() {
        let good = batch(0, &[1, 2, 3], true, Compression::None);
        let mut flipped = good.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let err = read_batches(Bytes::from(flipped), 0, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("CRC32C"), "{err}");
        // Lies in the lengths, with a valid CRC: errors, never panics.
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let mut b = good.to_vec();
            let i = rng.usize(RECORDS_AT..b.len());
            b[i] = rng.u8(..);
            let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
            b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
            let _ = read_batches(Bytes::from(b), 0, &mut Vec::new());
        }
    }
}
