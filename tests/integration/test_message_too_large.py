"""The topic's max.message.bytes limits record batches (MESSAGE_TOO_LARGE, 10)."""

from confluent_kafka import KafkaError, TopicPartition

from helpers import consume_range, consumer, produce, producer


def test_message_too_large(node, cli):
    topic = "big"
    r = cli(node, "topic", "create", topic, "--config", "max.message.bytes=100000")
    assert r.returncode == 0, r.stderr

    results = []
    p = producer(node.bootstrap, **{
        # Let the client send what the topic refuses; no compression so the batch
        # really is over the limit; no batching with the small records.
        "message.max.bytes": 1_000_000,
        "compression.type": "none",
        "linger.ms": 0,
        "message.timeout.ms": 20_000,
    })

    def on_delivery(err, m):
        results.append((len(m.value()), err, m.offset()))

    produce(p, topic, value=b"s" * 1000, on_delivery=on_delivery)
    assert p.flush(20) == 0
    produce(p, topic, value=bytes(200 * 1024), on_delivery=on_delivery)
    assert p.flush(30) == 0
    produce(p, topic, value=b"m" * 50_000, on_delivery=on_delivery)
    assert p.flush(20) == 0

    assert len(results) == 3, results
    small, big, medium = results
    assert small[1] is None and small[2] == 0, small
    assert big[1] is not None, f"a 200 KiB record was accepted by a topic with a 100000-byte limit: {big}"
    assert big[1].code() == KafkaError.MSG_SIZE_TOO_LARGE, big[1]
    assert medium[1] is None and medium[2] == 1, medium

    # Only the two accepted records are in the log.
    c = consumer(node.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 2)
        msgs = consume_range(c, topic, {0: 2})
        assert [len(m.value()) for m in msgs] == [1000, 50_000]
    finally:
        c.close()

    # Raising the topic's limit (IncrementalAlterConfigs) lets the same record in.
    r = cli(node, "topic", "alter", topic, "--max-message-bytes", 300_000)
    assert r.returncode == 0, r.stderr
    results.clear()
    produce(p, topic, value=bytes(200 * 1024), on_delivery=on_delivery)
    assert p.flush(30) == 0
    assert results[0][1] is None and results[0][2] == 2, results


def test_node_wide_max_message_bytes(node_factory):
    """--max-message-bytes is the default for topics without their own limit."""
    n = node_factory("--max-message-bytes", "65536")
    results = []
    p = producer(n.bootstrap, **{"message.max.bytes": 1_000_000, "compression.type": "none",
                                 "linger.ms": 0, "message.timeout.ms": 20_000})
    for size in (1000, 100_000):
        produce(p, "auto-big", value=bytes(size),
                on_delivery=lambda err, m: results.append((len(m.value()), err)))
        assert p.flush(30) == 0
    assert results[0] == (1000, None), results
    assert results[1][1] is not None and results[1][1].code() == KafkaError.MSG_SIZE_TOO_LARGE, results
