//! The Raft state machine of one replication group (one partition), without I/O.
//!
//! Driven by [`Raft::step`] (a message arrived), [`Raft::tick`] (time passed),
//! [`Raft::persisted`] (the log is synced up to an index), [`Raft::propose`],
//! [`Raft::transfer_leadership`] and [`Raft::log_start_moved`]; every call appends
//! the [`Action`]s the I/O layer must carry out, in order, to an `out` vector. See
//! the module documentation of [`crate::replication`] for the ordering contract.
//!
//! Section numbers cite the Raft paper (Ongaro & Ousterhout, 2014) and Ongaro's
//! thesis (2014) for PreVote (§9.6), CheckQuorum and the leader lease (§6.2, §4.2.3)
//! and leadership transfer (§3.10).

use super::log_terms::LogTerms;
use super::message::{
    AppendOutcome, AppendRequest, AppendResponse, ConflictHint, Heartbeat, HeartbeatResponse,
    InstallSnapshot, Message, TimeoutNow, VoteRequest, VoteResponse,
};
use super::progress::{Progress, SendState, Sender, Update};
use super::{EntryId, Index, NodeId, Term, TERM_MAX};

/// Timing and limits of one group. Units are in the names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This replica.
    pub id: NodeId,
    /// Every voting member, this replica included. Membership is static.
    pub voters: Vec<NodeId>,
    /// A follower that hears nothing from a leader for a random time in
    /// `[election_timeout_ms, 2 * election_timeout_ms)` campaigns. It is also the
    /// leader lease: a replica that heard from its leader within it refuses to help
    /// depose it, and a leader that has not heard from a quorum within it steps down.
    pub election_timeout_ms: u64,
    /// How often a leader sends heartbeats. Well below the election timeout, so a
    /// lost heartbeat or two does not start an election.
    pub heartbeat_interval_ms: u64,
    /// Most entries in one append.
    pub append_entries_max: usize,
    /// Most entries a leader streams to a follower past what the follower has
    /// synced; a follower with a slow disk slows its own stream, not the others.
    pub inflight_entries_max: u64,
    /// Most entries a leader holds past its commit index before it refuses
    /// proposals (back-pressure when a quorum is slow or gone).
    pub uncommitted_entries_max: u64,
    /// How long a leader waits for a follower to acknowledge a snapshot before it
    /// probes the follower again (a lost transfer is then retried).
    pub snapshot_timeout_ms: u64,
}

impl Config {
    /// Defaults for a group on `voters`, seen from `id`.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Config {
            id,
            voters,
            election_timeout_ms: 1000,
            heartbeat_interval_ms: 100,
            append_entries_max: 64,
            inflight_entries_max: 1024,
            uncommitted_entries_max: 4096,
            snapshot_timeout_ms: 30_000,
        }
    }

    fn validate(&self) -> Result<(), StartError> {
        if !self.voters.contains(&self.id) {
            return Err(StartError::NotAVoter { id: self.id });
        }
        let mut sorted = self.voters.clone();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(StartError::DuplicateVoter { id: pair[0] });
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms >= self.election_timeout_ms
        {
            return Err(StartError::Timeouts {
                heartbeat_interval_ms: self.heartbeat_interval_ms,
                election_timeout_ms: self.election_timeout_ms,
            });
        }
        if self.append_entries_max == 0
            || self.inflight_entries_max == 0
            || self.uncommitted_entries_max == 0
        {
            return Err(StartError::ZeroLimit);
        }
        Ok(())
    }
}

/// Why a replica could not be started: a bad configuration, or a recovered state
/// that cannot have been written by a correct replica.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("replica {id} is not in the voter list")]
    NotAVoter { id: NodeId },
    #[error("replica {id} is in the voter list twice")]
    DuplicateVoter { id: NodeId },
    #[error(
        "heartbeat interval {heartbeat_interval_ms} ms must be above 0 and below the election \
         timeout {election_timeout_ms} ms"
    )]
    Timeouts {
        heartbeat_interval_ms: u64,
        election_timeout_ms: u64,
    },
    #[error(
        "append_entries_max, inflight_entries_max and uncommitted_entries_max must be above 0"
    )]
    ZeroLimit,
    #[error("the recovered log ends at term {log_term}, past the recovered term {term}")]
    LogPastTerm { log_term: Term, term: Term },
    #[error("the recovered term {term} is past the largest term {term_max}")]
    TermTooLarge { term: Term, term_max: Term },
    #[error(
        "the commit checkpoint {commit_index} is past the recovered log, which ends at \
         {last_index}: durable entries were lost"
    )]
    CheckpointPastLog {
        commit_index: Index,
        last_index: Index,
    },
}

/// What must survive a crash besides the log, and is written with
/// [`Action::PersistHardState`]: the vote of the current term (Raft §5.2: at most
/// one vote per term, even across restarts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
}

/// What a replica starts from: its durable hard state, its commit checkpoint (see
/// [`Action::CommitAdvanced`]) and the terms of its recovered log. Everything in the
/// recovered log counts as durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub hard_state: HardState,
    pub commit_index: Index,
    pub log: LogTerms,
}

impl Recovered {
    /// A replica that never ran.
    pub fn fresh() -> Self {
        Recovered {
            hard_state: HardState::default(),
            commit_index: 0,
            log: LogTerms::empty(),
        }
    }
}

/// Where the payloads of an [`Action::Append`] come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadSource {
    /// The message just passed to [`Raft::step`] (an append from the leader).
    Message,
    /// The payload passed with the [`Raft::propose`] call that returned the action.
    Proposal,
    /// A leader-change marker the I/O layer makes itself (in the node: a control
    /// batch carrying KIP-595's LeaderChangeMessage). A new leader writes one at the
    /// start of its term: entries of earlier terms commit only through an entry of
    /// the current one (Raft §5.4.2), and an idle partition must still publish its
    /// high watermark after a failover.
    LeaderChange,
}

/// What the I/O layer must do, in the order given. See the module documentation of
/// [`crate::replication`] for which actions must be durable before the next one runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write the term and vote durably before running any later action: a vote or
    /// a campaign must not be seen by anyone before it survives a crash.
    PersistHardState(HardState),
    /// Remove the log entries at and after `from_index`, durably, before running any
    /// later action (the engine's `truncate_to` is durable when it returns). Never
    /// at or below the commit index.
    Truncate {
        from_index: Index,
    },
    /// Write these entries after the current end of the log, payloads from
    /// `source`. Not a barrier: the I/O layer syncs when it likes and reports with
    /// [`Raft::persisted`]; later sends may leave before the sync.
    Append {
        entries: Vec<EntryId>,
        source: PayloadSource,
    },
    /// Replace the whole log with the range received with the [`Message::InstallSnapshot`]
    /// just stepped (its data arrived before the message was delivered), durably,
    /// before running any later action.
    InstallSnapshot {
        log: LogTerms,
    },
    /// Send `msg` to `to`. For an append, attach the payloads of its entries, read
    /// from the local log (it holds them: everything named was written by an earlier
    /// action).
    Send {
        to: NodeId,
        msg: Message,
    },
    /// Ship the local log's range `snapshot.log` (whole segments) to `to`, then
    /// deliver `Message::InstallSnapshot(snapshot)` there.
    SendSnapshot {
        to: NodeId,
        snapshot: InstallSnapshot,
    },
    /// The commit index (the high watermark) moved up: entries at or below it are
    /// durable on a quorum, so acks=all may answer for them. Readers see it only
    /// where [`Raft::serves_reads`]. Record it in the commit checkpoint when
    /// convenient (lazily): a restarted replica is built with that checkpoint.
    CommitAdvanced {
        commit_index: Index,
    },
    BecameLeader {
        term: Term,
    },
    /// This replica follows `leader` in `term` (`None`: no leader known yet).
    BecameFollower {
        term: Term,
        leader: Option<NodeId>,
    },
    /// This replica campaigns for `term`; `pre_vote` while it only asks.
    BecameCandidate {
        term: Term,
        pre_vote: bool,
    },
}

/// The role a replica plays now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Why a proposal was refused. Kafka answers all of them with
/// NOT_LEADER_OR_FOLLOWER (or a retriable error) and the producer retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("leadership is being transferred to {target}")]
    TransferInProgress { target: NodeId },
    #[error("{uncommitted} entries are not committed yet (limit {limit})")]
    Backlogged { uncommitted: u64, limit: u64 },
}

/// Why a leadership transfer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("not the leader (leader: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("replica {target} is not a voter of this group")]
    NotAVoter { target: NodeId },
    #[error("this replica is the leader already")]
    ToSelf,
}

/// Why [`Raft::log_start_moved`] was refused: the I/O layer may only drop committed
/// entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    #[error("log start {start_index} is past the commit index {commit_index} + 1")]
    BeyondCommit {
        start_index: Index,
        commit_index: Index,
    },
}

/// A leader's view of one follower (see [`Raft::followers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerStatus {
    pub node: NodeId,
    /// Durable on the follower and matching the leader's log through here.
    pub match_index: Index,
    /// Heard from in the current quorum-check period.
    pub recently_active: bool,
    /// When the leader last heard from it (its `now_ms`), if ever.
    pub heard_ms: Option<u64>,
}

/// Messages dropped, by reason. For metrics; a correct peer causes only `stale`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// From an older term, or overtaken by later messages.
    pub stale: u64,
    /// Malformed, from a non-member, or contradicting the protocol (two leaders in
    /// one term, a rewrite of committed entries).
    pub invalid: u64,
}

/// An append would cut entries that are committed or already matched this
/// leader: the sender is not following the protocol, and the append is dropped.
#[derive(Clone, Copy, Debug)]
struct RewritesAgreedEntries;

/// A small deterministic generator for the election jitter (SplitMix64); the seed
/// is the caller's, so a simulation replays exactly.
#[derive(Clone, Debug)]
struct Jitter(u64);

impl Jitter {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        if bound == 0 {
            0
        } else {
            z % bound
        }
    }
}

#[derive(Clone, Debug)]
enum Role {
    Follower { leader: Option<NodeId> },
    PreCandidate(Ballot),
    Candidate(Ballot),
    Leader(Leadership),
}

/// Votes received in one campaign (this replica's own included).
#[derive(Clone, Debug, Default)]
struct Ballot {
    granted: Vec<NodeId>,
    refused: Vec<NodeId>,
}

impl Ballot {
    fn count(&mut self, from: NodeId, granted: bool) {
        if self.granted.contains(&from) || self.refused.contains(&from) {
            return;
        }
        if granted {
            self.granted.push(from);
        } else {
            self.refused.push(from);
        }
    }
}

#[derive(Clone, Debug)]
struct Leadership {
    followers: Vec<Progress>,
    heartbeat_due_ms: u64,
    quorum_check_due_ms: u64,
    transfer: Option<Transfer>,
}

#[derive(Clone, Copy, Debug)]
struct Transfer {
    target: NodeId,
    deadline_ms: u64,
    timeout_now_sent: bool,
}

/// One replica of one replication group.
///
/// Lives on the shard that owns the partition (only that shard touches the log);
/// it is plain data, so it can be built, driven and inspected on any thread, which is
/// how the simulation in `node/tests/raft_sim.rs` runs a whole cluster on one.
#[derive(Clone, Debug)]
pub struct Raft {
    config: Config,
    /// The voters other than this replica.
    peers: Vec<NodeId>,
    quorum: usize,
    jitter: Jitter,
    hard_state: HardState,
    role: Role,
    log: LogTerms,
    /// The local log is durable through here (reported by the I/O layer).
    persisted_index: Index,
    /// The high watermark. Never above `persisted_index`: a replica publishes only
    /// what it holds durably itself, so the watermark is always readable locally and
    /// its checkpoint never points past the log a restart finds.
    commit_index: Index,
    /// The largest commit index a leader told this replica.
    leader_commit_index: Index,
    /// Our log matches the current term's leader's through here (reset to the
    /// commit index when the term changes: committed entries match every leader).
    matching_index: Index,
    /// The largest durable index acknowledged in this term.
    acked_durable_index: Index,
    election_deadline_ms: u64,
    /// When the leader of the current term was last heard from.
    leader_contact_ms: Option<u64>,
    counters: Counters,
}

impl Raft {
    /// Start a replica at `now_ms` from what its disk holds. `seed` drives the
    /// election jitter; give every replica a different one.
    pub fn new(
        config: Config,
        recovered: Recovered,
        seed: u64,
        now_ms: u64,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let Recovered {
            hard_state,
            commit_index,
            log,
        } = recovered;
        if hard_state.term > TERM_MAX {
            return Err(StartError::TermTooLarge {
                term: hard_state.term,
                term_max: TERM_MAX,
            });
        }
        if log.last().term > hard_state.term {
            return Err(StartError::LogPastTerm {
                log_term: log.last().term,
                term: hard_state.term,
            });
        }
        let peers: Vec<NodeId> = config
            .voters
            .iter()
            .copied()
            .filter(|&v| v != config.id)
            .collect();
        let quorum = config.voters.len() / 2 + 1;
        // A checkpoint is written only for durable entries, and committed entries
        // are never truncated: past the log, the disk lost what it had synced, and
        // starting would publish a high watermark the log cannot serve.
        if commit_index > log.last_index() {
            return Err(StartError::CheckpointPastLog {
                commit_index,
                last_index: log.last_index(),
            });
        }
        // Entries below the log start were committed (retention removes only those),
        // so a checkpoint older than the last retention moves up to it.
        let commit_index = commit_index.max(log.base().index);
        let mut raft = Raft {
            peers,
            quorum,
            jitter: Jitter(seed),
            hard_state,
            role: Role::Follower { leader: None },
            persisted_index: log.last_index(),
            commit_index,
            leader_commit_index: commit_index,
            matching_index: commit_index,
            acked_durable_index: 0,
            log,
            election_deadline_ms: 0,
            leader_contact_ms: None,
            counters: Counters::default(),
            config,
        };
        raft.reset_election_deadline(now_ms);
        raft.check_invariants();
        Ok(raft)
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn term(&self) -> Term {
        self.hard_state.term
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn role(&self) -> RoleKind {
        match self.role {
            Role::Follower { .. } => RoleKind::Follower,
            Role::PreCandidate(_) => RoleKind::PreCandidate,
            Role::Candidate(_) => RoleKind::Candidate,
            Role::Leader(_) => RoleKind::Leader,
        }
    }

    /// The leader of the current term, if known (this replica when it leads).
    pub fn leader(&self) -> Option<NodeId> {
        match self.role {
            Role::Follower { leader } => leader,
            Role::Leader(_) => Some(self.config.id),
            Role::PreCandidate(_) | Role::Candidate(_) => None,
        }
    }

    /// The high watermark: consumers never see past it.
    pub fn commit_index(&self) -> Index {
        self.commit_index
    }

    pub fn persisted_index(&self) -> Index {
        self.persisted_index
    }

    /// Whether this replica may show its commit index to readers: it leads, and its
    /// commit index covers an entry of its own term. By Leader Completeness its log
    /// then holds every entry any earlier leader committed, and its commit index is
    /// past them all; before that (a new leader, or one restarted from an older
    /// commit checkpoint) it may be behind what was already shown.
    pub fn serves_reads(&self) -> bool {
        matches!(self.role, Role::Leader(_))
            && self.log.term_at(self.commit_index) == Some(self.hard_state.term)
    }

    pub fn log(&self) -> &LogTerms {
        &self.log
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The leadership transfer in progress, if any.
    pub fn transfer_target(&self) -> Option<NodeId> {
        match &self.role {
            Role::Leader(lead) => lead.transfer.map(|t| t.target),
            _ => None,
        }
    }

    /// On a leader, where each follower stands; empty elsewhere. A partition is
    /// under-replicated when a follower's `match_index` is behind the leader's
    /// commit index or it was not heard from in the current quorum-check period.
    pub fn followers(&self) -> Vec<FollowerStatus> {
        match &self.role {
            Role::Leader(lead) => lead
                .followers
                .iter()
                .map(|p| FollowerStatus {
                    node: p.node,
                    match_index: p.match_index,
                    recently_active: p.recent_active,
                    heard_ms: p.heard_ms,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// When [`Raft::tick`] next has something to do. Calling it earlier or more
    /// often is harmless.
    pub fn next_deadline_ms(&self) -> u64 {
        match &self.role {
            Role::Leader(lead) => {
                let transfer = lead.transfer.map_or(u64::MAX, |t| t.deadline_ms);
                lead.heartbeat_due_ms
                    .min(lead.quorum_check_due_ms)
                    .min(transfer)
            }
            _ => self.election_deadline_ms,
        }
    }

    /// Time passed: campaign after an election timeout, send heartbeats, check the
    /// quorum, give up an overdue transfer.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        if matches!(self.role, Role::Leader(_)) {
            self.tick_leader(now_ms, out);
        } else if now_ms >= self.election_deadline_ms {
            self.campaign(now_ms, out);
        }
        self.check_invariants();
    }

    /// A message from `from` arrived.
    pub fn step(&mut self, now_ms: u64, from: NodeId, msg: Message, out: &mut Vec<Action>) {
        if !self.peers.contains(&from) || !msg.is_well_formed() {
            self.counters.invalid += 1;
            return;
        }
        if self.sync_term(now_ms, from, &msg, out) {
            self.dispatch(now_ms, from, msg, out);
        }
        self.check_invariants();
    }

    /// The local log is durable through `index`, whose entry has `term`. A report
    /// that no longer describes the log (the entry was truncated meanwhile) or
    /// that is not news is ignored.
    pub fn persisted(&mut self, index: Index, term: Term, out: &mut Vec<Action>) {
        if index <= self.persisted_index || !self.log.contains(EntryId { index, term }) {
            return;
        }
        self.persisted_index = index;
        match self.role {
            Role::Leader(_) => self.leader_commit(out),
            Role::Follower {
                leader: Some(leader),
            } => {
                self.ack_durable(leader, out);
                self.follower_commit(out);
            }
            Role::Follower { leader: None } | Role::PreCandidate(_) | Role::Candidate(_) => {}
        }
        self.check_invariants();
    }

    /// Append one entry as the leader. Returns its index; the I/O layer writes the
    /// payload there (the [`Action::Append`] pushed says so) and acknowledges the
    /// producer once [`Action::CommitAdvanced`] reaches it.
    pub fn propose(&mut self, now_ms: u64, out: &mut Vec<Action>) -> Result<Index, ProposeError> {
        let Role::Leader(lead) = &self.role else {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader(),
            });
        };
        if let Some(transfer) = lead.transfer {
            return Err(ProposeError::TransferInProgress {
                target: transfer.target,
            });
        }
        let uncommitted = self.log.last_index() - self.commit_index;
        if uncommitted >= self.config.uncommitted_entries_max {
            return Err(ProposeError::Backlogged {
                uncommitted,
                limit: self.config.uncommitted_entries_max,
            });
        }
        let entry = self.append_own(PayloadSource::Proposal, out);
        self.broadcast_append(now_ms, out);
        self.check_invariants();
        Ok(entry.index)
    }

    /// Hand leadership to `target` (rolling restarts): stop taking proposals, bring
    /// the target up to date, then tell it to campaign at once. Given up after an
    /// election timeout.
    pub fn transfer_leadership(
        &mut self,
        now_ms: u64,
        target: NodeId,
        out: &mut Vec<Action>,
    ) -> Result<(), TransferError> {
        if target == self.config.id {
            return Err(TransferError::ToSelf);
        }
        if !self.peers.contains(&target) {
            return Err(TransferError::NotAVoter { target });
        }
        let Role::Leader(lead) = &mut self.role else {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader(),
            });
        };
        lead.transfer = Some(Transfer {
            target,
            deadline_ms: now_ms.saturating_add(self.config.election_timeout_ms),
            timeout_now_sent: false,
        });
        self.send_to(now_ms, target, false, out);
        self.maybe_timeout_now(target, out);
        self.check_invariants();
        Ok(())
    }

    /// Retention removed the local entries before `start_index`. Only committed
    /// entries may go.
    pub fn log_start_moved(&mut self, start_index: Index) -> Result<(), RetentionError> {
        let new_base = start_index.saturating_sub(1);
        if new_base > self.commit_index {
            return Err(RetentionError::BeyondCommit {
                start_index,
                commit_index: self.commit_index,
            });
        }
        if new_base > self.log.base().index {
            self.log.remove_prefix(new_base);
        }
        self.check_invariants();
        Ok(())
    }

    // --- terms and roles ---

    /// Bring our term in line with the message's. Returns whether the message
    /// should be handled further.
    fn sync_term(
        &mut self,
        now_ms: u64,
        from: NodeId,
        msg: &Message,
        out: &mut Vec<Action>,
    ) -> bool {
        let term = msg.term();
        let ours = self.hard_state.term;
        if term > ours {
            match msg {
                // Pre-votes are hypothetical: nobody's term changes.
                Message::PreVote(_) => {}
                Message::PreVoteResponse(r) if r.granted => {}
                // Thesis §4.2.3: while a leader is heard from, a vote request does not
                // raise our term (a rejoining node must not depose a healthy
                // leader), unless the leader itself asked for the election.
                Message::Vote(req) if !req.transfer && self.in_lease(now_ms) => {
                    self.counters.stale += 1;
                    return false;
                }
                _ => {
                    let leader = msg.is_from_leader().then_some(from);
                    self.become_follower(now_ms, term, leader, out);
                }
            }
            return true;
        }
        if term < ours {
            self.counters.stale += 1;
            match msg {
                // A deposed leader: tell it our term so it steps down. Without this a
                // node that raised its term in a lost election would ignore the
                // leader forever while its pre-votes keep failing.
                Message::Append(_) | Message::Heartbeat(_) | Message::InstallSnapshot(_) => {
                    let msg = Message::HeartbeatResponse(HeartbeatResponse { term: ours });
                    out.push(Action::Send { to: from, msg });
                }
                Message::PreVote(_) => {
                    let msg = Message::PreVoteResponse(VoteResponse {
                        term: ours,
                        granted: false,
                    });
                    out.push(Action::Send { to: from, msg });
                }
                _ => {}
            }
            return false;
        }
        true
    }

    fn dispatch(&mut self, now_ms: u64, from: NodeId, msg: Message, out: &mut Vec<Action>) {
        match msg {
            Message::PreVote(req) => self.on_pre_vote(now_ms, from, req, out),
            Message::Vote(req) => self.on_vote(now_ms, from, req, out),
            Message::PreVoteResponse(r) => self.on_pre_vote_response(now_ms, from, r, out),
            Message::VoteResponse(r) => self.on_vote_response(now_ms, from, r, out),
            Message::Append(req) => {
                if self.follow(now_ms, from, out) {
                    self.on_append(from, req, out);
                }
            }
            Message::Heartbeat(hb) => {
                if self.follow(now_ms, from, out) {
                    self.on_heartbeat(from, hb, out);
                }
            }
            Message::InstallSnapshot(snapshot) => {
                if self.follow(now_ms, from, out) {
                    self.on_install_snapshot(from, snapshot, out);
                }
            }
            Message::TimeoutNow(_) => {
                if self.follow(now_ms, from, out) {
                    self.become_candidate(now_ms, true, out);
                }
            }
            Message::AppendResponse(r) => self.on_append_response(now_ms, from, r, out),
            Message::HeartbeatResponse(_) => self.on_heartbeat_response(now_ms, from, out),
        }
    }

    /// Whether a replica that heard from a live leader should protect it: the leader
    /// itself, or a follower that heard from it within the election timeout.
    fn in_lease(&self, now_ms: u64) -> bool {
        match self.role {
            Role::Leader(_) => true,
            Role::Follower { leader: Some(_) } => self
                .leader_contact_ms
                .is_some_and(|t| now_ms < t.saturating_add(self.config.election_timeout_ms)),
            _ => false,
        }
    }

    fn reset_election_deadline(&mut self, now_ms: u64) {
        let timeout = self.config.election_timeout_ms;
        let jitter = self.jitter.below(timeout);
        self.election_deadline_ms = now_ms.saturating_add(timeout).saturating_add(jitter);
    }

    fn set_hard_state(&mut self, hard_state: HardState, out: &mut Vec<Action>) {
        if hard_state.term != self.hard_state.term {
            // Nothing is known about the new term's leader yet; committed entries
            // match every leader.
            self.matching_index = self.commit_index;
            self.acked_durable_index = 0;
            self.leader_contact_ms = None;
        }
        self.hard_state = hard_state;
        out.push(Action::PersistHardState(hard_state));
    }

    fn become_follower(
        &mut self,
        now_ms: u64,
        term: Term,
        leader: Option<NodeId>,
        out: &mut Vec<Action>,
    ) {
        debug_assert!(term >= self.hard_state.term);
        let changed = term != self.hard_state.term
            || self.leader() != leader
            || !matches!(self.role, Role::Follower { .. });
        if term > self.hard_state.term {
            self.set_hard_state(
                HardState {
                    term,
                    voted_for: None,
                },
                out,
            );
        }
        self.role = Role::Follower { leader };
        if leader.is_some() {
            self.leader_contact_ms = Some(now_ms);
        }
        self.reset_election_deadline(now_ms);
        if changed {
            out.push(Action::BecameFollower { term, leader });
        }
    }

    /// The sender leads our term. Returns whether to handle its message.
    fn follow(&mut self, now_ms: u64, from: NodeId, out: &mut Vec<Action>) -> bool {
        match self.role {
            Role::Leader(_) => {
                self.counters.invalid += 1;
                return false;
            }
            Role::Follower {
                leader: Some(leader),
            } if leader != from => {
                self.counters.invalid += 1;
                return false;
            }
            Role::Follower { leader: Some(_) } => {
                self.leader_contact_ms = Some(now_ms);
                self.reset_election_deadline(now_ms);
            }
            Role::Follower { leader: None } | Role::PreCandidate(_) | Role::Candidate(_) => {
                self.become_follower(now_ms, self.hard_state.term, Some(from), out);
            }
        }
        true
    }

    /// The election timeout passed: ask for pre-votes (thesis §9.6), so that a
    /// replica that cannot win does not raise the term and disrupt the others.
    fn campaign(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        self.reset_election_deadline(now_ms);
        if self.hard_state.term >= TERM_MAX {
            return;
        }
        let term = self.hard_state.term + 1;
        self.role = Role::PreCandidate(Ballot {
            granted: vec![self.config.id],
            refused: Vec::new(),
        });
        out.push(Action::BecameCandidate {
            term,
            pre_vote: true,
        });
        if self.quorum == 1 {
            self.become_candidate(now_ms, false, out);
            return;
        }
        let req = VoteRequest {
            term,
            last: self.log.last(),
            transfer: false,
        };
        for &to in &self.peers {
            out.push(Action::Send {
                to,
                msg: Message::PreVote(req),
            });
        }
    }

    fn become_candidate(&mut self, now_ms: u64, transfer: bool, out: &mut Vec<Action>) {
        if self.hard_state.term >= TERM_MAX {
            return;
        }
        let term = self.hard_state.term + 1;
        self.set_hard_state(
            HardState {
                term,
                voted_for: Some(self.config.id),
            },
            out,
        );
        self.role = Role::Candidate(Ballot {
            granted: vec![self.config.id],
            refused: Vec::new(),
        });
        self.reset_election_deadline(now_ms);
        out.push(Action::BecameCandidate {
            term,
            pre_vote: false,
        });
        if self.quorum == 1 {
            self.become_leader(now_ms, out);
            return;
        }
        let req = VoteRequest {
            term,
            last: self.log.last(),
            transfer,
        };
        for &to in &self.peers {
            out.push(Action::Send {
                to,
                msg: Message::Vote(req),
            });
        }
    }

    fn become_leader(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        let voters = match &self.role {
            Role::Candidate(ballot) => ballot.granted.clone(),
            _ => Vec::new(),
        };
        let next_index = self.log.last_index() + 1;
        let followers = self
            .peers
            .iter()
            .map(|&p| Progress::new(p, next_index, voters.contains(&p)))
            .collect();
        self.role = Role::Leader(Leadership {
            followers,
            heartbeat_due_ms: now_ms.saturating_add(self.config.heartbeat_interval_ms),
            quorum_check_due_ms: now_ms.saturating_add(self.config.election_timeout_ms),
            transfer: None,
        });
        out.push(Action::BecameLeader {
            term: self.hard_state.term,
        });
        self.append_own(PayloadSource::LeaderChange, out);
        self.broadcast_append(now_ms, out);
    }

    fn tick_leader(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        let term = self.hard_state.term;
        let commit_index = self.commit_index;
        let Role::Leader(lead) = &mut self.role else {
            return;
        };
        if now_ms >= lead.heartbeat_due_ms {
            lead.heartbeat_due_ms = now_ms.saturating_add(self.config.heartbeat_interval_ms);
            let msg = Message::Heartbeat(Heartbeat { term, commit_index });
            for pr in &lead.followers {
                out.push(Action::Send {
                    to: pr.node,
                    msg: msg.clone(),
                });
            }
        }
        if lead.transfer.is_some_and(|t| now_ms >= t.deadline_ms) {
            lead.transfer = None;
        }
        if now_ms >= lead.quorum_check_due_ms {
            // CheckQuorum (thesis §6.2): a leader cut off from its quorum steps down,
            // so clients go looking for the new one instead of waiting on this one.
            let active = 1 + lead.followers.iter().filter(|p| p.recent_active).count();
            for pr in &mut lead.followers {
                pr.recent_active = false;
            }
            lead.quorum_check_due_ms = now_ms.saturating_add(self.config.election_timeout_ms);
            if active < self.quorum {
                self.become_follower(now_ms, term, None, out);
            }
        }
    }

    // --- votes ---

    fn log_is_current(&self, last: EntryId) -> bool {
        let ours = self.log.last();
        (last.term, last.index) >= (ours.term, ours.index)
    }

    fn on_pre_vote(&mut self, now_ms: u64, from: NodeId, req: VoteRequest, out: &mut Vec<Action>) {
        let term = self.hard_state.term;
        let could_vote = if req.term > term {
            true
        } else {
            self.can_vote_for(from)
        };
        let granted = !self.in_lease(now_ms) && could_vote && self.log_is_current(req.last);
        let msg = Message::PreVoteResponse(VoteResponse {
            term: if granted { req.term } else { term },
            granted,
        });
        out.push(Action::Send { to: from, msg });
    }

    /// Raft §5.2: one vote per term; a replica that knows this term's leader does
    /// not vote for another.
    fn can_vote_for(&self, candidate: NodeId) -> bool {
        match self.hard_state.voted_for {
            Some(voted) => voted == candidate,
            None => self.leader().is_none(),
        }
    }

    fn on_vote(&mut self, now_ms: u64, from: NodeId, req: VoteRequest, out: &mut Vec<Action>) {
        let term = self.hard_state.term;
        let granted = self.can_vote_for(from) && self.log_is_current(req.last);
        if granted {
            if self.hard_state.voted_for != Some(from) {
                let hard_state = HardState {
                    term,
                    voted_for: Some(from),
                };
                self.set_hard_state(hard_state, out);
            }
            self.reset_election_deadline(now_ms);
        }
        let msg = Message::VoteResponse(VoteResponse { term, granted });
        out.push(Action::Send { to: from, msg });
    }

    fn on_pre_vote_response(
        &mut self,
        now_ms: u64,
        from: NodeId,
        r: VoteResponse,
        out: &mut Vec<Action>,
    ) {
        let campaign_term = self.hard_state.term + 1;
        let Role::PreCandidate(ballot) = &mut self.role else {
            return;
        };
        if r.granted && r.term != campaign_term {
            self.counters.stale += 1;
            return;
        }
        ballot.count(from, r.granted);
        if ballot.granted.len() >= self.quorum {
            self.become_candidate(now_ms, false, out);
        } else if ballot.refused.len() >= self.quorum {
            self.become_follower(now_ms, self.hard_state.term, None, out);
        }
    }

    fn on_vote_response(
        &mut self,
        now_ms: u64,
        from: NodeId,
        r: VoteResponse,
        out: &mut Vec<Action>,
    ) {
        let Role::Candidate(ballot) = &mut self.role else {
            return;
        };
        ballot.count(from, r.granted);
        if ballot.granted.len() >= self.quorum {
            self.become_leader(now_ms, out);
        } else if ballot.refused.len() >= self.quorum {
            self.become_follower(now_ms, self.hard_state.term, None, out);
        }
    }

    // --- the follower side of replication ---

    fn on_append(&mut self, from: NodeId, req: AppendRequest, out: &mut Vec<Action>) {
        // Everything through our commit index matches every leader (Raft §5.4):
        // skip it, checking only that the leader agrees on our last committed entry.
        let skip = self.commit_index.saturating_sub(req.prev.index);
        let (prev, entries) = if skip == 0 {
            (req.prev, &req.entries[..])
        } else if skip as usize >= req.entries.len() {
            self.leader_commit_index = self.leader_commit_index.max(req.commit_index);
            self.reply_accepted(from, out);
            self.follower_commit(out);
            return;
        } else {
            let skip = skip as usize;
            let prev = req.entries[skip - 1];
            if !self.log.contains(prev) {
                // The leader disagrees with a committed entry.
                self.counters.invalid += 1;
                return;
            }
            (prev, &req.entries[skip..])
        };
        match self.log.term_at(prev.index) {
            None => {
                let hint = ConflictHint {
                    term: None,
                    index: self.log.last_index() + 1,
                };
                self.reply_rejected(from, req.prev.index, hint, out);
            }
            Some(term) if term != prev.term => {
                let run_start = self.log.run_start(prev.index);
                let hint = ConflictHint {
                    term: Some(term),
                    index: run_start.max(self.commit_index + 1),
                };
                self.reply_rejected(from, req.prev.index, hint, out);
            }
            Some(_) => {
                if self.append_from_leader(entries, out).is_err() {
                    self.counters.invalid += 1;
                    return;
                }
                let last_sent = entries.last().map_or(prev.index, |e| e.index);
                self.matching_index = self.matching_index.max(last_sent);
                self.leader_commit_index = self.leader_commit_index.max(req.commit_index);
                self.reply_accepted(from, out);
                self.follower_commit(out);
            }
        }
    }

    /// Write the entries we lack, after cutting a divergent tail (Raft §5.3: an
    /// entry that conflicts with the leader's goes, with all that follow it).
    /// Refuses, changing nothing, to cut committed or already matching entries: a
    /// leader asking for that is not following the protocol.
    fn append_from_leader(
        &mut self,
        entries: &[EntryId],
        out: &mut Vec<Action>,
    ) -> Result<(), RewritesAgreedEntries> {
        let mut first_new = entries.len();
        for (i, e) in entries.iter().enumerate() {
            match self.log.term_at(e.index) {
                Some(term) if term == e.term => continue,
                Some(_) => {
                    if e.index <= self.commit_index || e.index <= self.matching_index {
                        return Err(RewritesAgreedEntries);
                    }
                    out.push(Action::Truncate {
                        from_index: e.index,
                    });
                    self.log.truncate_from(e.index);
                    self.persisted_index = self.persisted_index.min(e.index - 1);
                    first_new = i;
                    break;
                }
                None => {
                    first_new = i;
                    break;
                }
            }
        }
        let new = &entries[first_new..];
        if new.is_empty() {
            return Ok(());
        }
        for &e in new {
            self.log.append(e);
        }
        out.push(Action::Append {
            entries: new.to_vec(),
            source: PayloadSource::Message,
        });
        Ok(())
    }

    fn on_heartbeat(&mut self, from: NodeId, hb: Heartbeat, out: &mut Vec<Action>) {
        self.leader_commit_index = self.leader_commit_index.max(hb.commit_index);
        self.follower_commit(out);
        let msg = Message::HeartbeatResponse(HeartbeatResponse {
            term: self.hard_state.term,
        });
        out.push(Action::Send { to: from, msg });
    }

    /// Raft §7, with the log as the state: keep our log if it already holds the
    /// snapshot's last entry (or the range is all committed here), else replace it.
    fn on_install_snapshot(
        &mut self,
        from: NodeId,
        snapshot: InstallSnapshot,
        out: &mut Vec<Action>,
    ) {
        let last = snapshot.log.last();
        self.leader_commit_index = self.leader_commit_index.max(snapshot.commit_index);
        if last.index <= self.commit_index || self.log.contains(last) {
            self.matching_index = self.matching_index.max(last.index);
            self.reply_accepted(from, out);
            self.follower_commit(out);
            return;
        }
        // Our log does not hold `last`, so nothing past it matches the leader: the
        // whole log goes. The installed range is durable before the next action.
        out.push(Action::InstallSnapshot {
            log: snapshot.log.clone(),
        });
        self.log = snapshot.log;
        self.persisted_index = last.index;
        self.matching_index = last.index;
        if self.log.base().index > self.commit_index {
            // Below the range's start is what the leader's retention removed: committed.
            self.advance_commit(self.log.base().index, out);
        }
        self.reply_accepted(from, out);
        self.follower_commit(out);
    }

    /// Tell the leader how far our log matches its own and how much of that is
    /// durable. Only the durable part counts toward its quorum.
    fn reply_accepted(&mut self, leader: NodeId, out: &mut Vec<Action>) {
        let durable_index = self.matching_index.min(self.persisted_index);
        self.acked_durable_index = self.acked_durable_index.max(durable_index);
        let msg = Message::AppendResponse(AppendResponse {
            term: self.hard_state.term,
            outcome: AppendOutcome::Accepted {
                matching_index: self.matching_index,
                durable_index,
            },
        });
        out.push(Action::Send { to: leader, msg });
    }

    fn reply_rejected(
        &mut self,
        leader: NodeId,
        prev_index: Index,
        hint: ConflictHint,
        out: &mut Vec<Action>,
    ) {
        let msg = Message::AppendResponse(AppendResponse {
            term: self.hard_state.term,
            outcome: AppendOutcome::Rejected { prev_index, hint },
        });
        out.push(Action::Send { to: leader, msg });
    }

    /// A sync completed: acknowledge what became durable and matches the leader.
    fn ack_durable(&mut self, leader: NodeId, out: &mut Vec<Action>) {
        if self.matching_index.min(self.persisted_index) > self.acked_durable_index {
            self.reply_accepted(leader, out);
        }
    }

    /// A follower's watermark: what the leader says is committed, as far as our
    /// log is known to match the leader's and is durable here.
    fn follower_commit(&mut self, out: &mut Vec<Action>) {
        let commit_index = self
            .leader_commit_index
            .min(self.matching_index)
            .min(self.persisted_index);
        self.advance_commit(commit_index, out);
    }

    fn advance_commit(&mut self, commit_index: Index, out: &mut Vec<Action>) {
        if commit_index <= self.commit_index {
            return;
        }
        debug_assert!(
            commit_index <= self.persisted_index,
            "commit past the durable log"
        );
        self.commit_index = commit_index;
        out.push(Action::CommitAdvanced { commit_index });
    }

    // --- the leader side of replication ---

    fn append_own(&mut self, source: PayloadSource, out: &mut Vec<Action>) -> EntryId {
        let entry = EntryId {
            index: self.log.last_index() + 1,
            term: self.hard_state.term,
        };
        self.log.append(entry);
        out.push(Action::Append {
            entries: vec![entry],
            source,
        });
        entry
    }

    fn broadcast_append(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        for i in 0..self.peers.len() {
            let node = self.peers[i];
            self.send_to(now_ms, node, false, out);
        }
    }

    fn send_to(&mut self, now_ms: u64, node: NodeId, allow_empty: bool, out: &mut Vec<Action>) {
        let sender = Sender {
            config: &self.config,
            log: &self.log,
            term: self.hard_state.term,
            commit_index: self.commit_index,
        };
        if let Role::Leader(lead) = &mut self.role {
            if let Some(pr) = lead.followers.iter_mut().find(|p| p.node == node) {
                pr.send(&sender, now_ms, allow_empty, out);
            }
        }
    }

    fn progress_mut(&mut self, node: NodeId) -> Option<&mut Progress> {
        match &mut self.role {
            Role::Leader(lead) => lead.followers.iter_mut().find(|p| p.node == node),
            _ => None,
        }
    }

    fn on_append_response(
        &mut self,
        now_ms: u64,
        from: NodeId,
        r: AppendResponse,
        out: &mut Vec<Action>,
    ) {
        let last_index = self.log.last_index();
        let log = &self.log;
        let Role::Leader(lead) = &mut self.role else {
            return;
        };
        let Some(pr) = lead.followers.iter_mut().find(|p| p.node == from) else {
            return;
        };
        pr.recent_active = true;
        pr.heard_ms = Some(now_ms);
        match r.outcome {
            AppendOutcome::Accepted {
                matching_index,
                durable_index,
            } => {
                if matching_index > last_index {
                    // We never sent that far.
                    self.counters.invalid += 1;
                    return;
                }
                pr.on_accepted(matching_index, durable_index);
            }
            AppendOutcome::Rejected { prev_index, hint } => {
                if pr.on_rejected(prev_index, hint, log) == Update::Stale {
                    self.counters.stale += 1;
                    return;
                }
            }
        }
        self.leader_commit(out);
        self.send_to(now_ms, from, false, out);
        self.maybe_timeout_now(from, out);
    }

    fn on_heartbeat_response(&mut self, now_ms: u64, from: NodeId, out: &mut Vec<Action>) {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress_mut(from) else {
            return;
        };
        pr.on_alive(now_ms);
        // A streaming follower short of our log may have lost an append: an empty
        // one finds out (it is rejected if entries are missing, and we probe).
        let behind = pr.match_index < last_index;
        if behind || matches!(pr.state, SendState::Probe { .. }) {
            self.send_to(now_ms, from, true, out);
        }
    }

    /// Raft §5.3/§5.4.2: commit the highest index durable on a quorum, counting
    /// ourselves only through our own durable index, and only if it is of our term
    /// (earlier terms' entries then commit with it).
    fn leader_commit(&mut self, out: &mut Vec<Action>) {
        let Role::Leader(lead) = &self.role else {
            return;
        };
        let mut durable: Vec<Index> = lead.followers.iter().map(|p| p.match_index).collect();
        durable.push(self.persisted_index);
        durable.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_index = durable[self.quorum - 1];
        // Publish only what we hold durably ourselves (see `commit_index`).
        let candidate = quorum_index.min(self.persisted_index);
        if self.log.term_at(candidate) == Some(self.hard_state.term) {
            self.advance_commit(candidate, out);
        }
    }

    fn maybe_timeout_now(&mut self, target: NodeId, out: &mut Vec<Action>) {
        let term = self.hard_state.term;
        let last_index = self.log.last_index();
        let Role::Leader(lead) = &mut self.role else {
            return;
        };
        let Some(transfer) = &mut lead.transfer else {
            return;
        };
        if transfer.target != target || transfer.timeout_now_sent {
            return;
        }
        let caught_up = lead
            .followers
            .iter()
            .any(|p| p.node == target && p.match_index == last_index);
        if caught_up {
            transfer.timeout_now_sent = true;
            let msg = Message::TimeoutNow(TimeoutNow { term });
            out.push(Action::Send { to: target, msg });
        }
    }

    /// The invariants every entry point keeps (debug builds; the simulation runs
    /// them after every call).
    fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let last = self.log.last_index();
        debug_assert!(self.commit_index <= self.persisted_index, "{self:?}");
        debug_assert!(self.persisted_index <= last, "{self:?}");
        debug_assert!(self.commit_index >= self.log.base().index, "{self:?}");
        debug_assert!(self.log.last().term <= self.hard_state.term, "{self:?}");
        debug_assert!(self.matching_index <= last, "{self:?}");
        debug_assert!(
            self.acked_durable_index <= self.matching_index.max(self.commit_index),
            "{self:?}"
        );
        match &self.role {
            Role::Leader(lead) => {
                debug_assert_eq!(self.hard_state.voted_for, Some(self.config.id));
                for pr in &lead.followers {
                    debug_assert!(pr.match_index < pr.next_index, "{pr:?}");
                    debug_assert!(pr.next_index <= last + 1, "{pr:?}");
                }
            }
            Role::Candidate(_) => {
                debug_assert_eq!(self.hard_state.voted_for, Some(self.config.id));
            }
            Role::Follower { .. } | Role::PreCandidate(_) => {}
        }
    }
}
