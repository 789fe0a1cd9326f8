//! One replica of a replication group on its owning shard: the sans-IO [`Raft`]
//! state machine driven with the partition's log (the engine) and the shard's
//! [`Runtime`] (transport, commit checkpoint, leader table).
//!
//! Every event of a replica (a message, a tick, "durable up to N", a proposal) goes
//! through one inbox and is handled by one task, so the actions of one call are
//! carried out in order, and the barriers of the ordering contract
//! (`crate::replication`) hold by awaiting them before the next action: hard state,
//! truncation. Appends are not barriers: a task per append waits for the engine's
//! group commit and reports back through the inbox.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

use glommio::channels::local_channel::{self, LocalSender};
use strand_engine::batch;
use strand_engine::signal::Notify;

use super::entry_offsets::EntryOffsets;
use super::records;
use super::runtime::Runtime;
use crate::kafka::errors;
use crate::partition::{Partition, Produced, Verdict};
use crate::replication::{
    Action, Config, EntryId, HardState, Index, LogTerms, Message, NodeId, PayloadSource,
    ProposeError, Raft, Recovered, RoleKind, Term,
};

/// How far behind the commit index a follower may be, in time, and still count as
/// in sync (Kafka's replica.lag.time.max.ms, 30 s there). Under load the slower of
/// two followers is always a round or two behind the faster one, which moves the
/// commit index: an instantaneous comparison would flap it in and out of the ISR
/// (and the under-replicated count and readiness with it).
const IN_SYNC_LAG_MS: u64 = 1000;

/// How long an acks=all produce waits for its batch to commit.
const COMMIT_WAIT: Duration = Duration::from_secs(30);
/// Most bytes read from the log for one outgoing append.
const APPEND_READ_BYTES_MAX: usize = 8 << 20;
/// Most payload bytes in one append frame (frames stop at 64 MiB; Raft may name 64
/// entries of up to a few MiB each).
const APPEND_FRAME_BYTES_MAX: usize = 16 << 20;

/// What a replica's task is asked to do.
enum Event {
    Step {
        from: NodeId,
        msg: Message,
        payloads: Vec<Bytes>,
    },
    Tick,
    Persisted {
        index: Index,
        term: Term,
    },
    Propose {
        records: Bytes,
        reply: LocalSender<ProposeReply>,
    },
    Transfer {
        target: NodeId,
        reply: LocalSender<Result<(), String>>,
    },
}

/// The replica's event queue: unbounded (the producers of events are bounded
/// themselves: ticks by time, messages by the transport's windows, proposals by the
/// requests in flight), shared by the tasks that report durability.
#[derive(Default)]
struct Inbox {
    queue: RefCell<VecDeque<Event>>,
    wake: Notify,
    closed: Cell<bool>,
}

impl Inbox {
    fn push(&self, event: Event) -> bool {
        if self.closed.get() {
            return false;
        }
        self.queue.borrow_mut().push_back(event);
        self.wake.notify();
        true
    }

    async fn pop(&self) -> Option<Event> {
        loop {
            if let Some(e) = self.queue.borrow_mut().pop_front() {
                return Some(e);
            }
            if self.closed.get() {
                return None;
            }
            self.wake.wait().await;
        }
    }

    fn close(&self) {
        self.closed.set(true);
        self.wake.notify();
    }
}

/// The leader's answer to a proposal, once the batch is in its log (or refused).
#[derive(Debug, Clone, Copy)]
enum ProposeReply {
    Appended {
        base_offset: u64,
        last_offset: u64,
        term: Term,
    },
    Duplicate {
        base_offset: u64,
        term: Term,
    },
    Refused(i16),
}

/// Where this replica thinks the group stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleView {
    pub role: RoleKind,
    pub leader: Option<NodeId>,
    pub term: Term,
}

pub struct Replica {
    pub group: u64,
    pub topic: String,
    pub partition_index: i32,
    pub partition: Rc<Partition>,
    pub voters: Vec<NodeId>,
    raft: RefCell<Raft>,
    offsets: RefCell<EntryOffsets>,
    hard_state_path: PathBuf,
    inbox: Rc<Inbox>,
    runtime: Weak<Runtime>,
    view: Cell<RoleView>,
    published_commit: Cell<Index>,
    /// While leading: `(now_ms, commit index)` over the last [`IN_SYNC_LAG_MS`],
    /// and the newest one before that.
    commit_history: RefCell<VecDeque<(u64, Index)>>,
    /// Set once the replica cannot go on (a failed truncation or hard-state write):
    /// it stops acting rather than risk acknowledging what it did not keep.
    failed: Cell<bool>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("group", &self.group)
            .field("topic", &self.topic)
            .field("partition", &self.partition_index)
            .finish()
    }
}

/// The hard state file: `term voted_for` (voted_for -1: none).
fn read_hard_state(path: &std::path::Path) -> Result<HardState, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut parts = text.split_whitespace();
            let term = parts.next().and_then(|t| t.parse::<Term>().ok());
            let voted = parts.next().and_then(|v| v.parse::<i64>().ok());
            match (term, voted) {
                (Some(term), Some(voted)) => Ok(HardState {
                    term,
                    voted_for: u32::try_from(voted).ok(),
                }),
                _ => Err(format!("{} is corrupt: {text:?}", path.display())),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HardState::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn write_hard_state(path: &std::path::Path, hs: HardState) -> std::io::Result<()> {
    let voted = hs.voted_for.map_or(-1, i64::from);
    crate::topics::write_durably(path, format!("{} {voted}\n", hs.term).as_bytes())
}

impl Replica {
    /// Open a replica over `partition`'s log: scan the log for the term of every
    /// entry, read the hard state and the checkpointed commit, start the state
    /// machine and its task.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        runtime: &Rc<Runtime>,
        group: u64,
        topic: &str,
        partition_index: i32,
        partition: Rc<Partition>,
        voters: Vec<NodeId>,
        commit_index: Index,
    ) -> Result<Rc<Replica>, String> {
        let log = &partition.log;
        if log.start_offset() != 0 {
            return Err(format!(
                "{topic}-{partition_index}: the log starts at offset {}; replicated logs \
                 do not support retention yet",
                log.start_offset()
            ));
        }
        // The term of each entry is its batch's partitionLeaderEpoch.
        let mut offsets = EntryOffsets::new(0, 0);
        let mut entries = Vec::new();
        let end = log.end_offset();
        let mut offset = 0;
        while offset < end {
            let batches = log
                .read(offset, 4 << 20)
                .await
                .map_err(|e| format!("{topic}-{partition_index}: cannot scan the log: {e}"))?;
            if batches.is_empty() {
                break;
            }
            for b in batches {
                let h = batch::parse_header(&b)
                    .map_err(|e| format!("{topic}-{partition_index}: bad batch: {e}"))?;
                let next = h.last_offset() as u64 + 1;
                offsets.push(h.base_offset as u64, next);
                entries.push(EntryId {
                    index: offsets.last_index(),
                    term: u64::try_from(h.partition_leader_epoch).unwrap_or(0),
                });
                partition.record_producer(&h, h.base_offset as u64);
                offset = next;
            }
        }
        let terms =
            LogTerms::from_entries(crate::replication::EntryId::ZERO, entries).map_err(|e| {
                format!(
                    "{topic}-{partition_index}: the log was not written by a replication \
                     group ({e}); move the data directory aside to start this node fresh"
                )
            })?;
        let dir = partition.log.dir().to_path_buf();
        let hard_state_path = dir.join("raft-hard-state");
        let hard_state = read_hard_state(&hard_state_path)?;
        let runtime_config = runtime.raft_config(voters.clone());
        let commit_index = commit_index.min(terms.last_index());
        // A new group: the preferred replica (the first) gets one election timeout's
        // head start, so leaders start out spread as the assignment spread them. The
        // others start their clocks later; if the preferred one is down they still
        // elect, one timeout later. (Raft only reads `now` to set deadlines.)
        let fresh = hard_state.term == 0 && terms.last_index() == 0;
        let head_start = if fresh && voters.first() != Some(&runtime.node_id) {
            runtime_config.election_timeout_ms
        } else {
            0
        };
        let now = runtime.now_ms() + head_start;
        let raft = Raft::new(
            runtime_config,
            Recovered {
                hard_state,
                commit_index,
                log: terms,
            },
            group ^ (u64::from(runtime.node_id) << 48) ^ seed_noise(),
            now,
        )
        .map_err(|e| format!("{topic}-{partition_index}: cannot start replication: {e}"))?;
        partition.set_replicated();
        let replica = Rc::new(Replica {
            group,
            topic: topic.to_string(),
            partition_index,
            partition,
            voters,
            view: Cell::new(RoleView {
                role: raft.role(),
                leader: raft.leader(),
                term: raft.term(),
            }),
            published_commit: Cell::new(0),
            commit_history: RefCell::new(VecDeque::new()),
            raft: RefCell::new(raft),
            offsets: RefCell::new(offsets),
            hard_state_path,
            inbox: Rc::new(Inbox::default()),
            runtime: Rc::downgrade(runtime),
            failed: Cell::new(false),
        });
        replica.publish(commit_index);
        glommio::spawn_local(replica.clone().run()).detach();
        Ok(replica)
    }

    pub fn view(&self) -> RoleView {
        self.view.get()
    }

    pub fn is_leader(&self) -> bool {
        self.view.get().role == RoleKind::Leader
    }

    /// On the leader: the replicas in sync, itself included: heard from within
    /// [`IN_SYNC_LAG_MS`], and durable through the commit index as it was that long
    /// ago (a younger leader: its first commit; none yet: the current one).
    pub fn in_sync(&self) -> Vec<NodeId> {
        let raft = self.raft.borrow();
        let mut isr = vec![raft.id()];
        let now = self.runtime.upgrade().map_or(0, |rt| rt.now_ms());
        let history = self.commit_history.borrow();
        let threshold = history
            .iter()
            .rev()
            .find(|&&(at, _)| at + IN_SYNC_LAG_MS <= now)
            .or(history.front())
            .map_or(raft.commit_index(), |&(_, commit)| commit);
        isr.extend(
            raft.followers()
                .iter()
                .filter(|f| {
                    f.heard_ms.is_some_and(|at| at + IN_SYNC_LAG_MS > now)
                        && f.match_index >= threshold
                })
                .map(|f| f.node),
        );
        isr.sort_unstable();
        isr
    }

    /// On the leader: the follower to hand leadership to — the one furthest along,
    /// preferring followers heard from lately.
    pub fn best_follower(&self) -> Option<NodeId> {
        self.raft
            .borrow()
            .followers()
            .iter()
            .max_by_key(|f| (f.recently_active, f.match_index))
            .map(|f| f.node)
    }

    /// Whether a leadership transfer is under way.
    pub fn transferring(&self) -> bool {
        self.raft.borrow().transfer_target().is_some()
    }

    pub fn next_deadline_ms(&self) -> u64 {
        self.raft.borrow().next_deadline_ms()
    }

    pub fn tick(&self) {
        self.inbox.push(Event::Tick);
    }

    pub fn deliver(&self, from: NodeId, msg: Message, payloads: Vec<Bytes>) {
        self.inbox.push(Event::Step {
            from,
            msg,
            payloads,
        });
    }

    /// Close the inbox: the task ends after what is queued.
    pub fn stop(&self) {
        self.inbox.close();
    }

    /// Hand leadership to `target` (rolling upgrades).
    pub async fn transfer_leadership(&self, target: NodeId) -> Result<(), String> {
        let (tx, rx) = local_channel::new_bounded(1);
        if !self.inbox.push(Event::Transfer { target, reply: tx }) {
            return Err("the replica is stopping".to_string());
        }
        rx.recv()
            .await
            .unwrap_or_else(|| Err("the replica is stopping".into()))
    }

    /// Produce one batch through the group: the leader appends it, and with acks=all
    /// answers once the batch is committed (on a quorum, durably).
    pub async fn produce(&self, records: Bytes, acks: i16, max_message_bytes: u32) -> Produced {
        let log_start = self.partition.log.start_offset() as i64;
        let reply = |error_code, base_offset| Produced {
            error_code,
            base_offset,
            log_start_offset: log_start,
        };
        if let Err(code) = crate::partition::check_produced(&records, max_message_bytes) {
            return reply(code, -1);
        }
        // The CRC now, not at the append: a corrupt batch must not enter the group's
        // log (the followers would refuse it and stall).
        if batch::validate(&records).is_err() {
            return reply(errors::CORRUPT_MESSAGE, -1);
        }
        let (tx, rx) = local_channel::new_bounded(1);
        if !self.inbox.push(Event::Propose { records, reply: tx }) {
            return reply(errors::NOT_LEADER_OR_FOLLOWER, -1);
        }
        let (base_offset, wait_past, term) = match rx.recv().await {
            Some(ProposeReply::Appended {
                base_offset,
                last_offset,
                term,
            }) => (base_offset, last_offset, term),
            Some(ProposeReply::Duplicate { base_offset, term }) => (base_offset, base_offset, term),
            Some(ProposeReply::Refused(code)) => return reply(code, -1),
            None => return reply(errors::NOT_LEADER_OR_FOLLOWER, -1),
        };
        if acks == -1 {
            let deadline = Instant::now() + COMMIT_WAIT;
            let committed = || self.partition.high_watermark() > wait_past;
            let deposed = || self.view.get().term != term || !self.is_leader();
            self.partition
                .wait_hw(deadline, || committed() || deposed())
                .await;
            if !committed() {
                // Not committed under this leader: it may still commit under the
                // next, so the producer retries (idempotence dedups the retry).
                let code = if deposed() {
                    errors::NOT_LEADER_OR_FOLLOWER
                } else {
                    errors::REQUEST_TIMED_OUT
                };
                return reply(code, -1);
            }
        }
        reply(errors::NONE, base_offset as i64)
    }

    /// The task: one event at a time, actions carried out in order.
    async fn run(self: Rc<Self>) {
        let mut out = Vec::new();
        let inbox = self.inbox.clone();
        while let Some(event) = inbox.pop().await {
            if self.failed.get() {
                continue;
            }
            let Some(runtime) = self.runtime.upgrade() else {
                return;
            };
            let now = runtime.now_ms();
            let mut message_payloads = (0, Vec::new());
            let mut proposal = None;
            match event {
                Event::Tick => self.raft.borrow_mut().tick(now, &mut out),
                Event::Persisted { index, term } => {
                    self.raft.borrow_mut().persisted(index, term, &mut out)
                }
                Event::Step {
                    from,
                    msg,
                    payloads,
                } => {
                    if let Message::Append(a) = &msg {
                        message_payloads = (a.prev.index + 1, payloads);
                    }
                    self.raft.borrow_mut().step(now, from, msg, &mut out);
                }
                Event::Transfer { target, reply } => {
                    let result = self
                        .raft
                        .borrow_mut()
                        .transfer_leadership(now, target, &mut out)
                        .map_err(|e| e.to_string());
                    let _ = reply.try_send(result);
                }
                Event::Propose { records, reply } => match self.admit(&records) {
                    Err(refusal) => {
                        let _ = reply.try_send(refusal);
                    }
                    Ok(()) => {
                        let proposed = self.raft.borrow_mut().propose(now, &mut out);
                        match proposed {
                            Ok(_) => proposal = Some((records, reply)),
                            Err(e) => {
                                let _ = reply.try_send(ProposeReply::Refused(propose_error(e)));
                            }
                        }
                    }
                },
            }
            let actions = std::mem::take(&mut out);
            if let Err(e) = self
                .execute(&runtime, actions, &mut message_payloads, &mut proposal)
                .await
            {
                tracing::error!(
                    topic = %self.topic,
                    partition = self.partition_index,
                    error = %e,
                    "replica stopped: it cannot keep its log or state durable"
                );
                self.failed.set(true);
            }
            if let Some((_, reply)) = proposal {
                let _ = reply.try_send(ProposeReply::Refused(errors::NOT_LEADER_OR_FOLLOWER));
            }
        }
    }

    /// Leadership and idempotence checks before a proposal. A duplicate is answered
    /// here (with the original's offset) without entering the log again.
    fn admit(&self, records: &Bytes) -> Result<(), ProposeReply> {
        let view = self.view.get();
        if view.role != RoleKind::Leader {
            return Err(ProposeReply::Refused(errors::NOT_LEADER_OR_FOLLOWER));
        }
        let h = batch::parse_header(records)
            .map_err(|_| ProposeReply::Refused(errors::CORRUPT_MESSAGE))?;
        match self.partition.check_producer(&h) {
            Verdict::Append => Ok(()),
            Verdict::Duplicate { base_offset } => Err(ProposeReply::Duplicate {
                base_offset,
                term: view.term,
            }),
            Verdict::Reject(code) => Err(ProposeReply::Refused(code)),
        }
    }

    async fn execute(
        &self,
        runtime: &Rc<Runtime>,
        actions: Vec<Action>,
        message_payloads: &mut (Index, Vec<Bytes>),
        proposal: &mut Option<(Bytes, LocalSender<ProposeReply>)>,
    ) -> Result<(), String> {
        for action in actions {
            match action {
                Action::PersistHardState(hs) => write_hard_state(&self.hard_state_path, hs)
                    .map_err(|e| format!("cannot write the hard state: {e}"))?,
                Action::Truncate { from_index } => {
                    let offset = self
                        .offsets
                        .borrow_mut()
                        .truncate(from_index)
                        .ok_or_else(|| format!("truncation at unknown entry {from_index}"))?;
                    self.partition
                        .log
                        .truncate_to(offset)
                        .await
                        .map_err(|e| format!("cannot truncate at offset {offset}: {e}"))?;
                    self.partition.reset_producers().await;
                }
                Action::Append { entries, source } => {
                    let mut last = None;
                    for entry in entries {
                        let payload = match source {
                            PayloadSource::Proposal => match proposal.as_ref() {
                                Some((records, _)) => records.clone(),
                                None => return Err("a proposal append without a batch".into()),
                            },
                            PayloadSource::Message => {
                                // Taken, not cloned: the log then owns the only
                                // reference and appends the buffer without a copy.
                                let (first, payloads) = &mut *message_payloads;
                                let k = entry.index.checked_sub(*first).and_then(|k| {
                                    let slot = payloads.get_mut(usize::try_from(k).ok()?)?;
                                    Some(std::mem::take(slot)).filter(|p| !p.is_empty())
                                });
                                match k {
                                    Some(p) => p,
                                    None => {
                                        return Err(format!(
                                            "append of entry {} without its payload",
                                            entry.index
                                        ))
                                    }
                                }
                            }
                            PayloadSource::LeaderChange => {
                                Bytes::from(records::leader_change_batch(
                                    runtime.node_id,
                                    &self.voters,
                                    super::runtime::now_unix_ms(),
                                ))
                            }
                        };
                        let (base, next) = self.append_entry(entry, payload).await?;
                        if source == PayloadSource::Proposal {
                            if let Some((_, reply)) = proposal.take() {
                                let _ = reply.try_send(ProposeReply::Appended {
                                    base_offset: base,
                                    last_offset: next - 1,
                                    term: entry.term,
                                });
                            }
                        }
                        last = Some((entry, next - 1));
                    }
                    if let Some((entry, last_offset)) = last {
                        self.report_when_durable(entry, last_offset);
                    }
                }
                Action::InstallSnapshot { .. } => {
                    return Err("installing a snapshot is not supported yet".into())
                }
                Action::Send { to, msg } => self.send(runtime, to, msg).await?,
                Action::SendSnapshot { to, .. } => {
                    tracing::warn!(
                        topic = %self.topic,
                        partition = self.partition_index,
                        follower = to,
                        "follower needs entries this log no longer holds; snapshot shipping \
                         is not supported yet"
                    );
                }
                Action::CommitAdvanced { commit_index } => {
                    if self.raft.borrow().role() == RoleKind::Leader {
                        self.note_commit(runtime.now_ms(), commit_index);
                    }
                    self.publish(commit_index);
                    runtime.checkpoint_commit(self.group, commit_index);
                }
                Action::BecameLeader { term } => {
                    self.set_view(runtime, RoleKind::Leader, Some(runtime.node_id), term)
                }
                Action::BecameFollower { term, leader } => {
                    self.set_view(runtime, RoleKind::Follower, leader, term)
                }
                Action::BecameCandidate { term, pre_vote } => {
                    let role = if pre_vote {
                        RoleKind::PreCandidate
                    } else {
                        RoleKind::Candidate
                    };
                    self.set_view(runtime, role, None, term)
                }
            }
        }
        Ok(())
    }

    /// Keep the commits of the last [`IN_SYNC_LAG_MS`] and the newest one before,
    /// one per 10 ms at most (so at most ~100 per partition).
    fn note_commit(&self, now_ms: u64, commit_index: Index) {
        let mut history = self.commit_history.borrow_mut();
        match history.back_mut() {
            Some(last) if now_ms < last.0 + 10 => last.1 = commit_index,
            _ => history.push_back((now_ms, commit_index)),
        }
        while history.len() > 1 && history[1].0 + IN_SYNC_LAG_MS <= now_ms {
            history.pop_front();
        }
    }

    fn set_view(&self, runtime: &Rc<Runtime>, role: RoleKind, leader: Option<NodeId>, term: Term) {
        let view = RoleView { role, leader, term };
        if view.term != self.view.get().term || view.role != RoleKind::Leader {
            // Another term's (or no) leadership: its commits say nothing of this one.
            self.commit_history.borrow_mut().clear();
        }
        if self.view.replace(view) != view {
            tracing::info!(
                topic = %self.topic,
                partition = self.partition_index,
                ?role,
                ?leader,
                term,
                "replication role"
            );
            runtime.leader_changed(self);
            // acks=all waiters of an earlier term give up now.
            self.partition.wake_hw_waiters();
        }
    }

    /// Write one entry's batch at the end of the log, stamped with its term.
    async fn append_entry(&self, entry: EntryId, payload: Bytes) -> Result<(u64, u64), String> {
        debug_assert_eq!(entry.index, self.offsets.borrow().last_index() + 1);
        // A follower's payload is its own buffer (no copy); a proposal's is a slice
        // of the request (copied once, here).
        let mut bytes = payload
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        let epoch = i32::try_from(entry.term).map_err(|_| "term past int32".to_string())?;
        batch::set_partition_leader_epoch(&mut bytes, epoch);
        let header =
            batch::parse_header(&bytes).map_err(|e| format!("entry {}: {e}", entry.index))?;
        let out = self
            .partition
            .log
            .append(bytes)
            .await
            .map_err(|e| format!("cannot append entry {}: {e}", entry.index))?;
        self.offsets
            .borrow_mut()
            .push(out.base_offset, out.last_offset + 1);
        self.partition.record_producer(&header, out.base_offset);
        Ok((out.base_offset, out.last_offset + 1))
    }

    /// Tell the state machine once the log is durable through `entry`.
    fn report_when_durable(&self, entry: EntryId, last_offset: u64) {
        let partition = self.partition.clone();
        let inbox = self.inbox.clone();
        glommio::spawn_local(async move {
            if partition.log.wait_durable(last_offset).await.is_ok() {
                inbox.push(Event::Persisted {
                    index: entry.index,
                    term: entry.term,
                });
            }
        })
        .detach();
    }

    async fn send(&self, runtime: &Rc<Runtime>, to: NodeId, msg: Message) -> Result<(), String> {
        let payloads = match &msg {
            Message::Append(a) if !a.entries.is_empty() => {
                match self.read_entries(a.prev.index + 1, a.entries.len()).await {
                    Ok(p) => p,
                    Err(e) => {
                        // Not fatal: the leader sends these entries again.
                        tracing::warn!(topic = %self.topic, partition = self.partition_index, error = %e, "cannot read entries to send");
                        return Ok(());
                    }
                }
            }
            _ => Vec::new(),
        };
        // An append over the frame limit goes as several appends, each naming the
        // entry before it: to the follower that is the same as the one append.
        let Message::Append(append) = msg else {
            runtime.send_message(self.group, to, msg, payloads);
            return Ok(());
        };
        let mut prev = append.prev;
        let mut entries = append.entries.into_iter().zip(payloads).peekable();
        while entries.peek().is_some() || prev == append.prev {
            let mut part = Vec::new();
            let mut part_payloads = Vec::new();
            let mut bytes = 0;
            while let Some((entry, payload)) = entries.peek() {
                if !part.is_empty() && bytes + payload.len() > APPEND_FRAME_BYTES_MAX {
                    break;
                }
                bytes += payload.len();
                part.push(*entry);
                part_payloads.push(payload.clone());
                entries.next();
            }
            let last = part.last().copied().unwrap_or(prev);
            let piece = crate::replication::AppendRequest {
                term: append.term,
                prev,
                entries: part,
                commit_index: append.commit_index,
            };
            runtime.send_message(self.group, to, Message::Append(piece), part_payloads);
            if last == prev {
                break;
            }
            prev = last;
        }
        Ok(())
    }

    /// The batches of `count` entries from `first`.
    async fn read_entries(&self, first: Index, count: usize) -> Result<Vec<Bytes>, String> {
        let mut offset = self
            .offsets
            .borrow()
            .start_of(first)
            .ok_or_else(|| format!("entry {first} is not in the log"))?;
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let batches = self
                .partition
                .log
                .read(offset, APPEND_READ_BYTES_MAX)
                .await
                .map_err(|e| e.to_string())?;
            if batches.is_empty() {
                return Err(format!(
                    "the log ends before entry {}",
                    first + out.len() as u64
                ));
            }
            for b in batches {
                if out.len() == count {
                    break;
                }
                let h = batch::parse_header(&b).map_err(|e| e.to_string())?;
                offset = h.last_offset() as u64 + 1;
                out.push(b);
            }
        }
        Ok(out)
    }

    /// The commit index moved up (or was recovered at open): answer the acks=all
    /// produces it covers and show it as the high watermark. A leader shows it only
    /// once [`Raft::serves_reads`]: before that it may be behind what an earlier
    /// leader (or this node before a restart) already showed.
    pub fn publish(&self, commit_index: Index) {
        if commit_index <= self.published_commit.get() && commit_index != 0 {
            return;
        }
        {
            let raft = self.raft.borrow();
            if raft.role() == RoleKind::Leader && !raft.serves_reads() {
                return;
            }
        }
        let Some(hw) = self.offsets.borrow().end_of(commit_index) else {
            return;
        };
        self.published_commit.set(commit_index);
        self.partition.publish_high_watermark(hw);
        if let Some(runtime) = self.runtime.upgrade() {
            runtime.committed(self, commit_index);
        }
    }

    /// Whether clients may read from this replica now: it leads and shows a high
    /// watermark no lower than any shown before ([`Raft::serves_reads`]).
    pub fn serves_reads(&self) -> bool {
        self.raft.borrow().serves_reads()
    }

    /// Wait (until `deadline`) for a new leader to serve reads: one round of
    /// replication after its election. False if it still does not, or lost the lead.
    pub async fn wait_serves_reads(&self, deadline: Instant) -> bool {
        self.partition
            .wait_hw(deadline, || self.serves_reads() || !self.is_leader())
            .await;
        self.serves_reads()
    }

    pub fn published_commit(&self) -> Index {
        self.published_commit.get()
    }

    /// The committed batches of entries `from..=to` (the controller reads its
    /// commands back with this).
    pub async fn committed_entries(
        &self,
        from: Index,
        to: Index,
    ) -> Result<Vec<(Index, Bytes)>, String> {
        if from > to {
            return Ok(Vec::new());
        }
        let batches = self.read_entries(from, (to - from + 1) as usize).await?;
        Ok((from..=to).zip(batches).collect())
    }
}

fn propose_error(e: ProposeError) -> i16 {
    match e {
        ProposeError::NotLeader { .. } | ProposeError::TransferInProgress { .. } => {
            errors::NOT_LEADER_OR_FOLLOWER
        }
        // Kafka's answer when the replicas cannot keep up: retriable.
        ProposeError::Backlogged { .. } => errors::NOT_ENOUGH_REPLICAS,
    }
}

pub(crate) fn config_for(node_id: NodeId, voters: Vec<NodeId>, election_timeout_ms: u64) -> Config {
    Config {
        election_timeout_ms,
        heartbeat_interval_ms: (election_timeout_ms / 5).max(10),
        // Entries are record batches of up to a few MiB: a catching-up follower gets
        // at most 16 per append and 256 unsynced in flight, so its stream (and the
        // leader's reads for it) stay bounded.
        append_entries_max: 16,
        inflight_entries_max: 256,
        ..Config::new(node_id, voters)
    }
}

/// Some bits that differ between runs, for the election jitter's seed.
fn seed_noise() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
