//! The configuration of the `strand-node` binary.
//!
//! Every setting has a built-in default, so the node runs with no arguments at all.
//! The layers, strongest first: command-line flags, `STRAND_*` environment variables,
//! the TOML file named by `--config` / `STRAND_CONFIG`, the defaults. clap resolves
//! flags over environment variables (every flag carries `env = ...`); [`NodeConfig`]
//! then lays the result over the file and the defaults and validates everything once.
//!
//! An example file (every key is optional; unknown keys are errors):
//!
//! ```toml
//! node_id = 0
//! cluster_id = "strand-dev"
//! data_dir = "./strand-data"
//! kafka_addr = "0.0.0.0:9092"
//! advertised_kafka_addr = "strand-0.strand:9092"
//! admin_addr = "0.0.0.0:9644"   # /metrics, /healthz, /readyz, /drain; "none": no admin server
//! cores = "0-3"            # or a shard count: cores = 4; or cores = "affinity": one
//!                          # pinned shard per CPU of this process's affinity mask
//!                          # (a Kubernetes pod's exclusive CPUs under the static CPU manager)
//! auto_create_topics = true
//! default_partitions = 1
//! max_message_bytes = 1048588
//! request_bytes_max = 104857600
//! connections_max = 10000
//! io_memory_bytes = 16777216
//! allow_tmpfs = false
//! disk_profile = "/etc/strand/disk.json"   # from `strand disk probe --out FILE`
//! # A cluster: every member's id and replication (QUIC/UDP) address, this node's
//! # included. Shard s of a node listens on the address's port + s.
//! replication_addr = "0.0.0.0:9093"
//! peers = "0@strand-0.strand:9093,1@strand-1.strand:9093,2@strand-2.strand:9093"
//! tls_dir = "/etc/strand/tls"   # ca.pem, node.pem, node.key from `strand cert`
//! default_replication_factor = 3
//! election_timeout_ms = 500
//! # Consumer groups (Kafka's offsets.topic.num.partitions and group.* settings).
//! offsets_topic_partitions = 16
//! group_initial_rebalance_delay_ms = 3000
//! group_min_session_timeout_ms = 6000
//! group_max_session_timeout_ms = 1800000
//!
//! [log]
//! segment_bytes_max = 134217728
//! retention_ms = 604800000   # -1: no time limit
//! retention_bytes = -1       # -1: no size limit
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;
use strand_engine::constants::{BATCH_BYTES_MAX, PAGE_BYTES};
use strand_engine::LogConfig;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const GIB: usize = 1024 * 1024 * 1024;

const NODE_ID_DEFAULT: u32 = 0;
const CLUSTER_ID_DEFAULT: &str = "strand-dev";
const DATA_DIR_DEFAULT: &str = "./strand-data";
const KAFKA_ADDR_DEFAULT: &str = "127.0.0.1:9092";
/// The admin HTTP server (Prometheus /metrics, /healthz, /readyz, /drain): Redpanda's
/// admin port, on every interface so that Prometheus and the kubelet reach it.
const ADMIN_ADDR_DEFAULT: &str = "0.0.0.0:9644";
/// The `admin_addr` value that turns the admin server off.
const ADMIN_ADDR_NONE: &str = "none";
/// The `cores` value that pins one shard to each CPU of the process's affinity mask.
const CORES_AFFINITY: &str = "affinity";
const AUTO_CREATE_TOPICS_DEFAULT: bool = true;
const DEFAULT_PARTITIONS_DEFAULT: u32 = 1;
/// Kafka's `message.max.bytes` default.
const MAX_MESSAGE_BYTES_DEFAULT: usize = 1_048_588;
/// Kafka's `socket.request.max.bytes` default.
const REQUEST_BYTES_MAX_DEFAULT: usize = 100 * MIB;
const CONNECTIONS_MAX_DEFAULT: usize = 10_000;
/// glommio I/O memory (registered DMA buffers) of one shard.
const IO_MEMORY_BYTES_DEFAULT: usize = 16 * MIB;
const ALLOW_TMPFS_DEFAULT: bool = false;
const REPLICATION_ADDR_DEFAULT: &str = "127.0.0.1:9093";
const ELECTION_TIMEOUT_MS_DEFAULT: u64 = 500;
const ELECTION_TIMEOUT_MS_MIN: u64 = 50;
const ELECTION_TIMEOUT_MS_MAX: u64 = 60_000;
/// Partitions of `__consumer_offsets` (Kafka's offsets.topic.num.partitions).
const OFFSETS_TOPIC_PARTITIONS_DEFAULT: u32 = 16;
const OFFSETS_TOPIC_PARTITIONS_MAX: u32 = 1_000;
/// Kafka's `group.initial.rebalance.delay.ms` default.
const GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT: u64 = 3_000;
const GROUP_INITIAL_REBALANCE_DELAY_MS_MAX: u64 = 300_000;
/// Kafka's `group.min.session.timeout.ms` default.
const GROUP_MIN_SESSION_TIMEOUT_MS_DEFAULT: u64 = 6_000;
/// Kafka's `group.max.session.timeout.ms` default.
const GROUP_MAX_SESSION_TIMEOUT_MS_DEFAULT: u64 = 1_800_000;
/// Upper bound of both session timeout settings: an hour.
const GROUP_SESSION_TIMEOUT_MS_MAX: u64 = 3_600_000;
const PEERS_FIX: &str = "expected a comma-separated list ID@HOST:PORT of every member's \
    replication address, this node included, e.g. 1@10.0.0.1:9093,2@10.0.0.2:9093,3@10.0.0.3:9093";

/// The `schema_version` of the disk profiles this node reads; `strand_tools::probe`
/// writes them (`SCHEMA_VERSION` there).
const DISK_PROFILE_SCHEMA_VERSION: u32 = 1;
/// Bounds on the write sizing taken from a disk profile. Below 64 KiB a busy log spends
/// more CPU on submitting writes than the disk gains; above 8 MiB a buffer waits long to
/// fill and costs memory in every log.
const PROFILE_WRITE_BUFFER_BYTES_MIN: usize = 64 * KIB;
const PROFILE_WRITE_BUFFER_BYTES_MAX: usize = 8 * MIB;
const PROFILE_WRITES_IN_FLIGHT_MAX: usize = 32;
const DISK_PROFILE_FIX: &str = "run `strand disk probe --dir DATA_DIR --out FILE` on this \
     machine and point disk_profile at FILE, or unset disk_profile to use the defaults";

/// One shard per core; beyond this a node is misconfigured rather than big.
pub const SHARDS_MAX: usize = 256;
/// Kafka broker ids are non-negative int32s.
const NODE_ID_MAX: u32 = i32::MAX as u32;
const CLUSTER_ID_BYTES_MAX: usize = 255;
const DEFAULT_PARTITIONS_MAX: u32 = 10_000;
const MAX_MESSAGE_BYTES_MIN: usize = KIB;
const REQUEST_BYTES_MAX_MAX: usize = GIB;
const CONNECTIONS_MAX_MAX: usize = 1_000_000;
const IO_MEMORY_BYTES_MIN: usize = MIB;
const IO_MEMORY_BYTES_MAX: usize = GIB;

const _: () = assert!(MAX_MESSAGE_BYTES_DEFAULT <= BATCH_BYTES_MAX);
const _: () = assert!(MAX_MESSAGE_BYTES_DEFAULT <= REQUEST_BYTES_MAX_DEFAULT);
const _: () = assert!(BATCH_BYTES_MAX <= REQUEST_BYTES_MAX_MAX);
const _: () = assert!(OFFSETS_TOPIC_PARTITIONS_DEFAULT <= OFFSETS_TOPIC_PARTITIONS_MAX);
const _: () =
    assert!(GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT <= GROUP_INITIAL_REBALANCE_DELAY_MS_MAX);
const _: () = assert!(GROUP_MIN_SESSION_TIMEOUT_MS_DEFAULT <= GROUP_MAX_SESSION_TIMEOUT_MS_DEFAULT);
const _: () = assert!(GROUP_MAX_SESSION_TIMEOUT_MS_DEFAULT <= GROUP_SESSION_TIMEOUT_MS_MAX);
// The smallest profile sizing (one buffer in flight, one queued, one filling) always
// fits the smallest io_memory_bytes, so fitting a profile into it always succeeds.
const _: () = assert!(3 * PROFILE_WRITE_BUFFER_BYTES_MIN <= IO_MEMORY_BYTES_MIN);

const ADDR_FIX: &str = "expected HOST:PORT with a port 1-65535, e.g. 127.0.0.1:9092";
const ADMIN_ADDR_FIX: &str = "expected HOST:PORT with a port 0-65535 (0: any free port), \
    e.g. 0.0.0.0:9644 or 127.0.0.1:0, or none to turn the admin server off";
const CORES_FIX: &str = "expected a shard count 1-256 (unpinned), a CPU list such as 0-3 or \
    0,2,4-5 (pinned), or affinity (one pinned shard per CPU this process may run on)";

/// Why the configuration was refused. Every variant names what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid config: {field} = {value:?}: {fix}")]
    Invalid {
        field: String,
        value: String,
        fix: String,
    },
    #[error("missing config: {field}: {fix}")]
    Missing { field: String, fix: String },
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl ConfigError {
    fn invalid(field: &str, value: impl ToString, fix: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.to_string(),
            value: value.to_string(),
            fix: fix.into(),
        }
    }
}

/// How many shards (glommio executors) the node runs, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cores {
    /// This many shards, not pinned: for tests and several nodes on one machine.
    Count(usize),
    /// One shard per listed CPU, each pinned to its CPU, in this order.
    Pinned(Vec<usize>),
}

impl Cores {
    pub fn shard_count(&self) -> usize {
        match self {
            Cores::Count(n) => *n,
            Cores::Pinned(cpus) => cpus.len(),
        }
    }

    /// Parse `N` (a count) or a CPU list (`0-3`, `0,2,4-5`) and check it against a
    /// machine with `cpus_configured` CPUs. A single pinned CPU is written `3-3`.
    fn parse(field: &str, value: &str, cpus_configured: usize) -> Result<Self, ConfigError> {
        let text = value.trim();
        let bad = |fix: String| ConfigError::invalid(field, value, fix);
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            let count: usize = text.parse().map_err(|_| bad(CORES_FIX.into()))?;
            if !(1..=SHARDS_MAX).contains(&count) {
                return Err(bad(CORES_FIX.into()));
            }
            return Ok(Cores::Count(count));
        }
        let mut cpus = Vec::new();
        let mut seen = BTreeSet::new();
        for part in text.split(',') {
            let (lo, hi) = parse_cpu_range(part).ok_or_else(|| bad(CORES_FIX.into()))?;
            if hi >= cpus_configured {
                return Err(bad(format!(
                    "CPU {hi} does not exist: this machine has {cpus_configured} CPUs \
                     (ids 0-{})",
                    cpus_configured.saturating_sub(1)
                )));
            }
            for cpu in lo..=hi {
                if !seen.insert(cpu) {
                    return Err(bad(format!(
                        "CPU {cpu} is listed twice; list each CPU once"
                    )));
                }
                cpus.push(cpu);
            }
        }
        if cpus.len() > SHARDS_MAX {
            return Err(bad(format!("list at most {SHARDS_MAX} CPUs")));
        }
        Ok(Cores::Pinned(cpus))
    }

    /// Whether `value` asks for the CPUs of the affinity mask (`affinity`, any case).
    fn is_affinity(value: &str) -> bool {
        value.trim().eq_ignore_ascii_case(CORES_AFFINITY)
    }

    /// `affinity`: one shard pinned to each CPU that `read_affinity` reports (ascending).
    fn from_affinity(
        field: &str,
        value: &str,
        read_affinity: fn() -> io::Result<Vec<usize>>,
    ) -> Result<Self, ConfigError> {
        let bad = |why: String| {
            ConfigError::invalid(
                field,
                value,
                format!("{why}; give a shard count such as 4 or a CPU list such as 0-3 instead"),
            )
        };
        let mut cpus = read_affinity().map_err(|e| {
            bad(format!(
                "cannot read this process's CPU affinity mask ({e})"
            ))
        })?;
        cpus.sort_unstable();
        cpus.dedup();
        if cpus.is_empty() {
            return Err(bad("this process's CPU affinity mask is empty".to_string()));
        }
        if cpus.len() > SHARDS_MAX {
            return Err(bad(format!(
                "this process's CPU affinity mask has {} CPUs, more than the {SHARDS_MAX} \
                 shards a node runs",
                cpus.len()
            )));
        }
        Ok(Cores::Pinned(cpus))
    }
}

/// The CPUs the calling thread may run on (`sched_getaffinity`), ascending. At
/// startup that is the main thread, whose mask is the process's: what `taskset`, a
/// cgroup cpuset or Kubernetes' static CPU manager granted.
fn affinity_cpus() -> io::Result<Vec<usize>> {
    type Word = libc::c_ulong;
    const WORD_BITS: usize = Word::BITS as usize;
    // The kernel refuses a mask smaller than its CPU id space (EINVAL); start at
    // glibc's `cpu_set_t` (1024 CPUs) and grow.
    let mut words = std::mem::size_of::<libc::cpu_set_t>() / std::mem::size_of::<Word>();
    loop {
        let mut mask: Vec<Word> = vec![0; words];
        let bytes = words * std::mem::size_of::<Word>();
        // SAFETY: `mask` is `bytes` long, writable and aligned like `cpu_set_t` (an
        // array of unsigned longs); the kernel writes at most `bytes` into it.
        let rc = unsafe { libc::sched_getaffinity(0, bytes, mask.as_mut_ptr().cast()) };
        if rc == 0 {
            let cpus = mask
                .iter()
                .enumerate()
                .flat_map(|(i, &word)| {
                    (0..WORD_BITS)
                        .filter(move |bit| word & (1 << bit) != 0)
                        .map(move |bit| i * WORD_BITS + bit)
                })
                .collect();
            return Ok(cpus);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) || words >= 1 << 16 {
            return Err(err);
        }
        words *= 2;
    }
}

/// `a-b` or `a` (with `a <= b`), as an inclusive range.
fn parse_cpu_range(part: &str) -> Option<(usize, usize)> {
    let part = part.trim();
    let (lo, hi) = match part.split_once('-') {
        Some((lo, hi)) => (lo.trim(), hi.trim()),
        None => (part, part),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(lo) || !all_digits(hi) {
        return None;
    }
    let (lo, hi) = (lo.parse().ok()?, hi.parse().ok()?);
    (lo <= hi).then_some((lo, hi))
}

/// `Count(n)` prints as `n`, `Pinned` as a compact CPU list (`0-3,6`, or `3-3` for a
/// single CPU); both parse back.
impl fmt::Display for Cores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpus = match self {
            Cores::Count(n) => return write!(f, "{n}"),
            Cores::Pinned(cpus) => cpus,
        };
        let mut i = 0;
        while i < cpus.len() {
            let mut j = i;
            while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
                j += 1;
            }
            if i > 0 {
                f.write_str(",")?;
            }
            // A single pinned CPU is written as a range so that it does not read as a count.
            if i == j && cpus.len() > 1 {
                write!(f, "{}", cpus[i])?;
            } else {
                write!(f, "{}-{}", cpus[i], cpus[j])?;
            }
            i = j + 1;
        }
        Ok(())
    }
}

/// Command-line flags of `strand-node`. Each flag can also be set through the
/// environment variable named in its help; a flag wins over its variable, and both
/// win over the config file.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "strand-node",
    version,
    about = "Strand: a Kafka-compatible streaming node",
    long_about = "Strand: a Kafka-compatible streaming node.\n\n\
        With no arguments the node serves Kafka on 127.0.0.1:9092, its admin HTTP server \
        (metrics, health, drain) on 0.0.0.0:9644, and keeps its data in ./strand-data. \
        Settings come from flags, then STRAND_* environment variables, then \
        the TOML file given by --config, then the built-in defaults."
)]
pub struct Args {
    /// TOML config file; flags and environment variables override its keys
    #[arg(long, env = "STRAND_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory holding the partition logs [default: ./strand-data]
    #[arg(long, env = "STRAND_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address the Kafka listener binds [default: 127.0.0.1:9092]
    #[arg(long, env = "STRAND_KAFKA_ADDR", value_name = "HOST:PORT")]
    pub kafka_addr: Option<String>,

    /// Address clients are told to connect to [default: the listen address; required
    /// when listening on 0.0.0.0 or ::]
    #[arg(long, env = "STRAND_ADVERTISED_KAFKA_ADDR", value_name = "HOST:PORT")]
    pub advertised_kafka_addr: Option<String>,

    /// Address the admin HTTP server (Prometheus /metrics, /healthz, /readyz, /drain)
    /// binds; port 0 takes any free port, `none` turns the server off
    /// [default: 0.0.0.0:9644]
    #[arg(long, env = "STRAND_ADMIN_ADDR", value_name = "HOST:PORT|none")]
    pub admin_addr: Option<String>,

    /// Shards to run: a count N (unpinned), a CPU list like 0-3 or 0,2,4-5 (one shard
    /// pinned to each listed CPU), or `affinity` (one shard pinned to each CPU of this
    /// process's affinity mask, ascending: a Kubernetes pod's exclusive CPUs under the
    /// static CPU manager, or what taskset granted) [default: the number of available
    /// CPUs, unpinned]
    #[arg(long, env = "STRAND_CORES", value_name = "N|LIST|affinity")]
    pub cores: Option<String>,

    /// This node's id in the cluster (Kafka broker id) [default: 0]
    #[arg(long, env = "STRAND_NODE_ID", value_name = "N")]
    pub node_id: Option<u32>,

    /// Cluster id reported to clients [default: strand-dev]
    #[arg(long, env = "STRAND_CLUSTER_ID", value_name = "ID")]
    pub cluster_id: Option<String>,

    /// Create a topic when a client produces to or asks for one that does not exist
    /// [default: true]
    #[arg(
        long,
        env = "STRAND_AUTO_CREATE_TOPICS",
        value_name = "true|false",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub auto_create_topics: Option<bool>,

    /// Partitions of an automatically created topic [default: 1]
    #[arg(long, env = "STRAND_DEFAULT_PARTITIONS", value_name = "N")]
    pub default_partitions: Option<u32>,

    /// Largest record batch accepted, in bytes (Kafka's message.max.bytes)
    /// [default: 1048588]
    #[arg(long, env = "STRAND_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,

    /// Largest request accepted, in bytes (Kafka's socket.request.max.bytes)
    /// [default: 104857600]
    #[arg(long, env = "STRAND_REQUEST_BYTES_MAX", value_name = "BYTES")]
    pub request_bytes_max: Option<usize>,

    /// Client connections open at once, over all shards [default: 10000]
    #[arg(long, env = "STRAND_CONNECTIONS_MAX", value_name = "N")]
    pub connections_max: Option<usize>,

    /// I/O memory (registered DMA buffers) of each shard, in bytes [default: 16777216]
    #[arg(long, env = "STRAND_IO_MEMORY_BYTES", value_name = "BYTES")]
    pub io_memory_bytes: Option<usize>,

    /// Accept a data directory on tmpfs (no O_DIRECT, nothing durable): for throwaway
    /// tests only [default: false]
    #[arg(
        long,
        env = "STRAND_ALLOW_TMPFS",
        value_name = "true|false",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_tmpfs: Option<bool>,

    /// Disk profile JSON written by `strand disk probe --out FILE`: its recommended
    /// write sizing is used for log.write_buffer_bytes and log.writes_in_flight_max
    /// when the config file does not set them [default: none]
    #[arg(long, env = "STRAND_DISK_PROFILE", value_name = "FILE")]
    pub disk_profile: Option<PathBuf>,

    /// Address the replication transport (QUIC over UDP) binds; shard s uses its port
    /// + s [default: 127.0.0.1:9093]
    #[arg(long, env = "STRAND_REPLICATION_ADDR", value_name = "HOST:PORT")]
    pub replication_addr: Option<String>,

    /// Every cluster member as ID@HOST:PORT (replication addresses), this node
    /// included, comma-separated. Empty: a single node without replication
    /// [default: none]
    #[arg(long, env = "STRAND_PEERS", value_name = "ID@HOST:PORT,...")]
    pub peers: Option<String>,

    /// Directory with ca.pem, node.pem and node.key (from `strand cert`): required in
    /// a cluster [default: none]
    #[arg(long, env = "STRAND_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,

    /// Replicas of a topic created without a replication factor
    /// [default: min(3, cluster size)]
    #[arg(long, env = "STRAND_DEFAULT_REPLICATION_FACTOR", value_name = "N")]
    pub default_replication_factor: Option<u32>,

    /// A follower that hears nothing from its leader for 1-2x this long starts an
    /// election [default: 500]
    #[arg(long, env = "STRAND_ELECTION_TIMEOUT_MS", value_name = "MS")]
    pub election_timeout_ms: Option<u64>,

    /// Partitions of the internal __consumer_offsets topic when it is created (Kafka's
    /// offsets.topic.num.partitions) [default: 16]
    #[arg(long, env = "STRAND_OFFSETS_TOPIC_PARTITIONS", value_name = "N")]
    pub offsets_topic_partitions: Option<u32>,

    /// How long the first rebalance of an empty consumer group waits for more members
    /// to join (Kafka's group.initial.rebalance.delay.ms) [default: 3000]
    #[arg(
        long,
        env = "STRAND_GROUP_INITIAL_REBALANCE_DELAY_MS",
        value_name = "MS"
    )]
    pub group_initial_rebalance_delay_ms: Option<u64>,

    /// Shortest session timeout a consumer group member may ask for (Kafka's
    /// group.min.session.timeout.ms) [default: 6000]
    #[arg(long, env = "STRAND_GROUP_MIN_SESSION_TIMEOUT_MS", value_name = "MS")]
    pub group_min_session_timeout_ms: Option<u64>,

    /// Longest session timeout a consumer group member may ask for (Kafka's
    /// group.max.session.timeout.ms) [default: 1800000]
    #[arg(long, env = "STRAND_GROUP_MAX_SESSION_TIMEOUT_MS", value_name = "MS")]
    pub group_max_session_timeout_ms: Option<u64>,
}

/// The config file. Every key is optional; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<u32>,
    cluster_id: Option<String>,
    data_dir: Option<PathBuf>,
    kafka_addr: Option<String>,
    advertised_kafka_addr: Option<String>,
    admin_addr: Option<String>,
    cores: Option<CoresSetting>,
    auto_create_topics: Option<bool>,
    default_partitions: Option<u32>,
    max_message_bytes: Option<usize>,
    request_bytes_max: Option<usize>,
    connections_max: Option<usize>,
    io_memory_bytes: Option<usize>,
    allow_tmpfs: Option<bool>,
    disk_profile: Option<PathBuf>,
    replication_addr: Option<String>,
    peers: Option<String>,
    tls_dir: Option<PathBuf>,
    default_replication_factor: Option<u32>,
    election_timeout_ms: Option<u64>,
    offsets_topic_partitions: Option<u32>,
    group_initial_rebalance_delay_ms: Option<u64>,
    group_min_session_timeout_ms: Option<u64>,
    group_max_session_timeout_ms: Option<u64>,
    #[serde(default)]
    log: FileLogConfig,
}

/// The `[log]` table: the fields of [`LogConfig`]. For the retention limits `-1`
/// means "no limit", as in Kafka (TOML has no null).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLogConfig {
    segment_bytes_max: Option<u64>,
    segment_age_ms_max: Option<u64>,
    preallocate_bytes: Option<u64>,
    write_buffer_bytes: Option<usize>,
    writes_in_flight_max: Option<usize>,
    tail_cache_bytes: Option<usize>,
    index_interval_bytes: Option<u32>,
    retention_bytes: Option<i64>,
    retention_ms: Option<i64>,
}

/// `cores` in the file: an integer count, a CPU-list string or `"affinity"`, kept as
/// text so the file and the flag go through the same parser.
#[derive(Debug)]
struct CoresSetting(String);

impl<'de> Deserialize<'de> for CoresSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = CoresSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a shard count (4), a CPU list string (\"0-3\") or \"affinity\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<CoresSetting, E> {
                Ok(CoresSetting(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<CoresSetting, E> {
                Ok(CoresSetting(v.to_string()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CoresSetting, E> {
                Ok(CoresSetting(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl FileConfig {
    fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
    }
}

/// What the node needs to know about the machine to check `cores`.
#[derive(Debug, Clone, Copy)]
struct Machine {
    /// CPUs the kernel knows of (`_SC_NPROCESSORS_CONF`): valid ids are below this.
    cpus_configured: usize,
    /// CPUs this process may run on: the default shard count.
    parallelism: usize,
    /// Reads the CPUs of the affinity mask, for `cores = "affinity"`
    /// ([`affinity_cpus`] but in tests).
    affinity: fn() -> io::Result<Vec<usize>>,
}

impl Machine {
    fn this() -> Self {
        // SAFETY: sysconf only reads a system value; it has no memory effects.
        let conf = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpus_configured = usize::try_from(conf)
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or(parallelism);
        Machine {
            cpus_configured,
            parallelism,
            affinity: affinity_cpus,
        }
    }

    fn cores_default(&self) -> Cores {
        Cores::Count(self.parallelism.clamp(1, SHARDS_MAX))
    }
}

/// The resolved and validated configuration of one node. Built once at startup and
/// then only read; each shard gets a clone.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: u32,
    pub cluster_id: String,
    pub data_dir: PathBuf,
    /// The address the Kafka listener binds.
    pub kafka_addr: SocketAddr,
    /// Host and port clients are told to connect to (Metadata responses).
    pub advertised_kafka_addr: (String, u16),
    /// The address the admin HTTP server (/metrics, /healthz, /readyz, /drain) binds;
    /// port 0: any free port. None: no admin server.
    pub admin_addr: Option<SocketAddr>,
    pub cores: Cores,
    pub auto_create_topics: bool,
    pub default_partitions: u32,
    pub max_message_bytes: usize,
    pub request_bytes_max: usize,
    pub connections_max: usize,
    /// Per shard.
    pub io_memory_bytes: usize,
    pub allow_tmpfs: bool,
    /// The disk profile the write sizing was taken from, if any.
    pub disk_profile: Option<PathBuf>,
    pub log: LogConfig,
    /// Where `log.write_buffer_bytes` and `log.writes_in_flight_max` came from.
    pub write_sizing: WriteSizing,
    /// The replication transport's bind address (shard s: port + s).
    pub replication_addr: SocketAddr,
    /// Every member, this node included, sorted by id. Empty: a single node.
    pub peers: Vec<Peer>,
    pub tls_dir: Option<PathBuf>,
    pub default_replication_factor: u32,
    pub election_timeout_ms: u64,
    /// The consumer group coordinator's settings.
    pub groups: GroupConfig,
}

/// Consumer group coordinator settings (Kafka's group.* and offsets.topic.* broker settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// Partitions of the internal `__consumer_offsets` topic when it is created (Kafka: offsets.topic.num.partitions).
    pub offsets_partitions: u32,
    /// How long the first rebalance of an empty group waits for more members (Kafka: group.initial.rebalance.delay.ms).
    pub initial_rebalance_delay_ms: u64,
    /// Session timeouts a member may ask for (Kafka: group.min.session.timeout.ms / group.max.session.timeout.ms).
    pub min_session_timeout_ms: u64,
    pub max_session_timeout_ms: u64,
}

/// A cluster member as configured: its id and replication address (a host name is
/// resolved when connecting, so a StatefulSet's DNS names work).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: u32,
    pub host: String,
    pub port: u16,
}

impl Peer {
    /// The replication address of this member's shard `shard`.
    pub fn shard_addr(&self, shard: usize) -> Option<SocketAddr> {
        let port = u16::try_from(self.port as usize + shard).ok()?;
        (self.host.as_str(), port).to_socket_addrs().ok()?.next()
    }
}

/// Parse `ID@HOST:PORT,...` (sorted by id on return).
fn parse_peers(value: &str) -> Result<Vec<Peer>, ConfigError> {
    let bad = |fix: String| ConfigError::invalid("peers", value, fix);
    let mut peers = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| bad(format!("{part:?} has no '@': {PEERS_FIX}")))?;
        let id: u32 = id
            .trim()
            .parse()
            .map_err(|_| bad(format!("{id:?} is not a node id: {PEERS_FIX}")))?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| bad(format!("{addr:?} has no port: {PEERS_FIX}")))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad(format!("{addr:?} has no valid port: {PEERS_FIX}")))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(bad(format!("{addr:?} has no host: {PEERS_FIX}")));
        }
        if peers.iter().any(|p: &Peer| p.id == id) {
            return Err(bad(format!(
                "node id {id} is listed twice; list each member once"
            )));
        }
        peers.push(Peer { id, host, port });
    }
    peers.sort_by_key(|p| p.id);
    Ok(peers)
}

/// The built-in defaults, as if started with no arguments.
impl Default for NodeConfig {
    fn default() -> Self {
        let kafka_addr = SocketAddr::from(([127, 0, 0, 1], 9092));
        NodeConfig {
            node_id: NODE_ID_DEFAULT,
            cluster_id: CLUSTER_ID_DEFAULT.to_string(),
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            kafka_addr,
            advertised_kafka_addr: (kafka_addr.ip().to_string(), kafka_addr.port()),
            admin_addr: Some(SocketAddr::from(([0, 0, 0, 0], 9644))),
            cores: Machine::this().cores_default(),
            auto_create_topics: AUTO_CREATE_TOPICS_DEFAULT,
            default_partitions: DEFAULT_PARTITIONS_DEFAULT,
            max_message_bytes: MAX_MESSAGE_BYTES_DEFAULT,
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            io_memory_bytes: IO_MEMORY_BYTES_DEFAULT,
            allow_tmpfs: ALLOW_TMPFS_DEFAULT,
            disk_profile: None,
            log: LogConfig::default(),
            write_sizing: WriteSizing::default(),
            replication_addr: SocketAddr::from(([127, 0, 0, 1], 9093)),
            peers: Vec::new(),
            tls_dir: None,
            default_replication_factor: 1,
            election_timeout_ms: ELECTION_TIMEOUT_MS_DEFAULT,
            groups: GroupConfig {
                offsets_partitions: OFFSETS_TOPIC_PARTITIONS_DEFAULT,
                initial_rebalance_delay_ms: GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT,
                min_session_timeout_ms: GROUP_MIN_SESSION_TIMEOUT_MS_DEFAULT,
                max_session_timeout_ms: GROUP_MAX_SESSION_TIMEOUT_MS_DEFAULT,
            },
        }
    }
}

impl NodeConfig {
    /// Parse the process's command line (and `STRAND_*` variables), read the config
    /// file if one is named, and validate. `--help`, `--version` and malformed flags
    /// print and exit, as usual for a command-line tool.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_args(Args::parse())
    }

    /// Lay `args` (flags and environment) over the config file it names (if any) and
    /// the defaults, then validate.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        Self::resolve(args, file, Machine::this())
    }

    fn resolve(args: Args, file: FileConfig, machine: Machine) -> Result<Self, ConfigError> {
        let kafka_addr_text = args
            .kafka_addr
            .or(file.kafka_addr)
            .unwrap_or_else(|| KAFKA_ADDR_DEFAULT.to_string());
        let (listen_host, kafka_addr) = resolve_listen_addr(&kafka_addr_text)?;
        let advertised_kafka_addr = resolve_advertised_addr(
            args.advertised_kafka_addr.or(file.advertised_kafka_addr),
            listen_host,
            kafka_addr,
        )?;
        let admin_addr_text = args
            .admin_addr
            .or(file.admin_addr)
            .unwrap_or_else(|| ADMIN_ADDR_DEFAULT.to_string());
        let admin_addr = resolve_admin_addr(&admin_addr_text)?;
        let cores = match args.cores.or(file.cores.map(|c| c.0)) {
            Some(text) if Cores::is_affinity(&text) => {
                Cores::from_affinity("cores", &text, machine.affinity)?
            }
            Some(text) => Cores::parse("cores", &text, machine.cpus_configured)?,
            None => machine.cores_default(),
        };
        let io_memory_bytes =
            (args.io_memory_bytes.or(file.io_memory_bytes)).unwrap_or(IO_MEMORY_BYTES_DEFAULT);
        let disk_profile = args.disk_profile.or(file.disk_profile);
        let mut write_sizing = WriteSizing {
            write_buffer_bytes: SizingSource::from_file(file.log.write_buffer_bytes.is_some()),
            writes_in_flight_max: SizingSource::from_file(file.log.writes_in_flight_max.is_some()),
        };
        let mut log = log_config(file.log)?;
        if let Some(path) = &disk_profile {
            let profile = DiskProfile::read(path)?;
            write_sizing = profile.apply(&mut log, write_sizing, io_memory_bytes);
        }
        let replication_addr_text = args
            .replication_addr
            .or(file.replication_addr)
            .unwrap_or_else(|| REPLICATION_ADDR_DEFAULT.to_string());
        let replication_addr = replication_addr_text
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .filter(|a| a.port() != 0)
            .ok_or_else(|| {
                ConfigError::invalid("replication_addr", &replication_addr_text, ADDR_FIX)
            })?;
        let peers = match args.peers.or(file.peers) {
            Some(text) => parse_peers(&text)?,
            None => Vec::new(),
        };
        let default_replication_factor = (args
            .default_replication_factor
            .or(file.default_replication_factor))
        .unwrap_or_else(|| peers.len().clamp(1, 3) as u32);
        let config = NodeConfig {
            replication_addr,
            peers,
            tls_dir: args.tls_dir.or(file.tls_dir),
            default_replication_factor,
            election_timeout_ms: (args.election_timeout_ms.or(file.election_timeout_ms))
                .unwrap_or(ELECTION_TIMEOUT_MS_DEFAULT),
            groups: GroupConfig {
                offsets_partitions: (args
                    .offsets_topic_partitions
                    .or(file.offsets_topic_partitions))
                .unwrap_or(OFFSETS_TOPIC_PARTITIONS_DEFAULT),
                initial_rebalance_delay_ms: (args
                    .group_initial_rebalance_delay_ms
                    .or(file.group_initial_rebalance_delay_ms))
                .unwrap_or(GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT),
                min_session_timeout_ms: (args
                    .group_min_session_timeout_ms
                    .or(file.group_min_session_timeout_ms))
                .unwrap_or(GROUP_MIN_SESSION_TIMEOUT_MS_DEFAULT),
                max_session_timeout_ms: (args
                    .group_max_session_timeout_ms
                    .or(file.group_max_session_timeout_ms))
                .unwrap_or(GROUP_MAX_SESSION_TIMEOUT_MS_DEFAULT),
            },
            node_id: args.node_id.or(file.node_id).unwrap_or(NODE_ID_DEFAULT),
            cluster_id: (args.cluster_id.or(file.cluster_id))
                .unwrap_or_else(|| CLUSTER_ID_DEFAULT.to_string()),
            data_dir: (args.data_dir.or(file.data_dir))
                .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT)),
            kafka_addr,
            advertised_kafka_addr,
            admin_addr,
            cores,
            auto_create_topics: (args.auto_create_topics.or(file.auto_create_topics))
                .unwrap_or(AUTO_CREATE_TOPICS_DEFAULT),
            default_partitions: (args.default_partitions.or(file.default_partitions))
                .unwrap_or(DEFAULT_PARTITIONS_DEFAULT),
            max_message_bytes: (args.max_message_bytes.or(file.max_message_bytes))
                .unwrap_or(MAX_MESSAGE_BYTES_DEFAULT),
            request_bytes_max: (args.request_bytes_max.or(file.request_bytes_max))
                .unwrap_or(REQUEST_BYTES_MAX_DEFAULT),
            connections_max: (args.connections_max.or(file.connections_max))
                .unwrap_or(CONNECTIONS_MAX_DEFAULT),
            io_memory_bytes,
            allow_tmpfs: (args.allow_tmpfs.or(file.allow_tmpfs)).unwrap_or(ALLOW_TMPFS_DEFAULT),
            disk_profile,
            log,
            write_sizing,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks of the plain values; addresses and cores are checked as they are parsed
    /// (but for the admin and Kafka listeners sharing a port).
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(admin) = self.admin_addr {
            let kafka = self.kafka_addr;
            if admin.port() != 0
                && admin.port() == kafka.port()
                && binds_overlap(admin.ip(), kafka.ip())
            {
                return Err(ConfigError::invalid(
                    "admin_addr",
                    admin,
                    format!(
                        "kafka_addr ({kafka}) listens on the same port: give the admin server \
                         another port, e.g. {}, or 0 for any free port, or none to turn it off",
                        SocketAddr::new(admin.ip(), 9644)
                    ),
                ));
            }
        }
        if self.node_id > NODE_ID_MAX {
            return Err(ConfigError::invalid(
                "node_id",
                self.node_id,
                format!("use a node id 0-{NODE_ID_MAX} (Kafka broker ids are int32)"),
            ));
        }
        let id = &self.cluster_id;
        if id.is_empty()
            || id.len() > CLUSTER_ID_BYTES_MAX
            || !id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError::invalid(
                "cluster_id",
                id,
                format!(
                    "use 1-{CLUSTER_ID_BYTES_MAX} printable ASCII characters without spaces, \
                     e.g. {CLUSTER_ID_DEFAULT}"
                ),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "data_dir",
                "",
                format!("name a directory, e.g. {DATA_DIR_DEFAULT}"),
            ));
        }
        check_range(
            "default_partitions",
            self.default_partitions,
            1,
            DEFAULT_PARTITIONS_MAX,
        )?;
        check_range(
            "request_bytes_max",
            self.request_bytes_max,
            MAX_MESSAGE_BYTES_MIN,
            REQUEST_BYTES_MAX_MAX,
        )?;
        check_range(
            "max_message_bytes",
            self.max_message_bytes,
            MAX_MESSAGE_BYTES_MIN,
            BATCH_BYTES_MAX,
        )?;
        if self.max_message_bytes > self.request_bytes_max {
            return Err(ConfigError::invalid(
                "max_message_bytes",
                self.max_message_bytes,
                format!(
                    "a record batch must fit in a request: use at most request_bytes_max \
                     ({}), or raise request_bytes_max",
                    self.request_bytes_max
                ),
            ));
        }
        check_range(
            "connections_max",
            self.connections_max,
            1,
            CONNECTIONS_MAX_MAX,
        )?;
        check_range(
            "io_memory_bytes",
            self.io_memory_bytes,
            IO_MEMORY_BYTES_MIN,
            IO_MEMORY_BYTES_MAX,
        )?;
        check_range(
            "election_timeout_ms",
            self.election_timeout_ms,
            ELECTION_TIMEOUT_MS_MIN,
            ELECTION_TIMEOUT_MS_MAX,
        )?;
        let groups = &self.groups;
        check_range(
            "offsets_topic_partitions",
            groups.offsets_partitions,
            1,
            OFFSETS_TOPIC_PARTITIONS_MAX,
        )?;
        check_range(
            "group_initial_rebalance_delay_ms",
            groups.initial_rebalance_delay_ms,
            0,
            GROUP_INITIAL_REBALANCE_DELAY_MS_MAX,
        )?;
        check_range(
            "group_min_session_timeout_ms",
            groups.min_session_timeout_ms,
            1,
            GROUP_SESSION_TIMEOUT_MS_MAX,
        )?;
        check_range(
            "group_max_session_timeout_ms",
            groups.max_session_timeout_ms,
            1,
            GROUP_SESSION_TIMEOUT_MS_MAX,
        )?;
        if groups.max_session_timeout_ms < groups.min_session_timeout_ms {
            return Err(ConfigError::invalid(
                "group_max_session_timeout_ms",
                groups.max_session_timeout_ms,
                format!(
                    "it is below group_min_session_timeout_ms ({}): use at least \
                     group_min_session_timeout_ms, or lower group_min_session_timeout_ms",
                    groups.min_session_timeout_ms
                ),
            ));
        }
        if !self.peers.is_empty() {
            if !self.peers.iter().any(|p| p.id == self.node_id) {
                return Err(ConfigError::invalid(
                    "peers",
                    self.peers_text(),
                    format!(
                        "this node (node_id {}) is not listed: list every member, this node \
                         included, or set node_id to this node's id in the list",
                        self.node_id
                    ),
                ));
            }
            if self.peers.len() > 1 && self.tls_dir.is_none() {
                return Err(ConfigError::Missing {
                    field: "tls_dir".into(),
                    fix: "a cluster replicates over TLS: make certificates with `strand cert ca` \
                          and `strand cert node`, and name their directory with --tls-dir"
                        .into(),
                });
            }
        }
        let members = self.peers.len().max(1) as u32;
        if self.default_replication_factor == 0 || self.default_replication_factor > members {
            return Err(ConfigError::invalid(
                "default_replication_factor",
                self.default_replication_factor,
                format!("use 1 to the cluster size ({members})"),
            ));
        }
        self.log.validate().map_err(|e| match e {
            strand_engine::Error::InvalidConfig { field, value, fix } => {
                ConfigError::invalid(&format!("log.{field}"), value, fix)
            }
            other => ConfigError::invalid("log", "", other.to_string()),
        })
    }

    /// Whether this node replicates with others (a `peers` list of more than itself).
    pub fn is_cluster(&self) -> bool {
        self.peers.len() > 1
    }

    /// `peers` as it would be written in the flag.
    pub fn peers_text(&self) -> String {
        self.peers
            .iter()
            .map(|p| format!("{}@{}", p.id, host_port(&p.host, p.port)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A human summary, one setting per line, printed at startup.
    pub fn describe(&self) -> String {
        let log = &self.log;
        let cores = match &self.cores {
            Cores::Count(n) => format!("{n} shards, unpinned"),
            Cores::Pinned(cpus) => format!("{} shards pinned to CPUs {}", cpus.len(), self.cores),
        };
        let limit = |v: Option<u64>, show: fn(u64) -> String| v.map_or("none".to_string(), show);
        let (host, port) = &self.advertised_kafka_addr;
        let rows = [
            ("node_id", self.node_id.to_string()),
            ("cluster_id", self.cluster_id.clone()),
            ("data_dir", self.data_dir.display().to_string()),
            ("kafka_addr", self.kafka_addr.to_string()),
            ("advertised_kafka_addr", host_port(host, *port)),
            (
                "admin_addr",
                match self.admin_addr {
                    None => "none (no admin server)".to_string(),
                    Some(addr) if addr.port() == 0 => format!("{addr} (any free port)"),
                    Some(addr) => addr.to_string(),
                },
            ),
            ("cores", cores),
            ("auto_create_topics", self.auto_create_topics.to_string()),
            ("default_partitions", self.default_partitions.to_string()),
            ("max_message_bytes", bytes(self.max_message_bytes as u64)),
            ("request_bytes_max", bytes(self.request_bytes_max as u64)),
            ("connections_max", self.connections_max.to_string()),
            (
                "io_memory_bytes",
                format!("{} per shard", bytes(self.io_memory_bytes as u64)),
            ),
            ("allow_tmpfs", self.allow_tmpfs.to_string()),
            (
                "disk_profile",
                self.disk_profile
                    .as_ref()
                    .map_or("none".to_string(), |p| p.display().to_string()),
            ),
            ("replication_addr", self.replication_addr.to_string()),
            (
                "peers",
                if self.peers.is_empty() {
                    "none (single node)".to_string()
                } else {
                    self.peers_text()
                },
            ),
            (
                "tls_dir",
                self.tls_dir
                    .as_ref()
                    .map_or("none".to_string(), |p| p.display().to_string()),
            ),
            (
                "default_replication_factor",
                self.default_replication_factor.to_string(),
            ),
            ("election_timeout_ms", self.election_timeout_ms.to_string()),
            (
                "offsets_topic_partitions",
                self.groups.offsets_partitions.to_string(),
            ),
            (
                "group_initial_rebalance_delay_ms",
                self.groups.initial_rebalance_delay_ms.to_string(),
            ),
            (
                "group_min_session_timeout_ms",
                self.groups.min_session_timeout_ms.to_string(),
            ),
            (
                "group_max_session_timeout_ms",
                self.groups.max_session_timeout_ms.to_string(),
            ),
            ("log.segment_bytes_max", bytes(log.segment_bytes_max)),
            ("log.segment_age_ms_max", millis(log.segment_age_ms_max)),
            ("log.preallocate_bytes", bytes(log.preallocate_bytes)),
            (
                "log.write_buffer_bytes",
                format!(
                    "{} ({})",
                    bytes(log.write_buffer_bytes as u64),
                    self.write_sizing
                        .write_buffer_bytes
                        .describe(log.write_buffer_bytes as u64, bytes),
                ),
            ),
            (
                "log.writes_in_flight_max",
                format!(
                    "{} ({})",
                    log.writes_in_flight_max,
                    self.write_sizing
                        .writes_in_flight_max
                        .describe(log.writes_in_flight_max as u64, |n| n.to_string()),
                ),
            ),
            ("log.tail_cache_bytes", bytes(log.tail_cache_bytes as u64)),
            (
                "log.index_interval_bytes",
                bytes(log.index_interval_bytes.into()),
            ),
            ("log.retention_bytes", limit(log.retention_bytes, bytes)),
            ("log.retention_ms", limit(log.retention_ms, millis)),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::from("strand-node configuration:\n");
        for (key, value) in rows {
            out.push_str(&format!("  {key:<width$}  {value}\n"));
        }
        out
    }
}

fn check_range<T>(field: &str, value: T, min: T, max: T) -> Result<(), ConfigError>
where
    T: PartialOrd + fmt::Display,
{
    if value < min || value > max {
        return Err(ConfigError::invalid(
            field,
            &value,
            format!("use a value between {min} and {max}"),
        ));
    }
    Ok(())
}

/// The `[log]` table over [`LogConfig::default`]; `validate` checks the result.
fn log_config(file: FileLogConfig) -> Result<LogConfig, ConfigError> {
    let d = LogConfig::default();
    Ok(LogConfig {
        segment_bytes_max: file.segment_bytes_max.unwrap_or(d.segment_bytes_max),
        segment_age_ms_max: file.segment_age_ms_max.unwrap_or(d.segment_age_ms_max),
        preallocate_bytes: file.preallocate_bytes.unwrap_or(d.preallocate_bytes),
        write_buffer_bytes: file.write_buffer_bytes.unwrap_or(d.write_buffer_bytes),
        writes_in_flight_max: file.writes_in_flight_max.unwrap_or(d.writes_in_flight_max),
        tail_cache_bytes: file.tail_cache_bytes.unwrap_or(d.tail_cache_bytes),
        index_interval_bytes: file.index_interval_bytes.unwrap_or(d.index_interval_bytes),
        retention_bytes: match file.retention_bytes {
            Some(v) => optional_limit("log.retention_bytes", v, "bytes")?,
            None => d.retention_bytes,
        },
        retention_ms: match file.retention_ms {
            Some(v) => optional_limit("log.retention_ms", v, "milliseconds")?,
            None => d.retention_ms,
        },
    })
}

/// Kafka's convention for retention: `-1` is "no limit".
fn optional_limit(field: &str, value: i64, unit: &str) -> Result<Option<u64>, ConfigError> {
    match value {
        -1 => Ok(None),
        v => u64::try_from(v).map(Some).map_err(|_| {
            ConfigError::invalid(
                field,
                v,
                format!("use a number of {unit}, or -1 for no limit"),
            )
        }),
    }
}

/// Where `log.write_buffer_bytes` and `log.writes_in_flight_max` came from, for
/// [`NodeConfig::describe`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteSizing {
    pub write_buffer_bytes: SizingSource,
    pub writes_in_flight_max: SizingSource,
}

/// Where one write-sizing setting came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SizingSource {
    #[default]
    Default,
    /// The `[log]` table of the config file; a disk profile never overrides it.
    ConfigFile,
    /// The disk profile, which recommended `recommended` before it was fitted to the
    /// bounds and to `io_memory_bytes`.
    DiskProfile { recommended: u64 },
}

impl SizingSource {
    fn from_file(set_in_file: bool) -> Self {
        if set_in_file {
            SizingSource::ConfigFile
        } else {
            SizingSource::Default
        }
    }

    fn describe(&self, value: u64, show: impl Fn(u64) -> String) -> String {
        match *self {
            SizingSource::Default => "default".to_string(),
            SizingSource::ConfigFile => "config file".to_string(),
            SizingSource::DiskProfile { recommended } if recommended == value => {
                "disk profile".to_string()
            }
            SizingSource::DiskProfile { recommended } => format!(
                "disk profile recommends {}, fitted to the bounds and io_memory_bytes",
                show(recommended)
            ),
        }
    }
}

/// The part of a disk profile (`strand disk probe --out FILE`, written by
/// `strand_tools::probe`) the node uses; the measurements in it are ignored here.
#[derive(Debug, Deserialize)]
struct DiskProfile {
    schema_version: u32,
    recommended_write_buffer_bytes: u64,
    recommended_writes_in_flight: u64,
}

impl DiskProfile {
    fn read(path: &Path) -> Result<Self, ConfigError> {
        let bad = |why: String| {
            ConfigError::invalid(
                "disk_profile",
                path.display(),
                format!("{why}; {DISK_PROFILE_FIX}"),
            )
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
        let profile: DiskProfile = serde_json::from_str(&text)
            .map_err(|e| bad(format!("it is not a disk profile ({e})")))?;
        if profile.schema_version != DISK_PROFILE_SCHEMA_VERSION {
            return Err(bad(format!(
                "its schema_version is {}, this node reads version {DISK_PROFILE_SCHEMA_VERSION}",
                profile.schema_version
            )));
        }
        let buffer = profile.recommended_write_buffer_bytes;
        if buffer == 0 || !buffer.is_multiple_of(PAGE_BYTES as u64) {
            return Err(bad(format!(
                "its recommended_write_buffer_bytes {buffer} is not a positive multiple of \
                 {PAGE_BYTES}"
            )));
        }
        if profile.recommended_writes_in_flight == 0 {
            return Err(bad("its recommended_writes_in_flight is 0".to_string()));
        }
        Ok(profile)
    }

    /// Takes the recommendations for the settings the config file leaves unset (those
    /// it sets are never changed): clamped to the `PROFILE_*` bounds, then shrunk,
    /// writes in flight first, until the DMA buffers of one log fit in
    /// `io_memory_bytes`, the registered I/O memory of a shard. A log holds
    /// `write_buffer_bytes × (2 × writes_in_flight_max + 1)` of them: the writes in
    /// flight, as many full buffers queued behind them, and the one filling.
    fn apply(
        &self,
        log: &mut LogConfig,
        sizing: WriteSizing,
        io_memory_bytes: usize,
    ) -> WriteSizing {
        let mut sizing = sizing;
        let take_buffer = sizing.write_buffer_bytes != SizingSource::ConfigFile;
        let take_in_flight = sizing.writes_in_flight_max != SizingSource::ConfigFile;
        if take_buffer {
            let recommended = self.recommended_write_buffer_bytes;
            log.write_buffer_bytes = usize::try_from(recommended).unwrap_or(usize::MAX).clamp(
                PROFILE_WRITE_BUFFER_BYTES_MIN,
                PROFILE_WRITE_BUFFER_BYTES_MAX,
            );
            sizing.write_buffer_bytes = SizingSource::DiskProfile { recommended };
        }
        if take_in_flight {
            let recommended = self.recommended_writes_in_flight;
            log.writes_in_flight_max = usize::try_from(recommended)
                .unwrap_or(usize::MAX)
                .clamp(1, PROFILE_WRITES_IN_FLIGHT_MAX);
            sizing.writes_in_flight_max = SizingSource::DiskProfile { recommended };
        }
        if take_in_flight {
            let buffers_fit = io_memory_bytes / log.write_buffer_bytes;
            let in_flight_fit = (buffers_fit.saturating_sub(1) / 2).max(1);
            log.writes_in_flight_max = log.writes_in_flight_max.min(in_flight_fit);
        }
        if take_buffer {
            let buffer_fit = io_memory_bytes / (2 * log.writes_in_flight_max + 1);
            let buffer_fit =
                (buffer_fit / PAGE_BYTES * PAGE_BYTES).max(PROFILE_WRITE_BUFFER_BYTES_MIN);
            log.write_buffer_bytes = log.write_buffer_bytes.min(buffer_fit);
        }
        sizing
    }
}

/// Split `HOST:PORT` (IPv6 hosts in brackets: `[::1]:9092`) into a bare host and a
/// port 1-65535.
fn split_host_port(field: &str, value: &str) -> Result<(String, u16), ConfigError> {
    let (host, port) = split_host_any_port(field, value, ADDR_FIX)?;
    if port == 0 {
        return Err(ConfigError::invalid(field, value, ADDR_FIX));
    }
    Ok((host, port))
}

/// [`split_host_port`], but port 0 is accepted and a refusal gives `fix`.
fn split_host_any_port(field: &str, value: &str, fix: &str) -> Result<(String, u16), ConfigError> {
    let bad = || ConfigError::invalid(field, value, fix);
    let (host, port) = value.trim().rsplit_once(':').ok_or_else(bad)?;
    let host = match host.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']').ok_or_else(bad)?,
        // An unbracketed IPv6 address cannot be told apart from its port.
        None if host.contains(':') => return Err(bad()),
        None => host,
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    Ok((host.to_string(), port))
}

/// The listen address as typed (host part) and resolved.
fn resolve_listen_addr(value: &str) -> Result<(String, SocketAddr), ConfigError> {
    let (host, port) = split_host_port("kafka_addr", value)?;
    let addr = resolve_bind_host("kafka_addr", value, &host, port, KAFKA_ADDR_DEFAULT)?;
    Ok((host, addr))
}

/// The admin server's address: `none` (any case) turns it off; port 0 is any free port.
fn resolve_admin_addr(value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if value.trim().eq_ignore_ascii_case(ADMIN_ADDR_NONE) {
        return Ok(None);
    }
    let (host, port) = split_host_any_port("admin_addr", value, ADMIN_ADDR_FIX)?;
    resolve_bind_host("admin_addr", value, &host, port, ADMIN_ADDR_DEFAULT).map(Some)
}

/// `host` (an IP address or a name) and `port` as an address to bind; `value` is the
/// setting as typed and `example` a good one, for the error. A name resolving to both
/// families binds the IPv4 address.
fn resolve_bind_host(
    field: &str,
    value: &str,
    host: &str,
    port: u16,
    example: &str,
) -> Result<SocketAddr, ConfigError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let unresolved = |why: String| {
        ConfigError::invalid(
            field,
            value,
            format!(
                "{why}; use an IP address or a name this machine resolves, \
                 e.g. {example}"
            ),
        )
    };
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| unresolved(format!("{host} does not resolve ({e})")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| unresolved(format!("{host} resolves to no address")))
}

/// Whether listeners bound to `a` and `b` on one port collide: the same address, or
/// one is a wildcard covering the other (`::` covers IPv4 too, as Linux binds it
/// dual-stack; `0.0.0.0` covers only IPv4).
fn binds_overlap(a: IpAddr, b: IpAddr) -> bool {
    let covers = |x: IpAddr, y: IpAddr| x.is_unspecified() && (x.is_ipv6() || y.is_ipv4());
    a == b || covers(a, b) || covers(b, a)
}

fn resolve_advertised_addr(
    advertised: Option<String>,
    listen_host: String,
    listen: SocketAddr,
) -> Result<(String, u16), ConfigError> {
    const FIELD: &str = "advertised_kafka_addr";
    let Some(text) = advertised else {
        if listen.ip().is_unspecified() {
            return Err(ConfigError::Missing {
                field: FIELD.to_string(),
                fix: format!(
                    "kafka_addr {listen} listens on every interface, so clients need to be \
                     told where to connect: set --advertised-kafka-addr HOST:PORT (or \
                     STRAND_ADVERTISED_KAFKA_ADDR, or advertised_kafka_addr in the config \
                     file), e.g. strand-0.example.com:{}",
                    listen.port()
                ),
            });
        }
        return Ok((listen_host, listen.port()));
    };
    let (host, port) = split_host_port(FIELD, &text)?;
    if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
        return Err(ConfigError::invalid(
            FIELD,
            &text,
            "clients cannot connect to an unspecified address: advertise this machine's \
             host name or IP, e.g. strand-0.example.com:9092",
        ));
    }
    Ok((host, port))
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    match UNITS.iter().find(|(size, _)| n >= *size) {
        Some((size, unit)) if n.is_multiple_of(*size) => format!("{} {unit}", n / size),
        Some((size, unit)) => format!("{n} bytes ({:.1} {unit})", n as f64 / *size as f64),
        None => format!("{n} bytes"),
    }
}

fn millis(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (24 * 3600 * 1000, "d"),
        (3600 * 1000, "h"),
        (60 * 1000, "min"),
        (1000, "s"),
    ];
    match UNITS
        .iter()
        .find(|(size, _)| ms >= *size && ms.is_multiple_of(*size))
    {
        Some((size, unit)) => format!("{} {unit}", ms / size),
        None => format!("{ms} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    const MACHINE: Machine = Machine {
        cpus_configured: 8,
        parallelism: 6,
        affinity: affinity_cpus,
    };

    fn parse(argv: &[&str]) -> Args {
        let argv = std::iter::once("strand-node").chain(argv.iter().copied());
        Args::try_parse_from(argv).expect("flags parse")
    }

    fn file(text: &str) -> FileConfig {
        FileConfig::parse(Path::new("test.toml"), text).expect("file parses")
    }

    fn resolve(args: Args, file: FileConfig) -> Result<NodeConfig, ConfigError> {
        NodeConfig::resolve(args, file, MACHINE)
    }

    fn resolve_flags(argv: &[&str]) -> Result<NodeConfig, ConfigError> {
        resolve(parse(argv), FileConfig::default())
    }

    fn error_of(result: Result<NodeConfig, ConfigError>) -> String {
        result.expect_err("config is refused").to_string()
    }

    fn assert_invalid(result: Result<NodeConfig, ConfigError>, want_field: &str) {
        match result {
            Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, want_field),
            other => panic!("expected an invalid {want_field}, got {other:?}"),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn no_arguments_give_the_defaults() {
        let c = resolve_flags(&[]).expect("defaults are valid");
        assert_eq!(
            c.kafka_addr,
            "127.0.0.1:9092".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(c.advertised_kafka_addr, ("127.0.0.1".to_string(), 9092));
        assert_eq!(
            c.admin_addr,
            Some("0.0.0.0:9644".parse::<SocketAddr>().expect("addr"))
        );
        assert_eq!(c.data_dir, PathBuf::from("./strand-data"));
        assert_eq!(c.node_id, 0);
        assert_eq!(c.cluster_id, "strand-dev");
        assert_eq!(c.cores, Cores::Count(6));
        assert!(c.auto_create_topics);
        assert_eq!(c.default_partitions, 1);
        assert_eq!(c.max_message_bytes, 1_048_588);
        assert_eq!(c.request_bytes_max, 100 * 1024 * 1024);
        assert_eq!(c.connections_max, 10_000);
        assert_eq!(c.io_memory_bytes, 16 * 1024 * 1024);
        assert!(!c.allow_tmpfs);
        assert_eq!(
            c.groups,
            GroupConfig {
                offsets_partitions: 16,
                initial_rebalance_delay_ms: 3_000,
                min_session_timeout_ms: 6_000,
                max_session_timeout_ms: 1_800_000,
            }
        );
        let d = LogConfig::default();
        assert_eq!(c.log.segment_bytes_max, d.segment_bytes_max);
        assert_eq!(c.log.retention_ms, d.retention_ms);
        assert_eq!(c.log.retention_bytes, d.retention_bytes);
    }

    #[test]
    fn default_impl_matches_resolved_defaults() {
        let resolved = NodeConfig::from_args(Args::default()).expect("defaults are valid");
        let d = NodeConfig::default();
        assert_eq!(resolved.describe(), d.describe());
        assert_eq!(resolved.groups, d.groups);
    }

    #[test]
    fn default_cores_are_clamped_to_the_shard_limit() {
        let big = Machine {
            cpus_configured: 1024,
            parallelism: 1024,
            ..MACHINE
        };
        let c = NodeConfig::resolve(Args::default(), FileConfig::default(), big).expect("ok");
        assert_eq!(c.cores, Cores::Count(SHARDS_MAX));
    }

    #[test]
    fn every_flag_is_applied() {
        let c = resolve_flags(&[
            "--data-dir",
            "/var/lib/strand",
            "--kafka-addr",
            "127.0.0.2:19092",
            "--advertised-kafka-addr",
            "broker-1.example.com:29092",
            "--admin-addr",
            "127.0.0.2:19644",
            "--cores",
            "0,2,4-5",
            "--node-id",
            "7",
            "--cluster-id",
            "prod-1",
            "--auto-create-topics",
            "false",
            "--default-partitions",
            "12",
            "--max-message-bytes",
            "2097152",
            "--request-bytes-max",
            "4194304",
            "--connections-max",
            "50",
            "--io-memory-bytes",
            "33554432",
            "--allow-tmpfs",
            "true",
            "--offsets-topic-partitions",
            "50",
            "--group-initial-rebalance-delay-ms",
            "0",
            "--group-min-session-timeout-ms",
            "1000",
            "--group-max-session-timeout-ms",
            "60000",
        ])
        .expect("valid");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/strand"));
        assert_eq!(
            c.kafka_addr,
            "127.0.0.2:19092".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(
            c.advertised_kafka_addr,
            ("broker-1.example.com".to_string(), 29092)
        );
        assert_eq!(
            c.admin_addr,
            Some("127.0.0.2:19644".parse::<SocketAddr>().expect("addr"))
        );
        assert_eq!(c.cores, Cores::Pinned(vec![0, 2, 4, 5]));
        assert_eq!(c.node_id, 7);
        assert_eq!(c.cluster_id, "prod-1");
        assert!(!c.auto_create_topics);
        assert_eq!(c.default_partitions, 12);
        assert_eq!(c.max_message_bytes, 2 * MIB);
        assert_eq!(c.request_bytes_max, 4 * MIB);
        assert_eq!(c.connections_max, 50);
        assert_eq!(c.io_memory_bytes, 32 * MIB);
        assert!(c.allow_tmpfs);
        assert_eq!(c.groups.offsets_partitions, 50);
        assert_eq!(c.groups.initial_rebalance_delay_ms, 0);
        assert_eq!(c.groups.min_session_timeout_ms, 1_000);
        assert_eq!(c.groups.max_session_timeout_ms, 60_000);
    }

    #[test]
    fn config_flag_names_the_file() {
        let args = parse(&["--config", "/etc/strand/node.toml"]);
        assert_eq!(args.config, Some(PathBuf::from("/etc/strand/node.toml")));
    }

    #[test]
    fn every_flag_has_its_environment_variable() {
        let want = [
            ("config", "STRAND_CONFIG"),
            ("data_dir", "STRAND_DATA_DIR"),
            ("kafka_addr", "STRAND_KAFKA_ADDR"),
            ("advertised_kafka_addr", "STRAND_ADVERTISED_KAFKA_ADDR"),
            ("admin_addr", "STRAND_ADMIN_ADDR"),
            ("cores", "STRAND_CORES"),
            ("node_id", "STRAND_NODE_ID"),
            ("auto_create_topics", "STRAND_AUTO_CREATE_TOPICS"),
            ("cluster_id", "STRAND_CLUSTER_ID"),
            ("disk_profile", "STRAND_DISK_PROFILE"),
            (
                "offsets_topic_partitions",
                "STRAND_OFFSETS_TOPIC_PARTITIONS",
            ),
            (
                "group_initial_rebalance_delay_ms",
                "STRAND_GROUP_INITIAL_REBALANCE_DELAY_MS",
            ),
            (
                "group_min_session_timeout_ms",
                "STRAND_GROUP_MIN_SESSION_TIMEOUT_MS",
            ),
            (
                "group_max_session_timeout_ms",
                "STRAND_GROUP_MAX_SESSION_TIMEOUT_MS",
            ),
        ];
        let cmd = Args::command();
        for (id, var) in want {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == id)
                .unwrap_or_else(|| panic!("no argument {id}"));
            assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new(var)), "{id}");
        }
        // Every flag (but help/version) can come from the environment.
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id != "help" && id != "version" {
                assert!(arg.get_env().is_some(), "{id} has no env var");
            }
        }
    }

    #[test]
    fn booleans_take_a_value() {
        for (text, want) in [("true", true), ("false", false), ("1", true), ("no", false)] {
            let args = parse(&["--auto-create-topics", text]);
            assert_eq!(args.auto_create_topics, Some(want), "{text}");
        }
        let bad = Args::try_parse_from(["strand-node", "--auto-create-topics", "maybe"]);
        assert!(bad.is_err());
    }

    #[test]
    fn malformed_numeric_flags_are_refused_by_clap() {
        let err =
            Args::try_parse_from(["strand-node", "--node-id", "seven"]).expect_err("not a number");
        assert!(err.to_string().contains("--node-id"), "{err}");
    }

    #[test]
    fn help_describes_the_flags() {
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "--config",
            "--data-dir",
            "--kafka-addr",
            "--advertised-kafka-addr",
            "--admin-addr",
            "STRAND_ADMIN_ADDR",
            "--cores",
            "affinity",
            "--node-id",
            "STRAND_AUTO_CREATE_TOPICS",
            "--offsets-topic-partitions",
            "--group-initial-rebalance-delay-ms",
            "--group-min-session-timeout-ms",
            "--group-max-session-timeout-ms",
            "STRAND_GROUP_MAX_SESSION_TIMEOUT_MS",
        ] {
            assert!(help.contains(flag), "help lacks {flag}:\n{help}");
        }
    }

    // Flags beat environment variables inside clap (both land in `Args`); these
    // tests check the next layer: `Args` over the file over the defaults.
    #[test]
    fn flags_and_environment_beat_the_file() {
        let f = file(
            r#"
            kafka_addr = "127.0.0.1:1111"
            admin_addr = "127.0.0.1:3333"
            data_dir = "/from/file"
            node_id = 3
            cores = 2
            auto_create_topics = true
            cluster_id = "file-cluster"
            offsets_topic_partitions = 8
            group_initial_rebalance_delay_ms = 100
            group_min_session_timeout_ms = 2000
            group_max_session_timeout_ms = 20000
            "#,
        );
        let args = Args {
            kafka_addr: Some("127.0.0.1:2222".into()),
            admin_addr: Some("none".into()),
            node_id: Some(4),
            auto_create_topics: Some(false),
            offsets_topic_partitions: Some(32),
            group_max_session_timeout_ms: Some(40_000),
            ..Args::default()
        };
        let c = resolve(args, f).expect("valid");
        assert_eq!(c.kafka_addr.port(), 2222);
        assert_eq!(c.advertised_kafka_addr.1, 2222);
        assert_eq!(
            c.admin_addr, None,
            "the flag's none beats the file's address"
        );
        assert_eq!(c.node_id, 4);
        assert!(!c.auto_create_topics);
        // Not given as flags: the file's values.
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.cores, Cores::Count(2));
        assert_eq!(c.cluster_id, "file-cluster");
        assert_eq!(c.groups.offsets_partitions, 32);
        assert_eq!(c.groups.max_session_timeout_ms, 40_000);
        assert_eq!(c.groups.initial_rebalance_delay_ms, 100);
        assert_eq!(c.groups.min_session_timeout_ms, 2_000);
    }

    #[test]
    fn file_beats_the_defaults() {
        let c = resolve(
            Args::default(),
            file(
                r#"
                node_id = 9
                cluster_id = "c9"
                data_dir = "/d"
                kafka_addr = "0.0.0.0:9093"
                advertised_kafka_addr = "[2001:db8::1]:9093"
                admin_addr = "[::1]:0"
                cores = "0-3"
                auto_create_topics = false
                default_partitions = 3
                max_message_bytes = 2048
                request_bytes_max = 4096
                connections_max = 5
                io_memory_bytes = 2097152
                allow_tmpfs = true
                offsets_topic_partitions = 4
                group_initial_rebalance_delay_ms = 250
                group_min_session_timeout_ms = 3000
                group_max_session_timeout_ms = 300000
                "#,
            ),
        )
        .expect("valid");
        assert_eq!(c.node_id, 9);
        assert_eq!(c.cluster_id, "c9");
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert_eq!(
            c.kafka_addr,
            "0.0.0.0:9093".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(c.advertised_kafka_addr, ("2001:db8::1".to_string(), 9093));
        assert_eq!(
            c.admin_addr,
            Some("[::1]:0".parse::<SocketAddr>().expect("addr"))
        );
        assert_eq!(c.cores, Cores::Pinned(vec![0, 1, 2, 3]));
        assert!(!c.auto_create_topics);
        assert_eq!(c.default_partitions, 3);
        assert_eq!(c.max_message_bytes, 2048);
        assert_eq!(c.request_bytes_max, 4096);
        assert_eq!(c.connections_max, 5);
        assert_eq!(c.io_memory_bytes, 2 * MIB);
        assert!(c.allow_tmpfs);
        assert_eq!(
            c.groups,
            GroupConfig {
                offsets_partitions: 4,
                initial_rebalance_delay_ms: 250,
                min_session_timeout_ms: 3_000,
                max_session_timeout_ms: 300_000,
            }
        );
    }

    #[test]
    fn log_table_maps_onto_log_config() {
        let c = resolve(
            Args::default(),
            file(
                r#"
                [log]
                segment_bytes_max = 1048576
                segment_age_ms_max = 60000
                preallocate_bytes = 0
                write_buffer_bytes = 262144
                writes_in_flight_max = 8
                tail_cache_bytes = 65536
                index_interval_bytes = 8192
                retention_bytes = 1073741824
                retention_ms = -1
                "#,
            ),
        )
        .expect("valid");
        let log = &c.log;
        assert_eq!(log.segment_bytes_max, MIB as u64);
        assert_eq!(log.segment_age_ms_max, 60_000);
        assert_eq!(log.preallocate_bytes, 0);
        assert_eq!(log.write_buffer_bytes, 256 * KIB);
        assert_eq!(log.writes_in_flight_max, 8);
        assert_eq!(log.tail_cache_bytes, 64 * KIB);
        assert_eq!(log.index_interval_bytes, 8192);
        assert_eq!(log.retention_bytes, Some(GIB as u64));
        assert_eq!(log.retention_ms, None);
    }

    #[test]
    fn partial_log_table_keeps_the_other_defaults() {
        let c = resolve(Args::default(), file("[log]\nretention_bytes = 5000\n")).expect("ok");
        let d = LogConfig::default();
        assert_eq!(c.log.retention_bytes, Some(5000));
        assert_eq!(c.log.retention_ms, d.retention_ms);
        assert_eq!(c.log.write_buffer_bytes, d.write_buffer_bytes);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        for (text, key) in [
            ("kafka_adr = \"127.0.0.1:9092\"\n", "kafka_adr"),
            ("[log]\nretention_hours = 5\n", "retention_hours"),
            ("[logs]\nretention_ms = 5\n", "logs"),
        ] {
            let err = FileConfig::parse(Path::new("node.toml"), text).expect_err("refused");
            assert!(
                matches!(&err, ConfigError::Parse { path, .. } if path == Path::new("node.toml"))
            );
            let msg = err.to_string();
            assert!(msg.contains(key), "{msg}");
            assert!(msg.contains("node.toml"), "{msg}");
        }
    }

    #[test]
    fn wrongly_typed_keys_are_refused() {
        let err = FileConfig::parse(Path::new("n.toml"), "node_id = \"one\"\n").expect_err("bad");
        assert!(err.to_string().contains("node_id"), "{err}");
        let err = FileConfig::parse(Path::new("n.toml"), "cores = true\n").expect_err("bad");
        assert!(err.to_string().contains("cores"), "{err}");
        let err = FileConfig::parse(Path::new("n.toml"), "admin_addr = 9644\n").expect_err("bad");
        assert!(err.to_string().contains("admin_addr"), "{err}");
    }

    #[test]
    fn missing_config_file_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent.toml");
        let args = Args {
            config: Some(path.clone()),
            ..Args::default()
        };
        let err = NodeConfig::from_args(args).expect_err("no such file");
        assert!(matches!(&err, ConfigError::Io { path: p, .. } if *p == path));
        assert!(err.to_string().contains("absent.toml"), "{err}");
    }

    #[test]
    fn config_file_is_read_from_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "node_id = 5\ncores = 3\n").expect("write");
        let args = Args {
            config: Some(path),
            ..Args::default()
        };
        let c = NodeConfig::from_args(args).expect("valid");
        assert_eq!(c.node_id, 5);
        assert_eq!(c.cores, Cores::Count(3));
    }

    #[test]
    fn bad_port_names_the_field_and_the_fix() {
        let msg = error_of(resolve_flags(&["--kafka-addr", "localhost:99999"]));
        assert_eq!(
            msg,
            "invalid config: kafka_addr = \"localhost:99999\": expected HOST:PORT with a port \
             1-65535, e.g. 127.0.0.1:9092"
        );
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            ":9092",
            "127.0.0.1:http",
            "::1:9092",
            "[::1:9092",
            "",
        ] {
            assert_invalid(resolve_flags(&["--kafka-addr", bad]), "kafka_addr");
        }
        assert_invalid(
            resolve_flags(&["--advertised-kafka-addr", "broker:70000"]),
            "advertised_kafka_addr",
        );
        let msg = error_of(resolve_flags(&["--admin-addr", "9644"]));
        assert_eq!(
            msg,
            "invalid config: admin_addr = \"9644\": expected HOST:PORT with a port 0-65535 \
             (0: any free port), e.g. 0.0.0.0:9644 or 127.0.0.1:0, or none to turn the admin \
             server off"
        );
        for bad in [
            "127.0.0.1",
            ":9644",
            "127.0.0.1:65536",
            "127.0.0.1:-1",
            "127.0.0.1:metrics",
            "::1:9644",
            "[::1:9644",
            "off",
            "",
            "no-such-host.invalid:9644",
        ] {
            assert_invalid(resolve_flags(&["--admin-addr", bad]), "admin_addr");
        }
        assert_invalid(
            resolve(Args::default(), file("admin_addr = \"nowhere\"\n")),
            "admin_addr",
        );
    }

    #[test]
    fn admin_addr_takes_any_port_a_name_or_none() {
        let addr = |text: &str| {
            resolve_flags(&["--admin-addr", text])
                .unwrap_or_else(|e| panic!("{text}: {e}"))
                .admin_addr
        };
        let sock = |text: &str| Some(text.parse::<SocketAddr>().expect("addr"));
        assert_eq!(addr("127.0.0.1:0"), sock("127.0.0.1:0"), "0: any free port");
        assert_eq!(addr(" 0.0.0.0:9645 "), sock("0.0.0.0:9645"));
        assert_eq!(addr("[::]:9644"), sock("[::]:9644"));
        for none in ["none", "NONE", " None "] {
            assert_eq!(addr(none), None, "{none:?}");
        }
        let resolved = addr("localhost:9644").expect("enabled");
        assert!(resolved.ip().is_loopback(), "{resolved}");
        assert_eq!(resolved.port(), 9644);
        let c = resolve(Args::default(), file("admin_addr = \"none\"\n")).expect("valid");
        assert_eq!(c.admin_addr, None);
        // Port 0 never collides with the Kafka listener, nor do other addresses or
        // the other family's wildcard.
        for ok in [
            ["127.0.0.1:9092", "0.0.0.0:0"],
            ["127.0.0.1:9092", "127.0.0.2:9092"],
            ["[::1]:9092", "0.0.0.0:9092"],
        ] {
            resolve_flags(&["--kafka-addr", ok[0], "--admin-addr", ok[1]])
                .unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    #[test]
    fn cores_affinity_pins_a_shard_to_each_cpu_of_the_mask() {
        // The test thread's own mask, as the kernel lists it (e.g. "0-3,8").
        let status = std::fs::read_to_string("/proc/thread-self/status")
            .or_else(|_| std::fs::read_to_string("/proc/self/status"))
            .expect("read /proc status");
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list")
            .trim();
        let want: Vec<usize> = list
            .split(',')
            .flat_map(|part| {
                let (lo, hi) = parse_cpu_range(part).expect("kernel CPU list");
                lo..=hi
            })
            .collect();
        assert!(!want.is_empty());
        assert_eq!(affinity_cpus().expect("sched_getaffinity"), want);
        let want = Cores::Pinned(want.into_iter().take(SHARDS_MAX).collect());
        if want.shard_count() == SHARDS_MAX {
            return; // A huge machine: "affinity" refuses the mask, checked below.
        }
        // The flag (and so STRAND_CORES), any case.
        for text in ["affinity", " Affinity "] {
            let c = resolve_flags(&["--cores", text]).expect(text);
            assert_eq!(c.cores, want, "{text}");
        }
        // The file, beaten by the flag.
        let c = resolve(Args::default(), file("cores = \"affinity\"\n")).expect("valid");
        assert_eq!(c.cores, want);
        let args = Args {
            cores: Some("2".into()),
            ..Args::default()
        };
        let c = resolve(args, file("cores = \"affinity\"\n")).expect("valid");
        assert_eq!(c.cores, Cores::Count(2));
    }

    #[test]
    fn cores_affinity_sorts_the_mask_and_refuses_what_it_cannot_use() {
        let machine = |affinity: fn() -> io::Result<Vec<usize>>| Machine {
            affinity,
            ..MACHINE
        };
        let with = |affinity| {
            let args = parse(&["--cores", "affinity"]);
            NodeConfig::resolve(args, FileConfig::default(), machine(affinity))
        };
        // CPUs beyond cpus_configured are the kernel's word, not checked against it.
        let c = with(|| Ok(vec![9, 3, 4])).expect("valid");
        assert_eq!(c.cores, Cores::Pinned(vec![3, 4, 9]));

        let msg = error_of(with(|| Err(io::Error::from_raw_os_error(libc::EPERM))));
        assert!(
            msg.starts_with("invalid config: cores = \"affinity\": cannot read this process's CPU affinity mask ("),
            "{msg}"
        );
        assert!(msg.contains("a shard count such as 4"), "{msg}");
        assert!(msg.contains("a CPU list such as 0-3"), "{msg}");
        assert_invalid(
            with(|| Err(io::Error::from_raw_os_error(libc::EPERM))),
            "cores",
        );
        assert_invalid(with(|| Ok(Vec::new())), "cores");
        let msg = error_of(with(|| Ok((0..SHARDS_MAX + 1).collect())));
        assert!(msg.contains("257 CPUs"), "{msg}");
    }

    #[test]
    fn listen_addresses_resolve() {
        let c = resolve_flags(&["--kafka-addr", "localhost:9092"]).expect("localhost resolves");
        assert!(c.kafka_addr.ip().is_loopback());
        assert_eq!(c.kafka_addr.port(), 9092);
        assert_eq!(c.advertised_kafka_addr, ("localhost".to_string(), 9092));

        let c = resolve_flags(&["--kafka-addr", "[::1]:9092"]).expect("IPv6 literal");
        assert_eq!(
            c.kafka_addr,
            "[::1]:9092".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(c.advertised_kafka_addr, ("::1".to_string(), 9092));

        let err = resolve_flags(&["--kafka-addr", "no-such-host.invalid:9092"]);
        assert_invalid(err, "kafka_addr");
    }

    #[test]
    fn unspecified_listen_address_needs_an_advertised_one() {
        for listen in ["0.0.0.0:9092", "[::]:9092"] {
            let err = resolve_flags(&["--kafka-addr", listen]).expect_err("refused");
            assert!(
                matches!(&err, ConfigError::Missing { field, .. } if field == "advertised_kafka_addr")
            );
            let msg = err.to_string();
            assert!(msg.contains("advertised_kafka_addr"), "{msg}");
            assert!(msg.contains("--advertised-kafka-addr"), "{msg}");

            let c = resolve_flags(&["--kafka-addr", listen, "--advertised-kafka-addr", "h:9"])
                .expect("explicit advertised address");
            assert_eq!(c.advertised_kafka_addr, ("h".to_string(), 9));
        }
        assert_invalid(
            resolve_flags(&["--advertised-kafka-addr", "0.0.0.0:9092"]),
            "advertised_kafka_addr",
        );
    }

    #[test]
    fn cores_parse_as_count_or_cpu_list() {
        let cases: [(&str, Cores); 6] = [
            ("4", Cores::Count(4)),
            ("256", Cores::Count(256)),
            ("0-3", Cores::Pinned(vec![0, 1, 2, 3])),
            ("0,2,4-5", Cores::Pinned(vec![0, 2, 4, 5])),
            ("3-3", Cores::Pinned(vec![3])),
            (" 7 , 1 - 2 ", Cores::Pinned(vec![7, 1, 2])),
        ];
        for (text, want) in cases {
            let got = Cores::parse("cores", text, 8).expect(text);
            assert_eq!(got, want, "{text}");
        }
        assert_eq!(Cores::Count(4).shard_count(), 4);
        assert_eq!(Cores::Pinned(vec![0, 2, 4, 5]).shard_count(), 4);
    }

    #[test]
    fn cores_display_parses_back() {
        for cores in [
            Cores::Count(3),
            Cores::Pinned(vec![0, 1, 2, 3]),
            Cores::Pinned(vec![0, 2, 4, 5, 7]),
            Cores::Pinned(vec![5]),
        ] {
            let text = cores.to_string();
            assert_eq!(
                Cores::parse("cores", &text, 8).expect(&text),
                cores,
                "{text}"
            );
        }
        assert_eq!(Cores::Pinned(vec![0, 2, 4, 5, 7]).to_string(), "0,2,4-5,7");
        assert_eq!(Cores::Pinned(vec![5]).to_string(), "5-5");
    }

    #[test]
    fn bad_cores_name_the_field() {
        for bad in [
            "0",
            "257",
            "",
            "a",
            "1-",
            "3-1",
            "0,,1",
            "0-8",
            "8-9",
            "1,1",
            "0-2,2",
            "0-99999999999999999999",
        ] {
            let result = resolve_flags(&["--cores", bad]);
            assert_invalid(result, "cores");
        }
        let msg = error_of(resolve_flags(&["--cores", "0-8"]));
        assert!(msg.contains("CPU 8 does not exist"), "{msg}");
        let msg = error_of(resolve_flags(&["--cores", "1,0-2"]));
        assert!(msg.contains("CPU 1 is listed twice"), "{msg}");
        assert_invalid(resolve_flags(&["--cores=-1"]), "cores");
        assert_invalid(resolve(Args::default(), file("cores = -2\n")), "cores");
        assert_invalid(
            resolve(Args::default(), file("data_dir = \"\"\n")),
            "data_dir",
        );
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let cases: [(&[&str], &str); 20] = [
            // The admin server on the Kafka listener's port.
            (&["--admin-addr", "127.0.0.1:9092"], "admin_addr"),
            (
                &[
                    "--kafka-addr",
                    "127.0.0.1:9000",
                    "--admin-addr",
                    "0.0.0.0:9000",
                ],
                "admin_addr",
            ),
            (
                &[
                    "--kafka-addr",
                    "127.0.0.1:9000",
                    "--admin-addr",
                    "[::]:9000",
                ],
                "admin_addr",
            ),
            (&["--node-id", "2147483648"], "node_id"),
            (&["--cluster-id", ""], "cluster_id"),
            (&["--cluster-id", "has space"], "cluster_id"),
            (&["--default-partitions", "0"], "default_partitions"),
            (&["--max-message-bytes", "100"], "max_message_bytes"),
            (
                &[
                    "--max-message-bytes",
                    "2097152",
                    "--request-bytes-max",
                    "1048576",
                ],
                "max_message_bytes",
            ),
            (&["--connections-max", "0"], "connections_max"),
            (&["--io-memory-bytes", "4096"], "io_memory_bytes"),
            (
                &["--offsets-topic-partitions", "0"],
                "offsets_topic_partitions",
            ),
            (
                &["--offsets-topic-partitions", "1001"],
                "offsets_topic_partitions",
            ),
            (
                &["--group-initial-rebalance-delay-ms", "300001"],
                "group_initial_rebalance_delay_ms",
            ),
            (
                &["--group-min-session-timeout-ms", "0"],
                "group_min_session_timeout_ms",
            ),
            (
                &["--group-min-session-timeout-ms", "3600001"],
                "group_min_session_timeout_ms",
            ),
            (
                &["--group-max-session-timeout-ms", "0"],
                "group_max_session_timeout_ms",
            ),
            (
                &["--group-max-session-timeout-ms", "3600001"],
                "group_max_session_timeout_ms",
            ),
            // Below the default minimum (6000).
            (
                &["--group-max-session-timeout-ms", "5000"],
                "group_max_session_timeout_ms",
            ),
            (
                &[
                    "--group-min-session-timeout-ms",
                    "60000",
                    "--group-max-session-timeout-ms",
                    "30000",
                ],
                "group_max_session_timeout_ms",
            ),
        ];
        for (argv, field) in cases {
            assert_invalid(resolve_flags(argv), field);
        }
    }

    #[test]
    fn group_settings_accept_their_bounds() {
        let c = resolve_flags(&[
            "--offsets-topic-partitions",
            "1",
            "--group-initial-rebalance-delay-ms",
            "0",
            "--group-min-session-timeout-ms",
            "1",
            "--group-max-session-timeout-ms",
            "1",
        ])
        .expect("lower bounds are valid");
        assert_eq!(c.groups.offsets_partitions, 1);
        assert_eq!(c.groups.initial_rebalance_delay_ms, 0);
        assert_eq!(c.groups.min_session_timeout_ms, 1);
        assert_eq!(c.groups.max_session_timeout_ms, 1);
        let c = resolve_flags(&[
            "--offsets-topic-partitions",
            "1000",
            "--group-initial-rebalance-delay-ms",
            "300000",
            "--group-min-session-timeout-ms",
            "3600000",
            "--group-max-session-timeout-ms",
            "3600000",
        ])
        .expect("upper bounds are valid");
        assert_eq!(c.groups.offsets_partitions, 1000);
        assert_eq!(c.groups.initial_rebalance_delay_ms, 300_000);
        assert_eq!(c.groups.min_session_timeout_ms, 3_600_000);
        assert_eq!(c.groups.max_session_timeout_ms, 3_600_000);
    }

    #[test]
    fn group_errors_name_the_field_and_the_fix() {
        let msg = error_of(resolve_flags(&["--offsets-topic-partitions", "0"]));
        assert_eq!(
            msg,
            "invalid config: offsets_topic_partitions = \"0\": use a value between 1 and 1000"
        );
        let msg = error_of(resolve(
            Args::default(),
            file("group_initial_rebalance_delay_ms = 400000\n"),
        ));
        assert_eq!(
            msg,
            "invalid config: group_initial_rebalance_delay_ms = \"400000\": use a value \
             between 0 and 300000"
        );
        // The maximum below the minimum names both fields and how to fix either.
        let result = resolve(
            Args::default(),
            file("group_min_session_timeout_ms = 10000\ngroup_max_session_timeout_ms = 9000\n"),
        );
        let msg = error_of(result);
        assert!(
            msg.starts_with("invalid config: group_max_session_timeout_ms = \"9000\": "),
            "{msg}"
        );
        assert!(
            msg.contains("group_min_session_timeout_ms (10000)"),
            "{msg}"
        );
        assert!(msg.contains("use at least"), "{msg}");
        let err = FileConfig::parse(Path::new("n.toml"), "group_max_session_timeout_ms = -1\n")
            .expect_err("negative");
        assert!(
            err.to_string().contains("group_max_session_timeout_ms"),
            "{err}"
        );
    }

    #[test]
    fn log_errors_name_the_log_field() {
        let result = resolve(Args::default(), file("[log]\nwrite_buffer_bytes = 1000\n"));
        assert_invalid(result, "log.write_buffer_bytes");
        let result = resolve(Args::default(), file("[log]\nretention_ms = -5\n"));
        assert_invalid(result, "log.retention_ms");
        let msg = error_of(resolve(
            Args::default(),
            file("[log]\nsegment_bytes_max = 10\n"),
        ));
        assert!(
            msg.starts_with("invalid config: log.segment_bytes_max = \"10\": "),
            "{msg}"
        );
    }

    #[test]
    fn cluster_membership_is_parsed_and_checked() {
        let c = resolve_flags(&[
            "--node-id",
            "2",
            "--peers",
            "3@10.0.0.3:9093, 1@strand-1.strand:9093,2@[::1]:9093",
            "--tls-dir",
            "/etc/strand/tls",
        ])
        .expect("valid cluster");
        assert!(c.is_cluster());
        assert_eq!(
            c.peers.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![1, 2, 3],
            "sorted by id"
        );
        assert_eq!(c.peers[0].host, "strand-1.strand");
        assert_eq!(c.peers[1].host, "::1");
        assert_eq!(c.default_replication_factor, 3, "min(3, members)");
        assert_eq!(
            c.peers_text(),
            "1@strand-1.strand:9093,2@[::1]:9093,3@10.0.0.3:9093"
        );
        let two = |extra: &[&str]| {
            let mut argv = vec!["--node-id", "1", "--peers", "1@h:1,2@h:2"];
            argv.extend_from_slice(extra);
            resolve_flags(&argv)
        };
        // Missing TLS names the flag and how to make certificates.
        let e = error_of(two(&[]));
        assert!(e.contains("tls_dir") && e.contains("strand cert"), "{e}");
        assert_invalid(
            two(&["--tls-dir", "d", "--default-replication-factor", "3"]),
            "default_replication_factor",
        );
        assert_invalid(
            two(&["--tls-dir", "d", "--election-timeout-ms", "5"]),
            "election_timeout_ms",
        );
        // This node must be a member.
        assert_invalid(
            resolve_flags(&["--node-id", "9", "--peers", "1@h:1,2@h:2", "--tls-dir", "d"]),
            "peers",
        );
        for bad in ["1@h:1,1@h:2", "x@h:1", "1h:1", "1@h", "1@h:0", "1@:5"] {
            assert_invalid(
                resolve_flags(&["--node-id", "1", "--peers", bad, "--tls-dir", "d"]),
                "peers",
            );
        }
        assert_invalid(
            resolve_flags(&["--replication-addr", "nowhere"]),
            "replication_addr",
        );
        // A single node needs none of it.
        let single = resolve_flags(&[]).expect("defaults");
        assert!(!single.is_cluster());
        assert_eq!(single.default_replication_factor, 1);
    }

    #[test]
    fn describe_lists_every_setting() {
        // Key and value of each line, whatever the column width.
        let rows = |c: &NodeConfig| -> Vec<(String, String)> {
            c.describe()
                .lines()
                .skip(1)
                .filter_map(|l| l.trim().split_once("  "))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect()
        };
        let c = resolve_flags(&["--cores", "0-1,4"]).expect("valid");
        let got = rows(&c);
        assert_eq!(got.len(), 33, "one line per setting: {got:?}");
        for (key, value) in [
            ("kafka_addr", "127.0.0.1:9092"),
            ("admin_addr", "0.0.0.0:9644"),
            ("advertised_kafka_addr", "127.0.0.1:9092"),
            ("cores", "3 shards pinned to CPUs 0-1,4"),
            ("data_dir", "./strand-data"),
            ("max_message_bytes", "1048588 bytes (1.0 MiB)"),
            ("io_memory_bytes", "16 MiB per shard"),
            ("log.retention_ms", "7 d"),
            ("log.retention_bytes", "none"),
            ("disk_profile", "none"),
            ("log.write_buffer_bytes", "1 MiB (default)"),
            ("log.writes_in_flight_max", "4 (default)"),
            ("offsets_topic_partitions", "16"),
            ("group_initial_rebalance_delay_ms", "3000"),
            ("group_min_session_timeout_ms", "6000"),
            ("group_max_session_timeout_ms", "1800000"),
        ] {
            assert!(
                got.contains(&(key.to_string(), value.to_string())),
                "missing {key} = {value} in {got:?}"
            );
        }
        let c = resolve_flags(&["--kafka-addr", "[::1]:9092"]).expect("valid");
        let want = (
            "advertised_kafka_addr".to_string(),
            "[::1]:9092".to_string(),
        );
        assert!(rows(&c).contains(&want));
        for (flag, want) in [
            ("none", "none (no admin server)"),
            ("127.0.0.1:0", "127.0.0.1:0 (any free port)"),
        ] {
            let c = resolve_flags(&["--admin-addr", flag]).expect("valid");
            let want = ("admin_addr".to_string(), want.to_string());
            assert!(rows(&c).contains(&want), "{flag}: {:?}", rows(&c));
        }
    }

    /// A profile as `strand disk probe --out` writes it (measurements trimmed).
    fn profile_json(schema_version: u32, buffer: u64, in_flight: u64) -> String {
        format!(
            r#"{{
  "schema_version": {schema_version},
  "path": "/var/lib/strand",
  "device": "/dev/nvme0n1",
  "sequential": [],
  "fdatasync": {{ "samples": 10, "p50_us": 40, "p99_us": 90, "max_us": 120 }},
  "sequential_write_bytes_per_sec": 2000000000,
  "recommended_write_buffer_bytes": {buffer},
  "recommended_writes_in_flight": {in_flight}
}}"#
        )
    }

    fn write_profile(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write profile");
        path
    }

    fn with_profile(path: &Path, extra_flags: &[&str]) -> Result<NodeConfig, ConfigError> {
        let path = path.to_str().expect("utf-8 path");
        let argv: Vec<&str> = ["--disk-profile", path]
            .into_iter()
            .chain(extra_flags.iter().copied())
            .collect();
        resolve_flags(&argv)
    }

    #[test]
    fn disk_profile_sizes_the_writes_not_set_in_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_profile(&dir, "disk.json", &profile_json(1, 256 * 1024, 8));
        let c = with_profile(&path, &[]).expect("valid");
        assert_eq!(c.disk_profile.as_deref(), Some(path.as_path()));
        assert_eq!(c.log.write_buffer_bytes, 256 * KIB);
        assert_eq!(c.log.writes_in_flight_max, 8);
        assert_eq!(
            c.write_sizing,
            WriteSizing {
                write_buffer_bytes: SizingSource::DiskProfile {
                    recommended: 256 * 1024
                },
                writes_in_flight_max: SizingSource::DiskProfile { recommended: 8 },
            }
        );
        let text = c.describe();
        assert!(text.contains("256 KiB (disk profile)"), "{text}");
        assert!(text.contains("8 (disk profile)"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");

        // From the file's `disk_profile` key too.
        let toml = format!("disk_profile = {:?}\n", path.display().to_string());
        let c = resolve(Args::default(), file(&toml)).expect("valid");
        assert_eq!(c.log.write_buffer_bytes, 256 * KIB);
    }

    #[test]
    fn settings_in_the_file_beat_the_disk_profile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_profile(&dir, "disk.json", &profile_json(1, 256 * 1024, 8));
        let toml = format!(
            "disk_profile = {:?}\n[log]\nwrite_buffer_bytes = 131072\n",
            path.display().to_string()
        );
        let c = resolve(Args::default(), file(&toml)).expect("valid");
        assert_eq!(c.log.write_buffer_bytes, 128 * KIB);
        assert_eq!(c.write_sizing.write_buffer_bytes, SizingSource::ConfigFile);
        assert_eq!(c.log.writes_in_flight_max, 8);
        let text = c.describe();
        assert!(text.contains("128 KiB (config file)"), "{text}");

        let toml = format!(
            "disk_profile = {:?}\n[log]\nwrite_buffer_bytes = 131072\nwrites_in_flight_max = 2\n",
            path.display().to_string()
        );
        let c = resolve(Args::default(), file(&toml)).expect("valid");
        assert_eq!(c.log.write_buffer_bytes, 128 * KIB);
        assert_eq!(c.log.writes_in_flight_max, 2);
        assert_eq!(
            c.write_sizing.writes_in_flight_max,
            SizingSource::ConfigFile
        );
    }

    #[test]
    fn the_disk_profile_flag_beats_the_file_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = write_profile(&dir, "good.json", &profile_json(1, 512 * 1024, 2));
        let toml = format!(
            "disk_profile = {:?}\n",
            dir.path().join("absent.json").display().to_string()
        );
        let args = Args {
            disk_profile: Some(good.clone()),
            ..Args::default()
        };
        let c = resolve(args, file(&toml)).expect("the flag's profile is read, not the file's");
        assert_eq!(c.disk_profile, Some(good));
        assert_eq!(c.log.write_buffer_bytes, 512 * KIB);
    }

    #[test]
    fn disk_profile_is_fitted_to_bounds_and_io_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 1 MiB × (2 × 32 + 1) is more than the default 16 MiB of I/O memory.
        let path = write_profile(&dir, "deep.json", &profile_json(1, 1024 * 1024, 32));
        let c = with_profile(&path, &[]).expect("valid");
        assert_eq!(c.log.write_buffer_bytes, MIB);
        assert_eq!(c.log.writes_in_flight_max, 7);
        assert!(c.log.write_buffer_bytes * (2 * c.log.writes_in_flight_max + 1) <= 16 * MIB);
        let text = c.describe();
        assert!(
            text.contains(
                "7 (disk profile recommends 32, fitted to the bounds and io_memory_bytes)"
            ),
            "{text}"
        );

        // The smallest I/O memory: one write in flight, a smaller buffer.
        let c = with_profile(&path, &["--io-memory-bytes", "1048576"]).expect("valid");
        assert_eq!(c.log.writes_in_flight_max, 1);
        assert_eq!(c.log.write_buffer_bytes, 340 * KIB);
        assert!(c.log.write_buffer_bytes * 3 <= MIB);

        // Tiny and huge recommendations are clamped.
        let path = write_profile(&dir, "tiny.json", &profile_json(1, 4096, 1000));
        let c = with_profile(&path, &[]).expect("valid");
        assert_eq!(c.log.write_buffer_bytes, 64 * KIB);
        assert_eq!(c.log.writes_in_flight_max, 32);
        let path = write_profile(&dir, "huge.json", &profile_json(1, 1 << 40, 1));
        let c = with_profile(&path, &[]).expect("valid");
        assert_eq!(c.log.write_buffer_bytes, 16 * MIB / 3 / 4096 * 4096);
        assert_eq!(c.log.writes_in_flight_max, 1);

        // A buffer set in the file is never shrunk, even when it leaves no room.
        let toml = format!(
            "disk_profile = {:?}\n[log]\nwrite_buffer_bytes = 8388608\n",
            path.display().to_string()
        );
        let c = resolve(Args::default(), file(&toml)).expect("valid");
        assert_eq!(c.log.write_buffer_bytes, 8 * MIB);
        assert_eq!(c.log.writes_in_flight_max, 1);
    }

    #[test]
    fn a_bad_disk_profile_names_the_field_and_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            ("absent.json", None),
            (
                "corrupt.json",
                Some("{\"schema_version\": 1, \"recomm".to_string()),
            ),
            ("empty.json", Some(String::new())),
            ("not-profile.json", Some("{\"node_id\": 3}".to_string())),
            ("future.json", Some(profile_json(2, 65536, 4))),
            ("zero.json", Some(profile_json(1, 0, 4))),
            ("unaligned.json", Some(profile_json(1, 5000, 4))),
            ("no-writes.json", Some(profile_json(1, 65536, 0))),
        ];
        for (name, text) in cases {
            let path = match text {
                Some(text) => write_profile(&dir, name, &text),
                None => dir.path().join(name),
            };
            let result = with_profile(&path, &[]);
            let msg = error_of(result);
            assert!(
                msg.starts_with("invalid config: disk_profile = "),
                "{name}: {msg}"
            );
            assert!(msg.contains(name), "{name}: {msg}");
            assert!(msg.contains("strand disk probe"), "{name}: {msg}");
            assert_invalid(with_profile(&path, &[]), "disk_profile");
        }
    }
}
