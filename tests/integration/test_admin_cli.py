"""The `strand` admin CLI against a real node (CreateTopics, Metadata,
DescribeConfigs, IncrementalAlterConfigs / AlterConfigs, CreatePartitions,
DeleteTopics)."""

import re
import socket
import subprocess

from confluent_kafka import TopicPartition

from helpers import consumer, produce, producer


def table(stdout, header):
    """Rows (lists of cells) of the whitespace table that starts with `header`."""
    lines = stdout.splitlines()
    start = next(i for i, l in enumerate(lines) if l.split()[:len(header)] == header)
    rows = []
    for l in lines[start + 1:]:
        if not l.strip():
            break
        rows.append(l.split())
    return rows


def configs(stdout):
    """{key: (value, source)} from the Configs: block of `topic describe`."""
    out = {}
    for m in re.finditer(r"^\s+([a-z.]+)=(\S+) \((\w+)\)$", stdout, re.MULTILINE):
        out[m.group(1)] = (m.group(2), m.group(3))
    return out


def test_admin_via_cli(node, cli):
    # create
    r = cli(node, "topic", "create", "cli-a", "--partitions", 3)
    assert (r.returncode, r.stdout.strip()) == (0, "created topic cli-a (3 partitions)"), r
    r = cli(node, "topic", "create", "cli-b", "--config", "retention.ms=5000000",
            "--config", "max.message.bytes=200000")
    assert (r.returncode, r.stdout.strip()) == (0, "created topic cli-b (1 partition)"), r

    # create again: TOPIC_ALREADY_EXISTS, exit 1, nothing changed
    r = cli(node, "topic", "create", "cli-a", "--partitions", 5)
    assert r.returncode == 1, r
    assert "TOPIC_ALREADY_EXISTS" in r.stderr, r.stderr
    # invalid requests are refused with the Kafka error name
    r = cli(node, "topic", "create", "bad name!")
    assert r.returncode == 1 and "INVALID_TOPIC_EXCEPTION" in r.stderr, r
    r = cli(node, "topic", "create", "cli-z", "--partitions", 0)
    assert r.returncode == 1 and "INVALID_PARTITIONS" in r.stderr, r
    r = cli(node, "topic", "create", "cli-y", "--config", "retention.ms=never")
    assert r.returncode == 1 and "INVALID_CONFIG" in r.stderr, r

    # list
    r = cli(node, "topic", "list")
    assert r.returncode == 0, r
    assert table(r.stdout, ["NAME", "PARTITIONS"]) == [["cli-a", "3"], ["cli-b", "1"]], r.stdout

    # describe: partitions, leader, offsets, configs with their sources
    p = producer(node.bootstrap)
    for i in range(10):
        produce(p, "cli-a", partition=1, value=b"x%d" % i)
    assert p.flush(10) == 0
    r = cli(node, "topic", "describe", "cli-a")
    assert r.returncode == 0, r
    assert "Topic: cli-a" in r.stdout and "Partitions: 3" in r.stdout, r.stdout
    assert "Replication factor: 1" in r.stdout, r.stdout
    rows = table(r.stdout, ["PARTITION", "LEADER"])
    assert [row[:7] if len(row) > 6 else row for row in rows] == [
        ["0", "0", "0", "0", "0", "0"],
        ["1", "0", "0", "0", "0", "10"],
        ["2", "0", "0", "0", "0", "0"],
    ], r.stdout
    cfg = configs(r.stdout)
    assert cfg["retention.ms"] == ("604800000", "DEFAULT_CONFIG"), cfg
    assert cfg["max.message.bytes"][1] == "DEFAULT_CONFIG", cfg
    cfg = configs(cli(node, "topic", "describe", "cli-b").stdout)
    assert cfg["retention.ms"] == ("5000000", "DYNAMIC_TOPIC_CONFIG"), cfg
    assert cfg["max.message.bytes"] == ("200000", "DYNAMIC_TOPIC_CONFIG"), cfg

    # describe a missing topic: exit 1, UNKNOWN_TOPIC_OR_PARTITION
    r = cli(node, "topic", "describe", "no-such-topic")
    assert r.returncode == 1, r
    assert "UNKNOWN_TOPIC_OR_PARTITION" in r.stderr, r.stderr

    # alter configs
    r = cli(node, "topic", "alter", "cli-a", "--retention-ms", 3_600_000)
    assert r.returncode == 0, r
    assert "retention.ms=3600000" in r.stdout, r.stdout
    r = cli(node, "topic", "alter", "cli-a", "--retention-bytes", 1 << 30,
            "--max-message-bytes", 500_000)
    assert r.returncode == 0, r
    cfg = configs(cli(node, "topic", "describe", "cli-a").stdout)
    assert cfg["retention.ms"] == ("3600000", "DYNAMIC_TOPIC_CONFIG"), cfg
    assert cfg["retention.bytes"] == (str(1 << 30), "DYNAMIC_TOPIC_CONFIG"), cfg
    assert cfg["max.message.bytes"] == ("500000", "DYNAMIC_TOPIC_CONFIG"), cfg
    r = cli(node, "topic", "alter", "cli-a", "--retention-ms", -1)
    assert r.returncode == 0, r
    assert configs(cli(node, "topic", "describe", "cli-a").stdout)["retention.ms"][0] == "-1"
    r = cli(node, "topic", "alter", "cli-a", "--config", "no.such.config=1")
    assert r.returncode == 1 and "INVALID_CONFIG" in r.stderr, r
    r = cli(node, "topic", "alter", "no-such-topic", "--retention-ms", 1000)
    assert r.returncode == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in r.stderr, r

    # alter partitions (CreatePartitions, KIP-195): grow only
    r = cli(node, "topic", "alter", "cli-a", "--partitions", 5)
    assert r.returncode == 0 and "5 partitions" in r.stdout, r
    r = cli(node, "topic", "alter", "cli-a", "--partitions", 2)
    assert r.returncode == 1 and "INVALID_PARTITIONS" in r.stderr, r
    r = cli(node, "topic", "describe", "cli-a")
    assert "Partitions: 5" in r.stdout and len(table(r.stdout, ["PARTITION", "LEADER"])) == 5
    # the new partitions take writes (a fresh producer: the old one's metadata
    # still says 3 partitions)
    del p
    p = producer(node.bootstrap)
    for q in (3, 4):
        produce(p, "cli-a", partition=q, value=b"new")
    assert p.flush(10) == 0
    c = consumer(node.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition("cli-a", 4), timeout=10) == (0, 1)
    finally:
        c.close()
    del p

    # delete
    r = cli(node, "topic", "delete", "cli-a")
    assert (r.returncode, r.stdout.strip()) == (0, "deleted topic cli-a"), r
    r = cli(node, "topic", "delete", "cli-a")
    assert r.returncode == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in r.stderr, r
    r = cli(node, "topic", "list")
    assert table(r.stdout, ["NAME", "PARTITIONS"]) == [["cli-b", "1"]], r.stdout
    r = cli(node, "topic", "describe", "cli-a")
    assert r.returncode == 1, r
    # a deleted name can be created again, empty
    r = cli(node, "topic", "create", "cli-a")
    assert r.returncode == 0, r
    rows = table(cli(node, "topic", "describe", "cli-a").stdout, ["PARTITION", "LEADER"])
    assert rows == [["0", "0", "0", "0", "0", "0"]], rows


def test_cli_unreachable_broker(cli):
    """No broker at the address: exit 1 with a message, no hang."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    class Nowhere:
        bootstrap = f"127.0.0.1:{port}"

    r = cli(Nowhere, "topic", "list", timeout=30)
    assert r.returncode == 1, r
    assert "cannot reach" in r.stderr, r.stderr


def test_second_node_on_same_port_is_refused(node_factory):
    """A second node on a port that a running node already listens on must fail
    to start (as Kafka does with "Address already in use"), not share the port:
    with SO_REUSEPORT across processes the kernel would split clients between the
    two nodes, each with its own topics and data."""
    first = node_factory()
    second = node_factory(start=False)
    second.port, second.bootstrap = first.port, first.bootstrap
    second.root.mkdir(parents=True, exist_ok=True)
    with open(second.log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(second.binary), "--data-dir", str(second.data_dir), "--kafka-addr",
             second.bootstrap, "--cores", "2", "--admin-addr", "none"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        rc = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)
    assert rc is not None and rc != 0, (
        f"a second strand-node started on {first.bootstrap}, already served by pid "
        f"{first.pid}:\n{second.log_tail()}")
    assert first.alive()
