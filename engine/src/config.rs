//! Per-log settings. Every size carries its unit; every limit has a bound.

use crate::constants::PAGE_BYTES;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll to a new segment once the active one holds this many bytes.
    pub segment_bytes_max: u64,
    /// Roll to a new segment once the active one is this old (and not empty).
    pub segment_age_ms_max: u64,
    /// Grow segment files by this many bytes at a time (fallocate).
    pub preallocate_bytes: u64,
    /// Size of one DMA write buffer; full buffers are written as one I/O.
    pub write_buffer_bytes: usize,
    /// DMA writes in flight at once; also the number of full buffers that may queue
    /// behind them before appends wait.
    pub writes_in_flight_max: usize,
    /// Memory for already-written recent batches kept for readers.
    pub tail_cache_bytes: usize,
    /// Bytes of batch data between two sparse index entries.
    pub index_interval_bytes: u32,
    /// Delete the oldest closed segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Delete closed segments whose newest batch is older than this.
    pub retention_ms: Option<u64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes_max: 128 * 1024 * 1024,
            segment_age_ms_max: 7 * 24 * 3600 * 1000,
            preallocate_bytes: 16 * 1024 * 1024,
            write_buffer_bytes: 1024 * 1024,
            writes_in_flight_max: 4,
            tail_cache_bytes: 4 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
        }
    }
}

impl LogConfig {
    /// Bytes of memory one open log holds at most in write buffers and cache, besides
    /// the batches of the append in progress (a single batch larger than a buffer
    /// fills several at once).
    pub fn memory_bytes_max(&self) -> usize {
        self.write_buffer_bytes * (2 * self.writes_in_flight_max + 1) + self.tail_cache_bytes
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |field, value: String, fix| Err(Error::InvalidConfig { field, value, fix });
        if self.segment_bytes_max < 64 * 1024 || self.segment_bytes_max > u32::MAX as u64 {
            return bad(
                "segment_bytes_max",
                self.segment_bytes_max.to_string(),
                "use a value between 64 KiB and 4 GiB",
            );
        }
        if self.write_buffer_bytes == 0 || !self.write_buffer_bytes.is_multiple_of(PAGE_BYTES) {
            return bad(
                "write_buffer_bytes",
                self.write_buffer_bytes.to_string(),
                "use a non-zero multiple of 4096",
            );
        }
        if self.writes_in_flight_max == 0 || self.writes_in_flight_max > 64 {
            return bad(
                "writes_in_flight_max",
                self.writes_in_flight_max.to_string(),
                "use a value between 1 and 64",
            );
        }
        if !self.preallocate_bytes.is_multiple_of(PAGE_BYTES as u64) {
            return bad(
                "preallocate_bytes",
                self.preallocate_bytes.to_string(),
                "use a multiple of 4096 (0 disables preallocation)",
            );
        }
        if self.index_interval_bytes == 0 {
            return bad(
                "index_interval_bytes",
                "0".into(),
                "use a positive value such as 4096",
            );
        }
        if self.segment_age_ms_max == 0 {
            return bad(
                "segment_age_ms_max",
                "0".into(),
                "use a positive number of milliseconds",
            );
        }
        Ok(())
    }
}
