//! `strand topic ...`. Each command is a version-aware request builder (a plain function,
//! unit-tested by encoding and decoding), one or more calls through `Client`, and a
//! renderer over plain structs.

use std::collections::{BTreeMap, HashMap};

use anyhow::{anyhow, bail, Context, Result};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    alter_configs_request, create_partitions_request, incremental_alter_configs_request,
    AlterConfigsRequest, ApiKey, BrokerId, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteTopicsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest,
    ListOffsetsRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::cli::{check_unique_keys, AlterArgs, ConfigPair, CreateArgs, Output};
use crate::client::{Client, OPERATION_TIMEOUT_MS};
use crate::errors::{check, error_name};
use crate::render::{id_list, leader_cell, optional_cell, table, Json};

/// `resource_type` of a topic in DescribeConfigs / AlterConfigs (KIP-133).
const RESOURCE_TYPE_TOPIC: i8 = 2;
/// `config_source` of a config set on the topic itself (KIP-226).
const CONFIG_SOURCE_DYNAMIC_TOPIC: i8 = 1;
/// `config_operation` SET of IncrementalAlterConfigs (KIP-339).
const CONFIG_OPERATION_SET: i8 = 0;
/// ListOffsets special timestamps: the log start and the high watermark.
pub(crate) const TIMESTAMP_EARLIEST: i64 = -2;
pub(crate) const TIMESTAMP_LATEST: i64 = -1;
/// The replica id of an ordinary client in ListOffsets.
const REPLICA_ID_CONSUMER: i32 = -1;
/// READ_UNCOMMITTED: the latest offset is the high watermark.
const ISOLATION_READ_UNCOMMITTED: i8 = 0;
const ERROR_UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// The configs `describe` always shows, even when they hold the broker's default.
pub const KEY_CONFIGS: [&str; 3] = ["retention.ms", "retention.bytes", "max.message.bytes"];

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

// ---------------------------------------------------------------------------------------
// Request builders: plain functions of the arguments and the negotiated version.
// ---------------------------------------------------------------------------------------

pub fn metadata_request(topics: Option<&[&str]>, version: i16) -> MetadataRequest {
    let topics = topics.map(|names| {
        names
            .iter()
            .map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n))))
            .collect()
    });
    let request = MetadataRequest::default().with_topics(topics);
    // Looking at a topic must never create it; before v4 the field does not exist.
    if version >= 4 {
        request.with_allow_auto_topic_creation(false)
    } else {
        request
    }
}

pub fn create_topics_request(args: &CreateArgs) -> CreateTopicsRequest {
    let configs = args
        .configs
        .iter()
        .map(|c| {
            CreatableTopicConfig::default()
                .with_name(str_bytes(&c.key))
                .with_value(Some(str_bytes(&c.value)))
        })
        .collect();
    let topic = CreatableTopic::default()
        .with_name(topic_name(&args.name))
        .with_num_partitions(args.partitions)
        .with_replication_factor(args.replication_factor)
        .with_configs(configs);
    CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(OPERATION_TIMEOUT_MS)
}

pub fn delete_topics_request(name: &str, version: i16) -> DeleteTopicsRequest {
    let request = DeleteTopicsRequest::default().with_timeout_ms(OPERATION_TIMEOUT_MS);
    // v6 (KIP-516) names topics in `topics`, which may carry an id instead of a name.
    if version >= 6 {
        request.with_topics(vec![
            DeleteTopicState::default().with_name(Some(topic_name(name)))
        ])
    } else {
        request.with_topic_names(vec![topic_name(name)])
    }
}

pub fn describe_configs_request(name: &str) -> DescribeConfigsRequest {
    let resource = DescribeConfigsResource::default()
        .with_resource_type(RESOURCE_TYPE_TOPIC)
        .with_resource_name(str_bytes(name))
        .with_configuration_keys(None); // null: every config
    DescribeConfigsRequest::default().with_resources(vec![resource])
}

pub fn incremental_alter_configs_request(
    name: &str,
    changes: &[ConfigPair],
) -> IncrementalAlterConfigsRequest {
    use incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let configs = changes
        .iter()
        .map(|c| {
            AlterableConfig::default()
                .with_name(str_bytes(&c.key))
                .with_config_operation(CONFIG_OPERATION_SET)
                .with_value(Some(str_bytes(&c.value)))
        })
        .collect();
    let resource = AlterConfigsResource::default()
        .with_resource_type(RESOURCE_TYPE_TOPIC)
        .with_resource_name(str_bytes(name))
        .with_configs(configs);
    IncrementalAlterConfigsRequest::default().with_resources(vec![resource])
}

/// AlterConfigs replaces the topic's whole set of overrides with `full_set`.
pub fn alter_configs_request(name: &str, full_set: &[ConfigPair]) -> AlterConfigsRequest {
    use alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let configs = full_set
        .iter()
        .map(|c| {
            AlterableConfig::default()
                .with_name(str_bytes(&c.key))
                .with_value(Some(str_bytes(&c.value)))
        })
        .collect();
    let resource = AlterConfigsResource::default()
        .with_resource_type(RESOURCE_TYPE_TOPIC)
        .with_resource_name(str_bytes(name))
        .with_configs(configs);
    AlterConfigsRequest::default().with_resources(vec![resource])
}

pub fn create_partitions_request(name: &str, count: i32) -> CreatePartitionsRequest {
    let topic = create_partitions_request::CreatePartitionsTopic::default()
        .with_name(topic_name(name))
        .with_count(count)
        .with_assignments(None); // null: the broker places the new partitions
    CreatePartitionsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(OPERATION_TIMEOUT_MS)
}

pub fn list_offsets_request(name: &str, partitions: &[i32], timestamp: i64) -> ListOffsetsRequest {
    let partitions = partitions
        .iter()
        .map(|&p| {
            ListOffsetsPartition::default()
                .with_partition_index(p)
                .with_timestamp(timestamp)
        })
        .collect();
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(REPLICA_ID_CONSUMER))
        .with_isolation_level(ISOLATION_READ_UNCOMMITTED)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(name))
            .with_partitions(partitions)])
}

// ---------------------------------------------------------------------------------------
// The cluster as the commands see it.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
}

impl BrokerInfo {
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub id: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error_code: i16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    /// Kafka's text form of the topic id (base64url), when the broker sent one.
    pub id: Option<String>,
    pub internal: bool,
    pub error_code: i16,
    /// Sorted by partition id.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    pub fn replication_factor(&self) -> Option<usize> {
        self.partitions.first().map(|p| p.replicas.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    pub brokers: Vec<BrokerInfo>,
    /// Sorted by name.
    pub topics: Vec<TopicInfo>,
}

impl ClusterMetadata {
    pub fn from_response(response: MetadataResponse) -> Self {
        let brokers = response
            .brokers
            .into_iter()
            .map(|b| BrokerInfo {
                id: b.node_id.0,
                host: b.host.to_string(),
                port: b.port,
            })
            .collect();
        let mut topics: Vec<TopicInfo> = response
            .topics
            .into_iter()
            .map(|t| {
                let mut partitions: Vec<PartitionInfo> = t
                    .partitions
                    .into_iter()
                    .map(|p| PartitionInfo {
                        id: p.partition_index,
                        leader: p.leader_id.0,
                        replicas: p.replica_nodes.into_iter().map(|b| b.0).collect(),
                        isr: p.isr_nodes.into_iter().map(|b| b.0).collect(),
                        error_code: p.error_code,
                    })
                    .collect();
                partitions.sort_by_key(|p| p.id);
                TopicInfo {
                    name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                    id: (!t.topic_id.is_nil()).then(|| kafka_uuid(t.topic_id.as_bytes())),
                    internal: t.is_internal,
                    error_code: t.error_code,
                    partitions,
                }
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Self { brokers, topics }
    }

    fn broker(&self, id: i32) -> Option<&BrokerInfo> {
        self.brokers.iter().find(|b| b.id == id)
    }
}

/// Kafka prints a `Uuid` as URL-safe base64 without padding (`Uuid.toString()`).
fn kafka_uuid(bytes: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let mut group = [0u8; 3];
        group[..chunk.len()].copy_from_slice(chunk);
        let bits = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
        for i in 0..=chunk.len() {
            let index = (bits >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

fn fetch_metadata(client: &mut Client, topics: Option<&[&str]>) -> Result<ClusterMetadata> {
    let version = client.version(ApiKey::Metadata)?;
    let response = client.send(&metadata_request(topics, version), version)?;
    Ok(ClusterMetadata::from_response(response))
}

// ---------------------------------------------------------------------------------------
// create / delete / list
// ---------------------------------------------------------------------------------------

pub fn create(client: &mut Client, args: &CreateArgs) -> Result<String> {
    check_unique_keys(&args.configs)?;
    let version = client.version(ApiKey::CreateTopics)?;
    let response = client.send(&create_topics_request(args), version)?;
    let result = response
        .topics
        .iter()
        .find(|t| t.name.as_str() == args.name)
        .ok_or_else(|| anyhow!("the broker did not answer for topic {}", args.name))?;
    check(result.error_code, result.error_message.as_deref(), || {
        format!("create topic {}", args.name)
    })?;
    // From v5 the broker says how many partitions it made (the request may ask for -1).
    let partitions = if result.num_partitions > 0 {
        result.num_partitions
    } else {
        args.partitions
    };
    Ok(format!(
        "created topic {} ({partitions} {})\n",
        args.name,
        plural(partitions, "partition")
    ))
}

pub fn delete(client: &mut Client, name: &str) -> Result<String> {
    let version = client.version(ApiKey::DeleteTopics)?;
    let response = client.send(&delete_topics_request(name, version), version)?;
    let result = response
        .responses
        .iter()
        .find(|r| r.name.as_ref().is_some_and(|n| n.as_str() == name))
        .ok_or_else(|| anyhow!("the broker did not answer for topic {name}"))?;
    check(result.error_code, result.error_message.as_deref(), || {
        format!("delete topic {name}")
    })?;
    Ok(format!("deleted topic {name}\n"))
}

/// Every topic; internal ones (the broker marks them) only with `internal`.
pub fn list(client: &mut Client, output: Output, internal: bool) -> Result<String> {
    let mut metadata = fetch_metadata(client, None)?;
    if !internal {
        metadata.topics.retain(|t| !t.internal);
    }
    Ok(match output {
        Output::Text => render_list_text(&metadata.topics),
        Output::Json => format!("{}\n", render_list_json(&metadata.topics)),
    })
}

pub fn render_list_text(topics: &[TopicInfo]) -> String {
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|t| vec![t.name.clone(), t.partitions.len().to_string()])
        .collect();
    table(&["NAME", "PARTITIONS"], &rows)
}

pub fn render_list_json(topics: &[TopicInfo]) -> Json {
    let topics = topics
        .iter()
        .map(|t| {
            Json::object([
                ("name", Json::str(&t.name)),
                ("partitions", Json::Int(t.partitions.len() as i64)),
                ("internal", Json::Bool(t.internal)),
            ])
        })
        .collect();
    Json::object([("topics", Json::Array(topics))])
}

fn plural(n: i32, word: &str) -> String {
    if n == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

// ---------------------------------------------------------------------------------------
// describe
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    /// `None` for a sensitive config, whose value the broker does not reveal.
    pub value: Option<String>,
    pub source: i8,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The log start offset.
    pub start: Option<i64>,
    /// The high watermark.
    pub end: Option<i64>,
    /// Why an offset is missing.
    pub error: Option<String>,
}

impl PartitionOffsets {
    fn unavailable(why: impl Into<String>) -> Self {
        Self {
            error: Some(why.into()),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub topic: TopicInfo,
    /// The configs, or why they could not be read.
    pub configs: Result<Vec<ConfigEntry>, String>,
    pub offsets: BTreeMap<i32, PartitionOffsets>,
}

pub fn describe(client: &mut Client, name: &str, output: Output) -> Result<String> {
    let description = describe_topic(client, name)?;
    Ok(match output {
        Output::Text => render_describe_text(&description),
        Output::Json => format!("{}\n", render_describe_json(&description)),
    })
}

fn describe_topic(client: &mut Client, name: &str) -> Result<TopicDescription> {
    let metadata = fetch_metadata(client, Some(&[name]))?;
    let topic = metadata
        .topics
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| unknown_topic(name))?
        .clone();
    // A topic still being created may report LEADER_NOT_AVAILABLE with its partitions;
    // only refuse when there is nothing to show.
    if topic.error_code == ERROR_UNKNOWN_TOPIC_OR_PARTITION || topic.partitions.is_empty() {
        check(topic.error_code, None, || format!("describe topic {name}"))?;
    }
    // The broker may not implement these yet (Strand grows its API one call at a time),
    // so each is shown as unavailable rather than failing the whole describe.
    let configs = describe_configs(client, name).map_err(|err| format!("{err:#}"));
    let offsets = fetch_offsets(client, &metadata, &topic);
    Ok(TopicDescription {
        topic,
        configs,
        offsets,
    })
}

fn unknown_topic(name: &str) -> anyhow::Error {
    crate::errors::BrokerError {
        operation: format!("describe topic {name}"),
        code: ERROR_UNKNOWN_TOPIC_OR_PARTITION,
        message: None,
    }
    .into()
}

fn describe_configs(client: &mut Client, name: &str) -> Result<Vec<ConfigEntry>> {
    let version = client.version(ApiKey::DescribeConfigs)?;
    let response = client.send(&describe_configs_request(name), version)?;
    let result = response
        .results
        .into_iter()
        .find(|r| r.resource_type == RESOURCE_TYPE_TOPIC && r.resource_name.as_str() == name)
        .ok_or_else(|| anyhow!("the broker did not answer for topic {name}"))?;
    check(result.error_code, result.error_message.as_deref(), || {
        format!("describe configs of topic {name}")
    })?;
    Ok(result
        .configs
        .into_iter()
        .map(|c| ConfigEntry {
            name: c.name.to_string(),
            value: if c.is_sensitive {
                None
            } else {
                c.value.map(|v| v.to_string())
            },
            source: c.config_source,
        })
        .collect())
}

/// Asks each partition's leader for its log start offset and high watermark.
fn fetch_offsets(
    client: &mut Client,
    metadata: &ClusterMetadata,
    topic: &TopicInfo,
) -> BTreeMap<i32, PartitionOffsets> {
    let mut offsets = BTreeMap::new();
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for partition in &topic.partitions {
        if partition.leader < 0 {
            offsets.insert(partition.id, PartitionOffsets::unavailable("no leader"));
        } else {
            by_leader
                .entry(partition.leader)
                .or_default()
                .push(partition.id);
        }
    }
    // With one broker, the bootstrap connection is the leader, whatever address it
    // advertises (containers often advertise one the client cannot reach).
    let single_broker = metadata.brokers.len() <= 1;
    for (leader, partitions) in by_leader {
        let outcome = match metadata.broker(leader) {
            _ if single_broker => list_offsets(client, &topic.name, &partitions),
            Some(broker) if broker.address() == client.addr() => {
                list_offsets(client, &topic.name, &partitions)
            }
            Some(broker) => Client::connect(&broker.address())
                .and_then(|mut leader| list_offsets(&mut leader, &topic.name, &partitions)),
            None => Err(anyhow!("leader {leader} is not in the broker list")),
        };
        match outcome {
            Ok(found) => offsets.extend(found),
            Err(err) => {
                let why = format!("{err:#}");
                for p in partitions {
                    offsets.insert(p, PartitionOffsets::unavailable(why.clone()));
                }
            }
        }
    }
    offsets
}

fn list_offsets(
    client: &mut Client,
    name: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, PartitionOffsets>> {
    let version = client.version(ApiKey::ListOffsets)?;
    // One request per timestamp: Kafka refuses a partition listed twice in one request.
    let earliest = query_offsets(client, name, partitions, TIMESTAMP_EARLIEST, version)?;
    let latest = query_offsets(client, name, partitions, TIMESTAMP_LATEST, version)?;
    Ok(partitions
        .iter()
        .map(|p| (*p, combine_offsets(earliest.get(p), latest.get(p))))
        .collect())
}

/// partition → offset, or the partition's error code.
type OffsetAnswers = HashMap<i32, Result<i64, i16>>;

fn query_offsets(
    client: &mut Client,
    name: &str,
    partitions: &[i32],
    timestamp: i64,
    version: i16,
) -> Result<OffsetAnswers> {
    let response = client.send(&list_offsets_request(name, partitions, timestamp), version)?;
    Ok(response
        .topics
        .into_iter()
        .filter(|t| t.name.as_str() == name)
        .flat_map(|t| t.partitions)
        .map(|p| {
            let answer = if p.error_code == 0 {
                Ok(p.offset)
            } else {
                Err(p.error_code)
            };
            (p.partition_index, answer)
        })
        .collect())
}

/// One partition's start and end offsets from the two ListOffsets answers, with the
/// errors named.
pub(crate) fn combine_offsets(
    earliest: Option<&Result<i64, i16>>,
    latest: Option<&Result<i64, i16>>,
) -> PartitionOffsets {
    let mut errors = Vec::new();
    let mut pick = |answer: Option<&Result<i64, i16>>| match answer {
        Some(Ok(offset)) => Some(*offset),
        Some(Err(code)) => {
            errors.push(error_name(*code));
            None
        }
        None => {
            errors.push("no answer".to_owned());
            None
        }
    };
    let start = pick(earliest);
    let end = pick(latest);
    errors.dedup();
    PartitionOffsets {
        start,
        end,
        error: (!errors.is_empty()).then(|| errors.join(", ")),
    }
}

/// The configs worth showing: the key ones always, then every topic override.
pub fn shown_configs(configs: &[ConfigEntry]) -> Vec<&ConfigEntry> {
    let key = KEY_CONFIGS
        .iter()
        .filter_map(|name| configs.iter().find(|c| c.name == *name));
    let mut overrides: Vec<&ConfigEntry> = configs
        .iter()
        .filter(|c| c.source == CONFIG_SOURCE_DYNAMIC_TOPIC && !KEY_CONFIGS.contains(&&*c.name))
        .collect();
    overrides.sort_by(|a, b| a.name.cmp(&b.name));
    key.chain(overrides).collect()
}

/// Kafka's name of a `config_source` (DescribeConfigsResponse, KIP-226).
pub fn config_source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

fn partition_note(partition: &PartitionInfo, offsets: Option<&PartitionOffsets>) -> String {
    let mut notes = Vec::new();
    if partition.error_code != 0 {
        notes.push(error_name(partition.error_code));
    }
    match offsets {
        Some(PartitionOffsets {
            error: Some(error), ..
        }) => notes.push(error.clone()),
        Some(_) => {}
        None => notes.push("offsets not fetched".to_owned()),
    }
    notes.join("; ")
}

pub fn render_describe_text(d: &TopicDescription) -> String {
    let t = &d.topic;
    let mut out = format!("Topic: {}\n", t.name);
    if let Some(id) = &t.id {
        out += &format!("Topic ID: {id}\n");
    }
    if t.internal {
        out += "Internal: yes\n";
    }
    if t.error_code != 0 {
        out += &format!("Status: {}\n", error_name(t.error_code));
    }
    out += &format!("Partitions: {}\n", t.partitions.len());
    if let Some(rf) = t.replication_factor() {
        out += &format!("Replication factor: {rf}\n");
    }
    match &d.configs {
        Ok(configs) => {
            out += "Configs:\n";
            for c in shown_configs(configs) {
                let value = c.value.as_deref().unwrap_or("(sensitive)");
                out += &format!("  {}={value} ({})\n", c.name, config_source_name(c.source));
            }
        }
        Err(why) => out += &format!("Configs: unavailable ({why})\n"),
    }
    let rows: Vec<Vec<String>> = t
        .partitions
        .iter()
        .map(|p| {
            let offsets = d.offsets.get(&p.id);
            vec![
                p.id.to_string(),
                leader_cell(p.leader),
                id_list(&p.replicas),
                id_list(&p.isr),
                optional_cell(offsets.and_then(|o| o.start)),
                optional_cell(offsets.and_then(|o| o.end)),
                partition_note(p, offsets),
            ]
        })
        .collect();
    out += "\n";
    out += &table(
        &[
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "ISR",
            "START",
            "END",
            "NOTE",
        ],
        &rows,
    );
    out
}

pub fn render_describe_json(d: &TopicDescription) -> Json {
    let t = &d.topic;
    let partitions = t
        .partitions
        .iter()
        .map(|p| {
            let offsets = d.offsets.get(&p.id);
            let note = partition_note(p, offsets);
            Json::object([
                ("partition", Json::Int(p.id.into())),
                ("leader", Json::Int(p.leader.into())),
                ("replicas", Json::ints(&p.replicas)),
                ("isr", Json::ints(&p.isr)),
                ("start_offset", Json::opt_int(offsets.and_then(|o| o.start))),
                ("end_offset", Json::opt_int(offsets.and_then(|o| o.end))),
                ("error", Json::opt_str((!note.is_empty()).then_some(&*note))),
            ])
        })
        .collect();
    let (configs, configs_error) = match &d.configs {
        Ok(configs) => {
            let fields = shown_configs(configs).into_iter().map(|c| {
                let entry = Json::object([
                    ("value", Json::opt_str(c.value.as_deref())),
                    ("source", Json::str(config_source_name(c.source))),
                ]);
                (c.name.clone(), entry)
            });
            (Json::object(fields), Json::Null)
        }
        Err(why) => (Json::Null, Json::str(why)),
    };
    Json::object([
        ("name", Json::str(&t.name)),
        ("topic_id", Json::opt_str(t.id.as_deref())),
        ("internal", Json::Bool(t.internal)),
        (
            "error",
            Json::opt_str(
                (t.error_code != 0)
                    .then(|| error_name(t.error_code))
                    .as_deref(),
            ),
        ),
        ("partitions", Json::Array(partitions)),
        ("configs", configs),
        ("configs_error", configs_error),
    ])
}

// ---------------------------------------------------------------------------------------
// alter
// ---------------------------------------------------------------------------------------

pub fn alter(client: &mut Client, args: &AlterArgs) -> Result<String> {
    let name = &args.name;
    let changes = args.config_changes()?;
    let mut out = String::new();
    if !changes.is_empty() {
        alter_configs(client, name, &changes)?;
        let summary: Vec<String> = changes
            .iter()
            .map(|c| format!("{}={}", c.key, c.value))
            .collect();
        out += &format!("altered topic {name}: {}\n", summary.join(", "));
    }
    if let Some(count) = args.partitions {
        let grown = create_partitions(client, name, count);
        if let Err(err) = grown {
            if out.is_empty() {
                return Err(err);
            }
            // The configs did change: say so, or a retry would look like it was needed.
            return Err(err.context(format!("{}, but then", out.trim_end())));
        }
        out += &format!(
            "topic {name} now has {count} {}\n",
            plural(count, "partition")
        );
    }
    Ok(out)
}

fn alter_configs(client: &mut Client, name: &str, changes: &[ConfigPair]) -> Result<()> {
    let operation = || format!("alter configs of topic {name}");
    if let Ok(version) = client.version(ApiKey::IncrementalAlterConfigs) {
        let response = client.send(&incremental_alter_configs_request(name, changes), version)?;
        let result = response
            .responses
            .iter()
            .find(|r| r.resource_name.as_str() == name)
            .ok_or_else(|| anyhow!("the broker did not answer for topic {name}"))?;
        check(
            result.error_code,
            result.error_message.as_deref(),
            operation,
        )?;
        return Ok(());
    }
    let version = client
        .version(ApiKey::AlterConfigs)
        .context("the broker supports neither IncrementalAlterConfigs nor AlterConfigs")?;
    // AlterConfigs replaces every override of the topic: read them first and keep them.
    let current = describe_configs(client, name)
        .context("AlterConfigs replaces all of a topic's configs, so they must be read first")?;
    let full_set = merge_overrides(&current, changes)?;
    let response = client.send(&alter_configs_request(name, &full_set), version)?;
    let result = response
        .responses
        .iter()
        .find(|r| r.resource_name.as_str() == name)
        .ok_or_else(|| anyhow!("the broker did not answer for topic {name}"))?;
    check(
        result.error_code,
        result.error_message.as_deref(),
        operation,
    )?;
    Ok(())
}

/// The topic's current overrides with `changes` applied: what AlterConfigs must be sent.
pub fn merge_overrides(current: &[ConfigEntry], changes: &[ConfigPair]) -> Result<Vec<ConfigPair>> {
    let mut merged: BTreeMap<&str, &str> = BTreeMap::new();
    for entry in current
        .iter()
        .filter(|c| c.source == CONFIG_SOURCE_DYNAMIC_TOPIC)
    {
        let Some(value) = entry.value.as_deref() else {
            // Sending it back without its value would erase it.
            bail!(
                "topic override `{}` is sensitive and cannot be carried over by AlterConfigs",
                entry.name
            );
        };
        merged.insert(&entry.name, value);
    }
    for change in changes {
        merged.insert(&change.key, &change.value);
    }
    Ok(merged
        .into_iter()
        .map(|(k, v)| ConfigPair::new(k, v))
        .collect())
}

fn create_partitions(client: &mut Client, name: &str, count: i32) -> Result<()> {
    let version = client.version(ApiKey::CreatePartitions)?;
    let response = client.send(&create_partitions_request(name, count), version)?;
    let result = response
        .results
        .iter()
        .find(|r| r.name.as_str() == name)
        .ok_or_else(|| anyhow!("the broker did not answer for topic {name}"))?;
    check(result.error_code, result.error_message.as_deref(), || {
        format!("grow topic {name} to {count} partitions")
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{client_versions, decode_request, encode_request};
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, Request};
    use std::fmt::Debug;

    /// Encodes `build(version)` as a full frame at every version this client may use and
    /// decodes it back with kafka-protocol's broker-side decoder (the wire a broker sees).
    fn round_trip_all_versions<R>(build: impl Fn(i16) -> R)
    where
        R: Request + Encodable + Decodable + PartialEq + Debug,
    {
        let key = ApiKey::try_from(R::KEY).expect("known key");
        let (min, max) = client_versions(key).expect("the client uses this API");
        for version in min..=max {
            let request = build(version);
            let frame = encode_request(key, version, 9, &request)
                .unwrap_or_else(|e| panic!("{key:?} v{version}: {e:#}"));
            let (header, decoded) = decode_request::<R>(&frame);
            assert_eq!(header.request_api_key, R::KEY);
            assert_eq!(header.request_api_version, version);
            assert_eq!(header.correlation_id, 9);
            assert_eq!(decoded, request, "{key:?} v{version}");
        }
    }

    fn create_args() -> CreateArgs {
        CreateArgs {
            name: "orders".into(),
            partitions: 3,
            replication_factor: 1,
            configs: vec![
                ConfigPair::new("retention.ms", "60000"),
                ConfigPair::new("max.message.bytes", "1048576"),
            ],
        }
    }

    #[test]
    fn every_request_encodes_and_decodes_at_every_client_version() {
        round_trip_all_versions(|v| metadata_request(None, v));
        round_trip_all_versions(|v| metadata_request(Some(&["orders", "ü"]), v));
        round_trip_all_versions(|_| create_topics_request(&create_args()));
        round_trip_all_versions(|v| delete_topics_request("orders", v));
        round_trip_all_versions(|_| describe_configs_request("orders"));
        let changes = [
            ConfigPair::new("retention.ms", "-1"),
            ConfigPair::new("retention.bytes", "1024"),
        ];
        round_trip_all_versions(|_| incremental_alter_configs_request("orders", &changes));
        round_trip_all_versions(|_| alter_configs_request("orders", &changes));
        round_trip_all_versions(|_| create_partitions_request("orders", 6));
        round_trip_all_versions(|_| list_offsets_request("orders", &[0, 1, 2], TIMESTAMP_EARLIEST));
        round_trip_all_versions(|_| list_offsets_request("orders", &[0], TIMESTAMP_LATEST));
    }

    #[test]
    fn requests_carry_the_fields_a_broker_reads() {
        let (_, create) = decode_request::<CreateTopicsRequest>(
            &encode_request(
                ApiKey::CreateTopics,
                7,
                1,
                &create_topics_request(&create_args()),
            )
            .expect("encode"),
        );
        let topic = &create.topics[0];
        assert_eq!(topic.name.as_str(), "orders");
        assert_eq!(topic.num_partitions, 3);
        assert_eq!(topic.configs[0].name.as_str(), "retention.ms");
        assert_eq!(topic.configs[0].value.as_deref(), Some("60000"));

        let v5 = delete_topics_request("t", 5);
        assert_eq!(v5.topic_names, vec![topic_name("t")]);
        let v6 = delete_topics_request("t", 6);
        assert_eq!(v6.topics[0].name, Some(topic_name("t")));

        // Describing must not auto-create the topic (field exists from v4).
        assert!(!metadata_request(Some(&["t"]), 4).allow_auto_topic_creation);
        assert!(
            metadata_request(None, 1).topics.is_none(),
            "null topics: all topics"
        );

        let offsets = list_offsets_request("t", &[0], TIMESTAMP_EARLIEST);
        assert_eq!(offsets.replica_id, BrokerId(-1));
        assert_eq!(offsets.topics[0].partitions[0].timestamp, -2);

        assert!(create_partitions_request("t", 4).topics[0]
            .assignments
            .is_none());
        assert!(describe_configs_request("t").resources[0]
            .configuration_keys
            .is_none());
    }

    fn sample_metadata() -> MetadataResponse {
        let partition = |id: i32, leader: i32| {
            MetadataResponsePartition::default()
                .with_partition_index(id)
                .with_leader_id(BrokerId(leader))
                .with_replica_nodes(vec![BrokerId(1), BrokerId(2)])
                .with_isr_nodes(vec![BrokerId(1)])
        };
        MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(1))
                .with_host(StrBytes::from_static_str("::1"))
                .with_port(9092)])
            .with_topics(vec![
                MetadataResponseTopic::default()
                    .with_name(Some(topic_name("zeta")))
                    .with_partitions(vec![partition(1, 2), partition(0, 1)]),
                MetadataResponseTopic::default()
                    .with_name(Some(topic_name("alpha")))
                    .with_is_internal(true),
            ])
    }

    #[test]
    fn metadata_is_sorted_and_flattened() {
        let metadata = ClusterMetadata::from_response(sample_metadata());
        assert_eq!(metadata.brokers[0].address(), "[::1]:9092");
        let names: Vec<&str> = metadata.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["alpha", "zeta"]);
        let zeta = &metadata.topics[1];
        assert_eq!(zeta.partitions[0].id, 0);
        assert_eq!(zeta.partitions[1].leader, 2);
        assert_eq!(zeta.replication_factor(), Some(2));
        assert_eq!(zeta.id, None, "nil topic id is not shown");
    }

    #[test]
    fn list_renders_as_table_and_json() {
        let metadata = ClusterMetadata::from_response(sample_metadata());
        assert_eq!(
            render_list_text(&metadata.topics),
            "NAME   PARTITIONS\nalpha  0\nzeta   2\n"
        );
        assert_eq!(
            render_list_json(&metadata.topics).to_string(),
            r#"{"topics":[{"name":"alpha","partitions":0,"internal":true},{"name":"zeta","partitions":2,"internal":false}]}"#
        );
    }

    fn entry(name: &str, value: Option<&str>, source: i8) -> ConfigEntry {
        ConfigEntry {
            name: name.into(),
            value: value.map(Into::into),
            source,
        }
    }

    fn sample_description() -> TopicDescription {
        let metadata = ClusterMetadata::from_response(sample_metadata());
        let topic = metadata.topics[1].clone();
        let configs = vec![
            entry("segment.bytes", Some("1024"), 5),
            entry("retention.ms", Some("60000"), 1),
            entry("cleanup.policy", Some("delete"), 1),
            entry("retention.bytes", Some("-1"), 5),
        ];
        let mut offsets = BTreeMap::new();
        offsets.insert(
            0,
            PartitionOffsets {
                start: Some(0),
                end: Some(42),
                error: None,
            },
        );
        offsets.insert(1, PartitionOffsets::unavailable("NOT_LEADER_OR_FOLLOWER"));
        TopicDescription {
            topic,
            configs: Ok(configs),
            offsets,
        }
    }

    #[test]
    fn describe_shows_key_configs_then_overrides() {
        let d = sample_description();
        let Ok(configs) = &d.configs else {
            panic!("sample has configs")
        };
        let shown: Vec<&str> = shown_configs(configs)
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        // max.message.bytes is absent from the answer, segment.bytes is a default.
        assert_eq!(shown, ["retention.ms", "retention.bytes", "cleanup.policy"]);
    }

    #[test]
    fn describe_renders_as_text() {
        let text = render_describe_text(&sample_description());
        let expected = "\
Topic: zeta
Partitions: 2
Replication factor: 2
Configs:
  retention.ms=60000 (DYNAMIC_TOPIC_CONFIG)
  retention.bytes=-1 (DEFAULT_CONFIG)
  cleanup.policy=delete (DYNAMIC_TOPIC_CONFIG)

PARTITION  LEADER  REPLICAS  ISR  START  END  NOTE
0          1       1,2       1    0      42
1          2       1,2       1    -      -    NOT_LEADER_OR_FOLLOWER
";
        assert_eq!(text, expected);
    }

    #[test]
    fn describe_renders_as_json() {
        let mut d = sample_description();
        d.configs = Err("the broker at x does not support DescribeConfigs".into());
        assert_eq!(
            render_describe_json(&d).to_string(),
            concat!(
                r#"{"name":"zeta","topic_id":null,"internal":false,"error":null,"partitions":["#,
                r#"{"partition":0,"leader":1,"replicas":[1,2],"isr":[1],"start_offset":0,"end_offset":42,"error":null},"#,
                r#"{"partition":1,"leader":2,"replicas":[1,2],"isr":[1],"start_offset":null,"end_offset":null,"error":"NOT_LEADER_OR_FOLLOWER"}],"#,
                r#""configs":null,"configs_error":"the broker at x does not support DescribeConfigs"}"#
            )
        );
    }

    #[test]
    fn offsets_combine_answers_and_errors() {
        assert_eq!(
            combine_offsets(Some(&Ok(3)), Some(&Ok(9))),
            PartitionOffsets {
                start: Some(3),
                end: Some(9),
                error: None
            }
        );
        let failed = combine_offsets(Some(&Err(6)), Some(&Err(6)));
        assert_eq!(failed.error.as_deref(), Some("NOT_LEADER_OR_FOLLOWER"));
        let missing = combine_offsets(Some(&Ok(0)), None);
        assert_eq!((missing.start, missing.end), (Some(0), None));
        assert_eq!(missing.error.as_deref(), Some("no answer"));
    }

    #[test]
    fn alter_configs_fallback_keeps_other_overrides() {
        let current = vec![
            entry(
                "cleanup.policy",
                Some("delete"),
                CONFIG_SOURCE_DYNAMIC_TOPIC,
            ),
            entry("retention.ms", Some("1000"), CONFIG_SOURCE_DYNAMIC_TOPIC),
            entry("segment.bytes", Some("1024"), 5), // a default: not an override
        ];
        let merged = merge_overrides(&current, &[ConfigPair::new("retention.ms", "2000")])
            .expect("no sensitive overrides");
        assert_eq!(
            merged,
            vec![
                ConfigPair::new("cleanup.policy", "delete"),
                ConfigPair::new("retention.ms", "2000"),
            ]
        );
        let sensitive = vec![entry("secret", None, CONFIG_SOURCE_DYNAMIC_TOPIC)];
        assert!(merge_overrides(&sensitive, &[]).is_err());
    }

    #[test]
    fn topic_ids_print_like_kafka() {
        // Kafka's Uuid.toString() is URL-safe base64 without padding.
        let mut bytes = [0u8; 16];
        bytes[15] = 1;
        assert_eq!(kafka_uuid(&bytes), "AAAAAAAAAAAAAAAAAAAAAQ");
        assert_eq!(kafka_uuid(&[0xff; 16]), "_____________________w");
    }

    // -----------------------------------------------------------------------------------
    // Whole commands against a scripted broker.
    // -----------------------------------------------------------------------------------

    use crate::fake_broker::{offsets_response, FakeBroker};
    use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
    use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
    use kafka_protocol::messages::describe_configs_response::{
        DescribeConfigsResourceResult, DescribeConfigsResult,
    };
    use kafka_protocol::messages::{
        alter_configs_response, incremental_alter_configs_response, AlterConfigsResponse,
        CreateTopicsResponse, DeleteTopicsResponse, DescribeConfigsResponse,
        IncrementalAlterConfigsResponse, RequestKind, ResponseKind,
    };
    use std::sync::{Arc, Mutex};

    /// What a Kafka 3.x broker advertises for the APIs this client uses.
    const KAFKA_3_VERSIONS: &[(ApiKey, i16, i16)] = &[
        (ApiKey::ListOffsets, 0, 8),
        (ApiKey::Metadata, 0, 12),
        (ApiKey::CreateTopics, 0, 7),
        (ApiKey::DeleteTopics, 0, 6),
        (ApiKey::DescribeConfigs, 0, 4),
        (ApiKey::AlterConfigs, 0, 2),
        (ApiKey::IncrementalAlterConfigs, 0, 1),
        (ApiKey::CreatePartitions, 0, 3),
    ];

    fn one_topic_metadata(name: &str, brokers: &[(i32, &str)], leaders: &[i32]) -> ResponseKind {
        let brokers = brokers
            .iter()
            .map(|&(id, addr)| {
                let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(id))
                    .with_host(str_bytes(host))
                    .with_port(port.parse().expect("port"))
            })
            .collect();
        let partitions = leaders
            .iter()
            .enumerate()
            .map(|(i, &leader)| {
                MetadataResponsePartition::default()
                    .with_partition_index(i32::try_from(i).expect("few partitions"))
                    .with_leader_id(BrokerId(leader))
                    .with_replica_nodes(vec![BrokerId(leader)])
                    .with_isr_nodes(vec![BrokerId(leader)])
            })
            .collect();
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_topics(vec![MetadataResponseTopic::default()
                .with_name(Some(topic_name(name)))
                .with_partitions(partitions)])
            .into()
    }

    fn configs_response(name: &str, configs: &[(&str, &str, i8)]) -> ResponseKind {
        let configs = configs
            .iter()
            .map(|&(key, value, source)| {
                DescribeConfigsResourceResult::default()
                    .with_name(str_bytes(key))
                    .with_value(Some(str_bytes(value)))
                    .with_config_source(source)
            })
            .collect();
        DescribeConfigsResponse::default()
            .with_results(vec![DescribeConfigsResult::default()
                .with_resource_type(RESOURCE_TYPE_TOPIC)
                .with_resource_name(str_bytes(name))
                .with_configs(configs)])
            .into()
    }

    #[test]
    fn describe_reads_metadata_configs_and_offsets() {
        let own_addr = Arc::new(Mutex::new(String::new()));
        let addr = Arc::clone(&own_addr);
        let broker = FakeBroker::start(KAFKA_3_VERSIONS, move |request| match request {
            RequestKind::Metadata(r) => {
                assert!(
                    !r.allow_auto_topic_creation,
                    "describe must not create the topic"
                );
                let addr = addr.lock().expect("lock").clone();
                one_topic_metadata("orders", &[(1, &addr)], &[1, 1])
            }
            RequestKind::DescribeConfigs(_) => configs_response(
                "orders",
                &[
                    ("retention.ms", "60000", 1),
                    ("retention.bytes", "-1", 5),
                    ("max.message.bytes", "1048588", 5),
                    ("segment.bytes", "1073741824", 5),
                ],
            ),
            RequestKind::ListOffsets(r) => offsets_response(r),
            other => panic!("unexpected {other:?}"),
        });
        *own_addr.lock().expect("lock") = broker.addr.clone();
        let mut client = Client::connect(&broker.addr).expect("connect");
        let text = describe(&mut client, "orders", Output::Text).expect("describe");
        drop(client);
        let received = broker.finish();
        let expected = "\
Topic: orders
Partitions: 2
Replication factor: 1
Configs:
  retention.ms=60000 (DYNAMIC_TOPIC_CONFIG)
  retention.bytes=-1 (DEFAULT_CONFIG)
  max.message.bytes=1048588 (DEFAULT_CONFIG)

PARTITION  LEADER  REPLICAS  ISR  START  END  NOTE
0          1       1         1    5      40
1          1       1         1    5      41
";
        assert_eq!(text, expected);
        let versions: Vec<(i16, i16)> = received
            .iter()
            .map(|(v, r)| match r {
                RequestKind::Metadata(_) => (ApiKey::Metadata as i16, *v),
                RequestKind::DescribeConfigs(_) => (ApiKey::DescribeConfigs as i16, *v),
                RequestKind::ListOffsets(_) => (ApiKey::ListOffsets as i16, *v),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        // The highest versions both sides support; ListOffsets twice (earliest, latest).
        assert_eq!(versions, [(3, 12), (32, 4), (2, 7), (2, 7)]);
    }

    #[test]
    fn describe_asks_each_partition_leader_for_offsets() {
        let leader2 = FakeBroker::start(KAFKA_3_VERSIONS, |request| match request {
            RequestKind::ListOffsets(r) => offsets_response(r),
            other => panic!("only offsets are asked of a leader: {other:?}"),
        });
        let leader2_addr = leader2.addr.clone();
        let own_addr = Arc::new(Mutex::new(String::new()));
        let addr = Arc::clone(&own_addr);
        let bootstrap = FakeBroker::start(KAFKA_3_VERSIONS, move |request| match request {
            RequestKind::Metadata(_) => {
                let addr = addr.lock().expect("lock").clone();
                one_topic_metadata("orders", &[(1, &addr), (2, &leader2_addr)], &[1, 2, -1])
            }
            RequestKind::DescribeConfigs(_) => configs_response("orders", &[]),
            RequestKind::ListOffsets(r) => offsets_response(r),
            other => panic!("unexpected {other:?}"),
        });
        *own_addr.lock().expect("lock") = bootstrap.addr.clone();
        let mut client = Client::connect(&bootstrap.addr).expect("connect");
        let json = describe(&mut client, "orders", Output::Json).expect("describe");
        drop(client);
        let partitions_asked = |received: Vec<(i16, RequestKind)>| -> Vec<i32> {
            received
                .iter()
                .filter_map(|(_, r)| match r {
                    RequestKind::ListOffsets(r) => Some(r.topics[0].partitions[0].partition_index),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(partitions_asked(bootstrap.finish()), [0, 0]);
        assert_eq!(partitions_asked(leader2.finish()), [1, 1]);
        assert!(json.contains(r#"{"partition":0,"leader":1,"replicas":[1],"isr":[1],"start_offset":5,"end_offset":40,"error":null}"#), "{json}");
        assert!(json.contains(r#""partition":1,"leader":2,"replicas":[2],"isr":[2],"start_offset":5,"end_offset":41,"error":null}"#), "{json}");
        assert!(json.contains(r#""partition":2,"leader":-1,"replicas":[-1],"isr":[-1],"start_offset":null,"end_offset":null,"error":"no leader"}"#), "{json}");
        assert!(json.ends_with("}\n"), "{json}");
    }

    #[test]
    fn describe_of_a_missing_topic_is_unknown_topic_or_partition() {
        let broker = FakeBroker::start(KAFKA_3_VERSIONS, |request| match request {
            RequestKind::Metadata(_) => MetadataResponse::default()
                .with_topics(vec![MetadataResponseTopic::default()
                    .with_name(Some(topic_name("nope")))
                    .with_error_code(ERROR_UNKNOWN_TOPIC_OR_PARTITION)])
                .into(),
            other => panic!("unexpected {other:?}"),
        });
        let mut client = Client::connect(&broker.addr).expect("connect");
        let err = describe(&mut client, "nope", Output::Text).expect_err("no such topic");
        assert_eq!(
            format!("{err:#}"),
            "describe topic nope: UNKNOWN_TOPIC_OR_PARTITION"
        );
        drop(client);
        broker.finish();
    }

    #[test]
    fn describe_still_works_when_the_broker_lacks_configs_and_offsets() {
        let broker = FakeBroker::start(&[(ApiKey::Metadata, 0, 12)], |request| match request {
            RequestKind::Metadata(_) => one_topic_metadata("t", &[(1, "127.0.0.1:1")], &[1]),
            other => panic!("unexpected {other:?}"),
        });
        let mut client = Client::connect(&broker.addr).expect("connect");
        let text = describe(&mut client, "t", Output::Text).expect("describe");
        let addr = broker.addr.clone();
        drop(client);
        broker.finish();
        assert!(
            text.contains(&format!(
                "Configs: unavailable (the broker at {addr} does not support DescribeConfigs)"
            )),
            "{text}"
        );
        assert!(
            text.contains("0          1       1         1    -      -    the broker at"),
            "{text}"
        );
    }

    #[test]
    fn create_reports_success_and_broker_errors() {
        let mut calls = 0;
        let broker = FakeBroker::start(KAFKA_3_VERSIONS, move |request| {
            let RequestKind::CreateTopics(r) = request else {
                panic!("unexpected {request:?}")
            };
            calls += 1;
            let result = CreatableTopicResult::default().with_name(r.topics[0].name.clone());
            let result = if calls == 1 {
                result.with_num_partitions(r.topics[0].num_partitions)
            } else {
                result
                    .with_error_code(36)
                    .with_error_message(Some(str_bytes("Topic 'orders' already exists.")))
            };
            CreateTopicsResponse::default()
                .with_topics(vec![result])
                .into()
        });
        let mut client = Client::connect(&broker.addr).expect("connect");
        let created = create(&mut client, &create_args()).expect("first create");
        assert_eq!(created, "created topic orders (3 partitions)\n");
        let err = create(&mut client, &create_args()).expect_err("second create");
        assert_eq!(
            format!("{err:#}"),
            "create topic orders: TOPIC_ALREADY_EXISTS: Topic 'orders' already exists."
        );
        drop(client);
        let received = broker.finish();
        let RequestKind::CreateTopics(sent) = &received[0].1 else {
            panic!("{received:?}")
        };
        assert_eq!(received[0].0, 7);
        assert_eq!(sent.topics[0].configs.len(), 2);
        assert_eq!(sent.timeout_ms, OPERATION_TIMEOUT_MS);
    }

    #[test]
    fn delete_sends_names_the_way_the_version_wants() {
        let broker = FakeBroker::start(&[(ApiKey::DeleteTopics, 0, 5)], |request| {
            let RequestKind::DeleteTopics(r) = request else {
                panic!("unexpected {request:?}")
            };
            DeleteTopicsResponse::default()
                .with_responses(vec![
                    DeletableTopicResult::default().with_name(Some(r.topic_names[0].clone()))
                ])
                .into()
        });
        let mut client = Client::connect(&broker.addr).expect("connect");
        assert_eq!(
            delete(&mut client, "gone").expect("delete"),
            "deleted topic gone\n"
        );
        drop(client);
        assert_eq!(broker.finish()[0].0, 5);
    }

    fn alter_args(retention_ms: i64) -> AlterArgs {
        AlterArgs {
            name: "orders".into(),
            retention_ms: Some(retention_ms),
            retention_bytes: None,
            max_message_bytes: None,
            configs: vec![],
            partitions: None,
        }
    }

    #[test]
    fn alter_uses_incremental_alter_configs_when_advertised() {
        let broker = FakeBroker::start(KAFKA_3_VERSIONS, |request| {
            let RequestKind::IncrementalAlterConfigs(r) = request else {
                panic!("unexpected {request:?}")
            };
            IncrementalAlterConfigsResponse::default()
                .with_responses(vec![
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(RESOURCE_TYPE_TOPIC)
                        .with_resource_name(r.resources[0].resource_name.clone()),
                ])
                .into()
        });
        let mut client = Client::connect(&broker.addr).expect("connect");
        let out = alter(&mut client, &alter_args(5000)).expect("alter");
        assert_eq!(out, "altered topic orders: retention.ms=5000\n");
        drop(client);
        let received = broker.finish();
        let RequestKind::IncrementalAlterConfigs(sent) = &received[0].1 else {
            panic!("{received:?}")
        };
        let config = &sent.resources[0].configs[0];
        assert_eq!(
            (
                config.name.as_str(),
                config.config_operation,
                config.value.as_deref()
            ),
            ("retention.ms", CONFIG_OPERATION_SET, Some("5000"))
        );
    }

    #[test]
    fn alter_falls_back_to_alter_configs_and_keeps_other_overrides() {
        let versions = [
            (ApiKey::DescribeConfigs, 0, 4),
            (ApiKey::AlterConfigs, 0, 1),
        ];
        let broker = FakeBroker::start(&versions, |request| match request {
            RequestKind::DescribeConfigs(_) => configs_response(
                "orders",
                &[
                    ("cleanup.policy", "compact", CONFIG_SOURCE_DYNAMIC_TOPIC),
                    ("retention.ms", "1000", CONFIG_SOURCE_DYNAMIC_TOPIC),
                    ("segment.bytes", "1024", 5),
                ],
            ),
            RequestKind::AlterConfigs(_) => AlterConfigsResponse::default()
                .with_responses(vec![
                    alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(RESOURCE_TYPE_TOPIC)
                        .with_resource_name(str_bytes("orders"))
                        .with_error_code(40)
                        .with_error_message(Some(str_bytes("bad value"))),
                ])
                .into(),
            other => panic!("unexpected {other:?}"),
        });
        let mut client = Client::connect(&broker.addr).expect("connect");
        let err = alter(&mut client, &alter_args(2000)).expect_err("broker refuses");
        assert_eq!(
            format!("{err:#}"),
            "alter configs of topic orders: INVALID_CONFIG: bad value"
        );
        drop(client);
        let received = broker.finish();
        let RequestKind::AlterConfigs(sent) = &received[1].1 else {
            panic!("{received:?}")
        };
        let sent: Vec<(&str, Option<&str>)> = sent.resources[0]
            .configs
            .iter()
            .map(|c| (c.name.as_str(), c.value.as_deref()))
            .collect();
        assert_eq!(
            sent,
            [
                ("cleanup.policy", Some("compact")),
                ("retention.ms", Some("2000"))
            ]
        );
    }
}
