//! Partition replication: one Raft group per partition (issue 5).
//!
//! **Architecture invariant: the replication state machine performs no I/O, reads
//! no clock and draws no randomness of its own.** [`Raft`] is fed the time
//! (`now_ms`, milliseconds from any fixed origin), messages, "the log is durable up
//! to N" and proposals, and answers with [`Action`]s. The node drives it with the
//! engine (the log) and the transport (QUIC); the simulation in
//! `node/tests/raft_sim.rs` drives it with a fake disk and a fake network on one
//! thread, and replays any run from its seed.
//!
//! # The log
//! One entry is one Kafka RecordBatch; its term is the batch's `partitionLeaderEpoch`
//! (an `int32`, hence [`TERM_MAX`]). The state machine holds only `(index, term)` of
//! each entry, as the first entry of each term ([`LogTerms`], Kafka's leader-epoch
//! cache); the payloads stay in the engine and the I/O layer attaches them to the
//! appends it sends. Indexes are dense from 1: entry positions, not Kafka offsets
//! (a batch spans several offsets). The node maps one to the other.
//!
//! # Driving a replica: the ordering contract
//! Each call appends actions to `out`. Carry them out **in order**, with three
//! barriers:
//! 1. [`Action::PersistHardState`], [`Action::Truncate`] and
//!    [`Action::InstallSnapshot`] must be durable before any later action runs. They
//!    are rare (elections, divergent tails, far-behind followers), so waiting is
//!    cheap, and it is what makes a vote, a campaign and an acknowledgement survive a
//!    crash before anybody sees them.
//! 2. [`Action::Append`] is not a barrier. Write the entries, sync when convenient
//!    (group commit), and report with [`Raft::persisted`]`(index, term)` meaning
//!    "every entry through `index` in the log as it is now is durable". A sync
//!    started before a truncation may report only up to the truncation point; the
//!    state machine also ignores reports whose `(index, term)` it no longer holds.
//!    Sends that follow an append may leave before that sync: a leader streams
//!    entries while its own fsync runs.
//! 3. [`Action::CommitAdvanced`] may be published at once: what it covers is durable
//!    on a quorum, so acks=all is answered for it. Record it in a commit checkpoint
//!    when convenient (lazily; one write for all groups of a shard). A restarted
//!    replica is built ([`Raft::new`]) from that checkpoint, its hard state and its
//!    recovered log; the checkpoint may be older than what it published.
//!
//! **Reads only where [`Raft::serves_reads`].** Clients read (fetch, list offsets)
//! only from a leader whose commit index covers an entry of its own term. Every
//! committed entry of an earlier term is in its log below that entry (Leader
//! Completeness), so the high watermark readers see never goes back: not across a
//! failover (a new leader's commit index starts at whatever it heard as a follower)
//! and not across a restart from an older checkpoint. A new leader gets there with its
//! first committed entry, one replication round after the election. (A deposed leader
//! that has not heard of its successor keeps showing its own, older, watermark until
//! CheckQuorum steps it down, within an election timeout.)
//!
//! **No ack before durable.** A follower's [`AppendOutcome::Accepted`] counts toward
//! the quorum only through its `durable_index` (matching the leader *and* reported by
//! [`Raft::persisted`]); the leader counts itself only through its own durable index,
//! commits only entries of its term by counting (Raft §5.4.2), and never publishes a
//! commit index above what it holds durably itself.
//!
//! # Heartbeats
//! [`Message::Heartbeat`] carries only the term and the commit index, and
//! [`Message::HeartbeatResponse`] only the term, so the transport can coalesce the
//! heartbeats of every group between two nodes into one frame of `(group, term,
//! commit)` per tick, and the answers likewise. Tick all groups of a shard from the
//! same timer so their heartbeats come out together. Appends are never coalesced
//! with them: each group's appends go on their own stream, so one slow partition does
//! not hold up the others.
//!
//! # Catching up from segments
//! When a follower needs entries the leader's retention removed, the leader asks
//! ([`Action::SendSnapshot`]) to ship its log from its start through its commit
//! index, as whole segments, and then to deliver [`Message::InstallSnapshot`]. The
//! follower keeps its log if it already holds the range's last entry, else replaces
//! its log with the range ([`Action::InstallSnapshot`]). The I/O layer reports
//! retention with [`Raft::log_start_moved`]; only committed entries may go.
//!
//! # Membership
//! Static: the voter set is given at construction ([`Config::voters`]).

mod log_terms;
mod message;
mod progress;
mod raft;
pub mod wire;

pub use log_terms::{InvalidLogTerms, LogTerms};
pub use message::{
    AppendOutcome, AppendRequest, AppendResponse, ConflictHint, Heartbeat, HeartbeatResponse,
    InstallSnapshot, Message, TimeoutNow, VoteRequest, VoteResponse,
};
pub use raft::{
    Action, Config, Counters, FollowerStatus, HardState, PayloadSource, ProposeError, Raft,
    Recovered, RetentionError, RoleKind, StartError, TransferError,
};

/// A replica's id: the node id of the cluster configuration.
pub type NodeId = u32;

/// A Raft term; in the node, the Kafka leader epoch of the partition.
pub type Term = u64;

/// A position in the replicated log, from 1 (0 is the empty log's base).
pub type Index = u64;

/// The largest term: Kafka's `partitionLeaderEpoch` is an `int32`.
pub const TERM_MAX: Term = i32::MAX as Term;

/// The largest index: Kafka offsets are `int64`. Messages naming more are refused,
/// which also keeps index arithmetic far from overflow.
pub const INDEX_MAX: Index = i64::MAX as Index;

/// An entry by position and term. In a Raft log the pair names one entry: two logs
/// holding the same pair hold the same entry and the same entries before it (the
/// log-matching property, Raft §5.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    pub index: Index,
    pub term: Term,
}

impl EntryId {
    /// The base of a log that never held anything.
    pub const ZERO: EntryId = EntryId { index: 0, term: 0 };
}
