//! A shard: one glommio executor pinned to one core (or unpinned in tests). It owns
//! the partitions that hash to it, serves the connections the kernel hands it
//! (SO_REUSEPORT spreads them), and forwards work on other shards' partitions
//! through the mesh. Shard 0 also owns the topic metadata.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::sync::Semaphore;
use strand_engine::{DmaStorage, Log, LogConfig};

use crate::config::NodeConfig;
use crate::kafka::{errors, list_offsets};
use crate::partition::Partition;
use crate::router::{AdminOp, Envelope, Op, OpResult, PartitionStatus, Router};
use crate::topics::{self, partition_dir, TopicConfig, Topics, TopicsView};

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
        let meta = self
            .topics()
            .get(topic)
            .cloned()
            .filter(|m| partition >= 0 && partition < m.partitions)
            .ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION)?;
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
            } => match self.partition(&topic, partition).await {
                Ok(p) => OpResult::Produced(p.produce(records, acks, max_message_bytes).await),
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
            } => match self.partition(&topic, partition).await {
                Ok(p) => OpResult::Fetched(p.fetch(offset, max_bytes).await),
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
                if let Ok(p) = self.partition(&topic, partition).await {
                    p.wait_for_data(offset, deadline).await;
                }
                OpResult::Done
            }
            Op::ListOffset {
                topic,
                partition,
                timestamp,
            } => match self.partition(&topic, partition).await {
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
                            e.insert(topics::TopicMeta {
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

    /// Install a new topic snapshot: drop partitions that are gone, push config
    /// changes to open logs.
    pub async fn apply_topics(&self, view: TopicsView) {
        if view.version <= self.topics.borrow().version && view.version != 0 {
            return;
        }
        *self.topics.borrow_mut() = view.clone();
        let gone: Vec<(String, i32)> = self
            .partitions
            .borrow()
            .keys()
            .filter(|(t, p)| view.get(t).is_none_or(|m| *p >= m.partitions))
            .cloned()
            .collect();
        for key in gone {
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

    /// Open every partition this shard owns (recovery runs now, not on first use).
    async fn open_owned(&self) {
        let view = self.topics();
        for (name, meta) in view.topics.iter() {
            for p in 0..meta.partitions {
                if self.owner_of(name, p) == self.id {
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
    let storage = DmaStorage::open(&config.data_dir, config.allow_tmpfs)
        .await
        .map_err(|e| e.to_string())?;
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
                    Envelope::Topics(view) => shard.apply_topics(view).await,
                }
            }
        })
        .detach();
    }
    shard.open_owned().await;
    let retention = glommio::spawn_local(shard.clone().retention_loop());
    let served = crate::server::serve(shard.clone()).await;
    if served.is_err() {
        shared.stop();
    }
    shared.mark_drained();
    while !shared.all_drained(count) {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    drop(retention);
    shard.close_all().await;
    Ok(served)
}
