//! Kafka API handlers. Each takes the decoded request and the shard it arrived on,
//! forwards partition work to the owning shard, and returns the response body.

pub mod admin;
pub mod describe_log_dirs;
pub mod elect_leaders;
pub mod errors;
pub mod fetch;
pub mod groups;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use std::rc::Rc;

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, DescribeClusterResponse, InitProducerIdResponse, ProducerId,
    RequestKind, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use strand_net::kafka::Request;

use crate::shard::Shard;

/// The APIs this node serves and their version ranges; nothing else is advertised.
/// Minimums: Produce v3 and Fetch v4 are the first with RecordBatch v2 (magic 2).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 0, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    // v0 is gone from Kafka 4 and from kafka-protocol; v4 adds the volume's bytes.
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::ElectLeaders, 0, 2),
    // Consumer groups (classic protocol). FindCoordinator v5+ and v6 are for
    // transactions and share groups; DescribeGroups v6 only adds error messages.
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
];

/// The served version range of an API.
pub fn served(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

/// Handle one request. None: no response is sent (Produce with acks=0).
pub async fn handle(
    shard: &Rc<Shard>,
    request: Request,
    peer: Option<std::net::SocketAddr>,
) -> Option<ResponseKind> {
    let version = request.api_version;
    let client_id = request.client_id;
    Some(match request.body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions()),
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::handle(shard, r, version).await)
        }
        RequestKind::Produce(r) => {
            return produce::handle(shard, r, version)
                .await
                .map(ResponseKind::Produce)
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(shard, r, version).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(shard, r, version).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(admin::create_topics(shard, r, version).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(admin::delete_topics(shard, r, version).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(admin::create_partitions(shard, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(admin::describe_configs(shard, r, version))
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(admin::alter_configs(shard, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(admin::incremental_alter_configs(shard, r).await)
        }
        RequestKind::DescribeCluster(_) => ResponseKind::DescribeCluster(describe_cluster(shard)),
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(describe_log_dirs::handle(shard, r, version).await)
        }
        RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(init_producer_id(shard, &r)),
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(elect_leaders::handle(shard, r, version).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(shard, r, version).await)
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(groups::join_group(shard, r, version, client_id, peer).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(groups::sync_group(shard, r, version).await)
        }
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(shard, r).await),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(groups::leave_group(shard, r, version).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(groups::offset_commit(shard, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(groups::offset_fetch(shard, r, version).await)
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(groups::list_groups(shard, r, version).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(shard, r, version).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(groups::delete_groups(shard, r).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(groups::offset_delete(shard, r).await)
        }
        // `served` lets nothing else through decoding.
        _ => return None,
    })
}

fn api_versions() -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.api_keys = SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = key as i16;
            v.min_version = min;
            v.max_version = max;
            v
        })
        .collect();
    r
}

fn describe_cluster(shard: &Shard) -> DescribeClusterResponse {
    let config = shard.config();
    let mut r = DescribeClusterResponse::default();
    r.cluster_id = StrBytes::from_string(config.cluster_id.clone());
    r.controller_id = match shard.cluster() {
        Some(rt) => rt.controller().map_or(-1, |c| c as i32).into(),
        None => (config.node_id as i32).into(),
    };
    r.brokers = metadata::brokers(shard)
        .into_iter()
        .map(|(id, host, port)| {
            let mut b =
                kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker::default(
                );
            b.broker_id = (id as i32).into();
            b.host = StrBytes::from_string(host);
            b.port = i32::from(port);
            b
        })
        .collect();
    r
}

fn init_producer_id(
    shard: &Shard,
    r: &kafka_protocol::messages::InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut out = InitProducerIdResponse::default();
    if r.transactional_id.is_some() {
        // Transactions are not implemented (and not advertised beyond this API).
        out.error_code = errors::UNSUPPORTED_VERSION;
        return out;
    }
    let id = shard.shared.next_producer_id.fetch_add(
        crate::launch::PRODUCER_ID_STRIDE,
        std::sync::atomic::Ordering::Relaxed,
    );
    out.producer_id = ProducerId(id);
    out.producer_epoch = 0;
    out
}

/// Count a handled request in the metrics: per API, its latency (Produce,
/// Fetch), and the error codes its response carries.
pub fn observe(
    shard: &Shard,
    key: ApiKey,
    elapsed: std::time::Duration,
    response: Option<&ResponseKind>,
) {
    use crate::metrics::{ApiLabels, ErrorLabels, ShardLabels};
    let m = &shard.shared.metrics;
    let api = format!("{key:?}");
    let labels = ShardLabels {
        shard: shard.id as u32,
    };
    match key {
        ApiKey::Produce => m
            .produce_latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64()),
        ApiKey::Fetch => m
            .fetch_latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64()),
        _ => {}
    }
    m.requests
        .get_or_create(&ApiLabels {
            shard: shard.id as u32,
            api: api.clone(),
        })
        .inc();
    let Some(response) = response else {
        return;
    };
    for code in response_errors(response) {
        m.request_errors
            .get_or_create(&ErrorLabels {
                shard: shard.id as u32,
                api: api.clone(),
                code: errors::name(code),
            })
            .inc();
    }
}

/// The non-zero error codes of a response (per partition where it has them).
fn response_errors(r: &ResponseKind) -> Vec<i16> {
    let codes: Vec<i16> = match r {
        ResponseKind::Produce(p) => p
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
            .collect(),
        ResponseKind::Fetch(f) => std::iter::once(f.error_code)
            .chain(
                f.responses
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
            )
            .collect(),
        ResponseKind::ListOffsets(l) => l
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        ResponseKind::Metadata(md) => md
            .topics
            .iter()
            .flat_map(|t| {
                std::iter::once(t.error_code).chain(t.partitions.iter().map(|p| p.error_code))
            })
            .collect(),
        ResponseKind::CreateTopics(c) => c.topics.iter().map(|t| t.error_code).collect(),
        ResponseKind::DeleteTopics(d) => d.responses.iter().map(|t| t.error_code).collect(),
        ResponseKind::FindCoordinator(f) => std::iter::once(f.error_code)
            .chain(f.coordinators.iter().map(|c| c.error_code))
            .collect(),
        ResponseKind::JoinGroup(j) => vec![j.error_code],
        ResponseKind::SyncGroup(s) => vec![s.error_code],
        ResponseKind::Heartbeat(h) => vec![h.error_code],
        ResponseKind::LeaveGroup(l) => std::iter::once(l.error_code)
            .chain(l.members.iter().map(|m| m.error_code))
            .collect(),
        ResponseKind::OffsetCommit(o) => o
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        ResponseKind::OffsetFetch(o) => std::iter::once(o.error_code)
            .chain(o.groups.iter().map(|g| g.error_code))
            .collect(),
        ResponseKind::InitProducerId(i) => vec![i.error_code],
        _ => Vec::new(),
    };
    codes.into_iter().filter(|&c| c != errors::NONE).collect()
}

/// `TopicName` from a `String`.
pub fn topic_name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(StrBytes::from_string(s.to_string()))
}
