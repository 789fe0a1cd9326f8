//! `strand-bench suite --out DIR`: the disk probe, then the standard scenarios against
//! an embedded node, one table, and `durable_produce_vs_disk: X.XX`.
//!
//! Scenarios: {1, 4} producers x {1, 16} partitions, 1 KiB messages, acks=all; each
//! first at its maximum rate (closed loop), then open loop at 50% of that rate with
//! one consumer for end-to-end latency. The disk probe's best sequential O_DIRECT
//! write bandwidth is the physical limit every throughput is compared with.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use strand_tools::probe::{self, DiskProfile, ProbeOptions};

use crate::embedded::{EmbeddedNode, EmbeddedOptions};
use crate::machine::Machine;
use crate::report::plot;
use crate::run::{self, Results};
use crate::settings::{parse_bytes, parse_duration, Acks, Bytes, Codec, Millis, Workload};
use crate::summary::{self, unix_ms};
use crate::Status;

/// The scenario `durable_produce_vs_disk` is measured in, and its half-rate twin.
const HEADLINE_MAX: &str = "p4-n16-max";
const HEADLINE_HALF: &str = "p4-n16-half";

#[derive(Debug, Clone, Args)]
pub struct SuiteArgs {
    /// Directory for summary.json, the disk profile, and per scenario the .hgrm files,
    /// interval logs and plot.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Short scenarios and a quick disk probe: the whole suite in under a minute.
    #[arg(long)]
    pub quick: bool,

    /// Measured time per scenario (default 15s, 3s with --quick).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Millis>,

    /// Warm-up per scenario (default 3s, 1s with --quick).
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Millis>,

    /// Use this disk profile (from `strand disk probe --out FILE`) instead of probing.
    #[arg(long, value_name = "FILE")]
    pub disk_profile: Option<PathBuf>,

    /// Where the embedded node's data directory goes (and what the probe measures).
    #[arg(long, value_name = "DIR")]
    pub embedded_dir: Option<PathBuf>,

    /// Shards of the embedded node (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub embedded_shards: Option<usize>,

    /// Largest batch per partition (1 MiB: the disk probe's best block size here, and
    /// the fewest requests per byte for the client).
    #[arg(long, default_value = "1MiB", value_parser = parse_bytes)]
    pub batch_size: Bytes,

    /// Linger of the producers (5 ms, the Java client's and librdkafka's default: with
    /// 1 ms, 16 partitions and acks=all the node spends its time in per-partition
    /// fdatasyncs of tiny batches, and latency at 10k msg/s was 20x worse).
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub linger: Millis,

    /// Produce requests in flight per producer.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_in_flight: u32,
}

/// One scenario's place in the suite.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub producers: u32,
    pub partitions: i32,
    /// "max" (closed loop) or "50%" (open loop at half the max's rate).
    pub load: &'static str,
}

/// A finished scenario.
#[derive(Debug)]
struct Done {
    scenario: Scenario,
    workload: Workload,
    results: Results,
    produce: Histogram<u64>,
}

#[derive(Debug, Serialize)]
struct ScenarioResult<'a> {
    scenario: &'a Scenario,
    workload: &'a Workload,
    results: &'a Results,
    /// Produce MB/s over the disk probe's sequential write bandwidth.
    produce_vs_disk: f64,
}

#[derive(Debug, Serialize)]
struct SuiteSummary<'a> {
    tool: &'static str,
    kind: &'static str,
    written_at_unix_ms: u64,
    machine: Machine,
    quick: bool,
    disk: &'a DiskProfile,
    embedded_shards: usize,
    scenarios: Vec<ScenarioResult<'a>>,
    /// p4-n16-max: 4 producers, 16 partitions, acks=all, 1 KiB, max rate; produce bytes
    /// per second over the disk's sustained bandwidth.
    durable_produce_vs_disk: Option<f64>,
    /// p4-n16-half: produce p99 at 50% of that rate, over the disk's fdatasync p99.
    half_rate_p99_vs_fdatasync_p99: Option<f64>,
    interrupted: bool,
}

pub fn run(args: &SuiteArgs, interrupt: &AtomicBool) -> Result<Status> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let (duration, warmup) = match args.quick {
        true => (Millis::secs(3), Millis::secs(1)),
        false => (Millis::secs(15), Millis::secs(3)),
    };
    let duration = args.duration.unwrap_or(duration);
    let warmup = args.warmup.unwrap_or(warmup);

    let probe_dir = match &args.embedded_dir {
        Some(d) => d.clone(),
        None => crate::embedded::default_parent()?,
    };
    let profile_path = args.out.join("disk-profile.json");
    let disk = match &args.disk_profile {
        Some(path) => DiskProfile::load(path)
            .with_context(|| format!("cannot read the disk profile {}", path.display()))?,
        None => {
            eprintln!(
                "strand-bench suite: probing the disk under {} ({})",
                probe_dir.display(),
                if args.quick { "quick" } else { "about 30 s" }
            );
            probe::run(&ProbeOptions {
                dir: probe_dir.clone(),
                quick: args.quick,
            })?
        }
    };
    disk.save(&profile_path)
        .with_context(|| format!("cannot write {}", profile_path.display()))?;
    let disk_bps = disk.sequential_write_bytes_per_sec as f64;
    if disk_bps <= 0.0 {
        bail!("the disk profile has no sequential write bandwidth");
    }
    eprintln!(
        "strand-bench suite: disk sequential write {:.1} MB/s, fdatasync p99 {:.3} ms",
        disk_bps / 1e6,
        disk.fdatasync.p99_us as f64 / 1000.0
    );

    let mut node = EmbeddedNode::start(&EmbeddedOptions {
        shards: args.embedded_shards,
        parent_dir: Some(probe_dir),
        disk_profile: Some(profile_path.clone()),
    })?;
    let bootstrap = node.bootstrap();
    let shards = node.shards();
    eprintln!("strand-bench suite: embedded node on {bootstrap}, {shards} shards");

    let mut done: Vec<Done> = Vec::new();
    let mut failure = None;
    'all: for producers in [1u32, 4] {
        for partitions in [1i32, 16] {
            let mut max_rate = None;
            for load in ["max", "50%"] {
                if interrupt.load(Ordering::Relaxed) {
                    break 'all;
                }
                let name = format!(
                    "p{producers}-n{partitions}-{}",
                    if load == "max" { "max" } else { "half" }
                );
                let scenario = Scenario {
                    name: name.clone(),
                    producers,
                    partitions,
                    load,
                };
                let workload = Workload {
                    topic: format!(
                        "suite-p{producers}-n{partitions}-{}",
                        if load == "max" { "max" } else { "half" }
                    ),
                    partitions,
                    producers,
                    consumers: if load == "max" { 0 } else { 1 },
                    message_size: Bytes(1024),
                    batch_size: args.batch_size,
                    linger: args.linger,
                    max_in_flight: args.max_in_flight,
                    acks: Acks::All,
                    compression: Codec::None,
                    rate: max_rate.map(|r: f64| r * 0.5),
                    duration,
                    warmup,
                    out: Some(args.out.join(&name)),
                    label: name.clone(),
                    quiet: true,
                    ..Workload::defaults()
                };
                eprintln!(
                    "strand-bench suite: {name}: {}",
                    summary::describe(&workload)
                );
                let outcome =
                    match run::run(&workload, &bootstrap, workload.out.as_deref(), interrupt) {
                        Ok(o) => o,
                        Err(e) => {
                            failure = Some(e.context(format!("scenario {name}")));
                            break 'all;
                        }
                    };
                let r = outcome.results;
                // Each scenario's data goes once it is measured: eight of them would
                // otherwise fill tens of GB.
                if let Err(e) = strand_tools::client::Client::connect(&bootstrap)
                    .and_then(|mut c| strand_tools::topic::delete(&mut c, &workload.topic))
                {
                    eprintln!(
                        "strand-bench suite: warning: cannot delete topic {}: {e:#}",
                        workload.topic
                    );
                }
                eprintln!(
                    "strand-bench suite: {name}: {:.1} MB/s, p99 {:.3} ms",
                    r.produce.mb_per_sec, r.produce_latency.p99_ms
                );
                if let Some(dir) = &workload.out {
                    summary::write_json(
                        &dir.join("summary.json"),
                        &summary::run_summary(&workload, &bootstrap, &r),
                    )?;
                }
                let problem = match (&r.failure, load) {
                    (Some(f), _) => Some(anyhow::anyhow!("scenario {name}: {f}")),
                    (None, _) if r.errors > 0 => Some(anyhow::anyhow!(
                        "scenario {name}: {} message(s) failed: {:?}",
                        r.errors,
                        r.error_kinds
                    )),
                    (None, "max") if r.produce.messages_per_sec <= 0.0 => {
                        Some(anyhow::anyhow!("scenario {name}: nothing was acknowledged"))
                    }
                    _ => None,
                };
                if load == "max" {
                    max_rate = Some(r.produce.messages_per_sec);
                }
                done.push(Done {
                    scenario,
                    workload,
                    results: r,
                    produce: outcome.totals.produce,
                });
                if problem.is_some() {
                    failure = problem;
                    break 'all;
                }
            }
        }
    }
    node.stop()?;

    let vs_disk = |r: &Results| r.produce.bytes as f64 / r.measured_secs.max(1e-9) / disk_bps;
    // The headline scenarios: 4 producers over 16 partitions (both shards busy), and
    // only if they ran to the end.
    let complete = |name: &str| {
        done.iter()
            .find(|d| d.scenario.name == name && !d.results.interrupted && !d.results.failed)
    };
    let durable = complete(HEADLINE_MAX).map(|d| vs_disk(&d.results));
    let half_p99 = complete(HEADLINE_HALF)
        .map(|d| d.results.produce_latency.p99_ms * 1000.0 / disk.fdatasync.p99_us.max(1) as f64);

    let interrupted = interrupt.load(Ordering::Relaxed);
    let doc = SuiteSummary {
        tool: "strand-bench",
        kind: "suite",
        written_at_unix_ms: unix_ms(),
        machine: Machine::this(),
        quick: args.quick,
        disk: &disk,
        embedded_shards: shards,
        scenarios: done
            .iter()
            .map(|d| ScenarioResult {
                scenario: &d.scenario,
                workload: &d.workload,
                results: &d.results,
                produce_vs_disk: vs_disk(&d.results),
            })
            .collect(),
        durable_produce_vs_disk: durable,
        half_rate_p99_vs_fdatasync_p99: half_p99,
        interrupted,
    };
    summary::write_json(&args.out.join("summary.json"), &doc)?;
    write_plot(&args.out, &done)?;
    print!("{}", table(&done, &disk, vs_disk));
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(r) = half_p99 {
        println!("half_rate_p99_vs_fdatasync_p99: {r:.2}  ({HEADLINE_HALF}: produce p99 over the disk's fdatasync p99)");
    }
    if let Some(d) = durable {
        println!("({HEADLINE_MAX}: 4 producers, 16 partitions, acks=all, 1 KiB messages, max rate, over the disk's sustained bandwidth)");
        println!("durable_produce_vs_disk: {d:.2}");
    }
    Ok(if interrupted {
        Status::Interrupted
    } else {
        Status::Done
    })
}

fn table(done: &[Done], disk: &DiskProfile, vs_disk: impl Fn(&Results) -> f64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ndisk: sequential write {:.1} MB/s (O_DIRECT, sustained, closing fdatasync timed), fdatasync p99 {:.3} ms",
        disk.sequential_write_bytes_per_sec as f64 / 1e6,
        disk.fdatasync.p99_us as f64 / 1000.0
    );
    let _ = writeln!(
        out,
        "{:<16} {:>6} {:>5} {:>11} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "scenario",
        "prod",
        "parts",
        "msg/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "vs disk",
        "errors"
    );
    for Done {
        scenario: s,
        results: r,
        ..
    } in done
    {
        let _ = writeln!(
            out,
            "{:<16} {:>6} {:>5} {:>11.0} {:>9.1} {:>9.3} {:>9.3} {:>9.3} {:>8.2} {:>8}",
            s.name,
            s.producers,
            s.partitions,
            r.produce.messages_per_sec,
            r.produce.mb_per_sec,
            r.produce_latency.p50_ms,
            r.produce_latency.p99_ms,
            r.produce_latency.p999_ms,
            vs_disk(r),
            r.errors
        );
    }
    out
}

/// One plot with the produce latency of every scenario, side by side.
fn write_plot(dir: &Path, done: &[Done]) -> Result<()> {
    let series: Vec<(&str, &Histogram<u64>)> = done
        .iter()
        .map(|d| (d.scenario.name.as_str(), &d.produce))
        .collect();
    let svg = plot::percentile_svg(
        "strand-bench suite: produce ack latency (acks=all, 1 KiB)",
        &series,
    );
    let path = dir.join("latency.svg");
    std::fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))
}
