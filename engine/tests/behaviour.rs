//! Behaviour of the partition log at its edges: bad input, full disk, tmpfs, the
//! glommio polled-I/O probe, timestamps, rolling and retention.

mod common;

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;

use bytes::BytesMut;
use common::*;
use strand_engine::{batch, BatchError, DmaStorage, Error, Log, LogConfig, SimStorage, Storage};

#[test]
fn bad_batches_are_refused_with_typed_errors_and_nothing_is_written() {
    run(|| async {
        let storage = Rc::new(SimStorage::new());
        let log = Log::open(storage.clone(), Path::new("/sim/bad"), LogConfig::default())
            .await
            .expect("open");
        log.append(make_batch(1, 2, 10, 5))
            .await
            .expect("good batch");
        let good = make_batch(2, 1, 10, 5);

        let mut crc = good.clone();
        let last = crc.len() - 1;
        crc[last] ^= 0xff;
        let mut magic = good.clone();
        magic[16] = 1;
        let mut length = good.clone();
        length[8..12].copy_from_slice(&(-7i32).to_be_bytes());
        let truncated = BytesMut::from(&good[..good.len() - 3]);
        // A good batch followed by a bad one: all or nothing.
        let mut mixed = good.clone();
        mixed.extend_from_slice(&crc);

        type Expect = fn(&BatchError) -> bool;
        let cases: Vec<(BytesMut, Expect)> = vec![
            (crc, |e| matches!(e, BatchError::ChecksumMismatch { .. })),
            (magic, |e| {
                matches!(e, BatchError::UnsupportedMagic { magic: 1 })
            }),
            (length, |e| matches!(e, BatchError::BadLength { .. })),
            (truncated, |e| matches!(e, BatchError::Truncated { .. })),
            (mixed, |e| matches!(e, BatchError::ChecksumMismatch { .. })),
            (BytesMut::new(), |e| matches!(e, BatchError::Empty)),
        ];
        for (bytes, expected) in cases {
            match log.append(bytes).await {
                Err(Error::InvalidBatch { source, .. }) => assert!(expected(&source), "{source:?}"),
                other => panic!("expected InvalidBatch, got {other:?}"),
            }
            assert_eq!(log.end_offset(), 2, "nothing was appended");
        }
        log.flush().await.expect("flush");
        assert_eq!(log.read(0, 1 << 20).await.expect("read").len(), 1);
    });
}

#[test]
fn full_disk_is_a_typed_error_and_appends_resume_once_space_is_freed() {
    run(|| async {
        let storage = Rc::new(SimStorage::new());
        let cfg = LogConfig {
            write_buffer_bytes: 8192,
            preallocate_bytes: 0,
            segment_bytes_max: 64 * 1024,
            ..LogConfig::default()
        };
        let dir = Path::new("/sim/full");
        let log = Log::open(storage.clone(), dir, cfg.clone())
            .await
            .expect("open");
        storage.set_capacity(Some(storage.used_bytes() + 40 * 1024));
        let mut acknowledged = Vec::new();
        let mut saw_full = false;
        for i in 0..200u64 {
            match log.append(make_batch(i, 1, 1000, 5)).await {
                Ok(out) => match log.wait_durable(out.last_offset).await {
                    Ok(()) => acknowledged.push(out.last_offset),
                    Err(e) => {
                        assert!(e.is_disk_full(), "{e}");
                        saw_full = true;
                        break;
                    }
                },
                Err(e) => {
                    assert!(e.is_disk_full(), "{e}");
                    saw_full = true;
                    break;
                }
            }
        }
        assert!(saw_full, "the disk never filled up");
        assert!(!acknowledged.is_empty());
        // While full: appends fail fast with the typed error.
        assert!(matches!(
            log.append(make_batch(999, 1, 10, 5)).await,
            Err(Error::DiskFull { .. })
        ));
        // Free space: the pending write is retried and appends work again.
        storage.set_capacity(None);
        let mut resumed = None;
        for _ in 0..100 {
            glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
            if let Ok(out) = log.append(make_batch(1000, 1, 10, 5)).await {
                resumed = Some(out);
                break;
            }
        }
        let out = resumed.expect("appends resume once space is freed");
        log.wait_durable(out.last_offset)
            .await
            .expect("durable after space is freed");
        // Consistent: contiguous, valid, and every acknowledged offset is there.
        let mut offset = 0;
        while offset < log.end_offset() {
            for b in log.read(offset, 1 << 20).await.expect("read") {
                let h = batch::validate(&b).expect("valid");
                assert_eq!(h.base_offset as u64, offset);
                offset = h.last_offset() as u64 + 1;
            }
        }
        drop(log);
        storage.crash(7);
        let log = Log::open(storage.clone(), dir, cfg).await.expect("recover");
        assert!(log.end_offset() > *acknowledged.last().unwrap_or(&0));
    });
}

#[test]
fn tmpfs_data_dir_is_refused_naming_the_path() {
    let shm = Path::new("/dev/shm");
    if !strand_engine::storage::dma::is_tmpfs(shm).unwrap_or(false) {
        eprintln!("no tmpfs at /dev/shm on this machine; nothing to check");
        return;
    }
    let dir = shm.join(format!("strand-test-{}", std::process::id()));
    let dir2 = dir.clone();
    let err = run(move || async move { DmaStorage::open(&dir2, false).await.map(|_| ()) })
        .expect_err("tmpfs must be refused");
    let msg = err.to_string();
    assert!(matches!(err, Error::Tmpfs { .. }));
    assert!(
        msg.contains(&dir.display().to_string()) && msg.contains("O_DIRECT"),
        "{msg}"
    );
    // The explicit fallback works, buffered.
    let dir3 = dir.clone();
    let buffered =
        run(move || async move { DmaStorage::open(&dir3, true).await.map(|s| s.is_buffered()) });
    assert!(matches!(buffered, Ok(true)));
    let _ = std::fs::remove_dir_all(&dir);
}

/// glommio 0.9 probes polled-I/O support with the first file an executor reads; on
/// a new empty file it concludes wrongly and later reads fail with EOPNOTSUPP
/// (glommio #605, #670). DmaStorage::open primes the probe with a non-empty file.
/// `run` gives a fresh executor thread, so the first file read is a brand-new log's.
#[test]
fn first_read_of_a_brand_new_file_works_on_a_fresh_executor() {
    let dir = test_dir("iopoll");
    run(move || async move {
        let storage = Rc::new(DmaStorage::open(&dir, false).await.expect("storage"));
        let log = Log::open(storage, &dir.join("fresh"), LogConfig::default())
            .await
            .expect("open a new log: its first read is of a new segment");
        let out = log.append(make_batch(3, 1, 100, 9)).await.expect("append");
        log.wait_durable(out.last_offset).await.expect("durable");
        drop(log);
        let storage = Rc::new(DmaStorage::open(&dir, false).await.expect("storage"));
        let log = Log::open(storage, &dir.join("fresh"), LogConfig::default())
            .await
            .expect("reopen reads from disk");
        assert_eq!(log.read(0, 4096).await.expect("DMA read works").len(), 1);
    });
}

/// Every shard opens its storage on the same data directory at the same moment:
/// none may see the probe file another is writing (it once read 0 bytes and the
/// node refused to start).
#[test]
fn shards_opening_a_fresh_data_dir_together_all_start() {
    for round in 0..20 {
        let dir = test_dir(&format!("probe-race-{round}"));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let shards: Vec<_> = (0..4)
            .map(|_| {
                let (dir, barrier) = (dir.clone(), barrier.clone());
                std::thread::spawn(move || {
                    run(move || async move {
                        barrier.wait();
                        DmaStorage::open(&dir, false).await.map(|_| ())
                    })
                })
            })
            .collect();
        for s in shards {
            let opened = s.join().expect("the shard thread");
            assert!(opened.is_ok(), "round {round}: {opened:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn timestamp_lookup_finds_the_first_batch_at_or_after() {
    run(|| async {
        let storage = Rc::new(SimStorage::new());
        let cfg = LogConfig {
            segment_bytes_max: 64 * 1024,
            index_interval_bytes: 1000,
            tail_cache_bytes: 0,
            ..LogConfig::default()
        };
        let dir = Path::new("/sim/ts");
        let log = Log::open(storage.clone(), dir, cfg.clone())
            .await
            .expect("open");
        // Timestamps 1000, 1010, ... one batch of 2 records each.
        for i in 0..300u64 {
            log.append(make_batch(i, 2, 400, 1000 + 10 * i as i64))
                .await
                .expect("append");
        }
        log.flush().await.expect("flush");
        assert!(log.stats().segments > 2);
        for (ts, want) in [
            (0, Some(0)),
            (1000, Some(0)),
            (1001, Some(2)),
            (1995, Some(200)),
            (3990, Some(598)),
            (3991, None),
        ] {
            let got = log
                .find_by_timestamp(ts)
                .await
                .expect("lookup")
                .map(|(o, _)| o);
            assert_eq!(got, want, "timestamp {ts}");
        }
        drop(log);
        let log = Log::open(storage, dir, cfg).await.expect("reopen");
        let got = log
            .find_by_timestamp(2500)
            .await
            .expect("lookup")
            .map(|(o, _)| o);
        assert_eq!(got, Some(300));
    });
}

#[test]
fn segments_roll_by_age_and_retention_deletes_whole_closed_segments() {
    run(|| async {
        let storage = Rc::new(SimStorage::new());
        let now = Rc::new(Cell::new(1_000_000i64));
        let clock = {
            let now = now.clone();
            Rc::new(move || now.get())
        };
        let cfg = LogConfig {
            segment_age_ms_max: 1000,
            retention_ms: Some(5000),
            retention_bytes: None,
            ..LogConfig::default()
        };
        let dir = Path::new("/sim/age");
        let log = Log::open_with_clock(storage.clone(), dir, cfg, clock)
            .await
            .expect("open");
        for i in 0..10u64 {
            log.append(make_batch(i, 1, 100, now.get()))
                .await
                .expect("append");
            now.set(now.get() + 1000);
        }
        log.flush().await.expect("flush");
        assert_eq!(log.stats().segments, 10, "one segment per second of age");
        // Nothing is older than 5 s relative to the first segments yet? now = 1_010_000.
        let out = log.apply_retention().await.expect("retention");
        assert_eq!(out.segments_deleted, 5, "{out:?}");
        assert_eq!(log.start_offset(), 5);
        assert!(matches!(
            log.read(0, 100).await,
            Err(Error::OffsetOutOfRange { .. })
        ));
        // Far in the future every closed segment goes, the active one stays.
        now.set(now.get() + 1_000_000);
        let out = log.apply_retention().await.expect("retention");
        assert_eq!(out.segments_deleted, 4);
        assert_eq!(log.stats().segments, 1);
        assert_eq!(log.start_offset(), 9);
        assert_eq!(
            log.read(9, 100)
                .await
                .expect("active segment still there")
                .len(),
            1
        );
    });
}

#[test]
fn retention_by_bytes_keeps_the_newest_segments() {
    run(|| async {
        let storage = Rc::new(SimStorage::new());
        let cfg = LogConfig {
            segment_bytes_max: 64 * 1024,
            retention_bytes: Some(200 * 1024),
            retention_ms: None,
            ..LogConfig::default()
        };
        let log = Log::open(storage.clone(), Path::new("/sim/bytes"), cfg)
            .await
            .expect("open");
        for i in 0..600u64 {
            log.append(make_batch(i, 1, 1000, 5)).await.expect("append");
        }
        log.flush().await.expect("flush");
        let before = log.stats();
        let out = log.apply_retention().await.expect("retention");
        let after = log.stats();
        assert!(out.segments_deleted > 0);
        assert!(after.size_bytes >= 200 * 1024, "{after:?}");
        assert!(
            after.size_bytes < 200 * 1024 + 64 * 1024 + 8192,
            "{after:?}"
        );
        assert_eq!(after.end_offset, before.end_offset);
        assert_eq!(log.start_offset(), out.start_offset);
    });
}

#[test]
fn bad_config_names_the_field_and_the_fix() {
    let cfg = LogConfig {
        write_buffer_bytes: 1000,
        ..LogConfig::default()
    };
    let msg = cfg.validate().expect_err("unaligned buffer").to_string();
    assert!(
        msg.contains("write_buffer_bytes") && msg.contains("4096"),
        "{msg}"
    );
}

#[test]
fn recovery_reads_only_the_active_segment_whatever_the_log_size() {
    run(|| async {
        let storage = Rc::new(SimStorage::new());
        let cfg = LogConfig {
            segment_bytes_max: 64 * 1024,
            preallocate_bytes: 64 * 1024,
            ..LogConfig::default()
        };
        let dir = Path::new("/sim/recovery");
        let mut read_per_open = Vec::new();
        let mut next = 0u64;
        for round in 0..3 {
            let log = Log::open(storage.clone(), dir, cfg.clone())
                .await
                .expect("open");
            // Each round adds ~20 segments.
            for _ in 0..1300 {
                log.append(make_batch(next, 1, 1000, 5))
                    .await
                    .expect("append");
                next += 1;
            }
            log.close().await.expect("close");
            let before = storage.read_bytes();
            let log = Log::open(storage.clone(), dir, cfg.clone())
                .await
                .expect("reopen");
            let read = storage.read_bytes() - before;
            let index_bytes: usize = storage
                .files()
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "index"))
                .filter_map(|p| storage.file_len(p))
                .sum();
            read_per_open.push(read - index_bytes as u64);
            assert!(log.stats().segments >= 20 * (round + 1));
            drop(log);
        }
        // Apart from the small index files, recovery reads only the active segment
        // (its header page and one scan chunk), however many segments the log has.
        let bound = strand_engine::constants::SCAN_READ_BYTES as u64 + 4096;
        for read in &read_per_open {
            assert!(
                *read <= bound,
                "read {read} bytes besides indexes: {read_per_open:?}"
            );
        }
        assert_eq!(
            read_per_open[0], read_per_open[2],
            "recovery work grew with the log"
        );
    });
}

#[test]
fn missing_or_corrupt_indexes_are_rebuilt() {
    run(|| async {
        let storage = Rc::new(SimStorage::new());
        let cfg = LogConfig {
            segment_bytes_max: 64 * 1024,
            index_interval_bytes: 512,
            tail_cache_bytes: 0,
            ..LogConfig::default()
        };
        let dir = Path::new("/sim/reindex");
        let log = Log::open(storage.clone(), dir, cfg.clone())
            .await
            .expect("open");
        for i in 0..400u64 {
            log.append(make_batch(i, 1, 500, 100 + i as i64))
                .await
                .expect("append");
        }
        log.close().await.expect("close");
        let indexes: Vec<_> = storage
            .files()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "index"))
            .collect();
        assert!(indexes.len() >= 3, "{indexes:?}");
        storage.remove(&indexes[0]).await.expect("remove an index");
        storage.corrupt(&indexes[1], 70);
        let log = Log::open(storage.clone(), dir, cfg).await.expect("reopen");
        assert!(
            storage.file_len(&indexes[0]).is_some(),
            "missing index rewritten"
        );
        for offset in [0u64, 37, 150, 399] {
            let got = log.read(offset, 1).await.expect("read");
            let h = batch::validate(&got[0]).expect("valid");
            assert_eq!(h.base_offset as u64, offset);
        }
        let found = log
            .find_by_timestamp(250)
            .await
            .expect("lookup")
            .map(|(o, _)| o);
        assert_eq!(found, Some(150));
    });
}

#[test]
fn relative_data_directories_work() {
    let dir = test_dir("relative");
    let cwd = std::env::current_dir().expect("cwd");
    // A path relative to the working directory, with `..` as needed.
    let common = cwd
        .ancestors()
        .find(|a| dir.starts_with(a))
        .expect("a common ancestor");
    let mut relative = std::path::PathBuf::new();
    for _ in cwd.strip_prefix(common).expect("prefix").components() {
        relative.push("..");
    }
    relative.push(dir.strip_prefix(common).expect("prefix"));
    assert!(relative.is_relative());
    run(move || async move {
        let storage = Rc::new(DmaStorage::open(&relative, false).await.expect("storage"));
        let log = Log::open(storage, &relative.join("p"), LogConfig::default())
            .await
            .expect("open a log under a relative path");
        let out = log.append(make_batch(1, 1, 10, 1)).await.expect("append");
        log.wait_durable(out.last_offset).await.expect("durable");
    });
}
