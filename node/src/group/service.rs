//! The I/O layer of the group coordinators on one shard: one [`Coordinator`] per
//! offsets partition this shard owns and this node leads.
//!
//! Loading: the first group request for a partition after this node became its
//! leader (or after a restart) writes a barrier record with acks=all; once it is
//! committed, every record acknowledged before is committed too, so replaying the
//! log up to the barrier rebuilds exactly what clients were told is stored. A new
//! leader term (or any failed write) drops the loaded state: waiting requests are
//! answered NOT_COORDINATOR, and the next request loads again.
//!
//! Writes go through the partition's normal produce path with acks=all, so in a
//! cluster they are replicated like any partition's, and an OffsetCommit is
//! answered only once its records are committed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::sync::Semaphore;
use strand_engine::batch;

use super::coordinator::{
    Action, Committed, Coordinator, GroupDescription, JoinRequest, JoinResponse, Reply, Settings,
    SyncRequest, SyncResponse, Token,
};
use super::store::{self, OffsetValue, Record, RecordKey};
use super::OFFSETS_TOPIC;
use crate::cluster::controller::group_id;
use crate::kafka::errors;
use crate::shard::Shard;

/// Not the coordinator (any more): the client looks it up again.
pub const NOT_COORDINATOR: i16 = 16;
/// Still replaying the partition: the client retries.
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;

/// Beyond a waiting request's own timeout, before it is given up on.
const WAIT_MARGIN: Duration = Duration::from_secs(30);
/// How often timers (sessions, rebalance deadlines) are checked.
const TICK: Duration = Duration::from_millis(100);
/// Largest group record or commit batch written.
const RECORD_BYTES_MAX: u32 = 64 << 20;
/// Bytes read per step while loading a partition.
const LOAD_READ_BYTES: usize = 1 << 20;

/// A group request, routed to the shard owning the group's offsets partition.
#[derive(Debug)]
pub enum GroupCall {
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat {
        group: String,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
    },
    Leave {
        group: String,
        members: Vec<(String, Option<String>)>,
    },
    Commit {
        group: String,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        /// (topic, partition, offset, leader epoch, metadata)
        offsets: Vec<(String, i32, i64, i32, Option<String>)>,
    },
    FetchOffsets {
        group: String,
        partitions: Option<Vec<(String, i32)>>,
    },
    Describe {
        group: String,
    },
    Delete {
        group: String,
    },
    DeleteOffsets {
        group: String,
        partitions: Vec<(String, i32)>,
    },
}

/// The answer to a [`GroupCall`] (or to a shard's ListGroups).
#[derive(Debug)]
pub enum GroupReply {
    /// The partition is not served here (NOT_COORDINATOR, loading, ...).
    Error(i16),
    Join(JoinResponse),
    Sync(SyncResponse),
    Heartbeat(i16),
    Leave(i16, Vec<i16>),
    /// Per partition codes, or one code for all.
    Commit(Result<Vec<i16>, i16>),
    Offsets(Vec<(String, i32, Option<Committed>)>),
    Describe(Option<GroupDescription>),
    /// (group, protocol type, state) of every group; errors of partitions that
    /// could not be listed.
    List(Vec<(String, String, &'static str)>, i16),
    Delete(i16),
    DeleteOffsets(Result<Vec<i16>, i16>),
}

struct Loaded {
    term: u64,
    coordinator: Coordinator,
    /// Requests waiting for a JoinGroup/SyncGroup answer; dropping a sender
    /// answers its request NOT_COORDINATOR.
    waiters: HashMap<Token, LocalSender<Reply>>,
}

/// One offsets partition on its owning shard.
struct Slot {
    partition: i32,
    loaded: RefCell<Option<Loaded>>,
    load_lock: Semaphore,
    /// Keeps this partition's writes in the order they were asked for.
    write_lock: Semaphore,
}

/// The coordinators of one shard.
pub struct Groups {
    slots: RefCell<HashMap<i32, Rc<Slot>>>,
    started: Instant,
    next_token: Cell<Token>,
    next_member: Cell<u64>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups")
            .field("partitions", &self.slots.borrow().len())
            .finish()
    }
}

impl Default for Groups {
    fn default() -> Self {
        Self::new()
    }
}

fn settings(shard: &Shard) -> Settings {
    let g = &shard.config().groups;
    Settings {
        initial_rebalance_delay_ms: g.initial_rebalance_delay_ms,
        min_session_timeout_ms: g.min_session_timeout_ms,
        max_session_timeout_ms: g.max_session_timeout_ms,
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Groups {
    pub fn new() -> Self {
        Groups {
            slots: RefCell::new(HashMap::new()),
            started: Instant::now(),
            next_token: Cell::new(1),
            next_member: Cell::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn slot(&self, partition: i32) -> Rc<Slot> {
        self.slots
            .borrow_mut()
            .entry(partition)
            .or_insert_with(|| {
                Rc::new(Slot {
                    partition,
                    loaded: RefCell::new(None),
                    load_lock: Semaphore::new(1),
                    write_lock: Semaphore::new(1),
                })
            })
            .clone()
    }

    /// A member id no other member of any group ever had: client id, node, this
    /// shard's start and a counter (Kafka uses client id + UUID).
    fn fresh_member_id(&self, shard: &Shard, client_id: &str) -> String {
        let n = self.next_member.get();
        self.next_member.set(n + 1);
        format!(
            "{}-{}-{}-{:x}-{n}",
            if client_id.is_empty() {
                "member"
            } else {
                client_id
            },
            shard.config().node_id,
            shard.id,
            boot_stamp()
        )
    }

    /// The leader term under which this node serves `partition`; Err if it does not.
    async fn serving_term(shard: &Rc<Shard>, partition: i32) -> Result<u64, i16> {
        if shard.topics().get(OFFSETS_TOPIC).is_none() {
            return Err(COORDINATOR_NOT_AVAILABLE);
        }
        if shard.cluster().is_none() {
            return Ok(0);
        }
        match shard.replica(OFFSETS_TOPIC, partition).await {
            Ok(r) if r.is_leader() => Ok(r.view().term),
            Ok(_) | Err(errors::NOT_LEADER_OR_FOLLOWER) => Err(NOT_COORDINATOR),
            Err(_) => Err(COORDINATOR_NOT_AVAILABLE),
        }
    }

    /// Still the leader in `term`? (No awaiting: for the timer.)
    fn still_serving(shard: &Shard, partition: i32, term: u64) -> bool {
        let Some(runtime) = shard.cluster() else {
            return shard.topics().get(OFFSETS_TOPIC).is_some();
        };
        let Some(meta) = shard.topics().get(OFFSETS_TOPIC).cloned() else {
            return false;
        };
        runtime
            .replica(group_id(meta.seq, partition))
            .is_some_and(|r| r.is_leader() && r.view().term == term)
    }

    /// Load the partition's groups if they are not loaded for the current term.
    async fn ensure_loaded(&self, shard: &Rc<Shard>, slot: &Rc<Slot>) -> Result<(), i16> {
        let term = Self::serving_term(shard, slot.partition).await?;
        if slot
            .loaded
            .borrow()
            .as_ref()
            .is_some_and(|l| l.term == term)
        {
            return Ok(());
        }
        let _permit = slot
            .load_lock
            .acquire_permit(1)
            .await
            .map_err(|_| COORDINATOR_NOT_AVAILABLE)?;
        if slot
            .loaded
            .borrow()
            .as_ref()
            .is_some_and(|l| l.term == term)
        {
            return Ok(());
        }
        // Whatever was loaded belongs to an earlier term: its waiters get
        // NOT_COORDINATOR (their senders drop) and must find the coordinator again.
        slot.loaded.borrow_mut().take();
        let started = Instant::now();
        let coordinator = self.load(shard, slot, term).await?;
        let groups = coordinator.list().len();
        tracing::info!(
            partition = slot.partition,
            term,
            groups,
            ms = started.elapsed().as_millis() as u64,
            "group coordinator loaded"
        );
        *slot.loaded.borrow_mut() = Some(Loaded {
            term,
            coordinator,
            waiters: HashMap::new(),
        });
        Ok(())
    }

    async fn load(&self, shard: &Rc<Shard>, slot: &Slot, term: u64) -> Result<Coordinator, i16> {
        let barrier = Record {
            key: RecordKey::Barrier {
                node: shard.config().node_id,
                term,
            },
            value: None,
        };
        let barrier_offset = Self::write(shard, slot, &[barrier]).await.map_err(|code| {
            tracing::info!(
                partition = slot.partition,
                code,
                "offsets barrier not stored"
            );
            if code == errors::NOT_LEADER_OR_FOLLOWER {
                NOT_COORDINATOR
            } else {
                COORDINATOR_LOAD_IN_PROGRESS
            }
        })?;
        let partition = if shard.cluster().is_some() {
            shard
                .replica(OFFSETS_TOPIC, slot.partition)
                .await?
                .partition
                .clone()
        } else {
            shard.partition(OFFSETS_TOPIC, slot.partition).await?
        };
        let mut c = Coordinator::new(settings(shard));
        let mut offset = partition.log.start_offset() as i64;
        let mut unreadable = 0;
        while offset < barrier_offset {
            let fetched = partition.fetch(offset, LOAD_READ_BYTES).await;
            if fetched.error_code != errors::NONE {
                tracing::error!(
                    partition = slot.partition,
                    offset,
                    code = fetched.error_code,
                    "cannot read the offsets partition"
                );
                return Err(COORDINATOR_LOAD_IN_PROGRESS);
            }
            let before = offset;
            for chunk in &fetched.batches {
                let mut at = 0;
                while at < chunk.len() {
                    let rest = &chunk[at..];
                    let (Ok(header), Ok(size)) =
                        (batch::parse_header(rest), batch::peek_size(rest))
                    else {
                        break;
                    };
                    let Some(bytes) = rest.get(..size) else {
                        break;
                    };
                    if header.last_offset() >= offset {
                        unreadable += store::replay(&mut c, bytes);
                    }
                    offset = offset.max(header.last_offset() + 1);
                    at += size;
                }
            }
            if offset == before {
                // Nothing readable below the high watermark yet (it trails the
                // barrier's acknowledgement only briefly): try again.
                glommio::timer::sleep(Duration::from_millis(10)).await;
                if !Self::still_serving(shard, slot.partition, term) {
                    return Err(NOT_COORDINATOR);
                }
            }
        }
        if unreadable > 0 {
            tracing::warn!(
                partition = slot.partition,
                unreadable,
                "unreadable group records skipped"
            );
        }
        c.loaded(self.now());
        Ok(c)
    }

    /// Append records with acks=all; Ok is the batch's base offset.
    async fn write(shard: &Rc<Shard>, slot: &Slot, records: &[Record]) -> Result<i64, i16> {
        let bytes = Bytes::from(store::batch(records, wall_ms()));
        let _order = slot
            .write_lock
            .acquire_permit(1)
            .await
            .map_err(|_| COORDINATOR_NOT_AVAILABLE)?;
        let produced = if shard.cluster().is_some() {
            let replica = shard.replica(OFFSETS_TOPIC, slot.partition).await?;
            replica.produce(bytes, -1, RECORD_BYTES_MAX).await
        } else {
            let partition = shard.partition(OFFSETS_TOPIC, slot.partition).await?;
            partition.produce(bytes, -1, RECORD_BYTES_MAX).await
        };
        if produced.error_code == errors::NONE {
            Ok(produced.base_offset)
        } else {
            Err(produced.error_code)
        }
    }

    /// A write failed: memory may now hold what the log does not; load again.
    fn invalidate(slot: &Slot, term: u64) {
        let mut loaded = slot.loaded.borrow_mut();
        if loaded.as_ref().is_some_and(|l| l.term == term) {
            tracing::info!(
                partition = slot.partition,
                term,
                "group state dropped after a failed write"
            );
            *loaded = None;
        }
    }

    /// Carry out a coordinator's actions.
    fn run_actions(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        slot: &Rc<Slot>,
        term: u64,
        actions: Vec<Action>,
    ) {
        for action in actions {
            match action {
                Action::Reply(token, reply) => {
                    let sender = slot
                        .loaded
                        .borrow_mut()
                        .as_mut()
                        .and_then(|l| l.waiters.remove(&token));
                    if let Some(s) = sender {
                        let _ = s.try_send(reply);
                    }
                }
                Action::StoreMember {
                    group,
                    token,
                    value,
                } => {
                    let record = Record::group(&group, Some(&value));
                    self.store(shard, slot, term, record, move |c, now| {
                        c.static_member_stored(now, &group, token, true)
                    });
                }
                Action::StoreGroup {
                    group,
                    generation,
                    value,
                } => {
                    let record = Record::group(&group, value.as_ref());
                    self.store(shard, slot, term, record, move |c, now| {
                        c.group_stored(now, &group, generation, true)
                    });
                }
            }
        }
    }

    /// Write a group record in the background; once stored, tell the coordinator
    /// (`stored`) and carry out what it answers. A failed write drops the loaded
    /// state (waiting requests get NOT_COORDINATOR).
    fn store(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        slot: &Rc<Slot>,
        term: u64,
        record: Record,
        stored: impl FnOnce(&mut Coordinator, u64) -> Vec<Action> + 'static,
    ) {
        let (this, shard, slot) = (self.clone(), shard.clone(), slot.clone());
        glommio::spawn_local(async move {
            if Self::write(&shard, &slot, &[record]).await.is_err() {
                Self::invalidate(&slot, term);
                return;
            }
            let now = this.now();
            let actions = match slot.loaded.borrow_mut().as_mut() {
                Some(l) if l.term == term => stored(&mut l.coordinator, now),
                _ => return,
            };
            this.run_actions(&shard, &slot, term, actions);
        })
        .detach();
    }

    /// Serve a group request for `partition` (owned by this shard).
    pub async fn call(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        partition: i32,
        call: GroupCall,
    ) -> GroupReply {
        if shard
            .shared
            .shutdown
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return GroupReply::Error(NOT_COORDINATOR);
        }
        let slot = self.slot(partition);
        if let Err(code) = self.ensure_loaded(shard, &slot).await {
            return GroupReply::Error(code);
        }
        let now = self.now();
        let Some(term) = slot.loaded.borrow().as_ref().map(|l| l.term) else {
            return GroupReply::Error(COORDINATOR_LOAD_IN_PROGRESS);
        };
        // Run `f` on the loaded coordinator (None: dropped meanwhile).
        let with = |f: &mut dyn FnMut(&mut Coordinator) -> GroupReply| -> GroupReply {
            match slot.loaded.borrow_mut().as_mut() {
                Some(l) => f(&mut l.coordinator),
                None => GroupReply::Error(NOT_COORDINATOR),
            }
        };
        match call {
            GroupCall::Join(mut r) => {
                r.fresh_member_id = self.fresh_member_id(shard, &r.client_id);
                let patience =
                    Duration::from_millis(r.rebalance_timeout_ms.max(r.session_timeout_ms));
                match self
                    .wait_for(shard, &slot, term, patience, |c, token| {
                        c.join(now, token, r)
                    })
                    .await
                {
                    Some(Reply::Join(j)) => GroupReply::Join(j),
                    _ => GroupReply::Error(NOT_COORDINATOR),
                }
            }
            GroupCall::Sync(r) => {
                // A sync waits for the leader's, which comes within the rebalance
                // timeout; Kafka's clients allow about as long.
                let patience = Duration::from_millis(shard.config().groups.max_session_timeout_ms);
                match self
                    .wait_for(shard, &slot, term, patience, |c, token| {
                        c.sync(now, token, r)
                    })
                    .await
                {
                    Some(Reply::Sync(s)) => GroupReply::Sync(s),
                    _ => GroupReply::Error(NOT_COORDINATOR),
                }
            }
            GroupCall::Heartbeat {
                group,
                generation,
                member_id,
                instance_id,
            } => with(&mut |c| {
                GroupReply::Heartbeat(c.heartbeat(
                    now,
                    &group,
                    generation,
                    &member_id,
                    instance_id.as_deref(),
                ))
            }),
            GroupCall::Leave { group, members } => {
                let mut actions = Vec::new();
                let reply = with(&mut |c| {
                    let (code, codes, a) = c.leave(now, &group, &members);
                    actions = a;
                    GroupReply::Leave(code, codes)
                });
                self.run_actions(shard, &slot, term, actions);
                reply
            }
            GroupCall::Commit {
                group,
                generation,
                member_id,
                instance_id,
                offsets,
            } => {
                let partitions: Vec<(String, i32)> =
                    offsets.iter().map(|(t, p, ..)| (t.clone(), *p)).collect();
                let checked = match with(&mut |c| {
                    GroupReply::Commit(c.check_commit(
                        now,
                        &group,
                        generation,
                        &member_id,
                        instance_id.as_deref(),
                        &partitions,
                    ))
                }) {
                    GroupReply::Commit(r) => r,
                    other => return other,
                };
                let Ok(codes) = checked else {
                    return GroupReply::Commit(checked);
                };
                let commit_ms = wall_ms();
                let accepted: Vec<(String, i32, Committed)> = offsets
                    .into_iter()
                    .zip(&codes)
                    .filter(|(_, code)| **code == errors::NONE)
                    .map(|((topic, partition, offset, leader_epoch, metadata), _)| {
                        (
                            topic,
                            partition,
                            Committed {
                                offset,
                                leader_epoch,
                                metadata,
                                commit_ms,
                            },
                        )
                    })
                    .collect();
                if accepted.is_empty() {
                    return GroupReply::Commit(Ok(codes));
                }
                let records: Vec<Record> = accepted
                    .iter()
                    .map(|(t, p, c)| {
                        Record::offset(
                            &group,
                            t,
                            *p,
                            Some(&OffsetValue {
                                offset: c.offset,
                                leader_epoch: c.leader_epoch,
                                metadata: c.metadata.clone(),
                                commit_ms: c.commit_ms,
                            }),
                        )
                    })
                    .collect();
                match Self::write(shard, &slot, &records).await {
                    Ok(_) => {
                        with(&mut |c| {
                            c.offsets_stored(&group, accepted.clone());
                            GroupReply::Delete(errors::NONE)
                        });
                        GroupReply::Commit(Ok(codes))
                    }
                    Err(code) => {
                        Self::invalidate(&slot, term);
                        tracing::info!(group, code, "offset commit not stored");
                        GroupReply::Commit(Err(NOT_COORDINATOR))
                    }
                }
            }
            GroupCall::FetchOffsets { group, partitions } => {
                with(&mut |c| GroupReply::Offsets(c.committed(&group, partitions.as_deref())))
            }
            GroupCall::Describe { group } => {
                with(&mut |c| GroupReply::Describe(c.describe(&group)))
            }
            GroupCall::Delete { group } => {
                let deleted = match with(&mut |c| match c.delete_group(&group) {
                    Ok(keys) => {
                        GroupReply::Offsets(keys.into_iter().map(|(t, p)| (t, p, None)).collect())
                    }
                    Err(code) => GroupReply::Delete(code),
                }) {
                    GroupReply::Offsets(keys) => keys,
                    other => return other,
                };
                let mut records = vec![Record::group(&group, None)];
                records.extend(
                    deleted
                        .iter()
                        .map(|(t, p, _)| Record::offset(&group, t, *p, None)),
                );
                match Self::write(shard, &slot, &records).await {
                    Ok(_) => GroupReply::Delete(errors::NONE),
                    Err(_) => {
                        Self::invalidate(&slot, term);
                        GroupReply::Delete(NOT_COORDINATOR)
                    }
                }
            }
            GroupCall::DeleteOffsets { group, partitions } => {
                let codes = match with(&mut |c| {
                    GroupReply::DeleteOffsets(c.check_offset_delete(&group, &partitions))
                }) {
                    GroupReply::DeleteOffsets(Ok(codes)) => codes,
                    other => return other,
                };
                let doomed: Vec<(String, i32)> = partitions
                    .into_iter()
                    .zip(&codes)
                    .filter(|(_, c)| **c == errors::NONE)
                    .map(|(p, _)| p)
                    .collect();
                if doomed.is_empty() {
                    return GroupReply::DeleteOffsets(Ok(codes));
                }
                with(&mut |c| {
                    c.delete_offsets(&group, &doomed);
                    GroupReply::Delete(errors::NONE)
                });
                let records: Vec<Record> = doomed
                    .iter()
                    .map(|(t, p)| Record::offset(&group, t, *p, None))
                    .collect();
                match Self::write(shard, &slot, &records).await {
                    Ok(_) => GroupReply::DeleteOffsets(Ok(codes)),
                    Err(_) => {
                        Self::invalidate(&slot, term);
                        GroupReply::DeleteOffsets(Err(NOT_COORDINATOR))
                    }
                }
            }
        }
    }

    /// Hand a request to the coordinator under a fresh token and wait for its
    /// answer. The coordinator answers every waiting request (its deadlines
    /// guarantee it); `patience` (plus a margin) only guards against a bug
    /// keeping a connection's responses stuck forever.
    async fn wait_for(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        slot: &Rc<Slot>,
        term: u64,
        patience: Duration,
        f: impl FnOnce(&mut Coordinator, Token) -> Vec<Action>,
    ) -> Option<Reply> {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        let actions = {
            let mut loaded = slot.loaded.borrow_mut();
            let l = loaded.as_mut()?;
            l.waiters.insert(token, tx);
            f(&mut l.coordinator, token)
        };
        self.run_actions(shard, slot, term, actions);
        let answer = futures_lite::future::or(rx.recv(), async {
            glommio::timer::sleep(patience + WAIT_MARGIN).await;
            None
        })
        .await;
        if answer.is_none() {
            if let Some(l) = slot.loaded.borrow_mut().as_mut() {
                if l.waiters.remove(&token).is_some() {
                    tracing::warn!(
                        partition = slot.partition,
                        token,
                        "a group request got no answer in time"
                    );
                }
            }
        }
        answer
    }

    /// ListGroups for the offsets partitions this shard owns and this node leads
    /// (loading them first: a group is listed even if no member came back yet).
    pub async fn list(self: &Rc<Self>, shard: &Rc<Shard>) -> GroupReply {
        let Some(meta) = shard.topics().get(OFFSETS_TOPIC).cloned() else {
            return GroupReply::List(Vec::new(), errors::NONE);
        };
        let mut out = Vec::new();
        let mut error = errors::NONE;
        for p in 0..meta.partitions {
            if shard.owner_of(OFFSETS_TOPIC, p) != shard.id {
                continue;
            }
            if shard.cluster().is_some() && Self::serving_term(shard, p).await.is_err() {
                continue;
            }
            let slot = self.slot(p);
            if let Err(code) = self.ensure_loaded(shard, &slot).await {
                if code != NOT_COORDINATOR {
                    error = code;
                }
                continue;
            }
            if let Some(l) = slot.loaded.borrow().as_ref() {
                out.extend(l.coordinator.list());
            };
        }
        GroupReply::List(out, error)
    }

    /// Timers of every loaded partition; drops partitions no longer led here.
    pub async fn tick_loop(self: Rc<Self>, shard: Rc<Shard>) {
        loop {
            glommio::timer::sleep(TICK).await;
            let slots: Vec<Rc<Slot>> = self.slots.borrow().values().cloned().collect();
            if shard
                .shared
                .shutdown
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                // Waiting JoinGroup/SyncGroup requests would hold their connections
                // (and the shutdown) open: they get NOT_COORDINATOR now.
                for slot in slots {
                    slot.loaded.borrow_mut().take();
                }
                continue;
            }
            for slot in slots {
                let Some(term) = slot.loaded.borrow().as_ref().map(|l| l.term) else {
                    continue;
                };
                if !Self::still_serving(&shard, slot.partition, term) {
                    tracing::info!(
                        partition = slot.partition,
                        term,
                        "no longer the group coordinator"
                    );
                    slot.loaded.borrow_mut().take();
                    continue;
                }
                let now = self.now();
                let actions = match slot.loaded.borrow_mut().as_mut() {
                    Some(l) if l.coordinator.next_deadline().is_some_and(|d| d <= now) => {
                        l.coordinator.tick(now)
                    }
                    _ => continue,
                };
                self.run_actions(&shard, &slot, term, actions);
            }
        }
    }
}

/// A stamp of this process's start, so member ids differ across restarts.
fn boot_stamp() -> u64 {
    use std::sync::OnceLock;
    static STAMP: OnceLock<u64> = OnceLock::new();
    *STAMP.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    })
}
