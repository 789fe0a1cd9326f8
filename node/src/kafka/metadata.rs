//! Metadata: this node is every partition's leader; topics come from the shard's
//! snapshot. Unknown topics are created when auto-creation is on and allowed.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::StrBytes;

use super::{admin, errors, topic_name};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, r: MetadataRequest, version: i16) -> MetadataResponse {
    let config = shard.config();
    let node_id = config.node_id as i32;
    // v0 asks for all topics with an empty list; later versions with null.
    let requested: Option<Vec<String>> = match &r.topics {
        None => None,
        Some(list) if list.is_empty() && version == 0 => None,
        Some(list) => Some(
            list.iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .collect(),
        ),
    };
    let auto_create = config.auto_create_topics && (version < 4 || r.allow_auto_topic_creation);
    if let (Some(names), true) = (&requested, auto_create) {
        let view = shard.topics();
        for name in names.iter().filter(|n| view.get(n).is_none()) {
            let (code, msg) = admin::auto_create(shard, name).await;
            if code != errors::NONE {
                tracing::debug!(topic = %name, code, ?msg, "auto-creation refused");
            }
        }
    }
    let view = shard.topics();
    let names: Vec<String> = requested.unwrap_or_else(|| view.topics.keys().cloned().collect());
    let mut out = MetadataResponse::default();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = node_id.into();
    broker.host = StrBytes::from_string(config.advertised_kafka_addr.0.clone());
    broker.port = i32::from(config.advertised_kafka_addr.1);
    out.brokers = vec![broker];
    if version >= 2 {
        out.cluster_id = Some(StrBytes::from_string(config.cluster_id.clone()));
    }
    if version >= 1 {
        out.controller_id = node_id.into();
    }
    for name in names {
        let mut t = MetadataResponseTopic::default();
        t.name = Some(topic_name(&name));
        match view.get(&name) {
            None => t.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION,
            Some(meta) => {
                if version >= 10 {
                    t.topic_id = uuid::Uuid::from_bytes(meta.id);
                }
                t.partitions = (0..meta.partitions)
                    .map(|i| {
                        let mut p = MetadataResponsePartition::default();
                        p.partition_index = i;
                        p.leader_id = node_id.into();
                        if version >= 7 {
                            p.leader_epoch = 0;
                        }
                        p.replica_nodes = vec![node_id.into()];
                        p.isr_nodes = vec![node_id.into()];
                        p
                    })
                    .collect();
            }
        }
        out.topics.push(t);
    }
    out
}
