"""`strand dev-cluster up|down`: three real strand-node processes on 127.0.0.1 that
replicate to each other (QUIC with TLS), used through librdkafka (confluent-kafka),
kcat and the CLI, then stopped; and a stopped cluster restarted with its data.

Each test runs in its own directory under target/; whatever happens, the teardown
runs `down` so that no node outlives the test. The nodes' logs are attached to the
report of a failing test (through conftest's `strand_nodes`)."""

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from helpers import consumer, produce, producer, wait_until

TARGET = Path(__file__).resolve().parents[2] / "target"
UP_TIMEOUT = "60s"  # three debug-build nodes on a small machine
LOG_TAIL_LINES = 150


class DevNodeLog:
    """What conftest's failure report needs of a node: its log."""

    def __init__(self, path):
        self.log_path = path

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=LOG_TAIL_LINES):
        text = [l for l in self.log_text().splitlines() if not l.startswith("  ")]
        return "\n".join(text[-lines:])


@pytest.fixture
def dev(request, binaries):
    """run(*args) runs `strand` (the copy beside the copied strand-node, which is how
    `up` finds the node); dir is this test's cluster directory."""
    root = TARGET / f"it-dev-cluster-{uuid.uuid4().hex[:8]}"
    request.node.strand_nodes = [DevNodeLog(root / f"node-{i}" / "node.log") for i in (1, 2, 3)]

    def run(*args, timeout=180):
        return subprocess.run([str(binaries["strand"]), *map(str, args)],
                              capture_output=True, text=True, timeout=timeout)

    run.dir = root
    yield run
    if (root / "cluster.json").exists():
        r = run("dev-cluster", "down", "--dir", root, "--timeout", "10s")
        assert r.returncode == 0, f"teardown down failed: {r.stdout}{r.stderr}"
    failed = any(getattr(request.node, f"rep_{w}", None) is not None
                 and getattr(request.node, f"rep_{w}").failed for w in ("setup", "call"))
    if not failed:
        shutil.rmtree(root, ignore_errors=True)


def alive(pid):
    """A process that exists and is not a zombie (the nodes are not our children: a
    node that exited may linger as a zombie until whoever adopted it reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def cluster_file(dev):
    return json.loads((dev.dir / "cluster.json").read_text())


def up(dev, *args):
    r = dev("dev-cluster", "up", "--dir", dev.dir, "--timeout", UP_TIMEOUT, *args)
    assert r.returncode == 0, f"up failed:\n{r.stdout}{r.stderr}"
    return r


def down(dev):
    r = dev("dev-cluster", "down", "--dir", dev.dir)
    assert r.returncode == 0, f"down failed:\n{r.stdout}{r.stderr}"
    return r


def brokers_by_id(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})
    meta = admin.list_topics(timeout=10)
    return {b.id: (b.host, b.port) for b in meta.brokers.values()}, meta


def wait_replicated(bootstrap, topic, partitions, rf, timeout_s=60):
    """Every partition has a leader and `rf` replicas, all in sync."""

    def ready():
        admin = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})
        meta = admin.list_topics(topic, timeout=10)
        t = meta.topics.get(topic)
        if t is None or t.error is not None or len(t.partitions) != partitions:
            return None
        ok = all(p.leader >= 0 and len(p.replicas) == rf and sorted(p.isrs) == sorted(p.replicas)
                 for p in t.partitions.values())
        return t if ok else None

    return wait_until(ready, timeout_s, f"{topic}: {partitions} partitions with {rf} in-sync replicas")


def produce_all(bootstrap, topic, values):
    """acks=all with idempotence (helpers.producer); every record must be acknowledged."""
    errors = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)

    p = producer(bootstrap)
    for i, v in enumerate(values):
        produce(p, topic, key=b"k%d" % i, value=v, on_delivery=on_delivery)
    assert p.flush(60) == 0, "records left unacknowledged"
    assert errors == [], errors[:5]


def consume_all(bootstrap, topic, partitions, count, timeout_s=60):
    """Every record of the topic from the beginning, until `count` came and a moment
    passed without more. Counted by records rather than by end offsets: entries the
    replication log adds itself (a new leader's first entry) may take offsets that
    carry no record for a consumer."""
    c = consumer(bootstrap)
    try:
        c.assign([TopicPartition(topic, q, OFFSET_BEGINNING) for q in range(partitions)])
        out = []
        deadline = time.monotonic() + timeout_s
        quiet_until = None
        while quiet_until is None or time.monotonic() < quiet_until:
            assert time.monotonic() < deadline, f"consumed {len(out)} of {count} records"
            for m in c.consume(num_messages=1000, timeout=0.2):
                err = m.error()
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, f"consumer error: {err}"
                    continue
                out.append(m.value())
            if quiet_until is None and len(out) >= count:
                quiet_until = time.monotonic() + 1.0
        return out
    finally:
        c.close()


def test_up_serves_a_replicated_cluster_and_down_stops_it(dev):
    r = up(dev, "--nodes", 3)

    doc = cluster_file(dev)
    nodes = doc["nodes"]
    assert [n["id"] for n in nodes] == [1, 2, 3], doc
    assert doc["stopped"] is False, doc
    pids = [n["pid"] for n in nodes]
    assert all(alive(pid) for pid in pids), doc
    kafka = [n["kafka_addr"] for n in nodes]
    replication = [n["replication_addr"] for n in nodes]
    assert len(set(kafka + replication)) == 6, doc
    assert all(a.startswith("127.0.0.1:") for a in kafka + replication), doc
    bootstrap = doc["bootstrap"]
    assert bootstrap == ",".join(kafka), doc
    assert f"bootstrap: {bootstrap}" in r.stdout, r.stdout
    assert f"dev-cluster down --dir {dev.dir}" in r.stdout, r.stdout

    # Every node knows all three brokers, at the addresses in cluster.json.
    expected = {n["id"]: ("127.0.0.1", int(n["kafka_addr"].rsplit(":", 1)[1])) for n in nodes}
    for addr in kafka:
        brokers, meta = brokers_by_id(addr)
        assert brokers == expected, (addr, brokers)
        assert meta.controller_id in expected, (addr, meta.controller_id)
    k = subprocess.run(["kcat", "-b", bootstrap, "-X", "broker.address.family=v4", "-L"],
                       capture_output=True, text=True, timeout=60)
    assert k.returncode == 0, k.stderr
    assert "3 brokers:" in k.stdout, k.stdout

    # A topic with three replicas: what acks=all acknowledged reads back.
    topic, partitions = "dc-orders", 3
    c = dev("--bootstrap", bootstrap, "topic", "create", topic,
            "--partitions", partitions, "--replication-factor", 3)
    assert c.returncode == 0, c.stdout + c.stderr
    wait_replicated(bootstrap, topic, partitions, 3)
    values = [b"order-%05d" % i for i in range(600)]
    produce_all(bootstrap, topic, values)
    assert sorted(consume_all(bootstrap, topic, partitions, len(values))) == values

    s = dev("--bootstrap", bootstrap, "cluster", "status", "--output", "json")
    assert s.returncode == 0, s.stdout + s.stderr
    status = json.loads(s.stdout)
    assert sorted(b["id"] for b in status["brokers"]) == [1, 2, 3], status
    [t] = [t for t in status["topics"] if t["name"] == topic]
    assert all(sorted(p["replicas"]) == [1, 2, 3] for p in t["partitions"]), t
    # At least one offset per record (a leader's own first entry may take one more).
    assert sum(p["end_offset"] for p in t["partitions"]) >= len(values), t

    d = down(dev)
    assert d.stdout.count("stopped in") == 3, d.stdout
    assert not any(alive(pid) for pid in pids), d.stdout
    after = cluster_file(dev)
    assert after["stopped"] is True, after
    assert all(n["pid"] is None for n in after["nodes"]), after
    # The data stays.
    assert all((dev.dir / f"node-{i}" / "data").is_dir() for i in (1, 2, 3))

    again = down(dev)
    assert "already stopped" in again.stdout, again.stdout
    assert cluster_file(dev) == after


def test_a_running_cluster_is_not_started_twice_and_a_stopped_one_restarts_with_its_data(dev):
    up(dev)  # three nodes by default
    first = cluster_file(dev)
    assert len(first["nodes"]) == 3, first
    bootstrap = first["bootstrap"]
    topic = "dc-keep"
    c = dev("--bootstrap", bootstrap, "topic", "create", topic,
            "--partitions", 2, "--replication-factor", 3)
    assert c.returncode == 0, c.stdout + c.stderr
    wait_replicated(bootstrap, topic, 2, 3)
    values = [b"keep-%03d" % i for i in range(100)]
    produce_all(bootstrap, topic, values)

    r = dev("dev-cluster", "up", "--dir", dev.dir)
    assert r.returncode == 1, r
    assert "already running" in r.stderr and f"dev-cluster down --dir {dev.dir}" in r.stderr, r.stderr
    assert cluster_file(dev) == first

    old_pids = [n["pid"] for n in first["nodes"]]
    down(dev)
    assert not any(alive(pid) for pid in old_pids)

    # A different shape is refused rather than ignored.
    r = dev("dev-cluster", "up", "--dir", dev.dir, "--nodes", 5)
    assert r.returncode == 1, r
    assert "--nodes 5" in r.stderr, r.stderr

    up(dev)
    second = cluster_file(dev)
    strip = lambda doc: [{k: v for k, v in n.items() if k != "pid"} for n in doc["nodes"]]
    assert strip(second) == strip(first), (first, second)
    assert second["bootstrap"] == bootstrap
    assert all(alive(n["pid"]) for n in second["nodes"]), second
    wait_replicated(bootstrap, topic, 2, 3)
    assert sorted(consume_all(bootstrap, topic, 2, len(values))) == values
    down(dev)


def test_up_and_down_fail_clearly_without_a_node_or_a_cluster(dev, tmp_path):
    r = dev("dev-cluster", "up", "--dir", dev.dir, "--node-binary", tmp_path / "no-such-node")
    assert r.returncode == 1, r
    assert "--node-binary" in r.stderr and "no-such-node" in r.stderr, r.stderr
    assert not dev.dir.exists(), "nothing is made before the node binary is found"

    r = dev("dev-cluster", "down", "--dir", dev.dir)
    assert r.returncode == 1, r
    assert "cluster.json does not exist" in r.stderr, r.stderr
