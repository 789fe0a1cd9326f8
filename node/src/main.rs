//! `strand-node`: the Strand server.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use strand_node::config::{Cores, NodeConfig};
use strand_node::shard::{self, NodeShared};
use strand_node::topics::Topics;

/// Exit codes: 1 a runtime failure, 2 a bad configuration.
fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match NodeConfig::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("strand-node: {e}");
            return ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strand-node: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(mut config: NodeConfig) -> Result<(), String> {
    config.data_dir = std::path::absolute(&config.data_dir).map_err(|e| {
        format!(
            "cannot resolve the data directory {}: {e}",
            config.data_dir.display()
        )
    })?;
    eprintln!("{}", config.describe());
    let shards = config.cores.shard_count();
    let memlock = strand_engine::process::raise_memlock(shards, config.io_memory_bytes);
    if let Some(warning) = memlock.warning() {
        eprintln!("strand-node: warning: {warning}");
    }
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    let on_tmpfs = strand_engine::storage::dma::is_tmpfs(dir)
        .map_err(|e| format!("cannot inspect the data directory {}: {e}", dir.display()))?;
    if on_tmpfs && !config.allow_tmpfs {
        return Err(format!(
            "the data directory {} is on tmpfs, which has no O_DIRECT and loses everything on \
             reboot: use a directory on a real disk (--data-dir), or pass --allow-tmpfs true \
             for a throwaway test",
            dir.display()
        ));
    }
    let _lock = lock_data_dir(dir)?;
    // The shards bind with SO_REUSEPORT, which would let a second node share the
    // port and split the clients between them.
    if port_has_listener(config.kafka_addr.port()) {
        return Err(format!(
            "cannot listen for Kafka clients on {}: something already listens on port {} \
             (another strand-node?)",
            config.kafka_addr,
            config.kafka_addr.port()
        ));
    }
    let topics = Topics::load(dir)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let shared = Arc::new(NodeShared {
        config: config.clone(),
        shutdown: AtomicBool::new(false),
        next_producer_id: AtomicI64::new(now_ms.saturating_mul(1000)),
        drained: std::sync::atomic::AtomicUsize::new(0),
    });
    watch_signals(shared.clone())?;
    let mesh = MeshBuilder::full(shards, 1024);
    let mut handles = Vec::with_capacity(shards);
    for i in 0..shards {
        let placement = match &config.cores {
            Cores::Count(_) => Placement::Unbound,
            Cores::Pinned(cpus) => Placement::Fixed(cpus[i]),
        };
        let (shared, mesh, topics) = (shared.clone(), mesh.clone(), topics.clone());
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{i}"))
            .io_memory(config.io_memory_bytes)
            .spawn(move || shard::run(i, shards, shared, mesh, topics))
            .map_err(|e| format!("cannot start shard {i}: {e}"))?;
        handles.push(handle);
    }
    let mut failure = None;
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(format!("shard {i}: {e}"));
                // One failed shard brings the node down: a half-serving node is worse.
                shared.stop();
            }
            Err(e) => {
                failure.get_or_insert(format!("shard {i} stopped: {e}"));
                shared.stop();
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => {
            eprintln!("strand-node: stopped cleanly");
            Ok(())
        }
    }
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

/// Hold an exclusive lock on the data directory for the life of the process, so two
/// nodes never share one.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a valid, open descriptor owned by `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(format!(
            "the data directory {} is in use by another strand-node (lock {} is held)",
            dir.display(),
            path.display()
        ));
    }
    Ok(file)
}

/// True when a socket in LISTEN state holds `port` (from /proc/net/tcp and tcp6). A
/// plain test bind will not do: sockets of a killed node's old connections keep the
/// port without listening on it.
fn port_has_listener(port: u16) -> bool {
    const LISTEN: &str = "0A";
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let mut cols = line.split_whitespace();
                let local = cols.nth(1).unwrap_or("");
                let state = cols.nth(1).unwrap_or("");
                let local_port = local
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                state == LISTEN && local_port == Some(port)
            })
        })
    })
}
