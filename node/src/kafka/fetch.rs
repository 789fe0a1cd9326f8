//! Fetch: whole batches up to the high watermark, with `max_wait_ms` long polling
//! and `min_bytes`. No fetch sessions: session id 0 tells clients to send full
//! requests (KIP-227 allows it).

use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use super::{errors, topic_name};
use crate::partition::Fetched;
use crate::router::{Op, OpResult};
use crate::shard::Shard;

/// Longest a fetch may wait, whatever the client asks.
const FETCH_WAIT_MS_MAX: u64 = 30_000;

struct Wanted {
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
}

async fn round(shard: &Rc<Shard>, wanted: &[Wanted], response_max: usize) -> Vec<Fetched> {
    let tasks: Vec<_> = wanted
        .iter()
        .map(|w| {
            let shard = shard.clone();
            let op = Op::Fetch {
                topic: w.topic.clone(),
                partition: w.partition,
                offset: w.offset,
                max_bytes: w.max_bytes.min(response_max),
            };
            let owner = shard.owner_of(&w.topic, w.partition);
            glommio::spawn_local(async move { shard.run_op(owner, op).await })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    let mut total = 0usize;
    for task in tasks {
        let mut fetched = match task.await {
            Some(OpResult::Fetched(f)) => f,
            _ => Fetched {
                error_code: errors::UNKNOWN_SERVER_ERROR,
                high_watermark: -1,
                log_start_offset: -1,
                batches: Vec::new(),
            },
        };
        // The response limit: the first batch always goes, as Kafka does (KIP-74).
        let bytes: usize = fetched.batches.iter().map(Bytes::len).sum();
        if total > 0 && total + bytes > response_max {
            fetched.batches.clear();
        }
        total += fetched.batches.iter().map(Bytes::len).sum::<usize>();
        out.push(fetched);
    }
    out
}

/// Wait until any of the partitions gets data, or the deadline.
async fn wait_any(shard: &Rc<Shard>, wanted: &[Wanted], deadline: Instant) {
    let mut tasks: Vec<_> = wanted
        .iter()
        .filter(|w| w.offset >= 0)
        .map(|w| {
            let shard = shard.clone();
            let owner = shard.owner_of(&w.topic, w.partition);
            let op = Op::WaitForData {
                topic: w.topic.clone(),
                partition: w.partition,
                offset: w.offset as u64,
                deadline,
            };
            glommio::spawn_local(async move {
                shard.run_op(owner, op).await;
            })
        })
        .collect();
    if tasks.is_empty() {
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
        return;
    }
    poll_fn(|cx| {
        for t in tasks.iter_mut() {
            if std::pin::Pin::new(t).poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await;
}

fn concat(batches: Vec<Bytes>) -> Bytes {
    match batches.len() {
        0 => Bytes::new(),
        1 => batches.into_iter().next().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(batches.iter().map(Bytes::len).sum());
            for b in batches {
                all.extend_from_slice(&b);
            }
            all.freeze()
        }
    }
}

pub async fn handle(shard: &Rc<Shard>, r: FetchRequest, version: i16) -> FetchResponse {
    let wait = Duration::from_millis((r.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MS_MAX));
    let deadline = Instant::now() + wait;
    let response_max = if version >= 3 && r.max_bytes > 0 {
        r.max_bytes as usize
    } else {
        usize::MAX
    };
    let min_bytes = r.min_bytes.max(0) as usize;
    let wanted: Vec<Wanted> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| Wanted {
                topic: t.topic.0.to_string(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
            })
        })
        .collect();
    let fetched = loop {
        let fetched = round(shard, &wanted, response_max).await;
        let bytes: usize = fetched
            .iter()
            .map(|f| f.batches.iter().map(Bytes::len).sum::<usize>())
            .sum();
        let failed = fetched.iter().any(|f| f.error_code != errors::NONE);
        if bytes >= min_bytes || failed || Instant::now() >= deadline {
            break fetched;
        }
        if shard
            .shared
            .shutdown
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            break fetched;
        }
        // Wait for data past what this round already saw, or the round repeats
        // at once and spins until the deadline.
        let next: Vec<Wanted> = wanted
            .iter()
            .zip(&fetched)
            .map(|(w, f)| Wanted {
                topic: w.topic.clone(),
                partition: w.partition,
                offset: w.offset.max(f.high_watermark),
                max_bytes: w.max_bytes,
            })
            .collect();
        wait_any(shard, &next, deadline).await;
    };
    let mut out = FetchResponse::default();
    for (w, f) in wanted.into_iter().zip(fetched) {
        let mut p = PartitionData::default();
        p.partition_index = w.partition;
        p.error_code = f.error_code;
        p.high_watermark = f.high_watermark;
        p.last_stable_offset = f.high_watermark;
        if version >= 5 {
            p.log_start_offset = f.log_start_offset;
        }
        p.aborted_transactions = if r.isolation_level == 1 {
            Some(Vec::new())
        } else {
            None
        };
        p.records = Some(concat(f.batches));
        match out
            .responses
            .iter_mut()
            .find(|t| t.topic.0.as_str() == w.topic)
        {
            Some(t) => t.partitions.push(p),
            None => {
                let mut t = FetchableTopicResponse::default();
                t.topic = topic_name(&w.topic);
                t.partitions.push(p);
                out.responses.push(t);
            }
        }
    }
    out
}
