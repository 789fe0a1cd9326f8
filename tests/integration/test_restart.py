"""Stopping and crashing the node: what was acknowledged stays."""

import os
import threading
import time
from collections import Counter, defaultdict

from confluent_kafka import OFFSET_END, KafkaError, TopicPartition

from helpers import consume_range, consumer, produce, producer, wait_until, watermarks


def topic_list(cli, node):
    r = cli(node, "topic", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].split() == ["NAME", "PARTITIONS"], r.stdout
    return {l.split()[0]: int(l.split()[1]) for l in lines[1:]}


def test_restart_keeps_everything(node, cli):
    """SIGTERM is a clean shutdown (exit 0); after a restart on the same data dir
    the topics, their configs and every acknowledged record are back."""
    topics = {"keep-a": 1, "keep-b": 4, "keep-c": 3}
    for name, parts in topics.items():
        r = cli(node, "topic", "create", name, "--partitions", parts,
                *(["--config", "retention.ms=3600000"] if name == "keep-c" else []))
        assert r.returncode == 0, r.stderr
    acked = {}

    def on_delivery(err, m):
        assert err is None, err
        acked[(m.topic(), m.value())] = (m.partition(), m.offset())

    p = producer(node.bootstrap, **{"compression.type": "snappy"})
    for name in topics:
        for i in range(3000):
            produce(p, name, key=b"k%d" % (i % 50), value=b"%s-%d" % (name.encode(), i),
                    headers=[("i", b"%d" % i)], on_delivery=on_delivery)
    assert p.flush(30) == 0
    assert len(acked) == 3 * 3000
    del p

    def check_all():
        assert topic_list(cli, node) == topics
        md = consumer(node.bootstrap)
        try:
            # Metadata for named topics (the all-topics form has its own test).
            for name, parts in topics.items():
                meta = md.list_topics(name, timeout=10)
                assert meta.topics[name].error is None, meta.topics[name].error
                assert sorted(meta.topics[name].partitions) == list(range(parts))
            for name, parts in topics.items():
                ends = defaultdict(int)
                for (t, _), (part, off) in acked.items():
                    if t == name:
                        ends[part] = max(ends[part], off + 1)
                marks = watermarks(md, name, range(parts))
                assert marks == {q: (0, ends.get(q, 0)) for q in range(parts)}, (name, marks)
                msgs = consume_range(md, name, {q: ends.get(q, 0) for q in range(parts)})
                got = {(name, m.value()): (m.partition(), m.offset()) for m in msgs}
                assert len(msgs) == len(got) == 3000
                assert got == {k: v for k, v in acked.items() if k[0] == name}
        finally:
            md.close()
        r = cli(node, "topic", "describe", "keep-c")
        assert r.returncode == 0, r.stderr
        assert "retention.ms=3600000" in r.stdout, r.stdout

    check_all()
    node.stop()  # asserts exit code 0
    assert not node.alive()
    node.start()
    check_all()
    # And once more, to catch state that only the first recovery gets right.
    node.restart()
    check_all()


ROUNDS = int(os.environ.get("STRAND_IT_SIGTERM_ROUNDS", "6"))


def test_sigterm_with_long_polling_consumer(node, cli):
    """A graceful shutdown must not wait for a Fetch long poll to time out: with
    a consumer parked in Fetch on partitions owned by both shards, SIGTERM must end
    the process promptly (well under the node's 10 s connection drain limit). The
    hang is timing-dependent (most rounds hit it, not all), so this takes up to
    ROUNDS rounds and stops at the first slow one."""
    r = cli(node, "topic", "create", "idle", "--partitions", 8)
    assert r.returncode == 0, r.stderr
    took = []
    for round_ in range(ROUNDS):
        if round_:
            node.start()
        c = consumer(node.bootstrap, **{"fetch.wait.max.ms": 100})
        stop = threading.Event()
        try:
            c.assign([TopicPartition("idle", q, OFFSET_END) for q in range(8)])
            c.consume(10, 0.5)  # now fetching in a loop, each Fetch parked up to 100 ms
            poller = threading.Thread(target=lambda: [c.poll(0.02) for _ in iter(stop.is_set, True)])
            poller.start()
            try:
                time.sleep(0.3 * round_)
                t0 = time.monotonic()
                node.stop(settle=False)
                took.append(round(time.monotonic() - t0, 2))
            finally:
                stop.set()
                poller.join()
        finally:
            c.close()
        if took[-1] >= 5:
            break
    assert max(took) < 5, f"SIGTERM took {took} s with a long-polling consumer connected"


def test_kill9_during_acks_all_produce(node, cli):
    """kill -9 in the middle of an acks=all idempotent produce stream (KIP-98).
    An acknowledgement with acks=all means the records were durable: after the
    restart every acknowledged value is present exactly once, at the partition and
    offset it was acknowledged at. Unacknowledged values may be missing or
    duplicated. The producer retries through the outage and keeps producing."""
    topic = "crash"
    parts = 4
    r = cli(node, "topic", "create", topic, "--partitions", parts)
    assert r.returncode == 0, r.stderr

    lock = threading.Lock()
    acked = {}  # value -> (partition, offset)
    failed = []  # (value, error)
    stop = threading.Event()
    sent = [0]

    def on_delivery(err, m):
        with lock:
            if err is None:
                assert m.value() not in acked, f"{m.value()} acknowledged twice"
                acked[m.value()] = (m.partition(), m.offset())
            else:
                failed.append((m.value(), err))

    p = producer(node.bootstrap, **{
        "linger.ms": 2,
        "retries": 1_000_000,
        "retry.backoff.ms": 50,
        "message.timeout.ms": 120_000,
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 200,
    })

    def run():
        i = 0
        while not stop.is_set():
            produce(p, topic, key=b"k%d" % (i % 101), value=b"m%09d" % i, on_delivery=on_delivery)
            i += 1
            sent[0] = i
            if i % 200 == 0:
                time.sleep(0.002)  # keep the in-flight window moderate
        p.flush(120)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        wait_until(lambda: len(acked) >= 20_000, 60, "20k acknowledgements before the crash")
        node.kill9()
        acked_at_kill = len(acked)
        time.sleep(1.0)  # the producer keeps queueing and retrying while the node is down
        node.start()
        # Liveness: the producer gets through to the restarted node.
        wait_until(lambda: len(acked) >= acked_at_kill + 10_000, 60,
                   "10k more acknowledgements after the restart")
    finally:
        stop.set()
        t.join(150)
    assert not t.is_alive(), "producer did not finish flushing"

    with lock:
        acked_now = dict(acked)
        failures = list(failed)
    # Errors are allowed only for values the node never acknowledged; report them.
    fatal = [e for _, e in failures if e.code() == KafkaError._FATAL]
    print(f"sent {sent[0]}, acked {len(acked_now)} ({acked_at_kill} before kill), "
          f"failed {len(failures)} (fatal {len(fatal)})")
    assert not set(v for v, _ in failures) & set(acked_now)

    c = consumer(node.bootstrap)
    try:
        marks = watermarks(c, topic, range(parts))
        msgs = consume_range(c, topic, {q: marks[q][1] for q in range(parts)}, timeout_s=120)
    finally:
        c.close()
    for q in range(parts):
        offs = [m.offset() for m in msgs if m.partition() == q]
        assert offs == list(range(marks[q][1])), f"partition {q}: offsets not contiguous"
    where = defaultdict(list)
    for m in msgs:
        where[m.value()].append((m.partition(), m.offset()))
    missing = [v for v in acked_now if v not in where]
    assert not missing, f"{len(missing)} acknowledged values lost, e.g. {missing[:5]}"
    twice = {v: where[v] for v in acked_now if len(where[v]) > 1}
    assert not twice, f"{len(twice)} acknowledged values stored twice, e.g. {list(twice.items())[:5]}"
    moved = {v: (acked_now[v], where[v][0]) for v in acked_now if where[v][0] != acked_now[v]}
    assert not moved, f"{len(moved)} values not at their acknowledged offset, e.g. {list(moved.items())[:5]}"
    dups = Counter(m.value() for m in msgs)
    print(f"stored {len(msgs)} records, {sum(1 for n in dups.values() if n > 1)} "
          f"unacknowledged values stored more than once")
