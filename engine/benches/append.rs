//! Append benchmark: engine throughput and append-to-durable latency on the real
//! disk, next to a raw O_DIRECT io_uring writer of the same write sizes.
//!
//! For each batch size (16 KiB, 64 KiB, 1 MiB of ~1 KiB records):
//! - a raw writer (the `io-uring` crate, not glommio) writes the case volume
//!   sequentially into a fallocated O_DIRECT file at queue depth 1 and 4, with one
//!   `fdatasync` at the end; the better of the two is "raw disk". As a reference it
//!   also measures queue depth 1 with an `fdatasync` after every write ("QD1+sync");
//! - the engine is driven by 1 and then 4 writer tasks on one executor, all appending
//!   to the same [`Log`]; each loops `append` then `wait_durable(last_offset)` (group
//!   commit) and records the append-to-durable latency.
//!
//! The disk of a shared VM drifts by tens of percent within minutes, so each case's
//! volume is split into rounds and, per size, the raw and engine runs alternate
//! round by round; a case's throughput is its total bytes over its total time.
//!
//! The last line of output is `append_vs_disk_ratio: X.XX`: engine throughput with
//! 1 MiB batches and 4 writers divided by raw disk throughput at 1 MiB writes.
//!
//! Environment:
//! - `STRAND_BENCH_DIR`: data directory (default `<workspace>/target/bench-tmp`);
//!   must be on a real disk, not tmpfs. A fresh directory is made under it and
//!   removed at the end; every case's data is deleted before the next case.
//! - `STRAND_BENCH_BYTES`: bytes per case (default 512 MiB; suffixes K, M, G).
//! - `STRAND_BENCH_ROUNDS`: rounds each case's volume is split into (default 4; 1
//!   in a smoke run).
//! - `STRAND_BENCH_SMOKE`: `1` for a tiny run (4 MiB per case), `0` for a full run.
//!   When unset, the full volume is used under `cargo bench` (which passes
//!   `--bench`) and the smoke volume otherwise, e.g. under `cargo test --benches`.

use std::alloc::{alloc, dealloc, Layout};
use std::fmt::Display;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use io_uring::{opcode, types, IoUring};
use strand_engine::{batch, DmaStorage, Log, LogConfig};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// Batch (and raw write) sizes.
const SIZES_BYTES: [usize; 3] = [16 * KIB, 64 * KIB, MIB];
/// Concurrent writer tasks per engine case.
const WRITERS: [usize; 2] = [1, 4];
/// Bytes of each record's value: with its framing a record is about 1 KiB.
const RECORD_VALUE_BYTES: usize = 1000;
const FULL_BYTES_PER_CASE: u64 = 512 << 20;
const SMOKE_BYTES_PER_CASE: u64 = 4 << 20;
const FULL_ROUNDS: u64 = 4;
/// Queue depths of the raw writer; the better one is "raw disk".
const RAW_DEPTHS: [usize; 2] = [1, 4];
const ALIGN_BYTES: usize = 4096;
/// glommio's default I/O memory per executor, for the RLIMIT_MEMLOCK check.
const IO_MEMORY_BYTES: usize = 10 << 20;
/// Latency histogram bounds, microseconds.
const LATENCY_MAX_US: u64 = 600_000_000;

type BenchResult<T> = Result<T, String>;

/// Attach a description to an error.
trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> BenchResult<T>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> BenchResult<T> {
        self.map_err(|e| format!("{}: {e}", what()))
    }
}

#[derive(Debug, Clone)]
struct Settings {
    root: PathBuf,
    bytes_per_case: u64,
    rounds: u64,
    smoke: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "append benchmark; run with `cargo bench -p strand-engine --bench append`.\n\
             env: STRAND_BENCH_DIR, STRAND_BENCH_BYTES, STRAND_BENCH_ROUNDS, STRAND_BENCH_SMOKE \
             (see the source)"
        );
        return;
    }
    if args.iter().any(|a| a == "--list") {
        // Test runners list tests first; this program has none to list.
        return;
    }
    let settings = match settings(args.iter().any(|a| a == "--bench")) {
        Ok(s) => s,
        Err(e) => fail(&e),
    };
    let memlock = strand_engine::process::raise_memlock(1, IO_MEMORY_BYTES);
    if let Some(warning) = memlock.warning() {
        eprintln!("warning: {warning}");
    }
    let run_settings = settings.clone();
    let outcome = LocalExecutorBuilder::new(Placement::Fixed(0))
        .name("append-bench")
        .io_memory(IO_MEMORY_BYTES)
        .spawn(move || async move { run(&run_settings).await })
        .context(|| "spawning the glommio executor".into())
        .and_then(|handle| {
            handle
                .join()
                .context(|| "joining the glommio executor".into())
        })
        .and_then(|result| result);
    match outcome {
        Ok(report) => {
            print!("{report}");
            println!("append_vs_disk_ratio: {:.2}", report.headline_ratio());
        }
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("append bench failed: {message}");
    std::process::exit(1);
}

fn settings(invoked_as_bench: bool) -> BenchResult<Settings> {
    let smoke = match std::env::var("STRAND_BENCH_SMOKE").ok().as_deref() {
        Some("1") | Some("true") | Some("yes") => true,
        Some("0") | Some("false") | Some("no") => false,
        Some(other) => {
            return Err(format!(
                "STRAND_BENCH_SMOKE={other:?}: use 1 (smoke run) or 0 (full run)"
            ))
        }
        None => !invoked_as_bench,
    };
    let bytes_per_case = match std::env::var("STRAND_BENCH_BYTES") {
        Ok(v) => parse_bytes(&v).ok_or_else(|| {
            format!("STRAND_BENCH_BYTES={v:?}: use a byte count like 536870912 or 512M")
        })?,
        Err(_) if smoke => SMOKE_BYTES_PER_CASE,
        Err(_) => FULL_BYTES_PER_CASE,
    };
    let rounds = match std::env::var("STRAND_BENCH_ROUNDS") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("STRAND_BENCH_ROUNDS={v:?}: use a positive integer"))?,
        Err(_) if smoke => 1,
        Err(_) => FULL_ROUNDS,
    };
    let root = match std::env::var_os("STRAND_BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tmp"),
    };
    Ok(Settings {
        root,
        bytes_per_case,
        rounds,
        smoke,
    })
}

/// Parse `123`, `4K`, `512M`, `1G` (binary units) into bytes.
fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 10),
        (i, 'm' | 'M') => (&s[..i], 20),
        (i, 'g' | 'G') => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: u64 = digits.trim().parse().ok()?;
    let bytes = n.checked_mul(1u64 << shift)?;
    (bytes > 0).then_some(bytes)
}

/// Everything measured, printed as tables.
#[derive(Debug)]
struct Report {
    settings: Settings,
    device: Option<String>,
    raw: Vec<RawRow>,
    engine: Vec<EngineRow>,
}

#[derive(Debug)]
struct RawRow {
    size: usize,
    /// MB/s at each of `RAW_DEPTHS`, one fdatasync at the end.
    by_depth: Vec<f64>,
    /// MB/s at queue depth 1 with an fdatasync after every write.
    synced: f64,
    write_p50_us: u64,
}

impl RawRow {
    fn best(&self) -> f64 {
        self.by_depth.iter().copied().fold(0.0, f64::max)
    }
}

#[derive(Debug)]
struct EngineRow {
    size: usize,
    batch_bytes: usize,
    writers: usize,
    appends: u64,
    mb_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    device: Option<DeviceDelta>,
}

impl Report {
    fn raw_for(&self, size: usize) -> Option<&RawRow> {
        self.raw.iter().find(|r| r.size == size)
    }

    fn ratio(&self, row: &EngineRow) -> f64 {
        match self.raw_for(row.size) {
            Some(raw) if raw.best() > 0.0 => row.mb_per_s / raw.best(),
            _ => f64::NAN,
        }
    }

    /// 1 MiB batches, 4 writers, against raw disk at 1 MiB writes.
    fn headline_ratio(&self) -> f64 {
        self.engine
            .iter()
            .find(|r| r.size == MIB && r.writers == 4)
            .map_or(f64::NAN, |r| self.ratio(r))
    }
}

impl Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.settings;
        writeln!(f)?;
        writeln!(
            f,
            "append bench: {} per case in {} interleaved round(s){}, data in {}",
            human_bytes(s.bytes_per_case),
            s.rounds,
            if s.smoke { " (smoke run)" } else { "" },
            s.root.display()
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "raw disk: io_uring O_DIRECT sequential writes into a fallocated file, one \
             fdatasync at the end"
        )?;
        write!(f, "{:>8}", "size")?;
        for depth in RAW_DEPTHS {
            write!(f, " {:>11}", format!("QD{depth} MB/s"))?;
        }
        writeln!(
            f,
            " {:>13} {:>13} {:>14}",
            "raw disk MB/s", "QD1 p50 µs", "QD1+sync MB/s"
        )?;
        for r in &self.raw {
            write!(f, "{:>8}", human_bytes(r.size as u64))?;
            for mbs in &r.by_depth {
                write!(f, " {mbs:>11.1}")?;
            }
            writeln!(
                f,
                " {:>13.1} {:>13} {:>14.1}",
                r.best(),
                r.write_p50_us,
                r.synced
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "engine: Log::append + wait_durable(last_offset) per batch, ~1 KiB records, \
             writers are tasks on one executor sharing one Log"
        )?;
        writeln!(
            f,
            "{:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "size", "writers", "MB/s", "p50 µs", "p99 µs", "p999 µs", "max µs", "vs raw"
        )?;
        for r in &self.engine {
            writeln!(
                f,
                "{:>8} {:>7} {:>9.1} {:>9} {:>9} {:>9} {:>9} {:>8.2}",
                human_bytes(r.size as u64),
                r.writers,
                r.mb_per_s,
                r.p50_us,
                r.p99_us,
                r.p999_us,
                r.max_us,
                self.ratio(r)
            )?;
        }
        if let Some(device) = &self.device {
            writeln!(f)?;
            writeln!(
                f,
                "device I/O during each engine case ({device}, whole device, other \
                 processes included)"
            )?;
            writeln!(
                f,
                "{:>8} {:>7} {:>8} {:>11} {:>11} {:>8} {:>13} {:>14}",
                "size",
                "writers",
                "appends",
                "batch bytes",
                "dev writes",
                "KiB/write",
                "flushes",
                "flush/append"
            )?;
            for r in &self.engine {
                let Some(d) = &r.device else { continue };
                let kib_per_write = if d.writes > 0 {
                    d.sectors_written as f64 * 512.0 / 1024.0 / d.writes as f64
                } else {
                    0.0
                };
                let flushes = d
                    .flushes
                    .map_or_else(|| "n/a".to_string(), |n| n.to_string());
                let per_append = d.flushes.map_or_else(
                    || "n/a".to_string(),
                    |n| format!("{:.2}", n as f64 / r.appends.max(1) as f64),
                );
                writeln!(
                    f,
                    "{:>8} {:>7} {:>8} {:>11} {:>11} {:>8.1} {:>13} {:>14}",
                    human_bytes(r.size as u64),
                    r.writers,
                    r.appends,
                    r.batch_bytes,
                    d.writes,
                    kib_per_write,
                    flushes,
                    per_append
                )?;
            }
        }
        writeln!(f)?;
        Ok(())
    }
}

fn human_bytes(n: u64) -> String {
    let zeros = n.trailing_zeros();
    if n >= 1 << 30 && zeros >= 30 {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 && zeros >= 20 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && zeros >= 10 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

fn new_histogram() -> BenchResult<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).context(|| "creating a histogram".into())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

async fn run(settings: &Settings) -> BenchResult<Report> {
    std::fs::create_dir_all(&settings.root)
        .context(|| format!("creating {}", settings.root.display()))?;
    let root = std::fs::canonicalize(&settings.root)
        .context(|| format!("resolving {}", settings.root.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("append-")
        .tempdir_in(&root)
        .context(|| format!("creating a directory under {}", root.display()))?;
    let storage = Rc::new(
        DmaStorage::open(dir.path(), false)
            .await
            .context(|| format!("opening DMA storage in {}", dir.path().display()))?,
    );
    let device = BlockDevice::of(dir.path());
    let mut report = Report {
        settings: Settings {
            root: root.clone(),
            ..settings.clone()
        },
        device: device.as_ref().map(|d| d.stat_path.display().to_string()),
        raw: Vec::new(),
        engine: Vec::new(),
    };
    let value: Vec<u8> = (0..RECORD_VALUE_BYTES).map(|i| (i % 251) as u8).collect();
    let rounds = settings.rounds;
    let bytes_per_round = (settings.bytes_per_case / rounds).max(1);
    for size in SIZES_BYTES {
        let label = human_bytes(size as u64);
        let writes = (bytes_per_round / size as u64).max(1);
        let records = (size / KIB).max(1);
        let batch = Bytes::from(batch::build(1_700_000_000_000, records, &value));
        let mut raw = RAW_DEPTHS
            .iter()
            .map(|_| Tally::new())
            .collect::<BenchResult<Vec<_>>>()?;
        let mut synced = Tally::new()?;
        let mut engine = WRITERS
            .iter()
            .map(|_| Tally::new())
            .collect::<BenchResult<Vec<_>>>()?;
        for round in 1..=rounds {
            for (depth, tally) in RAW_DEPTHS.iter().zip(&mut raw) {
                eprintln!("[{round}/{rounds}] raw disk: {label} writes, queue depth {depth}");
                let path = dir.path().join(format!("raw-{size}-qd{depth}"));
                let result = raw_write(&path, size, writes, *depth, false);
                remove_file(&path)?;
                tally.add(result?, None)?;
            }
            eprintln!(
                "[{round}/{rounds}] raw disk: {label} writes, queue depth 1, fdatasync after each"
            );
            let path = dir.path().join(format!("raw-{size}-synced"));
            let result = raw_write(&path, size, writes, 1, true);
            remove_file(&path)?;
            synced.add(result?, None)?;
            for (writers, tally) in WRITERS.iter().zip(&mut engine) {
                eprintln!("[{round}/{rounds}] engine: {label} batches, {writers} writer(s)");
                let batches_per_writer = (bytes_per_round / (size * writers) as u64).max(1);
                let log_dir = dir.path().join(format!("p0-{size}-{writers}"));
                let before = device.as_ref().and_then(BlockDevice::read);
                let result = engine_case(
                    storage.clone(),
                    &log_dir,
                    &batch,
                    records as u64,
                    *writers,
                    batches_per_writer,
                )
                .await;
                let after = device.as_ref().and_then(BlockDevice::read);
                std::fs::remove_dir_all(&log_dir)
                    .context(|| format!("removing {}", log_dir.display()))?;
                let delta = before.zip(after).map(|(b, a)| a.since(&b));
                tally.add(result?, delta)?;
            }
        }
        report.raw.push(RawRow {
            size,
            by_depth: raw.iter().map(Tally::mb_per_s).collect(),
            synced: synced.mb_per_s(),
            write_p50_us: raw[0].hist.value_at_quantile(0.5),
        });
        for (writers, tally) in WRITERS.iter().zip(&engine) {
            report.engine.push(EngineRow {
                size,
                batch_bytes: batch.len(),
                writers: *writers,
                appends: tally.ops,
                mb_per_s: tally.mb_per_s(),
                p50_us: tally.hist.value_at_quantile(0.50),
                p99_us: tally.hist.value_at_quantile(0.99),
                p999_us: tally.hist.value_at_quantile(0.999),
                max_us: tally.hist.max(),
                device: tally.device,
            });
        }
    }
    let dir_path = dir.path().to_path_buf();
    dir.close()
        .context(|| format!("removing {}", dir_path.display()))?;
    Ok(report)
}

/// What one run of a writer did.
struct Run {
    bytes: u64,
    ops: u64,
    elapsed: Duration,
    /// Latency of each op, microseconds.
    hist: Histogram<u64>,
}

/// Runs of one kind of writer, summed over rounds.
struct Tally {
    bytes: u64,
    ops: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
    device: Option<DeviceDelta>,
}

impl Tally {
    fn new() -> BenchResult<Self> {
        Ok(Self {
            bytes: 0,
            ops: 0,
            elapsed: Duration::ZERO,
            hist: new_histogram()?,
            device: None,
        })
    }

    fn add(&mut self, run: Run, device: Option<DeviceDelta>) -> BenchResult<()> {
        self.bytes += run.bytes;
        self.ops += run.ops;
        self.elapsed += run.elapsed;
        self.hist
            .add(&run.hist)
            .context(|| "merging histograms".into())?;
        self.device = match (self.device, device) {
            (None, d) => d,
            (Some(a), Some(b)) => Some(a.plus(&b)),
            (Some(_), None) => None,
        };
        Ok(())
    }

    fn mb_per_s(&self) -> f64 {
        mb_per_s(self.bytes, self.elapsed)
    }
}

fn remove_file(path: &Path) -> BenchResult<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", path.display())),
    }
}

/// One engine case: `writers` tasks each append `batches_per_writer` copies of
/// `batch` to one fresh log, waiting for durability after each.
async fn engine_case(
    storage: Rc<DmaStorage>,
    dir: &Path,
    batch: &Bytes,
    records_per_batch: u64,
    writers: usize,
    batches_per_writer: u64,
) -> BenchResult<Run> {
    let log = Rc::new(
        Log::open(storage, dir, LogConfig::default())
            .await
            .context(|| format!("opening the log in {}", dir.display()))?,
    );
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let log = log.clone();
            let batch = batch.clone();
            glommio::spawn_local(async move {
                let mut hist = new_histogram()?;
                for _ in 0..batches_per_writer {
                    // What a network handler would hand over: a private, mutable copy.
                    let bytes = BytesMut::from(&batch[..]);
                    let t = Instant::now();
                    let out = log.append(bytes).await.context(|| "append".into())?;
                    log.wait_durable(out.last_offset).await.context(|| {
                        format!("waiting for offset {} to be durable", out.last_offset)
                    })?;
                    hist.saturating_record(micros(t.elapsed()));
                }
                BenchResult::Ok(hist)
            })
        })
        .collect();
    let mut hist = new_histogram()?;
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(h) => hist.add(&h).context(|| "merging histograms".into())?,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    let appends = batches_per_writer * writers as u64;
    let expected_end = appends * records_per_batch;
    let stats = log.stats();
    if stats.end_offset != expected_end || stats.durable_offset != expected_end {
        return Err(format!(
            "after {appends} appends of {records_per_batch} records the log reports {stats:?}, \
             expected end and durable offsets of {expected_end}"
        ));
    }
    // Spot-check that the last batch reads back intact.
    let last = log
        .read(expected_end - 1, 1)
        .await
        .context(|| "reading back the last batch".into())?;
    let header = last
        .first()
        .ok_or("reading back the last batch returned nothing")
        .and_then(|b| batch::validate(b).map_err(|_| "the last batch read back is corrupt"))?;
    if header.last_offset() as u64 != expected_end - 1 {
        return Err(format!(
            "the last batch read back ends at offset {}, expected {}",
            header.last_offset(),
            expected_end - 1
        ));
    }
    let log = Rc::try_unwrap(log).map_err(|_| "a writer task still holds the log".to_string())?;
    log.close().await.context(|| "closing the log".into())?;
    Ok(Run {
        bytes: appends * batch.len() as u64,
        ops: appends,
        elapsed,
        hist,
    })
}

/// A page-aligned heap buffer for O_DIRECT.
struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl AlignedBuf {
    fn new(len: usize, fill: u8) -> BenchResult<Self> {
        let layout = Layout::from_size_align(len, ALIGN_BYTES)
            .context(|| format!("layout for a {len}-byte buffer"))?;
        if len == 0 {
            return Err("zero-length buffer".into());
        }
        // SAFETY: the layout has a non-zero size (checked above).
        let raw = unsafe { alloc(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| format!("allocating {len} aligned bytes"))?;
        // SAFETY: `ptr` points to `len` freshly allocated, writable bytes.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), fill, len) };
        Ok(Self { ptr, layout })
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc` with exactly this layout and is freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// Write `writes` blocks of `size` bytes sequentially into a fresh fallocated
/// O_DIRECT file at queue depth `depth`, then fdatasync once (or, with
/// `sync_each`, after every write).
fn raw_write(
    path: &Path,
    size: usize,
    writes: u64,
    depth: usize,
    sync_each: bool,
) -> BenchResult<Run> {
    let io = |op: &'static str| move |e: io::Error| format!("{op} {}: {e}", path.display());
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(io("opening with O_DIRECT (is the directory on tmpfs?)"))?;
    let fd = file.as_raw_fd();
    let total = size as u64 * writes;
    let total_off = libc::off_t::try_from(total).context(|| "file size overflows off_t".into())?;
    // SAFETY: `fd` is an open file descriptor owned by `file`.
    if unsafe { libc::fallocate(fd, 0, 0, total_off) } != 0 {
        return Err(io("fallocating")(io::Error::last_os_error()));
    }
    // Like a freshly created segment: allocation durable before the first write.
    file.sync_all().map_err(io("syncing"))?;
    let len = u32::try_from(size).context(|| "write size overflows u32".into())?;
    let bufs = (0..depth)
        .map(|i| AlignedBuf::new(size, 0x5a ^ i as u8))
        .collect::<BenchResult<Vec<_>>>()?;
    let mut ring = IoUring::new((depth as u32 * 2).next_power_of_two())
        .map_err(io("creating an io_uring for"))?;
    let mut free: Vec<usize> = (0..depth).rev().collect();
    let mut issued_at = vec![Instant::now(); depth];
    let mut hist = new_histogram()?;
    let mut in_flight = 0usize;
    let start = Instant::now();
    let mut write_all = || -> BenchResult<()> {
        let (mut next, mut done) = (0u64, 0u64);
        while done < writes {
            while in_flight < depth && next < writes {
                let slot = free.pop().ok_or("no free raw write slot")?;
                let entry = opcode::Write::new(types::Fd(fd), bufs[slot].ptr.as_ptr(), len)
                    .offset(next * size as u64)
                    .build()
                    .user_data(slot as u64);
                // SAFETY: `bufs[slot]` holds `len` bytes and is neither touched nor
                // freed until this write's completion is reaped (on an error the
                // writes in flight are drained below before anything is freed);
                // `fd` stays open as long as `file`, which outlives the ring.
                unsafe { ring.submission().push(&entry) }
                    .map_err(|e| format!("queueing a raw write: {e}"))?;
                issued_at[slot] = Instant::now();
                in_flight += 1;
                next += 1;
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io("submitting writes to")(e)),
            }
            let completions: Vec<(usize, i32)> = ring
                .completion()
                .map(|c| (c.user_data() as usize, c.result()))
                .collect();
            for (slot, result) in completions {
                in_flight -= 1;
                if result < 0 {
                    return Err(io("writing")(io::Error::from_raw_os_error(-result)));
                }
                if result as usize != size {
                    return Err(format!(
                        "short O_DIRECT write to {}: {result} of {size} bytes",
                        path.display()
                    ));
                }
                hist.saturating_record(micros(issued_at[slot].elapsed()));
                if sync_each {
                    file.sync_data().map_err(io("syncing"))?;
                }
                free.push(slot);
                done += 1;
            }
        }
        file.sync_data().map_err(io("syncing"))
    };
    let result = write_all();
    let elapsed = start.elapsed();
    // After an error, wait out the writes still in flight before their buffers go.
    while in_flight > 0 {
        match ring.submit_and_wait(in_flight) {
            Ok(_) => in_flight -= ring.completion().count(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // The kernel may still read them: leak rather than free.
                std::mem::forget(bufs);
                break;
            }
        }
    }
    result?;
    Ok(Run {
        bytes: total,
        ops: writes,
        elapsed,
        hist,
    })
}

/// The block device holding a directory, for I/O counters.
struct BlockDevice {
    stat_path: PathBuf,
}

/// Cumulative counters from `/sys/dev/block/M:m/stat`.
#[derive(Debug, Clone, Copy)]
struct DeviceStat {
    writes: u64,
    sectors_written: u64,
    /// Field 16; absent on kernels before 5.5.
    flushes: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct DeviceDelta {
    writes: u64,
    sectors_written: u64,
    flushes: Option<u64>,
}

impl BlockDevice {
    fn of(dir: &Path) -> Option<Self> {
        let dev = std::fs::metadata(dir).ok()?.dev();
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let stat_path = PathBuf::from(format!("/sys/dev/block/{major}:{minor}/stat"));
        let device = Self { stat_path };
        device.read().map(|_| device)
    }

    fn read(&self) -> Option<DeviceStat> {
        let text = std::fs::read_to_string(&self.stat_path).ok()?;
        let fields: Vec<u64> = text
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        Some(DeviceStat {
            writes: *fields.get(4)?,
            sectors_written: *fields.get(6)?,
            flushes: fields.get(15).copied(),
        })
    }
}

impl DeviceDelta {
    fn plus(&self, other: &DeviceDelta) -> DeviceDelta {
        DeviceDelta {
            writes: self.writes + other.writes,
            sectors_written: self.sectors_written + other.sectors_written,
            flushes: self.flushes.zip(other.flushes).map(|(a, b)| a + b),
        }
    }
}

impl DeviceStat {
    fn since(&self, before: &DeviceStat) -> DeviceDelta {
        DeviceDelta {
            writes: self.writes.saturating_sub(before.writes),
            sectors_written: self.sectors_written.saturating_sub(before.sectors_written),
            flushes: self
                .flushes
                .zip(before.flushes)
                .map(|(a, b)| a.saturating_sub(b)),
        }
    }
}
