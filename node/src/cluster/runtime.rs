//! The cluster side of one shard: its QUIC endpoint, the replicas it hosts, their
//! shared commit checkpoint, heartbeat coalescing, and the node-wide leader table.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strand_engine::signal::Notify;
use strand_net::quic::{Incoming, Transport};
use strand_net::replication::{
    self as net, ClusterFrame, ClusterMessage, DecodedFrame, FrameBuffer, GroupLeader,
};

use super::checkpoint::Checkpoint;
use super::controller::CONTROLLER_GROUP;
use super::replica::{self, Replica};
use super::LeaderUpdate;
use crate::config::Peer;
use crate::replication::wire;
use crate::replication::{Config, Heartbeat, HeartbeatResponse, Index, Message, NodeId};
use crate::shard::Shard;

/// How often each shard tells the other nodes which groups it leads.
const LEADER_REPORT_INTERVAL: Duration = Duration::from_millis(500);
/// How often replicas' timers are checked.
const TICK_INTERVAL: Duration = Duration::from_millis(10);
/// The commit checkpoint is written at most this often (one write and one fdatasync
/// for every group of the shard that committed meanwhile). It is off the
/// acknowledgement's path: a restart from an older one loses nothing (see
/// `crate::replication`, "the ordering contract").
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// A group's leader as this shard knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// None while the group elects a new leader.
    pub leader: Option<NodeId>,
    pub term: u64,
    pub isr: Vec<NodeId>,
}

#[derive(Default)]
struct PendingHeartbeats {
    heartbeats: Vec<(u64, Heartbeat)>,
    responses: Vec<(u64, HeartbeatResponse)>,
}

pub struct Runtime {
    pub node_id: NodeId,
    pub shard_id: usize,
    start: Instant,
    election_timeout_ms: u64,
    members: Vec<Peer>,
    addrs: RefCell<HashMap<NodeId, SocketAddr>>,
    pub transport: Rc<Transport>,
    replicas: RefCell<HashMap<u64, Rc<Replica>>>,
    heartbeats: RefCell<BTreeMap<NodeId, PendingHeartbeats>>,
    heartbeat_flush_scheduled: Cell<bool>,
    recovered_commits: BTreeMap<u64, Index>,
    /// Commits not in the checkpoint yet: group → commit index.
    pending_commits: RefCell<HashMap<u64, Index>>,
    checkpoint_wake: Notify,
    leaders: RefCell<HashMap<u64, LeaderInfo>>,
    /// Leader changes seen here, to tell the other shards of this node.
    leader_news: RefCell<Vec<LeaderUpdate>>,
    leader_news_wake: Notify,
    /// Shard 0: the controller's commit moved.
    pub controller_wake: Notify,
    shard: Weak<Shard>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("node_id", &self.node_id)
            .field("shard", &self.shard_id)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Bind this shard's endpoint, load its checkpoint, and start its tasks.
    pub async fn start(shard: &Rc<Shard>) -> Result<Rc<Runtime>, String> {
        let config = shard.config();
        let tls_dir = config
            .tls_dir
            .clone()
            .ok_or("a cluster needs tls_dir (certificates from `strand cert`)")?;
        let port = config.replication_addr.port() as usize + shard.id;
        let port = u16::try_from(port).map_err(|_| {
            format!(
                "replication port {port} (port + shard {}) is past 65535",
                shard.id
            )
        })?;
        let addr = SocketAddr::new(config.replication_addr.ip(), port);
        let transport_config = strand_net::quic::TransportConfig::new(
            config.cluster_id.clone(),
            config.node_id,
            strand_net::quic::TlsFiles::from_dir(&tls_dir),
        );
        let transport = Transport::bind(addr, transport_config)
            .map_err(|e| format!("replication transport of shard {} on {addr}: {e}", shard.id))?;
        let mut checkpoint = Checkpoint::open(&config.data_dir, shard.id)
            .await
            .map_err(|e| {
                format!(
                    "cannot open the commit checkpoint of shard {}: {e}",
                    shard.id
                )
            })?;
        let recovered_commits = checkpoint.commits().clone();
        let runtime = Rc::new(Runtime {
            node_id: config.node_id,
            shard_id: shard.id,
            start: Instant::now(),
            election_timeout_ms: config.election_timeout_ms,
            members: config.peers.clone(),
            addrs: RefCell::new(HashMap::new()),
            transport,
            replicas: RefCell::new(HashMap::new()),
            heartbeats: RefCell::new(BTreeMap::new()),
            heartbeat_flush_scheduled: Cell::new(false),
            recovered_commits,
            pending_commits: RefCell::new(HashMap::new()),
            checkpoint_wake: Notify::default(),
            leaders: RefCell::new(HashMap::new()),
            leader_news: RefCell::new(Vec::new()),
            leader_news_wake: Notify::default(),
            controller_wake: Notify::default(),
            shard: Rc::downgrade(shard),
        });
        glommio::spawn_local(runtime.clone().receive_loop()).detach();
        glommio::spawn_local(runtime.clone().tick_loop()).detach();
        glommio::spawn_local(runtime.clone().report_loop()).detach();
        glommio::spawn_local(runtime.clone().leader_news_loop()).detach();
        let weak = Rc::downgrade(&runtime);
        glommio::spawn_local(async move {
            loop {
                let Some(rt) = weak.upgrade() else { return };
                let wake = async { rt.checkpoint_wake.wait().await };
                wake.await;
                drop(rt);
                // Lazily: what commits meanwhile goes into the same write.
                glommio::timer::sleep(CHECKPOINT_INTERVAL).await;
                let Some(rt) = weak.upgrade() else { return };
                let updates: Vec<(u64, Index)> = rt.pending_commits.borrow_mut().drain().collect();
                if updates.is_empty() {
                    continue;
                }
                if let Err(e) = checkpoint.write(&updates).await {
                    // Only a restart's starting point suffers: it stays older.
                    tracing::error!(error = %e, "cannot write the commit checkpoint; retrying");
                    let mut pending = rt.pending_commits.borrow_mut();
                    for (group, index) in updates {
                        let c = pending.entry(group).or_default();
                        *c = (*c).max(index);
                    }
                    rt.checkpoint_wake.notify();
                }
            }
        })
        .detach();
        Ok(runtime)
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn raft_config(&self, voters: Vec<NodeId>) -> Config {
        replica::config_for(self.node_id, voters, self.election_timeout_ms)
    }

    /// The checkpointed commit of `group` (0 when none).
    pub fn recovered_commit(&self, group: u64) -> Index {
        self.recovered_commits.get(&group).copied().unwrap_or(0)
    }

    pub fn members(&self) -> &[Peer] {
        &self.members
    }

    pub fn replica(&self, group: u64) -> Option<Rc<Replica>> {
        self.replicas.borrow().get(&group).cloned()
    }

    pub fn replicas(&self) -> Vec<Rc<Replica>> {
        self.replicas.borrow().values().cloned().collect()
    }

    pub fn add_replica(&self, replica: Rc<Replica>) {
        self.replicas.borrow_mut().insert(replica.group, replica);
    }

    pub fn remove_replica(&self, group: u64) -> Option<Rc<Replica>> {
        let r = self.replicas.borrow_mut().remove(&group);
        if let Some(r) = &r {
            r.stop();
        }
        r
    }

    pub fn leader_of(&self, group: u64) -> Option<LeaderInfo> {
        self.leaders.borrow().get(&group).cloned()
    }

    /// The controller group's leader, as known here.
    pub fn controller(&self) -> Option<NodeId> {
        self.leader_of(CONTROLLER_GROUP).and_then(|l| l.leader)
    }

    fn addr_of(&self, node: NodeId) -> Option<SocketAddr> {
        if let Some(a) = self.addrs.borrow().get(&node) {
            return Some(*a);
        }
        let addr = self
            .members
            .iter()
            .find(|p| p.id == node)?
            .shard_addr(self.shard_id)?;
        self.addrs.borrow_mut().insert(node, addr);
        Some(addr)
    }

    /// A commit for the checkpoint (written lazily).
    pub fn checkpoint_commit(&self, group: u64, commit_index: Index) {
        let mut pending = self.pending_commits.borrow_mut();
        let c = pending.entry(group).or_default();
        *c = (*c).max(commit_index);
        self.checkpoint_wake.notify();
    }

    /// A replica published a commit.
    pub fn committed(&self, replica: &Replica, _commit_index: Index) {
        if replica.group == CONTROLLER_GROUP {
            self.controller_wake.notify();
        }
    }

    /// A replica's role changed: update the table, tell the other shards and nodes.
    pub fn leader_changed(&self, replica: &Replica) {
        let view = replica.view();
        // A pre-candidate only asks whether it could win; the leader may well be alive
        // (a late heartbeat under load). Clients are told "no leader" only once a
        // quorum agreed to an election (a real candidacy, in a new term).
        if view.role == crate::replication::RoleKind::PreCandidate {
            return;
        }
        let leader = view.leader;
        let isr = if leader == Some(self.node_id) {
            replica.in_sync()
        } else {
            Vec::new()
        };
        let update = LeaderUpdate {
            group: replica.group,
            leader,
            term: view.term,
            isr,
        };
        if self.apply_leader(&update) {
            self.leader_news.borrow_mut().push(update);
            self.leader_news_wake.notify();
        }
        if leader == Some(self.node_id) {
            self.report_leaders();
        }
    }

    /// Record a leader if it is news (a newer term, or the same term with a new ISR).
    pub fn apply_leader(&self, u: &LeaderUpdate) -> bool {
        let mut leaders = self.leaders.borrow_mut();
        match leaders.get(&u.group) {
            Some(known) if known.term > u.term => false,
            Some(known)
                if known.term == u.term
                    && known.leader == u.leader
                    && (u.isr.is_empty() || known.isr == u.isr) =>
            {
                false
            }
            _ => {
                let isr = if u.isr.is_empty() {
                    leaders
                        .get(&u.group)
                        .filter(|k| k.term == u.term)
                        .map(|k| k.isr.clone())
                        .unwrap_or_default()
                } else {
                    u.isr.clone()
                };
                leaders.insert(
                    u.group,
                    LeaderInfo {
                        leader: u.leader,
                        term: u.term,
                        isr,
                    },
                );
                true
            }
        }
    }

    /// Leader updates from another shard of this node.
    pub fn apply_leaders_from_shard(&self, updates: &[LeaderUpdate]) {
        for u in updates {
            self.apply_leader(u);
        }
    }

    /// Forget a group (its topic was deleted).
    pub fn forget_group(&self, group: u64) {
        self.leaders.borrow_mut().remove(&group);
    }

    // --- sending ---

    /// Send one state-machine message (heartbeats are coalesced per peer).
    pub fn send_message(
        self: &Rc<Self>,
        group: u64,
        to: NodeId,
        msg: Message,
        payloads: Vec<Bytes>,
    ) {
        match msg {
            Message::Heartbeat(h) => {
                self.heartbeats
                    .borrow_mut()
                    .entry(to)
                    .or_default()
                    .heartbeats
                    .push((group, h));
                self.schedule_heartbeat_flush();
            }
            Message::HeartbeatResponse(r) => {
                self.heartbeats
                    .borrow_mut()
                    .entry(to)
                    .or_default()
                    .responses
                    .push((group, r));
                self.schedule_heartbeat_flush();
            }
            msg => {
                let frame = wire::to_frame(group, self.node_id, to, &msg, payloads);
                match net::encode(&frame) {
                    Ok(buf) => self.send_frame(to, group, buf),
                    Err(e) => {
                        tracing::error!(group, to, error = %e, "cannot encode a replication frame")
                    }
                }
            }
        }
    }

    fn send_frame(&self, to: NodeId, stream: u64, frame: FrameBuffer) {
        let Some(addr) = self.addr_of(to) else {
            tracing::warn!(to, "no address for node");
            return;
        };
        // A refused frame is lost like any other message: Raft sends again.
        let _ = self.transport.send_buffer(to, addr, stream, frame);
    }

    fn schedule_heartbeat_flush(self: &Rc<Self>) {
        if self.heartbeat_flush_scheduled.replace(true) {
            return;
        }
        let rt = self.clone();
        // After the tasks already woken this round (every replica's tick) have run,
        // one frame per peer carries all their heartbeats.
        glommio::spawn_local(async move {
            glommio::executor().yield_now().await;
            rt.heartbeat_flush_scheduled.set(false);
            let pending = std::mem::take(&mut *rt.heartbeats.borrow_mut());
            for (to, p) in pending {
                let batch = wire::to_heartbeat_batch(rt.node_id, to, &p.heartbeats, &p.responses);
                match net::encode(&batch) {
                    Ok(buf) => rt.send_frame(to, 0, buf),
                    Err(e) => tracing::error!(to, error = %e, "cannot encode a heartbeat batch"),
                }
            }
        })
        .detach();
    }

    /// Send a cluster-level message to node `to`'s shard of this index.
    pub fn send_cluster(&self, to: NodeId, message: ClusterMessage) {
        let frame = ClusterFrame {
            from: self.node_id,
            message,
        };
        match net::encode(&frame) {
            Ok(buf) => self.send_frame(to, 0, buf),
            Err(e) => tracing::error!(to, error = %e, "cannot encode a cluster frame"),
        }
    }

    /// Tell every other node which groups this shard leads.
    fn report_leaders(&self) {
        let leaders: Vec<GroupLeader> = self
            .replicas
            .borrow()
            .values()
            .filter(|r| r.is_leader())
            .map(|r| GroupLeader {
                group: r.group,
                term: r.view().term,
                isr: r.in_sync(),
            })
            .collect();
        if leaders.is_empty() {
            return;
        }
        for peer in self.members.iter().filter(|p| p.id != self.node_id) {
            self.send_cluster(
                peer.id,
                ClusterMessage::Leaders {
                    leaders: leaders.clone(),
                },
            );
        }
    }

    // --- tasks ---

    async fn tick_loop(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(TICK_INTERVAL).await;
            let now = self.now_ms();
            let replicas: Vec<Rc<Replica>> = self.replicas.borrow().values().cloned().collect();
            for r in replicas {
                if now >= r.next_deadline_ms() {
                    r.tick();
                }
            }
        }
    }

    async fn report_loop(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(LEADER_REPORT_INTERVAL).await;
            // Refresh our own leaders' ISR in the table too.
            let ours: Vec<LeaderUpdate> = self
                .replicas
                .borrow()
                .values()
                .filter(|r| r.is_leader())
                .map(|r| LeaderUpdate {
                    group: r.group,
                    leader: Some(self.node_id),
                    term: r.view().term,
                    isr: r.in_sync(),
                })
                .collect();
            let news: Vec<LeaderUpdate> =
                ours.into_iter().filter(|u| self.apply_leader(u)).collect();
            if !news.is_empty() {
                self.leader_news.borrow_mut().extend(news);
                self.leader_news_wake.notify();
            }
            self.report_leaders();
        }
    }

    async fn leader_news_loop(self: Rc<Self>) {
        loop {
            self.leader_news_wake.wait().await;
            let news = std::mem::take(&mut *self.leader_news.borrow_mut());
            if news.is_empty() {
                continue;
            }
            let Some(shard) = self.shard.upgrade() else {
                return;
            };
            shard.router.broadcast_leaders(&news).await;
        }
    }

    async fn receive_loop(self: Rc<Self>) {
        let mut scratch = FrameBuffer::new();
        while let Some(incoming) = self.transport.recv().await {
            self.handle_frame(incoming, &mut scratch);
        }
    }

    fn handle_frame(self: &Rc<Self>, incoming: Incoming, scratch: &mut FrameBuffer) {
        let from = incoming.from;
        let frame = Bytes::from_owner(incoming.frame);
        let decoded = match net::decode(&frame, scratch) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(from, error = %e, "dropped a bad replication frame");
                return;
            }
        };
        match decoded {
            DecodedFrame::Replication(frame) => {
                let msg = match wire::from_archived(frame) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(from, error = %e, "dropped a replication message");
                        return;
                    }
                };
                // The certificate says who sent it; the frame must agree.
                if msg.from != from || msg.to != self.node_id {
                    tracing::warn!(
                        from,
                        claimed = msg.from,
                        to = msg.to,
                        "dropped a misaddressed frame"
                    );
                    return;
                }
                let Some(replica) = self.replica(msg.group) else {
                    return;
                };
                // One copy per payload, into a buffer of its own that the log then
                // takes over as it is: slices of the frame would pin the whole
                // received buffer in the log's tail cache.
                let payloads = msg
                    .payloads
                    .iter()
                    .map(|p| Bytes::copy_from_slice(p))
                    .collect();
                replica.deliver(from, msg.message, payloads);
            }
            DecodedFrame::HeartbeatBatch(batch) => {
                let batch = match wire::from_archived_batch(batch) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(from, error = %e, "dropped a heartbeat batch");
                        return;
                    }
                };
                if batch.from != from || batch.to != self.node_id {
                    return;
                }
                for (group, h) in batch.heartbeats {
                    if let Some(r) = self.replica(group) {
                        r.deliver(from, Message::Heartbeat(h), Vec::new());
                    }
                }
                for (group, h) in batch.responses {
                    if let Some(r) = self.replica(group) {
                        r.deliver(from, Message::HeartbeatResponse(h), Vec::new());
                    }
                }
            }
            DecodedFrame::Cluster(frame) => {
                let Ok(frame) = frame.to_owned_frame() else {
                    return;
                };
                if frame.from != from {
                    return;
                }
                match frame.message {
                    ClusterMessage::Forward { command } => {
                        let Some(controller) = self.replica(CONTROLLER_GROUP) else {
                            return;
                        };
                        glommio::spawn_local(async move {
                            let batch = super::records::value_batch(&command, now_unix_ms());
                            let _ = controller.produce(Bytes::from(batch), 1, u32::MAX).await;
                        })
                        .detach();
                    }
                    ClusterMessage::TransferLeader { group, target } => {
                        if let Some(r) = self.replica(group).filter(|r| r.is_leader()) {
                            glommio::spawn_local(async move {
                                if let Err(e) = r.transfer_leadership(target).await {
                                    tracing::info!(group, target, error = %e, "leadership transfer refused");
                                }
                            })
                            .detach();
                        }
                    }
                    ClusterMessage::Leaders { leaders } => {
                        let news: Vec<LeaderUpdate> = leaders
                            .into_iter()
                            .map(|l| LeaderUpdate {
                                group: l.group,
                                leader: Some(from),
                                term: l.term,
                                isr: l.isr,
                            })
                            .filter(|u| self.apply_leader(u))
                            .collect();
                        if !news.is_empty() {
                            self.leader_news.borrow_mut().extend(news);
                            self.leader_news_wake.notify();
                        }
                    }
                }
            }
        }
    }

    /// Stop every replica and the transport (shutdown).
    pub fn close(&self) {
        for r in self.replicas.borrow().values() {
            r.stop();
        }
        self.transport.close();
    }
}

pub(crate) fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
