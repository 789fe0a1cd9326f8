//! Crash consistency under `kill -9` on the real disk.
//!
//! The test re-executes its own binary as a child process (selected by
//! `STRAND_KILL9_CHILD_DIR`) that appends to a log from several concurrent writers
//! and prints `durable <last_offset>` once `wait_durable` has returned for a batch.
//! The parent kills it with SIGKILL at a random moment, recovers the log itself and
//! checks that every offset the child reported durable is there, intact, in a log
//! of contiguous CRC-valid batches whose contents match the identity embedded in
//! each batch. The cycle is repeated on the same directory, so later children
//! recover (and append to) a log that was already recovered after a kill.
//!
//! `STRAND_KILL9_SEED=N` replays the kill timings of a run.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use strand_engine::segment::parse_segment_file_name;
use strand_engine::{batch, DmaStorage, Log, LogConfig};

/// Name of the test function below; the child is started with `--exact` on it.
const TEST_NAME: &str = "kill9_during_appends_keeps_every_durable_offset";
const CHILD_DIR_ENV: &str = "STRAND_KILL9_CHILD_DIR";
const CHILD_CYCLE_ENV: &str = "STRAND_KILL9_CYCLE";
const SEED_ENV: &str = "STRAND_KILL9_SEED";

const CYCLES: u32 = 3;
const WRITERS: u32 = 4;
/// Durable reports the parent waits for before it starts the kill timer.
const REPORTS_BEFORE_KILL: usize = 10;
/// A child never appends more than this many batches per writer.
const SEQ_MAX: u64 = 100_000;
/// A child that has not been killed after this long stops by itself.
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(60);

/// Batch timestamps encode the batch identity: `TS_BASE + stream * TS_STREAM_SPAN + seq`.
const TS_BASE: i64 = 1_700_000_000_000;
const TS_STREAM_SPAN: i64 = 1_000_000_000;
/// Bytes at the start of every record value holding the identity.
const ID_BYTES: usize = 16;

fn config() -> LogConfig {
    LogConfig {
        // Small segments so rolls (and seals) happen all through the run.
        segment_bytes_max: 1024 * 1024,
        write_buffer_bytes: 64 * 1024,
        preallocate_bytes: 256 * 1024,
        tail_cache_bytes: 1024 * 1024,
        ..LogConfig::default()
    }
}

/// Which child (`cycle`), which of its writers, and which of that writer's appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Id {
    cycle: u32,
    writer: u32,
    seq: u64,
}

impl Id {
    fn stream(self) -> (u32, u32) {
        (self.cycle, self.writer)
    }

    fn timestamp(self) -> i64 {
        let stream = i64::from(self.cycle * WRITERS + self.writer);
        TS_BASE + stream * TS_STREAM_SPAN + self.seq as i64
    }

    fn from_timestamp(ts: i64) -> Option<Self> {
        let rel = ts.checked_sub(TS_BASE)?;
        if rel < 0 {
            return None;
        }
        let stream = u32::try_from(rel / TS_STREAM_SPAN).ok()?;
        Some(Self {
            cycle: stream / WRITERS,
            writer: stream % WRITERS,
            seq: (rel % TS_STREAM_SPAN) as u64,
        })
    }

    fn hash(self) -> u64 {
        splitmix64(self.timestamp() as u64)
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The batch a writer appends for `id`; a pure function of `id`, so the parent can
/// rebuild it from the identity found in the batch.
fn batch_for(id: Id) -> Vec<u8> {
    let h = id.hash();
    let records = 1 + (h % 8) as usize;
    let value_len = ID_BYTES + ((h >> 8) % 4096) as usize;
    let mut value = Vec::with_capacity(value_len);
    value.extend_from_slice(&id.cycle.to_be_bytes());
    value.extend_from_slice(&id.writer.to_be_bytes());
    value.extend_from_slice(&id.seq.to_be_bytes());
    let fill = h >> 16;
    value.extend((ID_BYTES..value_len).map(|i| (fill.wrapping_add(i as u64 * 7) % 251) as u8));
    batch::build(id.timestamp(), records, &value)
}

/// The single test of this binary: the parent, or the child when started by it.
#[test]
fn kill9_during_appends_keeps_every_durable_offset() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        let cycle = std::env::var(CHILD_CYCLE_ENV)
            .ok()
            .and_then(|c| c.parse().ok())
            .expect("the child needs STRAND_KILL9_CYCLE");
        child(PathBuf::from(dir), cycle);
        return;
    }
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0009_1111);
    println!("kill9: seed {seed} (replay the kill timings with {SEED_ENV}={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let root = test_dir("kill9");
    let started = Instant::now();
    let mut previous: Vec<Bytes> = Vec::new();
    for cycle in 0..CYCLES {
        let kill_after = Duration::from_millis(rng.u64(200..=800));
        let report = run_and_kill_child(&root, cycle, kill_after, seed);
        previous = recover_and_check(&root, cycle, &report, &previous, seed);
    }
    println!("kill9: {CYCLES} cycles in {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&root);
}

// ---------------------------------------------------------------------------------
// The child: appends until killed.

fn child(root: PathBuf, cycle: u32) {
    run(move || async move {
        let storage = Rc::new(
            DmaStorage::open(&root, false)
                .await
                .expect("child: storage"),
        );
        let log = Log::open(storage, &root.join("p0"), config())
            .await
            .expect("child: open");
        let log = Rc::new(log);
        say(&format!("opened end {}", log.end_offset()));
        // Two writers wait for durability before their next append; two keep many
        // appends in flight, so syncs cover several batches and writers.
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let window = if writer < 2 { 1 } else { 32 };
                glommio::spawn_local(write_stream(log.clone(), cycle, writer, window))
            })
            .collect();
        glommio::timer::sleep(CHILD_LIFETIME_MAX).await;
        drop(writers);
    });
    panic!("kill9 child: not killed within {CHILD_LIFETIME_MAX:?}");
}

async fn write_stream(log: Rc<Log<DmaStorage>>, cycle: u32, writer: u32, window: usize) {
    let mut waiting: VecDeque<glommio::Task<()>> = VecDeque::new();
    for seq in 0..SEQ_MAX {
        let id = Id { cycle, writer, seq };
        let out = log
            .append(BytesMut::from(&batch_for(id)[..]))
            .await
            .expect("child: append");
        let log = log.clone();
        waiting.push_back(glommio::spawn_local(async move {
            log.wait_durable(out.last_offset)
                .await
                .expect("child: wait_durable");
            say(&format!("durable {}", out.last_offset));
        }));
        while waiting.len() >= window {
            if let Some(task) = waiting.pop_front() {
                task.await;
            }
        }
    }
    for task in waiting {
        task.await;
    }
}

/// One line to the parent, flushed at once.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("child: stdout");
    out.flush().expect("child: flush stdout");
}

// ---------------------------------------------------------------------------------
// The parent.

#[derive(Debug)]
struct ChildReport {
    /// Every `durable <offset>` line the child printed before it died.
    durable: Vec<u64>,
    killed_after: Duration,
}

fn run_and_kill_child(root: &Path, cycle: u32, kill_after: Duration, seed: u64) -> ChildReport {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, root)
        .env(CHILD_CYCLE_ENV, cycle.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut stderr = child.stderr.take().expect("child stderr");
    let (tx, rx) = mpsc::channel::<u64>();
    let stdout_reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // Only whole lines count: a line cut short by the kill proves nothing.
            let Some(line) = line.strip_suffix('\n') else {
                break;
            };
            if let Some(rest) = line.strip_prefix("durable ") {
                let offset = rest.parse().expect("a `durable <offset>` line");
                let _ = tx.send(offset);
            }
        }
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let started = Instant::now();
    let mut durable = Vec::new();
    let mut early_exit = None;
    while durable.len() < REPORTS_BEFORE_KILL {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(offset) => durable.push(offset),
            Err(e) => {
                early_exit = Some(format!("{e:?} after {} durable reports", durable.len()));
                break;
            }
        }
    }
    if early_exit.is_none() {
        std::thread::sleep(kill_after);
    }
    let killed_after = started.elapsed();
    // SIGKILL on unix.
    child.kill().expect("kill the child");
    let status = child.wait().expect("wait for the child");
    stdout_reader.join().expect("stdout reader");
    let stderr = stderr_reader.join().expect("stderr reader");
    durable.extend(rx.try_iter());
    if let Some(why) = early_exit {
        panic!(
            "seed {seed}, cycle {cycle}: the child did not report durable appends ({why}); \
             status {status:?}; its stderr:\n{stderr}"
        );
    }
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "seed {seed}, cycle {cycle}: the child should have died of SIGKILL, got {status:?}; \
         its stderr:\n{stderr}"
    );
    ChildReport {
        durable,
        killed_after,
    }
}

/// Recover the log in the parent, check it against the child's reports and the
/// previous cycle's log, and return its batches.
fn recover_and_check(
    root: &Path,
    cycle: u32,
    report: &ChildReport,
    previous: &[Bytes],
    seed: u64,
) -> Vec<Bytes> {
    let ctx = format!("seed {seed}, cycle {cycle}");
    let recovered_at = Instant::now();
    let dir = root.to_path_buf();
    let (batches, start, end) = run(move || async move {
        let storage = Rc::new(DmaStorage::open(&dir, false).await.expect("storage"));
        let log = Log::open(storage, &dir.join("p0"), config())
            .await
            .expect("reopen after kill -9");
        let (start, end) = (log.start_offset(), log.end_offset());
        let mut out = Vec::new();
        let mut offset = start;
        while offset < end {
            let got = log
                .read(offset, 1024 * 1024)
                .await
                .unwrap_or_else(|e| panic!("read at {offset} (end {end}): {e}"));
            assert!(
                !got.is_empty(),
                "empty read at {offset}, below the end {end}"
            );
            for b in got {
                let h = batch::validate(&b)
                    .unwrap_or_else(|e| panic!("a served batch at {offset} is invalid: {e}"));
                assert_eq!(h.base_offset as u64, offset, "offsets are contiguous");
                offset = h.last_offset() as u64 + 1;
                out.push(b);
            }
        }
        assert_eq!(offset, end, "the last batch ends at the log end");
        log.close().await.expect("close");
        (out, start, end)
    });
    let check_time = recovered_at.elapsed();

    assert_eq!(start, 0, "{ctx}: nothing was deleted");
    let prev_end = previous.last().map_or(0, |b| {
        batch::parse_header(b).map_or(0, |h| h.last_offset() as u64 + 1)
    });
    let max_durable = report.durable.iter().copied().max();
    if let Some(max) = max_durable {
        assert!(
            end > max,
            "{ctx}: offset {max} was reported durable but the recovered log ends at {end}"
        );
    }
    if let Some(&min) = report.durable.iter().min() {
        assert!(
            min >= prev_end,
            "{ctx}: the child reported {min} durable, which the previous cycle already had"
        );
    }

    // The log recovered after the previous kill is a prefix of this one.
    assert!(
        batches.len() >= previous.len(),
        "{ctx}: the log shrank from {} to {} batches since the previous recovery",
        previous.len(),
        batches.len()
    );
    for (i, (got, want)) in batches.iter().zip(previous).enumerate() {
        assert!(
            got == want,
            "{ctx}: batch #{i} changed since the previous recovery"
        );
    }

    // Every batch is exactly what its embedded identity says; each writer's batches
    // form a gap-free sequence; children follow each other.
    let mut next_seq: HashMap<(u32, u32), u64> = HashMap::new();
    let mut last_offsets = HashSet::new();
    let mut last_cycle = 0;
    for b in &batches {
        let h = batch::validate(b).expect("validated above");
        let id = Id::from_timestamp(h.base_timestamp).unwrap_or_else(|| {
            panic!(
                "{ctx}: batch at {} has a timestamp {} that names no writer",
                h.base_offset, h.base_timestamp
            )
        });
        assert!(
            id.cycle <= cycle && id.writer < WRITERS,
            "{ctx}: batch at {}: impossible identity {id:?}",
            h.base_offset
        );
        assert!(
            id.cycle >= last_cycle,
            "{ctx}: batch at {} of cycle {} follows one of cycle {last_cycle}",
            h.base_offset,
            id.cycle
        );
        last_cycle = id.cycle;
        let expected_seq = next_seq.entry(id.stream()).or_insert(0);
        assert_eq!(
            id.seq, *expected_seq,
            "{ctx}: batch at {}: writer {} of cycle {} skipped or repeated a batch",
            h.base_offset, id.writer, id.cycle
        );
        *expected_seq += 1;
        let mut want = batch_for(id);
        batch::set_base_offset(&mut want, h.base_offset);
        assert!(
            b[..] == want[..],
            "{ctx}: batch at {} ({id:?}) does not hold what its writer appended",
            h.base_offset
        );
        last_offsets.insert(h.last_offset() as u64);
    }
    for &offset in &report.durable {
        assert!(
            last_offsets.contains(&offset),
            "{ctx}: reported durable offset {offset} is not the end of a recovered batch"
        );
    }

    let segments = std::fs::read_dir(root.join("p0"))
        .expect("list the log dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(parse_segment_file_name)
                .is_some()
        })
        .count();
    let this_cycle = batches.len() - previous.len();
    println!(
        "kill9 cycle {cycle}: killed after {:?}; {} durable reports (max {max_durable:?}); \
         recovered {this_cycle} new batches, log end {end} in {segments} segments; \
         recovery and check took {check_time:?}",
        report.killed_after,
        report.durable.len(),
    );
    assert!(
        this_cycle > 0,
        "{ctx}: the child appended nothing that survived"
    );
    batches
}
