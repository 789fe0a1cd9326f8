//! A shard: one glommio executor pinned to one core (or unpinned in tests). It owns
//! the partitions that hash to it, serves the connections the kernel hands it
//! (SO_REUSEPORT spreads them), and forwards work on other shards' partitions
//! through the mesh. Shard 0 also owns the topic metadata.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::sync::Semaphore;
use strand_engine::{DmaStorage, Log, LogConfig};

use crate::cluster::controller::{self, Command, CONTROLLER_GROUP};
use crate::cluster::replica::Replica;
use crate::cluster::runtime::Runtime;
use crate::config::NodeConfig;
use crate::kafka::{errors, list_offsets};
use crate::partition::Partition;
use crate::router::{AdminOp, Envelope, Op, OpResult, PartitionStatus, Router};
use crate::topics::{self, partition_dir, TopicConfig, Topics, TopicsView};

/// How long a client read waits for a new leader to serve reads before it is told
/// NOT_LEADER_OR_FOLLOWER (normally one replication round after the election; a
/// leader that cannot reach a quorum never does).
const NEW_LEADER_READ_WAIT: Duration = Duration::from_millis(500);

/// Things every shard shares (read-only or atomic).
#[derive(Debug)]
pub struct NodeShared {
    pub config: NodeConfig,
    pub shutdown: AtomicBool,
    /// Next producer id for InitProducerId; seeded from the start time so ids do not
    /// repeat across restarts.
    pub next_producer_id: AtomicI64,
    /// Shards whose connections have drained at shutdown. A shard keeps serving
    /// calls from the others until every shard has drained, so no request waits
    /// on a shard that is gone.
    pub drained: std::sync::atomic::AtomicUsize,
    pub metrics: crate::metrics::Metrics,
    /// Drained for maintenance (admin `POST /drain`): leaderships are moved away.
    pub draining: AtomicBool,
}

impl NodeShared {
    /// Ask every shard to shut down.
    pub fn stop(&self) {
        self.shutdown
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Count this shard as drained; returns how many are.
    fn mark_drained(&self) -> usize {
        self.drained
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    fn all_drained(&self, count: usize) -> bool {
        self.drained.load(std::sync::atomic::Ordering::SeqCst) >= count
    }
}

/// The shard that owns a partition.
pub fn owner_of(topic: &str, partition: i32, shards: usize) -> usize {
    (crc32c::crc32c(topic.as_bytes()) as usize).wrapping_add(partition.max(0) as usize) % shards
}

/// Per-shard state. Lives on one executor thread; `!Send`.
pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub shared: Arc<NodeShared>,
    storage: Rc<DmaStorage>,
    partitions: RefCell<HashMap<(String, i32), Rc<Partition>>>,
    open_lock: Semaphore,
    topics: RefCell<TopicsView>,
    pub router: Router,
    pub connections: Cell<usize>,
    /// Shard 0 only: serializes metadata changes.
    admin_lock: Semaphore,
    /// Closed at shutdown; waiting on it costs nothing and unlinks on drop.
    stop_gate: Rc<Semaphore>,
    /// Bytes of requests being read or handled on this shard.
    pub request_memory: Rc<Semaphore>,
    /// In a cluster: this shard's replication runtime.
    cluster: RefCell<Option<Rc<Runtime>>>,
    /// The group coordinators of the offsets partitions this shard owns.
    pub groups: Rc<crate::group::service::Groups>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("id", &self.id).finish()
    }
}

impl Shard {
    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// Resolves once the node is shutting down (one watcher per shard polls the
    /// process-wide flag, so idle connections cost no timers).
    pub async fn stopping(&self) {
        // No permit is ever given: this returns (with an error) once the gate closes.
        let _ = self.stop_gate.acquire(1).await;
    }

    async fn watch_shutdown(self: Rc<Self>) {
        while !self
            .shared
            .shutdown
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
        self.stop_gate.close();
    }

    pub fn topics(&self) -> TopicsView {
        self.topics.borrow().clone()
    }

    pub fn owner_of(&self, topic: &str, partition: i32) -> usize {
        owner_of(topic, partition, self.count)
    }

    /// The metadata of `topic` if it has `partition`, else UNKNOWN_TOPIC_OR_PARTITION.
    fn topic_of(&self, topic: &str, partition: i32) -> Result<topics::TopicMeta, i16> {
        self.topics()
            .get(topic)
            .cloned()
            .filter(|m| partition >= 0 && partition < m.partitions)
            .ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION)
    }

    /// In a cluster: this shard's replication runtime.
    pub fn cluster(&self) -> Option<Rc<Runtime>> {
        self.cluster.borrow().clone()
    }

    /// In a cluster: the replica of a partition this shard owns, if this node hosts
    /// one. `Err` is the Kafka error for the partition.
    pub async fn replica(&self, topic: &str, partition: i32) -> Result<Rc<Replica>, i16> {
        let runtime = self.cluster().ok_or(errors::UNKNOWN_SERVER_ERROR)?;
        let meta = self.topic_of(topic, partition)?;
        let group = controller::group_id(meta.seq, partition);
        if let Some(r) = runtime.replica(group) {
            return Ok(r);
        }
        let hosted = meta
            .replicas
            .get(partition as usize)
            .is_some_and(|r| r.contains(&self.config().node_id));
        if !hosted {
            return Err(errors::NOT_LEADER_OR_FOLLOWER);
        }
        // Opening (scan and recovery) is under way, or failed.
        let p = self.partition(topic, partition).await?;
        let _permit = self
            .open_lock
            .acquire_permit(1)
            .await
            .map_err(|_| errors::KAFKA_STORAGE_ERROR)?;
        if let Some(r) = runtime.replica(group) {
            return Ok(r);
        }
        let voters = meta.replicas[partition as usize].clone();
        let r = Replica::open(
            &runtime,
            group,
            topic,
            partition,
            p,
            voters,
            runtime.recovered_commit(group),
        )
        .await
        .map_err(|e| {
            tracing::error!(topic, partition, error = %e, "cannot open the replica");
            errors::KAFKA_STORAGE_ERROR
        })?;
        runtime.add_replica(r.clone());
        Ok(r)
    }

    /// The replica if this node leads the partition; else the Kafka error.
    async fn leader_replica(&self, topic: &str, partition: i32) -> Result<Rc<Replica>, i16> {
        let r = self.replica(topic, partition).await?;
        if r.is_leader() {
            Ok(r)
        } else {
            Err(errors::NOT_LEADER_OR_FOLLOWER)
        }
    }

    /// The partition to serve a client read from: on a single node any partition;
    /// in a cluster only one this node leads, once it serves reads (a new leader's
    /// high watermark could be behind the one clients saw from the last leader; it
    /// catches up within a replication round, which is waited for here).
    async fn served_partition(&self, topic: &str, partition: i32) -> Result<Rc<Partition>, i16> {
        if self.cluster().is_some() {
            let replica = self.leader_replica(topic, partition).await?;
            if !replica.serves_reads()
                && !replica
                    .wait_serves_reads(Instant::now() + NEW_LEADER_READ_WAIT)
                    .await
            {
                return Err(errors::NOT_LEADER_OR_FOLLOWER);
            }
            Ok(replica.partition.clone())
        } else {
            self.partition(topic, partition).await
        }
    }

    /// Run an op here or on its owner.
    pub async fn run_op(self: &Rc<Self>, owner: usize, op: Op) -> Option<OpResult> {
        if owner == self.id {
            Some(self.execute(op).await)
        } else {
            self.router.call(owner, op).await
        }
    }

    fn log_config(&self, topic: &TopicConfig) -> LogConfig {
        LogConfig {
            retention_bytes: topic.retention_bytes,
            retention_ms: topic.retention_ms,
            segment_bytes_max: topic.segment_bytes,
            ..self.config().log.clone()
        }
    }

    /// The partition if this shard owns it and the topic has it, opening it on first use.
    pub async fn partition(&self, topic: &str, partition: i32) -> Result<Rc<Partition>, i16> {
        let key = (topic.to_string(), partition);
        if let Some(p) = self.partitions.borrow().get(&key) {
            return Ok(p.clone());
        }
        let meta = self.topic_of(topic, partition)?;
        if self.config().is_cluster()
            && !meta
                .replicas
                .get(partition as usize)
                .is_some_and(|r| r.contains(&self.config().node_id))
        {
            return Err(errors::NOT_LEADER_OR_FOLLOWER);
        }
        debug_assert_eq!(self.owner_of(topic, partition), self.id);
        let _permit = self
            .open_lock
            .acquire_permit(1)
            .await
            .map_err(|_| errors::KAFKA_STORAGE_ERROR)?;
        if let Some(p) = self.partitions.borrow().get(&key) {
            return Ok(p.clone());
        }
        let dir = partition_dir(&self.config().data_dir, topic, partition);
        let log = Log::open(self.storage.clone(), &dir, self.log_config(&meta.config))
            .await
            .map_err(|e| {
                tracing::error!(topic, partition, error = %e, "cannot open partition log");
                errors::KAFKA_STORAGE_ERROR
            })?;
        let p = Partition::open(log).await;
        self.partitions.borrow_mut().insert(key, p.clone());
        Ok(p)
    }

    /// Execute an op on this shard (the owner).
    pub async fn execute(self: &Rc<Self>, op: Op) -> OpResult {
        match op {
            Op::Produce {
                topic,
                partition,
                records,
                acks,
                max_message_bytes,
            } if self.cluster().is_some() => match self.replica(&topic, partition).await {
                Ok(r) => {
                    let counts = crate::metrics::batch_counts(std::slice::from_ref(&records));
                    let produced = r.produce(records, acks, max_message_bytes).await;
                    if produced.error_code == errors::NONE {
                        self.shared
                            .metrics
                            .count(false, self.id, &topic, partition, counts);
                    }
                    OpResult::Produced(produced)
                }
                Err(code) => OpResult::Produced(crate::partition::Produced {
                    error_code: code,
                    base_offset: -1,
                    log_start_offset: -1,
                }),
            },
            Op::Produce {
                topic,
                partition,
                records,
                acks,
                max_message_bytes,
            } => match self.partition(&topic, partition).await {
                Ok(p) => {
                    let counts = crate::metrics::batch_counts(std::slice::from_ref(&records));
                    let produced = p.produce(records, acks, max_message_bytes).await;
                    if produced.error_code == errors::NONE {
                        self.shared
                            .metrics
                            .count(false, self.id, &topic, partition, counts);
                    }
                    OpResult::Produced(produced)
                }
                Err(code) => OpResult::Produced(crate::partition::Produced {
                    error_code: code,
                    base_offset: -1,
                    log_start_offset: -1,
                }),
            },
            Op::Fetch {
                topic,
                partition,
                offset,
                max_bytes,
            } => match self.served_partition(&topic, partition).await {
                Ok(p) => {
                    let fetched = p.fetch(offset, max_bytes).await;
                    let counts = crate::metrics::batch_counts(&fetched.batches);
                    self.shared
                        .metrics
                        .count(true, self.id, &topic, partition, counts);
                    OpResult::Fetched(fetched)
                }
                Err(code) => OpResult::Fetched(crate::partition::Fetched {
                    error_code: code,
                    high_watermark: -1,
                    log_start_offset: -1,
                    batches: Vec::new(),
                }),
            },
            Op::WaitForData {
                topic,
                partition,
                offset,
                deadline,
            } => {
                if let Ok(p) = self.served_partition(&topic, partition).await {
                    p.wait_for_data(offset, deadline).await;
                }
                OpResult::Done
            }
            Op::ListOffset {
                topic,
                partition,
                timestamp,
            } => match self.served_partition(&topic, partition).await {
                Ok(p) => {
                    let (error_code, offset, timestamp) = list_offsets::lookup(&p, timestamp).await;
                    OpResult::Offset {
                        error_code,
                        offset,
                        timestamp,
                    }
                }
                Err(code) => OpResult::Offset {
                    error_code: code,
                    offset: -1,
                    timestamp: -1,
                },
            },
            Op::Status { topic, partition } => {
                OpResult::Status(self.status(&topic, partition).await)
            }
            Op::Statuses { partitions } => {
                let mut out = Vec::with_capacity(partitions.len());
                for (topic, partition) in &partitions {
                    out.push(self.status(topic, *partition).await);
                }
                OpResult::Statuses(out)
            }
            Op::Admin(op) => {
                let (code, msg) = self.admin(op).await;
                OpResult::Admin(code, msg)
            }
            Op::Group { partition, call } => {
                OpResult::Group(self.groups.call(self, partition, call).await)
            }
            Op::ListGroups => OpResult::Group(self.groups.list(self).await),
            Op::Stats => OpResult::Stats(self.leadership_stats()),
            Op::DrainStep => OpResult::Stats(self.drain_step().await),
            Op::ElectPreferred {
                topic,
                partition,
                timeout_ms,
            } => {
                let (code, msg) = self.elect_preferred(&topic, partition, timeout_ms).await;
                OpResult::Admin(code, msg)
            }
        }
    }

    /// Offsets and size of a partition this shard owns.
    async fn status(&self, topic: &str, partition: i32) -> PartitionStatus {
        match self.partition(topic, partition).await {
            Ok(p) => {
                let s = p.log.stats();
                PartitionStatus {
                    error_code: errors::NONE,
                    start_offset: s.start_offset as i64,
                    high_watermark: p.high_watermark() as i64,
                    end_offset: s.end_offset as i64,
                    size_bytes: s.size_bytes,
                }
            }
            Err(code) => PartitionStatus {
                error_code: code,
                ..PartitionStatus::default()
            },
        }
    }

    /// Apply a metadata change (shard 0), persist it, and tell every shard.
    async fn admin(self: &Rc<Self>, op: AdminOp) -> (i16, Option<String>) {
        assert_eq!(self.id, 0, "topic metadata changes run on shard 0");
        let Ok(_permit) = self.admin_lock.acquire_permit(1).await else {
            return (errors::UNKNOWN_SERVER_ERROR, None);
        };
        let mut next: Topics = (*self.topics()).clone();
        let validate_only = match &op {
            AdminOp::CreateTopic { validate_only, .. }
            | AdminOp::CreatePartitions { validate_only, .. }
            | AdminOp::AlterConfig { validate_only, .. } => *validate_only,
            AdminOp::DeleteTopic { .. } => false,
        };
        let result = match op {
            AdminOp::CreateTopic {
                name,
                partitions,
                config,
                replication_factor,
                ..
            } => {
                if let Err(msg) = topics::check_topic_name(&name) {
                    Err((errors::INVALID_TOPIC_EXCEPTION, msg))
                } else if !(1..=topics::PARTITIONS_MAX).contains(&partitions) {
                    Err((
                        errors::INVALID_PARTITIONS,
                        format!("partitions must be 1..={}", topics::PARTITIONS_MAX),
                    ))
                } else {
                    match next.topics.entry(name) {
                        std::collections::btree_map::Entry::Occupied(e) => Err((
                            errors::TOPIC_ALREADY_EXISTS,
                            format!("topic {} already exists", e.key()),
                        )),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            let replicas = if self.config().is_cluster() {
                                controller::assign_replicas(
                                    e.key(),
                                    0..partitions,
                                    replication_factor as usize,
                                    &self.member_ids(),
                                )
                            } else {
                                Vec::new()
                            };
                            e.insert(topics::TopicMeta {
                                replicas,
                                seq: 0,
                                id: topics::new_topic_id(),
                                partitions,
                                config,
                            });
                            Ok(())
                        }
                    }
                }
            }
            AdminOp::DeleteTopic { name } => match next.topics.remove(&name) {
                Some(_) => Ok(()),
                None => Err((
                    errors::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("no topic {name}"),
                )),
            },
            AdminOp::CreatePartitions { name, count, .. } => match next.topics.get_mut(&name) {
                None => Err((
                    errors::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("no topic {name}"),
                )),
                Some(t) if count <= t.partitions || count > topics::PARTITIONS_MAX => Err((
                    errors::INVALID_PARTITIONS,
                    format!(
                        "topic {name} has {} partitions; the new count must be larger (and at most {})",
                        t.partitions,
                        topics::PARTITIONS_MAX
                    ),
                )),
                Some(t) => {
                    if !t.replicas.is_empty() {
                        let factor = t.replicas.first().map_or(1, Vec::len);
                        let members = self.member_ids();
                        t.replicas.extend(controller::assign_replicas(
                            &name,
                            t.partitions..count,
                            factor,
                            &members,
                        ));
                    }
                    t.partitions = count;
                    Ok(())
                }
            },
            AdminOp::AlterConfig {
                name,
                changes,
                replace,
                ..
            } => match next.topics.get_mut(&name) {
                None => Err((
                    errors::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("no topic {name}"),
                )),
                Some(t) => {
                    let defaults = crate::kafka::admin::default_topic_config(self);
                    let mut config = if replace {
                        defaults.clone()
                    } else {
                        t.config.clone()
                    };
                    changes
                        .iter()
                        .try_for_each(|(k, v)| {
                            crate::kafka::admin::set_config(&mut config, &defaults, k, v.as_deref())
                        })
                        .map(|()| t.config = config)
                        .map_err(|msg| (errors::INVALID_CONFIG, msg))
                }
            },
        };
        if let Err((code, msg)) = result {
            return (code, Some(msg));
        }
        if validate_only {
            return (errors::NONE, None);
        }
        if self.cluster().is_some() {
            return self.commit_topics_change(&next).await;
        }
        next.version += 1;
        if let Err(e) = next.save(&self.config().data_dir) {
            tracing::error!(error = %e, "cannot persist topic metadata");
            return (errors::KAFKA_STORAGE_ERROR, Some(e));
        }
        let view: TopicsView = Arc::new(next);
        self.apply_topics(view.clone()).await;
        self.router.broadcast_topics(&view).await;
        (errors::NONE, None)
    }

    /// Move a partition's leadership to its preferred replica: here if this node
    /// leads it, else by asking the leader (clients send ElectLeaders to the
    /// controller, which need not lead the partition). Answers once the preferred
    /// replica leads, as seen from here.
    async fn elect_preferred(
        &self,
        topic: &str,
        partition: i32,
        timeout_ms: u64,
    ) -> (i16, Option<String>) {
        use crate::kafka::elect_leaders::{ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE};
        let Some(runtime) = self.cluster() else {
            // A single node: its only replica always leads.
            return (ELECTION_NOT_NEEDED, None);
        };
        let meta = match self.topic_of(topic, partition) {
            Ok(m) => m,
            Err(code) => return (code, None),
        };
        let group = controller::group_id(meta.seq, partition);
        let Some(&preferred) = meta
            .replicas
            .get(partition as usize)
            .and_then(|r| r.first())
        else {
            return (PREFERRED_LEADER_NOT_AVAILABLE, None);
        };
        let leader = || runtime.leader_of(group).and_then(|l| l.leader);
        match leader() {
            Some(l) if l == preferred => return (ELECTION_NOT_NEEDED, None),
            Some(l) if l == self.config().node_id => {
                let Some(replica) = runtime.replica(group) else {
                    return (errors::NOT_LEADER_OR_FOLLOWER, None);
                };
                if let Err(e) = replica.transfer_leadership(preferred).await {
                    return (PREFERRED_LEADER_NOT_AVAILABLE, Some(e));
                }
            }
            Some(l) => runtime.send_cluster(
                l,
                strand_net::replication::ClusterMessage::TransferLeader {
                    group,
                    target: preferred,
                },
            ),
            None => {
                return (
                    errors::LEADER_NOT_AVAILABLE,
                    Some("the partition is electing a leader; retry".into()),
                )
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms);
        while std::time::Instant::now() < deadline {
            if leader() == Some(preferred) {
                return (errors::NONE, None);
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        (
            PREFERRED_LEADER_NOT_AVAILABLE,
            Some(format!(
                "node {preferred} did not take over within {timeout_ms} ms"
            )),
        )
    }

    /// At shutdown: hand every partition this shard leads to the follower furthest
    /// along, so clients wait for no election (rolling restarts). A transfer that
    /// gives up (after an election timeout) is tried again until the deadline.
    async fn hand_off_leadership(&self) {
        let Some(runtime) = self.cluster() else {
            return;
        };
        let deadline = std::time::Instant::now()
            + Duration::from_millis(2 * self.config().election_timeout_ms);
        while std::time::Instant::now() < deadline {
            let leading: Vec<_> = runtime
                .replicas()
                .into_iter()
                .filter(|r| r.is_leader() && r.voters.len() > 1)
                .collect();
            if leading.is_empty() {
                return;
            }
            for r in leading.iter().filter(|r| !r.transferring()) {
                if let Some(target) = r.best_follower() {
                    let _ = r.transfer_leadership(target).await;
                }
            }
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Partitions this shard leads and how many of them are under-replicated (a
    /// single node leads every partition it has open, none under-replicated).
    pub fn leadership_stats(&self) -> crate::router::ShardStats {
        let (leaders, under_replicated, movable, lagging) = match self.cluster() {
            None => (self.partitions.borrow().len(), 0, 0, 0),
            Some(runtime) => {
                let me = self.config().node_id;
                let replicas = runtime.replicas();
                // Followers the leader does not count in sync (as last reported).
                let lagging = replicas
                    .iter()
                    .filter(|r| !r.is_leader())
                    .filter(|r| {
                        runtime
                            .leader_of(r.group)
                            .is_some_and(|l| l.leader.is_some() && !l.isr.contains(&me))
                    })
                    .count();
                let led: Vec<_> = replicas.into_iter().filter(|r| r.is_leader()).collect();
                let movable = led.iter().filter(|r| r.voters.len() > 1).count();
                let led: Vec<_> = led
                    .into_iter()
                    .filter(|r| r.group != CONTROLLER_GROUP)
                    .collect();
                let urp = led
                    .iter()
                    .filter(|r| r.in_sync().len() < r.voters.len())
                    .count();
                (led.len(), urp, movable, lagging)
            }
        };
        crate::router::ShardStats {
            leaders,
            under_replicated,
            movable,
            lagging,
            connections: self.connections.get(),
        }
    }

    /// One step of a drain: ask every replicated partition this shard leads to
    /// hand its leadership to its best follower; answers how many it still leads
    /// (single-copy partitions cannot move and are not counted).
    pub async fn drain_step(&self) -> crate::router::ShardStats {
        if let Some(runtime) = self.cluster() {
            let leading: Vec<_> = runtime
                .replicas()
                .into_iter()
                .filter(|r| r.is_leader() && r.voters.len() > 1 && !r.transferring())
                .collect();
            for r in leading {
                if let Some(target) = r.best_follower() {
                    glommio::spawn_local(async move {
                        let _ = r.transfer_leadership(target).await;
                    })
                    .detach();
                }
            }
        }
        self.leadership_stats()
    }

    /// Ids of the cluster members (this node alone on a single node).
    fn member_ids(&self) -> Vec<u32> {
        let peers = &self.config().peers;
        if peers.is_empty() {
            vec![self.config().node_id]
        } else {
            peers.iter().map(|p| p.id).collect()
        }
    }

    /// In a cluster: turn a metadata change computed on shard 0 into a controller
    /// command, commit it, and wait until this node has applied it.
    async fn commit_topics_change(&self, next: &Topics) -> (i16, Option<String>) {
        let current = self.topics();
        let changed = next
            .topics
            .iter()
            .find(|(name, meta)| current.get(name) != Some(*meta))
            .map(|(name, meta)| Command::PutTopic {
                name: name.clone(),
                meta: meta.clone(),
                create: current.get(name).is_none(),
            });
        let removed = current
            .topics
            .keys()
            .find(|name| next.get(name).is_none())
            .map(|name| Command::RemoveTopic { name: name.clone() });
        let Some(command) = changed.or(removed) else {
            return (errors::NONE, None);
        };
        let applied = |view: &Topics| match &command {
            Command::PutTopic { name, meta, .. } => view.get(name).map(|t| {
                t.id == meta.id && t.partitions == meta.partitions && t.config == meta.config
            }),
            Command::RemoveTopic { name } => Some(view.get(name).is_none()),
            Command::RegisterBroker { .. } => Some(true),
        };
        if let Err(code) = self.propose_command(&command).await {
            return (
                code,
                Some("the cluster has no controller leader right now; retry".into()),
            );
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            match applied(&self.topics()) {
                Some(true) => return (errors::NONE, None),
                // Another creation of the same name won.
                Some(false) if matches!(command, Command::PutTopic { create: true, .. }) => {
                    return (
                        errors::TOPIC_ALREADY_EXISTS,
                        Some("the topic was created concurrently".into()),
                    )
                }
                _ => glommio::timer::sleep(Duration::from_millis(10)).await,
            }
        }
        (
            errors::REQUEST_TIMED_OUT,
            Some("the controller did not commit the change in 10 s".into()),
        )
    }

    /// Shard 0: propose a controller command here if this node leads the
    /// controller, else forward it to the leader.
    pub async fn propose_command(&self, command: &Command) -> Result<(), i16> {
        let runtime = self.cluster().ok_or(errors::UNKNOWN_SERVER_ERROR)?;
        let controller = runtime
            .replica(CONTROLLER_GROUP)
            .ok_or(errors::NOT_CONTROLLER)?;
        let bytes = command.encode();
        if controller.is_leader() {
            let batch = crate::cluster::records::value_batch(
                &bytes,
                crate::cluster::runtime::now_unix_ms(),
            );
            let produced = controller
                .produce(bytes::Bytes::from(batch), -1, u32::MAX)
                .await;
            return match produced.error_code {
                errors::NONE => Ok(()),
                code => Err(code),
            };
        }
        match controller.view().leader {
            Some(leader) if leader != self.config().node_id => {
                runtime.send_cluster(
                    leader,
                    strand_net::replication::ClusterMessage::Forward { command: bytes },
                );
                Ok(())
            }
            _ => Err(errors::NOT_CONTROLLER),
        }
    }

    /// Install a new topic snapshot: drop partitions that are gone, push config
    /// changes to open logs.
    pub async fn apply_topics(&self, view: TopicsView) {
        if view.version <= self.topics.borrow().version && view.version != 0 {
            return;
        }
        let previous = self.topics.borrow().clone();
        *self.topics.borrow_mut() = view.clone();
        let gone: Vec<(String, i32)> = self
            .partitions
            .borrow()
            .keys()
            .filter(|(t, p)| view.get(t).is_none_or(|m| *p >= m.partitions))
            .cloned()
            .collect();
        for key in gone {
            if let (Some(runtime), Some(meta)) = (self.cluster(), previous.get(&key.0)) {
                let group = controller::group_id(meta.seq.max(1), key.1);
                runtime.remove_replica(group);
                runtime.forget_group(group);
            }
            let removed = self.partitions.borrow_mut().remove(&key);
            drop(removed);
            let dir = partition_dir(&self.config().data_dir, &key.0, key.1);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a deleted partition");
            }
        }
        for ((topic, _), p) in self.partitions.borrow().iter() {
            if let Some(meta) = view.get(topic) {
                p.log
                    .set_retention(meta.config.retention_bytes, meta.config.retention_ms);
            }
        }
    }

    /// Shard 0 in a cluster: open the controller's replica, apply its committed
    /// commands as they come, and register this broker's Kafka address.
    async fn start_controller(self: Rc<Self>, runtime: &Rc<Runtime>) -> Result<(), String> {
        let dir = self.config().data_dir.join("controller");
        let log = Log::open(self.storage.clone(), &dir, self.config().log.clone())
            .await
            .map_err(|e| format!("cannot open the controller log: {e}"))?;
        let partition = Partition::open(log).await;
        let voters: Vec<u32> = self.config().peers.iter().map(|p| p.id).collect();
        let replica = Replica::open(
            runtime,
            CONTROLLER_GROUP,
            "__controller",
            0,
            partition,
            voters,
            runtime.recovered_commit(CONTROLLER_GROUP),
        )
        .await?;
        runtime.add_replica(replica.clone());
        let shard = self.clone();
        let rt = runtime.clone();
        glommio::spawn_local(async move {
            let mut applied = 0;
            loop {
                let commit = replica.published_commit();
                if commit > applied {
                    match replica.committed_entries(applied + 1, commit).await {
                        Ok(entries) => {
                            let mut next: Topics = (*shard.topics()).clone();
                            for (index, bytes) in entries {
                                let command = crate::cluster::records::first_record_value(&bytes)
                                    .and_then(Command::decode);
                                if let Some(command) = command {
                                    controller::apply(&mut next, index, command);
                                }
                                next.version = index;
                            }
                            applied = commit;
                            let view: TopicsView = Arc::new(next);
                            shard.apply_topics(view.clone()).await;
                            shard.router.broadcast_topics(&view).await;
                            let s = shard.clone();
                            glommio::spawn_local(async move { s.open_owned().await }).detach();
                            continue;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read committed controller entries");
                            glommio::timer::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    }
                }
                rt.controller_wake.wait().await;
            }
        })
        .detach();
        // Register (and re-register after an address change) until the controller
        // has our address.
        let shard = self.clone();
        glommio::spawn_local(async move {
            let (host, port) = shard.config().advertised_kafka_addr.clone();
            let me = shard.config().node_id;
            loop {
                let registered = shard
                    .topics()
                    .brokers
                    .get(&me)
                    .is_some_and(|b| b.host == host && b.port == port);
                if registered {
                    return;
                }
                let command = Command::RegisterBroker {
                    id: me,
                    host: host.clone(),
                    port,
                };
                let _ = shard.propose_command(&command).await;
                glommio::timer::sleep(Duration::from_millis(500)).await;
            }
        })
        .detach();
        Ok(())
    }

    /// Open every partition this shard owns (recovery runs now, not on first use).
    async fn open_owned(&self) {
        let view = self.topics();
        for (name, meta) in view.topics.iter() {
            for p in 0..meta.partitions {
                if self.owner_of(name, p) != self.id {
                    continue;
                }
                if self.cluster().is_some() {
                    let hosted = meta
                        .replicas
                        .get(p as usize)
                        .is_some_and(|r| r.contains(&self.config().node_id));
                    if hosted {
                        if let Err(code) = self.replica(name, p).await {
                            tracing::error!(topic = %name, partition = p, code, "replica unavailable");
                        }
                    }
                } else {
                    if let Err(code) = self.partition(name, p).await {
                        tracing::error!(topic = %name, partition = p, code, "partition unavailable");
                    }
                }
            }
        }
    }

    async fn retention_loop(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(Duration::from_secs(10)).await;
            if self.cluster().is_some() {
                // Retention of replicated logs must move every replica's log start in
                // step with the group (only committed entries may go): not yet.
                continue;
            }
            let parts: Vec<Rc<Partition>> = self.partitions.borrow().values().cloned().collect();
            for p in parts {
                if let Err(e) = p.log.apply_retention().await {
                    tracing::warn!(error = %e, "retention failed");
                }
            }
        }
    }

    /// Flush and close every partition (graceful shutdown).
    async fn close_all(&self) {
        let parts: Vec<((String, i32), Rc<Partition>)> =
            self.partitions.borrow_mut().drain().collect();
        for ((topic, partition), p) in parts {
            if let Err(e) = p.log.flush().await {
                tracing::error!(topic, partition, error = %e, "flush at shutdown failed");
            }
        }
    }
}

/// Run shard `id` of `count` until shutdown. A shard that cannot start stops the
/// whole node: a half-serving node is worse than a stopped one.
pub async fn run(
    id: usize,
    count: usize,
    shared: Arc<NodeShared>,
    mesh: MeshBuilder<Envelope, glommio::channels::channel_mesh::Full>,
    topics: Topics,
) -> Result<(), String> {
    match serve_shard(id, count, shared.clone(), mesh, topics).await {
        Ok(served) => served,
        Err(e) => {
            // Failed before serving: count as drained so the others do not wait.
            shared.stop();
            shared.mark_drained();
            Err(e)
        }
    }
}

/// Err: the shard could not start. Ok(result): it served, drained and closed.
async fn serve_shard(
    id: usize,
    count: usize,
    shared: Arc<NodeShared>,
    mesh: MeshBuilder<Envelope, glommio::channels::channel_mesh::Full>,
    topics: Topics,
) -> Result<Result<(), String>, String> {
    let config = &shared.config;
    // Join the mesh first: every shard must reach it, or the others wait forever.
    let (senders, mut receivers) = mesh
        .join()
        .await
        .map_err(|e| format!("cannot join the shard mesh: {e}"))?;
    let mut storage = DmaStorage::open(&config.data_dir, config.allow_tmpfs)
        .await
        .map_err(|e| e.to_string())?;
    storage.observe(crate::metrics::DiskObserver::new(&shared.metrics, id));
    let shard = Rc::new(Shard {
        id,
        count,
        shared: shared.clone(),
        storage: Rc::new(storage),
        partitions: RefCell::new(HashMap::new()),
        open_lock: Semaphore::new(1),
        topics: RefCell::new(Arc::new(topics)),
        router: Router::new(id, senders),
        connections: Cell::new(0),
        admin_lock: Semaphore::new(1),
        stop_gate: Rc::new(Semaphore::new(0)),
        request_memory: Rc::new(Semaphore::new((2 * shared.config.request_bytes_max) as u64)),
        cluster: RefCell::new(None),
        groups: Rc::new(crate::group::service::Groups::new()),
    });
    glommio::spawn_local(shard.clone().watch_shutdown()).detach();
    for (_peer, rx) in crate::router::streams(&mut receivers) {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    Envelope::Call { id, from, op } => {
                        let shard = shard.clone();
                        glommio::spawn_local(async move {
                            let result = shard.execute(op).await;
                            shard.router.reply(from, id, result).await;
                        })
                        .detach();
                    }
                    Envelope::Reply { id, result } => shard.router.deliver(id, result),
                    Envelope::Topics(view) => {
                        shard.apply_topics(view).await;
                        if shard.cluster().is_some() {
                            let shard = shard.clone();
                            glommio::spawn_local(async move { shard.open_owned().await }).detach();
                        }
                    }
                    Envelope::Leaders(updates) => {
                        if let Some(runtime) = shard.cluster() {
                            runtime.apply_leaders_from_shard(&updates);
                        }
                    }
                }
            }
        })
        .detach();
    }
    if config.is_cluster() {
        let runtime = Runtime::start(&shard).await?;
        *shard.cluster.borrow_mut() = Some(runtime.clone());
        if id == 0 {
            shard.clone().start_controller(&runtime).await?;
        }
    }
    shard.open_owned().await;
    let retention = glommio::spawn_local(shard.clone().retention_loop());
    let group_timers = glommio::spawn_local(shard.groups.clone().tick_loop(shard.clone()));
    let served = crate::server::serve(shard.clone()).await;
    if served.is_err() {
        shared.stop();
    }
    shared.mark_drained();
    while !shared.all_drained(count) {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    drop(retention);
    drop(group_timers);
    if let Some(runtime) = shard.cluster() {
        shard.hand_off_leadership().await;
        runtime.close();
    }
    shard.close_all().await;
    Ok(served)
}
