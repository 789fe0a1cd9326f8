//! The group coordinator APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups,
//! OffsetDelete. Each request is translated into a [`GroupCall`] and run on the
//! shard owning the group's `__consumer_offsets` partition (see `crate::group`);
//! fields a version lacks keep their defaults, or encoding fails.

use std::net::SocketAddr;
use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{admin, errors, metadata, topic_name};
use crate::cluster::controller::group_id;
use crate::group::coordinator::{self as coord, JoinRequest, SyncRequest, INVALID_GROUP_ID};
use crate::group::service::{GroupCall, GroupReply, COORDINATOR_NOT_AVAILABLE};
use crate::group::{partition_for, OFFSETS_TOPIC};
use crate::router::{AdminOp, Op, OpResult};
use crate::shard::Shard;
use crate::topics::TopicConfig;

/// Put partition entry `$p` under `$topic` in `$topics`, a list of `$ty` (response
/// topics with `name` and `partitions`), adding the topic's entry if missing.
macro_rules! push_partition {
    ($topics:expr, $ty:ty, $topic:expr, $p:expr) => {{
        let (topic, p) = ($topic, $p);
        match $topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => {
                let mut t = <$ty>::default();
                t.name = topic_name(topic);
                t.partitions.push(p);
                $topics.push(t);
            }
        }
    }};
}

/// Kafka's offset.metadata.max.bytes.
const OFFSET_METADATA_BYTES_MAX: usize = 4096;
const OFFSET_METADATA_TOO_LARGE: i16 = 12;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Create `__consumer_offsets` if it does not exist (with no retention: committed
/// offsets must stay until deleted). Err: COORDINATOR_NOT_AVAILABLE.
async fn ensure_offsets_topic(shard: &Rc<Shard>) -> Result<crate::topics::TopicMeta, i16> {
    if let Some(meta) = shard.topics().get(OFFSETS_TOPIC) {
        return Ok(meta.clone());
    }
    let config = shard.config();
    let op = AdminOp::CreateTopic {
        name: OFFSETS_TOPIC.to_string(),
        partitions: config.groups.offsets_partitions as i32,
        config: TopicConfig {
            retention_ms: None,
            retention_bytes: None,
            ..admin::default_topic_config(shard)
        },
        replication_factor: config.default_replication_factor,
        validate_only: false,
    };
    let (code, msg) = match shard.run_op(0, Op::Admin(op)).await {
        Some(OpResult::Admin(code, msg)) => (code, msg),
        _ => (errors::UNKNOWN_SERVER_ERROR, None),
    };
    if code != errors::NONE && code != errors::TOPIC_ALREADY_EXISTS {
        tracing::info!(code, ?msg, "cannot create {OFFSETS_TOPIC} yet");
    }
    shard
        .topics()
        .get(OFFSETS_TOPIC)
        .cloned()
        .ok_or(COORDINATOR_NOT_AVAILABLE)
}

/// The coordinator of `group`: (node id, host, port), or a Kafka error.
async fn coordinator_of(shard: &Rc<Shard>, group: &str) -> Result<(u32, String, u16), i16> {
    let meta = ensure_offsets_topic(shard).await?;
    let p = partition_for(group, meta.partitions as u32);
    let node = match shard.cluster() {
        None => shard.config().node_id,
        Some(rt) => rt
            .leader_of(group_id(meta.seq, p))
            .and_then(|l| l.leader)
            .ok_or(COORDINATOR_NOT_AVAILABLE)?,
    };
    metadata::brokers(shard)
        .into_iter()
        .find(|b| b.0 == node)
        .ok_or(COORDINATOR_NOT_AVAILABLE)
}

pub async fn find_coordinator(
    shard: &Rc<Shard>,
    r: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys: Vec<String> = if version >= 4 {
        r.coordinator_keys.iter().map(|k| k.to_string()).collect()
    } else {
        vec![r.key.to_string()]
    };
    let mut found = Vec::with_capacity(keys.len());
    for key in keys {
        let answer = if r.key_type != 0 {
            // Transactions are not implemented: no transaction coordinator.
            Err(COORDINATOR_NOT_AVAILABLE)
        } else {
            coordinator_of(shard, &key).await
        };
        let mut c = Coordinator::default();
        c.key = s(&key);
        match answer {
            Ok((id, host, port)) => {
                c.node_id = (id as i32).into();
                c.host = s(&host);
                c.port = i32::from(port);
            }
            Err(code) => {
                c.error_code = code;
                c.node_id = (-1).into();
                c.port = -1;
            }
        }
        found.push(c);
    }
    let mut out = FindCoordinatorResponse::default();
    if version >= 4 {
        out.coordinators = found;
    } else if let Some(c) = found.pop() {
        out.error_code = c.error_code;
        out.node_id = c.node_id;
        out.host = c.host;
        out.port = c.port;
    }
    out
}

/// Run a call at the group's coordinator shard on this node.
async fn call(shard: &Rc<Shard>, group: &str, call: GroupCall) -> GroupReply {
    let Some(meta) = shard.topics().get(OFFSETS_TOPIC).cloned() else {
        return GroupReply::Error(COORDINATOR_NOT_AVAILABLE);
    };
    let p = partition_for(group, meta.partitions as u32);
    let owner = shard.owner_of(OFFSETS_TOPIC, p);
    match shard.run_op(owner, Op::Group { partition: p, call }).await {
        Some(OpResult::Group(reply)) => reply,
        _ => GroupReply::Error(COORDINATOR_NOT_AVAILABLE),
    }
}

fn opt(v: &Option<StrBytes>) -> Option<String> {
    v.as_ref().map(|s| s.to_string())
}

pub async fn join_group(
    shard: &Rc<Shard>,
    r: JoinGroupRequest,
    version: i16,
    client_id: Option<String>,
    peer: Option<SocketAddr>,
) -> JoinGroupResponse {
    let group = r.group_id.0.to_string();
    let mut out = JoinGroupResponse::default();
    out.member_id = r.member_id.clone();
    out.generation_id = -1;
    if group.is_empty() {
        out.error_code = INVALID_GROUP_ID;
        return out;
    }
    let request = JoinRequest {
        group: group.clone(),
        member_id: r.member_id.to_string(),
        instance_id: opt(&r.group_instance_id),
        client_id: client_id.unwrap_or_default(),
        client_host: peer.map_or_else(String::new, |p| format!("/{}", p.ip())),
        session_timeout_ms: r.session_timeout_ms.max(0) as u64,
        // v0 has no rebalance timeout: it is the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            r.rebalance_timeout_ms.max(0) as u64
        } else {
            r.session_timeout_ms.max(0) as u64
        },
        protocol_type: r.protocol_type.to_string(),
        protocols: r
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member: version >= 4,
        fresh_member_id: String::new(),
    };
    match call(shard, &group, GroupCall::Join(request)).await {
        GroupReply::Join(j) => {
            out.error_code = j.error;
            out.generation_id = j.generation;
            if version >= 7 {
                out.protocol_type = j.protocol_type.as_deref().map(s);
            }
            out.protocol_name = match (version >= 7, j.protocol_name) {
                (_, Some(p)) => Some(s(&p)),
                (true, None) => None,
                (false, None) => Some(StrBytes::default()),
            };
            out.leader = s(&j.leader);
            if version >= 9 {
                out.skip_assignment = j.skip_assignment;
            }
            out.member_id = s(&j.member_id);
            out.members = j
                .members
                .into_iter()
                .map(|m| {
                    let mut jm = JoinGroupResponseMember::default();
                    jm.member_id = s(&m.member_id);
                    if version >= 5 {
                        jm.group_instance_id = m.instance_id.as_deref().map(s);
                    }
                    jm.metadata = m.metadata;
                    jm
                })
                .collect();
        }
        GroupReply::Error(code) => out.error_code = code,
        _ => out.error_code = errors::UNKNOWN_SERVER_ERROR,
    }
    if version < 7 && out.protocol_name.is_none() {
        out.protocol_name = Some(StrBytes::default());
    }
    out
}

pub async fn sync_group(shard: &Rc<Shard>, r: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let group = r.group_id.0.to_string();
    let request = SyncRequest {
        group: group.clone(),
        generation: r.generation_id,
        member_id: r.member_id.to_string(),
        instance_id: opt(&r.group_instance_id),
        protocol_type: opt(&r.protocol_type),
        protocol_name: opt(&r.protocol_name),
        assignments: r
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let mut out = SyncGroupResponse::default();
    match call(shard, &group, GroupCall::Sync(request)).await {
        GroupReply::Sync(sr) => {
            out.error_code = sr.error;
            if version >= 5 {
                out.protocol_type = sr.protocol_type.as_deref().map(s);
                out.protocol_name = sr.protocol_name.as_deref().map(s);
            }
            out.assignment = sr.assignment;
        }
        GroupReply::Error(code) => out.error_code = code,
        _ => out.error_code = errors::UNKNOWN_SERVER_ERROR,
    }
    out
}

pub async fn heartbeat(shard: &Rc<Shard>, r: HeartbeatRequest) -> HeartbeatResponse {
    let group = r.group_id.0.to_string();
    let mut out = HeartbeatResponse::default();
    out.error_code = match call(
        shard,
        &group,
        GroupCall::Heartbeat {
            group: group.clone(),
            generation: r.generation_id,
            member_id: r.member_id.to_string(),
            instance_id: opt(&r.group_instance_id),
        },
    )
    .await
    {
        GroupReply::Heartbeat(code) | GroupReply::Error(code) => code,
        _ => errors::UNKNOWN_SERVER_ERROR,
    };
    out
}

pub async fn leave_group(
    shard: &Rc<Shard>,
    r: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group = r.group_id.0.to_string();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        r.members
            .iter()
            .map(|m| (m.member_id.to_string(), opt(&m.group_instance_id)))
            .collect()
    } else {
        vec![(r.member_id.to_string(), None)]
    };
    let mut out = LeaveGroupResponse::default();
    let reply = call(
        shard,
        &group,
        GroupCall::Leave {
            group: group.clone(),
            members: members.clone(),
        },
    )
    .await;
    let (code, codes) = match reply {
        GroupReply::Leave(code, codes) => (code, codes),
        GroupReply::Error(code) => (code, vec![code; members.len()]),
        _ => (
            errors::UNKNOWN_SERVER_ERROR,
            vec![errors::UNKNOWN_SERVER_ERROR; members.len()],
        ),
    };
    if version >= 3 {
        out.error_code = code;
        out.members = members
            .into_iter()
            .zip(codes)
            .map(|((member_id, instance_id), code)| {
                let mut m = MemberResponse::default();
                m.member_id = s(&member_id);
                m.group_instance_id = instance_id.as_deref().map(s);
                m.error_code = code;
                m
            })
            .collect();
    } else {
        // One member: its code is the answer.
        out.error_code = if code != errors::NONE {
            code
        } else {
            codes.first().copied().unwrap_or(errors::NONE)
        };
    }
    out
}

pub async fn offset_commit(shard: &Rc<Shard>, r: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = r.group_id.0.to_string();
    let view = shard.topics();
    // Per (topic, partition): an early error, or None to commit.
    let mut rows: Vec<(String, i32, Option<i16>)> = Vec::new();
    let mut offsets = Vec::new();
    for t in &r.topics {
        let name = t.name.0.to_string();
        for p in &t.partitions {
            let early = if view
                .get(&name)
                .is_none_or(|m| p.partition_index < 0 || p.partition_index >= m.partitions)
            {
                Some(errors::UNKNOWN_TOPIC_OR_PARTITION)
            } else if p
                .committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > OFFSET_METADATA_BYTES_MAX)
            {
                Some(OFFSET_METADATA_TOO_LARGE)
            } else {
                offsets.push((
                    name.clone(),
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    opt(&p.committed_metadata),
                ));
                None
            };
            rows.push((name.clone(), p.partition_index, early));
        }
    }
    let result: Result<Vec<i16>, i16> = if group.is_empty() {
        Err(INVALID_GROUP_ID)
    } else if offsets.is_empty() {
        Ok(Vec::new())
    } else {
        match call(
            shard,
            &group,
            GroupCall::Commit {
                group: group.clone(),
                generation: r.generation_id_or_member_epoch,
                member_id: r.member_id.to_string(),
                instance_id: opt(&r.group_instance_id),
                offsets,
            },
        )
        .await
        {
            GroupReply::Commit(r) => r,
            GroupReply::Error(code) => Err(code),
            _ => Err(errors::UNKNOWN_SERVER_ERROR),
        }
    };
    let mut codes = match &result {
        Ok(codes) => codes.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let mut out = OffsetCommitResponse::default();
    for (topic, partition, early) in rows {
        let code = match (early, &result) {
            (Some(code), _) => code,
            (None, Err(code)) => *code,
            (None, Ok(_)) => codes.next().unwrap_or(errors::UNKNOWN_SERVER_ERROR),
        };
        let mut p = OffsetCommitResponsePartition::default();
        p.partition_index = partition;
        p.error_code = code;
        push_partition!(out.topics, OffsetCommitResponseTopic, &topic, p);
    }
    out
}

/// One group's committed offsets: (error code, [(topic, partition, committed)]).
async fn fetch_offsets(
    shard: &Rc<Shard>,
    group: &str,
    partitions: Option<Vec<(String, i32)>>,
) -> (i16, Vec<(String, i32, Option<coord::Committed>)>) {
    match call(
        shard,
        group,
        GroupCall::FetchOffsets {
            group: group.to_string(),
            partitions: partitions.clone(),
        },
    )
    .await
    {
        GroupReply::Offsets(list) => (errors::NONE, list),
        GroupReply::Error(code) => (
            code,
            partitions
                .unwrap_or_default()
                .into_iter()
                .map(|(t, p)| (t, p, None))
                .collect(),
        ),
        _ => (errors::UNKNOWN_SERVER_ERROR, Vec::new()),
    }
}

/// The (topic, partition) pairs an OffsetFetch names (its two topic types).
fn requested<'a>(
    topics: impl Iterator<Item = (&'a TopicName, &'a Vec<i32>)>,
) -> Vec<(String, i32)> {
    topics
        .flat_map(|(name, partitions)| partitions.iter().map(|p| (name.0.to_string(), *p)))
        .collect()
}

pub async fn offset_fetch(
    shard: &Rc<Shard>,
    r: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let mut out = OffsetFetchResponse::default();
    if version >= 8 {
        for g in &r.groups {
            let group = g.group_id.0.to_string();
            let partitions = g
                .topics
                .as_ref()
                .map(|ts| requested(ts.iter().map(|t| (&t.name, &t.partition_indexes))));
            let (code, list) = fetch_offsets(shard, &group, partitions).await;
            let mut rg = OffsetFetchResponseGroup::default();
            rg.group_id = g.group_id.clone();
            rg.error_code = code;
            for (topic, partition, c) in list {
                let mut p = OffsetFetchResponsePartitions::default();
                p.partition_index = partition;
                p.committed_offset = c.as_ref().map_or(-1, |c| c.offset);
                p.committed_leader_epoch = c.as_ref().map_or(-1, |c| c.leader_epoch);
                p.metadata = Some(s(c
                    .as_ref()
                    .and_then(|c| c.metadata.as_deref())
                    .unwrap_or("")));
                push_partition!(rg.topics, OffsetFetchResponseTopics, &topic, p);
            }
            out.groups.push(rg);
        }
        return out;
    }
    let group = r.group_id.0.to_string();
    let partitions = r
        .topics
        .as_ref()
        .map(|ts| requested(ts.iter().map(|t| (&t.name, &t.partition_indexes))));
    let (code, list) = fetch_offsets(shard, &group, partitions).await;
    if version >= 2 {
        out.error_code = code;
    }
    for (topic, partition, c) in list {
        let mut p = OffsetFetchResponsePartition::default();
        p.partition_index = partition;
        p.committed_offset = c.as_ref().map_or(-1, |c| c.offset);
        if version >= 5 {
            p.committed_leader_epoch = c.as_ref().map_or(-1, |c| c.leader_epoch);
        }
        p.metadata = Some(s(c
            .as_ref()
            .and_then(|c| c.metadata.as_deref())
            .unwrap_or("")));
        if version < 2 && code != errors::NONE {
            p.error_code = code;
        }
        push_partition!(out.topics, OffsetFetchResponseTopic, &topic, p);
    }
    out
}

pub async fn list_groups(
    shard: &Rc<Shard>,
    r: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let mut out = ListGroupsResponse::default();
    let states: Vec<String> = r.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = r.types_filter.iter().map(|s| s.to_lowercase()).collect();
    if !types.is_empty() && !types.iter().any(|t| t == "classic") {
        return out;
    }
    for owner in 0..shard.count {
        let reply = shard.run_op(owner, Op::ListGroups).await;
        let Some(OpResult::Group(GroupReply::List(groups, code))) = reply else {
            out.error_code = COORDINATOR_NOT_AVAILABLE;
            continue;
        };
        if code != errors::NONE {
            out.error_code = code;
        }
        for (group, protocol_type, state) in groups {
            if !states.is_empty() && !states.contains(&state.to_lowercase()) {
                continue;
            }
            let mut g = ListedGroup::default();
            g.group_id = GroupId(s(&group));
            g.protocol_type = s(&protocol_type);
            if version >= 4 {
                g.group_state = s(state);
            }
            if version >= 5 {
                g.group_type = s("classic");
            }
            out.groups.push(g);
        }
    }
    out
}

pub async fn describe_groups(
    shard: &Rc<Shard>,
    r: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut out = DescribeGroupsResponse::default();
    for id in &r.groups {
        let group = id.0.to_string();
        let mut d = DescribedGroup::default();
        d.group_id = id.clone();
        if version >= 3 {
            // Kafka's "not requested": no ACLs here.
            d.authorized_operations = i32::MIN;
        }
        match call(
            shard,
            &group,
            GroupCall::Describe {
                group: group.clone(),
            },
        )
        .await
        {
            GroupReply::Describe(Some(g)) => {
                d.group_state = s(g.state);
                d.protocol_type = s(&g.protocol_type);
                d.protocol_data = s(&g.protocol);
                d.members = g
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut dm = DescribedGroupMember::default();
                        dm.member_id = s(&m.member_id);
                        if version >= 4 {
                            dm.group_instance_id = m.instance_id.as_deref().map(s);
                        }
                        dm.client_id = s(&m.client_id);
                        dm.client_host = s(&m.client_host);
                        dm.member_metadata = m.metadata;
                        dm.member_assignment = m.assignment;
                        dm
                    })
                    .collect();
            }
            GroupReply::Describe(None) => d.group_state = s("Dead"),
            GroupReply::Error(code) => d.error_code = code,
            _ => d.error_code = errors::UNKNOWN_SERVER_ERROR,
        }
        out.groups.push(d);
    }
    out
}

pub async fn delete_groups(shard: &Rc<Shard>, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut out = DeleteGroupsResponse::default();
    for id in &r.groups_names {
        let group = id.0.to_string();
        let mut d = delete_groups_response::DeletableGroupResult::default();
        d.group_id = id.clone();
        d.error_code = match call(
            shard,
            &group,
            GroupCall::Delete {
                group: group.clone(),
            },
        )
        .await
        {
            GroupReply::Delete(code) | GroupReply::Error(code) => code,
            _ => errors::UNKNOWN_SERVER_ERROR,
        };
        out.results.push(d);
    }
    out
}

pub async fn offset_delete(shard: &Rc<Shard>, r: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = r.group_id.0.to_string();
    let partitions: Vec<(String, i32)> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let mut out = OffsetDeleteResponse::default();
    let result = match call(
        shard,
        &group,
        GroupCall::DeleteOffsets {
            group: group.clone(),
            partitions: partitions.clone(),
        },
    )
    .await
    {
        GroupReply::DeleteOffsets(r) => r,
        GroupReply::Error(code) => Err(code),
        _ => Err(errors::UNKNOWN_SERVER_ERROR),
    };
    let codes = match result {
        Ok(codes) => codes,
        Err(code) => {
            out.error_code = code;
            return out;
        }
    };
    for ((topic, partition), code) in partitions.into_iter().zip(codes) {
        let mut p = OffsetDeleteResponsePartition::default();
        p.partition_index = partition;
        p.error_code = code;
        push_partition!(out.topics, OffsetDeleteResponseTopic, &topic, p);
    }
    out
}
