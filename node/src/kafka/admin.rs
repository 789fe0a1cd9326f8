//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions,
//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs. Changes run on shard 0,
//! which persists them and sends every shard the new snapshot.

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::errors;
use crate::router::{AdminOp, Op, OpResult};
use crate::shard::Shard;
use crate::topics::TopicConfig;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Config sources (DescribeConfigs v1+).
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
/// Config types (DescribeConfigs v3+).
const TYPE_STRING: i8 = 2;
const TYPE_LONG: i8 = 5;
const TYPE_INT: i8 = 3;

async fn run(shard: &Rc<Shard>, op: AdminOp) -> (i16, Option<String>) {
    match shard.run_op(0, Op::Admin(op)).await {
        Some(OpResult::Admin(code, msg)) => (code, msg),
        _ => (errors::UNKNOWN_SERVER_ERROR, None),
    }
}

/// The node's defaults for a new topic.
pub fn default_topic_config(shard: &Shard) -> TopicConfig {
    let c = shard.config();
    TopicConfig {
        retention_ms: c.log.retention_ms,
        retention_bytes: c.log.retention_bytes,
        max_message_bytes: c.max_message_bytes as u32,
        segment_bytes: c.log.segment_bytes_max,
    }
}

pub async fn auto_create(shard: &Rc<Shard>, name: &str) -> (i16, Option<String>) {
    run(
        shard,
        AdminOp::CreateTopic {
            name: name.to_string(),
            partitions: shard.config().default_partitions as i32,
            config: default_topic_config(shard),
            replication_factor: shard.config().default_replication_factor,
            validate_only: false,
        },
    )
    .await
}

/// Apply one `key=value` (None: back to the default) to a topic config.
pub fn set_config(
    config: &mut TopicConfig,
    defaults: &TopicConfig,
    key: &str,
    value: Option<&str>,
) -> Result<(), String> {
    let parse_limit = |v: &str| -> Result<Option<u64>, String> {
        let n: i64 = v.parse().map_err(|_| format!("{key}={v}: not a number"))?;
        Ok((n >= 0).then_some(n as u64))
    };
    match (key, value) {
        ("retention.ms", Some(v)) => config.retention_ms = parse_limit(v)?,
        ("retention.ms", None) => config.retention_ms = defaults.retention_ms,
        ("retention.bytes", Some(v)) => config.retention_bytes = parse_limit(v)?,
        ("retention.bytes", None) => config.retention_bytes = defaults.retention_bytes,
        ("max.message.bytes", Some(v)) => {
            config.max_message_bytes = v
                .parse()
                .ok()
                .filter(|n| *n >= 1024)
                .ok_or(format!("{key}={v}: expected a number of bytes >= 1024"))?
        }
        ("max.message.bytes", None) => config.max_message_bytes = defaults.max_message_bytes,
        ("segment.bytes", Some(v)) => {
            config.segment_bytes = v
                .parse()
                .ok()
                .filter(|n| (64 * 1024..=u32::MAX as u64).contains(n))
                .ok_or(format!("{key}={v}: expected 65536..=4294967295"))?
        }
        ("segment.bytes", None) => config.segment_bytes = defaults.segment_bytes,
        ("cleanup.policy", Some("delete")) | ("cleanup.policy", None) => {}
        ("cleanup.policy", Some(v)) => {
            return Err(format!("cleanup.policy={v}: only 'delete' is supported"))
        }
        (k, _) => return Err(format!("unknown or unsupported topic config {k}")),
    }
    Ok(())
}

fn config_entries(
    config: &TopicConfig,
    defaults: &TopicConfig,
) -> Vec<(&'static str, String, bool, i8)> {
    let limit = |v: Option<u64>| v.map_or("-1".to_string(), |n| n.to_string());
    vec![
        (
            "retention.ms",
            limit(config.retention_ms),
            config.retention_ms == defaults.retention_ms,
            TYPE_LONG,
        ),
        (
            "retention.bytes",
            limit(config.retention_bytes),
            config.retention_bytes == defaults.retention_bytes,
            TYPE_LONG,
        ),
        (
            "max.message.bytes",
            config.max_message_bytes.to_string(),
            config.max_message_bytes == defaults.max_message_bytes,
            TYPE_INT,
        ),
        (
            "segment.bytes",
            config.segment_bytes.to_string(),
            config.segment_bytes == defaults.segment_bytes,
            TYPE_INT,
        ),
        ("cleanup.policy", "delete".to_string(), true, TYPE_STRING),
    ]
}

pub async fn create_topics(
    shard: &Rc<Shard>,
    r: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let defaults = default_topic_config(shard);
    let mut out = CreateTopicsResponse::default();
    for t in r.topics {
        let name = t.name.0.to_string();
        let mut res = CreatableTopicResult::default();
        res.name = t.name.clone();
        let partitions = if t.num_partitions == -1 {
            shard.config().default_partitions as i32
        } else {
            t.num_partitions
        };
        let mut config = defaults.clone();
        let mut problem = None;
        let members = shard.config().peers.len().max(1) as i16;
        let replication_factor = if t.replication_factor == -1 {
            shard.config().default_replication_factor as i16
        } else {
            t.replication_factor
        };
        if !(1..=members).contains(&replication_factor) {
            problem = Some((
                errors::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {} must be between 1 and the {members} nodes of \
                     this cluster",
                    t.replication_factor
                ),
            ));
        } else if !t.assignments.is_empty() {
            problem = Some((
                errors::INVALID_REQUEST,
                "manual replica assignments are not supported".to_string(),
            ));
        }
        for c in &t.configs {
            if problem.is_some() {
                break;
            }
            let value = c.value.as_ref().map(|v| v.as_str());
            if let Err(msg) = set_config(&mut config, &defaults, c.name.as_str(), value) {
                problem = Some((errors::INVALID_CONFIG, msg));
            }
        }
        let (code, msg) = match problem {
            Some((code, msg)) => (code, Some(msg)),
            None => {
                run(
                    shard,
                    AdminOp::CreateTopic {
                        name: name.clone(),
                        partitions,
                        config,
                        replication_factor: replication_factor as u32,
                        validate_only: r.validate_only,
                    },
                )
                .await
            }
        };
        res.error_code = code;
        if version >= 1 {
            res.error_message = msg.map(StrBytes::from_string);
        }
        if code == errors::NONE && version >= 5 {
            res.num_partitions = partitions;
            res.replication_factor = replication_factor;
        }
        if code == errors::NONE && version >= 7 {
            if let Some(meta) = shard.topics().get(&name) {
                res.topic_id = uuid::Uuid::from_bytes(meta.id);
            }
        }
        out.topics.push(res);
    }
    out
}

pub async fn delete_topics(
    shard: &Rc<Shard>,
    r: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let mut out = DeleteTopicsResponse::default();
    // v0-5 name topics in `topic_names`; v6 in `topics`, by name or id.
    let mut targets: Vec<(Option<String>, uuid::Uuid)> = r
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
        .collect();
    targets.extend(
        r.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    for (name, id) in targets {
        let view = shard.topics();
        let resolved = match &name {
            Some(n) => Some(n.clone()),
            None => view.by_id(id.as_bytes()).map(|(n, _)| n.clone()),
        };
        let mut res = DeletableTopicResult::default();
        res.name = name.as_deref().map(super::topic_name);
        if version >= 6 {
            res.topic_id = id;
        }
        match resolved {
            None => res.error_code = errors::UNKNOWN_TOPIC_ID,
            Some(n) => {
                if let (Some(meta), true) = (view.get(&n), version >= 6) {
                    res.topic_id = uuid::Uuid::from_bytes(meta.id);
                }
                let (code, msg) = if n == crate::group::OFFSETS_TOPIC {
                    // Every group's committed offsets live there.
                    (
                        errors::INVALID_TOPIC_EXCEPTION,
                        Some(format!("{n} is internal: delete groups instead")),
                    )
                } else {
                    run(shard, AdminOp::DeleteTopic { name: n.clone() }).await
                };
                res.name = Some(super::topic_name(&n));
                res.error_code = code;
                if version >= 5 {
                    res.error_message = msg.map(StrBytes::from_string);
                }
            }
        }
        out.responses.push(res);
    }
    out
}

pub async fn create_partitions(
    shard: &Rc<Shard>,
    r: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut out = CreatePartitionsResponse::default();
    for t in r.topics {
        let mut res = CreatePartitionsTopicResult::default();
        res.name = t.name.clone();
        let (code, msg) = if t.assignments.is_some() {
            (
                errors::INVALID_REQUEST,
                Some("manual replica assignments are not supported".to_string()),
            )
        } else {
            run(
                shard,
                AdminOp::CreatePartitions {
                    name: t.name.0.to_string(),
                    count: t.count,
                    validate_only: r.validate_only,
                },
            )
            .await
        };
        res.error_code = code;
        res.error_message = msg.map(StrBytes::from_string);
        out.results.push(res);
    }
    out
}

pub fn describe_configs(
    shard: &Rc<Shard>,
    r: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let defaults = default_topic_config(shard);
    let view = shard.topics();
    let mut out = DescribeConfigsResponse::default();
    for res in r.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = res.resource_type;
        result.resource_name = res.resource_name.clone();
        let name = res.resource_name.to_string();
        let wanted = |key: &str| {
            res.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
        };
        let entries = match res.resource_type {
            RESOURCE_TOPIC => match view.get(&name) {
                Some(meta) => config_entries(&meta.config, &defaults),
                None => {
                    result.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
                    result.error_message = Some(StrBytes::from_string(format!("no topic {name}")));
                    Vec::new()
                }
            },
            RESOURCE_BROKER => config_entries(&defaults, &defaults),
            _ => {
                result.error_code = errors::INVALID_REQUEST;
                Vec::new()
            }
        };
        result.configs = entries
            .into_iter()
            .filter(|(k, ..)| wanted(k))
            .map(|(k, v, is_default, kind)| {
                let mut c = DescribeConfigsResourceResult::default();
                c.name = StrBytes::from_static_str(k);
                c.value = Some(StrBytes::from_string(v));
                // v0 has the boolean IsDefault where v1+ has ConfigSource.
                c.config_source = match (version, is_default) {
                    (0, d) => i8::from(d),
                    (_, true) => SOURCE_DEFAULT,
                    (_, false) => SOURCE_TOPIC,
                };
                if version >= 3 {
                    c.config_type = kind;
                }
                c
            })
            .collect();
        out.results.push(result);
    }
    out
}

/// Apply changes to a topic's config on shard 0.
async fn alter_topic(
    shard: &Rc<Shard>,
    name: &str,
    changes: &[(String, Option<String>)],
    replace: bool,
    validate_only: bool,
) -> (i16, Option<String>) {
    run(
        shard,
        AdminOp::AlterConfig {
            name: name.to_string(),
            changes: changes.to_vec(),
            replace,
            validate_only,
        },
    )
    .await
}

pub async fn alter_configs(shard: &Rc<Shard>, r: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut out = AlterConfigsResponse::default();
    for res in r.resources {
        let mut resp =
            kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse::default(
            );
        resp.resource_type = res.resource_type;
        resp.resource_name = res.resource_name.clone();
        let (code, msg) = if res.resource_type != RESOURCE_TOPIC {
            (
                errors::INVALID_REQUEST,
                Some("only topic configs can be altered".to_string()),
            )
        } else {
            let changes: Vec<(String, Option<String>)> = res
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect();
            // AlterConfigs replaces the whole set: what is not named goes back to default.
            alter_topic(
                shard,
                res.resource_name.as_str(),
                &changes,
                true,
                r.validate_only,
            )
            .await
        };
        resp.error_code = code;
        resp.error_message = msg.map(StrBytes::from_string);
        out.responses.push(resp);
    }
    out
}

pub async fn incremental_alter_configs(
    shard: &Rc<Shard>,
    r: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    let mut out = IncrementalAlterConfigsResponse::default();
    for res in r.resources {
        let mut resp = kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        resp.resource_type = res.resource_type;
        resp.resource_name = res.resource_name.clone();
        let mut changes = Vec::new();
        let mut problem = None;
        for c in &res.configs {
            match c.config_operation {
                SET => changes.push((c.name.to_string(), c.value.as_ref().map(|v| v.to_string()))),
                DELETE => changes.push((c.name.to_string(), None)),
                op => {
                    problem = Some(format!(
                        "config operation {op} (append/subtract) is not supported"
                    ))
                }
            }
        }
        let (code, msg) = if res.resource_type != RESOURCE_TOPIC {
            (
                errors::INVALID_REQUEST,
                Some("only topic configs can be altered".to_string()),
            )
        } else if let Some(p) = problem {
            (errors::INVALID_CONFIG, Some(p))
        } else {
            alter_topic(
                shard,
                res.resource_name.as_str(),
                &changes,
                false,
                r.validate_only,
            )
            .await
        };
        resp.error_code = code;
        resp.error_message = msg.map(StrBytes::from_string);
        out.responses.push(resp);
    }
    out
}
