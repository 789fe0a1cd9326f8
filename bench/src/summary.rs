//! The final table and summary.json.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::machine::Machine;
use crate::run::{Latency, Results};
use crate::settings::Workload;

/// summary.json of one run.
#[derive(Debug, Serialize)]
pub struct RunSummary<'a> {
    pub tool: &'static str,
    pub kind: &'static str,
    pub written_at_unix_ms: u64,
    pub machine: Machine,
    pub bootstrap: &'a str,
    pub workload: &'a Workload,
    pub results: &'a Results,
}

pub fn run_summary<'a>(
    workload: &'a Workload,
    bootstrap: &'a str,
    results: &'a Results,
) -> RunSummary<'a> {
    RunSummary {
        tool: "strand-bench",
        kind: "run",
        written_at_unix_ms: unix_ms(),
        machine: Machine::this(),
        bootstrap,
        workload,
        results,
    }
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes `doc` as pretty JSON, atomically (temporary file, then rename).
pub fn write_json(path: &Path, doc: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(doc).context("cannot serialize the summary")?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// One line describing a workload.
pub fn describe(w: &Workload) -> String {
    format!(
        "{} producer(s), {} consumer(s), {} topic(s) x {} partition(s), {} messages{}, batch {} linger {}, acks={}, compression {:?}, {}",
        w.producers,
        w.consumers,
        w.topics,
        w.partitions,
        w.message_size,
        if w.keyed { " keyed" } else { "" },
        w.batch_size,
        w.linger,
        match w.acks {
            crate::settings::Acks::None => "0",
            crate::settings::Acks::Leader => "1",
            crate::settings::Acks::All => "all",
        },
        w.compression,
        match w.rate {
            Some(r) => format!("open loop at {r:.0} msg/s"),
            None => "closed loop (max rate)".to_owned(),
        }
    )
}

/// The final table: one block of rows per run.
pub fn table(w: &Workload, runs: &[(&str, &Results)]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n{}", describe(w));
    let _ = writeln!(
        out,
        "{:<28} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "msg/s", "MiB/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "count"
    );
    for (label, r) in runs {
        let row = |out: &mut String, name: &str, rate: Option<(f64, f64)>, l: &Latency| {
            let (msgs, mib) = rate.map_or(("".to_owned(), "".to_owned()), |(m, b)| {
                (format!("{m:.0}"), format!("{b:.1}"))
            });
            let _ = writeln!(
                out,
                "{:<28} {:>11} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9}",
                name, msgs, mib, l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
            );
        };
        let prefix = if runs.len() > 1 {
            format!("{label}: ")
        } else {
            String::new()
        };
        row(
            &mut out,
            &format!("{prefix}produce ack"),
            Some((r.produce.messages_per_sec, r.produce.mib_per_sec)),
            &r.produce_latency,
        );
        row(
            &mut out,
            &format!("{prefix}  from request write"),
            None,
            &r.produce_service_latency,
        );
        if r.end_to_end_latency.count > 0 {
            row(
                &mut out,
                &format!("{prefix}end-to-end"),
                Some((r.consume.messages_per_sec, r.consume.mib_per_sec)),
                &r.end_to_end_latency,
            );
        }
        let _ = writeln!(
            out,
            "{prefix}measured {:.1} s, errors {}{}{}",
            r.measured_secs,
            r.errors,
            if r.error_kinds.is_empty() {
                String::new()
            } else {
                format!(" {:?}", r.error_kinds)
            },
            if r.interrupted { " (interrupted)" } else { "" }
        );
    }
    out
}
