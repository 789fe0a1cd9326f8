"""Consumer groups: the group coordinator (FindCoordinator, JoinGroup, SyncGroup,
Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups,
DeleteGroups, OffsetDelete), the classic rebalance protocol and committed offsets
kept in the replicated internal topic __consumer_offsets.

Members are real clients in their own OS processes (group_consumer.py: librdkafka
through confluent-kafka, kafka-python, aiokafka), so a test can kill -9 one, freeze
it with SIGSTOP or let it leave cleanly with SIGTERM. Bad input goes over raw
sockets (kafka_wire). Measured times are printed (run with -s to see them).

The nodes run with a 1 s minimum session timeout and a short initial rebalance
delay so that the suite stays fast; the members use session timeouts of 4-10 s and
0.5 s heartbeats.
"""

import json
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from confluent_kafka import (ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError,
                             KafkaException, TopicPartition)
from confluent_kafka.admin import AdminClient

import cluster_util as cu
import kafka_wire as kw
from helpers import consumer, produce, producer, wait_until

HELPER = Path(__file__).with_name("group_consumer.py")

MIN_SESSION_MS = 1000
MAX_SESSION_MS = 60000
GROUP_ARGS = (
    "--offsets-topic-partitions", "4",
    "--group-initial-rebalance-delay-ms", "500",
    "--group-min-session-timeout-ms", str(MIN_SESSION_MS),
    "--group-max-session-timeout-ms", str(MAX_SESSION_MS),
)
HEARTBEAT_MS = 500
# What a rebalance may take beyond the session timeout on this noisy 2-vCPU VM: the
# survivors' next heartbeat (0.5 s), their JoinGroup and SyncGroup round trips, the
# assignor, the commit in the revocation callback.
REBALANCE_MARGIN_S = 6.0
OFFSET_INVALID = -1001  # librdkafka's "no committed offset"


# ---------------------------------------------------------------------------
# Group members in their own processes


class Member:
    """One group_consumer.py process and what it reported (see its docstring)."""

    def __init__(self, root, name, bootstrap, group, topic, client="confluent",
                 assignor="range", instance_id=None, session_timeout_ms=6000,
                 heartbeat_interval_ms=HEARTBEAT_MS, commit_every=10, commit_interval_s=1.0):
        self.name = name
        self.session_s = session_timeout_ms / 1000
        self.stderr_path = root / f"{name}-{uuid.uuid4().hex[:6]}.stderr"
        args = [sys.executable, str(HELPER), "--client", client, "--bootstrap", bootstrap,
                "--group", group, "--topic", topic, "--name", name, "--assignor", assignor,
                "--session-timeout-ms", str(session_timeout_ms),
                "--heartbeat-interval-ms", str(heartbeat_interval_ms),
                "--commit-every", str(commit_every), "--commit-interval-s", str(commit_interval_s)]
        if instance_id:
            args += ["--instance-id", instance_id]
        self.lock = threading.Lock()
        self.events = []
        self.stopped = False
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err,
                                         stdin=subprocess.DEVNULL, text=True, bufsize=1)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"ev": "garbage", "line": line, "t": time.monotonic()}
            with self.lock:
                self.events.append(ev)

    # -- what it reported ------------------------------------------------------
    def evs(self, *kinds):
        with self.lock:
            return [e for e in self.events if not kinds or e["ev"] in kinds]

    def assignment(self):
        rb = self.evs("assigned", "revoked", "lost")
        return set(rb[-1]["assignment"]) if rb else set()

    def last_rebalance_t(self):
        rb = self.evs("assigned", "revoked", "lost")
        return rb[-1]["t"] if rb else None

    def msgs(self):
        return [(e["p"], e["o"], e["v"]) for e in self.evs("msg")]

    def commits(self, ok=True):
        return [e for e in self.evs("commit") if e["ok"] == ok]

    def committed(self, before=None):
        """{partition: highest offset this member committed successfully (before `before`)}"""
        out = {}
        for e in self.commits():
            if before is not None and e["t"] > before:
                continue
            for p, o in e["offsets"].items():
                out[int(p)] = max(out.get(int(p), 0), o)
        return out

    def describe(self):
        rc = self.proc.poll()
        state = "frozen" if self.stopped else ("running" if rc is None else f"exited {rc}")
        try:
            err = self.stderr_path.read_text(errors="replace")[-1500:]
        except FileNotFoundError:
            err = ""
        tail = [e for e in self.evs() if e["ev"] != "msg"][-8:]
        return (f"--- {self.name} (pid {self.proc.pid}, {state}): assignment "
                f"{sorted(self.assignment())}, {len(self.evs('msg'))} messages, "
                f"{len(self.commits())} commits, {len(self.commits(ok=False))} failed commits\n"
                f"    last events: {tail}\n    stderr: {err.strip()}")

    # -- what happens to it ----------------------------------------------------
    def alive(self):
        return self.proc.poll() is None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.stopped = False

    def sigstop(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def terminate(self, timeout_s=30):
        """SIGTERM: it commits, closes (LeaveGroup) and exits with 0."""
        if self.stopped:
            self.proc.send_signal(signal.SIGCONT)
            self.stopped = False
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not exit within {timeout_s}s of SIGTERM\n"
                                 + self.describe())
        self.reader.join(5)
        assert rc == 0 and self.evs("closed"), f"{self.name} did not close cleanly\n{self.describe()}"


@pytest.fixture
def members(tmp_path):
    """members(name, bootstrap, group, topic, **opts) starts a Member; every one
    still running at the end is killed (by its pid)."""
    started = []

    def make(*args, **kwargs):
        m = Member(tmp_path, *args, **kwargs)
        started.append(m)
        return m

    make.all = started
    yield make
    for m in started:
        if m.proc.poll() is None:
            m.proc.kill()
            m.proc.wait()


def diag(ms):
    return "\n" + "\n".join(m.describe() for m in ms)


def split_ok(ms, partitions, sizes=None):
    """The members' assignments are disjoint and cover `partitions` exactly (and
    have the given sizes, if any)."""
    sets = [m.assignment() for m in ms]
    if sum(len(s) for s in sets) != len(partitions) or set().union(*sets) != set(partitions):
        return False
    return sizes is None or sorted(len(s) for s in sets) == sorted(sizes)


def wait_split(ms, partitions, timeout_s, what, sizes=None):
    """Waits until split_ok; returns the time (the members' clock) of the last
    rebalance event that made it so."""
    wait_until(lambda: split_ok(ms, partitions, sizes), timeout_s,
               lambda: f"{what}: partitions {sorted(partitions)} split among "
               f"{[m.name for m in ms]}" + diag(ms))
    return max(m.last_rebalance_t() for m in ms)


def create_topic(cli, node, topic, partitions):
    r = cli(node, "topic", "create", topic, "--partitions", partitions)
    assert r.returncode == 0, r.stdout + r.stderr


class Feeder:
    """A producer thread: b"m-<i>" to partition i % partitions, ~rate messages a
    second, until stopped. Records every acknowledged (partition, offset) -> value."""

    def __init__(self, bootstrap, topic, partitions, rate=150):
        self.topic = topic
        self.partitions = partitions
        self.rate = rate
        self.p = producer(bootstrap, **{"linger.ms": 2, "message.timeout.ms": 30_000})
        self.lock = threading.Lock()
        self.acked = {}
        self.errors = []
        self.sent = 0
        self.halt = threading.Event()
        self.flush_left = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_delivery(self, err, m):
        with self.lock:
            if err is not None:
                self.errors.append((m.value(), str(err)))
            else:
                self.acked[(m.partition(), m.offset())] = m.value().decode()

    def _run(self):
        i = 0
        tick = 0.02
        per_tick = max(1, int(self.rate * tick))
        next_t = time.monotonic()
        while not self.halt.is_set():
            for _ in range(per_tick):
                produce(self.p, self.topic, value=b"m-%d" % i, partition=i % self.partitions,
                        on_delivery=self._on_delivery)
                i += 1
            self.sent = i
            next_t += tick
            while True:
                left = next_t - time.monotonic()
                if left <= 0:
                    break
                self.p.poll(left)
        self.flush_left = self.p.flush(30)

    def start(self):
        self.thread.start()
        return self

    def count(self):
        with self.lock:
            return len(self.acked)

    def wait_acks(self, n, timeout_s=30):
        start = self.count()
        wait_until(lambda: self.count() >= start + n, timeout_s, f"{n} more acknowledged messages")

    def stop(self):
        self.halt.set()
        self.thread.join(60)
        assert self.flush_left == 0, f"{self.flush_left} messages neither acked nor failed"
        assert not self.errors, f"delivery failures: {self.errors[:5]}"
        return dict(self.acked)


def produce_known(bootstrap, topic, partitions, per_partition, prefix="r", start=0, exact=True):
    """Synchronously produces b"<prefix>-<p>-<i>" (i = start..start+per_partition-1)
    to each partition p of a topic holding `start` messages per partition; with
    `exact` they must land at offset i (not so on a replicated partition, whose
    leaders write a control batch first). Returns {(partition, offset): value}."""
    p = producer(bootstrap)
    acked = {}

    def on_delivery(err, m):
        assert err is None, err
        acked[(m.partition(), m.offset())] = m.value().decode()

    for i in range(start, start + per_partition):
        for q in range(partitions):
            produce(p, topic, value=b"%s-%d-%d" % (prefix.encode(), q, i), partition=q,
                    on_delivery=on_delivery)
    assert p.flush(30) == 0
    assert len(acked) == partitions * per_partition
    if exact:
        assert all(v == f"{prefix}-{q}-{o}" for (q, o), v in acked.items()), acked
    return acked


def consumed_all(ms, acked):
    seen = set()
    for m in ms:
        seen.update((p, o) for p, o, _v in m.msgs())
    return all(k in seen for k in acked)


def check_consumed(ms, acked):
    """Every acknowledged message was consumed by some member with its value.
    Returns {(partition, offset): [member name, ...]}."""
    by = defaultdict(list)
    for m in ms:
        for p, o, v in m.msgs():
            key = (p, o)
            assert key in acked, f"{m.name} consumed {key} = {v!r}, which was never acknowledged"
            assert acked[key] == v, f"{m.name} consumed {key} = {v!r}, acknowledged as {acked[key]!r}"
            by[key].append(m.name)
    missing = sorted(k for k in acked if k not in by)
    assert not missing, f"{len(missing)} acknowledged messages never consumed (skipped), e.g. {missing[:10]}"
    return by


def admin_client(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})


def describe_group(admin, group):
    return admin.describe_consumer_groups([group])[group].result(timeout=30)


def broker_id(port):
    md = cu.metadata_from(port)
    assert md is not None and len(md.brokers) == 1, md
    return next(iter(md.brokers))


def offsets_partition(group, partitions):
    """Kafka's partition of __consumer_offsets for a group: Utils.abs(groupId.hashCode)
    % partitions, with Java's String.hashCode over UTF-16 code units."""
    data = group.encode("utf-16-be")
    h = 0
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return (h & 0x7FFFFFFF) % partitions


def raw(port, payload, parse, timeout=15.0):
    body = kw.call(port, payload, timeout=timeout)
    assert body is not None, "the node closed the connection instead of answering"
    return parse(body)


def find_coordinator(port, group, timeout_s=30):
    """FindCoordinator v1 to the node at `port`, retried while it answers
    COORDINATOR_NOT_AVAILABLE (__consumer_offsets being created or electing)."""
    last = []

    def ask():
        try:
            r = raw(port, kw.find_coordinator_v1(3, group), kw.parse_find_coordinator_v1, timeout=5)
        except (OSError, TimeoutError) as e:
            last.append(repr(e))
            return None
        last.append(r)
        return r if r["error"] == 0 else None

    return wait_until(ask, timeout_s, lambda: f"FindCoordinator({group}) to answer; last {last[-3:]}")


# ---------------------------------------------------------------------------
# 1. Three librdkafka members, one killed


@pytest.mark.parametrize("assignor", ["range", "roundrobin", "cooperative-sticky"])
def test_kill9_member_partitions_move_nothing_skipped(node_factory, cli, members, assignor):
    """Three confluent-kafka members (own processes) in one group over 6 partitions,
    with a producer running throughout: each gets exactly 2 partitions (in the shape
    the assignor makes). After kill -9 of one, the two others own all 6 within the
    session timeout plus a rebalance margin. Every acknowledged message is consumed;
    the only messages consumed twice are ones of the killed member's partitions at
    or after the last offset committed for them (its uncommitted window)."""
    node = node_factory(*GROUP_ARGS)
    topic, P, group = f"kill-{assignor}", 6, f"g-kill-{assignor}"
    create_topic(cli, node, topic, P)
    session_ms = 4000
    feeder = Feeder(node.bootstrap, topic, P).start()
    try:
        feeder.wait_acks(100)
        t_start = time.monotonic()
        ms = [members(f"c{i}", node.bootstrap, group, topic, assignor=assignor,
                      session_timeout_ms=session_ms, commit_every=25) for i in range(3)]
        t_split = wait_split(ms, range(P), 60, "the first assignment", sizes=[2, 2, 2])
        print(f"{assignor}: three members own 2 partitions each {t_split - t_start:.2f}s after "
              f"they started: {[sorted(m.assignment()) for m in ms]}")
        shapes = sorted(tuple(sorted(m.assignment())) for m in ms)
        if assignor == "range":
            assert shapes == [(0, 1), (2, 3), (4, 5)], shapes
        elif assignor == "roundrobin":
            assert shapes == [(0, 3), (1, 4), (2, 5)], shapes

        victim, survivors = ms[1], [ms[0], ms[2]]
        owned = victim.assignment()

        def victim_committed_since_assignment():
            t_assigned = victim.last_rebalance_t()
            done = set()
            for e in victim.commits():
                if e["t"] >= t_assigned:
                    done.update(int(p) for p in e["offsets"])
            return owned <= done

        wait_until(victim_committed_since_assignment, 30,
                   lambda: f"{victim.name} to commit on {sorted(owned)}" + diag(ms))
        t_kill = time.monotonic()
        victim.kill9()
        recorded = {}  # what the members saw acknowledged, per partition, before the kill
        for m in ms:
            for p, o in m.committed(before=t_kill).items():
                recorded[p] = max(recorded.get(p, 0), o)
        # What the node holds for the victim's partitions (let a commit that was on
        # the wire when it died land first; the session timeout is seconds away).
        time.sleep(0.5)
        at_kill = offset_fetch(node.port, group, topic, sorted(owned))
        t_moved = wait_split(survivors, range(P), session_ms / 1000 + 30,
                             f"the survivors to take over {sorted(owned)} after kill -9 of {victim.name}")
        took = t_moved - t_kill
        print(f"{assignor}: kill -9 of {victim.name} (owner of {sorted(owned)}); the others own all "
              f"{P} partitions {took:.2f}s later (session timeout {session_ms / 1000:.1f}s): "
              f"{[sorted(m.assignment()) for m in survivors]}")
        assert took <= session_ms / 1000 + REBALANCE_MARGIN_S, (
            f"the rebalance after kill -9 took {took:.2f}s, more than the session timeout "
            f"{session_ms / 1000}s + {REBALANCE_MARGIN_S}s" + diag(ms))
        # Its last heartbeat was at most one heartbeat interval before the kill: a
        # member is evicted by its session timeout, not by its connection closing.
        assert took >= session_ms / 1000 - HEARTBEAT_MS / 1000 - 0.5, (
            f"the killed member's partitions moved {took:.2f}s after the kill, before its "
            f"session timeout of {session_ms / 1000}s" + diag(ms))
        feeder.wait_acks(300)
    finally:
        acked = feeder.stop()
    wait_until(lambda: consumed_all(ms, acked), 60,
               lambda: f"every one of {len(acked)} acknowledged messages to be consumed" + diag(ms))
    by = check_consumed(ms, acked)
    dups = {k: names for k, names in by.items() if len(names) > 1}
    last_consumed = {p: max([o for q, o, _v in victim.msgs() if q == p], default=-1) for p in owned}
    resumed = {}
    for p in owned:
        firsts = [(e["t"], e["o"], m.name) for m in survivors for e in m.evs("msg")
                  if e["p"] == p and e["t"] > t_kill]
        resumed[p] = min(firsts)[1:] if firsts else None
    window = {p: (recorded.get(p, 0), at_kill[p], last_consumed[p]) for p in sorted(owned)}
    print(f"{assignor}: {len(acked)} messages, {len(dups)} consumed twice; killed member's partitions: "
          f"(its last acknowledged commit, committed on the node, last consumed) {window}; "
          f"resumed at (offset, by) {resumed}; failed commits: "
          + str({m.name: [(e['offsets'], e['error']) for e in m.commits(ok=False)] for m in ms}))
    for p in owned:
        assert recorded.get(p, 0) <= at_kill[p] <= last_consumed[p] + 1, (
            f"partition {p}: the node holds committed offset {at_kill[p]}, but the killed member "
            f"had last committed {recorded.get(p, 0)} and consumed up to {last_consumed[p]}")
        assert resumed[p] is not None and resumed[p][0] == at_kill[p], (
            f"partition {p}: the new owner started at {resumed[p]}, the committed offset is {at_kill[p]}")
    expected_dups = {(p, o) for p in owned for o in range(at_kill[p], last_consumed[p] + 1)}
    unexpected = {k: v for k, v in dups.items() if k not in expected_dups or len(v) != 2}
    assert not unexpected, (f"messages consumed twice outside the killed member's uncommitted window "
                            f"{window}: {sorted(unexpected.items())[:10]}" + diag(ms))
    assert set(dups) == expected_dups, (
        f"the killed member's uncommitted messages {sorted(expected_dups - set(dups))[:10]} "
        f"were not consumed again")
    for m in survivors:
        m.terminate()


# ---------------------------------------------------------------------------
# 2. Three client libraries in one group


def test_three_clients_share_one_group(node_factory, cli, members):
    """librdkafka (confluent-kafka), kafka-python and aiokafka members in one group
    with the range assignor that all three implement: each gets 2 of the 6
    partitions (consecutive pairs), DescribeGroups lists all three client ids, and
    with nobody dying every message is consumed exactly once. After they all leave,
    the committed offsets are the partitions' end offsets."""
    node = node_factory(*GROUP_ARGS)
    topic, P, group = "mixed", 6, "g-mixed"
    create_topic(cli, node, topic, P)
    acked = produce_known(node.bootstrap, topic, P, 30, prefix="a")
    t0 = time.monotonic()
    ms = [members("rdkafka", node.bootstrap, group, topic, client="confluent"),
          members("kafkapython", node.bootstrap, group, topic, client="kafka-python"),
          members("aiokafka", node.bootstrap, group, topic, client="aiokafka")]
    took = wait_split(ms, range(P), 90, "the three clients' assignment", sizes=[2, 2, 2]) - t0
    shapes = sorted(tuple(sorted(m.assignment())) for m in ms)
    print(f"three clients own {[(m.name, sorted(m.assignment())) for m in ms]} {took:.2f}s after starting")
    assert shapes == [(0, 1), (2, 3), (4, 5)], shapes
    admin = admin_client(node.bootstrap)
    desc = describe_group(admin, group)
    assert desc.state == ConsumerGroupState.STABLE, desc.state
    assert desc.partition_assignor == "range", desc.partition_assignor
    assert sorted(m.client_id for m in desc.members) == sorted(m.name for m in ms), desc.members
    described = {d.client_id: {tp.partition for tp in d.assignment.topic_partitions} for d in desc.members}
    assert described == {m.name: m.assignment() for m in ms}, (described, diag(ms))

    acked.update(produce_known(node.bootstrap, topic, P, 30, prefix="a", start=30))
    wait_until(lambda: consumed_all(ms, acked), 60,
               lambda: f"all {len(acked)} messages consumed" + diag(ms))
    by = check_consumed(ms, acked)
    twice = {k: v for k, v in by.items() if len(v) > 1}
    assert not twice, f"consumed more than once: {sorted(twice.items())[:10]}" + diag(ms)
    per_member = {m.name: Counter(p for p, _o, _v in m.msgs()) for m in ms}
    print(f"messages per member and partition: {per_member}")
    for m in ms:
        m.terminate()
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=30)
    got = {tp.partition: tp.offset for tp in res.topic_partitions if tp.topic == topic}
    assert got == {p: 60 for p in range(P)}, f"committed offsets after everyone left: {got}"


# ---------------------------------------------------------------------------
# 3. Committed offsets survive a node restart


def offset_fetch(port, group, topic, partitions, timeout_s=30):
    """OffsetFetch v5 -> {partition: offset}, retried while the coordinator loads."""
    last = []

    def ask():
        try:
            err, parts = raw(port, kw.offset_fetch_v5(5, group, {topic: list(partitions)}),
                             kw.parse_offset_fetch_v5, timeout=5)
        except (OSError, TimeoutError, AssertionError) as e:
            last.append(repr(e))
            return None
        last.append((err, parts))
        if err in (kw.COORDINATOR_LOAD_IN_PROGRESS, kw.COORDINATOR_NOT_AVAILABLE, kw.NOT_COORDINATOR):
            return None
        assert err == 0, f"OffsetFetch answered error {err}"
        bad = {k: e for k, (_o, e) in parts.items() if e != 0}
        if any(e in (kw.COORDINATOR_LOAD_IN_PROGRESS, kw.COORDINATOR_NOT_AVAILABLE) for e in bad.values()):
            return None
        assert not bad, f"OffsetFetch partition errors {bad}"
        return {p: o for (t, p), (o, _e) in parts.items() if t == topic}

    return wait_until(ask, timeout_s, lambda: f"OffsetFetch({group}); last answers {last[-3:]}")


def committed_via_client(bootstrap, group, topic, partitions, timeout_s=30):
    c = consumer(bootstrap, **{"group.id": group})
    try:
        last = []

        def ask():
            try:
                res = c.committed([TopicPartition(topic, p) for p in partitions], timeout=5)
            except KafkaException as e:
                last.append(str(e))
                return None
            return {tp.partition: tp.offset for tp in res}

        return wait_until(ask, timeout_s, lambda: f"consumer.committed(); last errors {last[-3:]}")
    finally:
        c.close()


def first_offsets(bootstrap, group, topic, partitions, timeout_s=60):
    """Subscribes a new librdkafka member to `group` and returns, per partition, the
    first message it consumes, as (offset, value)."""
    c = consumer(bootstrap, **{"group.id": group, "partition.assignment.strategy": "range",
                               "session.timeout.ms": 6000})
    first = {}
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while len(first) < len(partitions):
            assert time.monotonic() < deadline, f"first messages seen only for {first}"
            m = c.poll(0.2)
            if m is None:
                continue
            assert m.error() is None, m.error()
            first.setdefault(m.partition(), (m.offset(), m.value().decode()))
    finally:
        c.close()
    return first


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_committed_offsets_survive_node_restart(node_factory, cli, how):
    """A member commits chosen offsets (not the end) for each of 3 partitions; the
    node restarts (SIGTERM, or kill -9); consumer.committed() and a raw OffsetFetch
    return the same offsets, and a member that joins the group again starts each
    partition exactly at its committed offset."""
    node = node_factory(*GROUP_ARGS)
    topic, P, group = f"restart-{how}", 3, f"g-restart-{how}"
    create_topic(cli, node, topic, P)
    produce_known(node.bootstrap, topic, P, 100)
    want = {0: 37, 1: 52, 2: 11}

    c = consumer(node.bootstrap, **{"group.id": group, "partition.assignment.strategy": "range",
                                    "session.timeout.ms": 6000})
    seen = Counter()
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 60
        while any(seen[p] < want[p] for p in range(P)):
            assert time.monotonic() < deadline, f"consumed only {dict(seen)}"
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                seen[m.partition()] += 1
        res = c.commit(offsets=[TopicPartition(topic, p, o) for p, o in want.items()],
                       asynchronous=False)
        assert all(tp.error is None for tp in res), res
        got = {tp.partition: tp.offset for tp in
               c.committed([TopicPartition(topic, p) for p in range(P)], timeout=10)}
        assert got == want, got
    finally:
        c.close()
    assert offset_fetch(node.port, group, topic, range(P)) == want

    t0 = time.monotonic()
    if how == "sigterm":
        node.stop()
    else:
        node.kill9()
    node.start()
    got_raw = offset_fetch(node.port, group, topic, range(P))
    took = time.monotonic() - t0
    got_client = committed_via_client(node.bootstrap, group, topic, range(P))
    print(f"{how}: committed offsets read back {took:.2f}s after the restart began: {got_raw}")
    assert got_raw == want, f"OffsetFetch after the restart: {got_raw}, committed {want}"
    assert got_client == want, f"consumer.committed() after the restart: {got_client}, committed {want}"
    first = first_offsets(node.bootstrap, group, topic, range(P))
    assert first == {p: (o, f"r-{p}-{o}") for p, o in want.items()}, (
        f"first messages after the restart {first}, committed {want}")


# ---------------------------------------------------------------------------
# 4. Session timeout versus LeaveGroup


def test_vanished_member_evicted_after_session_timeout_leaver_at_once(node_factory, cli, members):
    """A member frozen with SIGSTOP (its connections stay open, it just stops
    heartbeating) is evicted after its session timeout, not before, and its
    partitions go to the others; a member that closes cleanly (LeaveGroup) hands its
    partitions over at once, much faster than the session timeout."""
    node = node_factory(*GROUP_ARGS)
    topic, P, group = "evict", 4, "g-evict"
    create_topic(cli, node, topic, P)
    session_ms = 6000
    session_s = session_ms / 1000
    ms = [members(f"e{i}", node.bootstrap, group, topic, session_timeout_ms=session_ms)
          for i in range(3)]
    wait_split(ms, range(P), 60, "the first assignment", sizes=[1, 1, 2])
    admin = admin_client(node.bootstrap)

    frozen, rest = ms[2], ms[:2]
    owned = frozen.assignment()
    t_stop = time.monotonic()
    frozen.sigstop()
    t_moved = wait_split(rest, range(P), session_s + 30,
                         f"the others to take {sorted(owned)} from the frozen {frozen.name}")
    evicted = t_moved - t_stop
    print(f"SIGSTOP of {frozen.name} (owner of {sorted(owned)}): the others own all partitions "
          f"{evicted:.2f}s later (session timeout {session_s:.1f}s)")
    # Its last heartbeat was at most one heartbeat interval before the SIGSTOP.
    assert evicted >= session_s - HEARTBEAT_MS / 1000 - 0.5, (
        f"the frozen member lost its partitions after {evicted:.2f}s, before its session "
        f"timeout of {session_s}s" + diag(ms))
    assert evicted <= session_s + REBALANCE_MARGIN_S, (
        f"eviction took {evicted:.2f}s (session timeout {session_s}s)" + diag(ms))
    desc = describe_group(admin, group)
    assert sorted(d.client_id for d in desc.members) == ["e0", "e1"], desc.members
    frozen.kill9()

    leaver, stayer = rest[1], rest[0]
    t_term = time.monotonic()
    leaver.terminate()
    t_moved = wait_split([stayer], range(P), session_s + 30,
                         f"{stayer.name} to take everything after {leaver.name} left")
    handed = t_moved - t_term
    print(f"clean close of {leaver.name}: {stayer.name} owns all partitions {handed:.2f}s after SIGTERM")
    assert handed < session_s / 2, (
        f"after a LeaveGroup the rebalance took {handed:.2f}s; the session timeout is "
        f"{session_s}s, so the node apparently waited for the session to expire" + diag(ms))
    desc = describe_group(admin, group)
    assert [d.client_id for d in desc.members] == ["e0"], desc.members
    stayer.terminate()


# ---------------------------------------------------------------------------
# 5. Static membership


def test_static_member_restart_keeps_partitions_without_rebalance(node_factory, cli, members):
    """Three members with group.instance.id. One is killed (-9) and started again
    with the same instance id well within its session timeout: it gets the same
    partitions back, and the other two see no rebalance at all (no rebalance
    callback, same assignment) for longer than the session timeout after the kill,
    while all three keep consuming. DescribeGroups shows the three instance ids."""
    node = node_factory(*GROUP_ARGS)
    topic, P, group = "static", 6, "g-static"
    create_topic(cli, node, topic, P)
    session_ms = 10000
    session_s = session_ms / 1000

    def start(i):
        return members(f"s{i}", node.bootstrap, group, topic, instance_id=f"inst-{i}",
                       session_timeout_ms=session_ms)

    ms = [start(i) for i in range(3)]
    wait_split(ms, range(P), 60, "the first assignment", sizes=[2, 2, 2])
    before = {m.name: m.assignment() for m in ms}
    admin = admin_client(node.bootstrap)
    desc = describe_group(admin, group)
    assert sorted(d.group_instance_id for d in desc.members) == ["inst-0", "inst-1", "inst-2"], desc.members
    old_member_id = {d.group_instance_id: d.member_id for d in desc.members}["inst-1"]

    victim, others = ms[1], [ms[0], ms[2]]
    t_kill = time.monotonic()
    victim.kill9()
    back = start(1)
    wait_until(lambda: back.assignment() == before["s1"], session_s - 1,
               lambda: f"the restarted static member to get {sorted(before['s1'])} back within "
               f"its session timeout" + diag(ms + [back]))
    took = back.last_rebalance_t() - t_kill
    print(f"static member inst-1 killed and restarted: it owns {sorted(back.assignment())} again "
          f"{took:.2f}s after the kill")

    # The others must see nothing until well past the moment the old incarnation's
    # session would have expired (had the node not replaced it), and everyone keeps
    # consuming meanwhile.
    p = producer(node.bootstrap)
    quiet_until = t_kill + session_s + 3
    sent = 0
    while time.monotonic() < quiet_until:
        for q in range(P):
            produce(p, topic, value=b"static-%d" % sent, partition=q)
        sent += 1
        p.poll(0.3)
        for m in others:
            late = [e for e in m.evs("assigned", "revoked", "lost") if e["t"] > t_kill]
            assert not late, (f"{m.name} saw a rebalance after the static member's restart: {late}"
                              + diag(ms + [back]))
        assert [e["ev"] for e in back.evs("assigned", "revoked", "lost")] == ["assigned"], (
            "the restarted static member was rebalanced" + diag(ms + [back]))
    assert p.flush(30) == 0
    for m in others:
        assert m.assignment() == before[m.name], (m.name, m.assignment(), before[m.name])
    # Each of the three consumed what was produced to its partitions during the window.
    for m in others + [back]:
        wait_until(lambda m=m: {q for q, _o, v in m.msgs() if v.startswith("static-")} == m.assignment(),
                   30, lambda m=m: f"{m.name} to consume from each of its partitions" + diag(ms + [back]))
    desc = describe_group(admin, group)
    assert desc.state == ConsumerGroupState.STABLE, desc.state
    by_inst = {d.group_instance_id: d for d in desc.members}
    assert sorted(by_inst) == ["inst-0", "inst-1", "inst-2"], desc.members
    assert by_inst["inst-1"].member_id != old_member_id, "the restarted member kept its old member id"
    assert {tp.partition for tp in by_inst["inst-1"].assignment.topic_partitions} == before["s1"]
    for m in others + [back]:
        m.terminate()


# ---------------------------------------------------------------------------
# 6. Bad input on the wire

# The API ranges the coordinator must advertise: {api key: (min, max)}.
GROUP_APIS = {
    kw.API_FIND_COORDINATOR: (0, 4), kw.API_JOIN_GROUP: (0, 9), kw.API_SYNC_GROUP: (0, 5),
    kw.API_HEARTBEAT: (0, 4), kw.API_LEAVE_GROUP: (0, 5), kw.API_OFFSET_COMMIT: (2, 9),
    kw.API_OFFSET_FETCH: (1, 9), kw.API_LIST_GROUPS: (0, 5), kw.API_DESCRIBE_GROUPS: (0, 5),
    kw.API_DELETE_GROUPS: (0, 2), kw.API_OFFSET_DELETE: (0, 0),
}


def test_group_protocol_errors_on_the_wire(node_factory, cli):
    """Raw requests with exact error codes: JoinGroup with a session timeout out of
    range (26); JoinGroup v4 and v5 with an empty member id (79, with a member id to use);
    Heartbeat, SyncGroup and OffsetCommit with a wrong generation (22) or an unknown
    member id (25); a commit for a partition outside the member's assignment (22);
    a JoinGroup with an assignor the group does not use (23); a static member
    replaced by a new incarnation is fenced (82); LeaveGroup. Garbage JoinGroup
    bodies get an error or a clean close, the node lives, and a real consumer then
    uses the same group, starting where the raw member committed."""
    node = node_factory(*GROUP_ARGS)
    with kw.connect(node.port) as s:
        s.sendall(kw.api_versions_v0(1))
        _corr, err, keys = kw.parse_api_versions_v0(kw.read_response(s))
    assert err == 0
    for key, (lo, hi) in GROUP_APIS.items():
        assert key in keys and keys[key][0] <= lo and keys[key][1] >= hi, (
            f"ApiVersions: api {key} advertised as {keys.get(key)}, expected at least {lo}-{hi}")

    topic, group = "raw", "g-raw"
    create_topic(cli, node, topic, 2)
    produce_known(node.bootstrap, topic, 2, 20)
    fc = find_coordinator(node.port, group)
    assert (fc["node_id"], fc["host"], fc["port"]) == (broker_id(node.port), "127.0.0.1", node.port), fc

    protos = [("range", kw.consumer_subscription([topic]))]

    def join(version, member_id="", session_ms=30000, instance_id=None, protocols=protos, grp=group):
        return raw(node.port, kw.join_group(11, version, grp, session_ms, 5000, member_id,
                                            instance_id, "consumer", protocols),
                   lambda b: kw.parse_join_group(b, version))

    def heartbeat(gen, mid, instance_id=None, grp=group):
        return raw(node.port, kw.heartbeat_v3(12, grp, gen, mid, instance_id),
                   kw.parse_heartbeat_v3)["error"]

    def sync(gen, mid, assignments=(), instance_id=None, grp=group):
        return raw(node.port, kw.sync_group_v3(14, grp, gen, mid, instance_id, assignments),
                   kw.parse_sync_group_v3)

    def commit(gen, mid, offsets, instance_id=None, grp=group):
        return raw(node.port, kw.offset_commit_v7(8, grp, gen, mid, {topic: offsets}, instance_id),
                   kw.parse_offset_commit_v7)

    # Session timeouts outside [min, max].
    for bad in (MIN_SESSION_MS - 1, 10, MAX_SESSION_MS + 1):
        r = join(5, session_ms=bad)
        assert r["error"] == kw.INVALID_SESSION_TIMEOUT, f"session timeout {bad} ms: {r}"

    # JoinGroup v4+ without a member id: MEMBER_ID_REQUIRED and the id to use.
    r = join(4)
    assert r["error"] == kw.MEMBER_ID_REQUIRED, r
    mid = r["member_id"]
    assert mid, f"MEMBER_ID_REQUIRED without a member id: {r}"
    # (Its own group: the pending member it leaves behind would hold up a rebalance.)
    r5 = join(5, session_ms=5000, grp="g-raw-v5")
    assert r5["error"] == kw.MEMBER_ID_REQUIRED and r5["member_id"], r5
    t0 = time.monotonic()
    r = join(4, member_id=mid)
    print(f"raw JoinGroup completed in {time.monotonic() - t0:.2f}s: generation {r['generation']}")
    assert r["error"] == 0, r
    gen = r["generation"]
    assert gen >= 1 and r["leader"] == mid and r["member_id"] == mid and r["protocol_name"] == "range", r
    assert [m["member_id"] for m in r["members"]] == [mid], r
    assert r["members"][0]["metadata"] == protos[0][1], r

    # SyncGroup: wrong generation, unknown member, then the real one.
    mine = kw.consumer_assignment({topic: [0]})
    assert sync(gen + 1, mid, [(mid, mine)])["error"] == kw.ILLEGAL_GENERATION
    assert sync(gen, "nobody-1", [("nobody-1", mine)])["error"] == kw.UNKNOWN_MEMBER_ID
    r = sync(gen, mid, [(mid, mine)])
    assert r["error"] == 0 and kw.parse_consumer_assignment(r["assignment"]) == {topic: [0]}, r

    # Heartbeat.
    assert heartbeat(gen, mid) == 0
    assert heartbeat(gen + 1, mid) == kw.ILLEGAL_GENERATION
    assert heartbeat(gen - 1, mid) == kw.ILLEGAL_GENERATION
    assert heartbeat(gen, "nobody-2") == kw.UNKNOWN_MEMBER_ID
    assert heartbeat(gen, "") == kw.UNKNOWN_MEMBER_ID
    assert heartbeat(1, "nobody-3", grp="g-no-such-group") == kw.UNKNOWN_MEMBER_ID

    # OffsetCommit: wrong generation, unknown member, a partition not assigned, then OK.
    assert commit(gen + 1, mid, {0: 5}) == {(topic, 0): kw.ILLEGAL_GENERATION}
    assert commit(gen, "nobody-4", {0: 5}) == {(topic, 0): kw.UNKNOWN_MEMBER_ID}
    assert commit(gen, mid, {1: 5}) == {(topic, 1): kw.ILLEGAL_GENERATION}, (
        "a commit for a partition outside the member's assignment")
    assert commit(gen, mid, {0: 7}) == {(topic, 0): 0}
    err, parts = raw(node.port, kw.offset_fetch_v5(9, group, {topic: [0, 1]}), kw.parse_offset_fetch_v5)
    assert (err, parts) == (0, {(topic, 0): (7, 0), (topic, 1): (-1, 0)}), (err, parts)

    # A member asking for an assignor nobody in the group uses.
    r = join(5, protocols=[("no-such-assignor", kw.consumer_subscription([topic]))])
    assert r["error"] == kw.INCONSISTENT_GROUP_PROTOCOL, r
    assert heartbeat(gen, mid) == 0, "the refused joins disturbed the group"

    # LeaveGroup: an unknown member is refused per member; the real one leaves.
    r = raw(node.port, kw.leave_group_v3(13, group, [("nobody-5", None)]), kw.parse_leave_group_v3)
    assert r["members"] == [{"member_id": "nobody-5", "instance_id": None,
                             "error": kw.UNKNOWN_MEMBER_ID}], r
    r = raw(node.port, kw.leave_group_v3(13, group, [(mid, None)]), kw.parse_leave_group_v3)
    assert r["error"] == 0 and r["members"] == [{"member_id": mid, "instance_id": None, "error": 0}], r
    assert heartbeat(gen, mid) == kw.UNKNOWN_MEMBER_ID

    # Static membership: a second incarnation of instance "i1" fences the first.
    sg = "g-raw-static"
    r1 = join(5, instance_id="i1", grp=sg)
    assert r1["error"] == 0 and r1["member_id"], r1
    m1, g1 = r1["member_id"], r1["generation"]
    r = sync(g1, m1, [(m1, kw.consumer_assignment({topic: [0, 1]}))], instance_id="i1", grp=sg)
    assert r["error"] == 0, r
    assert heartbeat(g1, m1, "i1", grp=sg) == 0
    r2 = join(5, instance_id="i1", grp=sg)
    assert r2["error"] == 0 and r2["member_id"] and r2["member_id"] != m1, r2
    m2, g2 = r2["member_id"], r2["generation"]
    assert heartbeat(g2, m1, "i1", grp=sg) == kw.FENCED_INSTANCE_ID
    assert commit(g2, m1, {0: 3}, instance_id="i1", grp=sg) == {(topic, 0): kw.FENCED_INSTANCE_ID}
    if not r2["members"]:  # not told to be the leader: the old assignment stands
        r = sync(g2, m2, instance_id="i1", grp=sg)
    else:
        r = sync(g2, m2, [(m2, kw.consumer_assignment({topic: [0, 1]}))], instance_id="i1", grp=sg)
    assert r["error"] == 0 and kw.parse_consumer_assignment(r["assignment"]) == {topic: [0, 1]}, r
    assert heartbeat(g2, m2, "i1", grp=sg) == 0
    r = raw(node.port, kw.leave_group_v3(13, sg, [("", "i1")]), kw.parse_leave_group_v3)
    assert r["error"] == 0 and [m["error"] for m in r["members"]] == [0], r

    # Garbage JoinGroup bodies: an error response or a close, promptly; the node lives.
    hdr = kw.header_v1(kw.API_JOIN_GROUP, 5, 99)
    garbage = {
        "empty body": b"",
        "random bytes": bytes(range(256)) * 3,
        "truncated": kw.join_group(99, 5, group, 30000, 5000, "", None, "consumer", protos)[4:-7],
        "negative string length": kw.string(group) + b"\x00\x00\x75\x30\x00\x00\x13\x88\xff\xfb",
        "huge protocol count": (kw.string(group) + b"\x00\x00\x75\x30\x00\x00\x13\x88" + kw.string("")
                                + kw.string(None) + kw.string("consumer") + b"\x7f\xff\xff\xff"),
        "session timeout only": kw.string(group) + b"\x00\x00",
    }
    for what, body in garbage.items():
        payload = kw.frame(body if what == "truncated" else hdr + body)
        with kw.connect(node.port) as s:
            s.sendall(payload)
            try:
                resp = kw.read_response(s, timeout=5)
            except TimeoutError:
                raise AssertionError(f"garbage JoinGroup ({what}): neither an answer nor a close in 5 s")
        if resp is not None:
            (corr,) = struct.unpack_from(">i", resp, 0)
            assert corr == 99, f"garbage JoinGroup ({what}): answer with correlation id {corr}"
            # throttle_time_ms, then the error code
            (code,) = struct.unpack_from(">h", resp, 8)
            assert code != 0, f"garbage JoinGroup ({what}) was answered without an error: {resp.hex()}"
        print(f"garbage JoinGroup ({what}): {'closed' if resp is None else f'error {code}'}")
        assert node.alive(), f"the node died on garbage JoinGroup ({what})"

    # A real consumer in the same group: partition 0 from the raw member's commit.
    first = first_offsets(node.bootstrap, group, topic, [0, 1])
    assert first == {0: (7, "r-0-7"), 1: (0, "r-1-0")}, first
    assert committed_via_client(node.bootstrap, group, topic, [0, 1]) == {0: 7, 1: OFFSET_INVALID}


# ---------------------------------------------------------------------------
# 7. Coordinator failover in a 3-node cluster


@pytest.fixture
def cluster3_groups(request, binaries):
    """cluster_util's three-node cluster, with the group settings of this file."""
    yield from cu._run_cluster(request, binaries, GROUP_ARGS)


def test_offsets_survive_coordinator_kill9(cluster3_groups):
    """Offsets committed through the group's coordinator survive kill -9 of that node:
    FindCoordinator names a live node within a few seconds, the committed offsets
    are read back from it, and a member joining the group again resumes at them.
    A node that is not the coordinator answers NOT_COORDINATOR."""
    c = cluster3_groups
    topic, P, group = "failover", 4, "g-failover"
    c.create_topic(topic, P)
    c.wait_in_sync(topic, P)
    acked = produce_known(c.bootstrap, topic, P, 50, exact=False)
    want = {0: 13, 1: 29, 2: 41, 3: 7}
    assert all((p, o) in acked for p, o in want.items()), sorted(acked)[:10]

    t0 = time.monotonic()
    fc = find_coordinator(c.nodes[0].port, group, timeout_s=60)
    print(f"coordinator of {group}: node {fc['node_id']} ({time.monotonic() - t0:.2f}s to find)")
    coord = c.node(fc["node_id"])
    assert fc["port"] == coord.port, fc
    # The coordinator leads the group's partition of __consumer_offsets, which is
    # replicated like any other topic.
    n_offsets = int(GROUP_ARGS[GROUP_ARGS.index("--offsets-topic-partitions") + 1])
    op = offsets_partition(group, n_offsets)
    parts = c.wait_in_sync("__consumer_offsets", n_offsets, timeout_s=30)
    assert parts[op].leader == coord.node_id, (
        f"coordinator {coord.node_id}, but partition {op} of __consumer_offsets is led by {parts[op]}")
    for n in c.nodes:
        assert find_coordinator(n.port, group)["node_id"] == coord.node_id, f"node {n.node_id} disagrees"
    other = next(n for n in c.nodes if n is not coord)
    r = raw(other.port, kw.heartbeat_v3(12, group, 1, "someone"), kw.parse_heartbeat_v3)
    assert r["error"] == kw.NOT_COORDINATOR, f"Heartbeat to node {other.node_id}, not the coordinator: {r}"

    cons = consumer(c.bootstrap, **{"group.id": group, "partition.assignment.strategy": "range",
                                    "session.timeout.ms": 6000})
    try:
        cons.subscribe([topic])
        got = set()
        deadline = time.monotonic() + 60
        while len(got) < P:
            assert time.monotonic() < deadline, f"no messages from partitions {set(range(P)) - got}"
            m = cons.poll(0.2)
            if m is not None and m.error() is None:
                got.add(m.partition())
        res = cons.commit(offsets=[TopicPartition(topic, p, o) for p, o in want.items()],
                          asynchronous=False)
        assert all(tp.error is None for tp in res), res
    finally:
        cons.close()
    assert offset_fetch(coord.port, group, topic, range(P)) == want

    t_kill = time.monotonic()
    coord.kill9()
    survivors = [n for n in c.nodes if n is not coord]
    found = {}

    def moved():
        for n in survivors:
            try:
                r = raw(n.port, kw.find_coordinator_v1(3, group), kw.parse_find_coordinator_v1, timeout=2)
            except (OSError, TimeoutError, AssertionError):
                return False
            found[n.node_id] = (r["error"], r["node_id"])
            if r["error"] != 0 or r["node_id"] == coord.node_id or r["node_id"] not in {
                    s.node_id for s in survivors}:
                return False
        return len({v for v in found.values()}) == 1

    wait_until(moved, 30, lambda: f"FindCoordinator on the survivors to name a live node: {found}",
               interval_s=0.05)
    took = time.monotonic() - t_kill
    new = c.node(next(iter(found.values()))[1])
    print(f"kill -9 of coordinator node {coord.node_id}: node {new.node_id} named by both survivors "
          f"after {took:.2f}s")
    assert took < 15, f"FindCoordinator took {took:.2f}s to name a live node"
    parts = c.partitions("__consumer_offsets", via=new)
    assert parts[op].leader == new.node_id, (
        f"new coordinator {new.node_id}, but partition {op} of __consumer_offsets is led by {parts[op]}")
    got = offset_fetch(new.port, group, topic, range(P), timeout_s=30)
    print(f"committed offsets read from node {new.node_id} {time.monotonic() - t_kill:.2f}s after the kill")
    assert got == want, f"offsets after the failover {got}, committed {want}"
    first = first_offsets(c.live_bootstrap(), group, topic, range(P))
    assert first == {p: (o, acked[(p, o)]) for p, o in want.items()}, (
        f"first messages after the failover {first}, committed {want}")
    # The killed node comes back; everyone agrees on one live coordinator.
    coord.start()
    wait_until(lambda: len({find_coordinator(n.port, group)["node_id"] for n in c.nodes}) == 1, 30,
               "all three nodes to agree on the coordinator")


# ---------------------------------------------------------------------------
# 8. Admin API


def test_admin_list_describe_delete_groups(node_factory, cli, members):
    """Through confluent-kafka's AdminClient: list_consumer_groups (with and without
    a state filter), describe_consumer_groups (state, assignor, members and their
    assignments), delete_consumer_groups refused with NON_EMPTY_GROUP while members
    exist, list/alter_consumer_group_offsets; OffsetDelete through kafka-python's
    admin (GROUP_SUBSCRIBED_TO_TOPIC while subscribed, then accepted). When the
    members have left: EMPTY, delete works, the group and its offsets are gone, a
    second delete answers GROUP_ID_NOT_FOUND."""
    from kafka import TopicPartition as KTP
    from kafka.admin import KafkaAdminClient
    from kafka.errors import NoError

    node = node_factory(*GROUP_ARGS)
    topic, P, group = "adm", 4, "g-adm"
    create_topic(cli, node, topic, P)
    produce_known(node.bootstrap, topic, P, 10)
    ms = [members(f"a{i}", node.bootstrap, group, topic, commit_every=1) for i in range(2)]
    wait_split(ms, range(P), 60, "the assignment", sizes=[2, 2])
    wait_until(lambda: all(
        {p: o for p, o in m.committed().items() if p in m.assignment()} == {p: 10 for p in m.assignment()}
        for m in ms), 30, lambda: "both members to commit everything" + diag(ms))
    admin = admin_client(node.bootstrap)
    me = broker_id(node.port)

    listed = admin.list_consumer_groups().result(timeout=30)
    by_id = {g.group_id: g for g in listed.valid}
    assert group in by_id, f"list_consumer_groups: {by_id} (errors {listed.errors})"
    assert by_id[group].state == ConsumerGroupState.STABLE and not by_id[group].is_simple_consumer_group
    stable = admin.list_consumer_groups(states={ConsumerGroupState.STABLE}).result(timeout=30)
    empty = admin.list_consumer_groups(states={ConsumerGroupState.EMPTY}).result(timeout=30)
    assert group in {g.group_id for g in stable.valid} and group not in {g.group_id for g in empty.valid}

    desc = describe_group(admin, group)
    assert desc.state == ConsumerGroupState.STABLE and desc.partition_assignor == "range", desc
    assert desc.coordinator.id == me, desc.coordinator
    assigned = {d.client_id: {(tp.topic, tp.partition) for tp in d.assignment.topic_partitions}
                for d in desc.members}
    assert assigned == {m.name: {(topic, p) for p in m.assignment()} for m in ms}, (assigned, diag(ms))

    with pytest.raises(KafkaException) as e:
        admin.delete_consumer_groups([group])[group].result(timeout=30)
    assert e.value.args[0].code() == KafkaError.NON_EMPTY_GROUP, e.value

    offsets = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)])[group].result(timeout=30)
    assert {tp.partition: tp.offset for tp in offsets.topic_partitions} == {p: 10 for p in range(P)}

    kadmin = KafkaAdminClient(bootstrap_servers=node.bootstrap, request_timeout_ms=15_000)
    try:
        res = kadmin.delete_group_offsets(group, [KTP(topic, 0)])
        assert {tp.partition: err.errno for tp, err in res.items()} == {0: kw.GROUP_SUBSCRIBED_TO_TOPIC}, res

        for m in ms:
            m.terminate()
        wait_until(lambda: describe_group(admin, group).state == ConsumerGroupState.EMPTY, 10,
                   lambda: f"the group to be EMPTY after both left: {describe_group(admin, group)}")
        assert describe_group(admin, group).members == []
        empty = admin.list_consumer_groups(states={ConsumerGroupState.EMPTY}).result(timeout=30)
        assert group in {g.group_id for g in empty.valid}, empty.valid

        res = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 5)])])[group].result(timeout=30)
        assert all(tp.error is None for tp in res.topic_partitions), res.topic_partitions
        res = kadmin.delete_group_offsets(group, [KTP(topic, 3)])
        assert res == {KTP(topic, 3): NoError}, res
        offsets = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)])[group].result(timeout=30)
        got = {tp.partition: tp.offset for tp in offsets.topic_partitions if tp.offset >= 0}
        assert got == {0: 3, 1: 5, 2: 10}, f"offsets after alter and OffsetDelete: {got}"
    finally:
        kadmin.close()

    admin.delete_consumer_groups([group])[group].result(timeout=30)
    listed = admin.list_consumer_groups().result(timeout=30)
    assert group not in {g.group_id for g in listed.valid}, listed.valid
    try:
        d = describe_group(admin, group)
        assert d.state == ConsumerGroupState.DEAD and not d.members, d
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, e
    offsets = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(P)])])[group].result(timeout=30)
    assert {tp.partition: tp.offset for tp in offsets.topic_partitions} == {
        p: OFFSET_INVALID for p in range(P)}, offsets.topic_partitions
    with pytest.raises(KafkaException) as e:
        admin.delete_consumer_groups([group])[group].result(timeout=30)
    assert e.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, e.value
