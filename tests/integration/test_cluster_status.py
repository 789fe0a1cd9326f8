"""`strand cluster status` and DescribeLogDirs (KIP-113; total and usable bytes from
KIP-827) against a real node: the CLI with confluent-kafka producing, kafka-python's
admin `describe_log_dirs()`, and hand-made requests with odd partition lists."""

import json
import os
import struct

from kafka.admin import KafkaAdminClient

import kafka_wire as kw
from helpers import produce, producer

API_DESCRIBE_LOG_DIRS = 35


def status(cli, node, *args):
    r = cli(node, "cluster", "status", "--output", "json", *args)
    assert r.returncode == 0, r
    return json.loads(r.stdout)


def partitions_of(doc, topic):
    [t] = [t for t in doc["topics"] if t["name"] == topic]
    assert t["error"] is None, t
    return {p["partition"]: p for p in t["partitions"]}


def produce_counts(bootstrap, topic, counts, value_bytes):
    p = producer(bootstrap)
    for partition, n in counts.items():
        for i in range(n):
            produce(p, topic, partition=partition, value=b"%06d" % i + b"v" * value_bytes)
    assert p.flush(30) == 0


def test_cluster_status_shows_offsets_and_growing_sizes(node, cli):
    topic = "cs-orders"
    r = cli(node, "topic", "create", topic, "--partitions", 3)
    assert r.returncode == 0, r
    counts = {0: 10, 1: 25, 2: 3}
    produce_counts(node.bootstrap, topic, counts, 100)

    doc = status(cli, node)
    assert doc["brokers"] == [
        {"id": 0, "host": "127.0.0.1", "port": node.port, "controller": True}], doc
    assert doc["controller"] == 0, doc
    assert doc["under_replicated_partitions"] == 0, doc
    assert doc["notes"] == [], doc
    before = partitions_of(doc, topic)
    assert sorted(before) == [0, 1, 2], before
    for partition, n in counts.items():
        row = before[partition]
        assert (row["leader"], row["replicas"], row["isr"]) == (0, [0], [0]), row
        assert row["under_replicated"] is False, row
        assert (row["start_offset"], row["end_offset"]) == (0, n), row
        assert row["error"] is None, row
        # At least the records themselves are on disk.
        assert row["size_bytes"] > n * 100, row

    # More data into partition 0 only: its size grows by at least the new records,
    # the others stay as they were.
    produce_counts(node.bootstrap, topic, {0: 40}, 1000)
    after = partitions_of(status(cli, node, "--topic", topic), topic)
    assert after[0]["end_offset"] == 50, after
    assert after[0]["size_bytes"] >= before[0]["size_bytes"] + 40 * 1000, (before, after)
    for partition in (1, 2):
        assert after[partition]["end_offset"] == counts[partition], after
        assert after[partition]["size_bytes"] == before[partition]["size_bytes"], after

    # The table form (`table` is accepted for `text`).
    for output in ("text", "table"):
        r = cli(node, "cluster", "status", "--topic", topic, "--output", output)
        assert r.returncode == 0, r
        lines = r.stdout.splitlines()
        assert lines[0].startswith("Cluster ID: "), r.stdout
        assert lines[1].split() == ["BROKER", "ADDRESS", "CONTROLLER"], r.stdout
        assert lines[2].split() == ["0", node.bootstrap, "yes"], r.stdout
        header = lines.index(next(l for l in lines if l.startswith("TOPIC")))
        assert lines[header].split() == [
            "TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR", "START", "END", "SIZE",
            "NOTE"], r.stdout
        rows = [l.split() for l in lines[header + 1:header + 4]]
        assert [row[:7] for row in rows] == [
            [topic, "0", "0", "0", "0", "0", "50"],
            [topic, "1", "0", "0", "0", "0", "25"],
            [topic, "2", "0", "0", "0", "0", "3"],
        ], r.stdout
        assert [int(row[7]) for row in rows] == [after[p]["size_bytes"] for p in range(3)]
        assert "Under-replicated partitions: 0" in r.stdout, r.stdout

    r = cli(node, "cluster", "status", "--topic", "cs-missing")
    assert r.returncode == 1, r
    assert "UNKNOWN_TOPIC_OR_PARTITION" in r.stderr, r


def test_kafka_python_describe_log_dirs(node, cli):
    topic = "cs-kp"
    assert cli(node, "topic", "create", topic, "--partitions", 2).returncode == 0
    produce_counts(node.bootstrap, topic, {0: 5, 1: 20}, 200)
    sizes = {p: row["size_bytes"] for p, row in partitions_of(status(cli, node), topic).items()}

    admin = KafkaAdminClient(bootstrap_servers=node.bootstrap, request_timeout_ms=10_000)
    try:
        # None: every topic, every partition.
        [broker] = admin.describe_log_dirs()
        assert broker["broker"] == 0, broker
        [log_dir] = broker["log_dirs"]
        assert log_dir["error_code"] == 0, log_dir
        assert log_dir["log_dir"] == str(node.data_dir), log_dir
        [t] = [t for t in log_dir["topics"] if t["name"] == topic]
        got = {p["partition_index"]: p for p in t["partitions"]}
        assert {p: got[p]["partition_size"] for p in got} == sizes, (got, sizes)
        assert all(p["offset_lag"] == 0 and p["is_future_key"] is False
                   for p in got.values()), got
        # kafka-python negotiates v4: the file system's size and free space.
        st = os.statvfs(node.data_dir)
        assert log_dir["total_bytes"] == st.f_blocks * st.f_frsize, log_dir
        assert 0 <= log_dir["usable_bytes"] <= log_dir["total_bytes"], log_dir

        # Named partitions: only those the node hosts come back (as Kafka answers).
        [broker] = admin.describe_log_dirs({topic: [1, 7, -1], "cs-nope": [0]})
        [log_dir] = broker["log_dirs"]
        assert log_dir["error_code"] == 0, log_dir
        assert [(t["name"], [p["partition_index"] for p in t["partitions"]])
                for t in log_dir["topics"]] == [(topic, [1])], log_dir
    finally:
        admin.close()


def describe_log_dirs_v1(correlation_id, topics):
    """DescribeLogDirs v1 (not flexible): topics is [(name, [partitions])] or None."""
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics))
        for name, parts in topics:
            body += kw.string(name) + struct.pack(">i", len(parts))
            body += b"".join(struct.pack(">i", p) for p in parts)
    return kw.frame(kw.header_v1(API_DESCRIBE_LOG_DIRS, 1, correlation_id) + body)


def test_odd_describe_log_dirs_requests_are_answered(node, cli):
    assert cli(node, "topic", "create", "cs-odd", "--partitions", 2).returncode == 0
    cases = [
        None,
        [],
        [("cs-odd", [])],
        [("cs-odd", [0, 0, 0, 1, 1, -1, 2, 2**31 - 1, -2**31])],
        [("cs-odd", [0]), ("cs-odd", [1]), ("", [0]), ("x" * 300, [0]), ("\u00fc", [5])],
        [("cs-odd", list(range(5000)))],
    ]
    s = kw.connect(node.port)
    try:
        for i, topics in enumerate(cases):
            s.sendall(describe_log_dirs_v1(100 + i, topics))
            r = kw.read_response(s)
            assert r is not None, f"connection closed on {topics!r:.80}"
            corr, throttle, n_results, error_code = struct.unpack_from(">iiih", r, 0)
            assert (corr, n_results, error_code) == (100 + i, 1, 0), (topics, r[:40].hex())
    finally:
        s.close()
    assert node.alive()
