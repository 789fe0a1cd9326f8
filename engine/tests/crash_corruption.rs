//! Damaged segment tails on the real disk: hundreds of seeded cases that append,
//! make a prefix durable, append more, stop the log (close, or drop as in a crash),
//! then flip a byte or truncate the last segment file, reopen and check that
//!
//! - the log is a prefix of what was appended (batch bytes equal after the base
//!   offset rewrite) and every batch served passes `batch::validate`;
//! - damage at or after the end of the durable data loses nothing durable
//!   (`end_offset >= D`);
//! - damage inside the durable data cuts the log no earlier than the damaged batch,
//!   and reopening never fails or panics;
//! - the recovered log takes appends and comes back whole once more.
//!
//! A failing case prints its seed; `STRAND_CORRUPTION_CASE_SEED=N` runs only that
//! case, `STRAND_CORRUPTION_SEED=N` replays a whole run and
//! `STRAND_CORRUPTION_CASES=N` changes the number of cases. A seed fixes every choice
//! the test makes; what a dropped log had written and synced when it was dropped
//! depends on the disk's timing, so a replay of a "dropped" case may need a few runs.

mod common;

use std::cell::RefCell;
use std::fmt;
use std::os::unix::fs::FileExt;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use futures_lite::FutureExt;
use strand_engine::constants::SEGMENT_HEADER_BYTES;
use strand_engine::segment::{parse_segment_file_name, segment_file_name};
use strand_engine::{batch, DmaStorage, Log, LogConfig};

const CASES_DEFAULT: u64 = 300;
/// Segment header bytes that matter: magic, version, sizes, base offset, creation
/// time (0..32) and their CRC (32..36). The rest of the header page is padding.
const SEGMENT_HEADER_USED_BYTES: u64 = 36;
/// Kafka's RecordBatch CRC covers bytes 21.. only; bytes 12..16
/// (partitionLeaderEpoch) are covered by nothing. See `epoch_only_difference`.
const EPOCH_BYTES: std::ops::Range<usize> = 12..16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// Flip one byte at or after the end of the durable data of the last segment.
    FlipTail,
    /// Truncate the last segment at or after the end of its durable data.
    TruncateTail,
    /// Flip a byte (or, sometimes, truncate) inside the durable data of the last
    /// segment or its header: only the prefix property holds.
    DamageDurable,
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Flip {
        pos: u64,
        mask: u8,
    },
    Truncate {
        len: u64,
    },
    /// Nothing to damage (the range was empty).
    None,
}

impl Damage {
    fn pos(self) -> u64 {
        match self {
            Damage::Flip { pos, .. } => pos,
            Damage::Truncate { len } => len,
            Damage::None => u64::MAX,
        }
    }
}

/// One appended batch, as the log must serve it.
#[derive(Clone)]
struct Appended {
    base: u64,
    last: u64,
    bytes: Bytes,
}

/// What one case did, for its failure messages.
struct Case {
    seed: u64,
    family: Family,
    ending: &'static str,
    config: LogConfig,
    damage: Damage,
    durable: u64,
    appended_end: u64,
    last_segment: u64,
    durable_end_pos: u64,
    data_end_pos: u64,
    file_len: u64,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "case seed {} (rerun with STRAND_CORRUPTION_CASE_SEED={}): {:?}, {}, damage {:?} \
             in segment {} (durable data ends at byte {}, data at {}, file {} bytes), \
             durable offset {}, appended end {}, segment_bytes_max {}, \
             preallocate_bytes {}, writes_in_flight_max {}",
            self.seed,
            self.seed,
            self.family,
            self.ending,
            self.damage,
            self.last_segment,
            self.durable_end_pos,
            self.data_end_pos,
            self.file_len,
            self.durable,
            self.appended_end,
            self.config.segment_bytes_max,
            self.config.preallocate_bytes,
            self.config.writes_in_flight_max,
        )
    }
}

#[derive(Default)]
struct Totals {
    cases: [u64; 3],
    /// Cases whose log had rolled (the last segment is not the first).
    rolled: u64,
    /// Cases whose damage landed inside batch data (not in zeroes past it).
    damage_in_data: u64,
    cut_below_appended: u64,
    lost_offsets: u64,
    epoch_flips_served: u64,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[test]
fn damaged_segment_tails_never_lose_durable_data_or_serve_corrupt_batches() {
    let seeds: Vec<u64> = match env_u64("STRAND_CORRUPTION_CASE_SEED") {
        Some(seed) => vec![seed],
        None => {
            let seed = env_u64("STRAND_CORRUPTION_SEED").unwrap_or(0xC0FF_EE00);
            let cases = env_u64("STRAND_CORRUPTION_CASES").unwrap_or(CASES_DEFAULT);
            println!("corruption: run seed {seed} (replay with STRAND_CORRUPTION_SEED={seed})");
            (0..cases)
                .map(|i| splitmix64(seed ^ splitmix64(i)))
                .collect()
        }
    };
    let root = test_dir("corruption");
    let started = Instant::now();
    let totals = run(move || async move {
        // One executor and one storage for every case: executors are costly to make.
        let storage = Rc::new(DmaStorage::open(&root, false).await.expect("storage"));
        let mut totals = Totals::default();
        for (i, &seed) in seeds.iter().enumerate() {
            let dir = root.join(format!("case-{i:03}"));
            // A panic inside the engine carries no case context: name the seed.
            let context = RefCell::new(String::new());
            let case = AssertUnwindSafe(run_case(&storage, &dir, seed, &mut totals, &context));
            if let Err(panic) = case.catch_unwind().await {
                eprintln!(
                    "corruption: case {i} failed; rerun it alone with \
                     STRAND_CORRUPTION_CASE_SEED={seed}; {}",
                    context.borrow()
                );
                std::panic::resume_unwind(panic);
            }
            std::fs::remove_dir_all(&dir).expect("remove the case dir");
        }
        let _ = std::fs::remove_dir_all(&root);
        totals
    });
    println!(
        "corruption: {} flip-after-durable, {} truncate-after-durable, {} durable-damage cases \
         in {:?}; {} had rolled segments, {} damaged batch bytes (not zeroes); {} recoveries \
         cut below the appended end ({} offsets of non-durable or damaged data dropped); \
         {} partitionLeaderEpoch flips served undetected",
        totals.cases[0],
        totals.cases[1],
        totals.cases[2],
        started.elapsed(),
        totals.rolled,
        totals.damage_in_data,
        totals.cut_below_appended,
        totals.lost_offsets,
        totals.epoch_flips_served,
    );
}

fn random_config(rng: &mut fastrand::Rng) -> LogConfig {
    LogConfig {
        segment_bytes_max: 256 * 1024,
        write_buffer_bytes: 16384,
        writes_in_flight_max: rng.usize(1..=4),
        preallocate_bytes: [0, 4096, 64 * 1024, 1024 * 1024][rng.usize(0..4)],
        tail_cache_bytes: rng.usize(0..128 * 1024),
        index_interval_bytes: rng.u32(512..8192),
        ..LogConfig::default()
    }
}

/// A blob of 1 to 3 random batches, mostly 1; a few are larger than two write
/// buffers.
fn random_blob(rng: &mut fastrand::Rng, step: i64) -> BytesMut {
    let count = if rng.u8(0..4) == 0 {
        rng.usize(2..=3)
    } else {
        1
    };
    let mut blob = BytesMut::new();
    for _ in 0..count {
        let value_len = match rng.u8(0..20) {
            0 => rng.usize(16_000..36_000),
            1..=6 => rng.usize(0..64),
            _ => rng.usize(64..4000),
        };
        let records = rng.usize(1..=3);
        blob.extend_from_slice(&make_batch(rng.u64(..), records, value_len, 1000 + step));
    }
    blob
}

/// Split an appended blob into its batches with their assigned offsets.
fn record_blob(blob: &[u8], base: u64, out: &mut Vec<Appended>) {
    let mut at = 0;
    let mut next = base;
    while at < blob.len() {
        let h = batch::validate(&blob[at..]).expect("a valid batch");
        let mut b = blob[at..at + h.size].to_vec();
        batch::set_base_offset(&mut b, next as i64);
        out.push(Appended {
            base: next,
            last: next + h.offset_count() - 1,
            bytes: Bytes::from(b),
        });
        next += h.offset_count();
        at += h.size;
    }
}

/// True when `got` and `want` differ only in partitionLeaderEpoch, which no checksum
/// covers (by Kafka's design, so a broker can stamp it without recomputing the CRC).
fn epoch_only_difference(got: &[u8], want: &[u8]) -> bool {
    got.len() == want.len()
        && got[..EPOCH_BYTES.start] == want[..EPOCH_BYTES.start]
        && got[EPOCH_BYTES.end..] == want[EPOCH_BYTES.end..]
}

/// One case; `context` describes it (and, once chosen, its damage) for failures that
/// happen inside the engine.
async fn run_case(
    storage: &Rc<DmaStorage>,
    dir: &Path,
    seed: u64,
    totals: &mut Totals,
    context: &RefCell<String>,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let family = match rng.u8(0..10) {
        0..=3 => Family::FlipTail,
        4..=6 => Family::TruncateTail,
        _ => Family::DamageDurable,
    };
    totals.cases[family as usize] += 1;
    let config = random_config(&mut rng);

    // Append, make a prefix durable, append more, stop.
    let log = Log::open(storage.clone(), dir, config.clone())
        .await
        .unwrap_or_else(|e| panic!("case seed {seed}: open: {e}"));
    let n = rng.usize(1..=70);
    let flush_at = rng.usize(0..=n);
    let second_flush_at = (rng.u8(0..3) == 0).then(|| rng.usize(flush_at..=n));
    let mut appended = Vec::new();
    for i in 0..=n {
        if i == flush_at || Some(i) == second_flush_at {
            log.flush()
                .await
                .unwrap_or_else(|e| panic!("case seed {seed}: flush: {e}"));
        }
        if i == n {
            break;
        }
        let blob = random_blob(&mut rng, i as i64);
        let out = log
            .append(blob.clone())
            .await
            .unwrap_or_else(|e| panic!("case seed {seed}: append: {e}"));
        let expected_base = appended.last().map_or(0, |a: &Appended| a.last + 1);
        assert_eq!(
            out.base_offset, expected_base,
            "case seed {seed}: offsets continue"
        );
        record_blob(&blob, out.base_offset, &mut appended);
    }
    let appended_end = log.end_offset();
    assert_eq!(appended_end, appended.last().map_or(0, |a| a.last + 1));
    // Close (everything durable) or drop (a crash: unwritten appends are lost).
    let close = rng.u8(0..4) == 0 || (family == Family::DamageDurable && rng.bool());
    let (durable, ending) = if close {
        log.close()
            .await
            .unwrap_or_else(|e| panic!("case seed {seed}: close: {e}"));
        (appended_end, "closed")
    } else {
        let durable = log.durable_offset();
        drop(log);
        // Writes already submitted complete in the background; let them land before
        // the file is damaged (a dropped log must not write afterwards).
        glommio::timer::sleep(Duration::from_millis(3)).await;
        (durable, "dropped")
    };

    // Locate the durable data in the last segment.
    let last_segment = std::fs::read_dir(dir)
        .expect("list the log dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(parse_segment_file_name))
        .max()
        .unwrap_or_else(|| panic!("case seed {seed}: no segment file"));
    let path = dir.join(segment_file_name(last_segment));
    let mut durable_end_pos = SEGMENT_HEADER_BYTES;
    let mut data_end_pos = SEGMENT_HEADER_BYTES;
    // First batch of the last segment, and the batch extents inside it.
    let first_in_segment = appended.partition_point(|a| a.base < last_segment);
    let mut extents = Vec::new();
    for a in &appended[first_in_segment..] {
        extents.push((data_end_pos, a.base));
        data_end_pos += a.bytes.len() as u64;
        if a.last < durable {
            durable_end_pos = data_end_pos;
        }
    }
    assert!(
        first_in_segment == appended.len() || appended[first_in_segment].base == last_segment,
        "case seed {seed}: segment {last_segment} does not start at a batch boundary"
    );
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open the last segment");
    let file_len = file.metadata().expect("stat").len();

    // Before any damage: the durable batches of the last segment are on disk, in
    // order, exactly at the positions found by walking them from the header page.
    let mut on_disk = vec![0u8; (durable_end_pos - SEGMENT_HEADER_BYTES) as usize];
    file.read_exact_at(&mut on_disk, SEGMENT_HEADER_BYTES)
        .unwrap_or_else(|e| {
            panic!("case seed {seed}: the durable data of segment {last_segment} is not all in the file ({file_len} bytes): {e}")
        });
    let mut at = 0;
    for a in &appended[first_in_segment..] {
        if a.last >= durable {
            break;
        }
        let len = a.bytes.len();
        let size = batch::peek_size(&on_disk[at..]).unwrap_or(0);
        assert!(
            size == len && on_disk[at..at + len] == a.bytes[..],
            "case seed {seed}: durable batch at offset {} is not on disk before any damage",
            a.base
        );
        at += len;
    }

    let damage = choose_damage(&mut rng, family, durable_end_pos, data_end_pos, file_len);
    let case = Case {
        seed,
        family,
        ending,
        config: config.clone(),
        damage,
        durable,
        appended_end,
        last_segment,
        durable_end_pos,
        data_end_pos,
        file_len,
    };
    context.replace(case.to_string());
    match damage {
        Damage::Flip { pos, mask } => {
            let mut byte = [0u8; 1];
            file.read_exact_at(&mut byte, pos)
                .expect("read the byte to flip");
            byte[0] ^= mask;
            file.write_all_at(&byte, pos).expect("flip");
        }
        Damage::Truncate { len } => file.set_len(len).expect("truncate"),
        Damage::None => {}
    }
    // Through the kernel before the engine reads it back with O_DIRECT.
    file.sync_all().expect("sync the damage");
    drop(file);

    if last_segment > 0 {
        totals.rolled += 1;
    }
    if damage.pos() < data_end_pos.min(file_len) {
        totals.damage_in_data += 1;
    }
    // Lower bound of what must survive: everything durable for damage after it;
    // everything before the damaged batch for damage inside the durable data.
    let must_survive = match family {
        Family::FlipTail | Family::TruncateTail => durable,
        // Everything before the damaged batch (or segment, for a header flip) is
        // durable, except when the segment holds no durable data: then only `durable`.
        Family::DamageDurable if damage.pos() < SEGMENT_HEADER_BYTES => last_segment.min(durable),
        Family::DamageDurable => extents
            .iter()
            .take_while(|(pos, _)| *pos <= damage.pos())
            .last()
            .map_or(last_segment, |(_, base)| *base)
            .min(durable),
    };

    let log = Log::open(storage.clone(), dir, config.clone())
        .await
        .unwrap_or_else(|e| panic!("{case}: reopen failed: {e}"));
    let (end, epoch_flips) = check_prefix(&log, &appended, &case).await;
    totals.epoch_flips_served += epoch_flips;
    assert!(
        end >= must_survive,
        "{case}: the recovered log ends at {end}, below {must_survive} which must survive"
    );
    if end < appended_end {
        totals.cut_below_appended += 1;
        totals.lost_offsets += appended_end - end;
    }

    // The recovered log takes appends, and a crash right after a flush keeps them.
    let mut survivors: Vec<Appended> = appended.iter().filter(|a| a.base < end).cloned().collect();
    let blob = random_blob(&mut rng, 10_000);
    let out = log
        .append(blob.clone())
        .await
        .unwrap_or_else(|e| panic!("{case}: append after recovery: {e}"));
    assert_eq!(
        out.base_offset, end,
        "{case}: appends continue the recovered log"
    );
    record_blob(&blob, out.base_offset, &mut survivors);
    log.flush()
        .await
        .unwrap_or_else(|e| panic!("{case}: flush after recovery: {e}"));
    drop(log);
    glommio::timer::sleep(Duration::from_millis(1)).await;
    let log = Log::open(storage.clone(), dir, config)
        .await
        .unwrap_or_else(|e| panic!("{case}: second reopen failed: {e}"));
    let (end2, _) = check_prefix(&log, &survivors, &case).await;
    assert_eq!(
        end2,
        out.last_offset + 1,
        "{case}: the batch appended and flushed after recovery was lost"
    );
    log.close()
        .await
        .unwrap_or_else(|e| panic!("{case}: close: {e}"));
}

fn choose_damage(
    rng: &mut fastrand::Rng,
    family: Family,
    durable_end_pos: u64,
    data_end_pos: u64,
    file_len: u64,
) -> Damage {
    let mask = rng.u8(1..=255);
    match family {
        Family::FlipTail => {
            if file_len <= durable_end_pos {
                return Damage::None;
            }
            // Mostly in the (not durable) data and just past it; sometimes anywhere.
            let near = (data_end_pos + 64).min(file_len);
            let pos = if rng.u8(0..4) != 0 && near > durable_end_pos {
                rng.u64(durable_end_pos..near)
            } else {
                rng.u64(durable_end_pos..file_len)
            };
            Damage::Flip { pos, mask }
        }
        Family::TruncateTail => {
            let upper = data_end_pos.max(durable_end_pos).min(file_len);
            let len = if rng.u8(0..4) != 0 && upper > durable_end_pos {
                rng.u64(durable_end_pos..=upper)
            } else {
                rng.u64(durable_end_pos..=file_len.max(durable_end_pos))
            };
            Damage::Truncate { len }
        }
        Family::DamageDurable => {
            let has_data = durable_end_pos > SEGMENT_HEADER_BYTES;
            if !has_data || rng.u8(0..10) == 0 {
                // The segment header: its magic, fields or CRC.
                let pos = rng.u64(0..SEGMENT_HEADER_USED_BYTES);
                return Damage::Flip { pos, mask };
            }
            let pos = rng.u64(SEGMENT_HEADER_BYTES..durable_end_pos);
            if rng.u8(0..5) == 0 {
                Damage::Truncate { len: pos }
            } else {
                Damage::Flip { pos, mask }
            }
        }
    }
}

/// Read the whole log and check it is a prefix of `appended` made of valid batches;
/// returns its end offset and the number of batches served with a flipped
/// partitionLeaderEpoch.
async fn check_prefix(log: &Log<DmaStorage>, appended: &[Appended], case: &Case) -> (u64, u64) {
    let start = log.start_offset();
    let end = log.end_offset();
    assert_eq!(start, 0, "{case}: start offset");
    let mut offset = start;
    let mut i = 0;
    let mut epoch_flips = 0;
    while offset < end {
        let got = log
            .read(offset, 1 + (offset as usize * 7919) % 100_000)
            .await
            .unwrap_or_else(|e| panic!("{case}: read at {offset} (end {end}): {e}"));
        assert!(
            !got.is_empty(),
            "{case}: empty read at {offset}, below the end {end}"
        );
        for b in got {
            let h = batch::validate(&b)
                .unwrap_or_else(|e| panic!("{case}: served an invalid batch at {offset}: {e}"));
            assert_eq!(
                h.base_offset as u64, offset,
                "{case}: offsets are contiguous"
            );
            let want = appended.get(i).unwrap_or_else(|| {
                panic!("{case}: served a batch at {offset} past everything appended")
            });
            assert_eq!(want.base, offset, "{case}: batch boundaries");
            if b[..] != want.bytes[..] {
                // partitionLeaderEpoch is outside the CRC: a flip there cannot be
                // caught by `batch::validate` and is tolerated (and counted) only
                // when the damage landed exactly on that field.
                let on_epoch = matches!(case.damage, Damage::Flip { pos, .. }
                    if appended_field_at(appended, case, pos) == Some((want.base, EPOCH_BYTES)));
                assert!(
                    on_epoch && epoch_only_difference(&b, &want.bytes),
                    "{case}: the batch at {offset} differs from the one appended"
                );
                epoch_flips += 1;
            }
            offset = h.last_offset() as u64 + 1;
            i += 1;
        }
    }
    assert_eq!(offset, end, "{case}: the last batch ends at the log end");
    (end, epoch_flips)
}

/// When file position `pos` of the last segment falls in the partitionLeaderEpoch
/// field of an appended batch, that batch's base offset and the field.
fn appended_field_at(
    appended: &[Appended],
    case: &Case,
    pos: u64,
) -> Option<(u64, std::ops::Range<usize>)> {
    let first = appended.partition_point(|a| a.base < case.last_segment);
    let mut at = SEGMENT_HEADER_BYTES;
    for a in &appended[first..] {
        let len = a.bytes.len() as u64;
        if pos >= at && pos < at + len {
            let rel = (pos - at) as usize;
            return EPOCH_BYTES.contains(&rel).then_some((a.base, EPOCH_BYTES));
        }
        at += len;
    }
    None
}

/// The smallest case of the random test above that finds a bug: a bit flip in the
/// baseOffset of a batch of the last segment (bytes 0..8, outside the CRC).
/// Recovery must cut the log before that batch, without panicking.
///
/// KNOWN ENGINE BUG (fails today in debug builds; the assertions are the intended
/// behaviour): `scan` in engine/src/segment.rs ends with
/// `debug_assert_eq!(pos, cursor.pos)`, but when it stops at a batch whose base
/// offset "does not continue the log", `BatchCursor::next_batch` has already moved
/// `cursor.pos` past that (CRC-valid) batch while `pos` stays before it, so the
/// assertion fires and `Log::open` panics. Release builds return the right cut.
/// Fix: assert only on a clean stop, e.g.
/// `debug_assert!(stopped_because.is_some() || pos == cursor.pos)`.
#[test]
fn base_offset_flip_in_last_segment_is_cut_without_panicking() {
    let root = test_dir("corruption-base-offset");
    run(move || async move {
        let storage = Rc::new(DmaStorage::open(&root, false).await.expect("storage"));
        let dir = root.join("p0");
        let log = Log::open(storage.clone(), &dir, LogConfig::default())
            .await
            .expect("open");
        let mut appended = Vec::new();
        for i in 0..3 {
            let b = make_batch(i, 1, 100, 1000);
            let out = log.append(b.clone()).await.expect("append");
            record_blob(&b, out.base_offset, &mut appended);
        }
        log.close().await.expect("close");
        // Offset 1's batch says it is offset 17; its CRC still checks out.
        let pos = SEGMENT_HEADER_BYTES + appended[0].bytes.len() as u64 + 7;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(segment_file_name(0)))
            .expect("open segment 0");
        file.write_all_at(&[1 ^ 0x10], pos).expect("flip");
        file.sync_all().expect("sync");
        drop(file);
        let log = Log::open(storage.clone(), &dir, LogConfig::default())
            .await
            .expect("reopen");
        assert_eq!(
            log.end_offset(),
            1,
            "the log is cut before the renumbered batch"
        );
        let got = log.read(0, 1 << 20).await.expect("read");
        assert_eq!(got.len(), 1);
        assert!(
            got[0] == appended[0].bytes,
            "the batch before the cut is intact"
        );
        log.close().await.expect("close");
        let _ = std::fs::remove_dir_all(&root);
    });
}

/// Damage inside a closed (sealed) segment. Recovery trusts a sealed segment whose
/// index matches its size and does not scan it, so the read path is the only line of
/// defence: a read must either fail with an error or return, first, the batch that
/// holds the offset asked for, exactly as appended. It must never skip offsets,
/// renumber a batch, or return nothing below the log end.
///
/// The CRC covers neither baseOffset (bytes 0..8) nor, usefully, a batchLength
/// (bytes 8..12) that makes a batch run past the end of a sealed segment: the read
/// path checks offset continuity from the index entry it starts at, and treats a
/// sealed segment that ends early as corrupt.
#[test]
fn damaged_sealed_segment_is_never_served_silently() {
    let seed = env_u64("STRAND_SEALED_SEED").unwrap_or(0x5EA1_ED00);
    println!("sealed: seed {seed} (replay with STRAND_SEALED_SEED={seed})");
    let root = test_dir("corruption-sealed");
    run(move || async move {
        let storage = Rc::new(DmaStorage::open(&root, false).await.expect("storage"));
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut violations = Vec::new();
        for case in 0..SEALED_CASES {
            let dir = root.join(format!("case-{case:03}"));
            let config = LogConfig {
                segment_bytes_max: 64 * 1024,
                write_buffer_bytes: 16384,
                ..LogConfig::default()
            };
            let log = Log::open(storage.clone(), &dir, config.clone())
                .await
                .expect("open");
            let mut appended = Vec::new();
            while log.stats().segments < 3 {
                let blob = random_blob(&mut rng, 0);
                let out = log.append(blob.clone()).await.expect("append");
                record_blob(&blob, out.base_offset, &mut appended);
            }
            let end = log.end_offset();
            log.close().await.expect("close");
            // The first segment is sealed; damage one byte of one of its batches.
            let first = appended.partition_point(|a| a.base < 1) - 1;
            let second_base = std::fs::read_dir(&dir)
                .expect("list")
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(parse_segment_file_name))
                .filter(|&b| b > 0)
                .min()
                .expect("a second segment");
            let in_first: Vec<&Appended> = appended[first..]
                .iter()
                .take_while(|a| a.base < second_base)
                .collect();
            let victim = rng.usize(0..in_first.len());
            let pos_in_file = SEGMENT_HEADER_BYTES
                + in_first[..victim]
                    .iter()
                    .map(|a| a.bytes.len() as u64)
                    .sum::<u64>();
            let field = match rng.u8(0..3) {
                0 => 0..8,  // baseOffset (not covered by the CRC)
                1 => 8..12, // batchLength
                _ => 21..in_first[victim].bytes.len(),
            };
            let rel = rng.u64(field.start as u64..field.end as u64);
            let mask = rng.u8(1..=255);
            let ctx = format!(
                "sealed: seed {seed}, case {case}: flipped byte {rel} of the batch at offset {} \
                 (file position {}) with mask {mask:#04x}",
                in_first[victim].base,
                pos_in_file + rel
            );
            let path = dir.join(segment_file_name(0));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .expect("open segment 0");
            let mut byte = [0u8; 1];
            file.read_exact_at(&mut byte, pos_in_file + rel)
                .expect("read");
            byte[0] ^= mask;
            file.write_all_at(&byte, pos_in_file + rel).expect("flip");
            file.sync_all().expect("sync");
            drop(file);

            let log = Log::open(storage.clone(), &dir, config)
                .await
                .expect("reopen");
            assert_eq!(
                log.end_offset(),
                end,
                "{ctx}: the sealed segment was trusted"
            );
            if let Some(why) = first_silent_misread(&log, &appended, end).await {
                violations.push(format!("{ctx}: {why}"));
            }
            log.close().await.expect("close");
            std::fs::remove_dir_all(&dir).expect("remove the case dir");
        }
        let _ = std::fs::remove_dir_all(&root);
        assert!(
            violations.is_empty(),
            "{} of {SEALED_CASES} damaged sealed segments were served silently:\n{}",
            violations.len(),
            violations.join("\n")
        );
    });
}

const SEALED_CASES: usize = 60;

/// Read every batch back by its first and last offset; the first read that neither
/// fails nor returns, first, the batch holding the offset exactly as appended.
async fn first_silent_misread(
    log: &Log<DmaStorage>,
    appended: &[Appended],
    end: u64,
) -> Option<String> {
    for a in appended {
        for offset in [a.base, a.last] {
            // An error is the right answer for a batch that no longer checks out.
            let Ok(got) = log.read(offset, 1).await else {
                continue;
            };
            let Some(b) = got.first() else {
                return Some(format!(
                    "read({offset}) below the end {end} returned nothing"
                ));
            };
            let h = batch::validate(b).expect("served batches are valid");
            if !(h.base_offset as u64 <= offset && offset <= h.last_offset() as u64) {
                return Some(format!(
                    "read({offset}) returned the batch for offsets {}..={}",
                    h.base_offset,
                    h.last_offset()
                ));
            }
            if !(b[..] == a.bytes[..] || epoch_only_difference(b, &a.bytes)) {
                return Some(format!("read({offset}) returned other bytes than appended"));
            }
        }
    }
    None
}
