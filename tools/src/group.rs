//! `strand group list|describe|delete`: consumer groups, over the Kafka protocol.
//!
//! * `list` asks every broker of the cluster (from Metadata) for the groups it
//!   coordinates (ListGroups; the state comes with v4+) and merges the answers, sorted by
//!   group id. A broker that cannot be asked is a note, not a failure, unless no broker
//!   answers at all.
//! * `describe` finds the group's coordinator (FindCoordinator, key type 0 = group),
//!   asks it for the members (DescribeGroups) and the committed offsets (OffsetFetch,
//!   all topics), decodes each member's assignment (Kafka's consumer protocol when the
//!   protocol type is `consumer`), and asks each partition's leader for its log end
//!   offset (ListOffsets, latest) to compute the lag.
//! * `delete` sends DeleteGroups to the coordinator.
//!
//! COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE and NOT_COORDINATOR are
//! retried for a few seconds (`COORDINATOR_RETRY`), finding the coordinator anew each
//! time; then the command fails with the last error.
//!
//! # JSON output
//!
//! `group list --output json`:
//!
//! ```text
//! {"groups":[{"group":"g","protocol_type":"consumer","state":"Stable"}],"notes":[]}
//! ```
//!
//! `state` is null when the broker answers ListGroups below v4 (no state then);
//! `notes` names the brokers that could not be asked, and why.
//!
//! `group describe GROUP --output json`:
//!
//! ```text
//! {"group":"g","coordinator":{"id":0,"host":"h","port":9092},"state":"Stable",
//!  "protocol_type":"consumer","protocol":"range",
//!  "members":[{"member_id":"m","group_instance_id":null,"client_id":"c","host":"/10.0.0.1",
//!              "assignment":[{"topic":"t","partitions":[0,1]}],"assignment_bytes":40,
//!              "assignment_error":null}],
//!  "offsets":[{"topic":"t","partition":0,"committed":10,"log_end":40,"lag":30,
//!              "member":{"member_id":"m","client_id":"c","host":"/10.0.0.1"},"error":null}],
//!  "total_lag":30}
//! ```
//!
//! (on one line). `offsets` has one entry per partition with a committed offset or in some
//! member's assignment, sorted by topic then partition; `committed`, `log_end` and `lag`
//! are null when unknown (no commit yet, leader unreachable, ...), `error` says why.
//! `lag` is `log_end - committed`, never below 0; `total_lag` sums the known lags.
//! `assignment` is null when the bytes are not the consumer protocol (or do not decode);
//! `assignment_error` then says why and `assignment_bytes` gives their size.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Subcommand};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, ListGroupsRequest,
    OffsetFetchRequest, OffsetFetchResponse,
};
use kafka_protocol::protocol::{Decodable, Message, StrBytes};

use crate::cli::{Output, OutputArgs};
use crate::client::Client;
use crate::cluster::{list_offsets_request, PartitionKey};
use crate::errors::{check, error_name, BrokerError};
use crate::render::{optional_cell, table, Json};
use crate::topic::{metadata_request, BrokerInfo, ClusterMetadata, TIMESTAMP_LATEST};

/// FindCoordinator `key_type` of a consumer group (1 would be a transaction).
const KEY_TYPE_GROUP: i8 = 0;
const ERROR_COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const ERROR_COORDINATOR_NOT_AVAILABLE: i16 = 15;
const ERROR_NOT_COORDINATOR: i16 = 16;
const ERROR_NON_EMPTY_GROUP: i16 = 68;
const ERROR_GROUP_ID_NOT_FOUND: i16 = 69;
/// Errors that mean "ask again, maybe elsewhere": the coordinator is moving or loading.
const RETRIABLE_COORDINATOR_ERRORS: [i16; 3] = [
    ERROR_COORDINATOR_LOAD_IN_PROGRESS,
    ERROR_COORDINATOR_NOT_AVAILABLE,
    ERROR_NOT_COORDINATOR,
];
/// The state DescribeGroups reports for a group that does not exist.
const STATE_DEAD: &str = "Dead";
/// The protocol type of Kafka consumers, whose assignments we can decode.
const PROTOCOL_TYPE_CONSUMER: &str = "consumer";

/// How long to keep asking when the coordinator is not ready, and how long to wait
/// between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub deadline: Duration,
    pub backoff: Duration,
}

/// What the commands use: a coordinator that is loading or moving is given 5 seconds.
pub const COORDINATOR_RETRY: Retry = Retry {
    deadline: Duration::from_secs(5),
    backoff: Duration::from_millis(250),
};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List the groups of every broker with their protocol type and state
    /// (Metadata, then ListGroups to each broker).
    List(OutputArgs),
    /// Show a group's state, members and assignments, and per partition its committed
    /// offset, log end offset and lag (FindCoordinator, DescribeGroups, OffsetFetch,
    /// ListOffsets).
    Describe(GroupDescribeArgs),
    /// Delete a group that has no active members, with its committed offsets
    /// (DeleteGroups).
    Delete(GroupDeleteArgs),
}

#[derive(Debug, Args)]
pub struct GroupDescribeArgs {
    /// The group id.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub group: String,

    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct GroupDeleteArgs {
    /// The group id.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub group: String,
}

// ---------------------------------------------------------------------------------------
// Request builders: plain functions of the arguments and the negotiated version.
// ---------------------------------------------------------------------------------------

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_owned()))
}

/// v0 has only the key; v1-3 add the key type; v4+ batch the keys.
pub fn find_coordinator_request(group: &str, version: i16) -> FindCoordinatorRequest {
    let key = StrBytes::from_string(group.to_owned());
    let request = FindCoordinatorRequest::default();
    if version >= 4 {
        request
            .with_key_type(KEY_TYPE_GROUP)
            .with_coordinator_keys(vec![key])
    } else if version >= 1 {
        request.with_key(key).with_key_type(KEY_TYPE_GROUP)
    } else {
        request.with_key(key)
    }
}

/// No filter: every group, whatever its state or type.
pub fn list_groups_request() -> ListGroupsRequest {
    ListGroupsRequest::default()
}

pub fn describe_groups_request(group: &str) -> DescribeGroupsRequest {
    DescribeGroupsRequest::default().with_groups(vec![group_id(group)])
}

/// Every committed offset of `group`: null topics (v2+), inside the `groups` array from v8.
pub fn offset_fetch_request(group: &str, version: i16) -> OffsetFetchRequest {
    if version >= 8 {
        OffsetFetchRequest::default()
            .with_topics(Some(Vec::new()))
            .with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(group_id(group))
                .with_topics(None)])
    } else {
        OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(None)
    }
}

pub fn delete_groups_request(group: &str) -> DeleteGroupsRequest {
    DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)])
}

// ---------------------------------------------------------------------------------------
// Response readers.
// ---------------------------------------------------------------------------------------

/// The coordinator named by a FindCoordinator answer, or the broker's error.
pub fn coordinator_from_response(
    group: &str,
    version: i16,
    response: &FindCoordinatorResponse,
) -> Result<BrokerInfo> {
    let operation = || format!("find the coordinator of group {group}");
    let (code, message, id, host, port) = if version >= 4 {
        let c = response
            .coordinators
            .iter()
            .find(|c| c.key.as_str() == group)
            .ok_or_else(|| anyhow!("FindCoordinator did not answer for group {group}"))?;
        (
            c.error_code,
            c.error_message.as_deref(),
            c.node_id.0,
            &c.host,
            c.port,
        )
    } else {
        (
            response.error_code,
            response.error_message.as_deref(),
            response.node_id.0,
            &response.host,
            response.port,
        )
    };
    check(code, message, operation)?;
    if id < 0 {
        // No error but no node: as good as "not available", so it is retried.
        return Err(BrokerError {
            operation: operation(),
            code: ERROR_COORDINATOR_NOT_AVAILABLE,
            message: Some(format!("the broker named node {id}")),
        }
        .into());
    }
    Ok(BrokerInfo {
        id,
        host: host.to_string(),
        port,
    })
}

/// A committed offset: `Ok(None)` when the partition has none (-1), `Err` with the
/// partition's error code.
pub type Committed = BTreeMap<PartitionKey, Result<Option<i64>, i16>>;

/// The committed offsets of `group` in an OffsetFetch answer, or the group's error.
pub fn committed_from_response(
    group: &str,
    version: i16,
    response: OffsetFetchResponse,
) -> Result<Committed> {
    let operation = || format!("fetch the committed offsets of group {group}");
    let committed = |offset: i64, code: i16| {
        if code != 0 {
            Err(code)
        } else {
            Ok((offset >= 0).then_some(offset))
        }
    };
    let mut out = Committed::new();
    if version >= 8 {
        let g = response
            .groups
            .into_iter()
            .find(|g| g.group_id.0.as_str() == group)
            .ok_or_else(|| anyhow!("OffsetFetch did not answer for group {group}"))?;
        check(g.error_code, None, operation)?;
        for t in g.topics {
            for p in t.partitions {
                let key = (t.name.0.to_string(), p.partition_index);
                out.insert(key, committed(p.committed_offset, p.error_code));
            }
        }
    } else {
        check(response.error_code, None, operation)?;
        for t in response.topics {
            for p in t.partitions {
                let key = (t.name.0.to_string(), p.partition_index);
                out.insert(key, committed(p.committed_offset, p.error_code));
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Assignments and lag: pure functions.
// ---------------------------------------------------------------------------------------

/// A member's assignment as the group coordinator holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// Topic → partitions (sorted, no repeats), decoded from Kafka's consumer protocol.
    /// Empty while the group rebalances.
    Partitions(BTreeMap<String, Vec<i32>>),
    /// Bytes we do not read: another protocol type, or not valid consumer protocol.
    Raw { bytes: usize, why: String },
}

/// Decodes a member's assignment bytes: for protocol type `consumer`, an i16 version then
/// a `ConsumerProtocolAssignment` body. A version newer than kafka-protocol knows is read
/// as the newest it knows, as Kafka's own `ConsumerProtocol` does (new versions only add
/// fields at the end).
pub fn decode_assignment(protocol_type: &str, bytes: &Bytes) -> Assignment {
    let raw = |why: String| Assignment::Raw {
        bytes: bytes.len(),
        why,
    };
    if protocol_type != PROTOCOL_TYPE_CONSUMER {
        return raw(format!("protocol type \"{protocol_type}\" is not decoded"));
    }
    if bytes.is_empty() {
        return Assignment::Partitions(BTreeMap::new());
    }
    let [high, low, ..] = bytes[..] else {
        return raw("too short for a consumer protocol assignment".to_owned());
    };
    let version = i16::from_be_bytes([high, low]);
    if version < ConsumerProtocolAssignment::VERSIONS.min {
        return raw(format!(
            "unknown consumer protocol assignment version {version}"
        ));
    }
    let version = version.min(ConsumerProtocolAssignment::VERSIONS.max);
    let mut body = bytes.slice(2..);
    match ConsumerProtocolAssignment::decode(&mut body, version) {
        Ok(assignment) => {
            let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for t in assignment.assigned_partitions {
                topics
                    .entry(t.topic.0.to_string())
                    .or_default()
                    .extend(t.partitions);
            }
            for partitions in topics.values_mut() {
                partitions.sort_unstable();
                partitions.dedup();
            }
            Assignment::Partitions(topics)
        }
        Err(err) => raw(format!("not a valid consumer protocol assignment: {err}")),
    }
}

/// How far a group is behind on a partition: `log_end - committed`, never below 0
/// (a committed offset past the log end means the log lost records, not negative
/// work); unknown when either offset is.
pub fn lag(committed: Option<i64>, log_end: Option<i64>) -> Option<i64> {
    match (committed, log_end) {
        (Some(committed), Some(log_end)) => Some(log_end.saturating_sub(committed).max(0)),
        _ => None,
    }
}

/// Each partition's log end offset, or why it is unknown.
pub type LogEnds = BTreeMap<PartitionKey, Result<i64, String>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub member_id: String,
    /// The static membership id (KIP-345), if the member has one.
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The size of the assignment bytes as the coordinator holds them.
    pub assignment_bytes: usize,
    pub assignment: Assignment,
}

/// One partition of the group: committed offset, log end, lag and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRow {
    pub topic: String,
    pub partition: i32,
    /// `None`: nothing committed yet (or the broker refused, see `error`).
    pub committed: Option<i64>,
    pub log_end: Option<i64>,
    pub lag: Option<i64>,
    /// The index in `members` of the member the partition is assigned to.
    pub member: Option<usize>,
    /// Why an offset is missing or odd.
    pub error: Option<String>,
}

/// The partitions assigned to some member: partition → index of the (first) member.
pub fn owners(members: &[MemberInfo]) -> BTreeMap<PartitionKey, usize> {
    let mut owners = BTreeMap::new();
    for (i, member) in members.iter().enumerate() {
        if let Assignment::Partitions(topics) = &member.assignment {
            for (topic, partitions) in topics {
                for &p in partitions {
                    owners.entry((topic.clone(), p)).or_insert(i);
                }
            }
        }
    }
    owners
}

/// One row per partition that has a committed offset or an owner, sorted by topic then
/// partition.
pub fn offset_rows(
    members: &[MemberInfo],
    committed: &Committed,
    log_ends: &LogEnds,
) -> Vec<OffsetRow> {
    let owners = owners(members);
    let keys: BTreeSet<&PartitionKey> = committed.keys().chain(owners.keys()).collect();
    keys.into_iter()
        .map(|key| {
            let mut notes = Vec::new();
            let committed_offset = match committed.get(key) {
                Some(Ok(offset)) => *offset,
                Some(Err(code)) => {
                    notes.push(format!("committed offset: {}", error_name(*code)));
                    None
                }
                None => None,
            };
            let log_end = match log_ends.get(key) {
                Some(Ok(offset)) => Some(*offset),
                Some(Err(why)) => {
                    notes.push(format!("log end: {why}"));
                    None
                }
                None => None,
            };
            if let (Some(c), Some(end)) = (committed_offset, log_end) {
                if c > end {
                    notes.push("committed offset is past the log end".to_owned());
                }
            }
            OffsetRow {
                topic: key.0.clone(),
                partition: key.1,
                committed: committed_offset,
                log_end,
                lag: lag(committed_offset, log_end),
                member: owners.get(key).copied(),
                error: (!notes.is_empty()).then(|| notes.join("; ")),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Connections: the bootstrap connection, and one more per other broker as needed.
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Connections<'a> {
    bootstrap: &'a mut Client,
    /// With one broker, the bootstrap connection is that broker, whatever address it
    /// advertises (containers often advertise one the client cannot reach).
    single_broker: bool,
    others: HashMap<String, Client>,
}

impl<'a> Connections<'a> {
    fn new(bootstrap: &'a mut Client, brokers: &[BrokerInfo]) -> Self {
        Self {
            bootstrap,
            single_broker: brokers.len() <= 1,
            others: HashMap::new(),
        }
    }

    /// The connection to the broker at `addr`, opened on first use.
    fn to(&mut self, addr: &str) -> Result<&mut Client> {
        if self.single_broker || addr == self.bootstrap.addr() {
            return Ok(&mut *self.bootstrap);
        }
        Ok(match self.others.entry(addr.to_owned()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(Client::connect(addr)?),
        })
    }
}

fn fetch_metadata(client: &mut Client, topics: Option<&[&str]>) -> Result<ClusterMetadata> {
    let version = client.version(ApiKey::Metadata)?;
    let response = client.send(&metadata_request(topics, version), version)?;
    Ok(ClusterMetadata::from_response(response))
}

/// The brokers of the cluster (Metadata for no topic).
fn fetch_brokers(client: &mut Client) -> Result<Vec<BrokerInfo>> {
    Ok(fetch_metadata(client, Some(&[]))?.brokers)
}

fn is_retriable(err: &anyhow::Error) -> bool {
    err.downcast_ref::<BrokerError>()
        .is_some_and(|e| RETRIABLE_COORDINATOR_ERRORS.contains(&e.code))
}

fn not_found(group: &str) -> anyhow::Error {
    anyhow!("group {group} not found")
}

/// Finds the coordinator of `group` and runs `op` on a connection to it; while the
/// answer is a retriable coordinator error, finds it anew and tries again, until
/// `retry.deadline`.
fn at_coordinator<T>(
    conns: &mut Connections<'_>,
    group: &str,
    retry: Retry,
    mut op: impl FnMut(&mut Client) -> Result<T>,
) -> Result<(BrokerInfo, T)> {
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let err = match attempt(conns, group, &mut op) {
            Err(err) if is_retriable(&err) => err,
            done => return done,
        };
        let elapsed = started.elapsed();
        if elapsed + retry.backoff > retry.deadline {
            return Err(err.context(format!(
                "the coordinator of group {group} was not ready after {attempts} {} in {:.1} s",
                if attempts == 1 { "attempt" } else { "attempts" },
                elapsed.as_secs_f64()
            )));
        }
        std::thread::sleep(retry.backoff);
    }
}

fn attempt<T>(
    conns: &mut Connections<'_>,
    group: &str,
    op: &mut impl FnMut(&mut Client) -> Result<T>,
) -> Result<(BrokerInfo, T)> {
    let version = conns.bootstrap.version(ApiKey::FindCoordinator)?;
    let response = conns
        .bootstrap
        .send(&find_coordinator_request(group, version), version)?;
    let coordinator = coordinator_from_response(group, version, &response)?;
    let client = conns.to(&coordinator.address()).with_context(|| {
        format!(
            "cannot connect to the coordinator of group {group} (broker {})",
            coordinator.id
        )
    })?;
    let value = op(client)?;
    Ok((coordinator, value))
}

// ---------------------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group: String,
    /// `consumer` for Kafka consumers; empty for a group that only commits offsets.
    pub protocol_type: String,
    /// `None` from brokers answering ListGroups below v4.
    pub state: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Sorted by group id.
    pub groups: Vec<ListedGroup>,
    /// The brokers that could not be asked, and why.
    pub notes: Vec<String>,
}

pub fn list(client: &mut Client, output: Output) -> Result<String> {
    let listing = list_groups(client)?;
    Ok(match output {
        Output::Text => render_list_text(&listing),
        Output::Json => format!("{}\n", render_list_json(&listing)),
    })
}

fn list_groups(client: &mut Client) -> Result<GroupListing> {
    let brokers = fetch_brokers(client).context("cannot list the brokers of the cluster")?;
    let mut conns = Connections::new(client, &brokers);
    let mut groups: BTreeMap<String, ListedGroup> = BTreeMap::new();
    let mut notes = Vec::new();
    if brokers.is_empty() {
        // A broker that names no broker at all: ask it alone.
        for g in list_at(conns.bootstrap)? {
            groups.entry(g.group.clone()).or_insert(g);
        }
    }
    for broker in &brokers {
        let address = broker.address();
        match conns.to(&address).and_then(list_at) {
            Ok(found) => {
                for g in found {
                    // A group moving between coordinators may be listed twice.
                    groups.entry(g.group.clone()).or_insert(g);
                }
            }
            Err(err) => notes.push(format!("broker {} at {address}: {err:#}", broker.id)),
        }
    }
    if !brokers.is_empty() && notes.len() == brokers.len() {
        bail!("no broker could list its groups: {}", notes.join("; "));
    }
    Ok(GroupListing {
        groups: groups.into_values().collect(),
        notes,
    })
}

fn list_at(client: &mut Client) -> Result<Vec<ListedGroup>> {
    let version = client.version(ApiKey::ListGroups)?;
    let response = client.send(&list_groups_request(), version)?;
    check(response.error_code, None, || {
        format!("list groups at {}", client.addr())
    })?;
    Ok(response
        .groups
        .into_iter()
        .map(|g| ListedGroup {
            group: g.group_id.0.to_string(),
            protocol_type: g.protocol_type.to_string(),
            state: (version >= 4).then(|| g.group_state.to_string()),
        })
        .collect())
}

fn dash_if_empty(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

pub fn render_list_text(listing: &GroupListing) -> String {
    let rows: Vec<Vec<String>> = listing
        .groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                dash_if_empty(&g.protocol_type),
                dash_if_empty(g.state.as_deref().unwrap_or_default()),
            ]
        })
        .collect();
    let mut out = table(&["GROUP", "PROTOCOL-TYPE", "STATE"], &rows);
    for note in &listing.notes {
        let _ = writeln!(out, "Note: {note}");
    }
    out
}

pub fn render_list_json(listing: &GroupListing) -> Json {
    let groups = listing
        .groups
        .iter()
        .map(|g| {
            Json::object([
                ("group", Json::str(&g.group)),
                ("protocol_type", Json::str(&g.protocol_type)),
                ("state", Json::opt_str(g.state.as_deref())),
            ])
        })
        .collect();
    Json::object([
        ("groups", Json::Array(groups)),
        (
            "notes",
            Json::Array(listing.notes.iter().map(Json::str).collect()),
        ),
    ])
}

// ---------------------------------------------------------------------------------------
// describe
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    pub coordinator: BrokerInfo,
    pub state: String,
    pub protocol_type: String,
    /// The protocol the group agreed on: the assignor (`range`, ...) for consumers.
    pub protocol: String,
    pub members: Vec<MemberInfo>,
    /// Sorted by topic, then partition.
    pub offsets: Vec<OffsetRow>,
}

impl GroupDescription {
    /// The sum of the known lags.
    pub fn total_lag(&self) -> i64 {
        self.offsets
            .iter()
            .filter_map(|r| r.lag)
            .fold(0, i64::saturating_add)
    }
}

pub fn describe(client: &mut Client, group: &str, output: Output) -> Result<String> {
    let description = describe_group(client, group, COORDINATOR_RETRY)?;
    Ok(match output {
        Output::Text => render_describe_text(&description),
        Output::Json => format!("{}\n", render_describe_json(&description)),
    })
}

/// What the coordinator says of the group itself.
#[derive(Debug)]
struct Described {
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberInfo>,
}

pub fn describe_group(client: &mut Client, group: &str, retry: Retry) -> Result<GroupDescription> {
    let brokers = fetch_brokers(client).context("cannot list the brokers of the cluster")?;
    let mut conns = Connections::new(client, &brokers);
    let (coordinator, (described, committed)) = at_coordinator(&mut conns, group, retry, |c| {
        let described = describe_at(c, group)?;
        let committed = committed_at(c, group)?;
        Ok((described, committed))
    })?;
    let mut partitions: BTreeSet<PartitionKey> = committed.keys().cloned().collect();
    partitions.extend(owners(&described.members).into_keys());
    let log_ends = log_end_offsets(&mut conns, &partitions);
    let offsets = offset_rows(&described.members, &committed, &log_ends);
    Ok(GroupDescription {
        group: group.to_owned(),
        coordinator,
        state: described.state,
        protocol_type: described.protocol_type,
        protocol: described.protocol,
        members: described.members,
        offsets,
    })
}

fn describe_at(client: &mut Client, group: &str) -> Result<Described> {
    let version = client.version(ApiKey::DescribeGroups)?;
    let response = client.send(&describe_groups_request(group), version)?;
    let g = response
        .groups
        .into_iter()
        .find(|g| g.group_id.0.as_str() == group)
        .ok_or_else(|| anyhow!("DescribeGroups did not answer for group {group}"))?;
    if g.error_code == ERROR_GROUP_ID_NOT_FOUND
        || (g.error_code == 0 && g.group_state.as_str() == STATE_DEAD)
    {
        return Err(not_found(group));
    }
    check(g.error_code, g.error_message.as_deref(), || {
        format!("describe group {group}")
    })?;
    let protocol_type = g.protocol_type.to_string();
    let members = g
        .members
        .into_iter()
        .map(|m| MemberInfo {
            member_id: m.member_id.to_string(),
            group_instance_id: m.group_instance_id.map(|id| id.to_string()),
            client_id: m.client_id.to_string(),
            client_host: m.client_host.to_string(),
            assignment_bytes: m.member_assignment.len(),
            assignment: decode_assignment(&protocol_type, &m.member_assignment),
        })
        .collect();
    Ok(Described {
        state: g.group_state.to_string(),
        protocol_type,
        protocol: g.protocol_data.to_string(),
        members,
    })
}

fn committed_at(client: &mut Client, group: &str) -> Result<Committed> {
    let version = client.version(ApiKey::OffsetFetch)?;
    let response = client.send(&offset_fetch_request(group, version), version)?;
    committed_from_response(group, version, response)
}

/// The log end offset (high watermark) of each partition, asked of its leader; failures
/// are recorded per partition, never returned.
fn log_end_offsets(conns: &mut Connections<'_>, partitions: &BTreeSet<PartitionKey>) -> LogEnds {
    let mut out = LogEnds::new();
    if partitions.is_empty() {
        return out;
    }
    let mut topics: Vec<&str> = partitions.iter().map(|(t, _)| t.as_str()).collect();
    topics.dedup(); // Sorted already: a set of (topic, partition).
    let metadata = match fetch_metadata(conns.bootstrap, Some(&topics)) {
        Ok(metadata) => metadata,
        Err(err) => {
            let why = format!("metadata: {err:#}");
            return partitions
                .iter()
                .map(|key| (key.clone(), Err(why.clone())))
                .collect();
        }
    };
    let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for key in partitions {
        let (topic, partition) = key;
        let why = match metadata.topics.iter().find(|t| &t.name == topic) {
            None => "the topic is not in the metadata".to_owned(),
            Some(t) => match t.partitions.iter().find(|p| p.id == *partition) {
                None if t.error_code != 0 => error_name(t.error_code),
                None => "no such partition".to_owned(),
                Some(p) if p.leader < 0 => "no leader".to_owned(),
                Some(p) => {
                    by_leader
                        .entry(p.leader)
                        .or_default()
                        .entry(topic.clone())
                        .or_default()
                        .push(*partition);
                    continue;
                }
            },
        };
        out.insert(key.clone(), Err(why));
    }
    for (leader, asked) in by_leader {
        let outcome = match metadata.brokers.iter().find(|b| b.id == leader) {
            None => Err(anyhow!("leader {leader} is not in the broker list")),
            Some(broker) => conns
                .to(&broker.address())
                .and_then(|client| latest_offsets(client, &asked)),
        };
        let asked_keys = asked
            .iter()
            .flat_map(|(t, ids)| ids.iter().map(move |&p| (t.clone(), p)));
        match outcome {
            Ok(mut found) => {
                for key in asked_keys {
                    let answer = found
                        .remove(&key)
                        .unwrap_or_else(|| Err("no answer".to_owned()));
                    out.insert(key, answer);
                }
            }
            Err(err) => {
                let why = format!("{err:#}");
                out.extend(asked_keys.map(|key| (key, Err(why.clone()))));
            }
        }
    }
    out
}

fn latest_offsets(client: &mut Client, asked: &BTreeMap<String, Vec<i32>>) -> Result<LogEnds> {
    let version = client.version(ApiKey::ListOffsets)?;
    let response = client.send(&list_offsets_request(asked, TIMESTAMP_LATEST), version)?;
    let mut out = LogEnds::new();
    for t in response.topics {
        for p in t.partitions {
            let answer = if p.error_code == 0 {
                Ok(p.offset)
            } else {
                Err(error_name(p.error_code))
            };
            out.insert((t.name.0.to_string(), p.partition_index), answer);
        }
    }
    Ok(out)
}

/// `orders:0,1 audit:3`, `none`, or why the assignment is not shown.
fn assignment_cell(assignment: &Assignment) -> String {
    match assignment {
        Assignment::Partitions(topics) if topics.is_empty() => "none".to_owned(),
        Assignment::Partitions(topics) => topics
            .iter()
            .map(|(topic, partitions)| format!("{topic}:{}", crate::render::id_list(partitions)))
            .collect::<Vec<_>>()
            .join(" "),
        Assignment::Raw { bytes, why } => format!("{bytes} bytes ({why})"),
    }
}

pub fn render_describe_text(d: &GroupDescription) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Group:          {}", d.group);
    let _ = writeln!(out, "State:          {}", d.state);
    let _ = writeln!(out, "Protocol type:  {}", dash_if_empty(&d.protocol_type));
    let _ = writeln!(out, "Protocol:       {}", dash_if_empty(&d.protocol));
    let _ = writeln!(
        out,
        "Coordinator:    {} ({})",
        d.coordinator.id,
        d.coordinator.address()
    );
    let _ = writeln!(out, "Members:        {}", d.members.len());
    out.push('\n');
    if d.offsets.is_empty() {
        out += "No committed offsets and no assigned partitions.\n";
    } else {
        let rows: Vec<Vec<String>> = d
            .offsets
            .iter()
            .map(|r| {
                let member = r.member.and_then(|i| d.members.get(i));
                let cell = |f: fn(&MemberInfo) -> &str| member.map_or("-", f).to_owned();
                vec![
                    r.topic.clone(),
                    r.partition.to_string(),
                    optional_cell(r.committed),
                    optional_cell(r.log_end),
                    optional_cell(r.lag),
                    cell(|m| &m.member_id),
                    cell(|m| &m.client_id),
                    cell(|m| &m.client_host),
                    r.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out += &table(
            &[
                "TOPIC",
                "PARTITION",
                "COMMITTED",
                "END",
                "LAG",
                "MEMBER",
                "CLIENT",
                "HOST",
                "NOTE",
            ],
            &rows,
        );
        let _ = writeln!(out, "\nTotal lag: {}", d.total_lag());
    }
    out.push('\n');
    if d.members.is_empty() {
        out += "No active members.\n";
    } else {
        let rows: Vec<Vec<String>> = d
            .members
            .iter()
            .map(|m| {
                vec![
                    m.member_id.clone(),
                    m.group_instance_id
                        .clone()
                        .unwrap_or_else(|| "-".to_owned()),
                    m.client_id.clone(),
                    m.client_host.clone(),
                    assignment_cell(&m.assignment),
                ]
            })
            .collect();
        out += &table(
            &["MEMBER", "INSTANCE", "CLIENT", "HOST", "ASSIGNMENT"],
            &rows,
        );
    }
    out
}

pub fn render_describe_json(d: &GroupDescription) -> Json {
    let members = d
        .members
        .iter()
        .map(|m| {
            let (assignment, error) = match &m.assignment {
                Assignment::Partitions(topics) => {
                    let topics = topics
                        .iter()
                        .map(|(topic, partitions)| {
                            Json::object([
                                ("topic", Json::str(topic)),
                                ("partitions", Json::ints(partitions)),
                            ])
                        })
                        .collect();
                    (Json::Array(topics), Json::Null)
                }
                Assignment::Raw { why, .. } => (Json::Null, Json::str(why)),
            };
            Json::object([
                ("member_id", Json::str(&m.member_id)),
                (
                    "group_instance_id",
                    Json::opt_str(m.group_instance_id.as_deref()),
                ),
                ("client_id", Json::str(&m.client_id)),
                ("host", Json::str(&m.client_host)),
                ("assignment", assignment),
                (
                    "assignment_bytes",
                    Json::Int(i64::try_from(m.assignment_bytes).unwrap_or(i64::MAX)),
                ),
                ("assignment_error", error),
            ])
        })
        .collect();
    let offsets = d
        .offsets
        .iter()
        .map(|r| {
            let member = r
                .member
                .and_then(|i| d.members.get(i))
                .map_or(Json::Null, |m| {
                    Json::object([
                        ("member_id", Json::str(&m.member_id)),
                        ("client_id", Json::str(&m.client_id)),
                        ("host", Json::str(&m.client_host)),
                    ])
                });
            Json::object([
                ("topic", Json::str(&r.topic)),
                ("partition", Json::Int(r.partition.into())),
                ("committed", Json::opt_int(r.committed)),
                ("log_end", Json::opt_int(r.log_end)),
                ("lag", Json::opt_int(r.lag)),
                ("member", member),
                ("error", Json::opt_str(r.error.as_deref())),
            ])
        })
        .collect();
    Json::object([
        ("group", Json::str(&d.group)),
        (
            "coordinator",
            Json::object([
                ("id", Json::Int(d.coordinator.id.into())),
                ("host", Json::str(&d.coordinator.host)),
                ("port", Json::Int(d.coordinator.port.into())),
            ]),
        ),
        ("state", Json::str(&d.state)),
        ("protocol_type", Json::str(&d.protocol_type)),
        ("protocol", Json::str(&d.protocol)),
        ("members", Json::Array(members)),
        ("offsets", Json::Array(offsets)),
        ("total_lag", Json::Int(d.total_lag())),
    ])
}

// ---------------------------------------------------------------------------------------
// delete
// ---------------------------------------------------------------------------------------

pub fn delete(client: &mut Client, group: &str) -> Result<String> {
    delete_group(client, group, COORDINATOR_RETRY)?;
    Ok(format!("deleted group {group}\n"))
}

pub fn delete_group(client: &mut Client, group: &str, retry: Retry) -> Result<()> {
    let brokers = fetch_brokers(client).context("cannot list the brokers of the cluster")?;
    let mut conns = Connections::new(client, &brokers);
    at_coordinator(&mut conns, group, retry, |c| {
        let version = c.version(ApiKey::DeleteGroups)?;
        let response = c.send(&delete_groups_request(group), version)?;
        let result = response
            .results
            .iter()
            .find(|r| r.group_id.0.as_str() == group)
            .ok_or_else(|| anyhow!("DeleteGroups did not answer for group {group}"))?;
        match result.error_code {
            ERROR_NON_EMPTY_GROUP => bail!(
                "cannot delete group {group}: it still has active members (NON_EMPTY_GROUP); \
                 stop its consumers first"
            ),
            ERROR_GROUP_ID_NOT_FOUND => Err(not_found(group)),
            code => Ok(check(code, None, || format!("delete group {group}"))?),
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::client::{decode_request, encode_request};
    use crate::fake_broker::{offsets_response, FakeBroker};
    use bytes::BytesMut;
    use clap::Parser;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
    use kafka_protocol::messages::describe_groups_response::{
        DescribedGroup, DescribedGroupMember,
    };
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::messages::list_groups_response;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::offset_fetch_response::{
        OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
        OffsetFetchResponseTopic, OffsetFetchResponseTopics,
    };
    use kafka_protocol::messages::{
        BrokerId, DeleteGroupsResponse, DescribeGroupsResponse, ListGroupsResponse,
        MetadataRequest, MetadataResponse, RequestKind, ResponseKind, TopicName,
    };
    use kafka_protocol::protocol::Encodable;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// What Strand will serve for the APIs these commands use (and Kafka 3.x, roughly).
    const STRAND_VERSIONS: &[(ApiKey, i16, i16)] = &[
        (ApiKey::Metadata, 0, 12),
        (ApiKey::ListOffsets, 0, 7),
        (ApiKey::FindCoordinator, 0, 4),
        (ApiKey::ListGroups, 0, 5),
        (ApiKey::DescribeGroups, 0, 5),
        (ApiKey::OffsetFetch, 1, 9),
        (ApiKey::DeleteGroups, 0, 2),
    ];
    /// An older broker: FindCoordinator without batching, ListGroups without state,
    /// OffsetFetch without the `groups` array.
    const OLD_VERSIONS: &[(ApiKey, i16, i16)] = &[
        (ApiKey::Metadata, 0, 9),
        (ApiKey::ListOffsets, 0, 5),
        (ApiKey::FindCoordinator, 0, 3),
        (ApiKey::ListGroups, 0, 3),
        (ApiKey::DescribeGroups, 0, 3),
        (ApiKey::OffsetFetch, 0, 7),
        (ApiKey::DeleteGroups, 0, 1),
    ];
    const FAST: Retry = Retry {
        deadline: Duration::from_secs(5),
        backoff: Duration::from_millis(1),
    };

    fn s(text: &str) -> StrBytes {
        StrBytes::from_string(text.to_owned())
    }

    /// Assignment bytes as a Kafka consumer leader writes them: i16 version, then body.
    fn assignment(version: i16, topics: &[(&str, &[i32])]) -> Bytes {
        let body = ConsumerProtocolAssignment::default().with_assigned_partitions(
            topics
                .iter()
                .map(|&(topic, partitions)| {
                    TopicPartition::default()
                        .with_topic(TopicName(s(topic)))
                        .with_partitions(partitions.to_vec())
                })
                .collect(),
        );
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&version.to_be_bytes());
        body.encode(&mut buf, version.min(3)).expect("encode");
        buf.freeze()
    }

    fn partitions(list: &[(&str, &[i32])]) -> Assignment {
        Assignment::Partitions(
            list.iter()
                .map(|&(t, p)| (t.to_owned(), p.to_vec()))
                .collect(),
        )
    }

    // -----------------------------------------------------------------------------------
    // Assignment decoding and lag.
    // -----------------------------------------------------------------------------------

    #[test]
    fn consumer_assignments_decode_at_every_version() {
        for version in 0..=3 {
            let bytes = assignment(version, &[("orders", &[2, 0]), ("audit", &[1])]);
            assert_eq!(
                decode_assignment("consumer", &bytes),
                partitions(&[("audit", &[1]), ("orders", &[0, 2])]),
                "v{version}"
            );
        }
    }

    #[test]
    fn assignment_with_user_data_and_repeated_topics_decodes() {
        let body = ConsumerProtocolAssignment::default()
            .with_assigned_partitions(vec![
                TopicPartition::default()
                    .with_topic(TopicName(s("t")))
                    .with_partitions(vec![3, 1]),
                TopicPartition::default()
                    .with_topic(TopicName(s("t")))
                    .with_partitions(vec![1, 0]),
            ])
            .with_user_data(Some(Bytes::from_static(b"sticky")));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&1i16.to_be_bytes());
        body.encode(&mut buf, 1).expect("encode");
        assert_eq!(
            decode_assignment("consumer", &buf.freeze()),
            partitions(&[("t", &[0, 1, 3])])
        );
    }

    #[test]
    fn a_newer_assignment_version_is_read_as_the_newest_known() {
        // A future version only appends fields: read v3's, ignore the rest.
        let mut buf = BytesMut::from(&assignment(3, &[("t", &[0])])[..]);
        buf[..2].copy_from_slice(&9i16.to_be_bytes());
        buf.extend_from_slice(b"future fields");
        assert_eq!(
            decode_assignment("consumer", &buf.freeze()),
            partitions(&[("t", &[0])])
        );
    }

    #[test]
    fn empty_assignment_is_no_partitions() {
        // A member that has joined but is not yet assigned (rebalancing).
        assert_eq!(
            decode_assignment("consumer", &Bytes::new()),
            Assignment::Partitions(BTreeMap::new())
        );
    }

    #[test]
    fn undecodable_assignments_keep_their_size_and_say_why() {
        let raw = |protocol: &str, bytes: &[u8]| match decode_assignment(
            protocol,
            &Bytes::copy_from_slice(bytes),
        ) {
            Assignment::Raw { bytes, why } => (bytes, why),
            other => panic!("decoded {other:?}"),
        };
        let (n, why) = raw("consumer", &[0]);
        assert_eq!(n, 1);
        assert!(why.contains("too short"), "{why}");
        let (n, why) = raw("consumer", &[0xff, 0xfe, 0, 0, 0, 0]);
        assert_eq!(n, 6);
        assert!(why.contains("version -2"), "{why}");
        // Claims 1 topic, then ends.
        let (n, why) = raw("consumer", &[0, 0, 0, 0, 0, 1]);
        assert_eq!(n, 6);
        assert!(
            why.starts_with("not a valid consumer protocol assignment"),
            "{why}"
        );
        let full = assignment(0, &[("t", &[0, 1])]);
        for cut in 2..full.len() {
            assert!(
                matches!(
                    decode_assignment("consumer", &full.slice(..cut)),
                    Assignment::Raw { .. }
                ),
                "{cut} of {} bytes decoded",
                full.len()
            );
        }
        let (n, why) = raw("connect", b"whatever");
        assert_eq!(n, 8);
        assert_eq!(why, "protocol type \"connect\" is not decoded");
    }

    #[test]
    fn lag_is_log_end_minus_committed_and_never_negative() {
        assert_eq!(lag(Some(10), Some(40)), Some(30));
        assert_eq!(lag(Some(40), Some(40)), Some(0));
        assert_eq!(lag(Some(0), Some(0)), Some(0));
        assert_eq!(lag(Some(50), Some(40)), Some(0));
        assert_eq!(lag(None, Some(40)), None);
        assert_eq!(lag(Some(10), None), None);
        assert_eq!(lag(None, None), None);
        assert_eq!(lag(Some(0), Some(i64::MAX)), Some(i64::MAX));
    }

    fn member(id: &str, assignment: Assignment) -> MemberInfo {
        MemberInfo {
            member_id: id.to_owned(),
            group_instance_id: None,
            client_id: format!("client-{id}"),
            client_host: "/10.0.0.1".to_owned(),
            assignment_bytes: 0,
            assignment,
        }
    }

    fn key(topic: &str, partition: i32) -> PartitionKey {
        (topic.to_owned(), partition)
    }

    #[test]
    fn rows_join_commits_assignments_and_log_ends() {
        let members = vec![
            member("m1", partitions(&[("a", &[0, 1])])),
            member(
                "m2",
                Assignment::Raw {
                    bytes: 3,
                    why: "x".to_owned(),
                },
            ),
            member("m3", partitions(&[("b", &[0]), ("a", &[1])])),
        ];
        let committed: Committed = [
            (key("a", 0), Ok(Some(10))),
            (key("a", 2), Ok(Some(50))),
            (key("c", 0), Err(88)),
            (key("b", 0), Ok(None)),
        ]
        .into_iter()
        .collect();
        let log_ends: LogEnds = [
            (key("a", 0), Ok(40)),
            (key("a", 1), Ok(7)),
            (key("a", 2), Ok(45)),
            (key("b", 0), Err("no leader".to_owned())),
            (key("c", 0), Ok(3)),
        ]
        .into_iter()
        .collect();
        let rows = offset_rows(&members, &committed, &log_ends);
        let row = |topic: &str,
                   partition: i32,
                   committed: Option<i64>,
                   log_end: Option<i64>,
                   lag: Option<i64>,
                   member: Option<usize>,
                   error: Option<&str>| OffsetRow {
            topic: topic.to_owned(),
            partition,
            committed,
            log_end,
            lag,
            member,
            error: error.map(str::to_owned),
        };
        assert_eq!(
            rows,
            [
                row("a", 0, Some(10), Some(40), Some(30), Some(0), None),
                // Assigned twice: the first member keeps it. Nothing committed: no lag.
                row("a", 1, None, Some(7), None, Some(0), None),
                row(
                    "a",
                    2,
                    Some(50),
                    Some(45),
                    Some(0),
                    None,
                    Some("committed offset is past the log end")
                ),
                row(
                    "b",
                    0,
                    None,
                    None,
                    None,
                    Some(2),
                    Some("log end: no leader")
                ),
                row(
                    "c",
                    0,
                    None,
                    Some(3),
                    None,
                    None,
                    Some("committed offset: UNSTABLE_OFFSET_COMMIT")
                ),
            ]
        );
        let d = GroupDescription {
            group: "g".to_owned(),
            coordinator: BrokerInfo {
                id: 0,
                host: "h".to_owned(),
                port: 1,
            },
            state: "Stable".to_owned(),
            protocol_type: "consumer".to_owned(),
            protocol: "range".to_owned(),
            members,
            offsets: rows,
        };
        assert_eq!(d.total_lag(), 30);
    }

    // -----------------------------------------------------------------------------------
    // Requests and responses.
    // -----------------------------------------------------------------------------------

    fn range(key: ApiKey) -> std::ops::RangeInclusive<i16> {
        let (min, max) = crate::client::client_versions(key).expect("in CLIENT_VERSIONS");
        min..=max
    }

    #[test]
    fn requests_round_trip_at_every_version_used() {
        for version in range(ApiKey::FindCoordinator) {
            let request = find_coordinator_request("g1", version);
            let frame =
                encode_request(ApiKey::FindCoordinator, version, 1, &request).expect("encode");
            let (_, decoded) = decode_request::<FindCoordinatorRequest>(&frame);
            assert_eq!(decoded, request, "FindCoordinator v{version}");
            assert_eq!(decoded.key_type, KEY_TYPE_GROUP);
            if version >= 4 {
                assert_eq!(decoded.coordinator_keys, [s("g1")]);
            } else {
                assert_eq!(decoded.key.as_str(), "g1");
            }
        }
        for version in range(ApiKey::ListGroups) {
            let frame = encode_request(ApiKey::ListGroups, version, 2, &list_groups_request())
                .expect("encode");
            let (_, decoded) = decode_request::<ListGroupsRequest>(&frame);
            assert!(decoded.states_filter.is_empty() && decoded.types_filter.is_empty());
        }
        for version in range(ApiKey::DescribeGroups) {
            let request = describe_groups_request("g1");
            let frame =
                encode_request(ApiKey::DescribeGroups, version, 3, &request).expect("encode");
            let (_, decoded) = decode_request::<DescribeGroupsRequest>(&frame);
            assert_eq!(decoded, request, "DescribeGroups v{version}");
        }
        for version in range(ApiKey::OffsetFetch) {
            let request = offset_fetch_request("g1", version);
            let frame = encode_request(ApiKey::OffsetFetch, version, 4, &request).expect("encode");
            let (_, decoded) = decode_request::<OffsetFetchRequest>(&frame);
            assert_eq!(decoded, request, "OffsetFetch v{version}");
            if version >= 8 {
                assert_eq!(decoded.groups.len(), 1);
                assert_eq!(decoded.groups[0].group_id.0.as_str(), "g1");
                assert_eq!(decoded.groups[0].topics, None, "all topics");
            } else {
                assert_eq!(decoded.group_id.0.as_str(), "g1");
                assert_eq!(decoded.topics, None, "all topics");
            }
        }
        for version in range(ApiKey::DeleteGroups) {
            let request = delete_groups_request("g1");
            let frame = encode_request(ApiKey::DeleteGroups, version, 5, &request).expect("encode");
            let (_, decoded) = decode_request::<DeleteGroupsRequest>(&frame);
            assert_eq!(decoded, request, "DeleteGroups v{version}");
        }
    }

    #[test]
    fn coordinator_is_read_from_either_answer_form() {
        let old = FindCoordinatorResponse::default()
            .with_node_id(BrokerId(2))
            .with_host(s("h2"))
            .with_port(9093);
        let found = coordinator_from_response("g", 3, &old).expect("coordinator");
        assert_eq!((found.id, found.address()), (2, "h2:9093".to_owned()));
        let batched = FindCoordinatorResponse::default().with_coordinators(vec![
            Coordinator::default()
                .with_key(s("other"))
                .with_node_id(BrokerId(1)),
            Coordinator::default()
                .with_key(s("g"))
                .with_node_id(BrokerId(3))
                .with_host(s("h3"))
                .with_port(1),
        ]);
        let found = coordinator_from_response("g", 4, &batched).expect("coordinator");
        assert_eq!((found.id, found.address()), (3, "h3:1".to_owned()));
        let err = coordinator_from_response("x", 4, &batched).expect_err("no answer for x");
        assert_eq!(
            err.to_string(),
            "FindCoordinator did not answer for group x"
        );
        // Error without a node: retried like COORDINATOR_NOT_AVAILABLE.
        let no_node = FindCoordinatorResponse::default().with_node_id(BrokerId(-1));
        let err = coordinator_from_response("g", 2, &no_node).expect_err("no node");
        assert!(is_retriable(&err), "{err:#}");
        let refused = FindCoordinatorResponse::default()
            .with_error_code(ERROR_COORDINATOR_LOAD_IN_PROGRESS)
            .with_error_message(Some(s("loading")));
        let err = coordinator_from_response("g", 2, &refused).expect_err("loading");
        assert!(is_retriable(&err));
        assert_eq!(
            err.to_string(),
            "find the coordinator of group g: COORDINATOR_LOAD_IN_PROGRESS: loading"
        );
    }

    // -----------------------------------------------------------------------------------
    // Canned broker answers.
    // -----------------------------------------------------------------------------------

    /// A topic as its partitions' leaders; `None` for a topic the broker does not know.
    type TopicLeaders<'a> = (&'a str, Option<&'a [i32]>);

    /// Metadata for the topics asked (none for an empty list).
    fn metadata(
        request: &MetadataRequest,
        brokers: &[(i32, &str)],
        topics: &[TopicLeaders],
    ) -> ResponseKind {
        let brokers = brokers
            .iter()
            .map(|&(id, addr)| {
                let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(id))
                    .with_host(s(host))
                    .with_port(port.parse().expect("port"))
            })
            .collect();
        let asked: Vec<String> = request
            .topics
            .as_deref()
            .expect("the group commands name their topics")
            .iter()
            .map(|t| t.name.as_ref().expect("named").0.to_string())
            .collect();
        let topics = asked
            .iter()
            .map(|name| {
                let topic = MetadataResponseTopic::default().with_name(Some(TopicName(s(name))));
                match topics.iter().find(|(t, _)| t == name) {
                    Some((_, Some(leaders))) => topic.with_partitions(
                        leaders
                            .iter()
                            .enumerate()
                            .map(|(i, &leader)| {
                                MetadataResponsePartition::default()
                                    .with_partition_index(i32::try_from(i).expect("few"))
                                    .with_leader_id(BrokerId(leader))
                                    .with_replica_nodes(vec![BrokerId(leader)])
                                    .with_isr_nodes(vec![BrokerId(leader)])
                            })
                            .collect(),
                    ),
                    _ => topic.with_error_code(3),
                }
            })
            .collect();
        assert!(!request.allow_auto_topic_creation, "must not create topics");
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_topics(topics)
            .into()
    }

    /// FindCoordinator's answer in the form the request's version calls for.
    fn coordinator(
        request: &FindCoordinatorRequest,
        code: i16,
        id: i32,
        addr: &str,
    ) -> ResponseKind {
        assert_eq!(request.key_type, KEY_TYPE_GROUP);
        let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
        let port: i32 = port.parse().expect("port");
        if let [key] = &request.coordinator_keys[..] {
            FindCoordinatorResponse::default()
                .with_coordinators(vec![Coordinator::default()
                    .with_key(key.clone())
                    .with_error_code(code)
                    .with_node_id(BrokerId(id))
                    .with_host(s(host))
                    .with_port(port)])
                .into()
        } else {
            FindCoordinatorResponse::default()
                .with_error_code(code)
                .with_node_id(BrokerId(id))
                .with_host(s(host))
                .with_port(port)
                .into()
        }
    }

    fn group_answer(
        group: &str,
        code: i16,
        state: &str,
        members: Vec<DescribedGroupMember>,
    ) -> ResponseKind {
        DescribeGroupsResponse::default()
            .with_groups(vec![DescribedGroup::default()
                .with_error_code(code)
                .with_group_id(group_id(group))
                .with_group_state(s(state))
                .with_protocol_type(s("consumer"))
                .with_protocol_data(s("range"))
                .with_members(members)])
            .into()
    }

    fn described_member(id: &str, assigned: &[(&str, &[i32])]) -> DescribedGroupMember {
        DescribedGroupMember::default()
            .with_member_id(s(id))
            .with_client_id(s(&format!("client-{id}")))
            .with_client_host(s("/10.0.0.1"))
            .with_member_metadata(Bytes::from_static(b"subscription"))
            .with_member_assignment(assignment(3, assigned))
    }

    /// The committed offsets in the form the request's version calls for.
    fn committed_answer(
        request: &OffsetFetchRequest,
        code: i16,
        offsets: &[(&str, i32, i64)],
    ) -> ResponseKind {
        let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        for &(t, p, o) in offsets {
            by_topic.entry(t).or_default().push((p, o));
        }
        if let [g] = &request.groups[..] {
            assert_eq!(g.topics, None, "all topics");
            let topics = by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(s(t)))
                        .with_partitions(
                            ps.into_iter()
                                .map(|(p, o)| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(o)
                                })
                                .collect(),
                        )
                })
                .collect();
            OffsetFetchResponse::default()
                .with_groups(vec![OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_error_code(code)
                    .with_topics(topics)])
                .into()
        } else {
            assert_eq!(request.topics, None, "all topics");
            let topics = by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(s(t)))
                        .with_partitions(
                            ps.into_iter()
                                .map(|(p, o)| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(o)
                                })
                                .collect(),
                        )
                })
                .collect();
            OffsetFetchResponse::default()
                .with_error_code(code)
                .with_topics(topics)
                .into()
        }
    }

    /// Starts a broker that learns its own address before its first answer.
    fn broker_with_own_addr<H>(
        versions: &'static [(ApiKey, i16, i16)],
        mut handler: H,
    ) -> FakeBroker
    where
        H: FnMut(&str, &RequestKind) -> ResponseKind + Send + 'static,
    {
        let own = Arc::new(Mutex::new(String::new()));
        let addr = Arc::clone(&own);
        let broker = FakeBroker::start(versions, move |request| {
            handler(&addr.lock().expect("lock"), request)
        });
        *own.lock().expect("lock") = broker.addr.clone();
        broker
    }

    /// The single-broker cluster of the describe tests: group `g` with two members, four
    /// committed offsets (one for a deleted topic), log ends 40 + partition.
    fn single_broker_group(versions: &'static [(ApiKey, i16, i16)]) -> FakeBroker {
        broker_with_own_addr(versions, |own, request| match request {
            RequestKind::Metadata(r) => metadata(
                r,
                &[(0, own)],
                &[("orders", Some(&[0, 0, 0])), ("audit", Some(&[0]))],
            ),
            RequestKind::FindCoordinator(r) => coordinator(r, 0, 0, own),
            RequestKind::DescribeGroups(r) => {
                assert_eq!(r.groups, [group_id("g")]);
                group_answer(
                    "g",
                    0,
                    "Stable",
                    vec![
                        described_member("m1", &[("orders", &[0, 1])]),
                        described_member("m2", &[("orders", &[2]), ("audit", &[0])]),
                    ],
                )
            }
            RequestKind::OffsetFetch(r) => committed_answer(
                r,
                0,
                &[
                    ("orders", 0, 10),
                    ("orders", 1, 41),
                    ("audit", 0, 30),
                    ("gone", 0, 5),
                ],
            ),
            RequestKind::ListOffsets(r) => {
                assert!(r.topics.iter().all(|t| t.name.as_str() != "gone"));
                offsets_response(r)
            }
            other => panic!("unexpected {other:?}"),
        })
    }

    fn api_keys(received: &[(i16, RequestKind)]) -> Vec<(&'static str, i16)> {
        received
            .iter()
            .map(|(v, r)| {
                let name = match r {
                    RequestKind::Metadata(_) => "Metadata",
                    RequestKind::FindCoordinator(_) => "FindCoordinator",
                    RequestKind::DescribeGroups(_) => "DescribeGroups",
                    RequestKind::OffsetFetch(_) => "OffsetFetch",
                    RequestKind::ListOffsets(_) => "ListOffsets",
                    RequestKind::ListGroups(_) => "ListGroups",
                    RequestKind::DeleteGroups(_) => "DeleteGroups",
                    other => panic!("unexpected {other:?}"),
                };
                (name, *v)
            })
            .collect()
    }

    // -----------------------------------------------------------------------------------
    // describe
    // -----------------------------------------------------------------------------------

    #[test]
    fn describe_shows_offsets_lag_owners_and_members() {
        let broker = single_broker_group(STRAND_VERSIONS);
        let addr = broker.addr.clone();
        let mut client = Client::connect(&broker.addr).expect("connect");
        let text = describe(&mut client, "g", Output::Text).expect("describe");
        drop(client);
        let received = broker.finish();
        let expected = format!(
            "\
Group:          g
State:          Stable
Protocol type:  consumer
Protocol:       range
Coordinator:    0 ({addr})
Members:        2

TOPIC   PARTITION  COMMITTED  END  LAG  MEMBER  CLIENT     HOST       NOTE
audit   0          30         40   10   m2      client-m2  /10.0.0.1
gone    0          5          -    -    -       -          -          log end: UNKNOWN_TOPIC_OR_PARTITION
orders  0          10         40   30   m1      client-m1  /10.0.0.1
orders  1          41         41   0    m1      client-m1  /10.0.0.1
orders  2          -          42   -    m2      client-m2  /10.0.0.1

Total lag: 40

MEMBER  INSTANCE  CLIENT     HOST       ASSIGNMENT
m1      -         client-m1  /10.0.0.1  orders:0,1
m2      -         client-m2  /10.0.0.1  audit:0 orders:2
"
        );
        assert_eq!(text, expected);
        assert_eq!(
            api_keys(&received),
            [
                ("Metadata", 12),
                ("FindCoordinator", 4),
                ("DescribeGroups", 5),
                ("OffsetFetch", 9),
                ("Metadata", 12),
                ("ListOffsets", 7),
            ]
        );
        // First the brokers only, then the topics of the group.
        let RequestKind::Metadata(first) = &received[0].1 else {
            panic!("{:?}", received[0]);
        };
        assert_eq!(first.topics.as_deref().map(<[_]>::len), Some(0));
        let RequestKind::Metadata(second) = &received[4].1 else {
            panic!("{:?}", received[4]);
        };
        let names: Vec<&str> = second
            .topics
            .iter()
            .flatten()
            .filter_map(|t| t.name.as_ref().map(|n| n.as_str()))
            .collect();
        assert_eq!(names, ["audit", "gone", "orders"]);
    }

    #[test]
    fn describe_works_with_the_older_request_forms() {
        let broker = single_broker_group(OLD_VERSIONS);
        let mut client = Client::connect(&broker.addr).expect("connect");
        let text = describe(&mut client, "g", Output::Text).expect("describe");
        drop(client);
        let received = broker.finish();
        assert!(
            text.contains("orders  0          10         40   30   m1      client-m1  /10.0.0.1\n"),
            "{text}"
        );
        assert!(text.contains("\nTotal lag: 40\n"), "{text}");
        assert_eq!(
            api_keys(&received),
            [
                ("Metadata", 9),
                ("FindCoordinator", 3),
                ("DescribeGroups", 3),
                ("OffsetFetch", 7),
                ("Metadata", 9),
                ("ListOffsets", 5),
            ]
        );
    }

    #[test]
    fn describe_renders_as_json() {
        let broker = single_broker_group(STRAND_VERSIONS);
        let (host, port) = broker.addr.rsplit_once(':').expect("HOST:PORT");
        let (host, port) = (host.to_owned(), port.to_owned());
        let mut client = Client::connect(&broker.addr).expect("connect");
        let json = describe(&mut client, "g", Output::Json).expect("describe");
        drop(client);
        broker.finish();
        let bytes_m1 = assignment(3, &[("orders", &[0, 1])]).len();
        let bytes_m2 = assignment(3, &[("orders", &[2]), ("audit", &[0])]).len();
        let m = |id: &str| {
            format!(r#"{{"member_id":"{id}","client_id":"client-{id}","host":"/10.0.0.1"}}"#)
        };
        let expected = format!(
            concat!(
                r#"{{"group":"g","coordinator":{{"id":0,"host":"{host}","port":{port}}},"#,
                r#""state":"Stable","protocol_type":"consumer","protocol":"range","members":["#,
                r#"{{"member_id":"m1","group_instance_id":null,"client_id":"client-m1","host":"/10.0.0.1","#,
                r#""assignment":[{{"topic":"orders","partitions":[0,1]}}],"assignment_bytes":{b1},"assignment_error":null}},"#,
                r#"{{"member_id":"m2","group_instance_id":null,"client_id":"client-m2","host":"/10.0.0.1","#,
                r#""assignment":[{{"topic":"audit","partitions":[0]}},{{"topic":"orders","partitions":[2]}}],"assignment_bytes":{b2},"assignment_error":null}}],"#,
                r#""offsets":["#,
                r#"{{"topic":"audit","partition":0,"committed":30,"log_end":40,"lag":10,"member":{m2},"error":null}},"#,
                r#"{{"topic":"gone","partition":0,"committed":5,"log_end":null,"lag":null,"member":null,"error":"log end: UNKNOWN_TOPIC_OR_PARTITION"}},"#,
                r#"{{"topic":"orders","partition":0,"committed":10,"log_end":40,"lag":30,"member":{m1},"error":null}},"#,
                r#"{{"topic":"orders","partition":1,"committed":41,"log_end":41,"lag":0,"member":{m1},"error":null}},"#,
                r#"{{"topic":"orders","partition":2,"committed":null,"log_end":42,"lag":null,"member":{m2},"error":null}}],"#,
                r#""total_lag":40}}"#,
                "\n"
            ),
            host = host,
            port = port,
            b1 = bytes_m1,
            b2 = bytes_m2,
            m1 = m("m1"),
            m2 = m("m2"),
        );
        assert_eq!(json, expected);
    }

    #[test]
    fn describe_asks_the_coordinator_and_each_partitions_leader() {
        // Broker 2 coordinates the group and leads orders-1; broker 1 (bootstrap) leads
        // orders-0.
        let coordinator_broker = FakeBroker::start(STRAND_VERSIONS, |request| match request {
            RequestKind::DescribeGroups(_) => group_answer(
                "g",
                0,
                "Stable",
                vec![described_member("m1", &[("orders", &[0, 1])])],
            ),
            RequestKind::OffsetFetch(r) => {
                committed_answer(r, 0, &[("orders", 0, 1), ("orders", 1, 2)])
            }
            RequestKind::ListOffsets(r) => offsets_response(r),
            other => panic!("only group and leader requests go to broker 2: {other:?}"),
        });
        let addr2 = coordinator_broker.addr.clone();
        let bootstrap = broker_with_own_addr(STRAND_VERSIONS, move |own, request| match request {
            RequestKind::Metadata(r) => {
                metadata(r, &[(1, own), (2, &addr2)], &[("orders", Some(&[1, 2]))])
            }
            RequestKind::FindCoordinator(r) => coordinator(r, 0, 2, &addr2),
            RequestKind::ListOffsets(r) => offsets_response(r),
            other => panic!("group requests go to the coordinator: {other:?}"),
        });
        let mut client = Client::connect(&bootstrap.addr).expect("connect");
        let d = describe_group(&mut client, "g", FAST).expect("describe");
        drop(client);
        assert_eq!(d.coordinator.id, 2);
        let lags: Vec<(i32, Option<i64>)> =
            d.offsets.iter().map(|r| (r.partition, r.lag)).collect();
        assert_eq!(lags, [(0, Some(39)), (1, Some(39))]);
        let asked_partitions = |received: &[(i16, RequestKind)]| -> Vec<i32> {
            received
                .iter()
                .filter_map(|(_, r)| match r {
                    RequestKind::ListOffsets(r) => Some(r),
                    _ => None,
                })
                .flat_map(|r| r.topics.iter().flat_map(|t| t.partitions.iter()))
                .map(|p| p.partition_index)
                .collect()
        };
        let at_bootstrap = bootstrap.finish();
        let at_coordinator = coordinator_broker.finish();
        assert_eq!(
            api_keys(&at_bootstrap),
            [
                ("Metadata", 12),
                ("FindCoordinator", 4),
                ("Metadata", 12),
                ("ListOffsets", 7)
            ]
        );
        assert_eq!(asked_partitions(&at_bootstrap), [0]);
        assert_eq!(
            api_keys(&at_coordinator),
            [
                ("DescribeGroups", 5),
                ("OffsetFetch", 9),
                ("ListOffsets", 7)
            ]
        );
        assert_eq!(asked_partitions(&at_coordinator), [1]);
    }

    #[test]
    fn coordinator_errors_are_retried_with_a_fresh_find_coordinator() {
        let mut answers = [
            (ApiKey::FindCoordinator, ERROR_COORDINATOR_NOT_AVAILABLE),
            (ApiKey::DescribeGroups, ERROR_NOT_COORDINATOR),
            (ApiKey::OffsetFetch, ERROR_COORDINATOR_LOAD_IN_PROGRESS),
        ]
        .into_iter()
        .collect::<HashMap<ApiKey, i16>>();
        let broker = broker_with_own_addr(STRAND_VERSIONS, move |own, request| {
            // Each API fails once with its error, then succeeds.
            let mut code = |key| answers.remove(&key).unwrap_or(0);
            match request {
                RequestKind::Metadata(r) => metadata(r, &[(0, own)], &[("t", Some(&[0]))]),
                RequestKind::FindCoordinator(r) => {
                    coordinator(r, code(ApiKey::FindCoordinator), 0, own)
                }
                RequestKind::DescribeGroups(_) => {
                    group_answer("g", code(ApiKey::DescribeGroups), "Empty", Vec::new())
                }
                RequestKind::OffsetFetch(r) => {
                    committed_answer(r, code(ApiKey::OffsetFetch), &[("t", 0, 5)])
                }
                RequestKind::ListOffsets(r) => offsets_response(r),
                other => panic!("unexpected {other:?}"),
            }
        });
        let mut client = Client::connect(&broker.addr).expect("connect");
        let d = describe_group(&mut client, "g", FAST).expect("describe after retries");
        drop(client);
        assert_eq!(d.state, "Empty");
        assert_eq!(d.total_lag(), 35);
        let names: Vec<&str> = api_keys(&broker.finish())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "Metadata",
                "FindCoordinator",
                "FindCoordinator",
                "DescribeGroups",
                "FindCoordinator",
                "DescribeGroups",
                "OffsetFetch",
                "FindCoordinator",
                "DescribeGroups",
                "OffsetFetch",
                "Metadata",
                "ListOffsets",
            ]
        );
    }

    #[test]
    fn a_coordinator_that_stays_unavailable_fails_clearly() {
        let broker = broker_with_own_addr(STRAND_VERSIONS, |own, request| match request {
            RequestKind::Metadata(r) => metadata(r, &[(0, own)], &[]),
            RequestKind::FindCoordinator(r) => {
                coordinator(r, ERROR_COORDINATOR_LOAD_IN_PROGRESS, -1, "h:1")
            }
            other => panic!("unexpected {other:?}"),
        });
        let mut client = Client::connect(&broker.addr).expect("connect");
        let retry = Retry {
            deadline: Duration::from_millis(60),
            backoff: Duration::from_millis(10),
        };
        let started = Instant::now();
        let err = describe_group(&mut client, "g", retry).expect_err("never ready");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(client);
        let received = broker.finish();
        let text = format!("{err:#}");
        assert!(
            text.starts_with("the coordinator of group g was not ready after "),
            "{text}"
        );
        assert!(
            text.ends_with(" s: find the coordinator of group g: COORDINATOR_LOAD_IN_PROGRESS"),
            "{text}"
        );
        let finds = received
            .iter()
            .filter(|(_, r)| matches!(r, RequestKind::FindCoordinator(_)))
            .count();
        assert!((2..=7).contains(&finds), "{finds} FindCoordinator requests");
    }

    #[test]
    fn a_missing_group_is_not_found_whether_dead_or_group_id_not_found() {
        for (code, state) in [(0, STATE_DEAD), (ERROR_GROUP_ID_NOT_FOUND, "")] {
            let broker = broker_with_own_addr(STRAND_VERSIONS, move |own, request| match request {
                RequestKind::Metadata(r) => metadata(r, &[(0, own)], &[]),
                RequestKind::FindCoordinator(r) => coordinator(r, 0, 0, own),
                RequestKind::DescribeGroups(_) => group_answer("nope", code, state, vec![]),
                other => panic!("nothing more is asked of a missing group: {other:?}"),
            });
            let mut client = Client::connect(&broker.addr).expect("connect");
            let err = describe(&mut client, "nope", Output::Text).expect_err("not found");
            assert_eq!(format!("{err:#}"), "group nope not found");
            drop(client);
            broker.finish();
        }
    }

    #[test]
    fn other_describe_errors_name_the_group_and_the_error() {
        let broker = broker_with_own_addr(STRAND_VERSIONS, |own, request| match request {
            RequestKind::Metadata(r) => metadata(r, &[(0, own)], &[]),
            RequestKind::FindCoordinator(r) => coordinator(r, 0, 0, own),
            // GROUP_AUTHORIZATION_FAILED
            RequestKind::DescribeGroups(_) => group_answer("g", 30, "", vec![]),
            other => panic!("unexpected {other:?}"),
        });
        let mut client = Client::connect(&broker.addr).expect("connect");
        let err = describe(&mut client, "g", Output::Text).expect_err("refused");
        assert_eq!(
            format!("{err:#}"),
            "describe group g: GROUP_AUTHORIZATION_FAILED"
        );
        drop(client);
        broker.finish();
    }

    #[test]
    fn a_group_without_members_or_offsets_says_so() {
        let broker = broker_with_own_addr(STRAND_VERSIONS, |own, request| match request {
            RequestKind::Metadata(r) => metadata(r, &[(0, own)], &[]),
            RequestKind::FindCoordinator(r) => coordinator(r, 0, 0, own),
            RequestKind::DescribeGroups(_) => group_answer("g", 0, "Empty", vec![]),
            RequestKind::OffsetFetch(r) => committed_answer(r, 0, &[]),
            other => panic!("no offsets to look up: {other:?}"),
        });
        let mut client = Client::connect(&broker.addr).expect("connect");
        let text = describe(&mut client, "g", Output::Text).expect("describe");
        drop(client);
        broker.finish();
        assert!(
            text.ends_with(
                "Members:        0\n\nNo committed offsets and no assigned partitions.\n\n\
                 No active members.\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_unreachable_leader_leaves_the_lag_unknown_not_the_command_failed() {
        let closed = closed_port_addr();
        let broker = broker_with_own_addr(STRAND_VERSIONS, move |own, request| match request {
            RequestKind::Metadata(r) => {
                metadata(r, &[(0, own), (1, &closed)], &[("t", Some(&[1]))])
            }
            RequestKind::FindCoordinator(r) => coordinator(r, 0, 0, own),
            RequestKind::DescribeGroups(_) => group_answer("g", 0, "Empty", vec![]),
            RequestKind::OffsetFetch(r) => committed_answer(r, 0, &[("t", 0, 5)]),
            other => panic!("unexpected {other:?}"),
        });
        let mut client = Client::connect(&broker.addr).expect("connect");
        let d = describe_group(&mut client, "g", FAST).expect("describe");
        drop(client);
        broker.finish();
        let row = &d.offsets[0];
        assert_eq!((row.committed, row.log_end, row.lag), (Some(5), None, None));
        let error = row.error.as_deref().unwrap_or_default();
        assert!(
            error.starts_with("log end: cannot reach Kafka at "),
            "{error}"
        );
    }

    // -----------------------------------------------------------------------------------
    // list
    // -----------------------------------------------------------------------------------

    fn closed_port_addr() -> String {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("ephemeral port")
            .port();
        format!("127.0.0.1:{port}")
    }

    fn listed(groups: &[(&str, &str, &str)]) -> ResponseKind {
        ListGroupsResponse::default()
            .with_groups(
                groups
                    .iter()
                    .map(|&(id, protocol_type, state)| {
                        list_groups_response::ListedGroup::default()
                            .with_group_id(group_id(id))
                            .with_protocol_type(s(protocol_type))
                            .with_group_state(s(state))
                    })
                    .collect(),
            )
            .into()
    }

    #[test]
    fn list_asks_every_broker_and_sorts_the_groups() {
        let other = FakeBroker::start(STRAND_VERSIONS, |request| match request {
            RequestKind::ListGroups(_) => listed(&[("b-group", "consumer", "Stable")]),
            other => panic!("unexpected {other:?}"),
        });
        let other_addr = other.addr.clone();
        let closed = closed_port_addr();
        let closed_for_handler = closed.clone();
        let bootstrap = broker_with_own_addr(STRAND_VERSIONS, move |own, request| match request {
            RequestKind::Metadata(r) => metadata(
                r,
                &[(1, own), (2, &other_addr), (3, &closed_for_handler)],
                &[],
            ),
            RequestKind::ListGroups(r) => {
                assert!(r.states_filter.is_empty() && r.types_filter.is_empty());
                listed(&[("c-group", "", "Empty"), ("a-group", "consumer", "Dead")])
            }
            other => panic!("unexpected {other:?}"),
        });
        let mut client = Client::connect(&bootstrap.addr).expect("connect");
        let listing = list_groups(&mut client).expect("list");
        drop(client);
        assert_eq!(
            api_keys(&bootstrap.finish()),
            [("Metadata", 12), ("ListGroups", 5)]
        );
        assert_eq!(api_keys(&other.finish()), [("ListGroups", 5)]);
        let text = render_list_text(&listing);
        let (table_text, note) = text.split_at(text.find("Note: ").expect("a note"));
        assert_eq!(
            table_text,
            "\
GROUP    PROTOCOL-TYPE  STATE
a-group  consumer       Dead
b-group  consumer       Stable
c-group  -              Empty
"
        );
        assert!(
            note.starts_with(&format!(
                "Note: broker 3 at {closed}: cannot reach Kafka at {closed}: "
            )),
            "{note}"
        );
        let json = render_list_json(&listing).to_string();
        assert!(
            json.starts_with(
                r#"{"groups":[{"group":"a-group","protocol_type":"consumer","state":"Dead"},{"group":"b-group","protocol_type":"consumer","state":"Stable"},{"group":"c-group","protocol_type":"","state":"Empty"}],"notes":["broker 3 at "#
            ),
            "{json}"
        );
    }

    #[test]
    fn list_below_v4_has_no_state() {
        let broker = broker_with_own_addr(OLD_VERSIONS, |own, request| match request {
            RequestKind::Metadata(r) => metadata(r, &[(0, own)], &[]),
            RequestKind::ListGroups(_) => listed(&[("g", "consumer", "ignored")]),
            other => panic!("unexpected {other:?}"),
        });
        let mut client = Client::connect(&broker.addr).expect("connect");
        let json = list(&mut client, Output::Json).expect("list");
        drop(client);
        assert_eq!(
            api_keys(&broker.finish()),
            [("Metadata", 9), ("ListGroups", 3)]
        );
        assert_eq!(
            json,
            "{\"groups\":[{\"group\":\"g\",\"protocol_type\":\"consumer\",\"state\":null}],\"notes\":[]}\n"
        );
    }

    #[test]
    fn list_fails_when_no_broker_answers() {
        let broker = broker_with_own_addr(STRAND_VERSIONS, |own, request| match request {
            RequestKind::Metadata(r) => metadata(r, &[(0, own)], &[]),
            // COORDINATOR_LOAD_IN_PROGRESS
            RequestKind::ListGroups(_) => ListGroupsResponse::default().with_error_code(14).into(),
            other => panic!("unexpected {other:?}"),
        });
        let addr = broker.addr.clone();
        let mut client = Client::connect(&broker.addr).expect("connect");
        let err = list(&mut client, Output::Text).expect_err("no answer");
        drop(client);
        broker.finish();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "no broker could list its groups: broker 0 at {addr}: list groups at {addr}: \
                 COORDINATOR_LOAD_IN_PROGRESS"
            )
        );
    }

    // -----------------------------------------------------------------------------------
    // delete
    // -----------------------------------------------------------------------------------

    fn deleting(codes: Vec<i16>) -> FakeBroker {
        let mut codes = codes.into_iter();
        broker_with_own_addr(STRAND_VERSIONS, move |own, request| match request {
            RequestKind::Metadata(r) => metadata(r, &[(0, own)], &[]),
            RequestKind::FindCoordinator(r) => coordinator(r, 0, 0, own),
            RequestKind::DeleteGroups(r) => {
                assert_eq!(r.groups_names, [group_id("g")]);
                DeleteGroupsResponse::default()
                    .with_results(vec![DeletableGroupResult::default()
                        .with_group_id(group_id("g"))
                        .with_error_code(codes.next().expect("an answer"))])
                    .into()
            }
            other => panic!("unexpected {other:?}"),
        })
    }

    #[test]
    fn delete_reports_success_and_retries_a_moved_coordinator() {
        let broker = deleting(vec![ERROR_NOT_COORDINATOR, 0]);
        let mut client = Client::connect(&broker.addr).expect("connect");
        delete_group(&mut client, "g", FAST).expect("deleted");
        drop(client);
        assert_eq!(
            api_keys(&broker.finish()),
            [
                ("Metadata", 12),
                ("FindCoordinator", 4),
                ("DeleteGroups", 2),
                ("FindCoordinator", 4),
                ("DeleteGroups", 2),
            ]
        );
        let broker = deleting(vec![0]);
        let mut client = Client::connect(&broker.addr).expect("connect");
        assert_eq!(
            delete(&mut client, "g").expect("deleted"),
            "deleted group g\n"
        );
        drop(client);
        broker.finish();
    }

    #[test]
    fn delete_explains_non_empty_and_missing_groups() {
        let cases = [
            (
                ERROR_NON_EMPTY_GROUP,
                "cannot delete group g: it still has active members (NON_EMPTY_GROUP); \
                 stop its consumers first",
            ),
            (ERROR_GROUP_ID_NOT_FOUND, "group g not found"),
            (24, "delete group g: INVALID_GROUP_ID"),
        ];
        for (code, message) in cases {
            let broker = deleting(vec![code]);
            let mut client = Client::connect(&broker.addr).expect("connect");
            let err = delete(&mut client, "g").expect_err("refused");
            assert_eq!(format!("{err:#}"), message);
            drop(client);
            broker.finish();
        }
    }

    // -----------------------------------------------------------------------------------
    // Command line.
    // -----------------------------------------------------------------------------------

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("strand").chain(args.iter().copied()))
    }

    #[test]
    fn command_line_parses() {
        let cli = parse(&[
            "group",
            "describe",
            "g1",
            "--output",
            "json",
            "--bootstrap",
            "h:1",
        ])
        .expect("valid");
        assert_eq!(cli.bootstrap, "h:1");
        let Command::Group(GroupCommand::Describe(args)) = &cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!((args.group.as_str(), args.output), ("g1", Output::Json));
        let cli = parse(&["group", "list"]).expect("valid");
        assert!(matches!(
            cli.command,
            Command::Group(GroupCommand::List(OutputArgs {
                output: Output::Text
            }))
        ));
        let cli = parse(&["group", "delete", "g2"]).expect("valid");
        assert!(matches!(&cli.command, Command::Group(GroupCommand::Delete(a)) if a.group == "g2"));
        assert!(parse(&["group", "describe"]).is_err());
        assert!(parse(&["group", "describe", ""]).is_err());
        assert!(parse(&["group", "delete"]).is_err());
        assert!(parse(&["group", "list", "--output", "yaml"]).is_err());
        assert!(parse(&["group", "delete", "g", "--output", "json"]).is_err());
        assert!(parse(&["group"]).is_err());
    }

    #[test]
    fn run_dispatches_group_describe() {
        let broker = single_broker_group(STRAND_VERSIONS);
        let cli = parse(&[
            "--bootstrap",
            &broker.addr,
            "group",
            "describe",
            "g",
            "--output",
            "json",
        ])
        .expect("valid");
        let json = crate::run(&cli).expect("describe");
        broker.finish();
        assert!(
            json.starts_with(r#"{"group":"g","coordinator":{"id":0,"#),
            "{json}"
        );
        assert!(json.ends_with(",\"total_lag\":40}\n"), "{json}");
    }
}
