//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use strand_engine::batch;

/// Run `f` on a fresh glommio executor in its own thread (glommio keeps per-thread
/// device state, so every test gets a clean one).
pub fn run<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .io_memory(4 << 20)
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor thread")
}

/// A fresh directory under the target dir (never /tmp, which may be tmpfs).
pub fn test_dir(name: &str) -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(base)
        .expect("tempdir")
        .keep();
    dir
}

/// A batch whose content is a function of `(seed, records, len)`, so a reader can
/// recognise it.
pub fn make_batch(seed: u64, records: usize, value_len: usize, timestamp: i64) -> BytesMut {
    let value: Vec<u8> = (0..value_len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8)
        .collect();
    BytesMut::from(&batch::build(timestamp, records, &value)[..])
}

/// Concatenate read results.
pub fn concat(batches: &[Bytes]) -> Vec<u8> {
    batches.iter().flat_map(|b| b.iter().copied()).collect()
}
