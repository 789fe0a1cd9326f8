//! `strand cluster status`: the brokers, then every partition of every topic (or of one)
//! with its leader, replicas, ISR, log start offset and high watermark (ListOffsets),
//! size on disk (DescribeLogDirs), and the count of under-replicated partitions.
//!
//! Offsets and sizes are asked of each partition's leader, all of a leader's partitions
//! in one request. A broker without DescribeLogDirs is not an error: its sizes are
//! shown as `-`, with one note saying why.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, DescribeLogDirsRequest,
    DescribeLogDirsResponse, ListOffsetsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::cli::Output;
use crate::client::{pick_version, Client};
use crate::errors::{check, error_name};
use crate::render::{id_list, leader_cell, optional_cell, table, Json};
use crate::topic::{
    combine_offsets, metadata_request, BrokerInfo, ClusterMetadata, PartitionInfo,
    PartitionOffsets, TopicInfo, TIMESTAMP_EARLIEST, TIMESTAMP_LATEST,
};

/// The DescribeLogDirs versions this command reads: v0 is gone from Kafka 4 and from
/// kafka-protocol; v4 (KIP-827) is the newest kafka-protocol encodes.
pub const LOG_DIRS_VERSIONS: (i16, i16) = (1, 4);
/// ApiVersions v0 is understood by every broker.
const API_VERSIONS_VERSION: i16 = 0;
/// ListOffsets special timestamps: the log start and the high watermark.
/// The replica id of an ordinary client in ListOffsets.
const REPLICA_ID_CONSUMER: i32 = -1;
/// READ_UNCOMMITTED: the latest offset is the high watermark.
const ISOLATION_READ_UNCOMMITTED: i8 = 0;
const ERROR_UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Brokers, then each partition's leader, replicas, ISR, offsets and size on disk
    /// (Metadata, ListOffsets, DescribeLogDirs).
    Status(StatusArgs),
    /// Give each partition's leadership back to its preferred replica (the first
    /// replica), e.g. after a rolling restart (ElectLeaders, preferred).
    ElectLeaders(ElectArgs),
}

#[derive(Debug, Args)]
pub struct ElectArgs {
    /// Only the partitions of this topic.
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only the partitions of this topic.
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,

    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// A partition as (topic, partition index).
pub type PartitionKey = (String, i32);

/// What is known of a partition's size on its leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionSize {
    Bytes(i64),
    /// The leader does not serve DescribeLogDirs (a note says which leader).
    NotSupported,
    /// Asked, but no size came back, and why.
    Unavailable(String),
}

impl PartitionSize {
    fn bytes(&self) -> Option<i64> {
        match self {
            Self::Bytes(n) => Some(*n),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    pub cluster_id: Option<String>,
    /// `None` when the broker names no controller (id -1).
    pub controller: Option<i32>,
    pub brokers: Vec<BrokerInfo>,
    /// Sorted by name; partitions sorted by id.
    pub topics: Vec<TopicInfo>,
    pub offsets: BTreeMap<PartitionKey, PartitionOffsets>,
    pub sizes: BTreeMap<PartitionKey, PartitionSize>,
    /// What holds for many partitions at once, e.g. a leader without DescribeLogDirs.
    pub notes: Vec<String>,
}

impl ClusterStatus {
    /// Partitions whose ISR is not their whole replica set.
    pub fn under_replicated(&self) -> usize {
        self.topics
            .iter()
            .flat_map(|t| &t.partitions)
            .filter(|p| is_under_replicated(p))
            .count()
    }
}

/// Replicas ≠ ISR, compared as sets (brokers list them in any order).
pub fn is_under_replicated(p: &PartitionInfo) -> bool {
    let set = |ids: &[i32]| {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    set(&p.replicas) != set(&p.isr)
}

pub fn status(client: &mut Client, topic: Option<&str>, output: Output) -> Result<String> {
    let status = cluster_status(client, topic)?;
    Ok(match output {
        Output::Text => render_text(&status),
        Output::Json => format!("{}\n", render_json(&status)),
    })
}

// ---------------------------------------------------------------------------------------
// Request builders.
// ---------------------------------------------------------------------------------------

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// One ListOffsets request for every partition of `partitions` (topic → ids).
pub fn list_offsets_request(
    partitions: &BTreeMap<String, Vec<i32>>,
    timestamp: i64,
) -> ListOffsetsRequest {
    let topics = partitions
        .iter()
        .map(|(name, ids)| {
            let ids = ids
                .iter()
                .map(|&p| {
                    ListOffsetsPartition::default()
                        .with_partition_index(p)
                        .with_timestamp(timestamp)
                })
                .collect();
            ListOffsetsTopic::default()
                .with_name(topic_name(name))
                .with_partitions(ids)
        })
        .collect();
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(REPLICA_ID_CONSUMER))
        .with_isolation_level(ISOLATION_READ_UNCOMMITTED)
        .with_topics(topics)
}

/// DescribeLogDirs for exactly these partitions (never null: with several brokers
/// each leader is asked for its own partitions only).
pub fn describe_log_dirs_request(
    partitions: &BTreeMap<String, Vec<i32>>,
) -> DescribeLogDirsRequest {
    let topics = partitions
        .iter()
        .map(|(name, ids)| {
            DescribableLogDirTopic::default()
                .with_topic(topic_name(name))
                .with_partitions(ids.clone())
        })
        .collect();
    DescribeLogDirsRequest::default().with_topics(Some(topics))
}

// ---------------------------------------------------------------------------------------
// Gathering.
// ---------------------------------------------------------------------------------------

fn cluster_status(client: &mut Client, topic: Option<&str>) -> Result<ClusterStatus> {
    let version = client.version(ApiKey::Metadata)?;
    let names = topic.map(|t| [t]);
    let response = client.send(
        &metadata_request(names.as_ref().map(|n| &n[..]), version),
        version,
    )?;
    let cluster_id = response.cluster_id.as_ref().map(|id| id.to_string());
    let controller = (response.controller_id.0 >= 0).then_some(response.controller_id.0);
    let mut metadata = ClusterMetadata::from_response(response);
    if let Some(name) = topic {
        metadata.topics.retain(|t| t.name == name);
        let Some(t) = metadata.topics.first() else {
            return Err(unknown_topic(name).into());
        };
        // As `topic describe`: refuse only when there is nothing to show.
        if t.error_code == ERROR_UNKNOWN_TOPIC_OR_PARTITION || t.partitions.is_empty() {
            check(t.error_code, None, || {
                format!("cluster status of topic {name}")
            })?;
        }
    }
    let mut status = ClusterStatus {
        cluster_id,
        controller,
        brokers: metadata.brokers.clone(),
        topics: Vec::new(),
        offsets: BTreeMap::new(),
        sizes: BTreeMap::new(),
        notes: Vec::new(),
    };
    let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for t in &metadata.topics {
        for p in &t.partitions {
            if p.leader < 0 {
                let key = (t.name.clone(), p.id);
                status
                    .offsets
                    .insert(key.clone(), offsets_unavailable("no leader"));
                status
                    .sizes
                    .insert(key, PartitionSize::Unavailable("no leader".to_owned()));
            } else {
                by_leader
                    .entry(p.leader)
                    .or_default()
                    .entry(t.name.clone())
                    .or_default()
                    .push(p.id);
            }
        }
    }
    for (leader, partitions) in by_leader {
        ask_leader(client, &metadata, leader, &partitions, &mut status);
    }
    status.topics = metadata.topics;
    Ok(status)
}

fn unknown_topic(name: &str) -> crate::errors::BrokerError {
    crate::errors::BrokerError {
        operation: format!("cluster status of topic {name}"),
        code: ERROR_UNKNOWN_TOPIC_OR_PARTITION,
        message: None,
    }
}

fn offsets_unavailable(why: impl Into<String>) -> PartitionOffsets {
    PartitionOffsets {
        error: Some(why.into()),
        ..PartitionOffsets::default()
    }
}

fn keys(partitions: &BTreeMap<String, Vec<i32>>) -> impl Iterator<Item = PartitionKey> + '_ {
    partitions
        .iter()
        .flat_map(|(name, ids)| ids.iter().map(move |&p| (name.clone(), p)))
}

/// Offsets and sizes of `partitions` from their leader; failures are recorded per
/// partition, never returned.
fn ask_leader(
    bootstrap: &mut Client,
    metadata: &ClusterMetadata,
    leader: i32,
    partitions: &BTreeMap<String, Vec<i32>>,
    status: &mut ClusterStatus,
) {
    // With one broker, the bootstrap connection is the leader, whatever address it
    // advertises (containers often advertise one the client cannot reach).
    let single_broker = metadata.brokers.len() <= 1;
    let mut own;
    let client = match metadata.brokers.iter().find(|b| b.id == leader) {
        _ if single_broker => bootstrap,
        Some(broker) if broker.address() == bootstrap.addr() => bootstrap,
        Some(broker) => match Client::connect(&broker.address()) {
            Ok(c) => {
                own = c;
                &mut own
            }
            Err(err) => return unavailable(status, partitions, &format!("{err:#}")),
        },
        None => {
            let why = format!("leader {leader} is not in the broker list");
            return unavailable(status, partitions, &why);
        }
    };
    match list_offsets(client, partitions) {
        Ok(found) => status.offsets.extend(found),
        Err(err) => {
            let why = format!("{err:#}");
            for key in keys(partitions) {
                status.offsets.insert(key, offsets_unavailable(why.clone()));
            }
        }
    }
    match log_dirs_version(client) {
        Ok(Some(version)) => {
            let sizes = describe_log_dirs(client, partitions, version).unwrap_or_else(|err| {
                let why = format!("{err:#}");
                keys(partitions)
                    .map(|key| (key, PartitionSize::Unavailable(why.clone())))
                    .collect()
            });
            status.sizes.extend(sizes);
        }
        Ok(None) => {
            status.notes.push(format!(
                "the broker at {} does not support DescribeLogDirs v{}..=v{}: no sizes",
                client.addr(),
                LOG_DIRS_VERSIONS.0,
                LOG_DIRS_VERSIONS.1
            ));
            for key in keys(partitions) {
                status.sizes.insert(key, PartitionSize::NotSupported);
            }
        }
        Err(err) => {
            let why = format!("{err:#}");
            for key in keys(partitions) {
                status
                    .sizes
                    .insert(key, PartitionSize::Unavailable(why.clone()));
            }
        }
    }
}

fn unavailable(status: &mut ClusterStatus, partitions: &BTreeMap<String, Vec<i32>>, why: &str) {
    for key in keys(partitions) {
        status.offsets.insert(key.clone(), offsets_unavailable(why));
        status
            .sizes
            .insert(key, PartitionSize::Unavailable(why.to_owned()));
    }
}

fn list_offsets(
    client: &mut Client,
    partitions: &BTreeMap<String, Vec<i32>>,
) -> Result<BTreeMap<PartitionKey, PartitionOffsets>> {
    let version = client.version(ApiKey::ListOffsets)?;
    // One request per timestamp: Kafka refuses a partition listed twice in one request.
    let earliest = query_offsets(client, partitions, TIMESTAMP_EARLIEST, version)?;
    let latest = query_offsets(client, partitions, TIMESTAMP_LATEST, version)?;
    Ok(keys(partitions)
        .map(|key| {
            let offsets = combine_offsets(earliest.get(&key), latest.get(&key));
            (key, offsets)
        })
        .collect())
}

/// partition → offset, or the partition's error code.
type OffsetAnswers = BTreeMap<PartitionKey, Result<i64, i16>>;

fn query_offsets(
    client: &mut Client,
    partitions: &BTreeMap<String, Vec<i32>>,
    timestamp: i64,
    version: i16,
) -> Result<OffsetAnswers> {
    let response = client.send(&list_offsets_request(partitions, timestamp), version)?;
    Ok(response
        .topics
        .into_iter()
        .flat_map(|t| {
            let name = t.name.0.to_string();
            t.partitions.into_iter().map(move |p| {
                let answer = if p.error_code == 0 {
                    Ok(p.offset)
                } else {
                    Err(p.error_code)
                };
                ((name.clone(), p.partition_index), answer)
            })
        })
        .collect())
}

/// The DescribeLogDirs version to use with this broker, `None` if it serves none we
/// read. Asked with a fresh ApiVersions: the client's version table covers the APIs
/// of the topic commands only.
fn log_dirs_version(client: &mut Client) -> Result<Option<i16>> {
    let response: ApiVersionsResponse =
        client.send(&ApiVersionsRequest::default(), API_VERSIONS_VERSION)?;
    if response.error_code != 0 {
        bail!(
            "the broker at {} refused ApiVersions: {}",
            client.addr(),
            error_name(response.error_code)
        );
    }
    Ok(response
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::DescribeLogDirs as i16)
        .and_then(|k| pick_version(LOG_DIRS_VERSIONS, (k.min_version, k.max_version))))
}

fn describe_log_dirs(
    client: &mut Client,
    partitions: &BTreeMap<String, Vec<i32>>,
    version: i16,
) -> Result<BTreeMap<PartitionKey, PartitionSize>> {
    let response = client.send(&describe_log_dirs_request(partitions), version)?;
    check(response.error_code, None, || {
        format!("describe log dirs of {}", client.addr())
    })?;
    Ok(sizes_from_response(partitions, &response))
}

/// Each asked partition's size in the current (not future) log; a partition the
/// answer leaves out gets the errors of the log dirs that failed, if any.
pub fn sizes_from_response(
    partitions: &BTreeMap<String, Vec<i32>>,
    response: &DescribeLogDirsResponse,
) -> BTreeMap<PartitionKey, PartitionSize> {
    let mut found: BTreeMap<PartitionKey, i64> = BTreeMap::new();
    let mut dir_errors = Vec::new();
    for result in &response.results {
        if result.error_code != 0 {
            dir_errors.push(format!(
                "log dir {}: {}",
                result.log_dir.as_str(),
                error_name(result.error_code)
            ));
        }
        for t in &result.topics {
            for p in t.partitions.iter().filter(|p| !p.is_future_key) {
                found
                    .entry((t.name.0.to_string(), p.partition_index))
                    .or_insert(p.partition_size);
            }
        }
    }
    let missing = if dir_errors.is_empty() {
        "no size reported".to_owned()
    } else {
        dir_errors.join(", ")
    };
    keys(partitions)
        .map(|key| {
            let size = match found.get(&key) {
                Some(&bytes) => PartitionSize::Bytes(bytes),
                None => PartitionSize::Unavailable(missing.clone()),
            };
            (key, size)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Rendering.
// ---------------------------------------------------------------------------------------

/// What went wrong for one partition: its metadata error, then offsets, then size.
fn partition_note(topic: &str, p: &PartitionInfo, status: &ClusterStatus) -> String {
    let key = (topic.to_owned(), p.id);
    let mut notes = Vec::new();
    if p.error_code != 0 {
        notes.push(error_name(p.error_code));
    }
    match status.offsets.get(&key) {
        Some(PartitionOffsets {
            error: Some(error), ..
        }) => notes.push(error.clone()),
        Some(_) => {}
        None => notes.push("offsets not fetched".to_owned()),
    }
    match status.sizes.get(&key) {
        Some(PartitionSize::Unavailable(why)) if !notes.contains(why) => {
            notes.push(format!("size: {why}"));
        }
        Some(_) => {}
        None => notes.push("size not fetched".to_owned()),
    }
    notes.join("; ")
}

pub fn render_text(s: &ClusterStatus) -> String {
    let mut out = String::new();
    if let Some(id) = &s.cluster_id {
        out += &format!("Cluster ID: {id}\n");
    }
    let brokers: Vec<Vec<String>> = s
        .brokers
        .iter()
        .map(|b| {
            let controller = if s.controller == Some(b.id) {
                "yes"
            } else {
                ""
            };
            vec![b.id.to_string(), b.address(), controller.to_owned()]
        })
        .collect();
    out += &table(&["BROKER", "ADDRESS", "CONTROLLER"], &brokers);
    let mut rows = Vec::new();
    for t in &s.topics {
        if t.partitions.is_empty() {
            let mut row = vec![t.name.clone()];
            row.extend(std::iter::repeat_n("-".to_owned(), 7));
            row.push(error_name(t.error_code));
            rows.push(row);
        }
        for p in &t.partitions {
            let key = (t.name.clone(), p.id);
            let offsets = s.offsets.get(&key);
            rows.push(vec![
                t.name.clone(),
                p.id.to_string(),
                leader_cell(p.leader),
                id_list(&p.replicas),
                id_list(&p.isr),
                optional_cell(offsets.and_then(|o| o.start)),
                optional_cell(offsets.and_then(|o| o.end)),
                optional_cell(s.sizes.get(&key).and_then(PartitionSize::bytes)),
                partition_note(&t.name, p, s),
            ]);
        }
    }
    out += "\n";
    out += &table(
        &[
            "TOPIC",
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "ISR",
            "START",
            "END",
            "SIZE",
            "NOTE",
        ],
        &rows,
    );
    out += &format!("\nUnder-replicated partitions: {}\n", s.under_replicated());
    for note in &s.notes {
        out += &format!("Note: {note}\n");
    }
    out
}

pub fn render_json(s: &ClusterStatus) -> Json {
    let brokers = s
        .brokers
        .iter()
        .map(|b| {
            Json::object([
                ("id", Json::Int(b.id.into())),
                ("host", Json::str(&b.host)),
                ("port", Json::Int(b.port.into())),
                ("controller", Json::Bool(s.controller == Some(b.id))),
            ])
        })
        .collect();
    let topics = s
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let key = (t.name.clone(), p.id);
                    let offsets = s.offsets.get(&key);
                    let note = partition_note(&t.name, p, s);
                    Json::object([
                        ("partition", Json::Int(p.id.into())),
                        ("leader", Json::Int(p.leader.into())),
                        ("replicas", Json::ints(&p.replicas)),
                        ("isr", Json::ints(&p.isr)),
                        ("under_replicated", Json::Bool(is_under_replicated(p))),
                        ("start_offset", Json::opt_int(offsets.and_then(|o| o.start))),
                        ("end_offset", Json::opt_int(offsets.and_then(|o| o.end))),
                        (
                            "size_bytes",
                            Json::opt_int(s.sizes.get(&key).and_then(PartitionSize::bytes)),
                        ),
                        ("error", Json::opt_str((!note.is_empty()).then_some(&*note))),
                    ])
                })
                .collect();
            let error = (t.error_code != 0).then(|| error_name(t.error_code));
            Json::object([
                ("name", Json::str(&t.name)),
                ("error", Json::opt_str(error.as_deref())),
                ("partitions", Json::Array(partitions)),
            ])
        })
        .collect();
    Json::object([
        ("cluster_id", Json::opt_str(s.cluster_id.as_deref())),
        ("controller", Json::opt_int(s.controller.map(i64::from))),
        ("brokers", Json::Array(brokers)),
        ("topics", Json::Array(topics)),
        (
            "under_replicated_partitions",
            Json::Int(i64::try_from(s.under_replicated()).unwrap_or(i64::MAX)),
        ),
        (
            "notes",
            Json::Array(s.notes.iter().map(Json::str).collect()),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::client::{decode_request, encode_request};
    use crate::fake_broker::{offsets_response, FakeBroker};
    use clap::Parser;
    use kafka_protocol::messages::describe_log_dirs_response::{
        DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
    };
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{MetadataResponse, RequestKind, ResponseKind};
    use std::sync::{Arc, Mutex};

    /// What a Kafka 3.x broker advertises for the APIs this command uses.
    const KAFKA_3_VERSIONS: &[(ApiKey, i16, i16)] = &[
        (ApiKey::ListOffsets, 0, 7),
        (ApiKey::Metadata, 0, 12),
        (ApiKey::DescribeLogDirs, 0, 4),
    ];
    /// A broker without DescribeLogDirs (Strand before it had it).
    const NO_LOG_DIRS_VERSIONS: &[(ApiKey, i16, i16)] =
        &[(ApiKey::ListOffsets, 1, 6), (ApiKey::Metadata, 0, 12)];

    fn partitions(list: &[(&str, &[i32])]) -> BTreeMap<String, Vec<i32>> {
        list.iter()
            .map(|&(name, ids)| (name.to_owned(), ids.to_vec()))
            .collect()
    }

    /// A partition as (leader, replicas, isr).
    type Placement<'a> = (i32, &'a [i32], &'a [i32]);

    fn metadata(
        brokers: &[(i32, &str)],
        controller: i32,
        topics: &[(&str, &[Placement])],
    ) -> ResponseKind {
        let brokers = brokers
            .iter()
            .map(|&(id, addr)| {
                let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(id))
                    .with_host(StrBytes::from_string(host.to_owned()))
                    .with_port(port.parse().expect("port"))
            })
            .collect();
        let ids = |ids: &[i32]| ids.iter().map(|&i| BrokerId(i)).collect::<Vec<_>>();
        let topics = topics
            .iter()
            .map(|&(name, placements)| {
                let partitions = placements
                    .iter()
                    .enumerate()
                    .map(|(i, &(leader, replicas, isr))| {
                        MetadataResponsePartition::default()
                            .with_partition_index(i32::try_from(i).expect("few partitions"))
                            .with_leader_id(BrokerId(leader))
                            .with_replica_nodes(ids(replicas))
                            .with_isr_nodes(ids(isr))
                    })
                    .collect();
                MetadataResponseTopic::default()
                    .with_name(Some(topic_name(name)))
                    .with_partitions(partitions)
            })
            .collect();
        MetadataResponse::default()
            .with_cluster_id(Some(StrBytes::from_static_str("c1")))
            .with_controller_id(BrokerId(controller))
            .with_brokers(brokers)
            .with_topics(topics)
            .into()
    }

    /// 1000 × (partition + 1) bytes for every partition asked, in one log dir.
    fn log_dirs_response(request: &DescribeLogDirsRequest) -> ResponseKind {
        let topics = request
            .topics
            .as_deref()
            .expect("the command names its partitions")
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|&p| {
                        DescribeLogDirsPartition::default()
                            .with_partition_index(p)
                            .with_partition_size(1000 * i64::from(p + 1))
                    })
                    .collect();
                DescribeLogDirsTopic::default()
                    .with_name(t.topic.clone())
                    .with_partitions(partitions)
            })
            .collect();
        DescribeLogDirsResponse::default()
            .with_results(vec![DescribeLogDirsResult::default()
                .with_log_dir(StrBytes::from_static_str("/data"))
                .with_topics(topics)])
            .into()
    }

    /// Serves Metadata (from `metadata`, given the broker's own address), ListOffsets
    /// and DescribeLogDirs like a healthy broker.
    fn broker(
        versions: &'static [(ApiKey, i16, i16)],
        metadata: impl Fn(&str) -> ResponseKind + Send + 'static,
    ) -> FakeBroker {
        let own_addr = Arc::new(Mutex::new(String::new()));
        let addr = Arc::clone(&own_addr);
        let broker = FakeBroker::start(versions, move |request| match request {
            RequestKind::Metadata(r) => {
                assert!(
                    !r.allow_auto_topic_creation,
                    "status must not create topics"
                );
                metadata(&addr.lock().expect("lock"))
            }
            RequestKind::ListOffsets(r) => offsets_response(r),
            RequestKind::DescribeLogDirs(r) => log_dirs_response(r),
            other => panic!("unexpected {other:?}"),
        });
        *own_addr.lock().expect("lock") = broker.addr.clone();
        broker
    }

    /// (api key, version) of each request received.
    fn keys_and_versions(received: &[(i16, RequestKind)]) -> Vec<(ApiKey, i16)> {
        received
            .iter()
            .map(|(v, r)| {
                let key = match r {
                    RequestKind::Metadata(_) => ApiKey::Metadata,
                    RequestKind::ListOffsets(_) => ApiKey::ListOffsets,
                    RequestKind::DescribeLogDirs(_) => ApiKey::DescribeLogDirs,
                    other => panic!("unexpected {other:?}"),
                };
                (key, *v)
            })
            .collect()
    }

    fn single_node(addr: &str) -> ResponseKind {
        metadata(
            &[(0, addr)],
            0,
            &[
                ("orders", &[(0, &[0], &[0]), (0, &[0], &[0])]),
                ("audit", &[(0, &[0], &[0])]),
            ],
        )
    }

    #[test]
    fn status_shows_brokers_partitions_offsets_and_sizes() {
        let broker = broker(KAFKA_3_VERSIONS, single_node);
        let addr = broker.addr.clone();
        let mut client = Client::connect(&broker.addr).expect("connect");
        let text = status(&mut client, None, Output::Text).expect("status");
        drop(client);
        let received = broker.finish();
        let expected = format!(
            "\
Cluster ID: c1
BROKER  ADDRESS{pad}  CONTROLLER
0       {addr}  yes

TOPIC   PARTITION  LEADER  REPLICAS  ISR  START  END  SIZE  NOTE
audit   0          0       0         0    5      40   1000
orders  0          0       0         0    5      40   1000
orders  1          0       0         0    5      41   2000

Under-replicated partitions: 0
",
            pad = " ".repeat(addr.len() - "ADDRESS".len())
        );
        assert_eq!(text, expected);
        // The highest versions both sides support; all of the leader's partitions in
        // one request of each kind; ListOffsets twice (earliest, latest).
        assert_eq!(
            keys_and_versions(&received),
            [
                (ApiKey::Metadata, 12),
                (ApiKey::ListOffsets, 7),
                (ApiKey::ListOffsets, 7),
                (ApiKey::DescribeLogDirs, 4),
            ]
        );
        let RequestKind::DescribeLogDirs(asked) = &received[3].1 else {
            panic!("{:?}", received[3]);
        };
        let asked: Vec<(&str, &[i32])> = asked
            .topics
            .as_deref()
            .expect("named partitions")
            .iter()
            .map(|t| (t.topic.0.as_str(), &t.partitions[..]))
            .collect();
        assert_eq!(asked, [("audit", &[0][..]), ("orders", &[0, 1][..])]);
    }

    #[test]
    fn status_renders_as_json() {
        let broker = broker(KAFKA_3_VERSIONS, single_node);
        let addr = broker.addr.clone();
        let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
        let mut client = Client::connect(&broker.addr).expect("connect");
        let json = status(&mut client, Some("orders"), Output::Json).expect("status");
        drop(client);
        broker.finish();
        let partition = |p: i32, end: i32, size: i32| {
            format!(
                r#"{{"partition":{p},"leader":0,"replicas":[0],"isr":[0],"under_replicated":false,"start_offset":5,"end_offset":{end},"size_bytes":{size},"error":null}}"#
            )
        };
        let expected = format!(
            r#"{{"cluster_id":"c1","controller":0,"brokers":[{{"id":0,"host":"{host}","port":{port},"controller":true}}],"topics":[{{"name":"orders","error":null,"partitions":[{},{}]}}],"under_replicated_partitions":0,"notes":[]}}"#,
            partition(0, 40, 1000),
            partition(1, 41, 2000),
        ) + "\n";
        assert_eq!(json, expected);
    }

    #[test]
    fn a_broker_without_describe_log_dirs_shows_no_sizes_and_says_why() {
        let broker = broker(NO_LOG_DIRS_VERSIONS, single_node);
        let addr = broker.addr.clone();
        let mut client = Client::connect(&broker.addr).expect("connect");
        let text = status(&mut client, Some("orders"), Output::Text).expect("status");
        let json = status(&mut client, Some("orders"), Output::Json).expect("status");
        drop(client);
        let received = broker.finish();
        assert!(
            text.contains(
                "orders  0          0       0         0    5      40   -\n\
                 orders  1          0       0         0    5      41   -\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(&format!(
                "Under-replicated partitions: 0\nNote: the broker at {addr} does not \
                 support DescribeLogDirs v1..=v4: no sizes\n"
            )),
            "{text}"
        );
        assert!(
            json.contains(r#""size_bytes":null,"error":null}"#),
            "{json}"
        );
        assert!(
            json.contains(&format!(
                r#""notes":["the broker at {addr} does not support DescribeLogDirs v1..=v4: no sizes"]"#
            )),
            "{json}"
        );
        assert!(
            keys_and_versions(&received)
                .iter()
                .all(|(key, _)| *key != ApiKey::DescribeLogDirs),
            "DescribeLogDirs sent to a broker that does not serve it"
        );
    }

    #[test]
    fn offsets_and_sizes_come_from_each_leader_and_under_replication_is_counted() {
        let leader2 = FakeBroker::start(KAFKA_3_VERSIONS, |request| match request {
            RequestKind::ListOffsets(r) => offsets_response(r),
            RequestKind::DescribeLogDirs(r) => log_dirs_response(r),
            other => panic!("only offsets and sizes are asked of a leader: {other:?}"),
        });
        let leader2_addr = leader2.addr.clone();
        let bootstrap = broker(KAFKA_3_VERSIONS, move |own| {
            metadata(
                &[(1, own), (2, &leader2_addr)],
                2,
                &[(
                    "orders",
                    &[
                        (1, &[1, 2], &[1, 2]),
                        (2, &[2, 1], &[1, 2]),
                        (-1, &[1, 2], &[]),
                        (1, &[1, 2], &[1]),
                    ],
                )],
            )
        });
        let mut client = Client::connect(&bootstrap.addr).expect("connect");
        // One gathering (a fake broker serves one connection), rendered both ways.
        let gathered = cluster_status(&mut client, None).expect("status");
        let (text, json) = (render_text(&gathered), render_json(&gathered).to_string());
        drop(client);
        let asked = |received: Vec<(i16, RequestKind)>| -> Vec<Vec<i32>> {
            received
                .iter()
                .map(|(_, r)| match r {
                    RequestKind::ListOffsets(r) => r.topics[0]
                        .partitions
                        .iter()
                        .map(|p| p.partition_index)
                        .collect(),
                    RequestKind::DescribeLogDirs(r) => {
                        r.topics.as_deref().expect("named")[0].partitions.clone()
                    }
                    RequestKind::Metadata(_) => vec![],
                    other => panic!("unexpected {other:?}"),
                })
                .collect()
        };
        assert_eq!(
            asked(bootstrap.finish()),
            [vec![], vec![0, 3], vec![0, 3], vec![0, 3]]
        );
        assert_eq!(asked(leader2.finish()), [[1], [1], [1]]);
        let rows: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("TOPIC"))
            .collect();
        assert_eq!(
            rows,
            [
                "TOPIC   PARTITION  LEADER  REPLICAS  ISR  START  END  SIZE  NOTE",
                "orders  0          1       1,2       1,2  5      40   1000",
                "orders  1          2       2,1       1,2  5      41   2000",
                "orders  2          none    1,2            -      -    -     no leader",
                "orders  3          1       1,2       1    5      43   4000",
                "",
                "Under-replicated partitions: 2",
            ]
        );
        assert!(text.contains("\n2       127.0.0.1:"), "{text}");
        assert!(
            json.contains(r#""under_replicated_partitions":2"#),
            "{json}"
        );
        assert!(json.contains(r#"{"partition":2,"leader":-1,"replicas":[1,2],"isr":[],"under_replicated":true,"start_offset":null,"end_offset":null,"size_bytes":null,"error":"no leader"}"#), "{json}");
        assert!(
            json.contains(r#""controller":2,"brokers":[{"id":1,"#),
            "{json}"
        );
    }

    #[test]
    fn status_of_a_missing_topic_is_unknown_topic_or_partition() {
        let broker = FakeBroker::start(KAFKA_3_VERSIONS, |request| match request {
            RequestKind::Metadata(_) => MetadataResponse::default()
                .with_topics(vec![MetadataResponseTopic::default()
                    .with_name(Some(topic_name("nope")))
                    .with_error_code(ERROR_UNKNOWN_TOPIC_OR_PARTITION)])
                .into(),
            other => panic!("unexpected {other:?}"),
        });
        let mut client = Client::connect(&broker.addr).expect("connect");
        let err = status(&mut client, Some("nope"), Output::Text).expect_err("no such topic");
        assert_eq!(
            format!("{err:#}"),
            "cluster status of topic nope: UNKNOWN_TOPIC_OR_PARTITION"
        );
        drop(client);
        broker.finish();
    }

    #[test]
    fn sizes_skip_future_logs_and_name_failed_log_dirs() {
        let asked = partitions(&[("t", &[0, 1, 2])]);
        let part = |p: i32, size: i64, future: bool| {
            DescribeLogDirsPartition::default()
                .with_partition_index(p)
                .with_partition_size(size)
                .with_is_future_key(future)
        };
        let response = DescribeLogDirsResponse::default().with_results(vec![
            DescribeLogDirsResult::default()
                .with_log_dir(StrBytes::from_static_str("/a"))
                .with_topics(vec![DescribeLogDirsTopic::default()
                    .with_name(topic_name("t"))
                    .with_partitions(vec![part(0, 7, true), part(1, 9, false)])]),
            DescribeLogDirsResult::default()
                .with_log_dir(StrBytes::from_static_str("/b"))
                .with_error_code(56)
                .with_topics(vec![DescribeLogDirsTopic::default()
                    .with_name(topic_name("t"))
                    .with_partitions(vec![part(0, 5, false), part(8, 1, false)])]),
        ]);
        let sizes = sizes_from_response(&asked, &response);
        let expected: BTreeMap<PartitionKey, PartitionSize> = [
            (("t".to_owned(), 0), PartitionSize::Bytes(5)),
            (("t".to_owned(), 1), PartitionSize::Bytes(9)),
            (
                ("t".to_owned(), 2),
                PartitionSize::Unavailable("log dir /b: KAFKA_STORAGE_ERROR".to_owned()),
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(sizes, expected);
        let empty = sizes_from_response(&asked, &DescribeLogDirsResponse::default());
        assert!(empty
            .values()
            .all(|s| *s == PartitionSize::Unavailable("no size reported".to_owned())));
    }

    #[test]
    fn a_refused_describe_log_dirs_is_a_note_not_a_failure() {
        let own_addr = Arc::new(Mutex::new(String::new()));
        let addr = Arc::clone(&own_addr);
        let broker = FakeBroker::start(KAFKA_3_VERSIONS, move |request| match request {
            RequestKind::Metadata(_) => single_node(&addr.lock().expect("lock")),
            RequestKind::ListOffsets(r) => offsets_response(r),
            // CLUSTER_AUTHORIZATION_FAILED, as Kafka answers without DESCRIBE on CLUSTER.
            RequestKind::DescribeLogDirs(_) => DescribeLogDirsResponse::default()
                .with_error_code(31)
                .into(),
            other => panic!("unexpected {other:?}"),
        });
        *own_addr.lock().expect("lock") = broker.addr.clone();
        let mut client = Client::connect(&broker.addr).expect("connect");
        let text = status(&mut client, Some("audit"), Output::Text).expect("status");
        drop(client);
        let addr = broker.addr.clone();
        broker.finish();
        assert!(
            text.contains(&format!(
                "audit  0          0       0         0    5      40   -     \
                 size: describe log dirs of {addr}: CLUSTER_AUTHORIZATION_FAILED\n"
            )),
            "{text}"
        );
    }

    #[test]
    fn under_replication_compares_sets() {
        let p = |replicas: &[i32], isr: &[i32]| PartitionInfo {
            id: 0,
            leader: 1,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            error_code: 0,
        };
        assert!(!is_under_replicated(&p(&[1], &[1])));
        assert!(!is_under_replicated(&p(&[1, 2, 3], &[3, 1, 2])));
        assert!(is_under_replicated(&p(&[1, 2, 3], &[1, 2])));
        assert!(is_under_replicated(&p(&[1], &[])));
    }

    #[test]
    fn requests_round_trip_at_every_version_used() {
        let asked = partitions(&[("a", &[0, 2]), ("ü", &[1])]);
        for version in 1..=7 {
            for timestamp in [TIMESTAMP_EARLIEST, TIMESTAMP_LATEST] {
                let request = list_offsets_request(&asked, timestamp);
                let frame =
                    encode_request(ApiKey::ListOffsets, version, 3, &request).expect("encode");
                let (_, decoded) = decode_request::<ListOffsetsRequest>(&frame);
                assert_eq!(decoded, request, "ListOffsets v{version}");
                assert_eq!(decoded.replica_id, BrokerId(-1));
            }
        }
        for version in LOG_DIRS_VERSIONS.0..=LOG_DIRS_VERSIONS.1 {
            let request = describe_log_dirs_request(&asked);
            let frame =
                encode_request(ApiKey::DescribeLogDirs, version, 4, &request).expect("encode");
            let (_, decoded) = decode_request::<DescribeLogDirsRequest>(&frame);
            assert_eq!(decoded, request, "DescribeLogDirs v{version}");
        }
        let lib = ApiKey::DescribeLogDirs.valid_versions();
        assert!(lib.min <= LOG_DIRS_VERSIONS.0 && LOG_DIRS_VERSIONS.1 <= lib.max);
    }

    #[test]
    fn command_line_parses_and_run_dispatches() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("strand").chain(args.iter().copied()))
        };
        let cli =
            parse(&["cluster", "status", "--topic", "t", "--output", "table"]).expect("valid");
        let Command::Cluster(ClusterCommand::Status(args)) = &cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(args.topic.as_deref(), Some("t"));
        assert_eq!(args.output, Output::Text);
        assert!(parse(&["cluster", "status", "--output", "yaml"]).is_err());
        assert!(parse(&["cluster"]).is_err());

        let broker = broker(KAFKA_3_VERSIONS, single_node);
        let cli = parse(&[
            "--bootstrap",
            &broker.addr,
            "cluster",
            "status",
            "--output",
            "json",
        ])
        .expect("valid");
        let json = crate::run(&cli).expect("status");
        broker.finish();
        assert!(json.starts_with(r#"{"cluster_id":"c1","#), "{json}");
        assert!(
            json.contains(r#""under_replicated_partitions":0"#),
            "{json}"
        );
    }
}
