//! `strand disk probe`: measures the disk holding a directory, like Redpanda's
//! `rpk iotune`, and recommends the node's write sizing.
//!
//! What is measured, with the `io-uring` crate directly (no glommio), on a temporary
//! file inside the directory that is removed afterwards:
//! - O_DIRECT sequential writes at every block size of [`BLOCK_SIZES`] and queue depth
//!   of [`QUEUE_DEPTHS`] (combinations with more than [`IN_FLIGHT_BYTES_MAX`] in flight
//!   are skipped): bandwidth and per-write latency (submission to completion, so at a
//!   depth above 1 it includes the wait behind the other writes, as in the node);
//! - `fdatasync` after a 4 KiB write, and a 1 MiB write followed by `fdatasync`.
//!
//! Every measurement writes into a freshly created and `fallocate`d file, synced before
//! the first write, because that is what a Strand segment is (`log.preallocate_bytes`):
//! on ext4 and XFS a write into preallocated blocks also converts an unwritten extent,
//! so its cost differs from both appending to an empty file and overwriting written
//! blocks. The buffers are 4096-aligned, registered with the ring when the locked-memory
//! limit allows (then written with `WriteFixed`, else with `Write`).
//!
//! Each measurement is bounded by time and by the size of its file: about 30 s for the
//! whole probe by default, 3-5 s with `quick` (rougher numbers). tmpfs is refused: it
//! has no O_DIRECT and nothing on it is durable.

use std::alloc::{alloc, dealloc, Layout};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use io_uring::{opcode, squeue, types, IoUring};
use serde::{Deserialize, Serialize};

use crate::render;

/// The version of the [`DiskProfile`] JSON. `strand-node` checks it when it reads a
/// profile (`--disk-profile`); raise both together.
pub const SCHEMA_VERSION: u32 = 1;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// Write sizes measured, in bytes.
pub const BLOCK_SIZES: [u64; 5] = [4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, MIB];
/// Writes in flight measured.
pub const QUEUE_DEPTHS: [u32; 4] = [1, 4, 16, 32];
/// Combinations with more bytes in flight are skipped: it is the node's default
/// `io_memory_bytes` per shard, and a deeper queue of large writes only adds memory.
pub const IN_FLIGHT_BYTES_MAX: u64 = 16 * MIB;
/// A write size and queue depth is recommended once it reaches this share of the
/// best bandwidth (per cent).
pub const RECOMMEND_PERCENT: u64 = 90;

/// O_DIRECT alignment of buffers, offsets and sizes.
const ALIGN_BYTES: usize = 4096;
/// The write before each `fdatasync` of the small-sync measurement.
const SMALL_SYNC_WRITE_BYTES: u64 = 4 * KIB;
/// The write before each `fdatasync` of the large-sync measurement.
const LARGE_SYNC_WRITE_BYTES: u64 = MIB;
/// Every measurement takes at least this many samples, even past its time budget (up
/// to [`OVERTIME_FACTOR`] times it), so a slow disk still gives percentiles.
const SAMPLES_MIN: u64 = 8;
const OVERTIME_FACTOR: u32 = 4;
/// Latencies above this are recorded as this.
const LATENCY_US_MAX: u64 = 60 * 1_000_000;
/// Submission queue entries: more than the deepest queue depth.
const RING_ENTRIES: u32 = 64;
/// The probe needs at least this much free space for its file.
const FILE_BYTES_MIN: u64 = 2 * IN_FLIGHT_BYTES_MAX;

const _: () = assert!(QUEUE_DEPTHS[QUEUE_DEPTHS.len() - 1] < RING_ENTRIES);
const _: () = assert!(IN_FLIGHT_BYTES_MAX.is_multiple_of(ALIGN_BYTES as u64));
const _: () = assert!(LARGE_SYNC_WRITE_BYTES <= IN_FLIGHT_BYTES_MAX);

/// What to probe and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    /// A directory on the disk to measure (the node's data directory).
    pub dir: PathBuf,
    /// About 3-5 s in all instead of about 30 s.
    pub quick: bool,
}

/// Why a probe, or reading or writing a profile, failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "{path} is on tmpfs, which has no O_DIRECT and keeps nothing across a reboot: \
         probe a directory on the disk that holds (or will hold) the data directory"
    )]
    Tmpfs { path: PathBuf },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "not enough free space in {path}: the probe needs {needed_bytes} bytes for its \
         temporary file, {free_bytes} are free"
    )]
    NoSpace {
        path: PathBuf,
        free_bytes: u64,
        needed_bytes: u64,
    },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("short O_DIRECT write to {path}: {written} of {wanted} bytes")]
    ShortWrite {
        path: PathBuf,
        written: u64,
        wanted: u64,
    },
    #[error("cannot allocate {bytes} bytes of aligned I/O buffers")]
    Alloc { bytes: usize },
    #[error("invalid disk profile {path}: {message}")]
    Profile { path: PathBuf, message: String },
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ProbeError + 'a {
    move |source| ProbeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The result of a probe: what `strand disk probe --out FILE` writes and
/// `strand-node --disk-profile FILE` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskProfile {
    /// [`SCHEMA_VERSION`] of the program that wrote it.
    pub schema_version: u32,
    /// The version of `strand` that measured.
    pub strand_version: String,
    /// The directory probed (absolute).
    pub path: PathBuf,
    /// The mounted device, from /proc/self/mountinfo (e.g. `/dev/nvme0n1p2`), or
    /// `unknown`.
    pub device: String,
    /// `major:minor` of the file system holding `path`.
    pub device_number: String,
    /// File system type (e.g. `ext4`), or `unknown`.
    pub filesystem: String,
    /// When the probe started, in milliseconds since the Unix epoch.
    pub timestamp_unix_ms: u64,
    /// Wall time of the whole probe.
    pub duration_ms: u64,
    /// Measured in quick mode (shorter, rougher).
    pub quick: bool,
    /// The writes used buffers registered with io_uring (`WriteFixed`), as the node
    /// does when the locked-memory limit allows.
    pub fixed_buffers: bool,
    /// One entry per block size and queue depth, by block size then depth.
    pub sequential: Vec<SequentialWrite>,
    /// `fdatasync` after each 4 KiB write: the cost of a group commit at low load.
    pub fdatasync: SyncLatency,
    /// A 1 MiB write then `fdatasync`, measured from the write's submission.
    pub write_1mib_sync: SyncLatency,
    /// The best bandwidth of [`sequential`](Self::sequential) (short runs, closing
    /// fdatasync not timed: a write cache in the device or the host inflates it).
    pub burst_write_bytes_per_sec: u64,
    /// The best block size and depth again, for longer, with the closing fdatasync
    /// timed: what the disk sustains durably.
    pub sustained: SequentialWrite,
    /// The disk's physical limit for the node's writes: the sustained bandwidth.
    pub sequential_write_bytes_per_sec: u64,
    /// The node's `log.write_buffer_bytes`: see [`recommend`].
    pub recommended_write_buffer_bytes: u64,
    /// The node's `log.writes_in_flight_max`: see [`recommend`].
    pub recommended_writes_in_flight: u32,
}

/// O_DIRECT sequential writes of one size at one queue depth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequentialWrite {
    pub block_bytes: u64,
    pub queue_depth: u32,
    /// Writes completed.
    pub writes: u64,
    /// Bytes written from the first submission to the last completion.
    pub bytes_per_sec: u64,
    pub lat_p50_us: u64,
    pub lat_p99_us: u64,
    pub lat_max_us: u64,
}

/// Latency percentiles of a synced write measurement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncLatency {
    pub samples: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl DiskProfile {
    /// Reads a profile written by [`save`](Self::save) and checks its version and its
    /// recommendations.
    pub fn load(path: &Path) -> Result<Self, ProbeError> {
        let text = std::fs::read_to_string(path).map_err(io_error("read", path))?;
        let bad = |message: String| ProbeError::Profile {
            path: path.to_path_buf(),
            message,
        };
        let profile: DiskProfile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if profile.schema_version != SCHEMA_VERSION {
            return Err(bad(format!(
                "schema version {} where {SCHEMA_VERSION} is expected: run \
                 `strand disk probe` again",
                profile.schema_version
            )));
        }
        let buffer = profile.recommended_write_buffer_bytes;
        if buffer == 0 || !buffer.is_multiple_of(ALIGN_BYTES as u64) {
            return Err(bad(format!(
                "recommended_write_buffer_bytes {buffer} is not a positive multiple of \
                 {ALIGN_BYTES}"
            )));
        }
        if profile.recommended_writes_in_flight == 0 {
            return Err(bad("recommended_writes_in_flight is 0".to_string()));
        }
        Ok(profile)
    }

    /// Writes the profile as JSON, atomically: a temporary file in the same directory,
    /// synced, then renamed over `path`.
    pub fn save(&self, path: &Path) -> Result<(), ProbeError> {
        let bad = |message: String| ProbeError::Profile {
            path: path.to_path_buf(),
            message,
        };
        let name = path
            .file_name()
            .ok_or_else(|| bad("the path names no file".to_string()))?;
        let mut json = serde_json::to_string_pretty(self).map_err(|e| bad(e.to_string()))?;
        json.push('\n');
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let mut tmp_name = name.to_os_string();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = dir.join(tmp_name);
        let written = write_synced(&tmp, json.as_bytes())
            .and_then(|()| std::fs::rename(&tmp, path).map_err(io_error("rename into", path)));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        // The rename is durable once the directory is; a failure here loses nothing
        // that the caller could act on.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// A readable report: one row per block size and queue depth, then the syncs and
    /// the recommendation.
    pub fn table(&self) -> String {
        let mut out = format!(
            "disk probe of {} ({}, {}, device {}){}, {:.1} s, {} buffers\n\n",
            self.path.display(),
            self.device,
            self.filesystem,
            self.device_number,
            if self.quick { ", quick" } else { "" },
            self.duration_ms as f64 / 1000.0,
            if self.fixed_buffers {
                "registered"
            } else {
                "unregistered"
            },
        );
        let rows: Vec<Vec<String>> = self
            .sequential
            .iter()
            .map(|w| {
                vec![
                    size(w.block_bytes),
                    w.queue_depth.to_string(),
                    format!("{:.1}", w.bytes_per_sec as f64 / MIB as f64),
                    w.lat_p50_us.to_string(),
                    w.lat_p99_us.to_string(),
                    w.lat_max_us.to_string(),
                    w.writes.to_string(),
                ]
            })
            .collect();
        out.push_str(&render::table(
            &[
                "block", "depth", "MiB/s", "p50 us", "p99 us", "max us", "writes",
            ],
            &rows,
        ));
        out.push('\n');
        let sync = |label: &str, s: &SyncLatency| {
            vec![
                label.to_string(),
                s.p50_us.to_string(),
                s.p99_us.to_string(),
                s.max_us.to_string(),
                s.samples.to_string(),
            ]
        };
        out.push_str(&render::table(
            &["synced write", "p50 us", "p99 us", "max us", "samples"],
            &[
                sync(
                    "4 KiB write, then fdatasync (fdatasync only)",
                    &self.fdatasync,
                ),
                sync("1 MiB write + fdatasync", &self.write_1mib_sync),
            ],
        ));
        let _ = write!(
            out,
            "\nsequential write bandwidth: {:.1} MiB/s sustained ({} x {} for {:.1} s, \
             closing fdatasync included); {:.1} MiB/s best burst above\n\
             recommended: log.write_buffer_bytes = {} ({}), log.writes_in_flight_max = {} \
             (the fewest bytes in flight reaching {RECOMMEND_PERCENT}% of the best burst)\n",
            self.sequential_write_bytes_per_sec as f64 / MIB as f64,
            size(self.sustained.block_bytes),
            self.sustained.queue_depth,
            (self.sustained.writes * self.sustained.block_bytes) as f64
                / self.sustained.bytes_per_sec.max(1) as f64,
            self.burst_write_bytes_per_sec as f64 / MIB as f64,
            self.recommended_write_buffer_bytes,
            size(self.recommended_write_buffer_bytes),
            self.recommended_writes_in_flight,
        );
        out
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ProbeError> {
    let mut file = File::create(path).map_err(io_error("create", path))?;
    file.write_all(bytes).map_err(io_error("write", path))?;
    file.sync_all().map_err(io_error("fsync", path))
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= MIB && b.is_multiple_of(MIB) => format!("{} MiB", b / MIB),
        b if b >= KIB && b.is_multiple_of(KIB) => format!("{} KiB", b / KIB),
        b => format!("{b} B"),
    }
}

/// The block sizes and queue depths measured, by block size then depth.
pub fn combinations() -> Vec<(u64, u32)> {
    BLOCK_SIZES
        .iter()
        .flat_map(|&block| QUEUE_DEPTHS.iter().map(move |&depth| (block, depth)))
        .filter(|&(block, depth)| block * u64::from(depth) <= IN_FLIGHT_BYTES_MAX)
        .collect()
}

/// The best bandwidth, and the write size and depth recommended for the node.
///
/// Every combination reaching [`RECOMMEND_PERCENT`] of the best bandwidth is good
/// enough; of those, the one with the fewest bytes in flight (block size × depth) is
/// recommended, and on a tie the larger block (fewer writes per byte, so less CPU).
/// Bytes in flight are what the node pays for: one log holds `write_buffer_bytes ×
/// (2 × writes_in_flight_max + 1)` of DMA memory, and a larger buffer also waits longer
/// to fill at low load. Beyond the knee more memory buys little bandwidth.
///
/// Returns `(bytes_per_sec, write_buffer_bytes, writes_in_flight)`, or None when
/// `results` is empty.
pub fn recommend(results: &[SequentialWrite]) -> Option<(u64, u64, u32)> {
    let best = results.iter().map(|r| r.bytes_per_sec).max()?;
    let good_enough = |r: &&SequentialWrite| {
        u128::from(r.bytes_per_sec) * 100 >= u128::from(best) * u128::from(RECOMMEND_PERCENT)
    };
    let chosen = results.iter().filter(good_enough).min_by_key(|r| {
        (
            r.block_bytes * u64::from(r.queue_depth),
            std::cmp::Reverse(r.block_bytes),
        )
    })?;
    Some((best, chosen.block_bytes, chosen.queue_depth))
}

/// Time and size budgets of one probe.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// All sequential measurements, including creating, syncing and removing their
    /// files: each gets an equal share of what is left (see [`Plan::write_time`]).
    writes_total: Duration,
    /// The least time one block size and depth is measured for.
    write_time_min: Duration,
    /// The file of one block size and depth; bounds the bytes written.
    write_file_bytes: u64,
    small_sync_time: Duration,
    small_sync_ops_max: u64,
    large_sync_time: Duration,
    large_sync_ops_max: u64,
    sustained_time: Duration,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            // About 4 s in all.
            Plan {
                writes_total: Duration::from_millis(2_600),
                write_time_min: Duration::from_millis(40),
                write_file_bytes: 256 * MIB,
                small_sync_time: Duration::from_millis(400),
                small_sync_ops_max: 2_000,
                large_sync_time: Duration::from_millis(400),
                large_sync_ops_max: 64,
                sustained_time: Duration::from_millis(1_500),
            }
        } else {
            // About 30 s in all.
            Plan {
                writes_total: Duration::from_secs(22),
                write_time_min: Duration::from_millis(300),
                write_file_bytes: 1024 * MIB,
                small_sync_time: Duration::from_secs(3),
                small_sync_ops_max: 20_000,
                large_sync_time: Duration::from_secs(3),
                large_sync_ops_max: 512,
                sustained_time: Duration::from_secs(8),
            }
        }
    }

    /// The time to measure the next block size and depth: an equal share of what is
    /// left of `writes_left`, less the time each one has spent outside its
    /// measurement so far (files created, synced and removed; writes still in flight
    /// at the end), so that the whole phase keeps to [`Plan::writes_total`].
    fn write_time(
        &self,
        writes_left: Duration,
        combos_left: u32,
        overhead_avg: Duration,
    ) -> Duration {
        (writes_left / combos_left.max(1))
            .saturating_sub(overhead_avg)
            .max(self.write_time_min)
    }

    /// Shrinks the files to half the free space; refuses below [`FILE_BYTES_MIN`].
    fn fit(mut self, dir: &Path, free_bytes: u64) -> Result<Self, ProbeError> {
        let room = (free_bytes / 2) / MIB * MIB;
        if room < FILE_BYTES_MIN {
            return Err(ProbeError::NoSpace {
                path: dir.to_path_buf(),
                free_bytes,
                needed_bytes: FILE_BYTES_MIN * 2,
            });
        }
        self.write_file_bytes = self.write_file_bytes.min(room);
        self.small_sync_ops_max = self.small_sync_ops_max.min(room / SMALL_SYNC_WRITE_BYTES);
        self.large_sync_ops_max = self.large_sync_ops_max.min(room / LARGE_SYNC_WRITE_BYTES);
        Ok(self)
    }
}

/// Measures the disk holding `opts.dir`; see the module documentation.
pub fn run(opts: &ProbeOptions) -> Result<DiskProfile, ProbeError> {
    let started = Instant::now();
    let timestamp_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let dir = std::fs::canonicalize(&opts.dir).map_err(io_error("open", &opts.dir))?;
    let meta = std::fs::metadata(&dir).map_err(io_error("stat", &dir))?;
    if !meta.is_dir() {
        return Err(ProbeError::NotADirectory { path: dir });
    }
    if strand_engine::storage::dma::is_tmpfs(&dir).map_err(io_error("statfs", &dir))? {
        return Err(ProbeError::Tmpfs { path: dir });
    }
    let plan = Plan::new(opts.quick).fit(&dir, free_bytes(&dir)?)?;
    let mount = Mount::of(&dir, meta.dev());
    let mut rig = Rig::new(&dir)?;

    let combos = combinations();
    let mut sequential = Vec::with_capacity(combos.len());
    let writes_until = Instant::now() + plan.writes_total;
    let mut overhead = Duration::ZERO;
    for (i, &(block, depth)) in combos.iter().enumerate() {
        let begin = Instant::now();
        let done = u32::try_from(i).unwrap_or(u32::MAX);
        let time = plan.write_time(
            writes_until.saturating_duration_since(begin),
            u32::try_from(combos.len() - i).unwrap_or(u32::MAX),
            overhead.checked_div(done).unwrap_or(Duration::ZERO),
        );
        sequential.push(rig.sequential(block, depth, time, plan.write_file_bytes, false)?);
        overhead += begin.elapsed().saturating_sub(time);
    }
    let fdatasync = rig.synced_writes(
        "fdatasync",
        SMALL_SYNC_WRITE_BYTES,
        plan.small_sync_ops_max,
        plan.small_sync_time,
        false,
    )?;
    let write_1mib_sync = rig.synced_writes(
        "write-1mib-sync",
        LARGE_SYNC_WRITE_BYTES,
        plan.large_sync_ops_max,
        plan.large_sync_time,
        true,
    )?;
    let (best, buffer, depth) = recommend(&sequential).ok_or_else(|| ProbeError::Profile {
        path: dir.clone(),
        message: "no write was measured".to_string(),
    })?;
    let fastest = sequential
        .iter()
        .max_by_key(|r| r.bytes_per_sec)
        .map_or((buffer, depth), |r| (r.block_bytes, r.queue_depth));
    let sustained = rig.sequential(
        fastest.0,
        fastest.1,
        plan.sustained_time,
        plan.write_file_bytes,
        true,
    )?;
    Ok(DiskProfile {
        schema_version: SCHEMA_VERSION,
        strand_version: env!("CARGO_PKG_VERSION").to_string(),
        path: dir,
        device: mount.source,
        device_number: mount.number,
        filesystem: mount.fs_type,
        timestamp_unix_ms,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        quick: opts.quick,
        fixed_buffers: rig.fixed,
        sequential,
        fdatasync,
        write_1mib_sync,
        burst_write_bytes_per_sec: best,
        sequential_write_bytes_per_sec: sustained.bytes_per_sec,
        sustained,
        recommended_write_buffer_bytes: buffer,
        recommended_writes_in_flight: depth,
    })
}

fn free_bytes(dir: &Path) -> Result<u64, ProbeError> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
        io_error("statvfs", dir)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path holds a NUL byte",
        ))
    })?;
    // SAFETY: statvfs is plain old data; all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is a properly sized out-parameter that
    // statvfs only writes.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io_error("statvfs", dir)(io::Error::last_os_error()));
    }
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Where a directory is mounted from, best effort.
#[derive(Debug)]
struct Mount {
    source: String,
    number: String,
    fs_type: String,
}

impl Mount {
    fn of(dir: &Path, dev: u64) -> Self {
        let number = format!("{}:{}", libc::major(dev), libc::minor(dev));
        let found = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|text| Self::find(&text, dir, &number));
        let (source, fs_type) =
            found.unwrap_or_else(|| ("unknown".to_string(), "unknown".to_string()));
        Mount {
            source,
            number,
            fs_type,
        }
    }

    /// The mount with device `number` whose mount point is the longest prefix of
    /// `dir` (bind mounts list a device several times): `(source, fs type)`.
    fn find(mountinfo: &str, dir: &Path, number: &str) -> Option<(String, String)> {
        mountinfo
            .lines()
            .filter_map(|line| {
                // id parent major:minor root mount-point options [optional...] - type source super-options
                let (left, right) = line.split_once(" - ")?;
                let left: Vec<&str> = left.split(' ').collect();
                let mut right = right.split(' ');
                let (fs_type, source) = (right.next()?, right.next()?);
                let mount_point = PathBuf::from(unescape_octal(left.get(4)?));
                (*left.get(2)? == number && dir.starts_with(&mount_point)).then(|| {
                    let depth = mount_point.components().count();
                    (depth, unescape_octal(source), fs_type.to_string())
                })
            })
            .max_by_key(|(depth, _, _)| *depth)
            .map(|(_, source, fs_type)| (source, fs_type))
    }
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal.and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok()) {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A heap buffer aligned for O_DIRECT.
#[derive(Debug)]
struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
    /// Set when the kernel may still use the memory: it is then never freed.
    leaked: bool,
}

impl AlignedBuf {
    /// `len` bytes of a pseudo-random pattern (a disk or hypervisor could shortcut
    /// zeros or repeated pages).
    fn new(len: usize) -> Result<Self, ProbeError> {
        let layout = Layout::from_size_align(len, ALIGN_BYTES)
            .ok()
            .filter(|l| l.size() > 0)
            .ok_or(ProbeError::Alloc { bytes: len })?;
        // SAFETY: the layout has a non-zero size (checked above).
        let raw = unsafe { alloc(layout) };
        let ptr = NonNull::new(raw).ok_or(ProbeError::Alloc { bytes: len })?;
        let buf = AlignedBuf {
            ptr,
            layout,
            leaked: false,
        };
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        // SAFETY: `ptr` points to `len` bytes allocated above, owned by `buf` and not
        // shared with the kernel yet.
        let bytes = unsafe { std::slice::from_raw_parts_mut(buf.ptr.as_ptr(), len) };
        for chunk in bytes.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        Ok(buf)
    }

    fn len(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: `ptr` came from `alloc` with exactly this layout and is freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// A temporary file in the probed directory: O_DIRECT, preallocated and synced like a
/// new segment, removed when dropped.
#[derive(Debug)]
struct ProbeFile {
    file: File,
    path: PathBuf,
}

impl ProbeFile {
    fn create(dir: &Path, tag: &str, bytes: u64) -> Result<Self, ProbeError> {
        let path = dir.join(format!(
            ".strand-disk-probe-{}-{tag}.tmp",
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .map_err(io_error("create with O_DIRECT", &path))?;
        // Unlinked at once: the descriptor keeps the blocks until it is closed, and a
        // probe killed by Ctrl-C or SIGKILL leaves no gigabyte file behind.
        std::fs::remove_file(&path).map_err(io_error("unlink", &path))?;
        let probe_file = ProbeFile { file, path };
        let len = libc::off_t::try_from(bytes).map_err(|_| {
            io_error("fallocate", &probe_file.path)(io::Error::from_raw_os_error(libc::EFBIG))
        })?;
        // SAFETY: the descriptor is open (owned by `probe_file.file`); fallocate has no
        // memory effects.
        if unsafe { libc::fallocate(probe_file.fd(), 0, 0, len) } != 0 {
            return Err(io_error("fallocate", &probe_file.path)(
                io::Error::last_os_error(),
            ));
        }
        // Like a new segment: the allocation is durable before the first write.
        probe_file
            .file
            .sync_all()
            .map_err(io_error("fsync", &probe_file.path))?;
        Ok(probe_file)
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// One completion taken off the ring.
#[derive(Debug, Clone, Copy)]
struct Completion {
    user_data: u64,
    result: i32,
    at: Instant,
}

/// The ring and its buffers: one arena of [`IN_FLIGHT_BYTES_MAX`] bytes, each write
/// slot a block-sized slice of it.
struct Rig {
    ring: IoUring,
    arena: AlignedBuf,
    /// The arena is registered with the ring (buffer index 0).
    fixed: bool,
    in_flight: usize,
    dir: PathBuf,
    completions: Vec<Completion>,
}

impl Rig {
    fn new(dir: &Path) -> Result<Self, ProbeError> {
        let arena_bytes = usize::try_from(IN_FLIGHT_BYTES_MAX)
            .map_err(|_| ProbeError::Alloc { bytes: usize::MAX })?;
        let arena = AlignedBuf::new(arena_bytes)?;
        let ring = IoUring::new(RING_ENTRIES).map_err(io_error("create an io_uring for", dir))?;
        let iovec = libc::iovec {
            iov_base: arena.ptr.as_ptr().cast(),
            iov_len: arena.len(),
        };
        // SAFETY: the arena stays allocated while the ring exists: it is freed only
        // when the `Rig` is dropped, after the ring (field order), and never while
        // I/O is in flight (`Drop` waits it out or leaks the arena).
        let fixed = unsafe { ring.submitter().register_buffers(&[iovec]) }.is_ok();
        Ok(Rig {
            ring,
            arena,
            fixed,
            in_flight: 0,
            dir: dir.to_path_buf(),
            completions: Vec::with_capacity(RING_ENTRIES as usize),
        })
    }

    /// Queues a write of `len` bytes from arena slot `slot` (slots are `len` apart).
    fn push_write(&mut self, fd: RawFd, slot: usize, len: u64, offset: u64, user_data: u64) {
        let start = slot * len as usize;
        assert!(
            start + len as usize <= self.arena.len(),
            "write slot {slot} of {len} bytes is outside the arena"
        );
        let len32 = u32::try_from(len).expect("block sizes fit in u32");
        // SAFETY: `start + len` is inside the arena (asserted above).
        let ptr = unsafe { self.arena.ptr.as_ptr().add(start) };
        let entry = if self.fixed {
            opcode::WriteFixed::new(types::Fd(fd), ptr, len32, 0)
                .offset(offset)
                .build()
        } else {
            opcode::Write::new(types::Fd(fd), ptr, len32)
                .offset(offset)
                .build()
        };
        self.push(entry.user_data(user_data));
    }

    fn push_fdatasync(&mut self, fd: RawFd, user_data: u64) {
        let entry = opcode::Fsync::new(types::Fd(fd))
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(user_data);
        self.push(entry);
    }

    fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: a write's slot of the arena is not touched by us, nor freed, until
        // its completion is reaped (or the arena is leaked); the file descriptor
        // stays open until then, as every measurement waits out its I/O before its
        // `ProbeFile` drops.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        assert!(
            pushed.is_ok(),
            "submission queue full with {} in flight",
            self.in_flight
        );
        self.in_flight += 1;
    }

    /// Submits what is queued and waits for at least `want` completions, which land
    /// in `self.completions`.
    fn reap(&mut self, want: usize) -> Result<(), ProbeError> {
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error("submit I/O to", &self.dir)(e)),
            }
        }
        let at = Instant::now();
        let before = self.completions.len();
        self.completions
            .extend(self.ring.completion().map(|c| Completion {
                user_data: c.user_data(),
                result: c.result(),
                at,
            }));
        self.in_flight -= self.completions.len() - before;
        Ok(())
    }

    /// Waits out every I/O in flight; if the ring fails, the arena is leaked, since
    /// the kernel may still use it.
    fn drain(&mut self) {
        while self.in_flight > 0 {
            match self.ring.submit_and_wait(self.in_flight) {
                Ok(_) => self.in_flight -= self.ring.completion().count(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.arena.leaked = true;
                    self.in_flight = 0;
                }
            }
        }
        self.completions.clear();
    }

    /// Runs `f`, then waits out whatever it left in flight (only an error does).
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ProbeError>,
    ) -> Result<T, ProbeError> {
        let result = f(self);
        self.drain();
        result
    }

    fn sequential(
        &mut self,
        block: u64,
        depth: u32,
        time: Duration,
        file_bytes: u64,
        sustained: bool,
    ) -> Result<SequentialWrite, ProbeError> {
        let file_bytes = file_bytes / block * block;
        let file = ProbeFile::create(&self.dir, &format!("{block}x{depth}"), file_bytes)?;
        let started = Instant::now();
        let (hist, writes, mut elapsed) = self.guarded(|rig| {
            rig.sequential_loop(
                &file,
                block,
                depth as usize,
                file_bytes / block,
                time,
                sustained,
            )
        })?;
        // A sweep run leaves the device cache empty for the next one outside its timed
        // part; the sustained run times it: the bytes are only written once durable.
        file.file
            .sync_data()
            .map_err(io_error("fdatasync", &file.path))?;
        if sustained {
            elapsed = started.elapsed();
        }
        let bytes = u128::from(writes * block);
        let nanos = elapsed.as_nanos().max(1);
        Ok(SequentialWrite {
            block_bytes: block,
            queue_depth: depth,
            writes,
            bytes_per_sec: u64::try_from(bytes * 1_000_000_000 / nanos).unwrap_or(u64::MAX),
            lat_p50_us: hist.value_at_quantile(0.50),
            lat_p99_us: hist.value_at_quantile(0.99),
            lat_max_us: hist.max(),
        })
    }

    /// Keeps `depth` writes of `block` bytes in flight, in file order, until the time
    /// budget or the file is used up (or, with `wrap`, the time budget alone, going
    /// round the file again); returns the latencies, the writes done and the time from
    /// the first submission to the last completion.
    fn sequential_loop(
        &mut self,
        file: &ProbeFile,
        block: u64,
        depth: usize,
        writes_max: u64,
        time: Duration,
        wrap: bool,
    ) -> Result<(Histogram<u64>, u64, Duration), ProbeError> {
        let mut hist = histogram();
        let mut free: Vec<usize> = (0..depth).rev().collect();
        let start = Instant::now();
        let mut issued_at = vec![start; depth];
        let (mut issued, mut done, mut end) = (0u64, 0u64, start);
        loop {
            while !free.is_empty() && (wrap || issued < writes_max) && more(start, time, issued) {
                let slot = free.pop().expect("a free slot: checked above");
                issued_at[slot] = Instant::now();
                let offset = (issued % writes_max.max(1)) * block;
                self.push_write(file.fd(), slot, block, offset, slot as u64);
                issued += 1;
            }
            if self.in_flight == 0 {
                break;
            }
            self.reap(1)?;
            for c in std::mem::take(&mut self.completions) {
                check_write(&file.path, c.result, block)?;
                let slot = c.user_data as usize;
                hist.saturating_record(micros(c.at - issued_at[slot]));
                free.push(slot);
                done += 1;
                end = c.at;
            }
        }
        Ok((hist, done, end - start))
    }

    /// Writes of `write_bytes` one after another, each followed by `fdatasync`; the
    /// latency of the `fdatasync` alone, or with `with_write` from the write's
    /// submission to the sync's completion.
    fn synced_writes(
        &mut self,
        tag: &str,
        write_bytes: u64,
        ops_max: u64,
        time: Duration,
        with_write: bool,
    ) -> Result<SyncLatency, ProbeError> {
        let file = ProbeFile::create(&self.dir, tag, write_bytes * ops_max)?;
        let hist = self.guarded(|rig| {
            let mut hist = histogram();
            let start = Instant::now();
            let mut done = 0u64;
            while done < ops_max && more(start, time, done) {
                let write_at = Instant::now();
                rig.push_write(file.fd(), 0, write_bytes, done * write_bytes, 0);
                rig.reap(1)?;
                for c in std::mem::take(&mut rig.completions) {
                    check_write(&file.path, c.result, write_bytes)?;
                }
                let sync_at = Instant::now();
                rig.push_fdatasync(file.fd(), 1);
                rig.reap(1)?;
                for c in std::mem::take(&mut rig.completions) {
                    if c.result < 0 {
                        return Err(io_error("fdatasync", &file.path)(
                            io::Error::from_raw_os_error(-c.result),
                        ));
                    }
                    let from = if with_write { write_at } else { sync_at };
                    hist.saturating_record(micros(c.at - from));
                }
                done += 1;
            }
            Ok(hist)
        })?;
        Ok(SyncLatency {
            samples: hist.len(),
            p50_us: hist.value_at_quantile(0.50),
            p99_us: hist.value_at_quantile(0.99),
            max_us: hist.max(),
        })
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.drain();
    }
}

/// Whether a measurement should take another sample: within its time budget, or
/// short of [`SAMPLES_MIN`] and within [`OVERTIME_FACTOR`] times the budget.
fn more(start: Instant, budget: Duration, samples: u64) -> bool {
    let elapsed = start.elapsed();
    elapsed < budget || (samples < SAMPLES_MIN && elapsed < budget * OVERTIME_FACTOR)
}

fn check_write(path: &Path, result: i32, wanted: u64) -> Result<(), ProbeError> {
    if result < 0 {
        return Err(io_error("write (O_DIRECT) to", path)(
            io::Error::from_raw_os_error(-result),
        ));
    }
    let written = u64::try_from(result).unwrap_or(0);
    if written != wanted {
        return Err(ProbeError::ShortWrite {
            path: path.to_path_buf(),
            written,
            wanted,
        });
    }
    Ok(())
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

// The command line: `strand disk probe`.

/// `strand disk ...`: offline commands about the disk (no broker needed).
#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// Measure the disk holding DIR (like `rpk iotune`): O_DIRECT write bandwidth and
    /// latency by block size and queue depth, fdatasync latency, and the recommended
    /// write sizing for strand-node --disk-profile. Writes a temporary file in DIR.
    Probe(ProbeArgs),
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// A directory on the disk to measure, e.g. the node's data directory.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Also write the profile as JSON to FILE (read by strand-node --disk-profile).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Probe for 3-5 s instead of about 30 s (rougher numbers).
    #[arg(long)]
    pub quick: bool,
    #[arg(long, value_enum, default_value_t = ProbeOutput::Table)]
    pub output: ProbeOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeOutput {
    Table,
    Json,
}

/// Runs `strand disk ...` and returns what to print.
pub fn command(cmd: &DiskCommand) -> anyhow::Result<String> {
    let DiskCommand::Probe(args) = cmd;
    eprintln!(
        "strand: probing the disk under {} for about {} (writes a temporary file there)",
        args.dir.display(),
        if args.quick { "5 s" } else { "30 s" }
    );
    let profile = run(&ProbeOptions {
        dir: args.dir.clone(),
        quick: args.quick,
    })?;
    if let Some(out) = &args.out {
        profile.save(out)?;
    }
    Ok(match args.output {
        ProbeOutput::Table => {
            let mut text = profile.table();
            if let Some(out) = &args.out {
                let _ = writeln!(text, "profile written to {}", out.display());
            }
            text
        }
        ProbeOutput::Json => {
            let mut json = serde_json::to_string_pretty(&profile)?;
            json.push('\n');
            json
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under the workspace's `target/`: /tmp and /dev/shm may be tmpfs.
    fn disk_dir() -> tempfile::TempDir {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        std::fs::create_dir_all(&target).expect("create target/");
        tempfile::Builder::new()
            .prefix("probe-test-")
            .tempdir_in(&target)
            .expect("temp dir under target/")
    }

    fn write(block: u64, depth: u32, bytes_per_sec: u64) -> SequentialWrite {
        SequentialWrite {
            block_bytes: block,
            queue_depth: depth,
            writes: 10,
            bytes_per_sec,
            lat_p50_us: 1,
            lat_p99_us: 2,
            lat_max_us: 3,
        }
    }

    #[test]
    fn quick_probe_measures_consistent_numbers_and_round_trips() {
        let dir = disk_dir();
        let profile = run(&ProbeOptions {
            dir: dir.path().to_path_buf(),
            quick: true,
        })
        .expect("quick probe");

        assert_eq!(profile.schema_version, SCHEMA_VERSION);
        assert!(profile.quick);
        assert_eq!(
            profile.path,
            std::fs::canonicalize(dir.path()).expect("path")
        );
        let combos = combinations();
        let measured: Vec<(u64, u32)> = profile
            .sequential
            .iter()
            .map(|w| (w.block_bytes, w.queue_depth))
            .collect();
        assert_eq!(measured, combos);
        for w in &profile.sequential {
            assert!(w.writes >= 1, "{w:?}");
            assert!(w.bytes_per_sec > 0, "{w:?}");
            assert!(w.lat_p50_us <= w.lat_p99_us, "{w:?}");
            assert!(w.lat_p99_us <= w.lat_max_us, "{w:?}");
            assert!(w.lat_max_us > 0, "{w:?}");
        }
        for s in [&profile.fdatasync, &profile.write_1mib_sync] {
            assert!(s.samples >= 1, "{s:?}");
            assert!(s.p50_us <= s.p99_us && s.p99_us <= s.max_us, "{s:?}");
            assert!(s.max_us > 0, "{s:?}");
        }
        let best = profile.sequential.iter().map(|w| w.bytes_per_sec).max();
        assert_eq!(Some(profile.burst_write_bytes_per_sec), best);
        assert_eq!(
            profile.sequential_write_bytes_per_sec,
            profile.sustained.bytes_per_sec
        );
        assert!(profile.sustained.writes >= 1);
        assert!(
            profile
                .sequential
                .iter()
                .any(|w| w.block_bytes == profile.sustained.block_bytes
                    && w.queue_depth == profile.sustained.queue_depth),
            "the sustained run repeats a measured combination"
        );
        let chosen = profile
            .sequential
            .iter()
            .find(|w| {
                w.block_bytes == profile.recommended_write_buffer_bytes
                    && w.queue_depth == profile.recommended_writes_in_flight
            })
            .expect("the recommendation is a measured combination");
        assert!(chosen.bytes_per_sec * 100 >= profile.burst_write_bytes_per_sec * 90);

        // Nothing is left behind in the probed directory.
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert!(left.is_empty(), "{left:?}");

        let json = dir.path().join("profile.json");
        profile.save(&json).expect("save");
        assert_eq!(DiskProfile::load(&json).expect("load"), profile);
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(left.len(), 1, "only the profile: {left:?}");
        assert!(profile
            .table()
            .contains("recommended: log.write_buffer_bytes"));
    }

    #[test]
    fn tmpfs_is_refused_by_path() {
        let shm = Path::new("/dev/shm");
        if !strand_engine::storage::dma::is_tmpfs(shm).unwrap_or(false) {
            eprintln!("/dev/shm is not tmpfs here; nothing to check");
            return;
        }
        let err = run(&ProbeOptions {
            dir: shm.to_path_buf(),
            quick: true,
        })
        .expect_err("tmpfs is refused");
        assert!(
            matches!(&err, ProbeError::Tmpfs { path } if path == shm),
            "{err:?}"
        );
        assert!(err.to_string().contains("/dev/shm"), "{err}");
    }

    #[test]
    fn a_missing_directory_or_a_file_is_refused() {
        let dir = disk_dir();
        let missing = dir.path().join("absent");
        let err = run(&ProbeOptions {
            dir: missing.clone(),
            quick: true,
        })
        .expect_err("no such directory");
        assert!(err.to_string().contains("absent"), "{err}");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let err = run(&ProbeOptions {
            dir: file,
            quick: true,
        })
        .expect_err("not a directory");
        assert!(matches!(err, ProbeError::NotADirectory { .. }), "{err:?}");
    }

    #[test]
    fn recommendation_is_the_fewest_bytes_in_flight_near_the_best() {
        let results = [
            write(4 * KIB, 1, 50),
            write(4 * KIB, 32, 95), // 128 KiB in flight
            write(64 * KIB, 1, 60),
            write(64 * KIB, 4, 91),  // 256 KiB
            write(128 * KIB, 1, 92), // 128 KiB, larger block than 4 KiB × 32
            write(MIB, 16, 100),
        ];
        assert_eq!(recommend(&results), Some((100, 128 * KIB, 1)));
        // Only the best qualifies.
        let results = [write(4 * KIB, 1, 10), write(MIB, 4, 100)];
        assert_eq!(recommend(&results), Some((100, MIB, 4)));
        assert_eq!(recommend(&[]), None);
    }

    #[test]
    fn combinations_skip_too_many_bytes_in_flight() {
        let combos = combinations();
        assert!(combos.contains(&(4 * KIB, 32)));
        assert!(combos.contains(&(MIB, 16)));
        assert!(!combos.contains(&(MIB, 32)));
        assert!(combos
            .iter()
            .all(|&(b, d)| b * u64::from(d) <= IN_FLIGHT_BYTES_MAX));
    }

    #[test]
    fn a_small_disk_shrinks_the_files_or_is_refused() {
        let plan = Plan::new(false)
            .fit(Path::new("d"), 200 * MIB)
            .expect("fits");
        assert_eq!(plan.write_file_bytes, 100 * MIB);
        assert_eq!(plan.large_sync_ops_max, 100);
        assert_eq!(plan.small_sync_ops_max, 20_000);
        // An equal share of what is left, less the overhead seen, with a floor.
        let ms = Duration::from_millis;
        assert_eq!(plan.write_time(ms(10_000), 10, ms(200)), ms(800));
        assert_eq!(plan.write_time(ms(1_000), 10, ms(200)), plan.write_time_min);
        assert_eq!(
            plan.write_time(Duration::ZERO, 0, ms(0)),
            plan.write_time_min
        );
        let err = Plan::new(true)
            .fit(Path::new("d"), 10 * MIB)
            .expect_err("too small");
        assert!(matches!(err, ProbeError::NoSpace { .. }), "{err:?}");
    }

    #[test]
    fn bad_profiles_are_refused_with_the_path() {
        let dir = disk_dir();
        let path = dir.path().join("p.json");
        std::fs::write(&path, "{\"schema_version\": 1}").expect("write");
        let err = DiskProfile::load(&path).expect_err("incomplete");
        assert!(matches!(&err, ProbeError::Profile { path: p, .. } if *p == path));
        let err = DiskProfile::load(&dir.path().join("absent.json")).expect_err("absent");
        assert!(err.to_string().contains("absent.json"), "{err}");
    }

    #[test]
    fn mountinfo_lookup_prefers_the_longest_mount_point() {
        let text = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
30 25 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw\n\
40 27 254:0 /data /srv/my\\040data rw - ext4 /dev/vda rw\n";
        assert_eq!(
            Mount::find(text, Path::new("/srv/my data/x"), "254:0"),
            Some(("/dev/vda".to_string(), "ext4".to_string()))
        );
        assert_eq!(
            Mount::find(text, Path::new("/dev/shm"), "0:27"),
            Some(("tmpfs".to_string(), "tmpfs".to_string()))
        );
        assert_eq!(Mount::find(text, Path::new("/x"), "9:9"), None);
        assert_eq!(unescape_octal("a\\040b\\\\"), "a b\\\\");
    }

    #[test]
    fn the_probe_command_parses() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "strand", "disk", "probe", "--dir", "/d", "--out", "p.json", "--quick", "--output",
            "json",
        ])
        .expect("valid");
        let crate::cli::Command::Disk(DiskCommand::Probe(args)) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(args.dir, PathBuf::from("/d"));
        assert_eq!(args.out, Some(PathBuf::from("p.json")));
        assert!(args.quick);
        assert_eq!(args.output, ProbeOutput::Json);
        let cli = crate::cli::Cli::try_parse_from(["strand", "disk", "probe", "--dir", "/d"])
            .expect("valid");
        let crate::cli::Command::Disk(DiskCommand::Probe(args)) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert!(!args.quick);
        assert_eq!(args.output, ProbeOutput::Table);
        assert!(crate::cli::Cli::try_parse_from(["strand", "disk", "probe"]).is_err());
    }
}
