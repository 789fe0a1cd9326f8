//! `strand-node`: the Strand server.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use strand_node::config::NodeConfig;
use strand_node::shard::NodeShared;

/// mimalloc keeps freed large buffers (request frames) for reuse instead of returning
/// them to the kernel, which with glibc's malloc cost page faults and TLB shootdowns on
/// every produce request (seen in `perf` under strand-bench).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes: 1 a runtime failure, 2 a bad configuration.
fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match NodeConfig::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("strand-node: {e}");
            return ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(()) => {
            eprintln!("strand-node: stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("strand-node: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(config: NodeConfig) -> Result<(), String> {
    let node = strand_node::launch::start(config)?;
    eprintln!("{}", node.config().describe());
    watch_signals(node.shared().clone())?;
    node.join()
}

/// SIGTERM/SIGINT: graceful shutdown; a second one exits at once.
fn watch_signals(shared: Arc<NodeShared>) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if shared.shutdown.swap(true, Ordering::Relaxed) {
                    eprintln!("strand-node: second signal {sig}; exiting now");
                    std::process::exit(130);
                }
                eprintln!(
                    "strand-node: signal {sig}: shutting down (finishing requests, syncing logs)"
                );
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}
