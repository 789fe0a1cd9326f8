//! Random sequences of append, read, truncate, roll, retention, reopen and crash,
//! checked against a plain in-memory model (after Redpanda's storage opfuzz). Runs on
//! the simulated disk, whose crashes lose or tear unsynced writes (turmoil's model).
//! A failing run prints its seed; `STRAND_MODEL_SEED=N` replays it.

mod common;

use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use common::*;
use strand_engine::{batch, Log, LogConfig, SimStorage};

/// What the log must hold: every batch appended and not truncated, by base offset.
#[derive(Default)]
struct Model {
    batches: Vec<(u64, Bytes)>,
    start: u64,
}

impl Model {
    fn end(&self) -> u64 {
        self.batches.last().map_or(self.start, |(_, b)| {
            batch::validate(b)
                .map(|h| h.last_offset() as u64 + 1)
                .unwrap_or(0)
        })
    }
    fn truncate(&mut self, offset: u64) {
        self.batches.retain(|(base, _)| *base < offset);
    }
}

fn config(rng: &mut fastrand::Rng) -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 * 1024 * rng.u64(1..4),
        write_buffer_bytes: 4096 * rng.usize(1..6),
        writes_in_flight_max: rng.usize(1..4),
        tail_cache_bytes: rng.usize(0..64 * 1024),
        index_interval_bytes: rng.u32(100..3000),
        preallocate_bytes: 4096 * rng.u64(0..8),
        retention_bytes: Some(256 * 1024),
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// Read everything from `from` and compare with the model.
async fn check_contents(log: &Log<SimStorage>, model: &Model, seed: u64) {
    assert_eq!(log.end_offset(), model.end(), "seed {seed}: end offset");
    let mut offset = log.start_offset().max(model.start);
    let first = offset;
    let mut expected = model.batches.iter().filter(move |(b, _)| *b >= first);
    while offset < log.end_offset() {
        let got = log
            .read(offset, 1 + offset as usize % 20_000)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: read at {offset}: {e}"));
        assert!(!got.is_empty(), "seed {seed}: empty read at {offset}");
        for b in got {
            let (base, want) = expected
                .next()
                .unwrap_or_else(|| panic!("seed {seed}: extra batch"));
            let h = batch::validate(&b).expect("served batches are valid");
            assert_eq!(h.base_offset as u64, *base, "seed {seed}: base offset");
            assert_eq!(&b[..], &want[..], "seed {seed}: batch bytes at {base}");
            offset = h.last_offset() as u64 + 1;
        }
    }
}

async fn run_case(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let storage = Rc::new(SimStorage::new());
    let dir = Path::new("/sim/model");
    let cfg = config(&mut rng);
    let mut log = Log::open(storage.clone(), dir, cfg.clone())
        .await
        .expect("open");
    let mut model = Model::default();
    for step in 0..120 {
        match rng.u32(0..100) {
            0..=54 => {
                let n = rng.usize(1..4);
                let mut blob = bytes::BytesMut::new();
                for _ in 0..n {
                    blob.extend_from_slice(&make_batch(
                        rng.u64(..),
                        rng.usize(1..5),
                        rng.usize(0..3000),
                        step,
                    ));
                }
                let out = log.append(blob.clone()).await.expect("append");
                assert_eq!(
                    out.base_offset,
                    model.end(),
                    "seed {seed}: offsets continue"
                );
                let mut at = 0;
                let mut next = out.base_offset;
                while at < blob.len() {
                    let h = batch::validate(&blob[at..]).expect("valid");
                    let mut b = blob[at..at + h.size].to_vec();
                    batch::set_base_offset(&mut b, next as i64);
                    model.batches.push((next, Bytes::from(b)));
                    next += h.offset_count();
                    at += h.size;
                }
            }
            55..=64 => {
                if log.end_offset() > log.start_offset() {
                    log.wait_durable(log.end_offset() - 1)
                        .await
                        .expect("durable");
                    assert!(log.durable_offset() >= model.end());
                }
            }
            65..=74 => check_contents(&log, &model, seed).await,
            75..=80 => {
                // Truncate to a random batch boundary still in the log.
                let live: Vec<u64> = model
                    .batches
                    .iter()
                    .map(|(b, _)| *b)
                    .filter(|b| *b >= log.start_offset())
                    .collect();
                if let Some(&to) = live.get(rng.usize(0..live.len().max(1))) {
                    log.truncate_to(to)
                        .await
                        .unwrap_or_else(|e| panic!("seed {seed}: truncate to {to}: {e}"));
                    model.truncate(to);
                }
            }
            81..=85 => {
                let out = log.apply_retention().await.expect("retention");
                assert!(out.start_offset <= model.end());
                model.start = out.start_offset;
                model.batches.retain(|(b, _)| *b >= out.start_offset);
            }
            86..=92 => {
                // Clean reopen.
                log.close().await.expect("close");
                log = Log::open(storage.clone(), dir, cfg.clone())
                    .await
                    .expect("reopen");
                assert_eq!(
                    log.start_offset(),
                    model.start,
                    "seed {seed}: start after reopen"
                );
                check_contents(&log, &model, seed).await;
            }
            _ => {
                // Crash: lose or tear whatever was not synced.
                let durable = log.durable_offset();
                drop(log);
                storage.crash(rng.u64(..));
                log = Log::open(storage.clone(), dir, cfg.clone())
                    .await
                    .expect("recover");
                let end = log.end_offset();
                assert!(
                    end >= durable,
                    "seed {seed}: lost durable data: end {end} < durable {durable}"
                );
                // What survived is a prefix of what was appended.
                model.truncate(end);
                assert_eq!(
                    model.end(),
                    end,
                    "seed {seed}: recovered end is not a batch boundary of the model"
                );
                check_contents(&log, &model, seed).await;
            }
        }
    }
    check_contents(&log, &model, seed).await;
}

#[test]
fn random_operations_match_the_model() {
    let seeds: Vec<u64> = match std::env::var("STRAND_MODEL_SEED") {
        Ok(s) => vec![s.parse().expect("STRAND_MODEL_SEED is a number")],
        Err(_) => (0..150).map(|i| 0x5eed_0000 + i).collect(),
    };
    run(move || async move {
        for seed in seeds {
            run_case(seed).await;
        }
    });
}
