"""Produce and consume through librdkafka (confluent-kafka) against a real node."""

import time
from collections import defaultdict

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME

from helpers import consume_range, consumer, produce, producer, watermarks

PARTITIONS = 8
KEYS = 997


def value_of(i):
    # Compressible, unique, and carries its index in the first 9 bytes.
    return b"v%08d|" % i + (b"payload-%d " % (i % 13)) * 8


def index_of(value):
    assert value[:1] == b"v" and value[9:10] == b"|", value[:16]
    return int(value[1:9])


def key_of(i):
    return b"key-%d" % (i % KEYS)


def headers_of(i):
    if i % 10 == 0:
        # A null header value is legal (KIP-82 headers, RecordBatch v2).
        return [("idx", str(i).encode()), ("kind", b"ten"), ("empty", b""), ("nul", None)]
    if i % 5 == 0:
        return [("idx", str(i).encode()), ("kind", b"five")]
    return None


@pytest.mark.parametrize(
    "codec,count",
    [("lz4", 100_000), ("gzip", 5_000), ("snappy", 5_000), ("zstd", 5_000)],
    ids=["lz4-100k", "gzip-5k", "snappy-5k", "zstd-5k"],
)
def test_produce_consume_8_partitions(node, cli, codec, count):
    """acks=all + idempotence (KIP-98) with every codec; headers (KIP-82) and
    CreateTime timestamps (KIP-32) survive; offsets are contiguous per partition,
    each partition keeps produce order, each key stays in one partition."""
    topic = f"pc-{codec}"
    r = cli(node, "topic", "create", topic, "--partitions", PARTITIONS)
    assert r.returncode == 0, r.stderr
    assert f"created topic {topic} ({PARTITIONS} partitions)" in r.stdout

    base_ts = int(time.time() * 1000) - 3_600_000  # explicit and unlike "now"
    acked = {}  # index -> (partition, offset)
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
            return
        i = index_of(msg.value())
        assert i not in acked, f"message {i} acknowledged twice"
        acked[i] = (msg.partition(), msg.offset())

    p = producer(node.bootstrap, **{
        "compression.type": codec, "linger.ms": 20, "message.timeout.ms": 60_000,
    })
    t0 = time.monotonic()
    for i in range(count):
        produce(p, topic, key=key_of(i), value=value_of(i), headers=headers_of(i),
                timestamp=base_ts + i, on_delivery=on_delivery)
    left = p.flush(60)
    produce_s = time.monotonic() - t0
    assert left == 0, f"{left} messages still in flight after flush"
    assert not errors, f"{len(errors)} delivery errors, first: {errors[0]}"
    assert len(acked) == count

    ends = defaultdict(int)
    for part, off in acked.values():
        assert 0 <= part < PARTITIONS
        ends[part] = max(ends[part], off + 1)
    assert len(ends) == PARTITIONS, f"only partitions {sorted(ends)} got messages"
    # Offsets handed out by the node are contiguous from 0 in each partition.
    assert sum(ends.values()) == count, dict(ends)

    c = consumer(node.bootstrap)
    try:
        marks = watermarks(c, topic, range(PARTITIONS))
        assert marks == {part: (0, ends[part]) for part in range(PARTITIONS)}, marks
        t0 = time.monotonic()
        msgs = consume_range(c, topic, dict(ends), timeout_s=120)
        consume_s = time.monotonic() - t0
    finally:
        c.close()

    assert len(msgs) == count, f"consumed {len(msgs)}, produced {count}"
    by_partition = defaultdict(list)
    key_partition = {}
    seen = set()
    for m in msgs:
        i = index_of(m.value())
        assert i not in seen, f"message {i} consumed twice"
        seen.add(i)
        assert m.value() == value_of(i)
        assert m.key() == key_of(i)
        assert (m.partition(), m.offset()) == acked[i], (
            f"message {i} at {m.partition()}/{m.offset()}, acknowledged at {acked[i]}")
        assert m.timestamp() == (TIMESTAMP_CREATE_TIME, base_ts + i), (i, m.timestamp())
        want_headers = headers_of(i)
        assert m.headers() == want_headers, (i, m.headers(), want_headers)
        assert key_partition.setdefault(m.key(), m.partition()) == m.partition(), (
            f"key {m.key()!r} in partitions {key_partition[m.key()]} and {m.partition()}")
        by_partition[m.partition()].append((m.offset(), i))
    assert seen == set(range(count))
    for part, rows in by_partition.items():
        offsets = [o for o, _ in rows]
        assert offsets == list(range(ends[part])), f"partition {part}: offsets not contiguous"
        order = [i for _, i in rows]
        assert order == sorted(order), f"partition {part}: produce order not kept"
    print(f"{codec}: {count} msgs, produce {produce_s:.1f}s, consume {consume_s:.1f}s")
