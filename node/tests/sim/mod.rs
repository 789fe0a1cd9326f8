//! A deterministic cluster simulation for the replication state machine, in the
//! manner of TigerBeetle's VOPR: every replica of one group on one thread, a virtual
//! clock, a seeded RNG, a network that drops, duplicates, delays (so reorders) and
//! partitions messages, disks whose syncs take random time and whose unsynced
//! writes a crash loses or tears. Each run is a function of its seed.
//!
//! The simulation is also the I/O layer of the ordering contract (see
//! `strand_node::replication`): it carries out the actions in order, makes the
//! barrier actions durable at once, attaches payloads to appends from the sender's
//! disk, and reports syncs with `persisted`. It checks the contract from the other
//! side too (an append names only entries the disk holds; an acknowledgement never
//! names more than the disk has synced).
//!
//! Safety properties are checked as the actions happen; `check_logs` runs the
//! whole-log checks and is called periodically and at the end.

pub mod disk;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt::Write as _;

use strand_node::replication::{
    Action, AppendOutcome, Config, EntryId, HardState, Index, LogTerms, Message, NodeId,
    PayloadSource, ProposeError, Raft, Recovered, RoleKind, Term,
};

pub use disk::{Disk, Payload};

/// Leader-change markers get payload `MARKER | term`; proposals count up from 1.
pub const MARKER: Payload = 1 << 63;

pub const ELECTION_TIMEOUT_MS: u64 = 150;
pub const HEARTBEAT_INTERVAL_MS: u64 = 30;

/// The group configuration every simulated replica runs with: small batches and
/// windows so that pipelining, back-pressure and probing all happen.
pub fn raft_config(id: NodeId, nodes: usize) -> Config {
    Config {
        id,
        voters: (1..=nodes as NodeId).collect(),
        election_timeout_ms: ELECTION_TIMEOUT_MS,
        heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
        append_entries_max: 8,
        inflight_entries_max: 32,
        uncommitted_entries_max: 256,
        snapshot_timeout_ms: 500,
    }
}

/// How the network behaves now.
#[derive(Clone, Copy, Debug)]
pub struct NetConditions {
    pub drop_per_mille: u32,
    pub duplicate_per_mille: u32,
    pub delay_ms_max: u64,
    /// Per mille of messages held back up to a second (stale arrivals).
    pub straggler_per_mille: u32,
}

impl NetConditions {
    pub const CALM: NetConditions = NetConditions {
        drop_per_mille: 0,
        duplicate_per_mille: 0,
        delay_ms_max: 5,
        straggler_per_mille: 0,
    };
}

/// Counts of what a run exercised, summed over seeds in the report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub events: u64,
    pub messages: u64,
    pub crashes: u64,
    pub leaders: u64,
    pub truncations: u64,
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    pub transfers: u64,
    pub retentions: u64,
    pub proposals: u64,
    pub acked: u64,
    pub max_commit: Index,
    /// Virtual ms from the heal to a leader that a quorum follows.
    pub election_after_heal_ms: u64,
    /// Virtual ms from the heal to the last liveness write acknowledged.
    pub writes_after_heal_ms: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.events += o.events;
        self.messages += o.messages;
        self.crashes += o.crashes;
        self.leaders += o.leaders;
        self.truncations += o.truncations;
        self.snapshots_sent += o.snapshots_sent;
        self.snapshots_installed += o.snapshots_installed;
        self.transfers += o.transfers;
        self.retentions += o.retentions;
        self.proposals += o.proposals;
        self.acked += o.acked;
        self.max_commit = self.max_commit.max(o.max_commit);
        self.election_after_heal_ms = self.election_after_heal_ms.max(o.election_after_heal_ms);
        self.writes_after_heal_ms = self.writes_after_heal_ms.max(o.writes_after_heal_ms);
    }
}

#[derive(Debug)]
struct Packet {
    from: NodeId,
    to: NodeId,
    msg: Message,
    /// Payloads of the entries an append or a snapshot carries, in index order.
    payloads: Vec<Payload>,
}

#[derive(Debug)]
enum Event {
    Deliver(Packet),
    SyncDone { node: usize, incarnation: u64 },
    Tick { node: usize, incarnation: u64 },
    Restart { node: usize },
    Fault,
    Client,
    Heal,
}

#[derive(Debug)]
struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // BinaryHeap is a max-heap: the earliest event must compare greatest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// One simulated machine.
#[derive(Debug)]
pub struct Node {
    pub id: NodeId,
    /// `None` while crashed.
    pub raft: Option<Raft>,
    pub disk: Disk,
    incarnation: u64,
    timer_at: u64,
    /// A stalled disk: syncs do not complete while set.
    pub hold_syncs: bool,
    sync_ms_max: u64,
    /// The commit index this incarnation published (acks answered, followers'
    /// watermark). The disk's commit checkpoint catches up with it lazily, so a crash
    /// can take a restarted replica back to an older one.
    published: Index,
    /// Whether the replica shows its commit index to readers now, and the highest
    /// one it ever showed, over all its incarnations: readers must never see it go
    /// back.
    serving: bool,
    served_max: Index,
}

/// A proposal accepted by a leader, waiting for the commit index to pass it.
#[derive(Clone, Copy, Debug)]
struct Attempt {
    write: usize,
    node: usize,
    incarnation: u64,
    term: Term,
    index: Index,
    payload: Payload,
}

/// A client write; retried until acknowledged when `liveness` is set.
#[derive(Clone, Debug)]
struct Write {
    liveness: bool,
    acked: Option<(Index, Term, Payload)>,
    last_attempt_ms: Option<u64>,
}

/// What happens when in a random run.
#[derive(Clone, Copy, Debug)]
pub struct FaultPlan {
    /// Faults stop here: partitions heal, crashed nodes restart, the network calms.
    pub heal_ms: u64,
    pub liveness_writes: usize,
}

/// Bounds of the liveness check, from the heal.
pub const ELECTION_BOUND_MS: u64 = 10 * ELECTION_TIMEOUT_MS;
pub const WRITES_BOUND_MS: u64 = 20 * ELECTION_TIMEOUT_MS;
pub const CONVERGE_BOUND_MS: u64 = 30 * ELECTION_TIMEOUT_MS;
const RETRY_MS: u64 = 2 * ELECTION_TIMEOUT_MS;
const FULL_CHECK_EVERY_EVENTS: u64 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Faults,
    Liveness {
        heal_ms: u64,
        leader_seen: bool,
        writes_issued: usize,
    },
    Converging {
        heal_ms: u64,
    },
    Done,
}

/// Payloads for the appends of one batch of actions.
#[derive(Clone, Copy, Debug)]
enum Source<'a> {
    Nothing,
    Packet(&'a Packet),
    Proposal(Payload),
}

#[derive(Debug)]
pub struct Sim {
    pub now_ms: u64,
    rng: fastrand::Rng,
    pub nodes: Vec<Node>,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    pub net: NetConditions,
    /// `cut[from][to]`: messages on that link are lost.
    cut: Vec<Vec<bool>>,
    plan: Option<FaultPlan>,
    phase: Phase,
    /// The committed log as first published by any replica: index → (term, payload).
    committed: Vec<Option<(Term, Payload)>>,
    /// Every entry ever written anywhere: (index, term) → payload. One pair, one entry.
    entry_ids: BTreeMap<(Index, Term), Payload>,
    leaders: BTreeMap<Term, NodeId>,
    attempts: Vec<Attempt>,
    writes: Vec<Write>,
    next_payload: Payload,
    pub violation: Option<String>,
    trace: Option<VecDeque<String>>,
    pub stats: Stats,
}

macro_rules! check {
    ($sim:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            $sim.fail(format!($($fmt)+));
        }
    };
}

impl Sim {
    /// A cluster of `nodes` fresh replicas. With a plan, faults and clients run by
    /// themselves; without one, the test drives it.
    pub fn new(seed: u64, nodes: usize, plan: Option<FaultPlan>) -> Sim {
        Sim::with_disks(seed, vec![Disk::default(); nodes], plan)
    }

    /// A cluster whose replicas start from the given disks (all up).
    pub fn with_disks(seed: u64, disks: Vec<Disk>, plan: Option<FaultPlan>) -> Sim {
        let n = disks.len();
        let mut sim = Sim {
            now_ms: 0,
            rng: fastrand::Rng::with_seed(seed),
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            net: NetConditions::CALM,
            cut: vec![vec![false; n]; n],
            plan,
            phase: Phase::Faults,
            committed: Vec::new(),
            entry_ids: BTreeMap::new(),
            leaders: BTreeMap::new(),
            attempts: Vec::new(),
            writes: Vec::new(),
            next_payload: 1,
            violation: None,
            trace: None,
            stats: Stats::default(),
        };
        for (i, disk) in disks.into_iter().enumerate() {
            for (index, term, payload) in disk.entries() {
                sim.note_entry(index, term, payload);
                if index <= disk.commit_checkpoint {
                    sim.record_committed(index, term, payload);
                }
            }
            sim.nodes.push(Node {
                id: i as NodeId + 1,
                raft: None,
                disk,
                incarnation: 0,
                timer_at: u64::MAX,
                hold_syncs: false,
                sync_ms_max: 10,
                published: 0,
                serving: false,
                served_max: 0,
            });
        }
        for i in 0..n {
            sim.start_node(i);
        }
        if let Some(plan) = plan {
            sim.schedule(0, Event::Client);
            sim.schedule(1, Event::Fault);
            sim.schedule(plan.heal_ms, Event::Heal);
        }
        sim
    }

    /// Keep the last `lines` trace lines, printed by [`Sim::trace_dump`].
    pub fn enable_trace(&mut self, lines: usize) {
        self.trace = Some(VecDeque::with_capacity(lines));
    }

    pub fn trace_dump(&self) -> String {
        self.trace
            .as_ref()
            .map(|t| {
                t.iter().fold(String::new(), |mut s, l| {
                    let _ = writeln!(s, "{l}");
                    s
                })
            })
            .unwrap_or_default()
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            if trace.len() == trace.capacity() {
                trace.pop_front();
            }
            trace.push_back(format!("{:>6} {}", self.now_ms, line()));
        }
    }

    fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.note(|| format!("VIOLATION: {what}"));
            self.violation = Some(format!("at {} ms: {what}", self.now_ms));
        }
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            event,
        });
    }

    // --- the driver ---

    /// Run one event. False when nothing is left to run.
    fn run_one(&mut self) -> bool {
        let Some(next) = self.queue.pop() else {
            return false;
        };
        debug_assert!(next.at >= self.now_ms);
        self.now_ms = next.at;
        self.stats.events += 1;
        match next.event {
            Event::Deliver(packet) => self.deliver(packet),
            Event::SyncDone { node, incarnation } => self.sync_done(node, incarnation),
            Event::Tick { node, incarnation } => self.timer_fired(node, incarnation, next.at),
            Event::Restart { node } => self.restart(node),
            Event::Fault => self.random_fault(),
            Event::Client => self.client(),
            Event::Heal => self.heal_all(),
        }
        if self.stats.events.is_multiple_of(FULL_CHECK_EVERY_EVENTS) {
            self.check_logs();
        }
        if self.plan.is_some() {
            self.check_liveness();
        }
        true
    }

    /// Run until `until_ms` of virtual time, a violation, or the plan is done.
    pub fn run_for(&mut self, ms: u64) {
        let until = self.now_ms + ms;
        self.run_until(ms, |_| false);
        self.now_ms = self.now_ms.max(until);
    }

    /// Run until `done` holds (checked after every event), at most `ms`. Returns
    /// whether `done` held.
    pub fn run_until(&mut self, ms: u64, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let until = self.now_ms + ms;
        loop {
            if self.violation.is_some() || self.phase == Phase::Done {
                return false;
            }
            if done(self) {
                return true;
            }
            match self.queue.peek() {
                Some(next) if next.at <= until => {}
                _ => return false,
            }
            self.run_one();
        }
    }

    /// Run a planned simulation to its end. Returns the violation, if any.
    pub fn run_plan(&mut self) -> Result<(), String> {
        while self.violation.is_none() && self.phase != Phase::Done {
            if !self.run_one() {
                self.fail("the event queue ran dry".into());
            }
        }
        match self.violation.take() {
            Some(v) => Err(v),
            None => Ok(()),
        }
    }

    // --- replicas ---

    fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let recovered = Recovered {
            hard_state: node.disk.hard_state,
            commit_index: node.disk.commit_checkpoint,
            log: node.disk.log_terms(),
        };
        let seed = self.rng.u64(..);
        let id = node.id;
        let config = raft_config(id, self.cut.len());
        match Raft::new(config, recovered, seed, self.now_ms) {
            Ok(raft) => {
                // Retention removes only committed entries, so a checkpoint older than
                // the log's start moves up to it.
                let disk = &self.nodes[i].disk;
                let expected = disk.commit_checkpoint.max(disk.base().index);
                check!(
                    self,
                    raft.commit_index() == expected,
                    "node {id} restarted with commit {}, not its checkpoint {} (log start {})",
                    raft.commit_index(),
                    disk.commit_checkpoint,
                    disk.base().index
                );
                self.nodes[i].published = raft.commit_index();
                self.nodes[i].raft = Some(raft);
                self.nodes[i].serving = false;
                self.nodes[i].timer_at = u64::MAX;
                self.note(|| format!("node {id} starts"));
                self.arm_timer(i);
            }
            Err(e) => self.fail(format!("node {id} cannot restart from its disk: {e}")),
        }
    }

    /// Power loss on `i`: unsynced writes are lost or torn, messages to it vanish.
    pub fn crash(&mut self, i: usize) {
        if self.nodes[i].raft.take().is_none() {
            return;
        }
        self.stats.crashes += 1;
        let node = &mut self.nodes[i];
        node.incarnation += 1;
        node.disk.crash(&mut self.rng);
        let id = node.id;
        let durable = node.disk.durable_index();
        let checkpoint = node.disk.commit_checkpoint;
        self.note(|| format!("node {id} crashes, log durable to {durable}"));
        check!(
            self,
            durable >= checkpoint,
            "node {id}: commit checkpoint {checkpoint} past its durable log {durable} after a crash"
        );
        self.attempts.retain(|a| a.node != i);
    }

    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].raft.is_none() {
            self.start_node(i);
        }
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].raft.is_some()
    }

    pub fn raft(&self, i: usize) -> &Raft {
        self.nodes[i].raft.as_ref().expect("node is up")
    }

    fn arm_timer(&mut self, i: usize) {
        let Some(raft) = &self.nodes[i].raft else {
            return;
        };
        let at = raft.next_deadline_ms().max(self.now_ms + 1);
        if at < self.nodes[i].timer_at {
            self.nodes[i].timer_at = at;
            let incarnation = self.nodes[i].incarnation;
            self.schedule(
                at,
                Event::Tick {
                    node: i,
                    incarnation,
                },
            );
        }
    }

    fn timer_fired(&mut self, i: usize, incarnation: u64, at: u64) {
        let node = &mut self.nodes[i];
        if node.incarnation != incarnation || node.timer_at != at {
            return;
        }
        node.timer_at = u64::MAX;
        self.drive(i, Source::Nothing, |raft, now, out| raft.tick(now, out));
    }

    /// Call into replica `i` and carry out what it asks.
    fn drive<R>(
        &mut self,
        i: usize,
        source: Source<'_>,
        f: impl FnOnce(&mut Raft, u64, &mut Vec<Action>) -> R,
    ) -> Option<R> {
        let now = self.now_ms;
        let raft = self.nodes[i].raft.as_mut()?;
        let mut out = Vec::new();
        let result = f(raft, now, &mut out);
        for action in out {
            self.apply(i, action, source);
        }
        self.check_replica_matches_disk(i);
        self.check_served_watermark(i);
        self.arm_timer(i);
        Some(result)
    }

    fn deliver(&mut self, packet: Packet) {
        let (from, to) = (packet.from as usize - 1, packet.to as usize - 1);
        if self.cut[from][to] || !self.is_up(to) {
            return;
        }
        self.note(|| format!("{} -> {}: {:?}", packet.from, packet.to, packet.msg));
        let msg = packet.msg.clone();
        self.drive(to, Source::Packet(&packet), |raft, now, out| {
            raft.step(now, packet.from, msg, out)
        });
    }

    fn sync_done(&mut self, i: usize, incarnation: u64) {
        if self.nodes[i].incarnation != incarnation || !self.is_up(i) {
            return;
        }
        if self.nodes[i].hold_syncs {
            // A stalled disk: this sync completes later, or never if it crashes.
            self.schedule(
                self.now_ms + 5,
                Event::SyncDone {
                    node: i,
                    incarnation,
                },
            );
            return;
        }
        let Some((durable, began_at)) = self.nodes[i].disk.complete_sync() else {
            return;
        };
        self.maybe_checkpoint(i);
        // Half the time, first the report a naive I/O layer would make: the end of
        // the log when the sync began. After a truncation it is stale, and the
        // replica must see that from the term.
        if self.rng.bool() {
            self.drive(i, Source::Nothing, |raft, _, out| {
                raft.persisted(began_at.index, began_at.term, out)
            });
        }
        self.drive(i, Source::Nothing, |raft, _, out| {
            raft.persisted(durable.index, durable.term, out)
        });
        self.maybe_start_sync(i);
    }

    fn maybe_start_sync(&mut self, i: usize) {
        if self.nodes[i].disk.start_sync() {
            let delay = self.rng.u64(1..=self.nodes[i].sync_ms_max);
            let incarnation = self.nodes[i].incarnation;
            self.schedule(
                self.now_ms + delay,
                Event::SyncDone {
                    node: i,
                    incarnation,
                },
            );
        }
    }

    // --- the I/O layer: carrying out actions, checking each ---

    fn apply(&mut self, i: usize, action: Action, source: Source<'_>) {
        let id = self.nodes[i].id;
        if self.trace.is_some() {
            self.note(|| format!("  node {id}: {action:?}"));
        }
        match action {
            Action::PersistHardState(hs) => self.persist_hard_state(i, hs),
            Action::Truncate { from_index } => self.truncate(i, from_index),
            Action::Append {
                entries,
                source: from,
            } => self.append(i, &entries, from, source),
            Action::InstallSnapshot { log } => self.install(i, &log, source),
            Action::Send { to, msg } => self.send(i, to, msg),
            Action::SendSnapshot { to, snapshot } => {
                self.stats.snapshots_sent += 1;
                let disk = &self.nodes[i].disk;
                let first = snapshot.log.base().index + 1;
                let payloads: Option<Vec<Payload>> = (first..=snapshot.log.last_index())
                    .map(|ix| disk.get(ix).map(|s| s.payload))
                    .collect();
                let base_ok =
                    disk.term_at(snapshot.log.base().index) == Some(snapshot.log.base().term);
                match payloads {
                    Some(payloads) if base_ok => {
                        self.transmit(id, to, Message::InstallSnapshot(snapshot), payloads)
                    }
                    _ => self.fail(format!(
                        "node {id} ships a snapshot range its disk does not hold"
                    )),
                }
            }
            Action::CommitAdvanced { commit_index } => self.commit_advanced(i, commit_index),
            Action::BecameLeader { term } => {
                self.stats.leaders += 1;
                let first = *self.leaders.entry(term).or_insert(id);
                check!(
                    self,
                    first == id,
                    "two leaders in term {term}: {first} and {id}"
                );
                check!(
                    self,
                    self.nodes[i].disk.hard_state.term == term,
                    "node {id} leads term {term} before persisting it"
                );
            }
            Action::BecameFollower { .. } | Action::BecameCandidate { .. } => {
                // The node answers NOT_LEADER to the producers it was serving.
                self.attempts.retain(|a| a.node != i);
            }
        }
    }

    fn persist_hard_state(&mut self, i: usize, hs: HardState) {
        let old = self.nodes[i].disk.hard_state;
        let id = self.nodes[i].id;
        check!(
            self,
            hs.term >= old.term,
            "node {id}: term went from {} to {}",
            old.term,
            hs.term
        );
        let revote =
            hs.term == old.term && old.voted_for.is_some() && hs.voted_for != old.voted_for;
        check!(
            self,
            !revote,
            "node {id} changed its vote in term {}: {old:?} -> {hs:?}",
            hs.term
        );
        self.nodes[i].disk.hard_state = hs;
    }

    fn truncate(&mut self, i: usize, from_index: Index) {
        self.stats.truncations += 1;
        let id = self.nodes[i].id;
        let (commit, last) = (self.nodes[i].published, self.nodes[i].disk.last_index());
        check!(
            self,
            from_index > commit,
            "node {id} truncates from {from_index}, at or below its commit {commit}"
        );
        for index in from_index..=last {
            let Some(s) = self.nodes[i].disk.get(index) else {
                continue;
            };
            let committed = self.committed.get(index as usize).copied().flatten();
            check!(
                self,
                committed != Some((s.term, s.payload)),
                "node {id} truncates committed entry {index} (term {})",
                s.term
            );
        }
        self.nodes[i].disk.truncate(from_index);
    }

    fn append(&mut self, i: usize, entries: &[EntryId], from: PayloadSource, source: Source<'_>) {
        let id = self.nodes[i].id;
        for e in entries {
            let payload = match (from, source) {
                (PayloadSource::Proposal, Source::Proposal(p)) => Some(p),
                (PayloadSource::LeaderChange, _) => Some(MARKER | e.term),
                (PayloadSource::Message, Source::Packet(packet)) => match &packet.msg {
                    Message::Append(req) => {
                        let pos = e.index.checked_sub(req.prev.index + 1);
                        pos.and_then(|p| packet.payloads.get(p as usize).copied())
                    }
                    _ => None,
                },
                _ => None,
            };
            let Some(payload) = payload else {
                self.fail(format!(
                    "node {id}: append of {e:?} from {from:?} without a payload"
                ));
                return;
            };
            self.note_entry(e.index, e.term, payload);
            if let Err(why) = self.nodes[i].disk.append(e.index, e.term, payload) {
                self.fail(format!("node {id}: {why}"));
                return;
            }
        }
        self.maybe_start_sync(i);
    }

    fn install(&mut self, i: usize, log: &LogTerms, source: Source<'_>) {
        self.stats.snapshots_installed += 1;
        let id = self.nodes[i].id;
        let Source::Packet(Packet {
            msg: Message::InstallSnapshot(snapshot),
            payloads,
            ..
        }) = source
        else {
            self.fail(format!("node {id} installs a snapshot it did not receive"));
            return;
        };
        check!(
            self,
            &snapshot.log == log,
            "node {id} installs a range other than the one received"
        );
        // Below the range's base is what the leader's retention removed; above its
        // end nothing committed may be lost.
        let held: Vec<(Index, Term, Payload)> = self.nodes[i]
            .disk
            .entries()
            .filter(|&(index, ..)| index > log.last_index())
            .collect();
        for (index, term, payload) in held {
            let committed = self.committed.get(index as usize).copied().flatten();
            check!(
                self,
                committed != Some((term, payload)),
                "node {id} installs a snapshot ending at {} over committed entry {index}",
                log.last_index()
            );
        }
        let first = log.base().index + 1;
        let mut entries = Vec::with_capacity(payloads.len());
        for (k, &payload) in payloads.iter().enumerate() {
            let index = first + k as u64;
            let term = log.term_at(index).unwrap_or(0);
            let committed = self.committed.get(index as usize).copied().flatten();
            check!(
                self,
                committed.is_none_or(|c| c == (term, payload)),
                "node {id} installs entry {index} {:?}, but {committed:?} was committed",
                (term, payload)
            );
            entries.push((term, payload));
        }
        self.nodes[i].disk.install(log.base(), &entries);
    }

    fn send(&mut self, i: usize, to: NodeId, msg: Message) {
        let id = self.nodes[i].id;
        let disk = &self.nodes[i].disk;
        let mut payloads = Vec::new();
        match &msg {
            Message::Append(req) => {
                check!(
                    self,
                    disk.term_at(req.prev.index) == Some(req.prev.term),
                    "node {id} sends an append after {:?}, which its disk does not hold",
                    req.prev
                );
                for e in &req.entries {
                    match self.nodes[i].disk.get(e.index) {
                        Some(s) if s.term == e.term => payloads.push(s.payload),
                        other => {
                            self.fail(format!(
                                "node {id} sends {e:?} but its disk holds {other:?}"
                            ));
                            return;
                        }
                    }
                }
            }
            Message::AppendResponse(r) => {
                if let AppendOutcome::Accepted { durable_index, .. } = r.outcome {
                    let durable = disk.durable_index();
                    check!(
                        self,
                        durable_index <= durable,
                        "node {id} acknowledges {durable_index} as durable with its disk synced to {durable}"
                    );
                }
            }
            Message::Vote(req) => {
                let hs = disk.hard_state;
                check!(
                    self,
                    hs.term == req.term && hs.voted_for == Some(id),
                    "node {id} asks for votes in term {} with hard state {hs:?}",
                    req.term
                );
            }
            Message::VoteResponse(r) if r.granted => {
                let hs = disk.hard_state;
                check!(
                    self,
                    hs.term == r.term && hs.voted_for == Some(to),
                    "node {id} grants a vote to {to} in term {} with hard state {hs:?}",
                    r.term
                );
            }
            _ => {}
        }
        self.transmit(id, to, msg, payloads);
    }

    fn transmit(&mut self, from: NodeId, to: NodeId, msg: Message, payloads: Vec<Payload>) {
        self.stats.messages += 1;
        if to == 0 || to as usize > self.nodes.len() || to == from {
            self.fail(format!("node {from} sends to {to}"));
            return;
        }
        let net = self.net;
        if self.rng.u32(0..1000) < net.drop_per_mille {
            return;
        }
        let copies = if self.rng.u32(0..1000) < net.duplicate_per_mille {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self.rng.u64(1..=net.delay_ms_max);
            if self.rng.u32(0..1000) < net.straggler_per_mille {
                delay += self.rng.u64(0..=1000);
            }
            let packet = Packet {
                from,
                to,
                msg: msg.clone(),
                payloads: payloads.clone(),
            };
            self.schedule(self.now_ms + delay, Event::Deliver(packet));
        }
    }

    fn commit_advanced(&mut self, i: usize, commit_index: Index) {
        let id = self.nodes[i].id;
        let disk = &self.nodes[i].disk;
        let (old, durable, base) = (
            self.nodes[i].published,
            disk.durable_index(),
            disk.base().index,
        );
        check!(
            self,
            commit_index > old,
            "node {id}: commit index moves from {old} to {commit_index}"
        );
        check!(
            self,
            commit_index <= durable,
            "node {id} publishes commit {commit_index} with its log durable to {durable}"
        );
        let from = old.max(base) + 1;
        for index in from..=commit_index {
            let Some(s) = self.nodes[i].disk.get(index) else {
                self.fail(format!("node {id} commits {index}, which it does not hold"));
                return;
            };
            self.record_committed(index, s.term, s.payload);
        }
        self.nodes[i].published = commit_index;
        self.maybe_checkpoint(i);
        self.stats.max_commit = self.stats.max_commit.max(commit_index);
        // Acknowledge the producers this leader was serving.
        let incarnation = self.nodes[i].incarnation;
        let mut k = 0;
        while k < self.attempts.len() {
            let a = self.attempts[k];
            if a.node != i || a.incarnation != incarnation || a.index > commit_index {
                k += 1;
                continue;
            }
            self.attempts.swap_remove(k);
            let held = self.nodes[i].disk.get(a.index);
            if held.is_some_and(|s| s.payload == a.payload && s.term == a.term) {
                self.ack(a);
            }
        }
    }

    /// The I/O layer writes the commit checkpoint when it gets round to it: here at
    /// random moments (half the commits, half the syncs), never ahead of the commit.
    fn maybe_checkpoint(&mut self, i: usize) {
        if self.rng.bool() {
            let node = &mut self.nodes[i];
            debug_assert!(node.published >= node.disk.commit_checkpoint);
            node.disk.commit_checkpoint = node.published;
        }
    }

    /// What readers see never goes back: a replica shows its commit index only while
    /// [`Raft::serves_reads`]; a leader of term T then shows at least every entry of
    /// an earlier term ever committed (Leader Completeness: such entries all sit
    /// below its own first entry), and a node never shows less than it (in any
    /// incarnation) showed before. A deposed leader that has not heard of its
    /// successor yet still shows its own, older, watermark until it steps down.
    fn check_served_watermark(&mut self, i: usize) {
        let Some(raft) = &self.nodes[i].raft else {
            return;
        };
        let (id, serves, commit, term) = (
            raft.id(),
            raft.serves_reads(),
            raft.commit_index(),
            raft.term(),
        );
        if !serves {
            self.nodes[i].serving = false;
            return;
        }
        if !self.nodes[i].serving {
            let earlier_terms_max = self
                .committed
                .iter()
                .enumerate()
                .rev()
                .find(|(_, c)| c.is_some_and(|(t, _)| t < term))
                .map_or(0, |(ix, _)| ix as Index);
            check!(
                self,
                commit >= earlier_terms_max,
                "node {id} starts serving reads in term {term} at {commit}, below entry \
                 {earlier_terms_max} of an earlier term, committed"
            );
            self.nodes[i].serving = true;
        }
        let before = self.nodes[i].served_max;
        check!(
            self,
            commit >= before,
            "node {id} shows readers a high watermark of {commit}, after {before}"
        );
        self.nodes[i].served_max = commit.max(before);
    }

    fn ack(&mut self, a: Attempt) {
        self.stats.acked += 1;
        let committed = self.committed.get(a.index as usize).copied().flatten();
        check!(
            self,
            committed == Some((a.term, a.payload)),
            "acked write {} at {} is not what was committed there ({committed:?})",
            a.payload,
            a.index
        );
        let write = &mut self.writes[a.write];
        if write.acked.is_none() {
            write.acked = Some((a.index, a.term, a.payload));
        }
    }

    fn record_committed(&mut self, index: Index, term: Term, payload: Payload) {
        let slot = index as usize;
        if self.committed.len() <= slot {
            self.committed.resize(slot + 1, None);
        }
        match self.committed[slot] {
            None => self.committed[slot] = Some((term, payload)),
            Some(c) => check!(
                self,
                c == (term, payload),
                "committed entry {index} changed from {c:?} to {:?}",
                (term, payload)
            ),
        }
    }

    fn note_entry(&mut self, index: Index, term: Term, payload: Payload) {
        let first = *self.entry_ids.entry((index, term)).or_insert(payload);
        check!(
            self,
            first == payload,
            "two entries at index {index} term {term}: payloads {first} and {payload}"
        );
    }

    /// The replica's view of its log is the disk's, and it claims no more than the
    /// disk made durable.
    fn check_replica_matches_disk(&mut self, i: usize) {
        let Some(raft) = &self.nodes[i].raft else {
            return;
        };
        let disk = &self.nodes[i].disk;
        let last = disk.last_index();
        let disk_last = EntryId {
            index: last,
            term: disk.term_at(last).unwrap_or(0),
        };
        let ok = raft.log().last() == disk_last
            && raft.log().base() == disk.base()
            && raft.persisted_index() <= disk.durable_index()
            && raft.commit_index() == self.nodes[i].published
            && disk.commit_checkpoint <= self.nodes[i].published
            && raft.hard_state() == disk.hard_state;
        if !ok {
            let what = format!(
                "node {}: replica (last {:?}, base {:?}, persisted {}, commit {}, {:?}) disagrees with \
                 its disk (last {disk_last:?}, base {:?}, durable {}, checkpoint {}, {:?})",
                raft.id(),
                raft.log().last(),
                raft.log().base(),
                raft.persisted_index(),
                raft.commit_index(),
                raft.hard_state(),
                disk.base(),
                disk.durable_index(),
                disk.commit_checkpoint,
                disk.hard_state
            );
            self.fail(what);
        }
    }

    /// Whole-log checks: every replica's committed prefix is the committed log, and
    /// any two logs agree before any index where they hold the same term (log
    /// matching, Raft §5.3).
    pub fn check_logs(&mut self) {
        for i in 0..self.nodes.len() {
            let disk = &self.nodes[i].disk;
            let id = self.nodes[i].id;
            let checkpoint = disk.commit_checkpoint;
            let bad = disk
                .entries()
                .take_while(|&(ix, ..)| ix <= checkpoint)
                .find(|&(ix, t, p)| {
                    self.committed.get(ix as usize).copied().flatten() != Some((t, p))
                });
            if let Some((ix, t, p)) = bad {
                let c = self.committed.get(ix as usize).copied().flatten();
                self.fail(format!(
                    "node {id} holds ({t}, {p}) at committed index {ix}; committed: {c:?}"
                ));
            }
        }
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                if let Some(why) = log_matching(&self.nodes[a].disk, &self.nodes[b].disk) {
                    let what = format!("nodes {} and {}: {why}", a + 1, b + 1);
                    self.fail(what);
                }
            }
        }
        for w in &self.writes {
            if let Some((index, term, payload)) = w.acked {
                let c = self.committed.get(index as usize).copied().flatten();
                if c != Some((term, payload)) {
                    let what =
                        format!("acked write {payload} at {index} is gone from the committed log");
                    self.fail(what);
                    break;
                }
            }
        }
    }

    // --- clients ---

    /// Propose one new write on replica `i`, as a producer would.
    pub fn propose(&mut self, i: usize) -> Result<Index, ProposeError> {
        let write = self.writes.len();
        self.writes.push(Write {
            liveness: false,
            acked: None,
            last_attempt_ms: None,
        });
        self.attempt(write, i)
    }

    fn attempt(&mut self, write: usize, i: usize) -> Result<Index, ProposeError> {
        let Some(raft) = &self.nodes[i].raft else {
            return Err(ProposeError::NotLeader { leader_hint: None });
        };
        let term = raft.term();
        let payload = self.next_payload;
        self.next_payload += 1;
        self.writes[write].last_attempt_ms = Some(self.now_ms);
        let result = self
            .drive(i, Source::Proposal(payload), |raft, now, out| {
                raft.propose(now, out)
            })
            .unwrap_or(Err(ProposeError::NotLeader { leader_hint: None }));
        if let Ok(index) = result {
            self.stats.proposals += 1;
            let incarnation = self.nodes[i].incarnation;
            self.attempts.push(Attempt {
                write,
                node: i,
                incarnation,
                term,
                index,
                payload,
            });
        }
        result
    }

    /// How many writes were proposed so far (the number the next one gets).
    pub fn writes_len(&self) -> usize {
        self.writes.len()
    }

    /// Whether write number `w` (in proposal order) was acknowledged.
    pub fn acked(&self, w: usize) -> bool {
        self.writes.get(w).is_some_and(|w| w.acked.is_some())
    }

    /// The replica a quorum follows in its current term, if any.
    pub fn stable_leader(&self) -> Option<usize> {
        let quorum = self.nodes.len() / 2 + 1;
        (0..self.nodes.len()).find(|&i| {
            let Some(raft) = &self.nodes[i].raft else {
                return false;
            };
            raft.role() == RoleKind::Leader
                && self
                    .nodes
                    .iter()
                    .filter_map(|n| n.raft.as_ref())
                    .filter(|r| r.term() == raft.term() && r.leader() == Some(raft.id()))
                    .count()
                    >= quorum
        })
    }

    fn leaders_up(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .raft
                    .as_ref()
                    .is_some_and(|r| r.role() == RoleKind::Leader)
            })
            .collect()
    }

    fn client(&mut self) {
        match self.phase {
            Phase::Faults => {
                let leaders = self.leaders_up();
                let target = if !leaders.is_empty() && self.rng.u32(0..10) < 9 {
                    leaders[self.rng.usize(0..leaders.len())]
                } else {
                    self.rng.usize(0..self.nodes.len())
                };
                let _ = self.propose(target);
                let next = self.now_ms + self.rng.u64(3..=30);
                self.schedule(next, Event::Client);
            }
            Phase::Liveness {
                heal_ms,
                leader_seen,
                writes_issued,
            } => {
                let Some(plan) = self.plan else { return };
                let mut issued = writes_issued;
                if leader_seen && issued < plan.liveness_writes {
                    self.writes.push(Write {
                        liveness: true,
                        acked: None,
                        last_attempt_ms: None,
                    });
                    issued += 1;
                }
                self.phase = Phase::Liveness {
                    heal_ms,
                    leader_seen,
                    writes_issued: issued,
                };
                // A producer with retries: re-send what is not acknowledged in time.
                let leader = self
                    .leaders_up()
                    .into_iter()
                    .max_by_key(|&i| self.raft(i).term());
                if let Some(leader) = leader {
                    for w in 0..self.writes.len() {
                        let write = &self.writes[w];
                        let due = write
                            .last_attempt_ms
                            .is_none_or(|t| self.now_ms >= t + RETRY_MS);
                        if write.liveness && write.acked.is_none() && due {
                            let _ = self.attempt(w, leader);
                        }
                    }
                }
                self.schedule(self.now_ms + 20, Event::Client);
            }
            Phase::Converging { .. } | Phase::Done => {}
        }
    }

    // --- faults ---

    pub fn isolate(&mut self, i: usize) {
        for j in 0..self.nodes.len() {
            if j != i {
                self.cut[i][j] = true;
                self.cut[j][i] = true;
            }
        }
    }

    /// Lose every message from `from` to `to` (one way).
    pub fn cut(&mut self, from: usize, to: usize) {
        self.cut[from][to] = true;
    }

    pub fn heal_network(&mut self) {
        for row in &mut self.cut {
            row.fill(false);
        }
    }

    /// Retention on replica `i`: remove its entries before `start_index`.
    pub fn retention(&mut self, i: usize, start_index: Index) {
        let Some(raft) = self.nodes[i].raft.as_mut() else {
            return;
        };
        let id = raft.id();
        match raft.log_start_moved(start_index) {
            Ok(()) => {
                self.stats.retentions += 1;
                self.nodes[i].disk.remove_prefix(start_index - 1);
                self.check_replica_matches_disk(i);
            }
            Err(e) => self.fail(format!(
                "node {id}: retention to {start_index} refused: {e}"
            )),
        }
    }

    pub fn transfer(&mut self, i: usize, to: NodeId) -> bool {
        self.stats.transfers += 1;
        self.drive(i, Source::Nothing, |raft, now, out| {
            raft.transfer_leadership(now, to, out)
        })
        .is_some_and(|r| r.is_ok())
    }

    fn random_fault(&mut self) {
        if self.phase != Phase::Faults {
            return;
        }
        let n = self.nodes.len();
        let pick = self.rng.usize(0..n);
        match self.rng.u32(0..100) {
            0..=11 if self.is_up(pick) => {
                self.crash(pick);
                let back = self.now_ms + self.rng.u64(5..=800);
                self.schedule(back, Event::Restart { node: pick });
            }
            12..=23 => {
                // Two sides, cut both ways.
                let side: Vec<bool> = (0..n).map(|_| self.rng.bool()).collect();
                for a in 0..n {
                    for b in 0..n {
                        self.cut[a][b] = side[a] != side[b];
                    }
                }
            }
            24..=31 => self.isolate(pick),
            32..=37 => {
                let other = self.rng.usize(0..n);
                if other != pick {
                    self.cut[pick][other] = true;
                }
            }
            38..=51 => self.heal_network(),
            52..=66 => {
                self.net = NetConditions {
                    drop_per_mille: [0, 0, 20, 100, 300][self.rng.usize(0..5)],
                    duplicate_per_mille: [0, 10, 100][self.rng.usize(0..3)],
                    delay_ms_max: [2, 5, 20, 60, 200][self.rng.usize(0..5)],
                    straggler_per_mille: [0, 5, 30][self.rng.usize(0..3)],
                };
            }
            67..=76 => {
                let disk = &self.nodes[pick].disk;
                let (base, checkpoint) = (disk.base().index, disk.commit_checkpoint);
                if self.is_up(pick) && checkpoint > base {
                    let start = self.rng.u64(base + 2..=checkpoint + 1);
                    self.retention(pick, start);
                }
            }
            77..=82 => {
                if let Some(&leader) = self.leaders_up().first() {
                    let to = self.rng.u32(1..=n as u32);
                    if to != self.nodes[leader].id {
                        self.transfer(leader, to);
                    }
                }
            }
            83..=89 => {
                let node = &mut self.nodes[pick];
                node.hold_syncs = !node.hold_syncs;
                node.sync_ms_max = [1, 5, 20, 80][self.rng.usize(0..4)];
            }
            _ => {}
        }
        let next = self.now_ms + self.rng.u64(5..=200);
        self.schedule(next, Event::Fault);
    }

    fn heal_all(&mut self) {
        self.note(|| "HEAL: faults stop".into());
        self.heal_network();
        self.net = NetConditions::CALM;
        for i in 0..self.nodes.len() {
            self.nodes[i].hold_syncs = false;
            self.nodes[i].sync_ms_max = 10;
            self.restart(i);
        }
        self.phase = Phase::Liveness {
            heal_ms: self.now_ms,
            leader_seen: false,
            writes_issued: 0,
        };
    }

    /// After the heal: a leader within a bound, every write acknowledged within a
    /// bound, then every replica caught up.
    fn check_liveness(&mut self) {
        let Some(plan) = self.plan else { return };
        match self.phase {
            Phase::Faults | Phase::Done => {}
            Phase::Liveness {
                heal_ms,
                leader_seen,
                writes_issued,
            } => {
                let elapsed = self.now_ms - heal_ms;
                if !leader_seen {
                    if self.stable_leader().is_some() {
                        self.stats.election_after_heal_ms = elapsed;
                        self.phase = Phase::Liveness {
                            heal_ms,
                            leader_seen: true,
                            writes_issued,
                        };
                    } else if elapsed > ELECTION_BOUND_MS {
                        self.fail(format!(
                            "no leader {ELECTION_BOUND_MS} ms after the faults stopped"
                        ));
                    }
                    return;
                }
                let pending = self
                    .writes
                    .iter()
                    .filter(|w| w.liveness && w.acked.is_none())
                    .count();
                if writes_issued == plan.liveness_writes && pending == 0 {
                    self.stats.writes_after_heal_ms = elapsed;
                    self.phase = Phase::Converging { heal_ms };
                } else if elapsed > WRITES_BOUND_MS {
                    self.fail(format!(
                        "{pending} writes not acknowledged {WRITES_BOUND_MS} ms after the faults stopped"
                    ));
                }
            }
            Phase::Converging { heal_ms } => {
                if self.converged() {
                    self.check_logs();
                    self.phase = Phase::Done;
                } else if self.now_ms - heal_ms > CONVERGE_BOUND_MS {
                    self.fail(format!(
                        "replicas not caught up {CONVERGE_BOUND_MS} ms after the faults stopped"
                    ));
                }
            }
        }
    }

    /// Every replica is up, follows one leader, and has published its commit index.
    pub fn converged(&self) -> bool {
        let Some(leader) = self.stable_leader() else {
            return false;
        };
        let target = self.raft(leader);
        self.nodes.iter().all(|n| {
            n.raft.as_ref().is_some_and(|r| {
                r.term() == target.term()
                    && r.commit_index() == target.commit_index()
                    && r.log().last() == target.log().last()
            })
        })
    }
}

/// Where two logs break the log-matching property, if they do.
fn log_matching(a: &Disk, b: &Disk) -> Option<String> {
    let low = a.base().index.max(b.base().index) + 1;
    let high = a.last_index().min(b.last_index());
    let mut agreed = false;
    for index in (low..=high).rev() {
        let (x, y) = (a.get(index)?, b.get(index)?);
        if x.term == y.term {
            if x.payload != y.payload {
                return Some(format!(
                    "index {index} term {}: payloads {} and {}",
                    x.term, x.payload, y.payload
                ));
            }
            agreed = true;
        } else if agreed {
            return Some(format!(
                "they agree on a later index but differ at {index}: terms {} and {}",
                x.term, y.term
            ));
        }
    }
    None
}

/// Run one random seed: the cluster size and every fault follow from it.
pub fn run_seed(seed: u64, trace_lines: usize) -> (Result<(), String>, Sim) {
    let nodes = if seed.is_multiple_of(2) { 3 } else { 5 };
    let mut plan_rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let plan = FaultPlan {
        heal_ms: plan_rng.u64(1500..=4000),
        liveness_writes: 10,
    };
    let mut sim = Sim::new(seed, nodes, Some(plan));
    if trace_lines > 0 {
        sim.enable_trace(trace_lines);
    }
    let result = sim.run_plan();
    (result, sim)
}

/// A disk holding `entries` (terms and payloads from index 1), a hard state and a
/// commit checkpoint: for hand-built starting points.
pub fn disk_with(
    hard_state: HardState,
    commit_checkpoint: Index,
    entries: &[(Term, Payload)],
) -> Disk {
    let mut disk = Disk::default();
    for (k, &(term, payload)) in entries.iter().enumerate() {
        disk.append(k as u64 + 1, term, payload)
            .expect("contiguous");
    }
    disk.start_sync();
    disk.complete_sync();
    disk.hard_state = hard_state;
    disk.commit_checkpoint = commit_checkpoint;
    disk
}
