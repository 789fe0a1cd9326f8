//! The node's Prometheus metrics (prometheus-client), served by `admin.rs` at
//! `/metrics`.
//!
//! One process-wide registry; shards update their own label sets (`shard="i"`), so
//! the counters they touch are theirs alone (no cache line shared between cores on
//! the hot path beyond the family's read lock). Values that are cheaper to read
//! than to maintain (leaders, under-replicated partitions, connections, disk space)
//! are set when scraped.

use std::rc::Rc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub shard: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub shard: u32,
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub shard: u32,
    pub api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub shard: u32,
    pub api: String,
    /// The Kafka error code's name (e.g. NOT_LEADER_OR_FOLLOWER) and number.
    pub code: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request latency: 100 µs to ~13 s.
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Disk operation latency: 10 µs to ~1.3 s.
fn disk_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00001, 2.0, 18))
}

/// Every metric of the node.
pub struct Metrics {
    registry: Registry,
    pub produce_bytes: Family<PartitionLabels, Counter>,
    pub produce_records: Family<PartitionLabels, Counter>,
    pub fetch_bytes: Family<PartitionLabels, Counter>,
    pub fetch_records: Family<PartitionLabels, Counter>,
    pub produce_latency: HistogramFamily<ShardLabels>,
    pub fetch_latency: HistogramFamily<ShardLabels>,
    pub requests: Family<ApiLabels, Counter>,
    pub request_errors: Family<ErrorLabels, Counter>,
    pub connections: Family<ShardLabels, Gauge>,
    pub partition_leaders: Family<ShardLabels, Gauge>,
    pub under_replicated: Family<ShardLabels, Gauge>,
    pub under_replicated_total: Gauge,
    pub disk_write_latency: HistogramFamily<ShardLabels>,
    pub disk_sync_latency: HistogramFamily<ShardLabels>,
    pub disk_write_bytes: Family<ShardLabels, Counter>,
    pub disk_total: Gauge,
    pub disk_free: Gauge,
    pub disk_used: Gauge,
    pub draining: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("strand");
        let m = Metrics {
            produce_bytes: Family::default(),
            produce_records: Family::default(),
            fetch_bytes: Family::default(),
            fetch_records: Family::default(),
            produce_latency: Family::new_with_constructor(request_histogram),
            fetch_latency: Family::new_with_constructor(request_histogram),
            requests: Family::default(),
            request_errors: Family::default(),
            connections: Family::default(),
            partition_leaders: Family::default(),
            under_replicated: Family::default(),
            under_replicated_total: Gauge::default(),
            disk_write_latency: Family::new_with_constructor(disk_histogram),
            disk_sync_latency: Family::new_with_constructor(disk_histogram),
            disk_write_bytes: Family::default(),
            disk_total: Gauge::default(),
            disk_free: Gauge::default(),
            disk_used: Gauge::default(),
            draining: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register_with_unit(
            "produce",
            "Record batch bytes appended by Produce, per partition",
            Unit::Bytes,
            m.produce_bytes.clone(),
        );
        r.register(
            "produce_records",
            "Records appended by Produce, per partition",
            m.produce_records.clone(),
        );
        r.register_with_unit(
            "fetch",
            "Record batch bytes returned by Fetch, per partition",
            Unit::Bytes,
            m.fetch_bytes.clone(),
        );
        r.register(
            "fetch_records",
            "Records returned by Fetch, per partition",
            m.fetch_records.clone(),
        );
        r.register_with_unit(
            "produce_latency",
            "Produce request handling time, from decoded request to response (acks=all includes replication and fdatasync)",
            Unit::Seconds,
            m.produce_latency.clone(),
        );
        r.register_with_unit(
            "fetch_latency",
            "Fetch request handling time, including the wait for data (fetch.max.wait.ms)",
            Unit::Seconds,
            m.fetch_latency.clone(),
        );
        r.register(
            "requests",
            "Kafka requests handled, by API",
            m.requests.clone(),
        );
        r.register(
            "request_errors",
            "Kafka error codes returned (per partition where the API answers per partition), by API and code",
            m.request_errors.clone(),
        );
        r.register(
            "connections",
            "Open Kafka client connections",
            m.connections.clone(),
        );
        r.register(
            "partition_leaders",
            "Partitions this node leads (every open partition on a single node)",
            m.partition_leaders.clone(),
        );
        r.register(
            "shard_under_replicated_partitions",
            "Partitions led here with a replica out of the in-sync set, per shard",
            m.under_replicated.clone(),
        );
        r.register(
            "under_replicated_partitions",
            "Partitions led by this node with a replica out of the in-sync set",
            m.under_replicated_total.clone(),
        );
        r.register_with_unit(
            "disk_write_latency",
            "io_uring O_DIRECT write latency (glommio DMA), per shard",
            Unit::Seconds,
            m.disk_write_latency.clone(),
        );
        r.register_with_unit(
            "disk_sync_latency",
            "fdatasync latency of segment files, per shard",
            Unit::Seconds,
            m.disk_sync_latency.clone(),
        );
        r.register_with_unit(
            "disk_write",
            "Bytes written to segment files, per shard",
            Unit::Bytes,
            m.disk_write_bytes.clone(),
        );
        r.register_with_unit(
            "disk_total",
            "Size of the data directory's file system",
            Unit::Bytes,
            m.disk_total.clone(),
        );
        r.register_with_unit(
            "disk_free",
            "Bytes available to the node on the data directory's file system",
            Unit::Bytes,
            m.disk_free.clone(),
        );
        r.register_with_unit(
            "disk_used",
            "Bytes used on the data directory's file system",
            Unit::Bytes,
            m.disk_used.clone(),
        );
        r.register(
            "draining",
            "1 while the node is drained for maintenance (leaderships moved away)",
            m.draining.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Count a partition's appended (produce) or returned (fetch) bytes and
    /// records, as measured by [`batch_counts`].
    pub fn count(
        &self,
        fetch: bool,
        shard: usize,
        topic: &str,
        partition: i32,
        (bytes, records): (u64, u64),
    ) {
        if bytes == 0 {
            return;
        }
        let labels = PartitionLabels {
            shard: shard as u32,
            topic: topic.to_string(),
            partition,
        };
        let (b, r) = if fetch {
            (&self.fetch_bytes, &self.fetch_records)
        } else {
            (&self.produce_bytes, &self.produce_records)
        };
        b.get_or_create(&labels).inc_by(bytes);
        r.get_or_create(&labels).inc_by(records);
    }
}

/// Bytes and records (from the batch headers) of record batch chunks; each chunk
/// holds whole batches back to back.
pub fn batch_counts(chunks: &[bytes::Bytes]) -> (u64, u64) {
    let (mut bytes, mut records) = (0u64, 0u64);
    for chunk in chunks {
        bytes += chunk.len() as u64;
        let mut at = 0;
        while at < chunk.len() {
            let Ok(h) = strand_engine::batch::parse_header(&chunk[at..]) else {
                break;
            };
            if h.size == 0 {
                break;
            }
            records += h.records_count.max(0) as u64;
            at += h.size;
        }
    }
    (bytes, records)
}

/// A shard's disk latency reporter for the engine's DMA files.
#[derive(Debug)]
pub struct DiskObserver {
    write_latency: Histogram,
    sync_latency: Histogram,
    write_bytes: Counter,
}

impl DiskObserver {
    pub fn new(metrics: &Metrics, shard: usize) -> Rc<Self> {
        let labels = ShardLabels {
            shard: shard as u32,
        };
        Rc::new(DiskObserver {
            write_latency: metrics.disk_write_latency.get_or_create_owned(&labels),
            sync_latency: metrics.disk_sync_latency.get_or_create_owned(&labels),
            write_bytes: metrics.disk_write_bytes.get_or_create_owned(&labels),
        })
    }
}

impl strand_engine::IoObserver for DiskObserver {
    fn write_done(&self, bytes: usize, elapsed: Duration) {
        self.write_latency.observe(elapsed.as_secs_f64());
        self.write_bytes.inc_by(bytes as u64);
    }

    fn sync_done(&self, elapsed: Duration) {
        self.sync_latency.observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_batches_and_encodes() {
        let m = Metrics::new();
        let b = bytes::Bytes::from(strand_engine::batch::build(1, 3, b"xyz"));
        m.count(false, 0, "t", 2, batch_counts(&[b.clone(), b.clone()]));
        let text = m.encode();
        assert!(
            text.contains(&format!(
                "strand_produce_bytes_total{{shard=\"0\",topic=\"t\",partition=\"2\"}} {}",
                2 * b.len()
            )),
            "{text}"
        );
        assert!(
            text.contains(
                "strand_produce_records_total{shard=\"0\",topic=\"t\",partition=\"2\"} 6"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
