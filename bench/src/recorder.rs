//! Where the workers put what they measure: latency histograms for the current
//! interval and running counters. The reporter (run.rs) takes the interval histograms
//! once a second, so each worker only holds a lock long enough to record one response.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, from 1 µs to one hour, 3 significant digits.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// An empty latency histogram with the bench's range and precision.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, LATENCY_MAX_US, SIGNIFICANT_DIGITS) {
        Ok(h) => h,
        // The bounds are constants that the crate accepts; see the test below.
        Err(e) => unreachable!("constant histogram bounds rejected: {e}"),
    }
}

/// Wall-clock nanoseconds since the Unix epoch, read from a monotonic clock anchored
/// once: messages carry these times, so a consumer in another process can compare them,
/// and within one process they never go backwards.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor: Instant,
    anchor_unix_ns: u64,
}

impl Clock {
    pub fn new() -> Self {
        let anchor_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            anchor: Instant::now(),
            anchor_unix_ns,
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.at(Instant::now())
    }

    pub fn at(&self, instant: Instant) -> u64 {
        self.anchor_unix_ns + instant.saturating_duration_since(self.anchor).as_nanos() as u64
    }

    /// The instant a clock reading stands for.
    pub fn instant(&self, unix_ns: u64) -> Instant {
        self.anchor + Duration::from_nanos(unix_ns.saturating_sub(self.anchor_unix_ns))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// What the reporter takes out each interval.
#[derive(Debug)]
pub struct Interval {
    /// Produce acknowledgement latency from each message's intended send time (corrected
    /// for coordinated omission in open-loop runs).
    pub produce: Histogram<u64>,
    /// Produce latency from the moment the request was written (what a closed-loop
    /// client would report; kept to show the difference).
    pub service: Histogram<u64>,
    /// From the message's intended send time to its receipt by a consumer.
    pub end_to_end: Histogram<u64>,
}

impl Interval {
    pub fn new() -> Self {
        Self {
            produce: new_histogram(),
            service: new_histogram(),
            end_to_end: new_histogram(),
        }
    }

    pub fn add(&mut self, other: &Interval) {
        // Same bounds everywhere, so adding cannot fail for range reasons.
        let _ = self.produce.add(&other.produce);
        let _ = self.service.add(&other.service);
        let _ = self.end_to_end.add(&other.end_to_end);
    }
}

impl Default for Interval {
    fn default() -> Self {
        Self::new()
    }
}

/// Running totals since the start of the run (warm-up included).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub sent_messages: u64,
    pub sent_bytes: u64,
    pub acked_messages: u64,
    pub acked_bytes: u64,
    pub consumed_messages: u64,
    pub consumed_bytes: u64,
    pub errors: u64,
}

impl Counts {
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            sent_messages: self.sent_messages - earlier.sent_messages,
            sent_bytes: self.sent_bytes - earlier.sent_bytes,
            acked_messages: self.acked_messages - earlier.acked_messages,
            acked_bytes: self.acked_bytes - earlier.acked_bytes,
            consumed_messages: self.consumed_messages - earlier.consumed_messages,
            consumed_bytes: self.consumed_bytes - earlier.consumed_bytes,
            errors: self.errors - earlier.errors,
        }
    }
}

/// Shared by every worker of a run.
#[derive(Debug)]
pub struct Recorder {
    pub clock: Clock,
    interval: Mutex<Interval>,
    sent_messages: AtomicU64,
    sent_bytes: AtomicU64,
    acked_messages: AtomicU64,
    acked_bytes: AtomicU64,
    consumed_messages: AtomicU64,
    consumed_bytes: AtomicU64,
    errors: AtomicU64,
    /// Error name → count, for the summary.
    error_kinds: Mutex<BTreeMap<String, u64>>,
}

impl Recorder {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            interval: Mutex::new(Interval::new()),
            sent_messages: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            acked_messages: AtomicU64::new(0),
            acked_bytes: AtomicU64::new(0),
            consumed_messages: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            error_kinds: Mutex::new(BTreeMap::new()),
        }
    }

    fn interval(&self) -> MutexGuard<'_, Interval> {
        // A worker that panicked while holding the lock left a histogram that is still
        // a valid histogram: keep going.
        self.interval.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn sent(&self, messages: u64, bytes: u64) {
        self.sent_messages.fetch_add(messages, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One acknowledged batch: the intended send time of each of its messages, and when
    /// its request was written.
    pub fn acked(&self, intended_ns: &[u64], sent_ns: u64, now_ns: u64, bytes: u64) {
        let service_us = micros(now_ns.saturating_sub(sent_ns));
        {
            let mut interval = self.interval();
            for &t in intended_ns {
                record(&mut interval.produce, micros(now_ns.saturating_sub(t)));
            }
            record_n(&mut interval.service, service_us, intended_ns.len() as u64);
        }
        self.acked_messages
            .fetch_add(intended_ns.len() as u64, Ordering::Relaxed);
        self.acked_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Messages a consumer received, with the send time each carried.
    pub fn consumed(&self, intended_ns: &[u64], now_ns: u64, bytes: u64) {
        {
            let mut interval = self.interval();
            for &t in intended_ns {
                record(&mut interval.end_to_end, micros(now_ns.saturating_sub(t)));
            }
        }
        self.consumed_messages
            .fetch_add(intended_ns.len() as u64, Ordering::Relaxed);
        self.consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `count` failures of one kind (a Kafka error name, "timeout", ...).
    pub fn error(&self, kind: &str, count: u64) {
        self.errors.fetch_add(count, Ordering::Relaxed);
        let mut kinds = self.error_kinds.lock().unwrap_or_else(|p| p.into_inner());
        *kinds.entry(kind.to_owned()).or_insert(0) += count;
    }

    pub fn error_kinds(&self) -> BTreeMap<String, u64> {
        self.error_kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes the histograms recorded since the last call.
    pub fn take_interval(&self) -> Interval {
        std::mem::take(&mut *self.interval())
    }

    pub fn counts(&self) -> Counts {
        Counts {
            sent_messages: self.sent_messages.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            acked_messages: self.acked_messages.load(Ordering::Relaxed),
            acked_bytes: self.acked_bytes.load(Ordering::Relaxed),
            consumed_messages: self.consumed_messages.load(Ordering::Relaxed),
            consumed_bytes: self.consumed_bytes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

fn micros(ns: u64) -> u64 {
    (ns / 1000).max(1)
}

fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.min(LATENCY_MAX_US));
}

fn record_n(h: &mut Histogram<u64>, us: u64, n: u64) {
    // Cannot fail: the value is clamped into the histogram's range.
    let _ = h.record_n(us.clamp(1, LATENCY_MAX_US), n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_records_latency_from_the_intended_time_and_the_service_time() {
        let r = Recorder::new(Clock::new());
        let now = 10_000_000_000;
        // Two messages meant for 9 s and 9.5 s, whose request went out at 9.9 s.
        r.acked(&[9_000_000_000, 9_500_000_000], 9_900_000_000, now, 2048);
        let i = r.take_interval();
        assert_eq!(i.produce.len(), 2);
        assert_eq!(i.produce.max(), i.produce.highest_equivalent(1_000_000));
        assert_eq!(i.produce.min(), i.produce.lowest_equivalent(500_000));
        assert_eq!(i.service.len(), 2);
        assert_eq!(i.service.max(), i.service.highest_equivalent(100_000));
        assert_eq!(r.counts().acked_messages, 2);
        assert_eq!(r.counts().acked_bytes, 2048);
        // Taking empties the interval.
        assert_eq!(r.take_interval().produce.len(), 0);
    }

    #[test]
    fn clock_is_monotonic_and_maps_back_to_instants() {
        let c = Clock::new();
        let a = c.now_ns();
        let b = c.now_ns();
        assert!(b >= a);
        let i = Instant::now();
        let ns = c.at(i);
        let back = c.instant(ns);
        assert!(back.max(i) - back.min(i) < Duration::from_micros(1));
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let r = Recorder::new(Clock::new());
        r.error("NOT_LEADER_OR_FOLLOWER", 2);
        r.error("timeout", 1);
        assert_eq!(r.counts().errors, 3);
        assert_eq!(r.error_kinds().get("NOT_LEADER_OR_FOLLOWER"), Some(&2));
    }
}
