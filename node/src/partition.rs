//! One partition on its owning shard: the log plus the idempotent-producer state.
//!
//! Lives on exactly one shard (the owner, see `shard::owner_of`); `!Send`.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use glommio::sync::Semaphore;
use strand_engine::batch::{self, BatchHeader};
use strand_engine::{DmaStorage, Error as EngineError, Log};

use crate::kafka::errors;

/// Batches remembered per producer for duplicate detection (Kafka keeps 5, matching
/// `max.in.flight.requests.per.connection` with idempotence).
const PRODUCER_BATCHES_MAX: usize = 5;
/// Bytes of the log tail read at open to rebuild producer state.
const PRODUCER_REBUILD_BYTES_MAX: u64 = 64 << 20;

#[derive(Debug, Clone, Copy)]
struct SeenBatch {
    first_seq: i32,
    last_seq: i32,
    base_offset: u64,
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<SeenBatch>,
}

/// What the idempotence check says about a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Append,
    Duplicate { base_offset: u64 },
    Reject(i16),
}

fn last_seq(h: &BatchHeader) -> i32 {
    h.base_sequence.wrapping_add(h.last_offset_delta) & i32::MAX
}

#[derive(Debug, Default)]
struct Producers {
    by_id: HashMap<i64, ProducerEntry>,
}

impl Producers {
    fn check(&self, h: &BatchHeader) -> Verdict {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return Verdict::Append;
        }
        let Some(entry) = self.by_id.get(&h.producer_id) else {
            return Verdict::Append;
        };
        if h.producer_epoch < entry.epoch {
            return Verdict::Reject(errors::INVALID_PRODUCER_EPOCH);
        }
        if h.producer_epoch > entry.epoch {
            return Verdict::Append;
        }
        if let Some(seen) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq(h))
        {
            return Verdict::Duplicate {
                base_offset: seen.base_offset,
            };
        }
        match entry.batches.back() {
            Some(last) if h.base_sequence != last.last_seq.wrapping_add(1) & i32::MAX => {
                Verdict::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER)
            }
            _ => Verdict::Append,
        }
    }

    fn record(&mut self, h: &BatchHeader, base_offset: u64) {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        let entry = self.by_id.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == PRODUCER_BATCHES_MAX {
            entry.batches.pop_front();
        }
        entry.batches.push_back(SeenBatch {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            base_offset,
        });
    }
}

/// The checks every produced blob passes before anything else: headers parse, no
/// batch over `max_message_bytes`, exactly one batch (Produce v3+ carries one batch
/// per partition, as Kafka enforces; the idempotence check relies on it). Headers
/// only: the CRC is checked once, by the append. `Err` is the Kafka error code.
pub fn check_produced(records: &[u8], max_message_bytes: u32) -> Result<Vec<BatchHeader>, i16> {
    let headers = batch::parse_all(records).map_err(|_| errors::CORRUPT_MESSAGE)?;
    if headers.iter().any(|h| h.size > max_message_bytes as usize) {
        return Err(errors::MESSAGE_TOO_LARGE);
    }
    if headers.len() != 1 {
        return Err(errors::INVALID_RECORD);
    }
    Ok(headers)
}

/// The answer to a produce for one partition.
#[derive(Debug, Clone, Copy)]
pub struct Produced {
    pub error_code: i16,
    pub base_offset: i64,
    pub log_start_offset: i64,
}

/// The answer to a fetch for one partition.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub batches: Vec<Bytes>,
}

/// A partition log and its producer state, on its owning shard.
#[derive(Debug)]
pub struct Partition {
    pub log: Log<DmaStorage>,
    producers: RefCell<Producers>,
    /// Serializes the idempotence check with the append it guards.
    produce_lock: Semaphore,
    /// Set when the partition is a replica of a replication group: its high
    /// watermark is then the group's published commit, not the local durable offset.
    replicated: Cell<bool>,
    replicated_hw: Cell<u64>,
    hw_waiters: strand_engine::signal::WakerSet,
}

fn storage_error(e: &EngineError) -> i16 {
    match e {
        EngineError::InvalidBatch { .. } => errors::CORRUPT_MESSAGE,
        EngineError::OffsetOutOfRange { .. } => errors::OFFSET_OUT_OF_RANGE,
        _ => errors::KAFKA_STORAGE_ERROR,
    }
}

impl Partition {
    pub async fn open(log: Log<DmaStorage>) -> Rc<Self> {
        let partition = Rc::new(Self {
            log,
            producers: RefCell::new(Producers::default()),
            produce_lock: Semaphore::new(1),
            replicated: Cell::new(false),
            replicated_hw: Cell::new(0),
            hw_waiters: Default::default(),
        });
        partition.rebuild_producers().await;
        partition
    }

    /// Forget the idempotence state and rebuild it from the log: after a
    /// replication group truncated a divergent tail, batches that are gone must
    /// not be answered as duplicates.
    pub async fn reset_producers(&self) {
        *self.producers.borrow_mut() = Producers::default();
        self.rebuild_producers().await;
    }

    /// Rebuild idempotence state from the tail of the log, so a producer retrying
    /// across a restart is still deduplicated.
    async fn rebuild_producers(&self) {
        let end = self.log.end_offset();
        // Read forward from the newest segments that hold the last
        // PRODUCER_REBUILD_BYTES_MAX bytes, so the latest batch of every recent
        // producer is seen.
        let mut offset = self.log.recent_start(PRODUCER_REBUILD_BYTES_MAX);
        while offset < end {
            let Ok(batches) = self.log.read(offset, 1 << 20).await else {
                return;
            };
            if batches.is_empty() {
                return;
            }
            let mut producers = self.producers.borrow_mut();
            for b in batches {
                let Ok(h) = batch::parse_header(&b) else {
                    return;
                };
                producers.record(&h, h.base_offset as u64);
                offset = h.last_offset() as u64 + 1;
            }
        }
    }

    /// The high watermark: offsets below it are durable (on a quorum, when
    /// replicated) and visible to consumers.
    pub fn high_watermark(&self) -> u64 {
        if self.replicated.get() {
            self.replicated_hw.get()
        } else {
            self.log.durable_offset()
        }
    }

    /// Make this partition a replica: its high watermark comes from
    /// [`Partition::publish_high_watermark`] from now on.
    pub fn set_replicated(&self) {
        self.replicated.set(true);
    }

    /// The replication group's commit moved the high watermark to `hw`.
    pub fn publish_high_watermark(&self, hw: u64) {
        debug_assert!(self.replicated.get());
        if hw > self.replicated_hw.get() {
            self.replicated_hw.set(hw);
        }
        self.hw_waiters.wake_all();
    }

    /// Wake the tasks waiting on the high watermark so they re-check (for example
    /// after a leadership change).
    pub fn wake_hw_waiters(&self) {
        self.hw_waiters.wake_all();
    }

    /// Wait until `done()` holds, re-checked whenever the high watermark is
    /// published or the waiters are woken, or until `deadline`. Returns `done()`.
    pub async fn wait_hw(&self, deadline: Instant, done: impl Fn() -> bool) -> bool {
        let wait = std::future::poll_fn(|cx| {
            if done() {
                return std::task::Poll::Ready(());
            }
            self.hw_waiters.register(cx.waker());
            std::task::Poll::Pending
        });
        let timeout = deadline.saturating_duration_since(Instant::now());
        let _ = glommio::timer::timeout(timeout, async {
            wait.await;
            Ok(())
        })
        .await;
        done()
    }

    /// The idempotence verdict on a batch about to be appended.
    pub fn check_producer(&self, h: &BatchHeader) -> Verdict {
        self.producers.borrow().check(h)
    }

    /// Remember an appended batch for duplicate detection.
    pub fn record_producer(&self, h: &BatchHeader, base_offset: u64) {
        self.producers.borrow_mut().record(h, base_offset);
    }

    pub async fn produce(&self, records: Bytes, acks: i16, max_message_bytes: u32) -> Produced {
        let log_start = self.log.start_offset() as i64;
        let reply = |error_code, base_offset| Produced {
            error_code,
            base_offset,
            log_start_offset: log_start,
        };
        let headers = match check_produced(&records, max_message_bytes) {
            Ok(h) => h,
            Err(code) => return reply(code, -1),
        };
        let Ok(_permit) = self.produce_lock.acquire_permit(1).await else {
            return reply(errors::KAFKA_STORAGE_ERROR, -1);
        };
        let first = headers[0];
        let verdict = self.producers.borrow().check(&first);
        let (base_offset, last_offset) = match verdict {
            Verdict::Reject(code) => return reply(code, -1),
            // A retry is acknowledged only if its bytes are sound (nothing is written,
            // so the append's CRC check does not run).
            Verdict::Duplicate { .. } if batch::validate(&records).is_err() => {
                return reply(errors::CORRUPT_MESSAGE, -1)
            }
            Verdict::Duplicate { base_offset } => (base_offset, None),
            Verdict::Append => match self.log.append(BytesMut::from(&records[..])).await {
                Ok(out) => {
                    let mut producers = self.producers.borrow_mut();
                    let mut next = out.base_offset;
                    for h in &headers {
                        producers.record(h, next);
                        next += h.offset_count();
                    }
                    (out.base_offset, Some(out.last_offset))
                }
                Err(e) => return reply(storage_error(&e), -1),
            },
        };
        drop(_permit);
        if acks == -1 {
            // A duplicate is acknowledged once the original is durable.
            let wait_for = last_offset.unwrap_or(base_offset);
            if let Err(e) = self.log.wait_durable(wait_for).await {
                return reply(storage_error(&e), -1);
            }
        }
        reply(errors::NONE, base_offset as i64)
    }

    /// Whole batches from `offset` up to the high watermark. A fetch inside a batch
    /// returns that whole batch (the client skips the earlier records).
    pub async fn fetch(&self, offset: i64, max_bytes: usize) -> Fetched {
        let hw = self.high_watermark();
        let start = self.log.start_offset();
        let end = self.log.end_offset();
        let mut out = Fetched {
            error_code: errors::NONE,
            high_watermark: hw as i64,
            log_start_offset: start as i64,
            batches: Vec::new(),
        };
        if offset < start as i64 || offset > end as i64 {
            out.error_code = errors::OFFSET_OUT_OF_RANGE;
            return out;
        }
        let offset = offset as u64;
        if offset >= hw {
            if end > hw && !self.replicated.get() {
                // Data is there but not yet durable: make it so (acks=0/1 producers
                // never ask) so consumers are not left waiting.
                self.log.request_durable();
            }
            return out;
        }
        match self.log.read_until(offset, max_bytes, hw).await {
            Ok(batches) => out.batches = batches,
            Err(e) => {
                tracing::error!(error = %e, "fetch failed");
                out.error_code = storage_error(&e);
            }
        }
        out
    }

    /// Wait until the high watermark passes `offset` or `deadline` passes.
    pub async fn wait_for_data(&self, offset: u64, deadline: Instant) {
        if self.replicated.get() {
            self.wait_hw(deadline, || self.high_watermark() > offset)
                .await;
            return;
        }
        if self.log.end_offset() > self.high_watermark() {
            self.log.request_durable();
        }
        self.log.wait_durable_past(offset, deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, records: i32) -> BatchHeader {
        let b = batch::build(0, records as usize, b"x");
        let mut h = batch::parse_header(&b).expect("header");
        h.producer_id = pid;
        h.producer_epoch = epoch;
        h.base_sequence = seq;
        h
    }

    #[test]
    fn idempotence_dedups_retries_and_rejects_gaps_and_fenced_epochs() {
        let mut p = Producers::default();
        let a = header(7, 0, 0, 3);
        assert_eq!(p.check(&a), Verdict::Append);
        p.record(&a, 100);
        assert_eq!(p.check(&a), Verdict::Duplicate { base_offset: 100 });
        let gap = header(7, 0, 5, 1);
        assert_eq!(
            p.check(&gap),
            Verdict::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        let next = header(7, 0, 3, 2);
        assert_eq!(p.check(&next), Verdict::Append);
        p.record(&next, 103);
        assert_eq!(
            p.check(&header(7, 0, 5, 1)),
            Verdict::Append,
            "same epoch, next seq"
        );
        let bumped = header(7, 1, 0, 1);
        assert_eq!(p.check(&bumped), Verdict::Append);
        p.record(&bumped, 105);
        assert_eq!(
            p.check(&header(7, 0, 5, 1)),
            Verdict::Reject(errors::INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(
            p.check(&header(-1, 0, 0, 1)),
            Verdict::Append,
            "no idempotence"
        );
    }
}
