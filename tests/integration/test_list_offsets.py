"""ListOffsets (KIP-79 offsets by timestamp; earliest/latest) through librdkafka."""

import time

import pytest
from confluent_kafka import OFFSET_END, TopicPartition

from helpers import consume_range, consumer, produce, producer

BATCHES = 6
PER_BATCH = 10
STEP_MS = 10  # between records of one batch
GAP_MS = 1000  # between the first records of two batches


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_list_offsets_by_timestamp(node, cli, codec):
    """Each batch is flushed alone, so the log holds BATCHES record batches with
    increasing CreateTime timestamps. ListOffsets by timestamp must give the first
    record whose timestamp is >= the target (KIP-79), even inside a (compressed)
    batch; past the last timestamp there is none (offset -1, librdkafka's
    OFFSET_END). Latest is the high watermark: last offset + 1."""
    topic = f"ts-{codec}"
    r = cli(node, "topic", "create", topic, "--partitions", 2)
    assert r.returncode == 0, r.stderr

    t0 = int(time.time() * 1000) - 86_400_000  # a day ago
    ts = {}  # offset -> timestamp, partition 0
    p = producer(node.bootstrap, **{"compression.type": codec, "linger.ms": 50})
    acked = []
    for b in range(BATCHES):
        for j in range(PER_BATCH):
            stamp = t0 + b * GAP_MS + j * STEP_MS
            produce(p, topic, partition=0, value=b"b%d-r%d" % (b, j), timestamp=stamp,
                    on_delivery=lambda err, m: acked.append((err, m.offset(), m.timestamp())))
        assert p.flush(30) == 0
    assert all(err is None for err, _, _ in acked), acked
    for _, off, (_, stamp) in acked:
        ts[off] = stamp
    n = BATCHES * PER_BATCH
    assert sorted(ts) == list(range(n))
    last_ts = t0 + (BATCHES - 1) * GAP_MS + (PER_BATCH - 1) * STEP_MS

    c = consumer(node.bootstrap)
    try:
        # Earliest / latest (the high watermark) through ListOffsets -2 / -1.
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, n)
        assert c.get_watermark_offsets(TopicPartition(topic, 1), timeout=10) == (0, 0)

        cases = [
            ("before all", t0 - 5_000, 0),
            ("first record", t0, 0),
            ("first record of batch 2", t0 + 2 * GAP_MS, 2 * PER_BATCH),
            ("inside batch 3", t0 + 3 * GAP_MS + 3 * STEP_MS + 5, 3 * PER_BATCH + 4),
            ("exactly a middle record", t0 + 4 * GAP_MS + 7 * STEP_MS, 4 * PER_BATCH + 7),
            ("between batches 1 and 2", t0 + GAP_MS + 500, 2 * PER_BATCH),
            ("last record", last_ts, n - 1),
            ("after all", last_ts + 1, OFFSET_END),
            ("far after all", last_ts + 10**9, OFFSET_END),
        ]
        for what, target, want in cases:
            [res] = c.offsets_for_times([TopicPartition(topic, 0, target)], timeout=10)
            assert res.error is None, (what, res.error)
            assert res.offset == want, f"{what}: ts {target}: got offset {res.offset}, want {want}"
            if want >= 0:
                assert ts[want] >= target and (want == 0 or ts[want - 1] < target), what

        # An empty partition has no record at or after any timestamp.
        [res] = c.offsets_for_times([TopicPartition(topic, 1, t0)], timeout=10)
        assert res.error is None and res.offset == OFFSET_END, res

        # Consuming from an offset found by timestamp starts at that record.
        [res] = c.offsets_for_times([TopicPartition(topic, 0, t0 + 3 * GAP_MS + 25)], timeout=10)
        msgs = consume_range(c, topic, {0: n}, start=res.offset)
        assert [m.offset() for m in msgs] == list(range(res.offset, n))
        assert msgs[0].value() == b"b3-r3"
        assert [m.timestamp()[1] for m in msgs] == [ts[o] for o in range(res.offset, n)]
    finally:
        c.close()
