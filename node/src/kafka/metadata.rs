//! Metadata: topics come from the shard's snapshot. On a single node this node is
//! every partition's leader; in a cluster, brokers come from the controller's
//! registrations and leaders from the shard's leader table. Unknown topics are
//! created when auto-creation is on and allowed.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::StrBytes;

use super::{admin, errors, topic_name};
use crate::cluster::controller::group_id;
use crate::shard::Shard;

/// Every broker as `(id, host, port)`: this node alone, or in a cluster every node
/// registered with the controller (this node included even before it registered).
pub fn brokers(shard: &Shard) -> Vec<(u32, String, u16)> {
    let config = shard.config();
    let me = (
        config.node_id,
        config.advertised_kafka_addr.0.clone(),
        config.advertised_kafka_addr.1,
    );
    if shard.cluster().is_none() {
        return vec![me];
    }
    let mut out: Vec<(u32, String, u16)> = shard
        .topics()
        .brokers
        .iter()
        .map(|(id, b)| (*id, b.host.clone(), b.port))
        .collect();
    if !out.iter().any(|b| b.0 == me.0) {
        out.push(me);
        out.sort_by_key(|b| b.0);
    }
    out
}

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
    let runtime = shard.cluster();
    out.brokers = brokers(shard)
        .into_iter()
        .map(|(id, host, port)| {
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = (id as i32).into();
            broker.host = StrBytes::from_string(host);
            broker.port = i32::from(port);
            broker
        })
        .collect();
    if version >= 2 {
        out.cluster_id = Some(StrBytes::from_string(config.cluster_id.clone()));
    }
    if version >= 1 {
        out.controller_id = match &runtime {
            Some(rt) => rt.controller().map_or(-1, |c| c as i32).into(),
            None => node_id.into(),
        };
    }
    for name in names {
        let mut t = MetadataResponseTopic::default();
        t.name = Some(topic_name(&name));
        match view.get(&name) {
            // A cluster member that knows no controller leader (still starting, cut
            // off, or refused by its peers) cannot tell a missing topic from one it
            // has not heard of yet: a retriable answer keeps clients from failing
            // their messages on its word (librdkafka fails them on UNKNOWN_TOPIC).
            None if runtime.as_ref().is_some_and(|rt| rt.controller().is_none()) => {
                t.error_code = errors::LEADER_NOT_AVAILABLE
            }
            None => t.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION,
            Some(meta) => {
                t.is_internal = version >= 1 && name == crate::group::OFFSETS_TOPIC;
                if version >= 10 {
                    t.topic_id = uuid::Uuid::from_bytes(meta.id);
                }
                t.partitions = (0..meta.partitions)
                    .map(|i| {
                        let mut p = MetadataResponsePartition::default();
                        p.partition_index = i;
                        let Some(rt) = &runtime else {
                            p.leader_id = node_id.into();
                            if version >= 7 {
                                p.leader_epoch = 0;
                            }
                            p.replica_nodes = vec![node_id.into()];
                            p.isr_nodes = vec![node_id.into()];
                            return p;
                        };
                        let replicas = meta.replicas.get(i as usize).cloned().unwrap_or_default();
                        p.replica_nodes = replicas.iter().map(|&r| (r as i32).into()).collect();
                        match rt.leader_of(group_id(meta.seq, i)) {
                            Some(super::super::cluster::runtime::LeaderInfo {
                                leader: Some(leader),
                                term,
                                isr,
                            }) => {
                                p.leader_id = (leader as i32).into();
                                if version >= 7 {
                                    p.leader_epoch = term as i32;
                                }
                                let isr = if isr.is_empty() { vec![leader] } else { isr };
                                p.isr_nodes = isr.iter().map(|&r| (r as i32).into()).collect();
                            }
                            _ => {
                                p.error_code = errors::LEADER_NOT_AVAILABLE;
                                p.leader_id = (-1).into();
                                if version >= 7 {
                                    p.leader_epoch = -1;
                                }
                            }
                        }
                        p
                    })
                    .collect();
            }
        }
        out.topics.push(t);
    }
    out
}
