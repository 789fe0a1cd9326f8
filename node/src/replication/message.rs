//! What replicas of one group say to each other.
//!
//! These are the state machine's messages, not frames: the transport (issue 5: rkyv
//! frames over QUIC) adds the group id, and attaches the payloads of the entries an
//! [`AppendRequest`] or an [`InstallSnapshot`] names (the state machine holds only
//! index and term; the payloads are record batches the engine keeps).
//!
//! Everything here arrives from the network, so the state machine treats it as
//! input: [`Message::is_well_formed`] is checked first, and a message that is stale
//! or contradicts what the sender said before is dropped or answered, never trusted.

use super::{EntryId, Index, LogTerms, Term, INDEX_MAX, TERM_MAX};

/// One message of the replication protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// "Would you vote for me at `term`?" (Raft thesis §9.6). The sender has not
    /// changed its term, so a node cut off from the cluster can ask forever without
    /// raising anybody's term; it becomes a candidate only when a quorum says yes.
    PreVote(VoteRequest),
    PreVoteResponse(VoteResponse),
    /// A real vote request (Raft §5.2).
    Vote(VoteRequest),
    VoteResponse(VoteResponse),
    /// Entries after `prev` and the leader's commit index (Raft §5.3).
    Append(AppendRequest),
    /// Sent for every append, and again whenever the follower's durable index
    /// grows, so the leader learns what it may count (no ack before durable).
    AppendResponse(AppendResponse),
    /// Term and commit index only, so the transport can coalesce the heartbeats of
    /// every group between a pair of nodes into one frame.
    Heartbeat(Heartbeat),
    HeartbeatResponse(HeartbeatResponse),
    /// The follower needs entries the leader no longer has: here is the leader's
    /// log from its start up to its commit index (shipped as segments); replace
    /// yours with it. Answered with an [`AppendResponse`].
    InstallSnapshot(InstallSnapshot),
    /// "Start an election now, without a pre-vote" (leadership transfer, thesis
    /// §3.10).
    TimeoutNow(TimeoutNow),
}

/// A (pre-)vote request; `last` is the candidate's last entry, for the election
/// restriction (Raft §5.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteRequest {
    /// The term the candidate campaigns in (for a pre-vote: its current term + 1).
    pub term: Term,
    pub last: EntryId,
    /// Set when the election follows a [`TimeoutNow`]: voters then grant even while
    /// they still hear from the current leader (which asked for it).
    pub transfer: bool,
}

/// The answer to a (pre-)vote request. A granted pre-vote carries the term asked
/// for; a refusal carries the voter's own term, so a candidate that fell behind
/// catches up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteResponse {
    pub term: Term,
    pub granted: bool,
}

/// Entries to append after `prev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendRequest {
    pub term: Term,
    /// The entry just before `entries`: the follower accepts only if it holds it.
    pub prev: EntryId,
    /// Contiguous from `prev.index + 1`, terms never decreasing. The transport
    /// attaches a payload to each.
    pub entries: Vec<EntryId>,
    /// The leader's commit index (the high watermark).
    pub commit_index: Index,
}

/// A follower's answer to an append or a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendResponse {
    pub term: Term,
    pub outcome: AppendOutcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The follower's log matches the leader's through `matching_index`; of that,
    /// everything through `durable_index` is synced. Only `durable_index` counts
    /// toward the commit quorum; `matching_index` only moves the leader's next send.
    Accepted {
        matching_index: Index,
        durable_index: Index,
    },
    /// The follower does not hold `prev` of the append whose `prev.index` was
    /// `prev_index`.
    Rejected {
        prev_index: Index,
        hint: ConflictHint,
    },
}

/// Where the leader should try next after a rejection, so it backs up a whole term
/// per round trip instead of one entry (Raft §5.3, the optimisation at its end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConflictHint {
    /// The term the follower holds at the rejected index, or `None` when its log
    /// is shorter.
    pub term: Option<Term>,
    /// The first index the follower holds of that term, or its last index + 1.
    pub index: Index,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub term: Term,
    pub commit_index: Index,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub term: Term,
}

/// The leader's log `log.base().index + 1 ..= log.last_index()`, which ends at the
/// leader's commit index, so what is installed never has to be taken back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallSnapshot {
    pub term: Term,
    pub commit_index: Index,
    /// Terms of the shipped range; built through [`LogTerms::new`], so a malformed
    /// one cannot be decoded.
    pub log: LogTerms,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutNow {
    pub term: Term,
}

impl Message {
    /// The sender's term (for a pre-vote: the term it would campaign in).
    pub fn term(&self) -> Term {
        match self {
            Message::PreVote(m) | Message::Vote(m) => m.term,
            Message::PreVoteResponse(m) | Message::VoteResponse(m) => m.term,
            Message::Append(m) => m.term,
            Message::AppendResponse(m) => m.term,
            Message::Heartbeat(m) => m.term,
            Message::HeartbeatResponse(m) => m.term,
            Message::InstallSnapshot(m) => m.term,
            Message::TimeoutNow(m) => m.term,
        }
    }

    /// Whether only the leader of `term()` sends this kind of message.
    pub fn is_from_leader(&self) -> bool {
        matches!(
            self,
            Message::Append(_)
                | Message::Heartbeat(_)
                | Message::InstallSnapshot(_)
                | Message::TimeoutNow(_)
        )
    }

    /// Whether the fields are in range and consistent with each other. Says nothing
    /// about whether the message is stale.
    pub fn is_well_formed(&self) -> bool {
        let term = self.term();
        if term == 0 || term > TERM_MAX {
            return false;
        }
        let entry_ok = |e: &EntryId| e.index <= INDEX_MAX && e.term <= term;
        match self {
            Message::PreVote(m) | Message::Vote(m) => entry_ok(&m.last),
            Message::Append(m) => {
                if !entry_ok(&m.prev) || m.commit_index > INDEX_MAX {
                    return false;
                }
                // `previous.index <= INDEX_MAX` at every step, so `+ 1` cannot wrap.
                let mut previous = m.prev;
                m.entries.iter().all(|e| {
                    let follows = e.index == previous.index + 1 && e.term >= previous.term;
                    previous = *e;
                    follows && e.term > 0 && entry_ok(e)
                })
            }
            Message::AppendResponse(m) => match m.outcome {
                AppendOutcome::Accepted {
                    matching_index,
                    durable_index,
                } => matching_index <= INDEX_MAX && durable_index <= matching_index,
                AppendOutcome::Rejected { prev_index, hint } => {
                    prev_index <= INDEX_MAX && hint.index <= INDEX_MAX
                }
            },
            Message::Heartbeat(m) => m.commit_index <= INDEX_MAX,
            Message::InstallSnapshot(m) => {
                // The range is committed: it ends at or below the commit index.
                let last = m.log.last();
                last.term <= term && last.index <= m.commit_index && m.commit_index <= INDEX_MAX
            }
            Message::PreVoteResponse(_)
            | Message::VoteResponse(_)
            | Message::HeartbeatResponse(_)
            | Message::TimeoutNow(_) => true,
        }
    }
}
