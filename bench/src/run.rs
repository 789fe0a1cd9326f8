//! One benchmark run: prepare the topics, start the producers and consumers, report
//! every second, and gather the results.

use std::fs::File;
use std::io::BufWriter;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cluster::{self, Layout};
use crate::connection::AsSocket;
use crate::consumer::{self, ConsumerPlan};
use crate::producer::{self, ProducerPlan};
use crate::recorder::{Clock, Counts, Interval, Recorder};
use crate::report::hlog::HistogramLog;
use crate::report::{hgrm, plot};
use crate::settings::{Acks, Workload};

/// Time between the workers starting and the schedule starting, so that every producer
/// has its connections before its first message is due.
const START_DELAY: Duration = Duration::from_millis(300);
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How often the reporter looks at Ctrl-C and the workers while it waits for a tick.
const SLEEP_SLICE: Duration = Duration::from_millis(20);
/// After a stop, how long workers may take to finish before their sockets are closed.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Microseconds to milliseconds, for .hgrm and the plot.
const US_PER_MS: f64 = crate::report::MICROS_PER_MILLI;

/// Shared by every producer and consumer of a run.
#[derive(Debug)]
pub struct RunContext {
    pub workload: Workload,
    pub layout: Layout,
    pub recorder: Recorder,
    /// When the producers start their schedule.
    pub start: Instant,
    /// When the producers stop making messages.
    pub end: Instant,
    /// Set on Ctrl-C or a fatal error: stop now.
    pub stop: AtomicBool,
    /// Producers still running.
    producers_running: AtomicUsize,
    /// The first fatal error of any worker.
    failure: Mutex<Option<String>>,
    /// Every broker connection of the run, to close them if a stop takes too long.
    sockets: Mutex<Vec<TcpStream>>,
}

impl RunContext {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn producers_done(&self) -> bool {
        self.producers_running.load(Ordering::Relaxed) == 0
    }

    /// Records a fatal error and stops the run.
    pub fn fail(&self, error: &anyhow::Error) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert_with(|| format!("{error:#}"));
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Keeps a handle on a worker's connection, so a stop can close it.
    pub fn watch_socket(&self, socket: &impl AsSocket) {
        if let Some(s) = socket.socket_clone() {
            self.sockets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(s);
        }
    }

    fn close_sockets(&self) {
        for s in self
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Latency percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / US_PER_MS;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / US_PER_MS,
        }
    }
}

/// Throughput over the measured time.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rate {
    pub messages: u64,
    pub bytes: u64,
    pub messages_per_sec: f64,
    pub mib_per_sec: f64,
    pub mb_per_sec: f64,
}

impl Rate {
    fn of(messages: u64, bytes: u64, seconds: f64) -> Self {
        if seconds <= 0.0 {
            return Self {
                messages,
                bytes,
                messages_per_sec: 0.0,
                mib_per_sec: 0.0,
                mb_per_sec: 0.0,
            };
        }
        let s = seconds;
        Self {
            messages,
            bytes,
            messages_per_sec: messages as f64 / s,
            mib_per_sec: bytes as f64 / s / (1 << 20) as f64,
            mb_per_sec: bytes as f64 / s / 1e6,
        }
    }
}

/// What a run measured (the `results` part of summary.json).
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Seconds measured (after the warm-up).
    pub measured_secs: f64,
    /// The target rate (open loop), messages per second, or null (closed loop).
    pub target_rate: Option<f64>,
    /// Messages produced and acknowledged without error (with acks=0: sent).
    pub produce: Rate,
    pub consume: Rate,
    /// Produce acknowledgement latency from the intended send time.
    pub produce_latency: Latency,
    /// Produce latency from the moment the request was written.
    pub produce_service_latency: Latency,
    pub end_to_end_latency: Latency,
    pub errors: u64,
    pub error_kinds: std::collections::BTreeMap<String, u64>,
    /// Ended early by Ctrl-C.
    pub interrupted: bool,
    /// Ended by a failure (`failure` says which).
    pub failed: bool,
    pub failure: Option<String>,
}

/// A finished run: its results and whole-run histograms.
#[derive(Debug)]
pub struct Outcome {
    pub results: Results,
    pub totals: Interval,
}

/// Runs `workload` against `bootstrap`. `interrupt` is the Ctrl-C flag. Writes the
/// interval logs into `out` as it goes, and the rest of the files at the end.
pub fn run(
    workload: &Workload,
    bootstrap: &str,
    out: Option<&Path>,
    interrupt: &AtomicBool,
) -> Result<Outcome> {
    workload.validate()?;
    let layout = cluster::prepare(bootstrap, workload)?;
    if let Some(dir) = out {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the output directory {}", dir.display()))?;
    }
    // Consumers start from the log ends as they are now, before any producer runs.
    let consumer_plans = consumer::plans(&layout, workload.consumers)?;
    let clock = Clock::new();
    let start = Instant::now() + START_DELAY;
    let measure_start = start + workload.warmup.0;
    let end = measure_start + workload.duration.0;
    // The logs exist before anything runs, so a failure to create them stops nothing.
    let mut logs = match out {
        Some(dir) => Some(Logs::create(
            dir,
            UNIX_EPOCH + Duration::from_nanos(clock.at(start)),
        )?),
        None => None,
    };
    let ctx = Arc::new(RunContext {
        workload: workload.clone(),
        layout,
        recorder: Recorder::new(clock),
        start,
        end,
        stop: AtomicBool::new(false),
        producers_running: AtomicUsize::new(workload.producers as usize),
        failure: Mutex::new(None),
        sockets: Mutex::new(Vec::new()),
    });
    let workers = start_workers(&ctx, consumer_plans)?;

    let mut totals = Interval::new();
    let mut so_far = Interval::new();
    // Producers wait for the start, so nothing is counted before it.
    let mut measured_from: Option<(Instant, Counts)> = workload
        .warmup
        .0
        .is_zero()
        .then(|| (start, Counts::default()));
    let mut measured_to: Option<(Instant, Counts)> = None;
    let mut stopped_at: Option<Instant> = None;
    let mut sockets_closed = false;
    let mut tick = start;
    let mut last_tick = (start, Counts::default());
    loop {
        let finished = workers.iter().all(|w| w.is_finished());
        if !finished {
            // Whole seconds from the start, but one tick falls exactly on the end of
            // the warm-up and one on the end, so the measured window is exact.
            let next = tick + REPORT_INTERVAL;
            tick = [measure_start, end]
                .into_iter()
                .find(|&t| tick < t && t < next)
                .unwrap_or(next);
            while Instant::now() < tick && !workers.iter().all(|w| w.is_finished()) {
                if interrupt.load(Ordering::Relaxed) && !ctx.stopped() {
                    break; // Stop at once; later sleeps are not cut short.
                }
                std::thread::sleep(SLEEP_SLICE.min(tick.saturating_duration_since(Instant::now())));
            }
        }
        if interrupt.load(Ordering::Relaxed) && !ctx.stopped() {
            eprintln!("strand-bench: interrupted; stopping and writing what was measured");
            ctx.stop.store(true, Ordering::Relaxed);
        }
        let now = Instant::now();
        if ctx.stopped() {
            let since = *stopped_at.get_or_insert(now);
            // Workers blocked on a broker that does not answer would wait out their
            // socket timeout: close their sockets after a grace period.
            if !sockets_closed && now.duration_since(since) >= STOP_GRACE {
                ctx.close_sockets();
                sockets_closed = true;
            }
        }
        let interval = ctx.recorder.take_interval();
        let counts = ctx.recorder.counts();
        let measuring = measured_from.is_some();
        if measuring {
            totals.add(&interval);
            so_far.add(&interval);
            let offset = last_tick.0.saturating_duration_since(start);
            let length = now.saturating_duration_since(last_tick.0);
            if let Some(Err(e)) = logs.as_mut().map(|l| l.write(offset, length, &interval)) {
                // A full disk, say: stop the run (the workers too) and keep what we have.
                ctx.fail(&e);
                logs = None;
            }
            if measured_to.is_none() && (now >= end || ctx.stopped()) {
                measured_to = Some((now.min(end), counts));
            }
        } else if now >= measure_start {
            measured_from = Some((now, counts));
        }
        if !workload.quiet {
            eprintln!(
                "{}",
                progress_line(
                    now.saturating_duration_since(start),
                    now.saturating_duration_since(last_tick.0),
                    &counts.since(&last_tick.1),
                    if measuring { &so_far } else { &interval },
                    &counts,
                    workload.acks,
                    measuring
                )
            );
        }
        last_tick = (now, counts);
        if finished {
            break;
        }
    }
    let mut failure = ctx.failure();
    for w in workers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(_) => {
                failure.get_or_insert_with(|| "a worker thread panicked".to_owned());
            }
        }
    }
    // No measurement if the run stopped during the warm-up.
    let (secs, delta) = match (measured_from, measured_to) {
        (Some((from_at, from)), Some((to_at, to))) => (
            to_at.saturating_duration_since(from_at).as_secs_f64(),
            to.since(&from),
        ),
        _ => (0.0, Counts::default()),
    };
    let counts = ctx.recorder.counts();
    let results = Results {
        measured_secs: secs,
        target_rate: workload.rate,
        // acks=0 has no acknowledgements: what was sent is all there is to count.
        produce: match workload.acks {
            Acks::None => Rate::of(delta.sent_messages, delta.sent_bytes, secs),
            _ => Rate::of(delta.acked_messages, delta.acked_bytes, secs),
        },
        consume: Rate::of(delta.consumed_messages, delta.consumed_bytes, secs),
        produce_latency: Latency::of(&totals.produce),
        produce_service_latency: Latency::of(&totals.service),
        end_to_end_latency: Latency::of(&totals.end_to_end),
        errors: counts.errors,
        error_kinds: ctx.recorder.error_kinds(),
        interrupted: interrupt.load(Ordering::Relaxed),
        failed: failure.is_some(),
        failure,
    };
    if let Some(dir) = out {
        write_histograms(dir, &workload.label, &totals)?;
    }
    Ok(Outcome { results, totals })
}

/// A worker thread: a producer or a consumer.
type Worker = std::thread::JoinHandle<Result<()>>;

fn start_workers(ctx: &Arc<RunContext>, consumers: Vec<ConsumerPlan>) -> Result<Vec<Worker>> {
    let w = &ctx.workload;
    let partitions = &ctx.layout.partitions;
    let mut workers = Vec::new();
    for id in 0..w.producers {
        let plan = ProducerPlan {
            id,
            partitions: partitions.clone(),
            rate: w.rate.map(|r| r / f64::from(w.producers)),
            phase: w.rate.map_or(Duration::ZERO, |r| {
                Duration::from_secs_f64(f64::from(id) / r)
            }),
        };
        let ctx = ctx.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("producer-{id}"))
                .spawn(move || {
                    let result = producer::run(&ctx, &plan);
                    if let Err(e) = &result {
                        ctx.fail(e);
                    }
                    ctx.producers_running.fetch_sub(1, Ordering::Relaxed);
                    result
                })
                .context("cannot start a producer thread")?,
        );
    }
    for plan in consumers {
        let ctx = ctx.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("consumer-{}", plan.id))
                .spawn(move || {
                    let result = consumer::run(&ctx, &plan);
                    if let Err(e) = &result {
                        ctx.fail(e);
                    }
                    result
                })
                .context("cannot start a consumer thread")?,
        );
    }
    Ok(workers)
}

/// `[  5s] produce 101.2k msg/s 98.8 MiB/s p50 … p99 … | e2e … | errors 0`: rates of
/// the last interval, percentiles of everything measured so far (of the interval
/// during the warm-up).
fn progress_line(
    elapsed: Duration,
    interval_length: Duration,
    interval: &Counts,
    shown: &Interval,
    total: &Counts,
    acks: Acks,
    measuring: bool,
) -> String {
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / US_PER_MS;
    let secs = interval_length.as_secs_f64().max(1e-3);
    let mib = |bytes: u64| bytes as f64 / secs / (1 << 20) as f64;
    let (messages, bytes) = match acks {
        Acks::None => (interval.sent_messages, interval.sent_bytes),
        _ => (interval.acked_messages, interval.acked_bytes),
    };
    let mut line = format!(
        "[{:>4}s] produce {:>7.1}k msg/s {:>7.1} MiB/s  p50 {:>8.3} ms  p99 {:>8.3} ms",
        elapsed.as_secs(),
        messages as f64 / secs / 1e3,
        mib(bytes),
        ms(&shown.produce, 0.5),
        ms(&shown.produce, 0.99),
    );
    if !shown.end_to_end.is_empty() {
        line.push_str(&format!(
            " | consume {:>7.1} MiB/s  e2e p50 {:>8.3} ms  p99 {:>8.3} ms",
            mib(interval.consumed_bytes),
            ms(&shown.end_to_end, 0.5),
            ms(&shown.end_to_end, 0.99)
        ));
    }
    line.push_str(&format!(
        " | errors {}{}",
        total.errors,
        if measuring { "" } else { "  (warm-up)" }
    ));
    line
}

/// The interval logs, one per metric, written as the run goes.
struct Logs {
    produce: HistogramLog<BufWriter<File>>,
    service: HistogramLog<BufWriter<File>>,
    end_to_end: HistogramLog<BufWriter<File>>,
}

impl Logs {
    fn create(dir: &Path, start: SystemTime) -> Result<Self> {
        let open = |name: &str| -> Result<HistogramLog<BufWriter<File>>> {
            let path = dir.join(name);
            let file =
                File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
            HistogramLog::new(BufWriter::new(file), start)
                .with_context(|| format!("cannot write {}", path.display()))
        };
        Ok(Self {
            produce: open("produce.hlog")?,
            service: open("produce-service.hlog")?,
            end_to_end: open("end-to-end.hlog")?,
        })
    }

    fn write(&mut self, offset: Duration, length: Duration, interval: &Interval) -> Result<()> {
        self.produce
            .write_interval(offset, length, &interval.produce, None)
            .context("cannot write produce.hlog")?;
        self.service
            .write_interval(offset, length, &interval.service, None)
            .context("cannot write produce-service.hlog")?;
        self.end_to_end
            .write_interval(offset, length, &interval.end_to_end, None)
            .context("cannot write end-to-end.hlog")?;
        Ok(())
    }
}

/// The whole-run files: one .hgrm per metric and the percentile plot.
fn write_histograms(dir: &Path, label: &str, totals: &Interval) -> Result<()> {
    let write = |name: &str, h: &Histogram<u64>| -> Result<()> {
        let path: PathBuf = dir.join(name);
        let mut out = BufWriter::new(
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?,
        );
        hgrm::write_hgrm(h, &mut out, US_PER_MS)
            .and_then(|()| std::io::Write::flush(&mut out))
            .with_context(|| format!("cannot write {}", path.display()))
    };
    write("produce.hgrm", &totals.produce)?;
    write("produce-service.hgrm", &totals.service)?;
    write("end-to-end.hgrm", &totals.end_to_end)?;
    let svg = plot::percentile_svg(
        &format!("strand-bench: {label}"),
        &[
            ("produce ack (from intended send)", &totals.produce),
            ("produce ack (from request write)", &totals.service),
            ("end-to-end", &totals.end_to_end),
        ],
    );
    let path = dir.join("latency.svg");
    std::fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))
}
