//! The group coordinator of one offsets partition, as a plain state machine.
//!
//! Kafka's classic protocol, group by group:
//!
//! ```text
//!   Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!     ▲                  ▲    │ (no members left)                     │ leader's SyncGroup
//!     └──────────────────┼────┘                                       ▼ (stored)
//!                        └──── join of a new member / leave / expiry ── Stable
//! ```
//!
//! Inputs are requests (each with a [`Token`] naming the caller that waits for the
//! answer), ticks, and "stored" notices for the records it asked to write; outputs
//! are [`Action`]s. Time is passed in (`now`, milliseconds); member ids for new
//! members are passed in too, so a run is a pure function of its inputs.
//!
//! Invariants (checked by `debug_assert!` and the tests):
//! - the generation only grows, and a member's assignment is the one of the
//!   current generation or none;
//! - only the current generation's leader's SyncGroup sets assignments;
//! - a waiting JoinGroup/SyncGroup is answered exactly once (a member replaced,
//!   removed or caught by a new rebalance gets an error answer).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use super::store::{GroupValue, MemberValue, OffsetValue};
use crate::kafka::errors;

/// Names a request waiting for its answer (the I/O layer maps it to the caller).
pub type Token = u64;
/// Milliseconds on the caller's monotonic clock.
pub type Millis = u64;

/// Kafka's JoinGroup v4+ answer to a member without an id is MEMBER_ID_REQUIRED.
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const FENCED_INSTANCE_ID: i16 = 82;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const INVALID_GROUP_ID: i16 = 24;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

/// The consumer protocol type, whose member metadata and assignments this
/// coordinator can read (to check commits and offset deletions).
pub const CONSUMER_PROTOCOL: &str = "consumer";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub initial_rebalance_delay_ms: u64,
    pub min_session_timeout_ms: u64,
    pub max_session_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocol_type: String,
    /// (assignor name, subscription metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a member without an id is first given one (MEMBER_ID_REQUIRED).
    pub require_known_member: bool,
    /// The id a new member gets (the I/O layer makes it unique).
    pub fresh_member_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinResponse {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata: for the leader only.
    pub members: Vec<JoinedMember>,
    /// The leader must not compute a new assignment (a static leader rejoining a
    /// stable group): JoinGroup v9.
    pub skip_assignment: bool,
}

impl JoinResponse {
    fn error(error: i16, member_id: &str) -> Self {
        JoinResponse {
            error,
            generation: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// From the leader: every member's assignment.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncResponse {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    fn error(error: i16) -> Self {
        SyncResponse {
            error,
            ..Default::default()
        }
    }
}

/// The answer to a waiting request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join(JoinResponse),
    Sync(SyncResponse),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer the request `Token`.
    Reply(Token, Reply),
    /// Write the group's metadata (None: a tombstone); when it is stored (or the
    /// write failed), call [`Coordinator::group_stored`] with `generation`.
    StoreGroup {
        group: String,
        generation: i32,
        value: Option<GroupValue>,
    },
    /// Write the group's metadata after a static member's new id; then call
    /// [`Coordinator::static_member_stored`] with `token`.
    StoreMember {
        group: String,
        token: Token,
        value: GroupValue,
    },
}

/// A member's view for DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// The assignment of the generation before: a cooperative member commits the
    /// partitions it gives up after the new assignment arrived.
    previous_assignment: Bytes,
    awaiting_join: Option<Token>,
    awaiting_sync: Option<Token>,
    heartbeat_deadline: Millis,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }
}

#[derive(Debug)]
struct Group {
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Static members: group.instance.id → member id.
    instances: HashMap<String, String>,
    /// Ids handed out with MEMBER_ID_REQUIRED, not yet used, with their expiry.
    pending: HashMap<String, Millis>,
    /// PreparingRebalance: when the join phase ends regardless; CompletingRebalance:
    /// when members that did not sync are removed.
    rebalance_deadline: Millis,
    /// The first rebalance of an empty group waits this long for more members.
    join_not_before: Millis,
    /// The leader's assignment while it is being stored.
    storing: Option<i32>,
    /// Static members replaced in a Stable group, answered once stored.
    static_stores: Vec<StaticStore>,
}

/// A static member's replacement waiting for its group record.
#[derive(Debug)]
struct StaticStore {
    token: Token,
    new_id: String,
    /// The member as it was, restored if the record cannot be stored.
    before: Member,
    old_leader: Option<String>,
    response: JoinResponse,
}

impl Group {
    fn new() -> Self {
        Group {
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            instances: HashMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: 0,
            join_not_before: 0,
            storing: None,
            static_stores: Vec::new(),
        }
    }

    /// Kafka's supportsProtocols: an empty group takes any non-empty protocol set;
    /// otherwise the type must match and one protocol must be supported by all.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(name, _)| self.members.values().all(|m| m.supports(name)))
    }

    /// Kafka's selectProtocol: among the protocols every member supports, the one
    /// most members prefer; ties go to the earliest in the leader's order.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| self.members.values().all(|m| m.supports(n)))
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                *votes.entry(name).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        candidates
            .into_iter()
            .find(|c| votes.get(c) == Some(&best))
            .cloned()
    }

    fn max_rebalance_timeout(&self) -> u64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    fn value(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscription: m.metadata(&protocol).to_vec(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
        }
    }
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

impl From<OffsetValue> for Committed {
    fn from(v: OffsetValue) -> Self {
        Committed {
            offset: v.offset,
            leader_epoch: v.leader_epoch,
            metadata: v.metadata,
            commit_ms: v.commit_ms,
        }
    }
}

/// Every group of one offsets partition.
#[derive(Debug)]
pub struct Coordinator {
    settings: Settings,
    groups: BTreeMap<String, Group>,
    offsets: BTreeMap<String, BTreeMap<(String, i32), Committed>>,
}

impl Coordinator {
    pub fn new(settings: Settings) -> Self {
        Coordinator {
            settings,
            groups: BTreeMap::new(),
            offsets: BTreeMap::new(),
        }
    }

    // ------------------------------------------------------------------
    // Loading

    /// Replay one stored group record (None: deleted). The last one wins.
    pub fn replay_group(&mut self, group: &str, value: Option<GroupValue>) {
        match value {
            None => {
                self.groups.remove(group);
            }
            Some(v) => {
                let mut g = Group::new();
                g.generation = v.generation;
                g.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
                g.protocol = v.protocol.clone();
                g.leader = v.leader;
                let protocol = v.protocol.unwrap_or_default();
                for m in v.members {
                    if let Some(i) = &m.instance_id {
                        g.instances.insert(i.clone(), m.member_id.clone());
                    }
                    g.members.insert(
                        m.member_id.clone(),
                        Member {
                            id: m.member_id,
                            instance_id: m.instance_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                            session_timeout_ms: m.session_timeout_ms,
                            rebalance_timeout_ms: m.rebalance_timeout_ms,
                            protocols: vec![(protocol.clone(), Bytes::from(m.subscription))],
                            assignment: Bytes::from(m.assignment),
                            previous_assignment: Bytes::new(),
                            awaiting_join: None,
                            awaiting_sync: None,
                            heartbeat_deadline: 0,
                        },
                    );
                }
                self.groups.insert(group.to_string(), g);
            }
        }
    }

    /// Replay one stored offset record (None: deleted).
    pub fn replay_offset(
        &mut self,
        group: &str,
        topic: &str,
        partition: i32,
        value: Option<OffsetValue>,
    ) {
        let key = (topic.to_string(), partition);
        match value {
            Some(v) => {
                self.offsets
                    .entry(group.to_string())
                    .or_default()
                    .insert(key, v.into());
            }
            None => {
                if let Some(offsets) = self.offsets.get_mut(group) {
                    offsets.remove(&key);
                    if offsets.is_empty() {
                        self.offsets.remove(group);
                    }
                }
            }
        }
    }

    /// After replay: groups with members resume Stable (their members get a full
    /// session to show up at this coordinator), the others are Empty.
    pub fn loaded(&mut self, now: Millis) {
        for g in self.groups.values_mut() {
            g.state = if g.members.is_empty() {
                State::Empty
            } else {
                State::Stable
            };
            for m in g.members.values_mut() {
                m.heartbeat_deadline = now + m.session_timeout_ms;
            }
        }
    }

    // ------------------------------------------------------------------
    // JoinGroup

    pub fn join(&mut self, now: Millis, token: Token, r: JoinRequest) -> Vec<Action> {
        let mut out = Vec::new();
        let reply = |out: &mut Vec<Action>, resp: JoinResponse| {
            out.push(Action::Reply(token, Reply::Join(resp)));
        };
        if r.group.is_empty() {
            reply(
                &mut out,
                JoinResponse::error(INVALID_GROUP_ID, &r.member_id),
            );
            return out;
        }
        if r.session_timeout_ms < self.settings.min_session_timeout_ms
            || r.session_timeout_ms > self.settings.max_session_timeout_ms
        {
            reply(
                &mut out,
                JoinResponse::error(INVALID_SESSION_TIMEOUT, &r.member_id),
            );
            return out;
        }
        let exists = self.groups.contains_key(&r.group);
        if !exists && !r.member_id.is_empty() {
            reply(
                &mut out,
                JoinResponse::error(UNKNOWN_MEMBER_ID, &r.member_id),
            );
            return out;
        }
        let settings = self.settings.clone();
        let g = self
            .groups
            .entry(r.group.clone())
            .or_insert_with(Group::new);
        if !g.supports(&r.protocol_type, &r.protocols) {
            reply(
                &mut out,
                JoinResponse::error(INCONSISTENT_GROUP_PROTOCOL, &r.member_id),
            );
            if g.members.is_empty() && g.state == State::Empty && !exists {
                self.groups.remove(&r.group);
            }
            return out;
        }
        let group = r.group.clone();
        if r.member_id.is_empty() {
            Self::join_new(&settings, now, token, g, r, &mut out);
        } else {
            Self::join_known(&settings, now, token, g, r, &mut out);
        }
        Self::fill_group(&group, &mut out);
        out
    }

    fn join_new(
        settings: &Settings,
        now: Millis,
        token: Token,
        g: &mut Group,
        r: JoinRequest,
        out: &mut Vec<Action>,
    ) {
        let id = r.fresh_member_id.clone();
        if let Some(instance) = r.instance_id.clone() {
            if let Some(old) = g.instances.get(&instance).cloned() {
                Self::replace_static(now, token, g, &old, r, out);
                return;
            }
        } else if r.require_known_member {
            // v4+: the member must come back with this id; until then it counts as
            // a pending member the rebalance waits for.
            g.pending.insert(id.clone(), now + r.session_timeout_ms);
            out.push(Action::Reply(
                token,
                Reply::Join(JoinResponse::error(MEMBER_ID_REQUIRED, &id)),
            ));
            return;
        }
        Self::add_member(settings, now, token, g, id, r, out);
    }

    fn add_member(
        settings: &Settings,
        now: Millis,
        token: Token,
        g: &mut Group,
        id: String,
        r: JoinRequest,
        out: &mut Vec<Action>,
    ) {
        g.pending.remove(&id);
        if g.members.is_empty() {
            g.protocol_type = Some(r.protocol_type.clone());
        }
        if let Some(i) = &r.instance_id {
            g.instances.insert(i.clone(), id.clone());
        }
        g.members.insert(
            id.clone(),
            Member {
                id,
                instance_id: r.instance_id,
                client_id: r.client_id,
                client_host: r.client_host,
                session_timeout_ms: r.session_timeout_ms,
                rebalance_timeout_ms: r.rebalance_timeout_ms,
                protocols: r.protocols,
                assignment: Bytes::new(),
                previous_assignment: Bytes::new(),
                awaiting_join: Some(token),
                awaiting_sync: None,
                heartbeat_deadline: now + r.session_timeout_ms,
            },
        );
        match g.state {
            State::PreparingRebalance => {
                // A new member during the initial delay pushes it out again (bounded
                // by the rebalance deadline), as Kafka's InitialDelayedJoin does.
                if g.join_not_before > now {
                    g.join_not_before =
                        (now + settings.initial_rebalance_delay_ms).min(g.rebalance_deadline);
                }
                Self::try_complete_join(now, g, out);
            }
            _ => Self::prepare_rebalance(settings, now, g, out),
        }
    }

    /// A static member came back with a new id: the old id is fenced. In a Stable
    /// group whose protocol does not change, nothing else moves (no rebalance).
    fn replace_static(
        now: Millis,
        token: Token,
        g: &mut Group,
        old: &str,
        r: JoinRequest,
        out: &mut Vec<Action>,
    ) {
        let Some(mut m) = g.members.remove(old) else {
            return;
        };
        let before = m.clone();
        let old_leader = g.leader.clone();
        Self::answer_waiting(&mut m, FENCED_INSTANCE_ID, out);
        let id = r.fresh_member_id.clone();
        m.id = id.clone();
        m.client_id = r.client_id;
        m.client_host = r.client_host;
        m.session_timeout_ms = r.session_timeout_ms;
        m.rebalance_timeout_ms = r.rebalance_timeout_ms;
        m.protocols = r.protocols;
        m.heartbeat_deadline = now + m.session_timeout_ms;
        if let Some(i) = &r.instance_id {
            g.instances.insert(i.clone(), id.clone());
        }
        if g.leader.as_deref() == Some(old) {
            g.leader = Some(id.clone());
        }
        g.members.insert(id.clone(), m);
        let unchanged = g.protocol.is_some() && g.select_protocol() == g.protocol;
        if g.state == State::Stable && unchanged {
            // Answered once the new member id is stored (Kafka's
            // updateStaticMemberAndRebalance): a coordinator taking over from the
            // log must know the id the client now uses.
            let is_leader = g.leader.as_deref() == Some(id.as_str());
            g.static_stores.push(StaticStore {
                token,
                new_id: id.clone(),
                before,
                old_leader,
                response: JoinResponse {
                    error: errors::NONE,
                    generation: g.generation,
                    protocol_type: g.protocol_type.clone(),
                    protocol_name: g.protocol.clone(),
                    leader: g.leader.clone().unwrap_or_default(),
                    member_id: id,
                    members: if is_leader {
                        Self::joined_members(g)
                    } else {
                        Vec::new()
                    },
                    skip_assignment: is_leader,
                },
            });
            out.push(Action::StoreMember {
                group: String::new(), // filled by the caller
                token,
                value: g.value(),
            });
            return;
        }
        if let Some(m) = g.members.get_mut(&id) {
            m.awaiting_join = Some(token);
        }
        if g.state != State::PreparingRebalance {
            Self::prepare_rebalance_now(now, g, out);
        }
        Self::try_complete_join(now, g, out);
    }

    /// The group record asked for by [`Action::StoreMember`] is stored (`ok`):
    /// the static member gets its answer. If not, the replacement is undone and
    /// the member is told to retry.
    pub fn static_member_stored(
        &mut self,
        now: Millis,
        group: &str,
        token: Token,
        ok: bool,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(g) = self.groups.get_mut(group) else {
            return out;
        };
        let Some(at) = g.static_stores.iter().position(|s| s.token == token) else {
            return out;
        };
        let st = g.static_stores.remove(at);
        if ok {
            out.push(Action::Reply(token, Reply::Join(st.response)));
            return out;
        }
        if let Some(m) = g.members.remove(&st.new_id) {
            let mut old = st.before;
            old.heartbeat_deadline = now + old.session_timeout_ms;
            old.assignment = m.assignment;
            if let Some(i) = &old.instance_id {
                g.instances.insert(i.clone(), old.id.clone());
            }
            if g.leader.as_deref() == Some(st.new_id.as_str()) {
                g.leader = st.old_leader;
            }
            g.members.insert(old.id.clone(), old);
        }
        out.push(Action::Reply(
            token,
            Reply::Join(JoinResponse::error(COORDINATOR_NOT_AVAILABLE, &st.new_id)),
        ));
        out
    }

    fn join_known(
        settings: &Settings,
        now: Millis,
        token: Token,
        g: &mut Group,
        r: JoinRequest,
        out: &mut Vec<Action>,
    ) {
        let reply_err = |out: &mut Vec<Action>, code: i16| {
            out.push(Action::Reply(
                token,
                Reply::Join(JoinResponse::error(code, &r.member_id)),
            ));
        };
        if let Some(instance) = &r.instance_id {
            match g.instances.get(instance) {
                Some(id) if *id != r.member_id => return reply_err(out, FENCED_INSTANCE_ID),
                None if !g.members.contains_key(&r.member_id) => {
                    return reply_err(out, UNKNOWN_MEMBER_ID)
                }
                _ => {}
            }
        }
        if !g.members.contains_key(&r.member_id) {
            if g.pending.contains_key(&r.member_id) {
                let id = r.member_id.clone();
                Self::add_member(settings, now, token, g, id, r, out);
            } else {
                reply_err(out, UNKNOWN_MEMBER_ID);
            }
            return;
        }
        let is_leader = g.leader.as_deref() == Some(r.member_id.as_str());
        let state = g.state;
        let generation = g.generation;
        let Some(m) = g.members.get_mut(&r.member_id) else {
            return;
        };
        if let Some(old) = m.awaiting_join.replace(token) {
            // The same member asked twice: the earlier request is superseded.
            out.push(Action::Reply(
                old,
                Reply::Join(JoinResponse::error(UNKNOWN_MEMBER_ID, &r.member_id)),
            ));
        }
        let changed = m.protocols != r.protocols;
        m.protocols = r.protocols;
        m.client_id = r.client_id;
        m.client_host = r.client_host;
        m.session_timeout_ms = r.session_timeout_ms;
        m.rebalance_timeout_ms = r.rebalance_timeout_ms;
        m.heartbeat_deadline = now + m.session_timeout_ms;
        match state {
            State::PreparingRebalance => Self::try_complete_join(now, g, out),
            State::CompletingRebalance | State::Stable if !changed && !is_leader => {
                // Nothing changed: tell it the current generation again.
                if let Some(m) = g.members.get_mut(&r.member_id) {
                    m.awaiting_join = None;
                }
                out.push(Action::Reply(
                    token,
                    Reply::Join(JoinResponse {
                        error: errors::NONE,
                        generation,
                        protocol_type: g.protocol_type.clone(),
                        protocol_name: g.protocol.clone(),
                        leader: g.leader.clone().unwrap_or_default(),
                        member_id: r.member_id,
                        members: Vec::new(),
                        skip_assignment: false,
                    }),
                ));
            }
            State::CompletingRebalance if !changed => {
                // The leader asking again before syncing: give it the members again.
                if let Some(m) = g.members.get_mut(&r.member_id) {
                    m.awaiting_join = None;
                }
                out.push(Action::Reply(
                    token,
                    Reply::Join(Self::join_response(g, &r.member_id)),
                ));
            }
            _ => Self::prepare_rebalance(settings, now, g, out),
        }
    }

    fn joined_members(g: &Group) -> Vec<JoinedMember> {
        let protocol = g.protocol.clone().unwrap_or_default();
        g.members
            .values()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata(&protocol),
            })
            .collect()
    }

    fn join_response(g: &Group, member_id: &str) -> JoinResponse {
        let is_leader = g.leader.as_deref() == Some(member_id);
        JoinResponse {
            error: errors::NONE,
            generation: g.generation,
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol.clone(),
            leader: g.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                Self::joined_members(g)
            } else {
                Vec::new()
            },
            skip_assignment: false,
        }
    }

    fn prepare_rebalance(settings: &Settings, now: Millis, g: &mut Group, out: &mut Vec<Action>) {
        let from_empty = g.state == State::Empty;
        Self::prepare_rebalance_now(now, g, out);
        if from_empty && settings.initial_rebalance_delay_ms > 0 {
            g.join_not_before =
                (now + settings.initial_rebalance_delay_ms).min(g.rebalance_deadline);
        }
        Self::try_complete_join(now, g, out);
    }

    /// Enter PreparingRebalance: waiting syncs are told a new rebalance started
    /// (and get a full session to rejoin).
    fn prepare_rebalance_now(now: Millis, g: &mut Group, out: &mut Vec<Action>) {
        if g.state == State::CompletingRebalance {
            for m in g.members.values_mut() {
                if let Some(t) = m.awaiting_sync.take() {
                    m.heartbeat_deadline = now + m.session_timeout_ms;
                    out.push(Action::Reply(
                        t,
                        Reply::Sync(SyncResponse::error(REBALANCE_IN_PROGRESS)),
                    ));
                }
            }
        }
        g.storing = None;
        g.state = State::PreparingRebalance;
        g.join_not_before = now;
        g.rebalance_deadline = now + g.max_rebalance_timeout();
    }

    fn try_complete_join(now: Millis, g: &mut Group, out: &mut Vec<Action>) {
        if g.state != State::PreparingRebalance {
            return;
        }
        let all_joined =
            g.pending.is_empty() && g.members.values().all(|m| m.awaiting_join.is_some());
        if (all_joined && now >= g.join_not_before) || now >= g.rebalance_deadline {
            Self::complete_join(now, g, out);
        }
    }

    fn complete_join(now: Millis, g: &mut Group, out: &mut Vec<Action>) {
        // Dynamic members that did not rejoin in time are out, and so are unused
        // ids. Static members stay (Kafka's onCompleteJoin): the leader assigns
        // them from their last metadata, and a restarting one takes its
        // assignment back without another rebalance (or its session ends).
        let gone: Vec<String> = g
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            Self::drop_member(g, &id, out);
        }
        g.pending.clear();
        if !g.members.is_empty() && g.members.values().all(|m| m.awaiting_join.is_none()) {
            // Only static members, none of them back: nobody could lead. Wait
            // another rebalance timeout; their sessions remove them meanwhile.
            g.rebalance_deadline = now + g.max_rebalance_timeout();
            return;
        }
        let before = g.generation;
        g.generation += 1;
        debug_assert!(g.generation > before, "generations only grow");
        if g.members.is_empty() {
            g.state = State::Empty;
            g.protocol = None;
            g.leader = None;
            out.push(Action::StoreGroup {
                group: String::new(),
                generation: g.generation,
                value: Some(g.value()),
            });
            return;
        }
        g.protocol = g.select_protocol();
        // The leader must be a member that rejoined (it gets the member list now).
        let leader_rejoined = g
            .leader
            .as_ref()
            .and_then(|l| g.members.get(l))
            .is_some_and(|m| m.awaiting_join.is_some());
        if !leader_rejoined {
            g.leader = g
                .members
                .values()
                .find(|m| m.awaiting_join.is_some())
                .map(|m| m.id.clone());
        }
        g.state = State::CompletingRebalance;
        g.rebalance_deadline = now + g.max_rebalance_timeout();
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for id in ids {
            let resp = Self::join_response(g, &id);
            if let Some(m) = g.members.get_mut(&id) {
                m.previous_assignment = std::mem::take(&mut m.assignment);
                if let Some(t) = m.awaiting_join.take() {
                    m.heartbeat_deadline = now + m.session_timeout_ms;
                    out.push(Action::Reply(t, Reply::Join(resp)));
                }
            }
        }
    }

    /// A member waiting for its JoinGroup or SyncGroup answer is alive whatever
    /// its session deadline says.
    fn kept_alive(g: &Group, m: &Member) -> bool {
        g.state == State::PreparingRebalance && m.awaiting_join.is_some()
            || g.state == State::CompletingRebalance && m.awaiting_sync.is_some()
    }

    /// Answer the member's waiting JoinGroup/SyncGroup with `error`.
    fn answer_waiting(m: &mut Member, error: i16, out: &mut Vec<Action>) {
        if let Some(t) = m.awaiting_join.take() {
            out.push(Action::Reply(
                t,
                Reply::Join(JoinResponse::error(error, &m.id)),
            ));
        }
        if let Some(t) = m.awaiting_sync.take() {
            out.push(Action::Reply(t, Reply::Sync(SyncResponse::error(error))));
        }
    }

    /// Remove a member, answering whatever it waits for.
    fn drop_member(g: &mut Group, id: &str, out: &mut Vec<Action>) {
        let Some(mut m) = g.members.remove(id) else {
            return;
        };
        Self::answer_waiting(&mut m, UNKNOWN_MEMBER_ID, out);
        if let Some(i) = &m.instance_id {
            if g.instances.get(i).map(String::as_str) == Some(id) {
                g.instances.remove(i);
            }
        }
        if g.leader.as_deref() == Some(id) {
            g.leader = None;
        }
    }

    /// A member left or expired: the others rebalance.
    fn remove_member(now: Millis, g: &mut Group, id: &str, out: &mut Vec<Action>) {
        if !g.members.contains_key(id) {
            // Already dropped (e.g. by the join completion an earlier removal
            // triggered in the same tick): nothing changes.
            return;
        }
        Self::drop_member(g, id, out);
        match g.state {
            State::Stable | State::CompletingRebalance => Self::prepare_rebalance_now(now, g, out),
            State::PreparingRebalance => Self::try_complete_join(now, g, out),
            State::Empty => {}
        }
        Self::try_complete_join(now, g, out);
    }

    // ------------------------------------------------------------------
    // SyncGroup, Heartbeat, LeaveGroup

    /// The member named by a request, checked the way every group API checks it.
    fn check_member(g: &Group, member_id: &str, instance_id: Option<&str>) -> Result<(), i16> {
        if let Some(i) = instance_id {
            match g.instances.get(i) {
                Some(id) if id != member_id => return Err(FENCED_INSTANCE_ID),
                _ => {}
            }
        }
        if !g.members.contains_key(member_id) {
            return Err(UNKNOWN_MEMBER_ID);
        }
        Ok(())
    }

    pub fn sync(&mut self, now: Millis, token: Token, r: SyncRequest) -> Vec<Action> {
        let mut out = Vec::new();
        let reply = |out: &mut Vec<Action>, resp: SyncResponse| {
            out.push(Action::Reply(token, Reply::Sync(resp)));
        };
        let Some(g) = self.groups.get_mut(&r.group) else {
            reply(&mut out, SyncResponse::error(UNKNOWN_MEMBER_ID));
            return out;
        };
        if let Err(code) = Self::check_member(g, &r.member_id, r.instance_id.as_deref()) {
            reply(&mut out, SyncResponse::error(code));
            return out;
        }
        if r.generation != g.generation {
            reply(&mut out, SyncResponse::error(ILLEGAL_GENERATION));
            return out;
        }
        if r.protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != g.protocol_type.as_ref())
            || r.protocol_name
                .as_ref()
                .is_some_and(|p| Some(p) != g.protocol.as_ref())
        {
            reply(&mut out, SyncResponse::error(INCONSISTENT_GROUP_PROTOCOL));
            return out;
        }
        match g.state {
            State::Empty => reply(&mut out, SyncResponse::error(UNKNOWN_MEMBER_ID)),
            State::PreparingRebalance => {
                reply(&mut out, SyncResponse::error(REBALANCE_IN_PROGRESS))
            }
            State::Stable => {
                let Some(m) = g.members.get_mut(&r.member_id) else {
                    return out;
                };
                m.heartbeat_deadline = now + m.session_timeout_ms;
                reply(
                    &mut out,
                    SyncResponse {
                        error: errors::NONE,
                        protocol_type: g.protocol_type.clone(),
                        protocol_name: g.protocol.clone(),
                        assignment: m.assignment.clone(),
                    },
                );
            }
            State::CompletingRebalance => {
                let is_leader = g.leader.as_deref() == Some(r.member_id.as_str());
                if let Some(m) = g.members.get_mut(&r.member_id) {
                    m.heartbeat_deadline = now + m.session_timeout_ms;
                    if let Some(old) = m.awaiting_sync.replace(token) {
                        out.push(Action::Reply(
                            old,
                            Reply::Sync(SyncResponse::error(REBALANCE_IN_PROGRESS)),
                        ));
                    }
                }
                if is_leader && g.storing.is_none() {
                    let given: HashMap<&String, &Bytes> =
                        r.assignments.iter().map(|(m, a)| (m, a)).collect();
                    for m in g.members.values_mut() {
                        m.assignment = given.get(&m.id).map(|a| (*a).clone()).unwrap_or_default();
                    }
                    g.storing = Some(g.generation);
                    out.push(Action::StoreGroup {
                        group: r.group.clone(),
                        generation: g.generation,
                        value: Some(g.value()),
                    });
                }
            }
        }
        out
    }

    /// The group record asked for by [`Action::StoreGroup`] is stored (`ok`) or
    /// could not be. When it carries a new generation's assignment, the waiting
    /// members get theirs now.
    pub fn group_stored(
        &mut self,
        now: Millis,
        group: &str,
        generation: i32,
        ok: bool,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(g) = self.groups.get_mut(group) else {
            return out;
        };
        if g.state != State::CompletingRebalance
            || g.storing != Some(generation)
            || g.generation != generation
        {
            return out;
        }
        g.storing = None;
        if !ok {
            for m in g.members.values_mut() {
                m.assignment = Bytes::new();
                m.heartbeat_deadline = now + m.session_timeout_ms;
                if let Some(t) = m.awaiting_sync.take() {
                    out.push(Action::Reply(
                        t,
                        Reply::Sync(SyncResponse::error(COORDINATOR_NOT_AVAILABLE)),
                    ));
                }
            }
            Self::prepare_rebalance_now(now, g, &mut out);
            return out;
        }
        g.state = State::Stable;
        for m in g.members.values_mut() {
            // Kafka's propagateAssignment: every member's session restarts now.
            m.heartbeat_deadline = now + m.session_timeout_ms;
            if let Some(t) = m.awaiting_sync.take() {
                out.push(Action::Reply(
                    t,
                    Reply::Sync(SyncResponse {
                        error: errors::NONE,
                        protocol_type: g.protocol_type.clone(),
                        protocol_name: g.protocol.clone(),
                        assignment: m.assignment.clone(),
                    }),
                ));
            }
        }
        out
    }

    /// Heartbeat: the Kafka error code (NONE, REBALANCE_IN_PROGRESS, ...).
    pub fn heartbeat(
        &mut self,
        now: Millis,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> i16 {
        let Some(g) = self.groups.get_mut(group) else {
            return UNKNOWN_MEMBER_ID;
        };
        if let Err(code) = Self::check_member(g, member_id, instance_id) {
            return code;
        }
        if g.state == State::Empty {
            return UNKNOWN_MEMBER_ID;
        }
        if generation != g.generation {
            return ILLEGAL_GENERATION;
        }
        if let Some(m) = g.members.get_mut(member_id) {
            m.heartbeat_deadline = now + m.session_timeout_ms;
        }
        match g.state {
            State::PreparingRebalance => REBALANCE_IN_PROGRESS,
            _ => errors::NONE,
        }
    }

    /// LeaveGroup for each (member id, instance id): per member error codes, and
    /// the group's (UNKNOWN_MEMBER_ID when there is no such group).
    pub fn leave(
        &mut self,
        now: Millis,
        group: &str,
        members: &[(String, Option<String>)],
    ) -> (i16, Vec<i16>, Vec<Action>) {
        let mut out = Vec::new();
        let Some(g) = self.groups.get_mut(group) else {
            return (errors::NONE, vec![UNKNOWN_MEMBER_ID; members.len()], out);
        };
        let mut codes = Vec::with_capacity(members.len());
        for (member_id, instance_id) in members {
            let id = match instance_id {
                Some(i) => match g.instances.get(i) {
                    None => {
                        codes.push(UNKNOWN_MEMBER_ID);
                        continue;
                    }
                    Some(id) if !member_id.is_empty() && id != member_id => {
                        codes.push(FENCED_INSTANCE_ID);
                        continue;
                    }
                    Some(id) => id.clone(),
                },
                None => member_id.clone(),
            };
            if g.pending.remove(&id).is_some() {
                codes.push(errors::NONE);
                Self::try_complete_join(now, g, &mut out);
                continue;
            }
            if !g.members.contains_key(&id) {
                codes.push(UNKNOWN_MEMBER_ID);
                continue;
            }
            Self::remove_member(now, g, &id, &mut out);
            codes.push(errors::NONE);
        }
        Self::fill_group(group, &mut out);
        (errors::NONE, codes, out)
    }

    // ------------------------------------------------------------------
    // Time

    /// Expire sessions, pending member ids and rebalance deadlines.
    pub fn tick(&mut self, now: Millis) -> Vec<Action> {
        let mut out = Vec::new();
        for (name, g) in self.groups.iter_mut() {
            let start = out.len();
            g.pending.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| m.heartbeat_deadline <= now && !Self::kept_alive(g, m))
                .map(|m| m.id.clone())
                .collect();
            for id in expired {
                Self::remove_member(now, g, &id, &mut out);
            }
            match g.state {
                State::PreparingRebalance => Self::try_complete_join(now, g, &mut out),
                State::CompletingRebalance
                    if now >= g.rebalance_deadline && g.storing.is_none() =>
                {
                    // Members that never sent SyncGroup are out; the rest rejoin.
                    let lazy: Vec<String> = g
                        .members
                        .values()
                        .filter(|m| m.awaiting_sync.is_none())
                        .map(|m| m.id.clone())
                        .collect();
                    for id in lazy {
                        Self::drop_member(g, &id, &mut out);
                    }
                    Self::prepare_rebalance_now(now, g, &mut out);
                    Self::try_complete_join(now, g, &mut out);
                }
                _ => {}
            }
            for a in &mut out[start..] {
                if let Action::StoreGroup { group, .. } = a {
                    if group.is_empty() {
                        group.clone_from(name);
                    }
                }
            }
        }
        // A group id that only ever got MEMBER_ID_REQUIRED (no join completed,
        // nothing stored, no offsets) is forgotten once its pending ids expired.
        let offsets = &self.offsets;
        self.groups.retain(|name, g| {
            !(g.state == State::Empty
                && g.generation == 0
                && g.members.is_empty()
                && g.pending.is_empty()
                && g.static_stores.is_empty()
                && !offsets.contains_key(name))
        });
        out
    }

    /// The earliest time a tick would change something (for the driver's timer).
    pub fn next_deadline(&self) -> Option<Millis> {
        let mut next: Option<Millis> = None;
        let mut at = |t: Millis| next = Some(next.map_or(t, |n| n.min(t)));
        for g in self.groups.values() {
            // Only deadlines a tick acts on: a member waiting for its answer does
            // not expire, the initial delay matters once everyone joined, and the
            // sync deadline waits while the assignment is being stored.
            for m in g.members.values().filter(|m| !Self::kept_alive(g, m)) {
                at(m.heartbeat_deadline);
            }
            for d in g.pending.values() {
                at(*d);
            }
            match g.state {
                State::PreparingRebalance => {
                    if g.pending.is_empty() && g.members.values().all(|m| m.awaiting_join.is_some())
                    {
                        at(g.join_not_before);
                    }
                    at(g.rebalance_deadline);
                }
                State::CompletingRebalance if g.storing.is_none() => at(g.rebalance_deadline),
                _ => {}
            }
        }
        next
    }

    // ------------------------------------------------------------------
    // Offsets

    /// Check an OffsetCommit before its offsets are stored: Err is the error of
    /// every partition; Ok has one code per partition (NONE: store it).
    pub fn check_commit(
        &mut self,
        now: Millis,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        partitions: &[(String, i32)],
    ) -> Result<Vec<i16>, i16> {
        let ok = vec![errors::NONE; partitions.len()];
        let simple = generation < 0 && member_id.is_empty() && instance_id.is_none();
        let Some(g) = self.groups.get_mut(group) else {
            // A group that only commits (assign() consumers, admin tools).
            return if simple {
                Ok(ok)
            } else {
                Err(ILLEGAL_GENERATION)
            };
        };
        if simple {
            return if g.state == State::Empty {
                Ok(ok)
            } else {
                Err(UNKNOWN_MEMBER_ID)
            };
        }
        Self::check_member(g, member_id, instance_id)?;
        if g.state == State::CompletingRebalance {
            return Err(REBALANCE_IN_PROGRESS);
        }
        if generation != g.generation {
            return Err(ILLEGAL_GENERATION);
        }
        let consumer = g.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL);
        let Some(m) = g.members.get_mut(member_id) else {
            return Err(UNKNOWN_MEMBER_ID);
        };
        m.heartbeat_deadline = now + m.session_timeout_ms;
        if !consumer {
            return Ok(ok);
        }
        // The consumer protocol's assignment says which partitions are the
        // member's; a commit for another's partition is from a stale member.
        let owned = match (
            super::store::assigned_partitions(&m.assignment),
            super::store::assigned_partitions(&m.previous_assignment),
        ) {
            (Some(mut now_owned), previous) => {
                now_owned.extend(previous.unwrap_or_default());
                now_owned
            }
            (None, _) => return Ok(ok),
        };
        Ok(partitions
            .iter()
            .map(|p| {
                if owned.contains(p) {
                    errors::NONE
                } else {
                    ILLEGAL_GENERATION
                }
            })
            .collect())
    }

    /// Offsets now stored: visible to OffsetFetch.
    pub fn offsets_stored(&mut self, group: &str, offsets: Vec<(String, i32, Committed)>) {
        let entry = self.offsets.entry(group.to_string()).or_default();
        for (topic, partition, c) in offsets {
            entry.insert((topic, partition), c);
        }
    }

    /// Committed offsets: of the given partitions (None where none), or all.
    pub fn committed(
        &self,
        group: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Option<Committed>)> {
        let offsets = self.offsets.get(group);
        match partitions {
            Some(list) => list
                .iter()
                .map(|(t, p)| {
                    let c = offsets.and_then(|o| o.get(&(t.clone(), *p)).cloned());
                    (t.clone(), *p, c)
                })
                .collect(),
            None => offsets
                .into_iter()
                .flatten()
                .map(|((t, p), c)| (t.clone(), *p, Some(c.clone())))
                .collect(),
        }
    }

    /// OffsetDelete: which of `partitions` may be deleted (per partition code) —
    /// not those of a topic a live consumer group subscribes to.
    pub fn check_offset_delete(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<i16>, i16> {
        let g = self.groups.get(group);
        if g.is_none() && !self.offsets.contains_key(group) {
            return Err(GROUP_ID_NOT_FOUND);
        }
        let subscribed: BTreeSet<String> = match g {
            Some(g) if g.state != State::Empty => {
                if g.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL) {
                    return Err(NON_EMPTY_GROUP);
                }
                // Before the first join completes no protocol is chosen: every
                // protocol's subscription counts.
                g.members
                    .values()
                    .flat_map(|m| {
                        m.protocols
                            .iter()
                            .filter(|(name, _)| g.protocol.as_ref().is_none_or(|p| p == name))
                            .flat_map(|(_, meta)| super::store::subscribed_topics(meta))
                    })
                    .collect()
            }
            _ => BTreeSet::new(),
        };
        Ok(partitions
            .iter()
            .map(|(t, _)| {
                if subscribed.contains(t) {
                    GROUP_SUBSCRIBED_TO_TOPIC
                } else {
                    errors::NONE
                }
            })
            .collect())
    }

    /// Forget offsets (their tombstones are being written).
    pub fn delete_offsets(&mut self, group: &str, partitions: &[(String, i32)]) {
        for (t, p) in partitions {
            self.replay_offset(group, t, *p, None);
        }
    }

    // ------------------------------------------------------------------
    // Admin

    /// Every group known here: (id, protocol type, state).
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        let mut out: BTreeMap<String, (String, &'static str)> = self
            .offsets
            .keys()
            .map(|g| (g.clone(), (String::new(), State::Empty.name())))
            .collect();
        for (name, g) in &self.groups {
            out.insert(
                name.clone(),
                (g.protocol_type.clone().unwrap_or_default(), g.state.name()),
            );
        }
        out.into_iter().map(|(n, (t, s))| (n, t, s)).collect()
    }

    /// DescribeGroups: None for a group this coordinator does not know ("Dead").
    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        let g = match self.groups.get(group) {
            Some(g) => g,
            None if self.offsets.contains_key(group) => {
                return Some(GroupDescription {
                    group: group.to_string(),
                    state: State::Empty.name(),
                    protocol_type: String::new(),
                    protocol: String::new(),
                    members: Vec::new(),
                })
            }
            None => return None,
        };
        let protocol = g.protocol.clone().unwrap_or_default();
        let stable = g.state == State::Stable;
        Some(GroupDescription {
            group: group.to_string(),
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata(&protocol),
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        })
    }

    /// DeleteGroups: removes an empty group and its offsets; Ok has the partitions
    /// whose offset tombstones must be written (with the group's).
    pub fn delete_group(&mut self, group: &str) -> Result<Vec<(String, i32)>, i16> {
        match self.groups.get(group) {
            Some(g) if g.state != State::Empty || !g.members.is_empty() => {
                return Err(NON_EMPTY_GROUP)
            }
            None if !self.offsets.contains_key(group) => return Err(GROUP_ID_NOT_FOUND),
            _ => {}
        }
        self.groups.remove(group);
        Ok(self
            .offsets
            .remove(group)
            .map(|o| o.into_keys().collect())
            .unwrap_or_default())
    }

    /// Tokens of every waiting request (the driver answers them when it drops
    /// this coordinator, e.g. on losing leadership).
    pub fn waiting(&self) -> Vec<Token> {
        self.groups
            .values()
            .flat_map(|g| {
                g.members
                    .values()
                    .flat_map(|m| m.awaiting_join.into_iter().chain(m.awaiting_sync))
                    .chain(g.static_stores.iter().map(|s| s.token))
            })
            .collect()
    }

    /// Name the group in StoreGroup actions made without it.
    fn fill_group(group: &str, out: &mut [Action]) {
        for a in out {
            if let Action::StoreGroup { group: g, .. } | Action::StoreMember { group: g, .. } = a {
                if g.is_empty() {
                    *g = group.to_string();
                }
            }
        }
    }

    #[cfg(test)]
    #[allow(dead_code)]
    pub(crate) fn state_of(&self, group: &str) -> Option<(State, i32, Vec<String>)> {
        self.groups
            .get(group)
            .map(|g| (g.state, g.generation, g.members.keys().cloned().collect()))
    }
}

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;
