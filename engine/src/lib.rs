//! Strand's storage engine: partition logs of Kafka RecordBatch v2 bytes in segment
//! files written with O_DIRECT through io_uring (glommio DMA files).
//!
//! **Architecture invariant:** the engine knows nothing about Kafka requests, the
//! network or other shards. A [`Log`] lives on one executor thread and only that
//! thread touches it.
//!
//! The on-disk format is documented in `docs/format.md`.

pub mod batch;
pub mod config;
pub mod constants;
pub mod error;
pub mod index;
pub mod log;
pub mod process;
pub mod segment;
pub mod signal;
pub mod storage;
pub mod tail_cache;

pub use config::LogConfig;
pub use error::{BatchError, Error, Result};
pub use log::{AppendOutcome, Log, LogStats, RetentionOutcome};
pub use storage::dma::{DmaStorage, IoObserver};
pub use storage::sim::SimStorage;
pub use storage::{Storage, StorageFile};
