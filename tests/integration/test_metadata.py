"""Metadata for all topics, as librdkafka 2.16 (confluent-kafka) asks for it."""

import struct

from confluent_kafka.admin import AdminClient

import kafka_wire as kw
from helpers import consumer


def test_list_all_topics_confluent(node, cli):
    """consumer.list_topics() / AdminClient.list_topics() with no topic send
    Metadata v12 with a null topic array. librdkafka 2.16 puts 3 zero bytes after
    the body (captured: 00 00 00 00 | 00 00 00); Apache Kafka ignores bytes left
    after a request body, so these clients work against it."""
    for name, parts in (("all-a", 2), ("all-b", 5)):
        r = cli(node, "topic", "create", name, "--partitions", parts)
        assert r.returncode == 0, r.stderr
    c = consumer(node.bootstrap)
    try:
        meta = c.list_topics(timeout=10)
    finally:
        c.close()
    # The consumer's group lookup (FindCoordinator) may have created the internal
    # __consumer_offsets meanwhile, as with Kafka: it is listed too.
    user = {t: len(m.partitions) for t, m in meta.topics.items() if t != "__consumer_offsets"}
    assert user == {"all-a": 2, "all-b": 5}
    assert [b.id for b in meta.brokers.values()] == [0]
    admin = AdminClient({"bootstrap.servers": node.bootstrap, "broker.address.family": "v4"})
    meta = admin.list_topics(timeout=10)
    assert set(meta.topics) - {"__consumer_offsets"} == {"all-a", "all-b"}


def test_metadata_v12_with_trailing_bytes_raw(node, cli):
    """The exact request librdkafka 2.16 sends for all topics, on a raw socket:
    header v2, then topics=null, allow_auto_topic_creation=false,
    include_topic_authorized_operations=false, no tags, and 3 more zero bytes.
    Expected: a Metadata v12 response with the same correlation id."""
    r = cli(node, "topic", "create", "raw-md")
    assert r.returncode == 0, r.stderr
    body = bytes.fromhex("00000000") + bytes(3)
    with kw.connect(node.port) as s:
        s.sendall(kw.frame(kw.header_v2(kw.API_METADATA, 12, 3, "rdkafka") + body))
        resp = kw.read_response(s, timeout=5)
    assert resp is not None, "the node closed the connection instead of answering"
    assert struct.unpack_from(">i", resp, 0)[0] == 3
    assert b"raw-md" in resp
