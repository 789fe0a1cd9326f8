//! Messages between shards over glommio's channel mesh. A call runs an [`Op`] on the
//! shard that owns what it touches and brings the result back; shard 0 broadcasts new
//! topic snapshots. No locks: only messages cross threads.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use glommio::channels::channel_mesh::{Receivers, Senders};

use crate::partition::{Fetched, Produced};
use crate::topics::{TopicConfig, TopicsView};

/// Work for another shard.
#[derive(Debug)]
pub enum Op {
    Produce {
        topic: String,
        partition: i32,
        records: Bytes,
        acks: i16,
        max_message_bytes: u32,
    },
    Fetch {
        topic: String,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    },
    WaitForData {
        topic: String,
        partition: i32,
        offset: u64,
        deadline: Instant,
    },
    ListOffset {
        topic: String,
        partition: i32,
        timestamp: i64,
    },
    Status {
        topic: String,
        partition: i32,
    },
    /// The status of several partitions of the receiving shard in one message
    /// (DescribeLogDirs asks each shard once, not once per partition).
    Statuses {
        partitions: Vec<(String, i32)>,
    },
    /// Topic metadata changes: run on shard 0 only.
    Admin(AdminOp),
    /// A group coordinator request for an offsets partition of the receiving shard.
    Group {
        partition: i32,
        call: crate::group::service::GroupCall,
    },
    /// The groups of every offsets partition the receiving shard coordinates.
    ListGroups,
    /// Leadership and connection counts of the receiving shard (for /metrics and
    /// liveness: answering proves the shard's executor runs).
    Stats,
    /// Move the receiving shard's leaderships away (admin drain), then its stats.
    DrainStep,
    /// Hand a partition's leadership to its preferred replica (answered with
    /// `OpResult::Admin`).
    ElectPreferred {
        topic: String,
        partition: i32,
        timeout_ms: u64,
    },
}

#[derive(Debug, Clone)]
pub enum AdminOp {
    CreateTopic {
        name: String,
        partitions: i32,
        config: TopicConfig,
        /// Replicas per partition (1 on a single node).
        replication_factor: u32,
        validate_only: bool,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        count: i32,
        validate_only: bool,
    },
    /// Apply `key=value` changes (None: back to the default) to a topic's config;
    /// `replace` starts from the defaults (AlterConfigs) instead of the current set.
    /// Merged on shard 0 under its admin lock, so concurrent changes are not lost.
    AlterConfig {
        name: String,
        changes: Vec<(String, Option<String>)>,
        replace: bool,
        validate_only: bool,
    },
}

/// One shard's counts for the admin endpoints.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardStats {
    /// Partitions led (the controller's group not counted).
    pub leaders: usize,
    pub under_replicated: usize,
    /// Leaderships that could move to another node (replicated groups led here,
    /// the controller's included): what a drain waits to reach zero.
    pub movable: usize,
    /// Replicas here that their leader does not count in sync (catching up).
    pub lagging: usize,
    pub connections: usize,
}

/// Partition sizes and offsets for status reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct PartitionStatus {
    pub error_code: i16,
    pub start_offset: i64,
    pub high_watermark: i64,
    pub end_offset: i64,
    pub size_bytes: u64,
}

#[derive(Debug)]
pub enum OpResult {
    Produced(Produced),
    Fetched(Fetched),
    Offset {
        error_code: i16,
        offset: i64,
        timestamp: i64,
    },
    Status(PartitionStatus),
    /// One per partition of `Op::Statuses`, in the same order.
    Statuses(Vec<PartitionStatus>),
    /// Kafka error code and message (0 and None on success).
    Admin(i16, Option<String>),
    Group(crate::group::service::GroupReply),
    Stats(ShardStats),
    Done,
}

#[derive(Debug)]
pub enum Envelope {
    Call {
        id: u64,
        from: usize,
        op: Op,
    },
    Reply {
        id: u64,
        result: OpResult,
    },
    Topics(TopicsView),
    /// Leaders of replication groups, as learned by the sending shard.
    Leaders(Vec<crate::cluster::LeaderUpdate>),
}

#[derive(Default)]
struct Slot {
    result: Option<OpResult>,
    waker: Option<Waker>,
}

/// This shard's end of the mesh.
pub struct Router {
    shard: usize,
    senders: Senders<Envelope>,
    pending: RefCell<HashMap<u64, Rc<RefCell<Slot>>>>,
    next_id: Cell<u64>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("shard", &self.shard)
            .finish()
    }
}

impl Router {
    pub fn new(shard: usize, senders: Senders<Envelope>) -> Self {
        Self {
            shard,
            senders,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
        }
    }

    /// Run `op` on shard `to` (never this shard) and wait for its result.
    pub async fn call(&self, to: usize, op: Op) -> Option<OpResult> {
        debug_assert_ne!(to, self.shard, "local work does not go through the mesh");
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let slot = Rc::new(RefCell::new(Slot::default()));
        self.pending.borrow_mut().insert(id, slot.clone());
        let sent = self
            .senders
            .send_to(
                to,
                Envelope::Call {
                    id,
                    from: self.shard,
                    op,
                },
            )
            .await;
        if sent.is_err() {
            self.pending.borrow_mut().remove(&id);
            return None;
        }
        poll_fn(|cx| {
            let mut s = slot.borrow_mut();
            match s.result.take() {
                Some(r) => Poll::Ready(Some(r)),
                None => {
                    s.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    pub async fn reply(&self, to: usize, id: u64, result: OpResult) {
        let _ = self
            .senders
            .send_to(to, Envelope::Reply { id, result })
            .await;
    }

    /// Hand a reply to the task waiting for it.
    pub fn deliver(&self, id: u64, result: OpResult) {
        if let Some(slot) = self.pending.borrow_mut().remove(&id) {
            let mut s = slot.borrow_mut();
            s.result = Some(result);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }

    /// Send a topic snapshot to every other shard.
    pub async fn broadcast_topics(&self, view: &TopicsView) {
        for peer in 0..self.senders.nr_consumers() {
            if peer != self.shard {
                let _ = self
                    .senders
                    .send_to(peer, Envelope::Topics(view.clone()))
                    .await;
            }
        }
    }
}

impl Router {
    /// Tell every other shard about leaders learned here.
    pub async fn broadcast_leaders(&self, updates: &[crate::cluster::LeaderUpdate]) {
        for peer in 0..self.senders.nr_consumers() {
            if peer != self.shard {
                let _ = self
                    .senders
                    .send_to(peer, Envelope::Leaders(updates.to_vec()))
                    .await;
            }
        }
    }
}

/// The receiving side, split per peer for the shard's receive loops.
pub fn streams(
    receivers: &mut Receivers<Envelope>,
) -> Vec<(
    usize,
    glommio::channels::shared_channel::ConnectedReceiver<Envelope>,
)> {
    receivers.streams()
}
