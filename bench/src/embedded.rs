//! `--embedded`: a Strand node in this process, on a temporary data directory and a
//! free loopback port, so that one command benchmarks Strand anywhere.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use strand_node::config::{Args, NodeConfig};
use strand_node::launch::Node;

const LISTEN_TIMEOUT: Duration = Duration::from_secs(15);

/// A running embedded node; stopped (logs synced) and its directory removed on `stop`.
#[derive(Debug)]
pub struct EmbeddedNode {
    node: Option<Node>,
    addr: SocketAddr,
    dir: Option<tempfile::TempDir>,
}

/// How to start the embedded node.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedOptions {
    /// Shards (default: one per CPU).
    pub shards: Option<usize>,
    /// Where to make the temporary data directory (default: the system temporary
    /// directory unless it is tmpfs, else the current directory).
    pub parent_dir: Option<PathBuf>,
    /// A disk profile from `strand disk probe`, to size the node's writes.
    pub disk_profile: Option<PathBuf>,
}

impl EmbeddedNode {
    pub fn start(options: &EmbeddedOptions) -> Result<Self> {
        let parent = match &options.parent_dir {
            Some(p) => p.clone(),
            None => default_parent()?,
        };
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("strand-bench-node-")
            .tempdir_in(&parent)
            .with_context(|| format!("cannot make a data directory in {}", parent.display()))?;
        let addr = free_port()?;
        // Through the node's own flags, so the embedded node is configured exactly as
        // `strand-node` would be (the disk profile applied by the node's rules).
        let mut flags = vec![
            "strand-node".to_owned(),
            "--data-dir".to_owned(),
            dir.path().display().to_string(),
            "--kafka-addr".to_owned(),
            addr.to_string(),
            // No admin HTTP server: it would take a fixed port beside a real node.
            "--admin-addr".to_owned(),
            "none".to_owned(),
        ];
        if let Some(shards) = options.shards {
            if shards == 0 {
                bail!("--embedded-shards must be at least 1");
            }
            flags.extend(["--cores".to_owned(), shards.to_string()]);
        }
        if let Some(profile) = &options.disk_profile {
            flags.extend(["--disk-profile".to_owned(), profile.display().to_string()]);
        }
        let args = <Args as clap::Parser>::try_parse_from(&flags)
            .map_err(|e| anyhow!("cannot configure the embedded node: {e}"))?;
        let config = NodeConfig::from_args(args)
            .map_err(|e| anyhow!("cannot configure the embedded node: {e}"))?;
        let node = strand_node::launch::start(config)
            .map_err(|e| anyhow!("cannot start the embedded node: {e}"))?;
        let mut embedded = Self {
            node: Some(node),
            addr,
            dir: Some(dir),
        };
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() >= deadline {
                embedded.stop()?;
                bail!(
                    "the embedded node did not listen on {addr} within {} s",
                    LISTEN_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(embedded)
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub fn data_dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path())
    }

    pub fn shards(&self) -> usize {
        self.node
            .as_ref()
            .map_or(0, |n| n.config().cores.shard_count())
    }

    /// Stops the node (it finishes requests and syncs its logs) and removes its data.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(node) = self.node.take() {
            node.stop();
            node.join()
                .map_err(|e| anyhow!("the embedded node failed: {e}"))?;
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_owned();
            dir.close()
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
        Ok(())
    }
}

impl Drop for EmbeddedNode {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The system temporary directory, unless it is tmpfs (no O_DIRECT): then `.`.
pub fn default_parent() -> Result<PathBuf> {
    let tmp = std::env::temp_dir();
    match strand_engine::storage::dma::is_tmpfs(&tmp) {
        Ok(false) => Ok(tmp),
        _ => {
            let here = std::env::current_dir().context("cannot read the current directory")?;
            eprintln!(
                "strand-bench: {} is tmpfs (no O_DIRECT); the embedded node's data goes \
                 under {} instead (--embedded-dir to choose)",
                tmp.display(),
                here.display()
            );
            Ok(here)
        }
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> Result<SocketAddr> {
    let listener =
        TcpListener::bind("127.0.0.1:0").context("cannot find a free port on 127.0.0.1")?;
    listener
        .local_addr()
        .context("cannot read the free port's address")
}
