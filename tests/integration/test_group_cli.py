"""`strand group list|describe|delete` against a real node with real confluent-kafka
group consumers: members and their assignments, committed offsets, log end offsets
and lag as the consumers commit; delete refused while the group has members."""

import json
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from helpers import produce, producer, wait_until

GROUP_ARGS = ("--group-initial-rebalance-delay-ms", "0", "--group-min-session-timeout-ms", "1000")


def describe(cli, node, group):
    r = cli(node, "group", "describe", group, "--output", "json")
    assert r.returncode == 0, r
    return json.loads(r.stdout)


def group_consumer(node, group, client_id):
    return Consumer({
        "bootstrap.servers": node.bootstrap,
        "broker.address.family": "v4",
        "group.id": group,
        "client.id": client_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "partition.assignment.strategy": "range",
    })


@pytest.mark.node_args(*GROUP_ARGS)
def test_group_describe_shows_members_assignments_and_lag(node, cli):
    topic, group = "gcli", "gcli-readers"
    assert cli(node, "topic", "create", topic, "--partitions", 4).returncode == 0
    p = producer(node.bootstrap)
    for i in range(400):
        produce(p, topic, partition=i % 4, value=b"m%d" % i)
    assert p.flush(30) == 0

    a, b = group_consumer(node, group, "reader-a"), group_consumer(node, group, "reader-b")
    try:
        for c in (a, b):
            c.subscribe([topic])
        # Poll until the group settled with two members, then each commits offset
        # 60 for the partitions it owns.
        deadline = time.monotonic() + 60
        while not (a.assignment() and b.assignment()
                   and len(a.assignment()) + len(b.assignment()) == 4):
            assert time.monotonic() < deadline, (a.assignment(), b.assignment())
            for c in (a, b):
                c.poll(0.1)
        for c in (a, b):
            c.commit(offsets=[TopicPartition(topic, tp.partition, 60) for tp in c.assignment()],
                     asynchronous=False)
        doc = wait_until(
            lambda: (lambda d: d if d["state"] == "Stable" and len(d["members"]) == 2 else None)(
                describe(cli, node, group)),
            30, "a Stable group of two members")
        assert doc["group"] == group and doc["protocol_type"] == "consumer", doc
        assert doc["protocol"] == "range", doc
        clients = sorted(m["client_id"] for m in doc["members"])
        assert clients == ["reader-a", "reader-b"], doc
        owned = sorted(p for m in doc["members"] for t in m["assignment"] for p in t["partitions"]
                       if t["topic"] == topic)
        assert owned == [0, 1, 2, 3], doc["members"]
        rows = {r["partition"]: r for r in doc["offsets"] if r["topic"] == topic}
        assert sorted(rows) == [0, 1, 2, 3], doc["offsets"]
        for part, r in rows.items():
            assert r["committed"] == 60 and r["log_end"] == 100 and r["lag"] == 40, r
            assert r["member"] is not None and r["member"]["client_id"] in clients, r
        assert doc["total_lag"] == 160, doc

        text = cli(node, "group", "list")
        assert text.returncode == 0 and group in text.stdout and "Stable" in text.stdout, text
        listed = json.loads(cli(node, "group", "list", "--output", "json").stdout)
        assert {"group": group, "protocol_type": "consumer", "state": "Stable"} in listed["groups"], listed

        refused = cli(node, "group", "delete", group)
        assert refused.returncode != 0 and "NON_EMPTY_GROUP" in (refused.stdout + refused.stderr), refused
    finally:
        a.close()
        b.close()

    # Both left (LeaveGroup): the group is Empty at once, the offsets stay.
    doc = wait_until(lambda: (lambda d: d if d["state"] == "Empty" else None)(describe(cli, node, group)),
                     10, "the group to be Empty after both consumers closed")
    assert doc["members"] == [] and doc["total_lag"] == 160, doc
    deleted = cli(node, "group", "delete", group)
    assert deleted.returncode == 0, deleted
    gone = cli(node, "group", "describe", group)
    assert gone.returncode != 0 and "not found" in gone.stderr, gone


@pytest.mark.node_args(*GROUP_ARGS)
def test_offsets_topic_is_internal(node):
    """Clients may read __consumer_offsets but not write to it or delete it."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient

    c = group_consumer(node, "internal-check", "reader")
    try:
        c.subscribe(["anything"])
        c.poll(1.0)  # FindCoordinator creates __consumer_offsets
    finally:
        c.close()
    admin = AdminClient({"bootstrap.servers": node.bootstrap, "broker.address.family": "v4"})
    wait_until(lambda: "__consumer_offsets" in admin.list_topics(timeout=5).topics, 10,
               "__consumer_offsets to exist")
    fut = admin.delete_topics(["__consumer_offsets"])["__consumer_offsets"]
    with pytest.raises(Exception) as e:
        fut.result(timeout=10)
    assert e.value.args[0].code() == KafkaError.TOPIC_EXCEPTION, e.value
    assert "__consumer_offsets" in admin.list_topics(timeout=5).topics

    errors = []
    p = producer(node.bootstrap, **{"enable.idempotence": False, "message.timeout.ms": 5000})
    p.produce("__consumer_offsets", value=b"forged", partition=0,
              on_delivery=lambda err, m: errors.append(err))
    p.flush(10)
    assert len(errors) == 1 and errors[0] is not None, errors
    assert errors[0].code() == KafkaError.TOPIC_EXCEPTION, errors
