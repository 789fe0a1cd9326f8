//! Tests of the group coordinator, driven the way the I/O layer drives it.
//!
//! [`Sim`] is a deterministic driver: a virtual clock, a token counter, the answers
//! received by token, and a "store" that carries out `StoreGroup` actions (after a
//! delay, possibly failing) by calling `group_stored`. Like the real driver, whose
//! timer fires at `next_deadline()` (at once when that is already due), it ticks the
//! coordinator after every input and at every future deadline. Each step checks:
//! every token is answered at most once, the coordinator holds exactly the tokens
//! not answered yet (none is lost), generations never go back, and ticking just
//! before the next deadline changes nothing (so `next_deadline()` is never later
//! than the next event).
//!
//! After every tick, `next_deadline()` must lie in the future (a timer set to it
//! cannot spin).
//!
//! The unit tests follow Kafka's classic GroupCoordinator; the "rebalance storm"
//! at the end runs seeded random clients (joins, leaves, crashes, pauses, static
//! restarts, slow and failing stores, clock jumps, coordinator failovers) against
//! the invariants, then checks the group converges. Tests marked
//! `#[ignore = "BUG: ..."]` show behaviour that differs from Kafka's and should be
//! fixed in coordinator.rs. STORM_TRACE=<seed> traces one storm.

use super::*;

use std::collections::hash_map::Entry;

use bytes::BytesMut;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

const G: &str = "g";
const NONE: i16 = errors::NONE;

fn settings(initial_rebalance_delay_ms: u64) -> Settings {
    Settings {
        initial_rebalance_delay_ms,
        min_session_timeout_ms: 100,
        max_session_timeout_ms: 30_000,
    }
}

/// What the unit tests' leaders assign: the generation and the member.
fn asg(generation: i32, member: &str) -> Bytes {
    Bytes::from(format!("{generation}:{member}"))
}

fn sr(member: &str, generation: i32, assignments: &[(&str, Bytes)]) -> SyncRequest {
    SyncRequest {
        group: G.to_string(),
        generation,
        member_id: member.to_string(),
        instance_id: None,
        protocol_type: Some("consumer".to_string()),
        protocol_name: None,
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), a.clone()))
            .collect(),
    }
}

/// A consumer-protocol assignment (version 1), as a Java consumer's leader sends it.
fn consumer_assignment(parts: &[(&str, &[i32])]) -> Bytes {
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        parts
            .iter()
            .map(|(t, ps)| {
                TopicPartition::default()
                    .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                    .with_partitions(ps.to_vec())
            })
            .collect(),
    );
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&1i16.to_be_bytes());
    a.encode(&mut buf, 1).expect("assignment encodes");
    buf.freeze()
}

/// A consumer-protocol subscription (version 1) to `topics`.
fn consumer_subscription(topics: &[&str]) -> Bytes {
    let s = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|t| StrBytes::from_string(t.to_string()))
            .collect(),
    );
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&1i16.to_be_bytes());
    s.encode(&mut buf, 1).expect("subscription encodes");
    buf.freeze()
}

fn committed(offset: i64) -> Committed {
    Committed {
        offset,
        leader_epoch: -1,
        metadata: None,
        commit_ms: 1,
    }
}

fn tp(topic: &str, partition: i32) -> (String, i32) {
    (topic.to_string(), partition)
}

// ----------------------------------------------------------------------
// The driver

#[derive(Debug)]
struct PendingStore {
    due: Millis,
    group: String,
    generation: i32,
    ok: bool,
    /// Its place in the log (the last record of a group wins).
    seq: u64,
    value: Option<GroupValue>,
    /// A static member's replacement (`Action::StoreMember`) waiting for it.
    token: Option<Token>,
}

#[derive(Debug)]
struct Sim {
    c: Coordinator,
    now: Millis,
    next_token: Token,
    /// Requests not answered yet, with the time they were sent.
    outstanding: BTreeMap<Token, Millis>,
    /// Every answer, by token.
    replies: BTreeMap<Token, Reply>,
    /// Answers not yet picked up (by the storm's clients).
    inbox: Vec<(Token, Reply)>,
    stores: Vec<PendingStore>,
    /// Every StoreGroup action, in order.
    store_log: Vec<(String, i32, Option<GroupValue>)>,
    /// The group records written (log position, value): what a new coordinator
    /// loads after a failover.
    durable: BTreeMap<String, (u64, Option<GroupValue>)>,
    /// JoinGroup (not SyncGroup) tokens, for the driver's failover answers.
    join_tokens: BTreeSet<Token>,
    store_delay: Millis,
    store_ok: bool,
    /// Percentage of stores that fail (the storm's store failures).
    store_fail_pct: u32,
    rng: fastrand::Rng,
    max_generation: BTreeMap<String, i32>,
    /// Defaults of the JoinGroup requests the unit tests make.
    session: u64,
    rebalance: u64,
}

impl Sim {
    fn new(s: Settings) -> Self {
        Sim::with(Coordinator::new(s), 0)
    }

    fn with(c: Coordinator, now: Millis) -> Self {
        Sim {
            c,
            now,
            next_token: 1,
            outstanding: BTreeMap::new(),
            replies: BTreeMap::new(),
            inbox: Vec::new(),
            stores: Vec::new(),
            store_log: Vec::new(),
            durable: BTreeMap::new(),
            join_tokens: BTreeSet::new(),
            store_delay: 0,
            store_ok: true,
            store_fail_pct: 0,
            rng: fastrand::Rng::with_seed(0),
            max_generation: BTreeMap::new(),
            session: 1_000,
            rebalance: 3_000,
        }
    }

    /// A JoinGroup of client `name` (its member id and fresh id are its name; its
    /// metadata names it too).
    fn jr(&self, name: &str, member_id: &str) -> JoinRequest {
        JoinRequest {
            group: G.to_string(),
            member_id: member_id.to_string(),
            instance_id: None,
            client_id: format!("client-{name}"),
            client_host: "/10.0.0.1".to_string(),
            session_timeout_ms: self.session,
            rebalance_timeout_ms: self.rebalance,
            protocol_type: "consumer".to_string(),
            protocols: vec![("range".to_string(), Bytes::from(format!("sub-{name}")))],
            require_known_member: true,
            fresh_member_id: name.to_string(),
        }
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Reply(t, r) => {
                    assert!(
                        self.outstanding.remove(&t).is_some(),
                        "token {t} answered twice or never asked: {r:?}"
                    );
                    self.replies.insert(t, r.clone());
                    self.inbox.push((t, r));
                }
                Action::StoreGroup {
                    group,
                    generation,
                    value,
                } => self.start_store(group, generation, value, None),
                Action::StoreMember {
                    group,
                    token,
                    value,
                } => self.start_store(group, value.generation, Some(value), Some(token)),
            }
        }
    }

    /// A group record write, completing (or failing) after the store delay.
    fn start_store(
        &mut self,
        group: String,
        generation: i32,
        value: Option<GroupValue>,
        token: Option<Token>,
    ) {
        assert!(!group.is_empty(), "a store action without its group");
        self.store_log
            .push((group.clone(), generation, value.clone()));
        let ok = self.store_ok
            && (self.store_fail_pct == 0 || self.rng.u32(0..100) >= self.store_fail_pct);
        self.stores.push(PendingStore {
            due: self.now + self.store_delay,
            group,
            generation,
            ok,
            seq: self.store_log.len() as u64,
            value,
            token,
        });
    }

    fn due_store(&self) -> Option<usize> {
        self.stores
            .iter()
            .enumerate()
            .filter(|(_, s)| s.due <= self.now)
            .min_by_key(|(i, s)| (s.due, *i))
            .map(|(i, _)| i)
    }

    /// Finish the stores due, then tick (the driver's timer, due at once).
    fn settle(&mut self) {
        loop {
            while let Some(i) = self.due_store() {
                let s = self.stores.remove(i);
                if s.ok {
                    let d = self.durable.entry(s.group.clone()).or_insert((0, None));
                    if s.seq > d.0 {
                        *d = (s.seq, s.value.clone());
                    }
                }
                let a = match s.token {
                    Some(t) => self.c.static_member_stored(self.now, &s.group, t, s.ok),
                    None => self.c.group_stored(self.now, &s.group, s.generation, s.ok),
                };
                self.apply(a);
            }
            let a = self.c.tick(self.now);
            self.apply(a);
            if self.due_store().is_none() {
                break;
            }
        }
        // Once ticked, nothing is due: a timer set to next_deadline() cannot spin.
        let next = self.c.next_deadline();
        assert!(
            next.is_none_or(|d| d > self.now),
            "next_deadline() {next:?} is not after {} right after a tick",
            self.now
        );
        self.check();
    }

    fn check(&mut self) {
        for (name, g) in &self.c.groups {
            let max = self
                .max_generation
                .entry(name.clone())
                .or_insert(g.generation);
            assert!(
                g.generation >= *max,
                "generation of {name} went back from {max} to {}",
                g.generation
            );
            *max = g.generation;
        }
        let mut waiting = self.c.waiting();
        waiting.sort_unstable();
        assert!(
            waiting.iter().eq(self.outstanding.keys()),
            "the coordinator holds {waiting:?}, the callers wait for {:?}",
            self.outstanding.keys().collect::<Vec<_>>()
        );
    }

    /// The earliest time after now at which a tick could change something, for
    /// the driver's own schedule: every deadline the coordinator keeps, whether or
    /// not it matters now, without those already passed (every input is followed
    /// by a tick, so those were looked at). Never later than the next event; the
    /// coordinator's own next_deadline() is checked against what ticks do.
    fn future_deadline(&self) -> Option<Millis> {
        let now = self.now;
        let mut next: Option<Millis> = None;
        let mut at = |t: Millis| {
            if t > now {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for g in self.c.groups.values() {
            for m in g.members.values() {
                at(m.heartbeat_deadline);
            }
            for d in g.pending.values() {
                at(*d);
            }
            match g.state {
                State::PreparingRebalance => {
                    at(g.join_not_before);
                    at(g.rebalance_deadline);
                }
                State::CompletingRebalance => at(g.rebalance_deadline),
                _ => {}
            }
        }
        next
    }

    /// When the driver has something to do next (a timer or a store).
    fn next_internal(&self) -> Option<Millis> {
        let store = self.stores.iter().map(|s| s.due).min();
        [self.future_deadline(), store].into_iter().flatten().min()
    }

    fn snapshot(&self) -> Vec<(String, State, i32, usize, usize, Option<String>)> {
        self.c
            .groups
            .iter()
            .map(|(n, g)| {
                (
                    n.clone(),
                    g.state,
                    g.generation,
                    g.members.len(),
                    g.pending.len(),
                    g.leader.clone(),
                )
            })
            .collect()
    }

    /// Move the clock to `t`, no later than the next internal event, and do what is
    /// due then. Nothing may be due before: a tick at t-1 must change nothing. If
    /// the tick at t changes something, next_deadline() had to say so.
    fn goto(&mut self, t: Millis) {
        let told = self.c.next_deadline();
        if t > self.now + 1 {
            let before = self.snapshot();
            let a = self.c.tick(t - 1);
            assert!(
                a.is_empty(),
                "tick at {} (before the next event at {t}) acted: {a:?}",
                t - 1
            );
            assert_eq!(before, self.snapshot(), "tick at {} changed state", t - 1);
        }
        if t > self.now {
            self.now = t;
            let before = self.snapshot();
            let a = self.c.tick(t);
            if !a.is_empty() || before != self.snapshot() {
                assert!(
                    told.is_some_and(|d| d <= t),
                    "next_deadline() was {told:?}, yet a tick at {t} acted: {a:?}"
                );
            }
            self.apply(a);
        }
        self.settle();
    }

    fn advance_to(&mut self, t: Millis) {
        assert!(t >= self.now, "time goes forward");
        loop {
            match self.next_internal() {
                Some(n) if n < t => self.goto(n),
                _ => {
                    self.goto(t);
                    return;
                }
            }
        }
    }

    fn advance(&mut self, ms: Millis) {
        self.advance_to(self.now + ms);
    }

    fn token(&mut self) -> Token {
        let t = self.next_token;
        self.next_token += 1;
        self.outstanding.insert(t, self.now);
        t
    }

    fn join(&mut self, r: JoinRequest) -> Token {
        let t = self.token();
        self.join_tokens.insert(t);
        let a = self.c.join(self.now, t, r);
        self.apply(a);
        self.settle();
        t
    }

    fn sync(&mut self, r: SyncRequest) -> Token {
        let t = self.token();
        let a = self.c.sync(self.now, t, r);
        self.apply(a);
        self.settle();
        t
    }

    fn heartbeat(&mut self, member: &str, generation: i32) -> i16 {
        self.heartbeat_static(member, generation, None)
    }

    fn heartbeat_static(&mut self, member: &str, generation: i32, instance: Option<&str>) -> i16 {
        let code = self.c.heartbeat(self.now, G, generation, member, instance);
        self.settle();
        code
    }

    fn leave(&mut self, members: &[(&str, Option<&str>)]) -> (i16, Vec<i16>) {
        let members: Vec<(String, Option<String>)> = members
            .iter()
            .map(|(m, i)| (m.to_string(), i.map(str::to_string)))
            .collect();
        let (code, codes, a) = self.c.leave(self.now, G, &members);
        assert_eq!(codes.len(), members.len());
        self.apply(a);
        self.settle();
        (code, codes)
    }

    fn commit(
        &mut self,
        member: &str,
        generation: i32,
        instance: Option<&str>,
        partitions: &[(String, i32)],
    ) -> Result<Vec<i16>, i16> {
        let r = self
            .c
            .check_commit(self.now, G, generation, member, instance, partitions);
        self.settle();
        r
    }

    /// The offsets partition moves: the driver answers the waiting requests, the
    /// writes in flight are lost, and a new coordinator loads what was written.
    fn failover(&mut self) {
        let mut waiting = self.c.waiting();
        waiting.sort_unstable();
        for t in waiting {
            let r = if self.join_tokens.contains(&t) {
                Reply::Join(JoinResponse::error(COORDINATOR_NOT_AVAILABLE, ""))
            } else {
                Reply::Sync(SyncResponse::error(COORDINATOR_NOT_AVAILABLE))
            };
            self.outstanding.remove(&t);
            self.replies.insert(t, r.clone());
            self.inbox.push((t, r));
        }
        self.stores.clear();
        let mut c = Coordinator::new(self.c.settings.clone());
        for (group, (_, value)) in &self.durable {
            c.replay_group(group, value.clone());
        }
        c.loaded(self.now);
        self.c = c;
        // Generations completed but not stored are forgotten (as in Kafka).
        self.max_generation.clear();
        self.settle();
    }

    fn answered(&self, t: Token) -> bool {
        self.replies.contains_key(&t)
    }

    fn join_reply(&self, t: Token) -> JoinResponse {
        match self.replies.get(&t) {
            Some(Reply::Join(r)) => r.clone(),
            other => panic!("token {t}: expected a JoinGroup answer, got {other:?}"),
        }
    }

    fn sync_reply(&self, t: Token) -> SyncResponse {
        match self.replies.get(&t) {
            Some(Reply::Sync(r)) => r.clone(),
            other => panic!("token {t}: expected a SyncGroup answer, got {other:?}"),
        }
    }

    fn state(&self) -> (State, i32, Vec<String>) {
        self.c.state_of(G).expect("the group exists")
    }

    fn leader(&self) -> Option<String> {
        self.c.groups.get(G).and_then(|g| g.leader.clone())
    }

    /// `name` joins as a new dynamic member: MEMBER_ID_REQUIRED, then again with
    /// the id. Returns the token of the second JoinGroup.
    fn join_new(&mut self, name: &str) -> Token {
        let t = self.join(self.jr(name, ""));
        let r = self.join_reply(t);
        assert_eq!(r.error, MEMBER_ID_REQUIRED, "{name}: {r:?}");
        assert_eq!(r.member_id, name);
        assert_eq!(r.generation, -1);
        self.join(self.jr(name, name))
    }

    fn rejoin(&mut self, name: &str) -> Token {
        self.join(self.jr(name, name))
    }

    /// Every member syncs for `generation`: followers first, then the leader with
    /// an assignment for each; all get theirs (stores are immediate).
    fn sync_all(&mut self, generation: i32, names: &[&str]) {
        let leader = self.leader().expect("a leader");
        let mut tokens = Vec::new();
        for n in names.iter().filter(|n| **n != leader) {
            tokens.push((n.to_string(), self.sync(sr(n, generation, &[]))));
        }
        let all: Vec<(&str, Bytes)> = names.iter().map(|n| (*n, asg(generation, n))).collect();
        tokens.push((leader.clone(), self.sync(sr(&leader, generation, &all))));
        self.advance(self.store_delay);
        for (n, t) in tokens {
            let r = self.sync_reply(t);
            assert_eq!(r.error, NONE, "{n}: {r:?}");
            assert_eq!(r.assignment, asg(generation, &n));
        }
        assert_eq!(self.state().0, State::Stable);
    }

    /// All of `names` rejoin (a rebalance is under way) and sync: the new generation.
    fn rebalance(&mut self, names: &[&str]) -> i32 {
        let tokens: Vec<Token> = names.iter().map(|n| self.rejoin(n)).collect();
        let gen = self.join_reply(tokens[0]).generation;
        for (n, t) in names.iter().zip(tokens) {
            let r = self.join_reply(t);
            assert_eq!((r.error, r.generation), (NONE, gen), "{n}: {r:?}");
        }
        self.sync_all(gen, names);
        gen
    }
}

/// A group of `names` that joined inside the initial delay (100 ms): generation 1,
/// not synced yet (CompletingRebalance at 100 ms).
fn joined(names: &[&str]) -> (Sim, Vec<Token>) {
    joined_with(names, |_| {})
}

fn joined_with(names: &[&str], tune: impl FnOnce(&mut Sim)) -> (Sim, Vec<Token>) {
    let mut sim = Sim::new(settings(100));
    tune(&mut sim);
    let tokens: Vec<Token> = names.iter().map(|n| sim.join_new(n)).collect();
    sim.advance_to(100);
    for (n, t) in names.iter().zip(&tokens) {
        let r = sim.join_reply(*t);
        assert_eq!((r.error, r.generation), (NONE, 1), "{n}: {r:?}");
    }
    assert_eq!(sim.state().0, State::CompletingRebalance);
    (sim, tokens)
}

/// A Stable group of `names`, generation 1, at 100 ms.
fn stable(names: &[&str]) -> Sim {
    let (mut sim, _) = joined(names);
    sim.sync_all(1, names);
    sim
}

fn members(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

// ----------------------------------------------------------------------
// 1. Joins

#[test]
fn first_member_gets_an_id_then_leads_without_delay() {
    let mut sim = Sim::new(settings(0));
    let t = sim.join(sim.jr("a", ""));
    let r = sim.join_reply(t);
    assert_eq!(
        (r.error, r.member_id.as_str(), r.generation),
        (MEMBER_ID_REQUIRED, "a", -1)
    );
    // Only a pending id so far: no member, no rebalance.
    assert_eq!(sim.state(), (State::Empty, 0, vec![]));

    let t = sim.join(sim.jr("a", "a"));
    let r = sim.join_reply(t);
    assert_eq!(r.error, NONE);
    assert_eq!(r.generation, 1);
    assert_eq!(r.member_id, "a");
    assert_eq!(r.leader, "a");
    assert_eq!(r.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(
        r.members,
        vec![JoinedMember {
            member_id: "a".into(),
            instance_id: None,
            metadata: Bytes::from("sub-a"),
        }]
    );
    assert!(!r.skip_assignment);
    assert_eq!(
        sim.state(),
        (State::CompletingRebalance, 1, members(&["a"]))
    );

    let stores = sim.store_log.len();
    let t = sim.sync(sr("a", 1, &[("a", asg(1, "a"))]));
    let r = sim.sync_reply(t);
    assert_eq!(r.error, NONE);
    assert_eq!(r.assignment, asg(1, "a"));
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(sim.state(), (State::Stable, 1, members(&["a"])));
    let (group, gen, value) = sim.store_log[stores].clone();
    assert_eq!((group.as_str(), gen), (G, 1));
    let value = value.expect("a group value");
    assert_eq!(value.leader.as_deref(), Some("a"));
    assert_eq!(value.members.len(), 1);
    assert_eq!(value.members[0].assignment, asg(1, "a").to_vec());
    assert_eq!(value.members[0].subscription, b"sub-a".to_vec());
    assert_eq!(sim.heartbeat("a", 1), NONE);
}

#[test]
fn initial_delay_holds_the_join_and_new_members_extend_it() {
    // Alone: the join completes exactly when the delay has passed.
    let mut sim = Sim::new(settings(300));
    let ta = sim.join_new("a");
    assert_eq!(sim.c.next_deadline(), Some(300));
    sim.advance_to(299);
    assert!(!sim.answered(ta));
    assert_eq!(sim.state().0, State::PreparingRebalance);
    sim.advance_to(300);
    assert_eq!(sim.join_reply(ta).generation, 1);

    // A second member inside the delay pushes it to its own join + delay.
    let mut sim = Sim::new(settings(300));
    let ta = sim.join_new("a");
    sim.advance_to(200);
    let tb = sim.join_new("b");
    sim.advance_to(499);
    assert!(!sim.answered(ta) && !sim.answered(tb));
    sim.advance_to(500);
    let (ra, rb) = (sim.join_reply(ta), sim.join_reply(tb));
    assert_eq!(
        (ra.error, ra.generation, rb.error, rb.generation),
        (NONE, 1, NONE, 1)
    );
    assert_eq!(ra.leader, "a");
    assert_eq!(rb.leader, "a");
    assert_eq!(
        sim.state(),
        (State::CompletingRebalance, 1, members(&["a", "b"]))
    );
}

#[test]
fn initial_delay_is_bounded_by_the_rebalance_timeout() {
    let mut sim = Sim::new(settings(1_000));
    sim.rebalance = 1_500;
    let ta = sim.join_new("a");
    sim.advance_to(900);
    let tb = sim.join_new("b");
    sim.advance_to(1_400);
    let tc = sim.join_new("c");
    sim.advance_to(1_499);
    assert!(![ta, tb, tc].iter().any(|t| sim.answered(*t)));
    sim.advance_to(1_500);
    for t in [ta, tb, tc] {
        assert_eq!(sim.join_reply(t).generation, 1);
    }
}

#[test]
fn leader_gets_the_metadata_and_followers_wait_for_the_stored_assignment() {
    let (mut sim, tokens) = joined(&["a", "b", "c"]);
    let ra = sim.join_reply(tokens[0]);
    assert_eq!(ra.leader, "a");
    assert_eq!(
        ra.members
            .iter()
            .map(|m| (m.member_id.as_str(), m.metadata.clone()))
            .collect::<Vec<_>>(),
        vec![
            ("a", Bytes::from("sub-a")),
            ("b", Bytes::from("sub-b")),
            ("c", Bytes::from("sub-c")),
        ]
    );
    for t in &tokens[1..] {
        let r = sim.join_reply(*t);
        assert!(r.members.is_empty(), "a follower got the members: {r:?}");
        assert_eq!(r.leader, "a");
    }

    sim.store_delay = 50;
    let tb = sim.sync(sr("b", 1, &[]));
    let tc = sim.sync(sr("c", 1, &[]));
    sim.advance(10);
    assert!(!sim.answered(tb) && !sim.answered(tc));
    let all = [("a", asg(1, "a")), ("b", asg(1, "b")), ("c", asg(1, "c"))];
    let ta = sim.sync(sr("a", 1, &all));
    let stored_at = sim.now + 50;
    sim.advance_to(stored_at - 1);
    assert!(![ta, tb, tc].iter().any(|t| sim.answered(*t)));
    assert_eq!(sim.state().0, State::CompletingRebalance);
    // Followers' heartbeats meanwhile are fine.
    assert_eq!(sim.heartbeat("b", 1), NONE);
    sim.advance_to(stored_at);
    for (t, n) in [(ta, "a"), (tb, "b"), (tc, "c")] {
        let r = sim.sync_reply(t);
        assert_eq!((r.error, r.assignment.clone()), (NONE, asg(1, n)));
    }
    assert_eq!(sim.state(), (State::Stable, 1, members(&["a", "b", "c"])));
    // A follower syncing late in Stable still gets its assignment.
    let t = sim.sync(sr("c", 1, &[]));
    assert_eq!(sim.sync_reply(t).assignment, asg(1, "c"));
}

#[test]
fn protocol_is_chosen_by_votes_and_inconsistent_members_are_refused() {
    let protos = |name: &str, order: &[&str]| -> Vec<(String, Bytes)> {
        order
            .iter()
            .map(|p| (p.to_string(), Bytes::from(format!("{p}-{name}"))))
            .collect()
    };
    let mut sim = Sim::new(settings(100));
    let mut tokens = Vec::new();
    for (name, order) in [("a", ["x", "y"]), ("b", ["y", "x"]), ("c", ["y", "x"])] {
        let mut r = sim.jr(name, "");
        r.protocols = protos(name, &order);
        let t = sim.join(r.clone());
        assert_eq!(sim.join_reply(t).error, MEMBER_ID_REQUIRED);
        r.member_id = name.to_string();
        tokens.push(sim.join(r));
    }
    // Every member supports x and y; two prefer y.
    sim.advance_to(100);
    let ra = sim.join_reply(tokens[0]);
    assert_eq!(ra.protocol_name.as_deref(), Some("y"));
    assert_eq!(
        ra.members
            .iter()
            .map(|m| m.metadata.clone())
            .collect::<Vec<_>>(),
        vec![Bytes::from("y-a"), Bytes::from("y-b"), Bytes::from("y-c")]
    );
    assert_eq!(
        sim.join_reply(tokens[2]).protocol_name.as_deref(),
        Some("y")
    );

    // A member sharing no protocol with the group, or of another protocol type.
    let mut r = sim.jr("d", "");
    r.protocols = protos("d", &["z"]);
    let t = sim.join(r);
    assert_eq!(sim.join_reply(t).error, INCONSISTENT_GROUP_PROTOCOL);
    let mut r = sim.jr("e", "");
    r.protocol_type = "connect".into();
    r.protocols = protos("e", &["y"]);
    let t = sim.join(r);
    assert_eq!(sim.join_reply(t).error, INCONSISTENT_GROUP_PROTOCOL);
    // A known member changing to a protocol the others lack.
    let mut r = sim.jr("a", "a");
    r.protocols = protos("a", &["z"]);
    let t = sim.join(r);
    assert_eq!(sim.join_reply(t).error, INCONSISTENT_GROUP_PROTOCOL);
    assert_eq!(
        sim.state(),
        (State::CompletingRebalance, 1, members(&["a", "b", "c"]))
    );

    // A SyncGroup naming another protocol.
    let mut s = sr("b", 1, &[]);
    s.protocol_name = Some("x".into());
    let t = sim.sync(s);
    assert_eq!(sim.sync_reply(t).error, INCONSISTENT_GROUP_PROTOCOL);

    // A new group: no protocols or no type is inconsistent, and leaves no group.
    let mut r = sim.jr("f", "");
    r.group = "other".into();
    r.protocols.clear();
    let t = sim.join(r.clone());
    assert_eq!(sim.join_reply(t).error, INCONSISTENT_GROUP_PROTOCOL);
    r.protocols = protos("f", &["x"]);
    r.protocol_type.clear();
    let t = sim.join(r);
    assert_eq!(sim.join_reply(t).error, INCONSISTENT_GROUP_PROTOCOL);
    assert!(sim.c.state_of("other").is_none());
    assert!(sim.c.describe("other").is_none());
}

// ----------------------------------------------------------------------
// 2. New members of a Stable group

#[test]
fn new_members_trigger_a_rebalance_and_the_leader_stays() {
    // "m" leads; newcomers sort before it, yet it stays the leader.
    let mut sim = stable(&["m", "n"]);
    assert_eq!(sim.leader().as_deref(), Some("m"));
    let mut group = vec!["m", "n"];
    for (gen, newcomer) in [(2, "a"), (3, "b")] {
        let tn = sim.join_new(newcomer);
        assert!(!sim.answered(tn));
        assert_eq!(sim.state().0, State::PreparingRebalance);
        for old in &group {
            assert_eq!(sim.heartbeat(old, gen - 1), REBALANCE_IN_PROGRESS);
        }
        let mut tokens = vec![];
        for (i, old) in group.iter().enumerate() {
            sim.advance(10);
            tokens.push(sim.rejoin(old));
            if i + 1 < group.len() {
                assert!(!sim.answered(tn), "completed before everyone rejoined");
                assert_eq!(sim.state().0, State::PreparingRebalance);
            }
        }
        tokens.push(tn);
        group.push(newcomer);
        for t in &tokens {
            let r = sim.join_reply(*t);
            assert_eq!((r.error, r.generation, r.leader.as_str()), (NONE, gen, "m"));
        }
        assert_eq!(sim.join_reply(tokens[0]).members.len(), group.len());
        sim.sync_all(gen, &group);
        assert_eq!(sim.state().1, gen);
    }
    group.sort();
    assert_eq!(sim.state(), (State::Stable, 3, members(&group)));
}

#[test]
fn a_follower_rejoining_a_stable_group_unchanged_gets_the_same_generation() {
    let mut sim = stable(&["a", "b"]);
    let t = sim.rejoin("b");
    let r = sim.join_reply(t);
    assert_eq!((r.error, r.generation, r.leader.as_str()), (NONE, 1, "a"));
    assert!(r.members.is_empty());
    assert_eq!(sim.state(), (State::Stable, 1, members(&["a", "b"])));
    let t = sim.sync(sr("b", 1, &[]));
    assert_eq!(sim.sync_reply(t).assignment, asg(1, "b"));
    // The leader rejoining starts a rebalance (it may want to reassign).
    let t = sim.rejoin("a");
    assert!(!sim.answered(t));
    assert_eq!(sim.state().0, State::PreparingRebalance);
    assert_eq!(sim.heartbeat("b", 1), REBALANCE_IN_PROGRESS);
    let tb = sim.rejoin("b");
    assert_eq!(sim.join_reply(t).generation, 2);
    assert_eq!(sim.join_reply(tb).generation, 2);
}

// ----------------------------------------------------------------------
// 3. Leaves

#[test]
fn a_leaving_member_makes_the_others_rebalance() {
    let mut sim = stable(&["a", "b", "c"]);
    assert_eq!(sim.leave(&[("b", None)]), (NONE, vec![NONE]));
    assert_eq!(
        sim.state(),
        (State::PreparingRebalance, 1, members(&["a", "c"]))
    );
    assert_eq!(sim.heartbeat("a", 1), REBALANCE_IN_PROGRESS);
    assert_eq!(sim.heartbeat("b", 1), UNKNOWN_MEMBER_ID);
    assert_eq!(sim.rebalance(&["a", "c"]), 2);
    // The leader leaving: another member leads the next generation.
    assert_eq!(sim.leave(&[("a", None)]), (NONE, vec![NONE]));
    assert_eq!(sim.rebalance(&["c"]), 3);
    assert_eq!(sim.leader().as_deref(), Some("c"));
}

#[test]
fn a_member_leaving_while_others_wait_in_join_completes_the_rebalance() {
    let mut sim = stable(&["a", "b", "c"]);
    let td = sim.join_new("d");
    let ta = sim.rejoin("a");
    let tc = sim.rejoin("c");
    assert!(!sim.answered(td));
    // b never rejoins but leaves: the others need not wait for the deadline.
    sim.leave(&[("b", None)]);
    for t in [ta, tc, td] {
        assert_eq!(sim.join_reply(t).generation, 2);
    }
    assert_eq!(
        sim.state(),
        (State::CompletingRebalance, 2, members(&["a", "c", "d"]))
    );
}

#[test]
fn a_member_leaving_during_sync_fails_the_waiting_syncs() {
    let (mut sim, _) = joined(&["a", "b", "c"]);
    let tb = sim.sync(sr("b", 1, &[]));
    assert_eq!(sim.leave(&[("c", None)]), (NONE, vec![NONE]));
    assert_eq!(sim.sync_reply(tb).error, REBALANCE_IN_PROGRESS);
    assert_eq!(
        sim.state(),
        (State::PreparingRebalance, 1, members(&["a", "b"]))
    );
    assert_eq!(sim.rebalance(&["a", "b"]), 2);
}

#[test]
fn the_last_member_leaving_empties_and_stores_the_group() {
    let mut sim = stable(&["a"]);
    let stores = sim.store_log.len();
    assert_eq!(sim.leave(&[("a", None)]), (NONE, vec![NONE]));
    assert_eq!(sim.state(), (State::Empty, 2, vec![]));
    assert_eq!(sim.store_log.len(), stores + 1);
    let (group, gen, value) = sim.store_log[stores].clone();
    assert_eq!((group.as_str(), gen), (G, 2));
    let value = value.expect("an empty group is stored, not deleted");
    assert!(value.members.is_empty());
    assert_eq!(value.generation, 2);
    assert_eq!(value.leader, None);
    assert_eq!(
        sim.c.list(),
        vec![(G.to_string(), "consumer".to_string(), "Empty")]
    );
    // A new member starts generation 3 (after the initial delay again).
    let t = sim.join_new("b");
    sim.advance(100);
    assert_eq!(sim.join_reply(t).generation, 3);
}

#[test]
fn leave_of_unknown_static_and_fenced_members() {
    let mut sim = Sim::new(settings(100));
    let ta = sim.join_new("a");
    let mut r = sim.jr("b", "");
    r.instance_id = Some("ib".into());
    // A static member needs no MEMBER_ID_REQUIRED round.
    let tb = sim.join(r);
    assert!(!sim.answered(tb));
    sim.advance_to(100);
    assert_eq!(sim.join_reply(ta).generation, 1);
    assert_eq!(sim.join_reply(tb).member_id, "b");
    sim.sync_all(1, &["a", "b"]);

    assert_eq!(sim.leave(&[("zz", None)]), (NONE, vec![UNKNOWN_MEMBER_ID]));
    assert_eq!(
        sim.leave(&[("zz", None), ("", Some("nope"))]),
        (NONE, vec![UNKNOWN_MEMBER_ID, UNKNOWN_MEMBER_ID])
    );
    // The instance belongs to b, not to this member id.
    assert_eq!(
        sim.leave(&[("a", Some("ib"))]),
        (NONE, vec![FENCED_INSTANCE_ID])
    );
    assert_eq!(sim.state(), (State::Stable, 1, members(&["a", "b"])));
    // A static leave by instance id alone.
    assert_eq!(sim.leave(&[("", Some("ib"))]), (NONE, vec![NONE]));
    assert_eq!(sim.state(), (State::PreparingRebalance, 1, members(&["a"])));
    assert_eq!(sim.heartbeat_static("b", 1, Some("ib")), UNKNOWN_MEMBER_ID);
    assert_eq!(sim.rebalance(&["a"]), 2);

    // No such group: every member is unknown.
    let (_, codes, actions) = sim.c.leave(sim.now, "nope", &[("a".to_string(), None)]);
    assert_eq!(codes, vec![UNKNOWN_MEMBER_ID]);
    assert!(actions.is_empty());
}

// ----------------------------------------------------------------------
// 4. Timeouts

#[test]
fn a_silent_member_is_removed_exactly_at_its_session_timeout() {
    let mut sim = stable(&["a", "b"]);
    // Both synced at 100 ms during CompletingRebalance: sessions run to 1100.
    sim.advance_to(400);
    assert_eq!(sim.heartbeat("a", 1), NONE);
    assert_eq!(sim.heartbeat("b", 1), NONE); // b's last: expires at 1400
    for t in [700, 1_000, 1_300] {
        sim.advance_to(t);
        assert_eq!(sim.heartbeat("a", 1), NONE);
    }
    sim.advance_to(1_399);
    assert_eq!(sim.state(), (State::Stable, 1, members(&["a", "b"])));
    sim.advance_to(1_400);
    assert_eq!(sim.state(), (State::PreparingRebalance, 1, members(&["a"])));
    assert_eq!(sim.heartbeat("a", 1), REBALANCE_IN_PROGRESS);
    assert_eq!(sim.heartbeat("b", 1), UNKNOWN_MEMBER_ID);
    assert_eq!(sim.rebalance(&["a"]), 2);
}

#[test]
fn a_member_not_rejoining_is_removed_at_the_rebalance_deadline() {
    let mut sim = stable(&["a", "b"]);
    sim.advance_to(200);
    let tc = sim.join_new("c"); // rebalance deadline: 200 + 3000
    let ta = sim.rejoin("a");
    // b keeps its session alive but does not rejoin.
    let mut t = 200;
    while t + 300 < 3_200 {
        t += 300;
        sim.advance_to(t);
        assert_eq!(sim.heartbeat("b", 1), REBALANCE_IN_PROGRESS);
    }
    sim.advance_to(3_199);
    assert!(!sim.answered(ta) && !sim.answered(tc));
    assert_eq!(sim.state().0, State::PreparingRebalance);
    sim.advance_to(3_200);
    assert_eq!(sim.join_reply(ta).generation, 2);
    assert_eq!(sim.join_reply(tc).generation, 2);
    assert_eq!(
        sim.state(),
        (State::CompletingRebalance, 2, members(&["a", "c"]))
    );
    assert_eq!(sim.heartbeat("b", 1), UNKNOWN_MEMBER_ID);
    sim.sync_all(2, &["a", "c"]);
}

#[test]
fn a_member_waiting_in_join_outlives_its_session() {
    let mut sim = stable(&["a", "b"]);
    sim.advance_to(200);
    let tc = sim.join_new("c"); // session 1000: would expire at 1200
    for t in [500, 800, 1_100, 1_400, 1_700, 2_000] {
        sim.advance_to(t);
        assert_eq!(sim.heartbeat("a", 1), REBALANCE_IN_PROGRESS);
        assert_eq!(sim.heartbeat("b", 1), REBALANCE_IN_PROGRESS);
    }
    assert_eq!(sim.state().2, members(&["a", "b", "c"]));
    assert!(!sim.answered(tc));
    let ta = sim.rejoin("a");
    let tb = sim.rejoin("b");
    for t in [ta, tb, tc] {
        assert_eq!(sim.join_reply(t).generation, 2);
    }
    sim.sync_all(2, &["a", "b", "c"]);
}

#[test]
fn pending_member_ids_expire() {
    // A pending id holds the join phase until it expires.
    let mut sim = stable(&["a", "b"]);
    sim.advance_to(200);
    let tc = sim.join_new("c");
    let mut r = sim.jr("x", "");
    r.session_timeout_ms = 500;
    let t = sim.join(r); // pending until 700
    assert_eq!(sim.join_reply(t).error, MEMBER_ID_REQUIRED);
    sim.advance_to(300);
    let ta = sim.rejoin("a");
    let tb = sim.rejoin("b");
    sim.advance_to(699);
    assert!(![ta, tb, tc].iter().any(|t| sim.answered(*t)));
    sim.advance_to(700);
    for t in [ta, tb, tc] {
        assert_eq!(sim.join_reply(t).generation, 2);
    }
    assert_eq!(sim.state().2, members(&["a", "b", "c"]));
    let t = sim.rejoin("x");
    assert_eq!(sim.join_reply(t).error, UNKNOWN_MEMBER_ID);

    // In a new group: y1 waits for y2's id until it expires.
    let mut sim = Sim::new(settings(0));
    for n in ["y1", "y2"] {
        let t = sim.join(sim.jr(n, ""));
        assert_eq!(sim.join_reply(t).error, MEMBER_ID_REQUIRED);
    }
    assert_eq!(sim.c.next_deadline(), Some(1_000));
    sim.advance_to(999);
    let t1 = sim.rejoin("y1");
    assert!(!sim.answered(t1));
    sim.advance_to(1_000);
    let r = sim.join_reply(t1);
    assert_eq!((r.error, r.generation), (NONE, 1));
    let t2 = sim.rejoin("y2");
    assert_eq!(sim.join_reply(t2).error, UNKNOWN_MEMBER_ID);
    // A pending member leaving frees the join phase at once.
    sim.sync_all(1, &["y1"]);
    let tz = sim.join(sim.jr("z", ""));
    assert_eq!(sim.join_reply(tz).error, MEMBER_ID_REQUIRED);
    assert_eq!(sim.leave(&[("z", None)]), (NONE, vec![NONE]));
    let tz = sim.rejoin("z");
    assert_eq!(sim.join_reply(tz).error, UNKNOWN_MEMBER_ID);
}

#[test]
fn members_not_syncing_are_removed_after_the_rebalance_timeout() {
    // Rebalance timeout shorter than the session: see the ignored
    // `sync_waiters_sent_back_to_join_keep_their_session` for the other case.
    let (mut sim, _) = joined_with(&["a", "b", "c"], |s| s.rebalance = 800);
    // Completed at 100: CompletingRebalance until 900. b syncs, a (the leader)
    // and c never do; c keeps heartbeating.
    let tb = sim.sync(sr("b", 1, &[]));
    for t in [300, 600, 850] {
        sim.advance_to(t);
        assert_eq!(sim.heartbeat("c", 1), NONE);
    }
    sim.advance_to(899);
    assert!(!sim.answered(tb));
    assert_eq!(sim.state().0, State::CompletingRebalance);
    sim.advance_to(900);
    assert_eq!(sim.sync_reply(tb).error, REBALANCE_IN_PROGRESS);
    assert_eq!(sim.state(), (State::PreparingRebalance, 1, members(&["b"])));
    assert_eq!(sim.heartbeat("a", 1), UNKNOWN_MEMBER_ID);
    assert_eq!(sim.heartbeat("c", 1), UNKNOWN_MEMBER_ID);
    sim.advance(5);
    let t = sim.rejoin("b");
    let r = sim.join_reply(t);
    assert_eq!((r.error, r.generation, r.leader.as_str()), (NONE, 2, "b"));
    sim.sync_all(2, &["b"]);
}

#[test]
fn next_deadline_names_each_timer() {
    let mut c = Coordinator::new(settings(300));
    let sim = Sim::new(settings(0));
    let mut r = sim.jr("a", "");
    assert_eq!(c.next_deadline(), None);
    // A pending id: its session.
    let _ = c.join(10, 1, r.clone());
    assert_eq!(c.next_deadline(), Some(1_010));
    // The initial delay.
    r.member_id = "a".into();
    let _ = c.join(20, 2, r);
    assert_eq!(c.next_deadline(), Some(320));
    assert!(c.tick(319).is_empty());
    let a = c.tick(320);
    assert!(
        matches!(&a[..], [Action::Reply(2, Reply::Join(_))]),
        "{a:?}"
    );
    // CompletingRebalance: the session (1000) before the rebalance deadline (3000).
    assert_eq!(c.next_deadline(), Some(1_320));
    let _ = c.sync(400, 3, sr("a", 1, &[("a", asg(1, "a"))]));
    let _ = c.group_stored(400, G, 1, true);
    // Stable: the session, renewed by the sync.
    assert_eq!(c.next_deadline(), Some(1_400));
    assert_eq!(c.heartbeat(900, G, 1, "a", None), NONE);
    assert_eq!(c.next_deadline(), Some(1_900));
    assert!(c.tick(1_899).is_empty());
    let a = c.tick(1_900);
    assert!(matches!(&a[..], [Action::StoreGroup { .. }]), "{a:?}");
    assert_eq!(c.state_of(G), Some((State::Empty, 2, vec![])));
    assert_eq!(c.next_deadline(), None);
}

// ----------------------------------------------------------------------
// 5. Bad input

/// The group still completes a normal rebalance: a newcomer joins, everyone
/// rejoins and syncs.
fn assert_can_rebalance(sim: &mut Sim, names: &[&str], newcomer: &str) {
    let tn = sim.join_new(newcomer);
    let gen = sim.state().1 + 1;
    let tokens: Vec<Token> = names.iter().map(|n| sim.rejoin(n)).collect();
    // An Empty group waits out the initial delay.
    sim.advance(sim.c.settings.initial_rebalance_delay_ms);
    for t in tokens.iter().chain([&tn]) {
        let r = sim.join_reply(*t);
        assert_eq!((r.error, r.generation), (NONE, gen), "{r:?}");
    }
    let mut all = names.to_vec();
    all.push(newcomer);
    sim.sync_all(gen, &all);
    all.sort();
    assert_eq!(sim.state(), (State::Stable, gen, members(&all)));
}

#[test]
fn wrong_generation_and_unknown_members_are_refused() {
    let mut sim = stable(&["a", "b"]);
    let p = [tp("t", 0)];
    for gen in [0, 2, -1] {
        assert_eq!(sim.heartbeat("a", gen), ILLEGAL_GENERATION);
        let t = sim.sync(sr("a", gen, &[]));
        assert_eq!(sim.sync_reply(t).error, ILLEGAL_GENERATION);
    }
    assert_eq!(sim.commit("a", 0, None, &p), Err(ILLEGAL_GENERATION));
    assert_eq!(sim.commit("a", 2, None, &p), Err(ILLEGAL_GENERATION));

    assert_eq!(sim.heartbeat("zz", 1), UNKNOWN_MEMBER_ID);
    let t = sim.sync(sr("zz", 1, &[]));
    assert_eq!(sim.sync_reply(t).error, UNKNOWN_MEMBER_ID);
    assert_eq!(sim.commit("zz", 1, None, &p), Err(UNKNOWN_MEMBER_ID));
    let t = sim.rejoin("zz");
    assert_eq!(sim.join_reply(t).error, UNKNOWN_MEMBER_ID);

    // No such group.
    assert_eq!(
        sim.c.heartbeat(sim.now, "nope", 1, "a", None),
        UNKNOWN_MEMBER_ID
    );
    let mut s = sr("a", 1, &[]);
    s.group = "nope".into();
    let t = sim.sync(s);
    assert_eq!(sim.sync_reply(t).error, UNKNOWN_MEMBER_ID);
    let mut r = sim.jr("a", "a");
    r.group = "nope".into();
    let t = sim.join(r);
    assert_eq!(sim.join_reply(t).error, UNKNOWN_MEMBER_ID);
    assert!(sim.c.state_of("nope").is_none());

    // Nothing moved.
    assert_eq!(sim.state(), (State::Stable, 1, members(&["a", "b"])));
    assert_eq!(sim.commit("a", 1, None, &p), Ok(vec![NONE]));
    assert_can_rebalance(&mut sim, &["a", "b"], "c");
}

#[test]
fn requests_in_the_wrong_phase_are_told_to_rebalance() {
    let mut sim = stable(&["a", "b"]);
    let p = [tp("t", 0)];
    let tc = sim.join_new("c");
    // PreparingRebalance: sync refused, commits of the generation still allowed
    // (a consumer commits what it gives up before rejoining).
    let t = sim.sync(sr("a", 1, &[]));
    assert_eq!(sim.sync_reply(t).error, REBALANCE_IN_PROGRESS);
    assert_eq!(sim.commit("a", 1, None, &p), Ok(vec![NONE]));
    let ta = sim.rejoin("a");
    let tb = sim.rejoin("b");
    for t in [ta, tb, tc] {
        assert_eq!(sim.join_reply(t).generation, 2);
    }
    // CompletingRebalance: commits wait for the assignment; heartbeats are fine.
    assert_eq!(sim.commit("a", 2, None, &p), Err(REBALANCE_IN_PROGRESS));
    assert_eq!(sim.commit("b", 1, None, &p), Err(REBALANCE_IN_PROGRESS));
    assert_eq!(sim.heartbeat("b", 2), NONE);
    assert_eq!(sim.heartbeat("b", 1), ILLEGAL_GENERATION);
    sim.sync_all(2, &["a", "b", "c"]);
    assert_eq!(sim.commit("a", 2, None, &p), Ok(vec![NONE]));
    assert_can_rebalance(&mut sim, &["a", "b", "c"], "d");
}

#[test]
fn invalid_session_timeouts_and_group_ids_are_refused() {
    let mut sim = Sim::new(settings(0));
    for session in [99, 30_001] {
        let mut r = sim.jr("a", "");
        r.session_timeout_ms = session;
        let t = sim.join(r);
        let resp = sim.join_reply(t);
        assert_eq!((resp.error, resp.generation), (INVALID_SESSION_TIMEOUT, -1));
    }
    let mut r = sim.jr("a", "");
    r.group = String::new();
    let t = sim.join(r);
    assert_eq!(sim.join_reply(t).error, INVALID_GROUP_ID);
    assert!(sim.c.list().is_empty());
    // The bounds themselves are fine.
    for (name, session) in [("a", 100), ("b", 30_000)] {
        let mut r = sim.jr(name, "");
        r.session_timeout_ms = session;
        let t = sim.join(r);
        assert_eq!(sim.join_reply(t).error, MEMBER_ID_REQUIRED);
    }
}

#[test]
fn commits_are_checked_against_the_consumer_assignment() {
    let (mut sim, _) = joined(&["a", "b"]);
    let a1 = consumer_assignment(&[("t0", &[0, 1])]);
    let b1 = consumer_assignment(&[("t0", &[2]), ("t1", &[0])]);
    let tb = sim.sync(sr("b", 1, &[]));
    let ta = sim.sync(sr("a", 1, &[("a", a1.clone()), ("b", b1.clone())]));
    assert_eq!(sim.sync_reply(ta).assignment, a1);
    assert_eq!(sim.sync_reply(tb).assignment, b1);
    let parts = [
        tp("t0", 0),
        tp("t0", 2),
        tp("t1", 0),
        tp("t2", 5),
        tp("t0", 1),
    ];
    assert_eq!(
        sim.commit("a", 1, None, &parts),
        Ok(vec![
            NONE,
            ILLEGAL_GENERATION,
            ILLEGAL_GENERATION,
            ILLEGAL_GENERATION,
            NONE
        ])
    );
    assert_eq!(
        sim.commit("b", 1, None, &parts),
        Ok(vec![
            ILLEGAL_GENERATION,
            NONE,
            NONE,
            ILLEGAL_GENERATION,
            ILLEGAL_GENERATION
        ])
    );

    // Generation 2 moves t0-0 from a to b: a may still commit what it gave up
    // (cooperative rebalancing), and what it got.
    let tc = sim.join_new("c");
    let ta = sim.rejoin("a");
    let tb = sim.rejoin("b");
    for t in [ta, tb, tc] {
        assert_eq!(sim.join_reply(t).generation, 2);
    }
    let a2 = consumer_assignment(&[("t0", &[1, 2])]);
    let b2 = consumer_assignment(&[("t0", &[0])]);
    let c2 = consumer_assignment(&[("t1", &[0])]);
    sim.sync(sr("b", 2, &[]));
    sim.sync(sr("c", 2, &[]));
    sim.sync(sr("a", 2, &[("a", a2), ("b", b2), ("c", c2)]));
    assert_eq!(sim.state().0, State::Stable);
    assert_eq!(
        sim.commit(
            "a",
            2,
            None,
            &[tp("t0", 0), tp("t0", 1), tp("t0", 2), tp("t1", 0)]
        ),
        Ok(vec![NONE, NONE, NONE, ILLEGAL_GENERATION])
    );
    assert_eq!(
        sim.commit("c", 2, None, &[tp("t1", 0), tp("t0", 0)]),
        Ok(vec![NONE, ILLEGAL_GENERATION])
    );
    // An assignment that is not the consumer protocol's: no check.
    let mut sim = stable(&["a"]);
    assert_eq!(sim.commit("a", 1, None, &[tp("x", 9)]), Ok(vec![NONE]));
}

#[test]
fn simple_commits_only_without_live_members() {
    let mut sim = stable(&["a"]);
    let p = [tp("t", 0), tp("t", 1)];
    // Offsets-only group (assign() consumers, admin tools).
    let r = sim.c.check_commit(sim.now, "solo", -1, "", None, &p);
    assert_eq!(r, Ok(vec![NONE, NONE]));
    let r = sim.c.check_commit(sim.now, "solo", 3, "m", None, &p);
    assert_eq!(r, Err(ILLEGAL_GENERATION));
    // A group with members refuses them.
    assert_eq!(sim.commit("", -1, None, &p), Err(UNKNOWN_MEMBER_ID));
    // Once Empty, they are fine.
    sim.leave(&[("a", None)]);
    assert_eq!(sim.state().0, State::Empty);
    assert_eq!(sim.commit("", -1, None, &p), Ok(vec![NONE, NONE]));
    assert_eq!(sim.commit("a", 1, None, &p), Err(UNKNOWN_MEMBER_ID));
    assert_can_rebalance(&mut sim, &[], "b");
}

// ----------------------------------------------------------------------
// 6. Static membership

/// A Stable group: "a" dynamic, "s" static (instance "is"), "a" leads.
fn static_group() -> Sim {
    let mut sim = Sim::new(settings(100));
    let ta = sim.join_new("a");
    let mut r = sim.jr("s", "");
    r.instance_id = Some("is".into());
    let ts = sim.join(r);
    sim.advance_to(100);
    assert_eq!(sim.join_reply(ta).generation, 1);
    assert_eq!(sim.join_reply(ts).member_id, "s");
    sim.sync_all(1, &["a", "s"]);
    sim
}

/// A JoinGroup of static instance `instance` ("i" + the name it first joined
/// with, whose subscription it keeps), handing out `fresh` as a new id.
fn static_join(sim: &Sim, fresh: &str, member_id: &str, instance: &str) -> JoinRequest {
    let mut r = sim.jr(instance.trim_start_matches('i'), member_id);
    r.fresh_member_id = fresh.to_string();
    r.instance_id = Some(instance.to_string());
    r
}

#[test]
fn a_static_member_restarting_keeps_generation_and_assignment() {
    let mut sim = static_group();
    let stores = sim.store_log.len();
    let t = sim.join(static_join(&sim, "s2", "", "is"));
    let r = sim.join_reply(t);
    assert_eq!(
        (
            r.error,
            r.member_id.as_str(),
            r.generation,
            r.leader.as_str()
        ),
        (NONE, "s2", 1, "a")
    );
    assert!(r.members.is_empty());
    assert!(!r.skip_assignment);
    // No rebalance: same generation, the others' heartbeats are fine.
    assert_eq!(sim.state(), (State::Stable, 1, members(&["a", "s2"])));
    assert_eq!(sim.heartbeat("a", 1), NONE);
    // The new id is recorded.
    assert_eq!(sim.store_log.len(), stores + 1);
    let value = sim.store_log[stores].2.clone().expect("a group value");
    assert!(value.members.iter().any(|m| m.member_id == "s2"
        && m.instance_id.as_deref() == Some("is")
        && m.assignment == asg(1, "s").to_vec()));
    let t = sim.sync(SyncRequest {
        instance_id: Some("is".into()),
        ..sr("s2", 1, &[])
    });
    let r = sim.sync_reply(t);
    assert_eq!((r.error, r.assignment), (NONE, asg(1, "s")));
    assert_eq!(sim.heartbeat_static("s2", 1, Some("is")), NONE);

    // The old id is fenced (with its instance id) or unknown (without).
    assert_eq!(sim.heartbeat_static("s", 1, Some("is")), FENCED_INSTANCE_ID);
    assert_eq!(sim.heartbeat("s", 1), UNKNOWN_MEMBER_ID);
    let t = sim.sync(SyncRequest {
        instance_id: Some("is".into()),
        ..sr("s", 1, &[])
    });
    assert_eq!(sim.sync_reply(t).error, FENCED_INSTANCE_ID);
    assert_eq!(
        sim.commit("s", 1, Some("is"), &[tp("t", 0)]),
        Err(FENCED_INSTANCE_ID)
    );
    let t = sim.join(static_join(&sim, "s", "s", "is"));
    assert_eq!(sim.join_reply(t).error, FENCED_INSTANCE_ID);
    assert_eq!(
        sim.leave(&[("s", Some("is"))]),
        (NONE, vec![FENCED_INSTANCE_ID])
    );
    assert_eq!(sim.state(), (State::Stable, 1, members(&["a", "s2"])));
}

#[test]
fn a_static_leader_restarting_is_told_to_skip_the_assignment() {
    let mut sim = Sim::new(settings(100));
    let mut r = sim.jr("a", "");
    r.instance_id = Some("ia".into());
    let ta = sim.join(r);
    let tb = sim.join_new("b");
    sim.advance_to(100);
    assert_eq!(sim.join_reply(ta).leader, "a");
    assert_eq!(sim.join_reply(tb).generation, 1);
    sim.sync_all(1, &["a", "b"]);

    let t = sim.join(static_join(&sim, "a2", "", "ia"));
    let r = sim.join_reply(t);
    assert_eq!((r.error, r.generation, r.leader.as_str()), (NONE, 1, "a2"));
    assert!(r.skip_assignment);
    assert_eq!(
        r.members
            .iter()
            .map(|m| m.member_id.as_str())
            .collect::<Vec<_>>(),
        vec!["a2", "b"]
    );
    assert_eq!(sim.state(), (State::Stable, 1, members(&["a2", "b"])));
    let t = sim.sync(sr("a2", 1, &[]));
    assert_eq!(sim.sync_reply(t).assignment, asg(1, "a"));
    assert_eq!(sim.heartbeat("b", 1), NONE);
    // It still leads the next rebalance.
    let tc = sim.join_new("c");
    let r = sim.join(static_join(&sim, "a2", "a2", "ia"));
    let tb = sim.rejoin("b");
    assert_eq!(sim.join_reply(r).leader, "a2");
    assert_eq!(sim.join_reply(tb).generation, 2);
    assert_eq!(sim.join_reply(tc).generation, 2);
}

#[test]
fn a_static_member_restarting_during_a_rebalance_fences_its_old_join() {
    let mut sim = static_group();
    let tc = sim.join_new("c");
    let ts = sim.join(static_join(&sim, "s", "s", "is"));
    assert!(!sim.answered(ts));
    let ts2 = sim.join(static_join(&sim, "s2", "", "is"));
    assert_eq!(sim.join_reply(ts).error, FENCED_INSTANCE_ID);
    assert!(!sim.answered(ts2));
    let ta = sim.rejoin("a");
    for t in [ta, tc, ts2] {
        assert_eq!(sim.join_reply(t).generation, 2);
    }
    assert_eq!(sim.join_reply(ts2).member_id, "s2");
    assert_eq!(sim.state().2, members(&["a", "c", "s2"]));
}

// ----------------------------------------------------------------------
// 7. Store failure

#[test]
fn a_failed_store_fails_the_syncs_and_rebalances_again() {
    let (mut sim, _) = joined(&["a", "b", "c"]);
    let tb = sim.sync(sr("b", 1, &[]));
    sim.store_ok = false;
    sim.store_delay = 20;
    let all = [("a", asg(1, "a")), ("b", asg(1, "b")), ("c", asg(1, "c"))];
    let ta = sim.sync(sr("a", 1, &all));
    sim.advance(5);
    let tc = sim.sync(sr("c", 1, &[]));
    sim.advance(15);
    for t in [ta, tb, tc] {
        assert_eq!(sim.sync_reply(t).error, COORDINATOR_NOT_AVAILABLE);
    }
    assert_eq!(
        sim.state(),
        (State::PreparingRebalance, 1, members(&["a", "b", "c"]))
    );
    let d = sim.c.describe(G).expect("described");
    assert!(d.members.iter().all(|m| m.assignment.is_empty()));
    assert_eq!(sim.heartbeat("b", 1), REBALANCE_IN_PROGRESS);
    sim.store_ok = true;
    sim.store_delay = 0;
    assert_eq!(sim.rebalance(&["a", "b", "c"]), 2);
    let d = sim.c.describe(G).expect("described");
    assert_eq!(d.state, "Stable");
    assert_eq!(d.members[1].assignment, asg(2, "b"));
}

#[test]
fn a_store_notice_of_an_abandoned_generation_is_ignored() {
    let (mut sim, _) = joined(&["a", "b"]);
    sim.store_delay = 100;
    let tb = sim.sync(sr("b", 1, &[]));
    let ta = sim.sync(sr("a", 1, &[("a", asg(1, "a")), ("b", asg(1, "b"))]));
    // A newcomer starts a rebalance while generation 1 is being stored.
    let tc = sim.join_new("c");
    assert_eq!(sim.sync_reply(ta).error, REBALANCE_IN_PROGRESS);
    assert_eq!(sim.sync_reply(tb).error, REBALANCE_IN_PROGRESS);
    sim.advance(100); // the store of generation 1 completes: nothing happens
    assert_eq!(
        sim.state(),
        (State::PreparingRebalance, 1, members(&["a", "b", "c"]))
    );
    assert!(sim.c.group_stored(sim.now, G, 1, true).is_empty());
    assert!(sim.c.group_stored(sim.now, "nope", 1, true).is_empty());
    sim.store_delay = 0;
    let ta = sim.rejoin("a");
    let tb = sim.rejoin("b");
    for t in [ta, tb, tc] {
        assert_eq!(sim.join_reply(t).generation, 2);
    }
    // A notice for another generation while this one is being stored.
    sim.store_delay = 50;
    sim.sync(sr(
        "a",
        2,
        &[("a", asg(2, "a")), ("b", asg(2, "b")), ("c", asg(2, "c"))],
    ));
    assert!(sim.c.group_stored(sim.now, G, 1, true).is_empty());
    assert!(sim.c.group_stored(sim.now, G, 3, false).is_empty());
    assert_eq!(sim.state().0, State::CompletingRebalance);
    sim.advance(50);
    assert_eq!(sim.state().0, State::Stable);
}

// ----------------------------------------------------------------------
// 8. Offsets, deletion, loading

#[test]
fn stored_offsets_are_fetched() {
    let mut c = Coordinator::new(settings(0));
    assert!(c.committed(G, None).is_empty());
    c.offsets_stored(
        G,
        vec![("t".into(), 0, committed(5)), ("t".into(), 1, committed(7))],
    );
    c.offsets_stored(G, vec![("t".into(), 0, committed(9))]);
    assert_eq!(
        c.committed(G, Some(&[tp("t", 0), tp("t", 2)])),
        vec![
            ("t".to_string(), 0, Some(committed(9))),
            ("t".to_string(), 2, None)
        ]
    );
    assert_eq!(
        c.committed(G, None),
        vec![
            ("t".to_string(), 0, Some(committed(9))),
            ("t".to_string(), 1, Some(committed(7))),
        ]
    );
    assert_eq!(
        c.committed("other", Some(&[tp("t", 0)])),
        vec![("t".to_string(), 0, None)]
    );
    // An offsets-only group is listed and described as Empty.
    assert_eq!(c.list(), vec![(G.to_string(), String::new(), "Empty")]);
    assert_eq!(c.describe(G).map(|d| d.state), Some("Empty"));
    c.delete_offsets(G, &[tp("t", 0)]);
    assert_eq!(c.committed(G, None).len(), 1);
}

#[test]
fn only_empty_groups_are_deleted() {
    let mut sim = stable(&["a"]);
    sim.c.offsets_stored(
        G,
        vec![("t".into(), 0, committed(1)), ("t".into(), 1, committed(2))],
    );
    assert_eq!(sim.c.delete_group(G), Err(NON_EMPTY_GROUP));
    assert_eq!(sim.c.delete_group("nope"), Err(GROUP_ID_NOT_FOUND));
    // Not while a rebalance is under way either.
    let tb = sim.join_new("b");
    assert_eq!(sim.c.delete_group(G), Err(NON_EMPTY_GROUP));
    sim.leave(&[("b", None), ("a", None)]);
    assert_eq!(sim.join_reply(tb).error, UNKNOWN_MEMBER_ID);
    assert_eq!(sim.state().0, State::Empty);
    assert_eq!(sim.c.delete_group(G), Ok(vec![tp("t", 0), tp("t", 1)]));
    assert!(sim.c.committed(G, None).is_empty());
    assert!(sim.c.list().is_empty());
    assert!(sim.c.describe(G).is_none());
    assert_eq!(sim.c.delete_group(G), Err(GROUP_ID_NOT_FOUND));
    // An offsets-only group.
    sim.c
        .offsets_stored("solo", vec![("u".into(), 3, committed(1))]);
    assert_eq!(sim.c.delete_group("solo"), Ok(vec![tp("u", 3)]));
    // A deleted group starts over (its generation counter with it).
    sim.max_generation.clear();
    let t = sim.join_new("c");
    sim.advance(100);
    assert_eq!(sim.join_reply(t).generation, 1);
}

/// A Stable consumer group: "a" subscribes to t1, "b" to t2.
fn subscribed_group() -> Sim {
    let mut sim = Sim::new(settings(100));
    let mut tokens = Vec::new();
    for (name, topic) in [("a", "t1"), ("b", "t2")] {
        let mut r = sim.jr(name, "");
        r.protocols = vec![("range".into(), consumer_subscription(&[topic]))];
        sim.join(r.clone());
        r.member_id = name.into();
        tokens.push(sim.join(r));
    }
    sim.advance_to(100);
    let leader = sim.join_reply(tokens[0]);
    assert_eq!(leader.members[1].metadata, consumer_subscription(&["t2"]));
    sim.sync(sr("b", 1, &[]));
    sim.sync(sr("a", 1, &[]));
    assert_eq!(sim.state().0, State::Stable);
    sim
}

#[test]
fn offsets_of_subscribed_topics_are_not_deleted() {
    let mut sim = subscribed_group();
    sim.c
        .offsets_stored(G, vec![("t1".into(), 0, committed(1))]);
    let parts = [tp("t1", 0), tp("t2", 0), tp("t3", 0)];
    assert_eq!(
        sim.c.check_offset_delete(G, &parts),
        Ok(vec![
            GROUP_SUBSCRIBED_TO_TOPIC,
            GROUP_SUBSCRIBED_TO_TOPIC,
            NONE
        ])
    );
    assert_eq!(
        sim.c.check_offset_delete("nope", &parts),
        Err(GROUP_ID_NOT_FOUND)
    );
    sim.c
        .offsets_stored("solo", vec![("t1".into(), 0, committed(1))]);
    assert_eq!(sim.c.check_offset_delete("solo", &parts), Ok(vec![NONE; 3]));
    // b leaves: t2 is free, t1 still taken.
    sim.leave(&[("b", None)]);
    assert_eq!(
        sim.c.check_offset_delete(G, &parts),
        Ok(vec![GROUP_SUBSCRIBED_TO_TOPIC, NONE, NONE])
    );
    sim.leave(&[("a", None)]);
    assert_eq!(sim.c.check_offset_delete(G, &parts), Ok(vec![NONE; 3]));

    // A live group of another protocol type: its subscriptions are unknown.
    let mut r = sim.jr("x", "");
    r.group = "connect-group".into();
    r.protocol_type = "connect".into();
    r.require_known_member = false;
    let t = sim.join(r);
    sim.advance(100);
    assert_eq!(sim.join_reply(t).generation, 1);
    assert_eq!(
        sim.c.check_offset_delete("connect-group", &parts),
        Err(NON_EMPTY_GROUP)
    );
}

#[test]
fn a_replayed_group_resumes_stable() {
    let sim = static_group();
    let (_, _, value) = sim.store_log.last().cloned().expect("stored");
    let value = value.expect("a group value");
    assert_eq!(value.generation, 1);

    // Through the records, as the driver loads them; an older record first.
    let mut old = value.clone();
    old.generation = 0;
    old.members.truncate(1);
    let b = super::super::store::batch(
        &[
            super::super::store::Record::group(G, Some(&old)),
            super::super::store::Record::group(G, Some(&value)),
            super::super::store::Record::group("gone", Some(&old)),
            super::super::store::Record::group("gone", None),
        ],
        1,
    );
    let mut c = Coordinator::new(settings(100));
    assert_eq!(super::super::store::replay(&mut c, &b), 0);
    c.loaded(5_000);
    assert!(c.state_of("gone").is_none());
    let mut sim = Sim::with(c, 5_000);
    assert_eq!(sim.state(), (State::Stable, 1, members(&["a", "s"])));
    assert_eq!(sim.leader().as_deref(), Some("a"));
    assert_eq!(sim.c.next_deadline(), Some(6_000));
    // Fresh sessions: nobody expires before 6000.
    sim.advance_to(5_999);
    assert_eq!(sim.heartbeat("a", 1), NONE);
    assert_eq!(sim.heartbeat_static("s", 1, Some("is")), NONE);
    let t = sim.sync(sr("s", 1, &[]));
    assert_eq!(sim.sync_reply(t).assignment, asg(1, "s"));
    let d = sim.c.describe(G).expect("described");
    assert_eq!((d.state, d.protocol.as_str()), ("Stable", "range"));
    assert_eq!(d.members[0].assignment, asg(1, "a"));
    assert_eq!(d.members[1].instance_id.as_deref(), Some("is"));
    // The static member restarts without a rebalance, as before the move.
    let t = sim.join(static_join(&sim, "s2", "", "is"));
    let r = sim.join_reply(t);
    assert_eq!((r.error, r.generation), (NONE, 1));
    assert_eq!(sim.state(), (State::Stable, 1, members(&["a", "s2"])));
    // Generations continue from the stored one.
    assert_can_rebalance(&mut sim, &["a", "s2"], "c");
    assert_eq!(sim.state().1, 2);

    // An Empty group's record: Empty, generation kept.
    let mut c = Coordinator::new(settings(0));
    let mut empty = value;
    empty.members.clear();
    empty.generation = 7;
    c.replay_group(G, Some(empty));
    c.loaded(0);
    assert_eq!(c.state_of(G), Some((State::Empty, 7, vec![])));
    c.replay_group(G, None);
    assert!(c.state_of(G).is_none());
}

// ----------------------------------------------------------------------
// Bugs found by these tests. Those fixed in coordinator.rs since are regression
// tests; the others are ignored so the suite stays green (see each reason).

/// Regression: next_deadline() used to return deadlines already passed (a
/// driver sleeping until it spun), e.g. join_not_before during every rebalance.
#[test]
fn next_deadline_is_in_the_future_once_ticked() {
    let mut sim = stable(&["a", "b"]);
    sim.join_new("c");
    // PreparingRebalance: join_not_before = now, which is already past.
    sim.advance(1);
    let now = sim.now;
    assert!(sim.c.tick(now).is_empty());
    let d = sim.c.next_deadline();
    assert!(
        d.is_none_or(|d| d > now),
        "next_deadline() = {d:?} at {now}: a driver sleeping until it spins"
    );
}

/// Regression: members answered after waiting in SyncGroup kept their old session
/// deadline and were expired by the next tick.
#[test]
fn a_follower_answered_after_a_slow_leader_keeps_its_session() {
    let (mut sim, _) = joined(&["a", "b"]); // joined at 100: sessions to 1100
    let tb = sim.sync(sr("b", 1, &[])); // b waits from 100
    for t in [400, 700, 1_000, 1_300] {
        sim.advance_to(t);
        assert_eq!(sim.heartbeat("a", 1), NONE);
    }
    // The leader's assignment comes at 1500, within the rebalance timeout.
    sim.advance_to(1_500);
    let ta = sim.sync(sr("a", 1, &[("a", asg(1, "a")), ("b", asg(1, "b"))]));
    assert_eq!(sim.sync_reply(ta).error, NONE);
    assert_eq!(sim.sync_reply(tb).assignment, asg(1, "b"));
    // b just got its assignment: its session starts now (Kafka's
    // propagateAssignment reschedules every member's heartbeat).
    sim.advance(1);
    assert_eq!(sim.state(), (State::Stable, 1, members(&["a", "b"])));
    assert_eq!(sim.heartbeat("b", 1), NONE);
}

/// Regression: same, with a store slower than the session: the group was emptied.
#[test]
fn a_store_slower_than_the_session_does_not_empty_the_group() {
    let (mut sim, _) = joined(&["a", "b"]);
    sim.store_delay = 1_200; // a slow acks=all write
    let tb = sim.sync(sr("b", 1, &[]));
    let ta = sim.sync(sr("a", 1, &[("a", asg(1, "a")), ("b", asg(1, "b"))]));
    sim.advance(1_200);
    assert_eq!(sim.sync_reply(ta).error, NONE);
    assert_eq!(sim.sync_reply(tb).error, NONE);
    sim.advance(1);
    assert_eq!(sim.state(), (State::Stable, 1, members(&["a", "b"])));
}

/// Regression: members sent back to JoinGroup by the sync timeout kept their old
/// session deadline and were removed before they could rejoin.
#[test]
fn sync_waiters_sent_back_to_join_keep_their_session() {
    // Kafka's defaults: rebalance timeout (max.poll.interval) > session timeout.
    let (mut sim, _) = joined_with(&["a", "b"], |s| s.rebalance = 3_000);
    let tb = sim.sync(sr("b", 1, &[])); // at 100
                                        // a, the leader, heartbeats (its assignor is slow) but never syncs.
    for t in (400..3_100).step_by(300) {
        sim.advance_to(t);
        assert_eq!(sim.heartbeat("a", 1), NONE);
    }
    sim.advance_to(3_100);
    assert_eq!(sim.sync_reply(tb).error, REBALANCE_IN_PROGRESS);
    assert_eq!(sim.state(), (State::PreparingRebalance, 1, members(&["b"])));
    // b's rejoin arrives a millisecond later: b should still be a member.
    sim.advance(1);
    let t = sim.rejoin("b");
    let r = sim.join_reply(t);
    assert_eq!((r.error, r.generation), (NONE, 2), "{r:?}");
}

/// Regression: tick() removed an expired member the join completion had already
/// dropped, which restarted the rebalance it had just completed.
#[test]
fn members_expiring_with_the_rebalance_deadline_do_not_restart_it() {
    let (mut sim, _) = joined_with(&["a", "b", "c"], |s| s.rebalance = 600);
    sim.sync_all(1, &["a", "b", "c"]);
    // Sessions of b and c (never heartbeating again) end at 1100.
    sim.advance_to(400);
    assert_eq!(sim.heartbeat("a", 1), NONE);
    sim.advance_to(500);
    let td = sim.join_new("d"); // rebalance deadline: 500 + 600 = 1100
    let ta = sim.rejoin("a");
    sim.advance_to(1_100);
    assert_eq!(sim.join_reply(ta).generation, 2);
    assert_eq!(sim.join_reply(td).generation, 2);
    // a and d were told generation 2 is complete; it must not be abandoned.
    assert_eq!(
        sim.state(),
        (State::CompletingRebalance, 2, members(&["a", "d"]))
    );
}

/// Regression: check_offset_delete allowed deleting subscribed topics' offsets
/// before the first join completed (no protocol chosen yet).
#[test]
fn offsets_of_subscribed_topics_are_kept_during_the_first_rebalance() {
    let mut sim = Sim::new(settings(3_000));
    let mut r = sim.jr("a", "");
    r.protocols = vec![("range".into(), consumer_subscription(&["t1"]))];
    sim.join(r.clone());
    r.member_id = "a".into();
    sim.join(r); // waiting out the initial delay
    sim.c
        .offsets_stored(G, vec![("t1".into(), 0, committed(1))]);
    assert_eq!(sim.state().0, State::PreparingRebalance);
    assert_eq!(
        sim.c.check_offset_delete(G, &[tp("t1", 0)]),
        Ok(vec![GROUP_SUBSCRIBED_TO_TOPIC])
    );
}

/// Regression: SyncGroup in Stable did not renew the member's session.
#[test]
fn a_late_sync_in_stable_renews_the_session() {
    let (mut sim, _) = joined(&["a", "b"]); // sessions to 1100
    sim.sync(sr("a", 1, &[("a", asg(1, "a")), ("b", asg(1, "b"))]));
    for t in [400, 700, 1_000] {
        sim.advance_to(t);
        assert_eq!(sim.heartbeat("a", 1), NONE);
    }
    // b syncs late, in Stable; its next heartbeat is due a third of a session later.
    let t = sim.sync(sr("b", 1, &[]));
    assert_eq!(sim.sync_reply(t).assignment, asg(1, "b"));
    sim.advance_to(1_300);
    assert_eq!(sim.heartbeat("a", 1), NONE);
    sim.advance_to(1_333);
    assert_eq!(sim.heartbeat("b", 1), NONE);
}

/// A Stable group: "a" dynamic and leading, "s" static (instance "is"), both with
/// a 5 s session, generation 1 at 100 ms.
fn long_session_static_group() -> Sim {
    let mut sim = Sim::new(settings(100));
    sim.session = 5_000;
    let ta = sim.join_new("a");
    let ts = sim.join(static_join(&sim, "s", "", "is"));
    sim.advance_to(100);
    assert_eq!(sim.join_reply(ta).generation, 1);
    assert_eq!(sim.join_reply(ts).member_id, "s");
    sim.sync_all(1, &["a", "s"]);
    sim
}

#[test]
fn a_static_member_not_rejoining_in_time_stays_a_member() {
    let mut sim = long_session_static_group();
    // s is restarting (down for less than its session) when c joins.
    sim.advance_to(200);
    let tc = sim.join_new("c"); // rebalance deadline: 200 + 3000
    let ta = sim.rejoin("a");
    for t in (1_000..3_200).step_by(1_000) {
        sim.advance_to(t);
        assert_eq!(sim.heartbeat("c", 1), REBALANCE_IN_PROGRESS);
    }
    sim.advance_to(3_200);
    // Kafka: the join phase ends at the deadline with s still a member, and the
    // leader assigns it partitions as before.
    assert_eq!(sim.join_reply(tc).generation, 2);
    assert_eq!(
        sim.state(),
        (State::CompletingRebalance, 2, members(&["a", "c", "s"]))
    );
    let leader = sim.join_reply(ta);
    assert!(leader.members.iter().any(|m| m.member_id == "s"));
    sim.sync_all(2, &["a", "c", "s"]);
    // s comes back: it takes over its assignment without another rebalance.
    sim.advance_to(3_500);
    let t = sim.join(static_join(&sim, "s2", "", "is"));
    let r = sim.join_reply(t);
    assert_eq!((r.error, r.generation), (NONE, 2));
    let t = sim.sync(sr("s2", 2, &[]));
    assert_eq!(sim.sync_reply(t).assignment, asg(2, "s"));
    assert_eq!(sim.state().1, 2);
}

#[test]
fn a_static_member_replaced_in_stable_is_answered_once_stored() {
    let mut sim = static_group();
    sim.store_delay = 50;
    sim.store_ok = false;
    let t = sim.join(static_join(&sim, "s2", "", "is"));
    // Kafka (updateStaticMemberAndRebalance, Stable): the answer waits for the
    // group record naming the new member id ...
    assert!(
        !sim.answered(t),
        "answered {:?} before the new member id was stored",
        sim.replies.get(&t)
    );
    sim.advance(50);
    // ... and if it could not be stored, the old member id is restored and the
    // join fails (the client retries), so no client holds an id the log lacks.
    let r = sim.join_reply(t);
    assert_ne!(r.error, NONE);
    assert_eq!(sim.state(), (State::Stable, 1, members(&["a", "s"])));
    assert_eq!(sim.heartbeat_static("s", 1, Some("is")), NONE);
}

// ----------------------------------------------------------------------
// 9. The rebalance storm

const STORM_SESSION: (u64, u64) = (300, 1_200);
/// Rebalance timeouts above the longest heartbeat interval (a third of a session):
/// a live member hears of a rebalance in time to rejoin.
const STORM_REBALANCE: (u64, u64) = (500, 2_500);
const STORM_STORE_DELAY: u64 = 250;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Joining,
    Syncing,
    Stable,
    /// Waiting to rejoin after COORDINATOR_NOT_AVAILABLE (finding the
    /// coordinator again takes a round trip or a retry backoff).
    Backoff(Millis),
    /// Left or crashed.
    Gone,
}

#[derive(Debug)]
struct StormClient {
    instance: Option<String>,
    incarnation: u32,
    member_id: String,
    generation: i32,
    phase: Phase,
    /// Gone without a LeaveGroup (a static one may restart).
    crashed: bool,
    paused_until: Option<Millis>,
    /// Answers that came while paused.
    buffered: Vec<Reply>,
    next_heartbeat: Millis,
    session: u64,
    rebalance: u64,
    protocols: Vec<(String, Bytes)>,
    /// The generation and assignment of the last successful SyncGroup.
    last_sync: Option<(i32, Bytes)>,
    /// Paused, stalled by a clock jump or moved to a new coordinator since it last
    /// joined: it may have been removed. Otherwise it must never lose its
    /// membership.
    excused: bool,
}

#[derive(Debug)]
struct Storm {
    rng: fastrand::Rng,
    sim: Sim,
    clients: Vec<StormClient>,
    /// Token → (client, incarnation).
    owner: HashMap<Token, (usize, u32)>,
    /// Member id → client (ids are unique: the fresh ids the clients hand out).
    who: HashMap<String, usize>,
    /// Generation → its leader's client.
    leader_of: HashMap<i32, usize>,
    fresh: u64,
    /// STORM_TRACE=<seed> prints what happens (to debug a failing seed).
    trace: bool,
    stats: StormStats,
    /// When the last paused client resumed.
    last_resume: Millis,
    /// Handing a resumed client the answers that came while it was paused.
    late: bool,
}

/// What a storm went through (printed with --nocapture).
#[derive(Debug, Default, Clone, Copy)]
struct StormStats {
    generations: u64,
    static_joins_without_id: u64,
    failed_stores: u64,
    leaves: u64,
    crashes: u64,
    pauses: u64,
    jumps: u64,
    commits: u64,
    /// FENCED_INSTANCE_ID answers to replaced incarnations.
    fenced: u64,
    failovers: u64,
}

impl StormStats {
    fn add(&mut self, o: StormStats) {
        self.generations += o.generations;
        self.static_joins_without_id += o.static_joins_without_id;
        self.failed_stores += o.failed_stores;
        self.leaves += o.leaves;
        self.crashes += o.crashes;
        self.pauses += o.pauses;
        self.jumps += o.jumps;
        self.commits += o.commits;
        self.fenced += o.fenced;
        self.failovers += o.failovers;
    }
}

/// The storm's assignments: generation, leader's client, member id.
fn storm_asg(generation: i32, leader: usize, member: &str) -> Bytes {
    Bytes::from(format!("{generation}|{leader}|{member}"))
}

fn parse_storm_asg(b: &[u8]) -> Option<(i32, usize, String)> {
    let s = std::str::from_utf8(b).ok()?;
    let mut it = s.splitn(3, '|');
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.to_string(),
    ))
}

impl Storm {
    fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            let state = self.sim.c.state_of(G);
            eprintln!("{:>6} {:<60} {state:?}", self.sim.now, what());
        }
    }

    fn add_client(&mut self) {
        let i = self.clients.len();
        let session = self.rng.u64(STORM_SESSION.0..=STORM_SESSION.1);
        let rebalance = self.rng.u64(STORM_REBALANCE.0..=STORM_REBALANCE.1);
        let meta = Bytes::from(format!("sub-{i}"));
        let mut protocols = vec![
            ("range".to_string(), meta.clone()),
            ("roundrobin".to_string(), meta),
        ];
        if self.rng.bool() {
            protocols.reverse();
        }
        let instance = (self.rng.u32(0..100) < 35).then(|| format!("i{i}"));
        self.clients.push(StormClient {
            instance,
            incarnation: 0,
            member_id: String::new(),
            generation: -1,
            phase: Phase::Joining,
            crashed: false,
            paused_until: None,
            buffered: Vec::new(),
            next_heartbeat: 0,
            session,
            rebalance,
            protocols,
            last_sync: None,
            excused: false,
        });
        self.send_join(i);
    }

    fn send_join(&mut self, i: usize) {
        self.fresh += 1;
        let fresh = format!("c{i}-{}", self.fresh);
        self.who.insert(fresh.clone(), i);
        let c = &mut self.clients[i];
        c.phase = Phase::Joining;
        let r = JoinRequest {
            group: G.to_string(),
            member_id: c.member_id.clone(),
            instance_id: c.instance.clone(),
            client_id: format!("c{i}"),
            client_host: "/10.0.0.1".to_string(),
            session_timeout_ms: c.session,
            rebalance_timeout_ms: c.rebalance,
            protocol_type: "consumer".to_string(),
            protocols: c.protocols.clone(),
            require_known_member: true,
            fresh_member_id: fresh,
        };
        let inc = c.incarnation;
        if self.trace {
            eprintln!(
                "{:>6} c{i} -> join {:?} {:?}",
                self.sim.now, r.member_id, r.instance_id
            );
        }
        let t = self.sim.join(r);
        self.owner.insert(t, (i, inc));
    }

    fn send_sync(&mut self, i: usize, assignments: Vec<(String, Bytes)>) {
        let c = &mut self.clients[i];
        c.phase = Phase::Syncing;
        let r = SyncRequest {
            group: G.to_string(),
            generation: c.generation,
            member_id: c.member_id.clone(),
            instance_id: c.instance.clone(),
            protocol_type: Some("consumer".to_string()),
            protocol_name: None,
            assignments,
        };
        let inc = c.incarnation;
        if self.trace {
            eprintln!(
                "{:>6} c{i} -> sync {} gen {}",
                self.sim.now, r.member_id, r.generation
            );
        }
        let t = self.sim.sync(r);
        self.owner.insert(t, (i, inc));
    }

    /// Find the coordinator again, then rejoin.
    fn backoff(&mut self, i: usize) {
        let backoff = self.rng.u64(10..=100);
        self.clients[i].phase = Phase::Backoff(self.sim.now + backoff);
    }

    /// UNKNOWN_MEMBER_ID or FENCED_INSTANCE_ID: only a client that was paused, or
    /// stalled, or whose coordinator moved, may have lost its membership (for a
    /// static member, FENCED is fatal in Java: here the application restarts it).
    fn reset_and_join(&mut self, i: usize) {
        let c = &self.clients[i];
        assert!(
            c.excused || c.member_id.is_empty(),
            "client {i} ({}), live all along, lost its membership",
            c.member_id
        );
        self.clients[i].member_id.clear();
        self.send_join(i);
    }

    /// Hand out the answers, client by client, until none is left.
    fn dispatch(&mut self) {
        let mut rounds = 0;
        while !self.sim.inbox.is_empty() {
            rounds += 1;
            assert!(
                rounds < 1_000,
                "answers ping-pong forever at {}",
                self.sim.now
            );
            for (t, reply) in std::mem::take(&mut self.sim.inbox) {
                let (i, inc) = self.owner.remove(&t).expect("a token of a client");
                let c = &mut self.clients[i];
                if c.incarnation != inc || c.phase == Phase::Gone {
                    let fenced = match &reply {
                        Reply::Join(r) => r.error == FENCED_INSTANCE_ID,
                        Reply::Sync(r) => r.error == FENCED_INSTANCE_ID,
                    };
                    self.stats.fenced += u64::from(fenced);
                    continue;
                }
                if c.paused_until.is_some() {
                    c.buffered.push(reply);
                    continue;
                }
                self.on_reply(i, reply);
            }
        }
    }

    fn on_reply(&mut self, i: usize, reply: Reply) {
        self.log(|| format!("c{i} <- {reply:?}"));
        match reply {
            Reply::Join(r) => self.on_join(i, r),
            Reply::Sync(r) => self.on_sync(i, r),
        }
    }

    fn on_join(&mut self, i: usize, r: JoinResponse) {
        match r.error {
            MEMBER_ID_REQUIRED => {
                self.clients[i].member_id = r.member_id;
                self.send_join(i);
            }
            UNKNOWN_MEMBER_ID | FENCED_INSTANCE_ID => self.reset_and_join(i),
            COORDINATOR_NOT_AVAILABLE => self.backoff(i),
            NONE => {
                let c = &self.clients[i];
                if c.member_id.is_empty() && c.instance.is_some() {
                    self.stats.static_joins_without_id += 1;
                }
                assert!(
                    c.member_id.is_empty() || c.member_id == r.member_id,
                    "client {i} ({}) was answered for {}",
                    c.member_id,
                    r.member_id
                );
                assert_eq!(self.who.get(&r.member_id), Some(&i), "{r:?}");
                // Generations not stored are forgotten when the coordinator moves.
                assert!(
                    r.generation >= c.generation || c.excused,
                    "client {i} went back from generation {} to {}",
                    c.generation,
                    r.generation
                );
                let leader = *self
                    .who
                    .get(&r.leader)
                    .unwrap_or_else(|| panic!("unknown leader in {r:?}"));
                match self.leader_of.entry(r.generation) {
                    Entry::Occupied(e) => assert_eq!(
                        *e.get(),
                        leader,
                        "two leaders in generation {}",
                        r.generation
                    ),
                    Entry::Vacant(e) => {
                        e.insert(leader);
                    }
                }
                let is_leader = r.leader == r.member_id;
                assert!(
                    is_leader || r.members.is_empty(),
                    "a follower got the members: {r:?}"
                );
                let assignments = if is_leader && !r.skip_assignment {
                    assert!(!r.members.is_empty(), "a leader without members: {r:?}");
                    assert!(r.members.iter().any(|m| m.member_id == r.member_id));
                    r.members
                        .iter()
                        .map(|m| {
                            let a = storm_asg(r.generation, leader, &m.member_id);
                            (m.member_id.clone(), a)
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let c = &mut self.clients[i];
                c.member_id = r.member_id;
                c.generation = r.generation;
                // A member again (unless this answer is stale).
                c.excused &= self.late;
                self.send_sync(i, assignments);
            }
            code => panic!("client {i}: unexpected JoinGroup answer {code}: {r:?}"),
        }
    }

    fn on_sync(&mut self, i: usize, r: SyncResponse) {
        match r.error {
            NONE => {
                let c = &self.clients[i];
                let (gen, leader, member) = parse_storm_asg(&r.assignment)
                    .unwrap_or_else(|| panic!("client {i}: assignment {:?}", r.assignment));
                assert_eq!(
                    gen, c.generation,
                    "client {i}: assignment of another generation"
                );
                assert_eq!(
                    self.leader_of.get(&gen),
                    Some(&leader),
                    "client {i}: assignment not from generation {gen}'s leader"
                );
                assert_eq!(
                    self.who.get(&member),
                    Some(&i),
                    "client {i} got {member}'s assignment"
                );
                let now = self.sim.now;
                let c = &mut self.clients[i];
                c.last_sync = Some((gen, r.assignment));
                c.phase = Phase::Stable;
                c.next_heartbeat = now + c.session / 3;
            }
            REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => self.send_join(i),
            COORDINATOR_NOT_AVAILABLE => {
                self.stats.failed_stores += 1;
                self.backoff(i);
            }
            UNKNOWN_MEMBER_ID | FENCED_INSTANCE_ID => self.reset_and_join(i),
            code => panic!("client {i}: unexpected SyncGroup answer {code}: {r:?}"),
        }
    }

    fn heartbeat(&mut self, i: usize) {
        let c = &self.clients[i];
        let (gen, member, instance) = (c.generation, c.member_id.clone(), c.instance.clone());
        if self.rng.u32(0..4) == 0 {
            self.commit(i);
        }
        let code = self.sim.heartbeat_static(&member, gen, instance.as_deref());
        self.log(|| format!("c{i} heartbeat {member} gen {gen}: {code}"));
        self.dispatch();
        let now = self.sim.now;
        let c = &mut self.clients[i];
        if c.phase != Phase::Stable {
            return;
        }
        match code {
            NONE => c.next_heartbeat = now + c.session / 3,
            REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => self.send_join(i),
            UNKNOWN_MEMBER_ID | FENCED_INSTANCE_ID => self.reset_and_join(i),
            code => panic!("client {i}: unexpected heartbeat answer {code}"),
        }
    }

    /// An OffsetCommit: refused only when the group moved on.
    fn commit(&mut self, i: usize) {
        self.stats.commits += 1;
        let c = &self.clients[i];
        let (gen, member, instance) = (c.generation, c.member_id.clone(), c.instance.clone());
        let current = self
            .sim
            .c
            .groups
            .get(G)
            .map(|g| (g.state, g.generation, g.members.contains_key(&member)));
        let parts = [tp("t", 0)];
        let r = self.sim.commit(&member, gen, instance.as_deref(), &parts);
        match (current, r) {
            (Some((State::Stable | State::PreparingRebalance, g, true)), r) if g == gen => {
                assert_eq!(
                    r,
                    Ok(vec![NONE]),
                    "client {i}: commit of the current generation"
                )
            }
            (_, Ok(_)) => panic!("client {i}: commit of generation {gen} accepted in {current:?}"),
            (_, Err(REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID)) => {}
            (_, Err(FENCED_INSTANCE_ID)) if self.clients[i].excused => {}
            (_, Err(code)) => panic!("client {i}: commit refused with {code}"),
        }
    }

    fn live(&self, i: usize) -> bool {
        let c = &self.clients[i];
        c.phase != Phase::Gone && c.paused_until.is_none()
    }

    fn random_live(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.clients.len()).filter(|i| self.live(*i)).collect();
        (!live.is_empty()).then(|| live[self.rng.usize(0..live.len())])
    }

    /// When client `i` does something next by itself.
    fn client_time(&self, i: usize) -> Option<Millis> {
        let c = &self.clients[i];
        match (c.phase, c.paused_until) {
            (Phase::Gone, _) => None,
            (_, Some(t)) => Some(t),
            (Phase::Stable, None) => Some(c.next_heartbeat),
            (Phase::Backoff(t), None) => Some(t),
            _ => None,
        }
    }

    fn client_acts(&mut self, i: usize) {
        let now = self.sim.now;
        if let Some(t) = self.clients[i].paused_until {
            if t <= now {
                self.clients[i].paused_until = None;
                self.last_resume = now;
                for reply in std::mem::take(&mut self.clients[i].buffered) {
                    if self.clients[i].phase == Phase::Gone {
                        break;
                    }
                    self.late = true;
                    self.on_reply(i, reply);
                    self.late = false;
                    self.dispatch();
                }
            }
            return;
        }
        let c = &self.clients[i];
        match c.phase {
            Phase::Stable if c.next_heartbeat <= now => self.heartbeat(i),
            Phase::Backoff(t) if t <= now => self.send_join(i),
            _ => {}
        }
    }

    fn random_event(&mut self) {
        let live = (0..self.clients.len()).filter(|i| self.live(*i)).count();
        let event = self.rng.u32(0..100);
        self.log(|| format!("event {event}"));
        match event {
            0..=19 if live < 8 => self.add_client(),
            20..=31 => {
                if let Some(i) = self.random_live() {
                    self.stats.leaves += 1;
                    let c = &mut self.clients[i];
                    c.phase = Phase::Gone;
                    c.incarnation += 1;
                    let m = [(c.member_id.clone(), c.instance.clone())];
                    if !m[0].0.is_empty() {
                        let (_, codes, a) = self.sim.c.leave(self.sim.now, G, &m);
                        assert!(
                            codes == [NONE] || codes == [UNKNOWN_MEMBER_ID],
                            "client {i} leaving: {codes:?}"
                        );
                        self.sim.apply(a);
                        self.sim.settle();
                    }
                }
            }
            32..=43 => {
                if let Some(i) = self.random_live() {
                    self.stats.crashes += 1;
                    let c = &mut self.clients[i];
                    c.phase = Phase::Gone;
                    c.crashed = true;
                    c.incarnation += 1;
                }
            }
            44..=53 => {
                if let Some(i) = self.random_live() {
                    self.stats.pauses += 1;
                    let c = &mut self.clients[i];
                    let pause = c.session + self.rng.u64(1..=c.session);
                    c.paused_until = Some(self.sim.now + pause);
                    c.excused = true;
                }
            }
            54..=63 => {
                let crashed: Vec<usize> = (0..self.clients.len())
                    .filter(|i| {
                        let c = &self.clients[*i];
                        c.crashed && c.instance.is_some()
                    })
                    .collect();
                if crashed.is_empty() {
                    if live < 8 {
                        self.add_client();
                    }
                } else {
                    // A static member restarts: same instance, no member id.
                    let i = crashed[self.rng.usize(0..crashed.len())];
                    let c = &mut self.clients[i];
                    c.crashed = false;
                    c.member_id.clear();
                    c.generation = -1;
                    c.last_sync = None;
                    c.buffered.clear();
                    self.send_join(i);
                }
            }
            64..=75 => self.sim.store_delay = self.rng.u64(0..=STORM_STORE_DELAY),
            76..=83 => self.sim.store_fail_pct = [0, 0, 30, 100][self.rng.usize(0..4)],
            84..=86 => {
                // The offsets partition moves to another node.
                self.stats.failovers += 1;
                self.sim.failover();
                let loaded = self.sim.c.state_of(G).map_or(0, |(_, g, _)| g);
                self.leader_of.retain(|g, _| *g <= loaded);
                for c in &mut self.clients {
                    c.excused = true;
                    c.generation = c.generation.min(loaded);
                }
            }
            87..=91 => {
                // The node stalls: time jumps without ticks; when it resumes, its
                // overdue timer fires first, then the requests come in.
                self.stats.jumps += 1;
                for c in &mut self.clients {
                    c.excused = true;
                }
                self.sim.now += self.rng.u64(1..=2 * STORM_SESSION.1);
                self.sim.settle();
            }
            _ => {
                // A member rejoins on its own (e.g. its subscription is refreshed).
                if let Some(i) = self.random_live() {
                    if self.clients[i].phase == Phase::Stable {
                        self.send_join(i);
                    }
                }
            }
        }
        self.dispatch();
    }

    /// Every request is answered in time: the longest rebalance timeout, plus a
    /// store that may hold the SyncGroup answers.
    fn check_answers_in_time(&self) {
        let bound = STORM_REBALANCE.1 + STORM_STORE_DELAY;
        for (t, sent) in &self.sim.outstanding {
            assert!(
                sent + bound >= self.sim.now,
                "token {t} sent at {sent} still waits at {}",
                self.sim.now
            );
        }
    }

    /// In Stable, every member's assignment is from the current generation's leader.
    fn check_stable(&self) {
        let Some(g) = self.sim.c.groups.get(G) else {
            return;
        };
        if g.state != State::Stable {
            return;
        }
        let leader = self.leader_of.get(&g.generation).copied();
        assert!(
            leader.is_some(),
            "Stable generation {} without a leader",
            g.generation
        );
        let leader_id = g.leader.as_deref().expect("a Stable group has a leader");
        assert_eq!(self.who.get(leader_id).copied(), leader);
        for m in g.members.values() {
            let (gen, from, member) = parse_storm_asg(&m.assignment)
                .unwrap_or_else(|| panic!("member {} has assignment {:?}", m.id, m.assignment));
            assert_eq!(
                gen, g.generation,
                "member {}: assignment of generation {gen}",
                m.id
            );
            assert_eq!(
                Some(from),
                leader,
                "member {}: assignment not from the leader",
                m.id
            );
            assert_eq!(self.who.get(&member), self.who.get(&m.id));
        }
    }

    /// Converged: Stable with exactly the live clients, each holding the current
    /// generation's assignment.
    fn converged(&self) -> Result<(), String> {
        let live: Vec<usize> = (0..self.clients.len()).filter(|i| self.live(*i)).collect();
        let state = self.sim.c.state_of(G);
        if live.is_empty() {
            return match state {
                None => Ok(()),
                Some((State::Empty, _, m)) if m.is_empty() => Ok(()),
                other => Err(format!("no live client, group {other:?}")),
            };
        }
        let Some((state, gen, members)) = state else {
            return Err("no group".into());
        };
        if state != State::Stable {
            return Err(format!("{state:?}"));
        }
        let mut ids: Vec<String> = live
            .iter()
            .map(|i| self.clients[*i].member_id.clone())
            .collect();
        ids.sort();
        if ids != members {
            return Err(format!("members {members:?}, live clients {ids:?}"));
        }
        for i in live {
            let c = &self.clients[i];
            if c.phase != Phase::Stable || c.generation != gen {
                return Err(format!(
                    "client {i} {:?} in generation {}",
                    c.phase, c.generation
                ));
            }
            match &c.last_sync {
                Some((g, a)) if *g == gen => {
                    let (ag, from, _) = parse_storm_asg(a).ok_or("unreadable assignment")?;
                    if ag != gen || self.leader_of.get(&gen) != Some(&from) {
                        return Err(format!("client {i}: stale assignment"));
                    }
                }
                other => return Err(format!("client {i}: last sync {other:?}")),
            }
        }
        if !self.sim.outstanding.is_empty() {
            return Err(format!("waiting: {:?}", self.sim.outstanding));
        }
        Ok(())
    }
}

/// Runs one seed; returns the virtual time from the end of the storm to
/// convergence, and what happened.
fn run_storm(seed: u64) -> (Millis, StormStats) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let delay = [0, 0, 100, 400][rng.usize(0..4)];
    let mut sim = Sim::new(Settings {
        initial_rebalance_delay_ms: delay,
        min_session_timeout_ms: 200,
        max_session_timeout_ms: 2_000,
    });
    sim.rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let mut s = Storm {
        rng,
        sim,
        clients: Vec::new(),
        owner: HashMap::new(),
        who: HashMap::new(),
        leader_of: HashMap::new(),
        fresh: 0,
        trace: std::env::var("STORM_TRACE").is_ok_and(|v| v == seed.to_string()),
        stats: StormStats::default(),
        last_resume: 0,
        late: false,
    };
    for _ in 0..s.rng.usize(2..=8) {
        s.add_client();
    }
    s.dispatch();
    let storm_end = s.rng.u64(2_000..6_000);
    let mut next_event = s.rng.u64(20..500);
    let mut storming = true;
    // After the storm, within: a join phase held by dead members (rebalance
    // timeout), their sessions or a sync phase they do not sync in, one more
    // join phase for the live ones, the stores and the initial delay.
    let bound = 2 * STORM_REBALANCE.1 + STORM_SESSION.1 + 2 * STORM_STORE_DELAY + 400;
    let mut quiet_start: Option<Millis> = None;
    let mut converged_at: Option<Millis> = None;
    let mut steps = 0u32;
    loop {
        steps += 1;
        assert!(steps < 100_000, "no progress: stuck at {}", s.sim.now);
        let mut t = Millis::MAX;
        if storming {
            t = t.min(next_event);
        }
        for i in 0..s.clients.len() {
            if let Some(ct) = s.client_time(i) {
                t = t.min(ct);
            }
        }
        if let Some(it) = s.sim.next_internal() {
            t = t.min(it);
        }
        match (quiet_start, converged_at) {
            (_, Some(c)) => t = t.min(c + 2 * STORM_SESSION.1),
            (Some(q), None) if q > s.sim.now => t = t.min(q),
            (Some(q), None) => t = t.min(q + bound),
            _ => {}
        }
        assert!(t < Millis::MAX, "nothing more happens");
        s.sim.goto(t.max(s.sim.now));
        s.check_answers_in_time();
        s.check_stable();
        s.dispatch();
        let now = s.sim.now;
        for i in 0..s.clients.len() {
            if s.client_time(i).is_some_and(|ct| ct <= now) {
                s.client_acts(i);
                s.dispatch();
            }
        }
        if storming && now >= next_event {
            s.random_event();
            next_event = s.sim.now + s.rng.u64(20..500);
        }
        if storming && s.sim.now >= storm_end {
            storming = false;
            s.sim.store_fail_pct = 0;
        }
        if !storming && quiet_start.is_none() {
            // Quiet once the paused clients are back and a session passed since
            // (one may have expired while paused, after its last answer).
            if s.clients.iter().all(|c| c.paused_until.is_none()) {
                quiet_start = Some(s.sim.now.max(s.last_resume + STORM_SESSION.1));
            }
        }
        // Once quiet, the group converges and stays so.
        if let Some(q) = quiet_start.filter(|q| s.sim.now >= *q) {
            let now = s.sim.now;
            match (s.converged(), converged_at) {
                (Ok(()), None) => converged_at = Some(now),
                (Ok(()), Some(c)) if now >= c + 2 * STORM_SESSION.1 => {
                    s.stats.generations += s.sim.max_generation.get(G).map_or(0, |g| *g as u64);
                    return (c - q, s.stats);
                }
                (Ok(()), Some(_)) => {}
                (Err(e), Some(c)) => panic!("converged at {c}, then at {now}: {e}"),
                (Err(e), None) if now >= q + bound => {
                    panic!("not converged {bound} ms after the storm (at {now}): {e}")
                }
                (Err(_), None) => {}
            }
        }
    }
}

#[test]
fn rebalance_storm() {
    let mut slowest = (0, 0);
    let mut stats = StormStats::default();
    for seed in 0..300u64 {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_storm(seed)));
        match r {
            Ok((took, s)) => {
                slowest = slowest.max((took, seed));
                stats.add(s);
            }
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("seed {seed}: {msg}");
            }
        }
    }
    eprintln!(
        "storm: slowest convergence {} ms (seed {}); {stats:?}",
        slowest.0, slowest.1
    );
}
