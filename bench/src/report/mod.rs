//! The histogram files a load-generator run leaves beside its JSON summary.
//!
//! Latencies are recorded in `hdrhistogram::Histogram<u64>` in **microseconds**; every file
//! here shows them in **milliseconds** (`value_us / MICROS_PER_MILLI`), as HdrHistogram's own
//! tools expect.
//!
//! - [`write_hgrm`]: the percentile distribution text (`.hgrm`), byte for byte what Java's
//!   `AbstractHistogram.outputPercentileDistribution(out, 5, 1000.0)` prints, so the files load
//!   into HdrHistogram's `plotFiles.html` and sit next to wrk2's.
//! - [`HistogramLog`]: the interval log (`.hlog`, log format 1.3 with V2 deflate histograms),
//!   one line per interval, readable by Java's `HistogramLogReader` / `HistogramLogProcessor`,
//!   HdrHistogram_py's `HistogramLogReader` and this crate's `IntervalLogIterator`.
//! - [`percentile_svg`]: a latency-by-percentile plot of one or more histograms.
//!
//! **Invariant:** this module performs no I/O of its own and reads no clock: callers hand it a
//! writer and the run's start time, so a test can check every byte.

pub mod hgrm;
pub mod hlog;
pub mod plot;

pub use hgrm::{percentile_rows, write_hgrm, PercentileRow, PERCENTILE_TICKS_PER_HALF_DISTANCE};
pub use hlog::HistogramLog;
pub use plot::percentile_svg;

/// The unit ratio from the recorded unit (µs) to the unit shown in every file (ms).
pub const MICROS_PER_MILLI: f64 = 1000.0;
