//! What a run does: the workload settings, shared by `strand-bench run` and the suite.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;

/// One benchmark run's workload. Every field is recorded in `summary.json`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct Workload {
    /// Kafka bootstrap address(es), `HOST:PORT[,HOST:PORT...]`. Ignored with --embedded.
    #[arg(long, default_value = "127.0.0.1:9092", env = "STRAND_BENCH_BOOTSTRAP")]
    pub bootstrap: String,

    /// Start a Strand node in this process on a temporary data directory and benchmark it.
    #[arg(long)]
    pub embedded: bool,

    /// Shards of the embedded node (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub embedded_shards: Option<usize>,

    /// Where the embedded node's temporary data directory goes (default: the system
    /// temporary directory, or `.` when that is tmpfs).
    #[arg(long, value_name = "DIR")]
    pub embedded_dir: Option<PathBuf>,

    /// Topic name; with --topics N > 1 the topics are NAME-0 .. NAME-(N-1).
    #[arg(long, default_value = "strand-bench")]
    pub topic: String,

    /// Number of topics.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub topics: u32,

    /// Partitions per topic (used when the bench creates the topics).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=100_000))]
    pub partitions: i32,

    /// Replication factor of the topics the bench creates.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i16).range(1..=16))]
    pub replication_factor: i16,

    /// Do not create missing topics: fail instead.
    #[arg(long)]
    pub no_create: bool,

    /// Producer connections, each with its own thread.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub producers: u32,

    /// Consumers (each reads a share of the partitions from the end of the log and
    /// records end-to-end latency). 0 for none.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub consumers: u32,

    /// Message value size (e.g. 1KiB, 100, 64KiB). At least 8 bytes: the first 8 carry
    /// the intended send time.
    #[arg(long, default_value = "1KiB", value_parser = parse_bytes)]
    pub message_size: Bytes,

    /// Give each message a key (`key-N`, N cycling over --key-count); partition by a hash
    /// of the key. Unkeyed messages fill one partition's batch, then move on (sticky).
    #[arg(long)]
    pub keyed: bool,

    /// Distinct keys with --keyed.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub key_count: u64,

    /// Largest record batch per partition.
    #[arg(long, default_value = "64KiB", value_parser = parse_bytes)]
    pub batch_size: Bytes,

    /// How long a batch may wait for more messages before it is sent (5 ms: the Java
    /// client's and librdkafka's default).
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub linger: Millis,

    /// Produce requests in flight per producer connection (as max.in.flight).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_in_flight: u32,

    /// acks: 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: Acks,

    /// Batch compression.
    #[arg(long, default_value = "none")]
    pub compression: Codec,

    /// Target rate in messages per second over all producers (open loop: latency is
    /// measured from each message's intended send time). Without it the producers run
    /// as fast as the cluster acknowledges (closed loop).
    #[arg(long, value_name = "MSG_PER_SEC")]
    pub rate: Option<f64>,

    /// Measured time (after the warm-up).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Millis,

    /// Time run but not measured, before the measurement starts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Millis,

    /// Directory for summary.json, the .hgrm files, the interval logs and the plot.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// A name for this run in the summary and the plot.
    #[arg(long, default_value = "run")]
    pub label: String,

    /// No progress line every second.
    #[arg(long)]
    pub quiet: bool,
}

impl Workload {
    /// The defaults of the command line, for workloads built in code (the suite).
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            workload: Workload,
        }
        match <Defaults as clap::Parser>::try_parse_from(["strand-bench"]) {
            Ok(d) => d.workload,
            // Every field has a default; the test below keeps it so.
            Err(e) => unreachable!("the workload defaults do not parse: {e}"),
        }
    }

    /// The topic names this workload uses.
    pub fn topic_names(&self) -> Vec<String> {
        if self.topics == 1 {
            vec![self.topic.clone()]
        } else {
            (0..self.topics)
                .map(|i| format!("{}-{i}", self.topic))
                .collect()
        }
    }

    /// Checks what clap cannot: combinations and ranges that need the whole picture.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        if self.message_size.0 < TIMESTAMP_BYTES {
            bail!(
                "--message-size {} is too small: each message carries its 8-byte send time; \
                 use at least 8",
                self.message_size
            );
        }
        if self.batch_size.0 < self.message_size.0 {
            bail!(
                "--batch-size {} is smaller than --message-size {}: a batch holds at least \
                 one message; raise --batch-size",
                self.batch_size,
                self.message_size
            );
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("--rate {rate} must be a positive number of messages per second");
            }
            if self.producers == 0 {
                bail!("--rate needs at least one producer (--producers)");
            }
        }
        if self.producers == 0 && self.consumers == 0 {
            bail!("nothing to do: --producers and --consumers are both 0");
        }
        if self.duration.0.is_zero() {
            bail!("--duration must be longer than 0s");
        }
        if self.acks == Acks::None && self.consumers == 0 && self.rate.is_none() {
            bail!(
                "--acks 0 without a --rate and without consumers measures nothing: \
                 set --rate, or add --consumers"
            );
        }
        Ok(())
    }
}

/// The first bytes of every message value: the intended send time, nanoseconds since
/// the Unix epoch, little-endian.
pub const TIMESTAMP_BYTES: u64 = 8;

/// acks of the produce requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum Acks {
    /// No response: nothing to measure but the send.
    #[value(name = "0")]
    None,
    /// The leader has it (not necessarily durable).
    #[value(name = "1")]
    Leader,
    /// Durable (on Strand: fdatasync'd; replicated once replication exists).
    #[value(name = "all", alias = "-1")]
    All,
}

impl Acks {
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Batch compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    pub fn compression(self) -> kafka_protocol::records::Compression {
        use kafka_protocol::records::Compression;
        match self {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }
}

/// A byte count given as `1024`, `64KiB`, `1MiB`, `1KB` (= 1000), ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", b >> 20)
        } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}B")
        }
    }
}

/// A duration given as `500ms`, `10s`, `2m`, `250us`; serialized as milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Millis(#[serde(serialize_with = "as_millis")] pub Duration);

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl Millis {
    pub fn secs(s: u64) -> Self {
        Millis(Duration::from_secs(s))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

pub fn parse_bytes(text: &str) -> Result<Bytes, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size: expected e.g. 1024, 64KiB, 1MiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "`{other}` in `{text}` is not a size unit: use B, KiB, MiB, GiB, KB, MB or GB"
            ))
        }
    };
    n.checked_mul(scale)
        .map(Bytes)
        .ok_or_else(|| format!("`{text}` is too large"))
}

pub fn parse_duration(text: &str) -> Result<Millis, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: expected e.g. 500ms, 10s, 2m"))?;
    let secs = match unit.trim() {
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" | "" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "`{other}` in `{text}` is not a time unit: use us, ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(secs)
        .map(Millis)
        .map_err(|_| format!("`{text}` is not a valid duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_bytes("1024"), Ok(Bytes(1024)));
        assert_eq!(parse_bytes("64KiB"), Ok(Bytes(65536)));
        assert_eq!(parse_bytes("1kb"), Ok(Bytes(1000)));
        assert_eq!(parse_bytes("2MiB"), Ok(Bytes(2 << 20)));
        assert!(parse_bytes("12 parsecs").unwrap_err().contains("size unit"));
        assert!(parse_bytes("KiB").is_err());
        assert!(parse_bytes("99999999999999GiB")
            .unwrap_err()
            .contains("too large"));
        assert_eq!(Bytes(65536).to_string(), "64KiB");
        assert_eq!(Bytes(1000).to_string(), "1000B");
    }

    #[test]
    fn defaults_parse_and_validate() {
        let w = Workload::defaults();
        assert_eq!(w.message_size, Bytes(1024));
        assert_eq!(w.acks, Acks::All);
        w.validate().expect("the defaults are a valid workload");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(
            parse_duration("500ms"),
            Ok(Millis(Duration::from_millis(500)))
        );
        assert_eq!(parse_duration("2"), Ok(Millis(Duration::from_secs(2))));
        assert_eq!(
            parse_duration("1.5s"),
            Ok(Millis(Duration::from_millis(1500)))
        );
        assert_eq!(
            parse_duration("250us"),
            Ok(Millis(Duration::from_micros(250)))
        );
        assert!(parse_duration("3 weeks").unwrap_err().contains("time unit"));
        assert!(parse_duration("-1s").is_err());
    }
}
