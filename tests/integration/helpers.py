"""Client helpers shared by the integration tests (confluent-kafka / librdkafka)."""

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition


def producer(bootstrap, **overrides):
    conf = {
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
    }
    conf.update(overrides)
    return Producer(conf)


def consumer(bootstrap, **overrides):
    # librdkafka insists on a group.id; assign() never joins the group.
    conf = {
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "group.id": f"it-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
    }
    conf.update(overrides)
    return Consumer(conf)


def produce(p, topic, **kwargs):
    """produce(), waiting for room in the local queue instead of failing."""
    while True:
        try:
            p.produce(topic, **kwargs)
            p.poll(0)
            return
        except BufferError:
            p.poll(0.05)


def consume_range(c, topic, end_offsets, timeout_s=60, start=OFFSET_BEGINNING):
    """Assign every partition of `end_offsets` ({partition: high watermark}) from
    `start` and read until each partition reached its end offset. Returns the
    messages in the order they were consumed. Fails on a consumer error or when
    the deadline passes first."""
    assignment = [TopicPartition(topic, p, start) for p in sorted(end_offsets)]
    c.assign(assignment)
    todo = {p: end for p, end in end_offsets.items() if end > 0}
    out = []
    deadline = time.monotonic() + timeout_s
    while todo:
        assert time.monotonic() < deadline, (
            f"consumed {len(out)} messages; still waiting for partitions "
            f"{ {p: todo[p] for p in sorted(todo)} }")
        for m in c.consume(num_messages=5000, timeout=0.5):
            err = m.error()
            if err is not None:
                # Reaching the end of a partition is not an error here.
                assert err.code() == KafkaError._PARTITION_EOF, f"consumer error: {err}"
                continue
            out.append(m)
            p = m.partition()
            if p in todo and m.offset() + 1 >= todo[p]:
                del todo[p]
    c.unassign()
    return out


def watermarks(c, topic, partitions, timeout_s=10):
    return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            for p in partitions}


def wait_until(pred, timeout_s, what, interval_s=0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(interval_s)
