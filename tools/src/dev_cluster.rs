//! `strand dev-cluster up|down`: a local cluster of real `strand-node` processes on
//! 127.0.0.1, like `rpk container start -n 3` without containers.
//!
//! What `up` leaves in DIR:
//!
//! | path | what |
//! |------|------|
//! | `cluster.json` | what was started: ids, ports, pids, paths (`down` and a restart read it) |
//! | `ca/ca.pem`, `ca/ca.key` | the cluster CA (`strand cert ca`) |
//! | `node-<id>/tls/` | `node.pem`, `node.key` (`strand cert node`) and a copy of `ca.pem`: the node's `--tls-dir` |
//! | `node-<id>/data/` | the node's `--data-dir` |
//! | `node-<id>/node.log` | the node's stdout and stderr, appended across restarts |
//!
//! The nodes run in sessions of their own, so they outlive the CLI and a Ctrl-C in its
//! terminal. `down` stops them (SIGTERM, then SIGKILL after its timeout) and keeps the data;
//! `up` on a stopped DIR restarts the same nodes on the same ports; `rm -rf DIR` wipes it.
//!
//! A pid in `cluster.json` is only ever signalled while `/proc/<pid>/cmdline` shows a
//! strand-node serving that node's data directory, so a pid reused by another program
//! after a reboot or a crash is never killed.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::ApiKey;
use serde::{Deserialize, Serialize};

use crate::cert::{self, NodeArgs, CA_CERT, CLUSTER_ID_DEFAULT};
use crate::client::Client;
use crate::topic::metadata_request;

/// The file in DIR that records the cluster.
pub const CLUSTER_FILE: &str = "cluster.json";
/// The node binary's file name.
pub const NODE_BINARY: &str = "strand-node";
/// Every node listens on this address only: a dev cluster is not reachable from elsewhere.
const HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const NODES_DEFAULT: u32 = 3;
const NODES_MAX: i64 = 16;
const CORES_DEFAULT: u32 = 1;
const CORES_MAX: i64 = 64;
/// The replication factor is min(this, nodes) unless given.
const REPLICATION_FACTOR_DEFAULT_MAX: u32 = 3;
/// Attempts at finding `cores` consecutive free UDP ports for one node.
const PORT_RANGE_ATTEMPTS_MAX: u32 = 64;
const READY_POLL_INTERVAL: Duration = Duration::from_millis(100);
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a node that `up` gives up on may take to exit after SIGTERM.
const ABORT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a SIGKILLed node may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Lines of a node's log shown when it fails to come up.
const LOG_TAIL_LINES: usize = 20;
/// At most this much of the end of a log is read to find its tail.
const LOG_TAIL_BYTES_MAX: u64 = 64 * 1024;
/// Days the dev cluster's certificates are valid for.
const CA_DAYS: u32 = 3650;
const NODE_CERT_DAYS: u32 = 3650;

/// `strand dev-cluster ...`: a local cluster of strand-node processes.
#[derive(Debug, Subcommand)]
pub enum DevClusterCommand {
    /// Start N strand-node processes on 127.0.0.1 (ids 1..=N, TLS certificates made for
    /// them) and wait until each lists all of them and they agree on a controller. On a DIR that was stopped with
    /// `down`, restarts the same nodes with their data and ports.
    Up(UpArgs),
    /// Stop the nodes `up` started in DIR (SIGTERM, then SIGKILL after --timeout).
    /// Their data stays in DIR: `up` restarts them, `rm -rf DIR` wipes them.
    Down(DownArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Directory for the certificates, data, logs and cluster.json (created if missing;
    /// it must be empty unless it holds a stopped dev cluster). Not on tmpfs: the nodes
    /// refuse it.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Number of nodes, with ids 1..=N [default: 3].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=NODES_MAX))]
    pub nodes: Option<u32>,
    /// Unpinned shards per node (strand-node --cores N); every node gets the same count
    /// [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=CORES_MAX))]
    pub cores: Option<u32>,
    /// The strand-node binary [default: next to this `strand`, else from $PATH].
    #[arg(long, value_name = "PATH")]
    pub node_binary: Option<PathBuf>,
    /// The cluster id (in the certificates and given to every node) [default: strand-dev].
    #[arg(long, value_name = "ID")]
    pub cluster_id: Option<String>,
    /// How long to wait for every node to answer, list every node as a broker, and
    /// agree on a controller.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The nodes' default replication factor for new topics [default: min(3, N)].
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u32).range(1..=NODES_MAX))]
    pub replication_factor: Option<u32>,
    /// More strand-node flags for every node, after `--` (kept for restarts).
    #[arg(last = true, value_name = "NODE_FLAGS")]
    pub node_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// The directory given to `up`.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// How long the nodes get to exit after SIGTERM before they are killed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `DIR/cluster.json`: the cluster as `up` started it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    pub cluster_id: String,
    /// Every node's Kafka address, comma-separated, for `--bootstrap` / `kcat -b`.
    pub bootstrap: String,
    /// Shards per node: each node's replication port range is this long.
    pub cores: u32,
    pub replication_factor: u32,
    /// The strand-node binary last started.
    pub node_binary: PathBuf,
    /// Extra flags given to every node.
    #[serde(default)]
    pub node_args: Vec<String>,
    /// True once `down` stopped the nodes (or `up` gave up on them); pids are then null.
    #[serde(default)]
    pub stopped: bool,
    pub nodes: Vec<NodeEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub id: u32,
    pub kafka_addr: SocketAddr,
    /// The QUIC address of shard 0; shard s listens on its port + s.
    pub replication_addr: SocketAddr,
    /// The admin HTTP server (/metrics, /healthz, /readyz, /drain); absent in
    /// clusters made before it existed (they run without one).
    #[serde(default)]
    pub admin_addr: Option<SocketAddr>,
    pub pid: Option<u32>,
    pub data_dir: PathBuf,
    pub tls_dir: PathBuf,
    pub log: PathBuf,
}

/// Runs `strand dev-cluster ...` and returns what to print.
pub fn command(cmd: &DevClusterCommand) -> Result<String> {
    match cmd {
        DevClusterCommand::Up(args) => up(args),
        DevClusterCommand::Down(args) => down(&args.dir, args.timeout),
    }
}

// ---------------------------------------------------------------------------------------
// up
// ---------------------------------------------------------------------------------------

fn up(args: &UpArgs) -> Result<String> {
    let binary = find_node_binary(
        args.node_binary.as_deref(),
        current_exe_dir().as_deref(),
        std::env::var_os("PATH").as_deref(),
    )?;
    let file_path = args.dir.join(CLUSTER_FILE);
    let mut cluster = if file_path.exists() {
        prepare_restart(&args.dir, args)?
    } else {
        prepare_new(&args.dir, args)?
    };
    cluster.node_binary = binary;
    if !args.node_args.is_empty() {
        cluster.node_args.clone_from(&args.node_args);
    }
    let controller = start(&args.dir, &mut cluster, args.timeout)?;
    Ok(render_up(&args.dir, &cluster, controller))
}

/// A new cluster in an empty (or missing) DIR: certificates, directories and ports.
fn prepare_new(dir: &Path, args: &UpArgs) -> Result<ClusterFile> {
    let nodes = args.nodes.unwrap_or(NODES_DEFAULT);
    let cores = args.cores.unwrap_or(CORES_DEFAULT);
    let replication_factor = replication_factor(args.replication_factor, nodes)?;
    let cluster_id = args
        .cluster_id
        .clone()
        .unwrap_or_else(|| CLUSTER_ID_DEFAULT.to_owned());
    fs::create_dir_all(dir).with_context(|| format!("creating {} (--dir)", dir.display()))?;
    let not_empty = fs::read_dir(dir)
        .with_context(|| format!("reading {} (--dir)", dir.display()))?
        .next()
        .is_some();
    if not_empty {
        bail!(
            "{} is not empty and holds no {CLUSTER_FILE}: give an empty or new --dir \
             (or remove it: rm -rf {})",
            dir.display(),
            dir.display()
        );
    }
    // Absolute paths: the nodes run in their own directories, and cluster.json must
    // mean the same thing from wherever `down` is run.
    let dir = fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let ca_dir = dir.join("ca");
    cert::make_ca(&ca_dir, &cluster_id, CA_DAYS, false)?;
    let ports = reserve_ports(nodes, cores)?;
    let mut entries = Vec::new();
    for (id, (kafka_addr, replication_addr, admin_addr)) in (1..=nodes).zip(ports) {
        let node_dir = dir.join(format!("node-{id}"));
        let tls_dir = node_dir.join("tls");
        make_node_tls(&ca_dir, id, &tls_dir)?;
        let data_dir = node_dir.join("data");
        fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        entries.push(NodeEntry {
            id,
            kafka_addr,
            replication_addr,
            admin_addr: Some(admin_addr),
            pid: None,
            data_dir,
            tls_dir,
            log: node_dir.join("node.log"),
        });
    }
    Ok(ClusterFile {
        cluster_id,
        bootstrap: bootstrap(&entries),
        cores,
        replication_factor,
        node_binary: PathBuf::new(),
        node_args: Vec::new(),
        stopped: true,
        nodes: entries,
    })
}

/// The certificate and key of node `id`, and a copy of the CA certificate beside them,
/// as strand-node's `--tls-dir` wants them.
fn make_node_tls(ca_dir: &Path, id: u32, tls_dir: &Path) -> Result<()> {
    cert::make_node(&NodeArgs {
        ca: ca_dir.to_path_buf(),
        node_id: id,
        hosts: vec!["localhost".to_owned()],
        ips: vec![HOST],
        out: tls_dir.to_path_buf(),
        days: NODE_CERT_DAYS,
        force: false,
    })?;
    let (from, to) = (ca_dir.join(CA_CERT), tls_dir.join(CA_CERT));
    fs::copy(&from, &to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// A cluster that `down` stopped (or whose nodes all died): the same nodes, ports and
/// data. Flags that would change it are refused rather than ignored.
fn prepare_restart(dir: &Path, args: &UpArgs) -> Result<ClusterFile> {
    let cluster = read_cluster_file(dir)?;
    let live = live_nodes(&cluster);
    if !live.is_empty() {
        let pids: Vec<String> = live
            .iter()
            .map(|(id, pid)| format!("node {id}: pid {pid}"))
            .collect();
        bail!(
            "a dev cluster is already running in {} ({}); run `strand dev-cluster down --dir {}` first",
            dir.display(),
            pids.join(", "),
            dir.display()
        );
    }
    let nodes = u32::try_from(cluster.nodes.len()).unwrap_or(u32::MAX);
    let differs = [
        ("--nodes", args.nodes.map(|n| (n, nodes))),
        ("--cores", args.cores.map(|c| (c, cluster.cores))),
        (
            "--replication-factor",
            args.replication_factor
                .map(|r| (r, cluster.replication_factor)),
        ),
    ]
    .into_iter()
    .filter_map(|(flag, pair)| match pair {
        Some((asked, had)) if asked != had => Some(format!("{flag} {asked} (it has {had})")),
        _ => None,
    })
    .chain(
        args.cluster_id
            .as_ref()
            .filter(|id| **id != cluster.cluster_id)
            .map(|id| format!("--cluster-id {id} (it has {})", cluster.cluster_id)),
    )
    .collect::<Vec<_>>();
    if !differs.is_empty() {
        bail!(
            "{} holds a stopped dev cluster that `up` would restart as it was, but {} \
             differ; drop those flags, or wipe it first (rm -rf {})",
            dir.display(),
            differs.join(", "),
            dir.display()
        );
    }
    for node in &cluster.nodes {
        for path in [&node.tls_dir, &node.data_dir] {
            if !path.is_dir() {
                bail!(
                    "{} is missing: the dev cluster in {} is damaged; wipe it (rm -rf {})",
                    path.display(),
                    dir.display(),
                    dir.display()
                );
            }
        }
    }
    check_ports_free(&cluster, dir)?;
    Ok(cluster)
}

/// Refuses a restart whose ports another program took meanwhile, naming the port.
fn check_ports_free(cluster: &ClusterFile, dir: &Path) -> Result<()> {
    let wipe = format!(
        "stop that program, or wipe the cluster for new ports (rm -rf {})",
        dir.display()
    );
    for node in &cluster.nodes {
        TcpListener::bind(node.kafka_addr).with_context(|| {
            format!(
                "node {}'s Kafka port {} is taken; {wipe}",
                node.id, node.kafka_addr
            )
        })?;
        if let Some(admin) = node.admin_addr {
            TcpListener::bind(admin).with_context(|| {
                format!("node {}'s admin port {} is taken; {wipe}", node.id, admin)
            })?;
        }
        for port in replication_ports(node.replication_addr.port(), cluster.cores)? {
            UdpSocket::bind((node.replication_addr.ip(), port)).with_context(|| {
                format!(
                    "node {}'s replication port {} (UDP) is taken; {wipe}",
                    node.id, port
                )
            })?;
        }
    }
    Ok(())
}

fn replication_ports(base: u16, cores: u32) -> Result<std::ops::RangeInclusive<u16>> {
    let span = u16::try_from(cores.saturating_sub(1)).unwrap_or(u16::MAX);
    let end = base
        .checked_add(span)
        .ok_or_else(|| anyhow!("{cores} replication ports from {base} run past 65535"))?;
    Ok(base..=end)
}

fn replication_factor(asked: Option<u32>, nodes: u32) -> Result<u32> {
    let r = asked.unwrap_or_else(|| nodes.min(REPLICATION_FACTOR_DEFAULT_MAX));
    if r > nodes {
        bail!("--replication-factor {r} is more than the {nodes} nodes");
    }
    Ok(r)
}

/// Starts every node, records them, and waits until they agree on a controller.
/// On failure every node started here is stopped again and the file says so.
fn start(dir: &Path, cluster: &mut ClusterFile, timeout: Duration) -> Result<i32> {
    let peers = peers(&cluster.nodes);
    let all_args: Vec<Vec<String>> = cluster
        .nodes
        .iter()
        .map(|node| cluster_args(node, &peers, cluster))
        .collect();
    let binary = cluster.node_binary.clone();
    let mut children: Vec<(u32, Child)> = Vec::new();
    let mut failure = None;
    for (node, args) in cluster.nodes.iter_mut().zip(all_args) {
        match spawn_node(args, node, &binary) {
            Ok(child) => {
                node.pid = Some(child.id());
                children.push((node.id, child));
            }
            Err(err) => {
                failure = Some(err.context(format!("starting node {}", node.id)));
                break;
            }
        }
    }
    // Recorded before waiting, so that `down` finds the nodes even if this command is
    // interrupted while it waits.
    cluster.stopped = false;
    let result = match failure {
        Some(err) => Err(err),
        None => write_cluster_file(dir, cluster)
            .and_then(|()| wait_ready(cluster, &mut children, timeout)),
    };
    match result {
        Ok(controller) => Ok(controller),
        Err(err) => {
            stop_children(&mut children);
            mark_stopped(cluster);
            let recorded = write_cluster_file(dir, cluster)
                .err()
                .map(|e| format!("\n(and {CLUSTER_FILE} could not be updated: {e:#})"))
                .unwrap_or_default();
            // The advice goes last, below the log tails, where it is seen.
            Err(anyhow!(
                "{err:#}\nthe dev cluster did not come up, and the nodes started were \
                 stopped; logs: {}/node-*/node.log. `strand dev-cluster up --dir {}` \
                 tries again with the same ports, `rm -rf {}` starts afresh{recorded}",
                dir.display(),
                dir.display(),
                dir.display()
            ))
        }
    }
}

/// The command-line flags of one node, apart from any extra `node_args`.
fn cluster_args(node: &NodeEntry, peers: &str, cluster: &ClusterFile) -> Vec<String> {
    let mut args: Vec<String> = [
        ("--node-id", node.id.to_string()),
        ("--cluster-id", cluster.cluster_id.clone()),
        ("--data-dir", node.data_dir.display().to_string()),
        ("--kafka-addr", node.kafka_addr.to_string()),
        ("--cores", cluster.cores.to_string()),
        ("--replication-addr", node.replication_addr.to_string()),
        (
            "--admin-addr",
            node.admin_addr
                .map_or_else(|| "none".to_owned(), |a| a.to_string()),
        ),
        ("--peers", peers.to_owned()),
        ("--tls-dir", node.tls_dir.display().to_string()),
        (
            "--default-replication-factor",
            cluster.replication_factor.to_string(),
        ),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect();
    args.extend(cluster.node_args.iter().cloned());
    args
}

fn spawn_node(args: Vec<String>, node: &NodeEntry, binary: &Path) -> Result<Child> {
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .with_context(|| format!("opening the log {}", node.log.display()))?;
    writeln!(
        log,
        "\n===== strand dev-cluster up: {} {}",
        binary.display(),
        args.join(" ")
    )
    .with_context(|| format!("writing {}", node.log.display()))?;
    let stderr = log
        .try_clone()
        .with_context(|| format!("duplicating the handle of {}", node.log.display()))?;
    let mut command = Command::new(binary);
    command
        .args(&args)
        .current_dir(node.log.parent().unwrap_or(&node.data_dir))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr);
    // The nodes are configured by flags only: a STRAND_* variable meant for some other
    // node (STRAND_ADVERTISED_KAFKA_ADDR, say) would otherwise apply to all of them.
    for (key, _) in std::env::vars_os() {
        if key.as_bytes().starts_with(b"STRAND_") {
            command.env_remove(key);
        }
    }
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        command.env("RUST_BACKTRACE", "1");
    }
    // The output goes to a file, where colour escapes are noise (tracing's fmt layer
    // colours unless NO_COLOR is set).
    if std::env::var_os("NO_COLOR").is_none() {
        command.env("NO_COLOR", "1");
    }
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: setsid is one, and last_os_error only reads
    // errno without allocating.
    unsafe {
        // A session of its own: the node outlives this command, and neither a Ctrl-C
        // in this terminal nor the terminal closing reaches it.
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("running {}", binary.display()))
}

/// How each node answered the last readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    /// The node answered Metadata naming this controller (-1: none yet) and these
    /// brokers (sorted ids).
    Answered {
        controller: i32,
        brokers: Vec<i32>,
    },
    Unreachable(String),
}

fn wait_ready(
    cluster: &ClusterFile,
    children: &mut [(u32, Child)],
    timeout: Duration,
) -> Result<i32> {
    let ids: Vec<u32> = cluster.nodes.iter().map(|n| n.id).collect();
    let deadline = Instant::now() + timeout;
    loop {
        for (id, child) in children.iter_mut() {
            let status = child
                .try_wait()
                .with_context(|| format!("checking on node {id}"))?;
            if let Some(status) = status {
                let log = node_log(cluster, *id);
                bail!(
                    "node {id} exited during startup ({status}); the end of {}:\n{}",
                    log.display(),
                    log_tail(&log, LOG_TAIL_LINES)
                );
            }
        }
        let probes: Vec<Probe> = cluster
            .nodes
            .iter()
            .map(|n| probe_controller(&n.kafka_addr.to_string()))
            .collect();
        if let Some(controller) = agreed_controller(&ids, &probes) {
            return Ok(controller);
        }
        if Instant::now() >= deadline {
            bail!("{}", not_ready_report(cluster, &probes, timeout));
        }
        thread::sleep(READY_POLL_INTERVAL);
    }
}

fn node_log(cluster: &ClusterFile, id: u32) -> PathBuf {
    cluster
        .nodes
        .iter()
        .find(|n| n.id == id)
        .map(|n| n.log.clone())
        .unwrap_or_default()
}

/// ApiVersions (in `connect`) then Metadata for no topics: is the node serving, and
/// whom does it name as controller?
fn probe_controller(addr: &str) -> Probe {
    let answer = Client::connect(addr).and_then(|mut client| {
        let version = client.version(ApiKey::Metadata)?;
        client.send(&metadata_request(Some(&[]), version), version)
    });
    match answer {
        Ok(response) => {
            let mut brokers: Vec<i32> = response.brokers.iter().map(|b| b.node_id.0).collect();
            brokers.sort_unstable();
            Probe::Answered {
                controller: response.controller_id.0,
                brokers,
            }
        }
        Err(err) => Probe::Unreachable(format!("{err:#}")),
    }
}

/// The controller every node names, once every node answers, lists every node as a
/// broker (nodes register with the controller after it is elected, and a client
/// bootstrapped from a node that knows only itself would see a one-broker cluster),
/// and names the same controller, one of them.
fn agreed_controller(ids: &[u32], probes: &[Probe]) -> Option<i32> {
    if probes.len() != ids.len() || !probes.iter().all(|p| problem(ids, p).is_none()) {
        return None;
    }
    let mut named = probes.iter().filter_map(|p| match p {
        Probe::Answered { controller, .. } => Some(*controller),
        Probe::Unreachable(_) => None,
    });
    let first = named.next()?;
    named.all(|c| c == first).then_some(first)
}

/// What keeps one node from being ready on its own, if anything.
fn problem(ids: &[u32], probe: &Probe) -> Option<String> {
    let (controller, brokers) = match probe {
        Probe::Unreachable(why) => return Some(why.clone()),
        Probe::Answered {
            controller,
            brokers,
        } => (*controller, brokers),
    };
    let mut expected: Vec<i32> = ids
        .iter()
        .filter_map(|&id| i32::try_from(id).ok())
        .collect();
    expected.sort_unstable();
    let listed = format!("brokers {brokers:?}");
    if controller < 0 {
        Some(format!("answers ({listed}), but names no controller"))
    } else if !u32::try_from(controller).is_ok_and(|c| ids.contains(&c)) {
        Some(format!(
            "answers ({listed}), naming controller {controller}, which is not a node of this cluster"
        ))
    } else if *brokers != expected {
        Some(format!(
            "answers (controller {controller}), but lists {listed}, not {expected:?}"
        ))
    } else {
        None
    }
}

/// Each node's last answer, then the log tails of the nodes that were not ready (of
/// every node if each was ready alone but they disagree on the controller).
fn not_ready_report(cluster: &ClusterFile, probes: &[Probe], timeout: Duration) -> String {
    let ids: Vec<u32> = cluster.nodes.iter().map(|n| n.id).collect();
    let mut out = format!(
        "the nodes did not all list each other and agree on a controller within {}:",
        show_duration(timeout)
    );
    let problems: Vec<Option<String>> = probes.iter().map(|p| problem(&ids, p)).collect();
    for ((node, probe), problem) in cluster.nodes.iter().zip(probes).zip(&problems) {
        let state = match (probe, problem) {
            (_, Some(problem)) => problem.clone(),
            (Probe::Answered { controller, .. }, None) => {
                format!("ready, naming controller {controller}")
            }
            (Probe::Unreachable(why), None) => why.clone(),
        };
        out += &format!("\n  node {} ({}): {state}", node.id, node.kafka_addr);
    }
    let all_ready = problems.iter().all(Option::is_none);
    for (node, problem) in cluster.nodes.iter().zip(&problems) {
        if all_ready || problem.is_some() {
            out += &format!(
                "\nthe end of {}:\n{}",
                node.log.display(),
                log_tail(&node.log, LOG_TAIL_LINES)
            );
        }
    }
    out
}

/// SIGTERM to every child, SIGKILL to those still running after `ABORT_STOP_TIMEOUT`;
/// each is reaped.
fn stop_children(children: &mut [(u32, Child)]) {
    for (_, child) in children.iter() {
        // Failing to signal one that already exited is fine: try_wait reaps it below.
        let _ = send_signal(child.id(), libc::SIGTERM);
    }
    let deadline = Instant::now() + ABORT_STOP_TIMEOUT;
    for (_, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => thread::sleep(EXIT_POLL_INTERVAL),
            }
        }
    }
}

fn mark_stopped(cluster: &mut ClusterFile) {
    cluster.stopped = true;
    for node in &mut cluster.nodes {
        node.pid = None;
    }
}

fn render_up(dir: &Path, cluster: &ClusterFile, controller: i32) -> String {
    let mut out = format!(
        "dev cluster {:?} is up: {} node(s), {} shard(s) each, controller {controller}\n",
        cluster.cluster_id,
        cluster.nodes.len(),
        cluster.cores
    );
    for node in &cluster.nodes {
        out += &format!(
            "  node {}  kafka {}  replication {} (udp)  pid {}  log {}\n",
            node.id,
            node.kafka_addr,
            node.replication_addr,
            node.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            node.log.display()
        );
    }
    let b = &cluster.bootstrap;
    out += &format!(
        "\nbootstrap: {b}\n\n  kcat -b {b} -L\n  strand cluster status --bootstrap {b}\n  \
         strand dev-cluster down --dir {}\n",
        dir.display()
    );
    out
}

// ---------------------------------------------------------------------------------------
// down
// ---------------------------------------------------------------------------------------

/// What happened to one node on `down`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stopped {
    NotRunning,
    Exited(Duration),
    Killed(Duration),
    Failed(String),
}

fn down(dir: &Path, timeout: Duration) -> Result<String> {
    let mut cluster = read_cluster_file(dir)?;
    if cluster.stopped {
        return Ok(format!(
            "the dev cluster in {} is already stopped; nothing to do \
             (`strand dev-cluster up --dir {}` restarts it, `rm -rf {}` wipes it)\n",
            dir.display(),
            dir.display(),
            dir.display()
        ));
    }
    let mut outcomes: Vec<(u32, Option<u32>, Stopped)> = Vec::new();
    let mut waiting: Vec<(usize, u32)> = Vec::new();
    for node in &cluster.nodes {
        let index = outcomes.len();
        let outcome = match node.pid {
            Some(pid) if is_node_process(pid, node, &cluster.node_binary) => {
                match send_signal(pid, libc::SIGTERM) {
                    Ok(()) => {
                        waiting.push((index, pid));
                        Stopped::NotRunning // replaced once it exits
                    }
                    Err(err) => Stopped::Failed(format!("SIGTERM failed: {err}")),
                }
            }
            _ => Stopped::NotRunning,
        };
        outcomes.push((node.id, node.pid, outcome));
    }
    let started = Instant::now();
    let mut stubborn = Vec::new();
    for (index, pid) in waiting {
        let node = &cluster.nodes[index];
        let gone = wait_gone(pid, node, &cluster.node_binary, started + timeout);
        outcomes[index].2 = if gone {
            Stopped::Exited(started.elapsed())
        } else {
            stubborn.push((index, pid));
            Stopped::NotRunning
        };
    }
    for (index, pid) in stubborn {
        let node = &cluster.nodes[index];
        outcomes[index].2 = match send_signal(pid, libc::SIGKILL) {
            Ok(()) if wait_gone(pid, node, &cluster.node_binary, Instant::now() + KILL_WAIT) => {
                Stopped::Killed(started.elapsed())
            }
            Ok(()) => Stopped::Failed(format!(
                "still running {} after SIGKILL",
                show_duration(KILL_WAIT)
            )),
            // It may have exited between the last check and the signal.
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {
                Stopped::Exited(started.elapsed())
            }
            Err(err) => Stopped::Failed(format!("SIGKILL failed: {err}")),
        };
    }
    let report = render_down(dir, &outcomes, timeout);
    if outcomes
        .iter()
        .any(|(_, _, o)| matches!(o, Stopped::Failed(_)))
    {
        // The file keeps the pids, so that another `down` can try again.
        bail!("{report}not every node could be stopped");
    }
    mark_stopped(&mut cluster);
    write_cluster_file(dir, &cluster)?;
    Ok(report)
}

fn render_down(dir: &Path, outcomes: &[(u32, Option<u32>, Stopped)], timeout: Duration) -> String {
    let mut out = String::new();
    for (id, pid, outcome) in outcomes {
        let pid = pid.map_or_else(|| "no pid".to_owned(), |p| format!("pid {p}"));
        let what = match outcome {
            Stopped::NotRunning => "was not running".to_owned(),
            Stopped::Exited(after) => format!("stopped in {}", show_duration(*after)),
            Stopped::Killed(after) => format!(
                "killed (SIGKILL) after {}: it did not exit within {} of SIGTERM",
                show_duration(*after),
                show_duration(timeout)
            ),
            Stopped::Failed(why) => format!("NOT stopped: {why}"),
        };
        out += &format!("node {id} ({pid}): {what}\n");
    }
    out += &format!(
        "the dev cluster in {} is stopped; its data stays there \
         (`strand dev-cluster up --dir {}` restarts it, `rm -rf {}` wipes it)\n",
        dir.display(),
        dir.display(),
        dir.display()
    );
    out
}

/// Polls until `pid` is no longer this node's process, or `deadline`.
fn wait_gone(pid: u32, node: &NodeEntry, binary: &Path, deadline: Instant) -> bool {
    loop {
        if !is_node_process(pid, node, binary) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(EXIT_POLL_INTERVAL);
    }
}

fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    // 0 and negative pids mean process groups to kill(2): never from a pid we recorded.
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad pid {pid}")))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Processes.
// ---------------------------------------------------------------------------------------

/// The nodes of `cluster` whose recorded pid is still their strand-node, as (id, pid).
fn live_nodes(cluster: &ClusterFile) -> Vec<(u32, u32)> {
    cluster
        .nodes
        .iter()
        .filter_map(|n| n.pid.map(|pid| (n, pid)))
        .filter(|(n, pid)| is_node_process(*pid, n, &cluster.node_binary))
        .map(|(n, pid)| (n.id, pid))
        .collect()
}

/// Whether `pid` is, right now, a strand-node serving `node`'s data directory. A zombie
/// has an empty cmdline, so it counts as gone.
fn is_node_process(pid: u32, node: &NodeEntry, binary: &Path) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|raw| cmdline_is_node(&raw, &node.data_dir, binary))
}

/// `raw` is a NUL-separated argv: its program must be a strand-node (by name, or the
/// binary recorded; as argv[1] too, for a script run by its interpreter) and its flags
/// must give `data_dir` as `--data-dir`.
fn cmdline_is_node(raw: &[u8], data_dir: &Path, binary: &Path) -> bool {
    let args: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
    let binary = binary.as_os_str().as_bytes();
    let is_node_binary = |arg: &&[u8]| {
        arg.windows(NODE_BINARY.len())
            .any(|w| w == NODE_BINARY.as_bytes())
            || (!binary.is_empty() && *arg == binary)
    };
    let data_dir = data_dir.as_os_str().as_bytes();
    let serves_dir = args
        .windows(2)
        .any(|pair| pair[0] == b"--data-dir" && pair[1] == data_dir);
    args.iter().take(2).any(is_node_binary) && serves_dir
}

/// Finds strand-node: `explicit` (--node-binary), else beside the running `strand`,
/// else in `path_var`'s directories. The error says what was tried.
pub fn find_node_binary(
    explicit: Option<&Path>,
    exe_dir: Option<&Path>,
    path_var: Option<&OsStr>,
) -> Result<PathBuf> {
    if let Some(path) = explicit {
        if !is_executable(path) {
            bail!("--node-binary {}: no executable file there", path.display());
        }
        return absolute(path);
    }
    let beside = exe_dir.map(|dir| dir.join(NODE_BINARY));
    if let Some(path) = beside.as_deref().filter(|p| is_executable(p)) {
        return absolute(path);
    }
    let in_path = path_var
        .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .unwrap_or_default();
    for dir in in_path.iter().filter(|d| !d.as_os_str().is_empty()) {
        let candidate = dir.join(NODE_BINARY);
        if is_executable(&candidate) {
            return absolute(&candidate);
        }
    }
    let beside = beside.map_or_else(
        || "(the running strand's directory is unknown)".to_owned(),
        |p| p.display().to_string(),
    );
    bail!(
        "cannot find {NODE_BINARY}: tried {beside} (beside strand) and {} $PATH \
         directories; build it (cargo build -p strand-node) or pass --node-binary PATH",
        in_path.len()
    )
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Children run in their own directories, so a relative binary path would not resolve.
fn absolute(path: &Path) -> Result<PathBuf> {
    fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))
}

fn current_exe_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
}

// ---------------------------------------------------------------------------------------
// Ports.
// ---------------------------------------------------------------------------------------

/// A Kafka (TCP) address and a replication (UDP) address with `cores` consecutive
/// free ports for each of `nodes` nodes, all distinct. Every port is held until all are
/// chosen and released on return; another program may take one before the nodes bind
/// it, which the node then reports in its log.
fn reserve_ports(nodes: u32, cores: u32) -> Result<Vec<(SocketAddr, SocketAddr, SocketAddr)>> {
    let count = u16::try_from(cores).context("too many cores for one port range")?;
    let mut held = Vec::new();
    let mut out = Vec::new();
    for _ in 0..nodes {
        let kafka = TcpListener::bind((HOST, 0))
            .and_then(|l| Ok((l.local_addr()?, l)))
            .context("finding a free TCP port on 127.0.0.1")?;
        let (base, sockets) = reserve_range(
            count,
            PORT_RANGE_ATTEMPTS_MAX,
            || {
                let socket = UdpSocket::bind((HOST, 0))?;
                Ok((socket.local_addr()?.port(), socket))
            },
            |port| UdpSocket::bind((HOST, port)),
        )?;
        let admin = TcpListener::bind((HOST, 0))
            .and_then(|l| Ok((l.local_addr()?, l)))
            .context("finding a free TCP port on 127.0.0.1")?;
        out.push((kafka.0, SocketAddr::new(HOST, base), admin.0));
        held.push((kafka.1, sockets, admin.1));
    }
    Ok(out)
}

/// `count` consecutive ports: `any` takes some free port, `at` a given one; each
/// returns a guard that keeps the port. A base whose range is partly taken is kept
/// until the end, so that it is not offered again.
fn reserve_range<G>(
    count: u16,
    attempts: u32,
    mut any: impl FnMut() -> io::Result<(u16, G)>,
    mut at: impl FnMut(u16) -> io::Result<G>,
) -> Result<(u16, Vec<G>)> {
    assert!(count > 0, "a port range holds at least one port");
    let mut rejected = Vec::new();
    let mut last_taken = None;
    for _ in 0..attempts {
        let (base, first) = any().context("finding a free UDP port on 127.0.0.1")?;
        let mut guards = vec![first];
        let Some(end) = base.checked_add(count - 1) else {
            rejected.push(guards);
            continue;
        };
        for port in base + 1..=end {
            match at(port) {
                Ok(guard) => guards.push(guard),
                Err(err) => {
                    last_taken = Some(format!("{port}: {err}"));
                    break;
                }
            }
        }
        if guards.len() == usize::from(count) {
            return Ok((base, guards));
        }
        rejected.push(guards);
    }
    bail!(
        "found no {count} consecutive free UDP ports on 127.0.0.1 in {attempts} attempts \
         (last taken: {}); try fewer --cores",
        last_taken
            .as_deref()
            .unwrap_or("none, the ranges ran past 65535")
    )
}

/// `--peers`: `id@replication_addr` of every member, this node included.
fn peers(nodes: &[NodeEntry]) -> String {
    nodes
        .iter()
        .map(|n| format!("{}@{}", n.id, n.replication_addr))
        .collect::<Vec<_>>()
        .join(",")
}

fn bootstrap(nodes: &[NodeEntry]) -> String {
    nodes
        .iter()
        .map(|n| n.kafka_addr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------------------
// Files.
// ---------------------------------------------------------------------------------------

fn read_cluster_file(dir: &Path) -> Result<ClusterFile> {
    let path = dir.join(CLUSTER_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => bail!(
            "{} does not exist: no dev cluster was started in {} (`strand dev-cluster up --dir {}`)",
            path.display(),
            dir.display(),
            dir.display()
        ),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let cluster: ClusterFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a dev cluster file", path.display()))?;
    check_cluster_file(&cluster).with_context(|| format!("{} is inconsistent", path.display()))?;
    Ok(cluster)
}

/// What a hand-edited file could get wrong that would make us start nonsense.
fn check_cluster_file(cluster: &ClusterFile) -> Result<()> {
    if cluster.nodes.is_empty() {
        bail!("it lists no nodes");
    }
    let ids: BTreeSet<u32> = cluster.nodes.iter().map(|n| n.id).collect();
    if ids.len() != cluster.nodes.len() {
        bail!("a node id appears twice");
    }
    if cluster.cores == 0 {
        bail!("cores is 0");
    }
    Ok(())
}

/// Writes `DIR/cluster.json` through a temporary file and a rename, so a reader sees
/// the old file or the new one, never half of one.
fn write_cluster_file(dir: &Path, cluster: &ClusterFile) -> Result<()> {
    let path = dir.join(CLUSTER_FILE);
    let tmp = dir.join(format!("{CLUSTER_FILE}.tmp"));
    let mut text = serde_json::to_string_pretty(cluster).context("encoding cluster.json")?;
    text.push('\n');
    let mut file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The last `lines` lines of a log (from at most its last `LOG_TAIL_BYTES_MAX` bytes).
fn log_tail(path: &Path, lines: usize) -> String {
    let read = || -> io::Result<String> {
        let mut file = fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES_MAX)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => tail_lines(&text, lines),
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}

fn tail_lines(text: &str, lines: usize) -> String {
    // The node prints its configuration at start as `  name  value` lines: always the
    // same, and long enough to push the reason it stopped out of the tail. Backtrace
    // lines are indented differently and stay.
    let is_config_line = |line: &str| {
        line.len() > 2 && line.starts_with("  ") && line.as_bytes()[2].is_ascii_lowercase()
    };
    let all: Vec<&str> = text.lines().filter(|l| !is_config_line(l)).collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    if out.is_empty() {
        out = "(empty)".to_owned();
    }
    out
}

/// `500ms`, `10s`, `2m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: expected e.g. 500ms, 30s, 2m"))?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "s" | "" => n.checked_mul(1_000),
        "m" | "min" => n.checked_mul(60_000),
        other => {
            return Err(format!(
                "`{other}` in `{text}` is not a unit: use ms, s or m"
            ))
        }
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
}

fn show_duration(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command as CliCommand};
    use clap::Parser;
    use std::collections::HashSet;

    fn tempdir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("strand-dev-cluster-")
            .tempdir()
            .expect("tempdir")
    }

    fn entry(id: u32, kafka: u16, replication: u16) -> NodeEntry {
        NodeEntry {
            id,
            kafka_addr: SocketAddr::new(HOST, kafka),
            replication_addr: SocketAddr::new(HOST, replication),
            admin_addr: None,
            pid: Some(1000 + id),
            data_dir: PathBuf::from(format!("/d/node-{id}/data")),
            tls_dir: PathBuf::from(format!("/d/node-{id}/tls")),
            log: PathBuf::from(format!("/d/node-{id}/node.log")),
        }
    }

    fn cluster() -> ClusterFile {
        let nodes = vec![
            entry(1, 19092, 19093),
            entry(2, 29092, 29093),
            entry(3, 39092, 39093),
        ];
        ClusterFile {
            cluster_id: "strand-dev".into(),
            bootstrap: bootstrap(&nodes),
            cores: 2,
            replication_factor: 3,
            node_binary: PathBuf::from("/bin/strand-node"),
            node_args: vec!["--log-level".into(), "debug".into()],
            stopped: false,
            nodes,
        }
    }

    #[test]
    fn peers_and_bootstrap_list_every_node_in_id_order() {
        let c = cluster();
        assert_eq!(
            peers(&c.nodes),
            "1@127.0.0.1:19093,2@127.0.0.1:29093,3@127.0.0.1:39093"
        );
        assert_eq!(
            c.bootstrap,
            "127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092"
        );
    }

    #[test]
    fn node_flags_carry_the_cluster_layout() {
        let c = cluster();
        let args = cluster_args(&c.nodes[1], &peers(&c.nodes), &c);
        let flag = |name: &str| {
            let i = args.iter().position(|a| a == name).expect(name);
            args[i + 1].clone()
        };
        assert_eq!(flag("--node-id"), "2");
        assert_eq!(flag("--kafka-addr"), "127.0.0.1:29092");
        assert_eq!(flag("--replication-addr"), "127.0.0.1:29093");
        assert_eq!(flag("--cores"), "2");
        assert_eq!(flag("--data-dir"), "/d/node-2/data");
        assert_eq!(flag("--tls-dir"), "/d/node-2/tls");
        assert_eq!(flag("--default-replication-factor"), "3");
        assert_eq!(flag("--peers"), peers(&c.nodes));
        assert_eq!(flag("--cluster-id"), "strand-dev");
        // Extra flags come last, so that they can override ours.
        assert_eq!(args[args.len() - 2..], ["--log-level", "debug"]);
    }

    #[test]
    fn cluster_file_round_trips_atomically() {
        let dir = tempdir();
        let mut c = cluster();
        write_cluster_file(dir.path(), &c).expect("write");
        assert!(!dir.path().join("cluster.json.tmp").exists());
        assert_eq!(read_cluster_file(dir.path()).expect("read"), c);

        let raw: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.path().join(CLUSTER_FILE)).unwrap())
                .unwrap();
        assert_eq!(raw["bootstrap"], c.bootstrap.as_str());
        assert_eq!(raw["nodes"][0]["kafka_addr"], "127.0.0.1:19092");
        assert_eq!(raw["nodes"][0]["replication_addr"], "127.0.0.1:19093");
        assert_eq!(raw["nodes"][2]["pid"], 1003);
        assert_eq!(raw["nodes"][2]["log"], "/d/node-3/node.log");

        mark_stopped(&mut c);
        write_cluster_file(dir.path(), &c).expect("rewrite");
        let back = read_cluster_file(dir.path()).expect("read");
        assert!(back.stopped);
        assert!(back.nodes.iter().all(|n| n.pid.is_none()));
    }

    #[test]
    fn a_missing_or_broken_cluster_file_is_a_clear_error() {
        let dir = tempdir();
        let err = format!("{:#}", read_cluster_file(dir.path()).unwrap_err());
        assert!(
            err.contains("does not exist") && err.contains("dev-cluster up"),
            "{err}"
        );
        fs::write(dir.path().join(CLUSTER_FILE), "{\"cluster_id\": 5}").unwrap();
        let err = format!("{:#}", read_cluster_file(dir.path()).unwrap_err());
        assert!(err.contains("not a dev cluster file"), "{err}");
        let mut c = cluster();
        c.nodes[1].id = 1;
        write_cluster_file(dir.path(), &c).unwrap();
        let err = format!("{:#}", read_cluster_file(dir.path()).unwrap_err());
        assert!(err.contains("appears twice"), "{err}");
    }

    #[test]
    fn ports_are_distinct_and_each_replication_range_is_consecutive_and_free() {
        let cores = 3;
        let ports = reserve_ports(4, cores).expect("ports");
        assert_eq!(ports.len(), 4);
        let mut udp = HashSet::new();
        let mut tcp = HashSet::new();
        for (kafka, replication, admin) in &ports {
            assert_eq!(kafka.ip(), HOST);
            assert!(tcp.insert(kafka.port()), "kafka port {kafka} twice");
            assert!(tcp.insert(admin.port()), "admin port {admin} twice");
            for port in replication_ports(replication.port(), cores).unwrap() {
                assert!(udp.insert(port), "udp port {port} twice");
            }
        }
        assert_eq!(udp.len(), 12);
        // Released on return: the nodes can bind them.
        let (kafka, replication, admin) = ports[0];
        TcpListener::bind(kafka).expect("kafka port released");
        TcpListener::bind(admin).expect("admin port released");
        for port in replication_ports(replication.port(), cores).unwrap() {
            UdpSocket::bind((HOST, port)).expect("udp port released");
        }
    }

    #[test]
    fn a_partly_taken_range_is_skipped_and_not_offered_again() {
        // Bases come from a list; ports 101 and 65535 - 0 overflow are "taken".
        let mut bases = vec![65535u16, 100, 100, 200].into_iter();
        let mut offered = Vec::new();
        let (base, guards) = reserve_range(
            3,
            10,
            || {
                let b = bases.next().expect("more bases");
                offered.push(b);
                Ok((b, b))
            },
            |port| {
                if port == 101 {
                    Err(io::Error::from(io::ErrorKind::AddrInUse))
                } else {
                    Ok(port)
                }
            },
        )
        .expect("range");
        // 65535 runs past the end, 100 has 101 taken; the fake offers 100 twice and it
        // fails twice (a real kernel would not offer a port still held).
        assert_eq!(base, 200);
        assert_eq!(guards, [200, 201, 202]);
        assert_eq!(offered, [65535, 100, 100, 200]);

        let err = reserve_range(
            2,
            3,
            || Ok((500, ())),
            |_| Err(io::Error::from(io::ErrorKind::AddrInUse)),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("no 2 consecutive free UDP ports") && err.contains("501"),
            "{err}"
        );
    }

    #[test]
    fn a_single_port_range_needs_no_neighbours() {
        let (base, guards) =
            reserve_range(1, 1, || Ok((7, 'g')), |_| panic!("no neighbour")).expect("one port");
        assert_eq!((base, guards), (7, vec!['g']));
        assert!(replication_ports(65535, 2).is_err());
        assert_eq!(replication_ports(65535, 1).unwrap(), 65535..=65535);
    }

    #[test]
    fn the_cluster_is_ready_only_when_every_node_lists_all_and_names_the_same_member() {
        let ids = [1, 2, 3];
        let c = |controller| Probe::Answered {
            controller,
            brokers: vec![1, 2, 3],
        };
        assert_eq!(agreed_controller(&ids, &[c(2), c(2), c(2)]), Some(2));
        assert_eq!(agreed_controller(&ids, &[c(2), c(1), c(2)]), None);
        assert_eq!(agreed_controller(&ids, &[c(-1), c(-1), c(-1)]), None);
        assert_eq!(agreed_controller(&ids, &[c(0), c(0), c(0)]), None);
        assert_eq!(agreed_controller(&ids, &[c(2), c(2)]), None);
        let down = Probe::Unreachable("refused".into());
        assert_eq!(agreed_controller(&ids, &[c(2), down.clone(), c(2)]), None);
        assert_eq!(agreed_controller(&[], &[]), None);
        // Elected, but node 3 knows only itself so far.
        let alone = Probe::Answered {
            controller: 2,
            brokers: vec![3],
        };
        assert_eq!(agreed_controller(&ids, &[c(2), c(2), alone.clone()]), None);
        let why = problem(&ids, &alone).expect("not ready");
        assert!(why.contains("[3], not [1, 2, 3]"), "{why}");
        assert!(problem(&ids, &c(7))
            .unwrap()
            .contains("not a node of this cluster"));
        assert!(problem(&ids, &c(-1)).unwrap().contains("no controller"));
        assert_eq!(problem(&ids, &down).as_deref(), Some("refused"));
        assert_eq!(problem(&ids, &c(1)), None);
    }

    #[test]
    fn a_pid_counts_only_while_it_runs_strand_node_on_the_same_data_dir() {
        let dir = Path::new("/d/node-1/data");
        let bin = Path::new("/opt/x/my-node");
        let argv = |parts: &[&str]| parts.join("\0").into_bytes();
        let good = argv(&[
            "/t/strand-node",
            "--node-id",
            "1",
            "--data-dir",
            "/d/node-1/data",
            "",
        ]);
        assert!(cmdline_is_node(&good, dir, bin));
        let custom = argv(&["/opt/x/my-node", "--data-dir", "/d/node-1/data"]);
        assert!(cmdline_is_node(&custom, dir, bin));
        // Another node's data dir, another program, a prefix of the path, a zombie.
        let other = argv(&["/t/strand-node", "--data-dir", "/d/node-2/data"]);
        assert!(!cmdline_is_node(&other, dir, bin));
        let bash = argv(&["bash", "--data-dir", "/d/node-1/data"]);
        assert!(!cmdline_is_node(&bash, dir, bin));
        let prefix = argv(&["/t/strand-node", "--data-dir", "/d/node-1/data2"]);
        assert!(!cmdline_is_node(&prefix, dir, bin));
        assert!(!cmdline_is_node(b"", dir, bin));
        // This test process is no strand-node.
        let me = std::process::id();
        assert!(!is_node_process(me, &entry(1, 1, 2), bin));
    }

    #[test]
    fn the_node_binary_is_found_beside_strand_then_in_path_else_the_error_says_where() {
        let dir = tempdir();
        let (beside, in_path, empty) = (
            dir.path().join("beside"),
            dir.path().join("bin"),
            dir.path().join("empty"),
        );
        for d in [&beside, &in_path, &empty] {
            fs::create_dir(d).unwrap();
        }
        let make = |d: &Path, mode: u32| {
            let p = d.join(NODE_BINARY);
            fs::write(&p, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            fs::canonicalize(p).unwrap()
        };
        let path_var = std::env::join_paths([&empty, &in_path]).unwrap();

        let err = find_node_binary(None, Some(&beside), Some(&path_var)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&beside.join(NODE_BINARY).display().to_string())
                && text.contains("2 $PATH directories")
                && text.contains("--node-binary"),
            "{text}"
        );
        // Not executable does not count.
        make(&beside, 0o644);
        assert!(find_node_binary(None, Some(&beside), None).is_err());

        let found_in_path = make(&in_path, 0o755);
        assert_eq!(
            find_node_binary(None, Some(&beside), Some(&path_var)).unwrap(),
            found_in_path
        );
        let found_beside = make(&beside, 0o755);
        assert_eq!(
            find_node_binary(None, Some(&beside), Some(&path_var)).unwrap(),
            found_beside
        );
        assert_eq!(
            find_node_binary(Some(&found_in_path), Some(&beside), None).unwrap(),
            found_in_path
        );
        let err = find_node_binary(Some(&empty.join("nope")), Some(&beside), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--node-binary") && err.contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn durations_and_replication_factors_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3h").unwrap_err().contains("unit"));
        assert_eq!(replication_factor(None, 1).unwrap(), 1);
        assert_eq!(replication_factor(None, 5).unwrap(), 3);
        assert_eq!(replication_factor(Some(2), 5).unwrap(), 2);
        assert!(replication_factor(Some(4), 3).is_err());
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
        assert_eq!(tail_lines("", 5), "(empty)");
        let start = "strand-node 1\n  peers  1@a:1\n  tls_dir  /t\nthread panicked\n   0: frame\n";
        assert_eq!(
            tail_lines(start, 3),
            "strand-node 1\nthread panicked\n   0: frame"
        );
        let dir = tempdir();
        let path = dir.path().join("node.log");
        let text: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, text).unwrap();
        assert_eq!(log_tail(&path, 2), "line 9998\nline 9999");
        assert!(log_tail(&dir.path().join("none"), 2).contains("cannot read"));
    }

    #[test]
    fn up_and_down_parse_with_defaults_and_node_flags() {
        let cli = Cli::try_parse_from([
            "strand",
            "dev-cluster",
            "up",
            "--dir",
            "d",
            "--",
            "--log-level",
            "debug",
        ])
        .expect("valid");
        let CliCommand::DevCluster(DevClusterCommand::Up(args)) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(args.dir, PathBuf::from("d"));
        assert_eq!(
            (args.nodes, args.cores, args.replication_factor),
            (None, None, None)
        );
        assert_eq!(args.timeout, Duration::from_secs(30));
        assert_eq!(args.node_args, ["--log-level", "debug"]);
        let cli = Cli::try_parse_from([
            "strand",
            "dev-cluster",
            "down",
            "--dir",
            "d",
            "--timeout",
            "2s",
        ])
        .expect("valid");
        assert!(matches!(
            cli.command,
            CliCommand::DevCluster(DevClusterCommand::Down(DownArgs { timeout, .. }))
                if timeout == Duration::from_secs(2)
        ));
        for bad in [
            &["strand", "dev-cluster", "up"][..],
            &["strand", "dev-cluster", "up", "--dir", "d", "--nodes", "0"],
            &["strand", "dev-cluster", "up", "--dir", "d", "--cores", "0"],
            &[
                "strand",
                "dev-cluster",
                "up",
                "--dir",
                "d",
                "--timeout",
                "x",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn up_refuses_a_non_empty_dir_without_a_cluster_file() {
        let dir = tempdir();
        fs::write(dir.path().join("precious"), "x").unwrap();
        let args = UpArgs {
            dir: dir.path().to_path_buf(),
            nodes: Some(1),
            cores: None,
            node_binary: None,
            cluster_id: None,
            timeout: Duration::from_secs(1),
            replication_factor: None,
            node_args: Vec::new(),
        };
        let err = prepare_new(dir.path(), &args).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_new_cluster_gets_certificates_directories_and_ports() {
        let dir = tempdir();
        let root = dir.path().join("dc");
        let args = UpArgs {
            dir: root.clone(),
            nodes: Some(2),
            cores: Some(2),
            node_binary: None,
            cluster_id: Some("it".into()),
            timeout: Duration::from_secs(1),
            replication_factor: None,
            node_args: Vec::new(),
        };
        let c = prepare_new(&root, &args).expect("prepared");
        assert_eq!(
            (c.cluster_id.as_str(), c.cores, c.replication_factor),
            ("it", 2, 2)
        );
        assert!(c.stopped);
        let root = fs::canonicalize(&root).unwrap();
        for (node, id) in c.nodes.iter().zip(1..) {
            assert_eq!(node.id, id);
            assert_eq!(node.data_dir, root.join(format!("node-{id}/data")));
            assert!(node.data_dir.is_dir());
            for f in ["node.pem", "node.key", "ca.pem"] {
                assert!(node.tls_dir.join(f).is_file(), "{f}");
            }
            assert_eq!(
                fs::read(node.tls_dir.join("ca.pem")).unwrap(),
                fs::read(root.join("ca/ca.pem")).unwrap()
            );
        }
        assert_ne!(c.nodes[0].kafka_addr, c.nodes[1].kafka_addr);
        // A stopped cluster is restarted as it was; changing its shape is refused.
        write_cluster_file(&root, &c).unwrap();
        let again = prepare_restart(
            &root,
            &UpArgs {
                nodes: None,
                ..args
            },
        )
        .expect("restart");
        assert_eq!(again, c);
        let err = prepare_restart(
            &root,
            &UpArgs {
                dir: root.clone(),
                nodes: Some(3),
                cores: None,
                node_binary: None,
                cluster_id: None,
                timeout: Duration::from_secs(1),
                replication_factor: None,
                node_args: Vec::new(),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--nodes 3 (it has 2)") && err.contains("rm -rf"),
            "{err}"
        );
    }

    #[test]
    fn down_on_a_stopped_cluster_is_a_no_op_and_dead_pids_are_not_signalled() {
        let dir = tempdir();
        let mut c = cluster();
        // Pids that are not strand-nodes on these data dirs (this test itself, pid 1).
        c.nodes[0].pid = Some(std::process::id());
        c.nodes[1].pid = Some(1);
        c.nodes[2].pid = None;
        write_cluster_file(dir.path(), &c).unwrap();
        let out = down(dir.path(), Duration::from_millis(100)).expect("down");
        assert_eq!(out.matches("was not running").count(), 3, "{out}");
        let after = read_cluster_file(dir.path()).unwrap();
        assert!(after.stopped && after.nodes.iter().all(|n| n.pid.is_none()));
        let out = down(dir.path(), Duration::from_millis(100)).expect("second down");
        assert!(out.contains("already stopped"), "{out}");
    }

    /// A stand-in for strand-node: a shell script named like it, in `dir`.
    fn fake_node(dir: &Path, body: &str) -> PathBuf {
        fs::create_dir_all(dir).unwrap();
        let path = dir.join(NODE_BINARY);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn up_with_a_node_that_exits_shows_its_log_and_leaves_the_cluster_stopped() {
        let dir = tempdir();
        let binary = fake_node(dir.path(), "echo \"boom: $*\" >&2; exit 3");
        let root = dir.path().join("dc");
        let args = UpArgs {
            dir: root.clone(),
            nodes: Some(2),
            cores: None,
            node_binary: Some(binary),
            cluster_id: None,
            timeout: Duration::from_secs(10),
            replication_factor: None,
            node_args: Vec::new(),
        };
        let err = format!("{:#}", up(&args).unwrap_err());
        assert!(err.contains("exited during startup"), "{err}");
        assert!(err.contains("boom: --node-id"), "{err}");
        assert!(err.contains("--peers 1@127.0.0.1:"), "{err}");
        assert!(
            err.contains("did not come up") && err.contains("rm -rf"),
            "{err}"
        );
        let after = read_cluster_file(&root).expect("recorded");
        assert!(after.stopped && after.nodes.iter().all(|n| n.pid.is_none()));
        assert!(down(&root, Duration::from_secs(1))
            .unwrap()
            .contains("already stopped"));
    }

    #[test]
    fn down_stops_live_nodes_and_kills_the_ones_that_ignore_sigterm() {
        let dir = tempdir();
        let polite = fake_node(
            &dir.path().join("polite"),
            "trap 'exit 0' TERM; echo trapped; while :; do sleep 0.05; done",
        );
        let stubborn = fake_node(
            &dir.path().join("stubborn"),
            "trap '' TERM; echo trapped; while :; do sleep 0.05; done",
        );
        let mut c = cluster();
        c.nodes.truncate(2);
        c.node_binary = PathBuf::new();
        let mut children = Vec::new();
        for (node, binary) in c.nodes.iter_mut().zip([&polite, &stubborn]) {
            node.data_dir = dir.path().join(format!("node-{}", node.id));
            node.log = dir.path().join(format!("node-{}.log", node.id));
            let args = vec!["--data-dir".to_owned(), node.data_dir.display().to_string()];
            let child = spawn_node(args, node, binary).expect("spawn");
            node.pid = Some(child.id());
            children.push(child);
        }
        // Signalled before its trap is set, a shell would just die: wait for the scripts.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !c.nodes.iter().all(|n| log_tail(&n.log, 1) == "trapped") {
            assert!(Instant::now() < deadline, "the fake nodes never started");
            thread::sleep(EXIT_POLL_INTERVAL);
        }
        assert_eq!(live_nodes(&c).len(), 2);
        write_cluster_file(dir.path(), &c).unwrap();
        let out = down(dir.path(), Duration::from_millis(500)).expect("down");
        assert!(
            out.contains("node 1 (pid") && out.contains("stopped in"),
            "{out}"
        );
        assert!(
            out.contains("node 2 (pid") && out.contains("killed (SIGKILL)"),
            "{out}"
        );
        assert!(live_nodes(&c).is_empty());
        for mut child in children {
            child.wait().expect("reaped");
        }
        let after = read_cluster_file(dir.path()).unwrap();
        assert!(after.stopped);
        assert!(down(dir.path(), Duration::from_secs(1))
            .unwrap()
            .contains("already stopped"));
    }
}
