//! A producer: one thread that makes messages on schedule, batches them per partition
//! and writes produce requests, and per broker one reader thread that takes the
//! responses in order and records the latencies.
//!
//! Open loop (`--rate`): message k of a producer is *meant* to be sent at
//! `start + k / rate`, whatever happens to earlier ones; its latency counts from that
//! intended time, so a stalled broker shows up as the latency every waiting message
//! really saw (no coordinated omission, as wrk2 and the OpenMessaging Benchmark do).
//! Closed loop (no rate): a message is made when there is room for it (at most
//! `--max-in-flight` requests outstanding); its latency counts from then.

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use strand_tools::errors::error_name;

use crate::cluster::PartitionRef;
use crate::connection::{Connection, Reader, Writer};
use crate::run::RunContext;
use crate::settings::Acks;

/// Produce versions this client speaks: v3 is the first with RecordBatch v2.
const PRODUCE_VERSIONS: (i16, i16) = (3, 9);

/// How long the broker may take to make a batch durable before it answers with an error.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

/// Messages a closed-loop producer makes between looks at the clock and the lingers.
const CLOSED_LOOP_MESSAGES_PER_CHECK: usize = 64;

/// Bytes a record adds to its key and value in a batch (length, attributes, deltas,
/// header count), and the batch header itself; used to keep batches under --batch-size.
const RECORD_OVERHEAD_BYTES: u64 = 16;
const BATCH_HEADER_BYTES: u64 = 61;

/// What one producer does.
#[derive(Debug, Clone)]
pub struct ProducerPlan {
    pub id: u32,
    /// The partitions it spreads its messages over.
    pub partitions: Vec<PartitionRef>,
    /// Messages per second (open loop), or `None` for as fast as acknowledged.
    pub rate: Option<f64>,
    /// Where its schedule starts after the run's start: producers are spread over one
    /// message interval of the total rate, so their messages do not come in bursts.
    pub phase: Duration,
}

/// A request that has been written and not yet answered.
#[derive(Debug)]
struct InFlight {
    correlation_id: i32,
    sent_ns: u64,
    batches: Vec<SentBatch>,
}

#[derive(Debug)]
struct SentBatch {
    topic: String,
    partition: i32,
    intended_ns: Vec<u64>,
    bytes: u64,
}

/// The batch being filled for one partition.
#[derive(Debug, Default)]
struct Pending {
    records: Vec<Record>,
    intended_ns: Vec<u64>,
    bytes: u64,
    value_bytes: u64,
    /// When its first message was meant to be sent; linger counts from then.
    first: Option<Instant>,
    /// Room for the values still to come.
    values: BytesMut,
}

/// One broker connection of a producer.
#[derive(Debug)]
struct Route {
    writer: Writer,
    version: i16,
    /// Requests written and not yet answered, for the reader (`None` with acks=0: no
    /// responses).
    in_flight: Option<Sender<InFlight>>,
    /// One token per request that may be outstanding (`--max-in-flight`); the reader
    /// hands a token back with each answer, and drops its end when it stops.
    slots: Option<Receiver<()>>,
    reader: Option<JoinHandle<()>>,
}

/// Runs one producer until the run ends; returns when its last response is in.
pub fn run(ctx: &Arc<RunContext>, plan: &ProducerPlan) -> Result<()> {
    let w = &ctx.workload;
    let mut routes: BTreeMap<i32, Route> = BTreeMap::new();
    for p in &plan.partitions {
        if routes.contains_key(&p.leader) {
            continue;
        }
        let addr = ctx.layout.broker_addr(p.leader)?;
        let conn = Connection::open(addr)?;
        let version = conn.version(ApiKey::Produce, PRODUCE_VERSIONS)?;
        let (writer, reader) = conn.split()?;
        let (in_flight, slots, reader) = if w.acks == Acks::None {
            (None, None, None)
        } else {
            let (queue_tx, queue_rx) = channel();
            let (slot_tx, slot_rx) = channel();
            for _ in 0..w.max_in_flight {
                let _ = slot_tx.send(());
            }
            let ctx = ctx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("producer-{}-read", plan.id))
                .spawn(move || read_responses(&ctx, reader, version, &queue_rx, &slot_tx))
                .context("cannot start a producer reader thread")?;
            (Some(queue_tx), Some(slot_rx), Some(handle))
        };
        ctx.watch_socket(&writer);
        routes.insert(
            p.leader,
            Route {
                writer,
                version,
                in_flight,
                slots,
                reader,
            },
        );
    }
    let mut producer = Producer::new(ctx, plan);
    let result = producer.produce(&mut routes);
    for route in routes.values_mut() {
        // Closing the queue tells the reader to finish the requests already sent.
        route.in_flight = None;
        if result.is_err() {
            route.writer.shutdown();
        }
    }
    for route in routes.values_mut() {
        if let Some(handle) = route.reader.take() {
            let _ = handle.join();
        }
    }
    result
}

struct Producer<'a> {
    ctx: &'a RunContext,
    plan: &'a ProducerPlan,
    pending: Vec<Pending>,
    /// The partition unkeyed messages go to until its batch is sent.
    sticky: usize,
    template: Vec<u8>,
    /// The smallest a record can add to a batch: a batch with less room is full.
    record_bytes_min: u64,
    made: u64,
    linger: Duration,
    options: RecordEncodeOptions,
}

impl<'a> Producer<'a> {
    fn new(ctx: &'a RunContext, plan: &'a ProducerPlan) -> Self {
        let w = &ctx.workload;
        // Incompressible content: what compression does to real data depends on it.
        let mut rng = fastrand::Rng::with_seed(u64::from(plan.id) + 1);
        let template: Vec<u8> = (0..w.message_size.0).map(|_| rng.u8(..)).collect();
        Self {
            ctx,
            plan,
            pending: plan.partitions.iter().map(|_| Pending::default()).collect(),
            sticky: plan.id as usize % plan.partitions.len().max(1),
            record_bytes_min: template.len() as u64 + RECORD_OVERHEAD_BYTES,
            template,
            made: 0,
            linger: w.linger.0,
            options: RecordEncodeOptions {
                version: 2,
                compression: w.compression.compression(),
            },
        }
    }

    fn produce(&mut self, routes: &mut BTreeMap<i32, Route>) -> Result<()> {
        let ctx = self.ctx;
        let start = ctx.start + self.plan.phase;
        let now = Instant::now();
        if start > now {
            std::thread::sleep(start - now);
        }
        // Open loop: every message of the schedule is made and sent, even the ones a
        // stall across the end of the run delays past it: each is charged the latency
        // it really saw.
        let scheduled = self.plan.rate.map(|rate| {
            let total = (ctx.end.saturating_duration_since(start).as_secs_f64() * rate).ceil();
            (rate, total as u64)
        });
        loop {
            if ctx.stopped() {
                return Ok(());
            }
            let now = Instant::now();
            match scheduled {
                Some((rate, total)) => {
                    if self.made >= total {
                        break;
                    }
                    let elapsed = now.saturating_duration_since(start).as_secs_f64();
                    let due = ((elapsed * rate) as u64 + 1).min(total);
                    while self.made < due && !ctx.stopped() {
                        let intended = start + Duration::from_secs_f64(self.made as f64 / rate);
                        self.add(routes, intended)?;
                    }
                    self.send(routes, None, Instant::now())?;
                    let next_message = start + Duration::from_secs_f64(self.made as f64 / rate);
                    let wake = self
                        .next_linger_deadline()
                        .map_or(next_message, |l| l.min(next_message));
                    let now = Instant::now();
                    if wake > now {
                        std::thread::sleep(wake - now);
                    }
                }
                None => {
                    if now >= ctx.end {
                        break;
                    }
                    // As fast as the broker takes them: `add` sends a batch when the
                    // next message would not fit, and that blocks while max_in_flight
                    // requests are outstanding.
                    for _ in 0..CLOSED_LOOP_MESSAGES_PER_CHECK {
                        self.add(routes, Instant::now())?;
                    }
                    self.send(routes, None, Instant::now())?;
                }
            }
        }
        // The end: send what is still waiting for its linger.
        let everything: Vec<usize> = (0..self.pending.len())
            .filter(|&i| !self.pending[i].records.is_empty())
            .collect();
        for slot in everything {
            self.send(routes, Some(slot), Instant::now())?;
        }
        Ok(())
    }

    /// Makes the next message, meant to be sent at `intended`, and puts it in its
    /// partition's batch; first sends that batch if the message would not fit, so no
    /// batch is larger than --batch-size (unless one message is).
    fn add(&mut self, routes: &mut BTreeMap<i32, Route>, intended: Instant) -> Result<()> {
        let w = &self.ctx.workload;
        let n = self.made;
        let key = w
            .keyed
            .then(|| Bytes::from(format!("key-{}", n % w.key_count)));
        let slot = match &key {
            Some(k) => (murmur2(k) & 0x7fff_ffff) as usize % self.pending.len(),
            None => self.sticky,
        };
        let record_bytes = self.template.len() as u64
            + key.as_ref().map_or(0, |k| k.len() as u64)
            + RECORD_OVERHEAD_BYTES;
        let p = &self.pending[slot];
        if !p.records.is_empty() && p.bytes + record_bytes > w.batch_size.0 {
            self.send(routes, Some(slot), Instant::now())?;
        }
        // Sending moves the sticky partition on: an unkeyed message follows it.
        let slot = if key.is_some() { slot } else { self.sticky };
        self.made += 1;
        let w = &self.ctx.workload;
        let intended_ns = self.ctx.recorder.clock.at(intended);
        let batch_bytes = w.batch_size.0 as usize;
        let p = &mut self.pending[slot];
        // Values are cut from one buffer per batch: one allocation, not one per message.
        if p.values.capacity() - p.values.len() < self.template.len() {
            p.values = BytesMut::with_capacity(batch_bytes.max(self.template.len()));
        }
        p.values.put_u64_le(intended_ns);
        p.values.put_slice(&self.template[8..]);
        let value = p.values.split();
        let index = p.records.len() as i64;
        let key_bytes = key.as_ref().map_or(0, |k| k.len() as u64);
        p.bytes += value.len() as u64 + key_bytes + RECORD_OVERHEAD_BYTES;
        if p.records.is_empty() {
            p.bytes += BATCH_HEADER_BYTES;
            p.first = Some(intended);
        }
        p.value_bytes += value.len() as u64;
        p.intended_ns.push(intended_ns);
        p.records.push(Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: index,
            // kafka-protocol starts a new batch wherever offset - sequence changes;
            // this keeps it constant and the batch's base sequence at -1 (no idempotence).
            sequence: index as i32 - 1,
            timestamp: (intended_ns / 1_000_000) as i64,
            key,
            value: Some(value.freeze()),
            headers: IndexMap::new(),
        });
        Ok(())
    }

    fn next_linger_deadline(&self) -> Option<Instant> {
        self.pending
            .iter()
            .filter_map(|p| p.first)
            .min()
            .map(|first| first + self.linger)
    }

    /// Sends, per broker, one request with every batch that is full or has lingered long
    /// enough, plus `force` whatever its state.
    fn send(
        &mut self,
        routes: &mut BTreeMap<i32, Route>,
        force: Option<usize>,
        now: Instant,
    ) -> Result<()> {
        let batch_bytes = self.ctx.workload.batch_size.0;
        let ready: Vec<usize> = (0..self.pending.len())
            .filter(|&i| {
                let p = &self.pending[i];
                !p.records.is_empty()
                    && (Some(i) == force
                        || p.bytes + self.record_bytes_min > batch_bytes
                        || p.first.is_some_and(|f| f + self.linger <= now))
            })
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for i in ready {
            by_leader
                .entry(self.plan.partitions[i].leader)
                .or_default()
                .push(i);
        }
        for (leader, slots) in by_leader {
            self.send_to(routes, leader, &slots)?;
        }
        Ok(())
    }

    fn send_to(
        &mut self,
        routes: &mut BTreeMap<i32, Route>,
        leader: i32,
        slots: &[usize],
    ) -> Result<()> {
        let ctx = self.ctx;
        let route = routes
            .get_mut(&leader)
            .ok_or_else(|| anyhow!("no connection to broker {leader}"))?;
        let mut topics: Vec<TopicProduceData> = Vec::new();
        let mut sent = Vec::with_capacity(slots.len());
        for &i in slots {
            let values = std::mem::take(&mut self.pending[i].values);
            let p = std::mem::replace(
                &mut self.pending[i],
                Pending {
                    values,
                    ..Pending::default()
                },
            );
            let target = &self.plan.partitions[i];
            let mut records = BytesMut::with_capacity(p.bytes as usize);
            RecordBatchEncoder::encode(&mut records, p.records.iter(), &self.options)
                .map_err(|e| anyhow!("cannot encode a record batch: {e}"))?;
            let data = PartitionProduceData::default()
                .with_index(target.partition)
                .with_records(Some(records.freeze()));
            match topics
                .iter_mut()
                .find(|t| t.name.0.as_str() == target.topic)
            {
                Some(t) => t.partition_data.push(data),
                None => topics.push(
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(target.topic.clone())))
                        .with_partition_data(vec![data]),
                ),
            }
            sent.push(SentBatch {
                topic: target.topic.clone(),
                partition: target.partition,
                intended_ns: p.intended_ns,
                bytes: p.value_bytes,
            });
            if i == self.sticky {
                self.sticky = (self.sticky + 1) % self.pending.len();
            }
        }
        let request = ProduceRequest::default()
            .with_acks(ctx.workload.acks.wire())
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(topics);
        let messages: u64 = sent.iter().map(|b| b.intended_ns.len() as u64).sum();
        let bytes: u64 = sent.iter().map(|b| b.bytes).sum();
        match (&route.in_flight, &route.slots) {
            (Some(queue), Some(slots)) => {
                // Wait for a free slot first (this is where max_in_flight blocks), then
                // note the time and hand the request to the reader before writing it:
                // the reader must know a request before its answer can arrive.
                slots
                    .recv()
                    .map_err(|_| anyhow!("the response reader for broker {leader} stopped"))?;
                let correlation_id = route.writer.next_correlation_id();
                let sent_ns = ctx.recorder.clock.now_ns();
                queue
                    .send(InFlight {
                        correlation_id,
                        sent_ns,
                        batches: sent,
                    })
                    .map_err(|_| anyhow!("the response reader for broker {leader} stopped"))?;
                route
                    .writer
                    .send_as(ApiKey::Produce, route.version, correlation_id, &request)?;
            }
            _ => {
                route
                    .writer
                    .send(ApiKey::Produce, route.version, &request)?;
            }
        }
        ctx.recorder.sent(messages, bytes);
        Ok(())
    }
}

/// Takes the answers of one connection in order and records them, handing a slot
/// back for each. On a broken connection, every request still queued is counted as
/// failed, and dropping `slots` stops the producer.
fn read_responses(
    ctx: &RunContext,
    mut reader: Reader,
    version: i16,
    queue: &Receiver<InFlight>,
    slots: &Sender<()>,
) {
    let messages = |r: &InFlight| {
        r.batches
            .iter()
            .map(|b| b.intended_ns.len() as u64)
            .sum::<u64>()
    };
    while let Ok(request) = queue.recv() {
        let response: ProduceResponse =
            match reader.recv(ApiKey::Produce, version, request.correlation_id) {
                Ok(r) => r,
                Err(e) => {
                    let lost =
                        messages(&request) + queue.try_iter().map(|r| messages(&r)).sum::<u64>();
                    ctx.recorder.error("connection", lost);
                    if !ctx.stopped() {
                        ctx.fail(&e);
                    }
                    return;
                }
            };
        let now_ns = ctx.recorder.clock.now_ns();
        for batch in &request.batches {
            let code = response
                .responses
                .iter()
                .filter(|t| t.name.0.as_str() == batch.topic)
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == batch.partition)
                .map(|p| p.error_code);
            match code {
                Some(0) => {
                    ctx.recorder
                        .acked(&batch.intended_ns, request.sent_ns, now_ns, batch.bytes)
                }
                Some(code) => ctx.recorder.error(
                    &error_name(code).to_string(),
                    batch.intended_ns.len() as u64,
                ),
                None => ctx.recorder.error(
                    "missing partition in response",
                    batch.intended_ns.len() as u64,
                ),
            }
        }
        let _ = slots.send(());
    }
}

/// Kafka's default partitioner hash (murmur2 with Kafka's seed), so keyed messages land
/// where a Java or librdkafka (`murmur2_random`) producer would put them.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h = SEED ^ len as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 4] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input) as i32,
                expected,
                "{:?}",
                std::str::from_utf8(input)
            );
        }
    }
}
