//! The wire types of replication: what goes into a frame's archive.
//!
//! They mirror `strand_node::replication::Message` field for field (`net` cannot
//! depend on `node`, which depends on `net`), plus what the transport adds: the
//! group id, the sender and receiver, and the record batches of an append. The node
//! converts both ways; everything decoded from here is input and is checked again by
//! `Message::is_well_formed` before the state machine sees it.
//!
//! Every type derives rkyv's `Archive` with `bytecheck`, so an archive is validated
//! before any field is read; the archived forms (`ArchivedReplicationFrame`, ...)
//! are what [`super::decode`] hands out, zero-copy.

use bytes::Bytes;
use rkyv::{Archive, Deserialize, Serialize};

/// A partition group's id (the node maps it to a topic partition).
pub type GroupId = u64;
/// A node's id, as in the cluster configuration.
pub type NodeId = u32;

/// One replication message of one group, between two nodes.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReplicationFrame {
    pub group: GroupId,
    pub from: NodeId,
    pub to: NodeId,
    pub message: Message,
}

/// Many groups' heartbeats (and answers to them) between one pair of nodes, in one
/// frame: a node leading thousands of partitions sends one of these per peer per
/// heartbeat interval instead of thousands of frames.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HeartbeatBatch {
    pub from: NodeId,
    pub to: NodeId,
    pub heartbeats: Vec<GroupHeartbeat>,
    pub responses: Vec<GroupHeartbeatResponse>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GroupHeartbeat {
    pub group: GroupId,
    pub heartbeat: Heartbeat,
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GroupHeartbeatResponse {
    pub group: GroupId,
    pub response: HeartbeatResponse,
}

/// Node-level traffic that belongs to no single group's Raft exchange.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ClusterFrame {
    pub from: NodeId,
    pub message: ClusterMessage,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ClusterMessage {
    /// A metadata command for the controller group's leader to propose (sent by a
    /// node that is not the leader; opaque bytes to the transport).
    Forward { command: Vec<u8> },
    /// The groups the sender leads now, with their terms and in-sync replicas, so
    /// nodes that host no replica of a partition can still name its leader.
    Leaders { leaders: Vec<GroupLeader> },
    /// "Hand leadership of `group` to `target`": a preferred-leader election asked of a
    /// node that does not lead the partition, passed to the node that does.
    TransferLeader { group: GroupId, target: NodeId },
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GroupLeader {
    pub group: GroupId,
    pub term: u64,
    /// In-sync replicas, the leader included.
    pub isr: Vec<NodeId>,
}

/// `node::replication::EntryId`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct EntryId {
    pub index: u64,
    pub term: u64,
}

/// `node::replication::Message`, one variant each.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Message {
    PreVote(VoteRequest),
    PreVoteResponse(VoteResponse),
    Vote(VoteRequest),
    VoteResponse(VoteResponse),
    Append(AppendRequest),
    AppendResponse(AppendResponse),
    Heartbeat(Heartbeat),
    HeartbeatResponse(HeartbeatResponse),
    InstallSnapshot(InstallSnapshot),
    TimeoutNow(TimeoutNow),
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct VoteRequest {
    pub term: u64,
    pub last: EntryId,
    pub transfer: bool,
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct VoteResponse {
    pub term: u64,
    pub granted: bool,
}

/// Entries after `prev`, with their record batches.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AppendRequest {
    pub term: u64,
    pub prev: EntryId,
    pub entries: Vec<EntryId>,
    pub commit_index: u64,
    /// The payload region: either empty (ids only) or exactly one opaque record
    /// batch per entry, in order, each carrying its length. [`super::decode`]
    /// refuses any other count. Archived as byte slices the reader borrows.
    pub payloads: Vec<Bytes>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AppendResponse {
    pub term: u64,
    pub outcome: AppendOutcome,
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum AppendOutcome {
    Accepted {
        matching_index: u64,
        durable_index: u64,
    },
    Rejected {
        prev_index: u64,
        hint: ConflictHint,
    },
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConflictHint {
    /// `None` when the follower's log is shorter than the rejected index.
    pub term: Option<u64>,
    pub index: u64,
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Heartbeat {
    pub term: u64,
    pub commit_index: u64,
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HeartbeatResponse {
    pub term: u64,
}

/// `node::replication::InstallSnapshot`: the log `base.index + 1 ..= last_index`
/// as its term runs (`LogTerms`' parts; the node rebuilds them through
/// `LogTerms::new`, which refuses a malformed description).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct InstallSnapshot {
    pub term: u64,
    pub commit_index: u64,
    pub base: EntryId,
    /// The first entry of every term in the range, increasing.
    pub term_starts: Vec<EntryId>,
    pub last_index: u64,
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TimeoutNow {
    pub term: u64,
}
