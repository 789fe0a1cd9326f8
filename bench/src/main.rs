//! `strand-bench`: a Kafka load generator with HdrHistogram output.
//!
//! `strand-bench [run] [FLAGS]` runs one workload against `--bootstrap` (any Kafka
//! cluster) or `--embedded` (a Strand node in this process); `strand-bench suite --out
//! DIR` runs the disk probe and the standard scenarios. Exit codes: 0 done, 1 failed,
//! 2 bad command line, 130 interrupted (the files gathered so far are written).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use clap::{Parser, Subcommand};
use strand_bench::embedded::{EmbeddedNode, EmbeddedOptions};
use strand_bench::settings::Workload;
use strand_bench::suite::SuiteArgs;
use strand_bench::{run, suite, summary};

#[derive(Debug, Parser)]
#[command(
    name = "strand-bench",
    version,
    about = "Kafka load generator with HdrHistogram latency output",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: Workload,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one workload (the default).
    Run(Workload),
    /// The disk probe, then the standard scenarios against an embedded node.
    Suite(SuiteArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let interrupt = Arc::new(AtomicBool::new(false));
    if let Err(e) = watch_interrupts(&interrupt) {
        eprintln!("strand-bench: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Some(Command::Suite(args)) => suite::run(&args, &interrupt),
        Some(Command::Run(w)) => run_one(&w, &interrupt),
        None => run_one(&cli.run, &interrupt),
    };
    match result {
        Ok(Status::Done) => ExitCode::SUCCESS,
        Ok(Status::Interrupted) => ExitCode::from(130),
        Err(e) => {
            eprintln!("strand-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

use strand_bench::Status;

/// mimalloc keeps freed large buffers (request frames, batches) for reuse instead of
/// returning them to the kernel, which with glibc's malloc cost page faults and TLB
/// shootdowns on every produce request (seen in `perf`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ctrl-C (or SIGTERM) stops the run and writes what was measured; a second one exits.
fn watch_interrupts(flag: &Arc<AtomicBool>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(())
}

fn run_one(workload: &Workload, interrupt: &AtomicBool) -> Result<Status> {
    workload.validate()?;
    let mut node = None;
    let bootstrap = if workload.embedded {
        let n = EmbeddedNode::start(&EmbeddedOptions {
            shards: workload.embedded_shards,
            parent_dir: workload.embedded_dir.clone(),
            disk_profile: None,
        })?;
        let b = n.bootstrap();
        eprintln!(
            "strand-bench: embedded node on {b} ({} shards, data in {})",
            n.shards(),
            n.data_dir()
                .map_or_else(String::new, |d| d.display().to_string())
        );
        node = Some(n);
        b
    } else {
        workload.bootstrap.clone()
    };
    let out: Option<PathBuf> = workload.out.clone();
    let outcome = run::run(workload, &bootstrap, out.as_deref(), interrupt);
    if let Some(mut n) = node {
        n.stop()?;
    }
    let outcome = outcome?;
    print!(
        "{}",
        summary::table(workload, &[(&workload.label, &outcome.results)])
    );
    if let Some(dir) = &out {
        let doc = summary::run_summary(workload, &bootstrap, &outcome.results);
        summary::write_json(&dir.join("summary.json"), &doc)?;
        println!("files: {}", dir.display());
    }
    if let Some(failure) = &outcome.results.failure {
        anyhow::bail!("the run failed: {failure}");
    }
    if outcome.results.errors > 0 {
        anyhow::bail!(
            "{} message(s) failed: {:?} (their latencies are not in the histograms)",
            outcome.results.errors,
            outcome.results.error_kinds
        );
    }
    Ok(if outcome.results.interrupted {
        Status::Interrupted
    } else {
        Status::Done
    })
}
