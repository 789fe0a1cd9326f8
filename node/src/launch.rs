//! Starting a node: check the configuration against the machine, lock the data
//! directory, then start one executor per shard. `strand-node` and the embedded node of
//! `strand-bench --embedded` both start here.

use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::Arc;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::config::{Cores, NodeConfig};
use crate::shard::{self, NodeShared};
use crate::topics::Topics;

/// A running node: its shards and the lock on its data directory.
#[derive(Debug)]
pub struct Node {
    shared: Arc<NodeShared>,
    handles: Vec<ExecutorJoinHandle<Result<(), String>>>,
    /// Held for the life of the node, so two nodes never share a data directory.
    _lock: std::fs::File,
}

/// Starts a node. Returns once every shard is started (not yet necessarily listening:
/// clients retry their first connection, as Kafka clients do).
pub fn start(mut config: NodeConfig) -> Result<Node, String> {
    config.data_dir = std::path::absolute(&config.data_dir).map_err(|e| {
        format!(
            "cannot resolve the data directory {}: {e}",
            config.data_dir.display()
        )
    })?;
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
    let lock = lock_data_dir(dir)?;
    // The shards bind with SO_REUSEPORT, which would let a second node share the
    // port and split the clients between them.
    // A node killed a moment ago may still hold its listener: io_uring tears its ring
    // (and the accept it had queued) down after the process is gone. We hold the
    // data-dir lock, so no other node of this directory runs: wait a little.
    let free_wait = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while port_has_listener(config.kafka_addr.port()) && std::time::Instant::now() < free_wait {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if port_has_listener(config.kafka_addr.port()) {
        return Err(format!(
            "cannot listen for Kafka clients on {}: something already listens on port {} \
             (another strand-node?)",
            config.kafka_addr,
            config.kafka_addr.port()
        ));
    }
    // In a cluster the controller's log is the truth; its replay rebuilds the topics.
    let topics = if config.is_cluster() {
        crate::cluster::check_identity(dir, &config.cluster_id, config.node_id)?;
        Topics::default()
    } else {
        Topics::load(dir)?
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let shared = Arc::new(NodeShared {
        config: config.clone(),
        shutdown: AtomicBool::new(false),
        next_producer_id: AtomicI64::new(producer_id_base(now_ms, config.node_id)),
        drained: std::sync::atomic::AtomicUsize::new(0),
        metrics: crate::metrics::Metrics::new(),
        draining: AtomicBool::new(false),
    });
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
    Ok(Node {
        shared,
        handles,
        _lock: lock,
    })
}

impl Node {
    /// What every shard shares; `shared().stop()` asks the node to shut down.
    pub fn shared(&self) -> &Arc<NodeShared> {
        &self.shared
    }

    /// The configuration the node runs with (the data directory made absolute).
    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// The address Kafka clients connect to.
    pub fn kafka_addr(&self) -> std::net::SocketAddr {
        self.shared.config.kafka_addr
    }

    /// Asks every shard to finish its requests, sync its logs and stop.
    pub fn stop(&self) {
        self.shared.stop();
    }

    /// Waits until every shard has stopped (after `stop`, a signal, or a failure).
    pub fn join(self) -> Result<(), String> {
        let shared = self.shared;
        let mut failure = None;
        for (i, h) in self.handles.into_iter().enumerate() {
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
            None => Ok(()),
        }
    }
}

/// Producer ids handed out are `base + k * PRODUCER_ID_STRIDE`, and `base` is a
/// multiple of the stride plus the node id: ids of different nodes (ids below the
/// stride) never meet, and a restarted node starts past what it handed out before
/// (up to `2^20 / stride` ids per millisecond of uptime).
pub const PRODUCER_ID_STRIDE: i64 = 1024;

fn producer_id_base(now_ms: i64, node_id: u32) -> i64 {
    now_ms
        .saturating_mul(1 << 20)
        .saturating_add(i64::from(node_id) % PRODUCER_ID_STRIDE)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_of_different_nodes_never_meet() {
        let ids = |now_ms, node| {
            let base = producer_id_base(now_ms, node);
            (0..5000).map(move |k| base + k * PRODUCER_ID_STRIDE)
        };
        let a: std::collections::HashSet<i64> = ids(1_700_000_000_000, 1).collect();
        // Another node started in the same millisecond, or a little later.
        assert!(ids(1_700_000_000_000, 2).all(|id| !a.contains(&id)));
        assert!(ids(1_700_000_000_003, 2).all(|id| !a.contains(&id)));
        // The same node restarted a second later starts past what it handed out.
        let restarted = producer_id_base(1_700_000_001_000, 1);
        assert!(restarted > *a.iter().max().expect("ids"));
        assert!(a.iter().all(|&id| id > 0));
    }
}
