mod common;
use common::*;
use std::rc::Rc;
use strand_engine::{DmaStorage, Log, LogConfig, SimStorage};

#[test]
fn dma_append_read_reopen() {
    let dir = test_dir("smoke");
    run(move || async move {
        let storage = Rc::new(DmaStorage::open(&dir, false).await.expect("storage"));
        let log = Log::open(storage.clone(), &dir.join("p0"), LogConfig::default())
            .await
            .expect("open");
        let mut expected = Vec::new();
        for i in 0..100u64 {
            let out = log
                .append(make_batch(i, 3, 100, 1000 + i as i64))
                .await
                .expect("append");
            assert_eq!(out.base_offset, i * 3);
            expected.push(out);
        }
        log.wait_durable(299).await.expect("durable");
        assert_eq!(log.durable_offset(), 300);
        let got = log.read(0, 1 << 20).await.expect("read");
        assert_eq!(got.len(), 100);
        let got = log.read(151, 1).await.expect("read");
        assert_eq!(got.len(), 1);
        log.close().await.expect("close");
        let log = Log::open(storage.clone(), &dir.join("p0"), LogConfig::default())
            .await
            .expect("reopen");
        assert_eq!(log.end_offset(), 300);
        let got = log.read(0, 1 << 20).await.expect("read");
        assert_eq!(got.len(), 100);
        let got = log.read(151, 1).await.expect("read");
        assert_eq!(got.len(), 1);
        let h = strand_engine::batch::validate(&got[0]).expect("valid");
        assert_eq!(h.base_offset, 150);
    });
}

#[test]
fn sim_append_read_reopen() {
    run(|| async {
        let storage = Rc::new(SimStorage::new());
        let dir = std::path::Path::new("/sim/p0");
        let cfg = LogConfig {
            segment_bytes_max: 64 * 1024,
            write_buffer_bytes: 16384,
            ..Default::default()
        };
        let log = Log::open(storage.clone(), dir, cfg.clone())
            .await
            .expect("open");
        for i in 0..200u64 {
            log.append(make_batch(i, 2, 500, 1000 + i as i64))
                .await
                .expect("append");
        }
        log.flush().await.expect("flush");
        let st = log.stats();
        assert!(st.segments > 1, "{st:?}");
        drop(log);
        let log = Log::open(storage.clone(), dir, cfg).await.expect("reopen");
        assert_eq!(log.end_offset(), 400);
        let mut off = 0;
        while off < 400 {
            let got = log.read(off, 10000).await.expect("read");
            assert!(!got.is_empty());
            for b in &got {
                let h = strand_engine::batch::validate(b).expect("valid");
                assert_eq!(h.base_offset as u64, off);
                off = h.last_offset() as u64 + 1;
            }
        }
    });
}
