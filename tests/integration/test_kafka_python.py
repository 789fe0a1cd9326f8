"""kafka-python (a pure-Python client, independent of librdkafka)."""

import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic


def topic_configs(admin, topic):
    """{key: value} of a topic, as DescribeConfigs returns them."""
    res = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
    # kafka-python 3 answers {resource type: {name: {key: {config data}}}}.
    assert isinstance(res, dict), res
    per_type = next(iter(res.values()))
    entries = per_type[topic]
    out = {}
    for key, data in entries.items():
        out[key] = data["value"] if isinstance(data, dict) else data
    return out


def test_kafka_python_client(node):
    bs = node.bootstrap
    admin = KafkaAdminClient(bootstrap_servers=bs, request_timeout_ms=10_000)
    try:
        topic = "kp-topic"
        res = admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1,
                                            topic_configs={"retention.ms": "86400000"})])
        [t] = res["topics"]
        assert (t["name"], t["error_code"], t["num_partitions"]) == (topic, 0, 3), res
        assert topic in admin.list_topics()
        # A second create is refused: TOPIC_ALREADY_EXISTS (36).
        res = admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)],
                                  raise_errors=False)
        assert res["topics"][0]["error_code"] == 36, res

        cfg = topic_configs(admin, topic)
        assert cfg.get("retention.ms") == "86400000", cfg
        assert "max.message.bytes" in cfg, cfg

        # AlterConfigs (KIP-133 era, replaces the set) and IncrementalAlterConfigs
        # (KIP-339) both change retention.ms.
        res = admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "3600000"})],
            incremental=False)
        assert res == {"topic": {topic: "OK"}}, res
        assert topic_configs(admin, topic).get("retention.ms") == "3600000"
        res = admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "7200000"})],
            incremental=True)
        assert res == {"topic": {topic: "OK"}}, res
        assert topic_configs(admin, topic).get("retention.ms") == "7200000"
        # A value that is not a number is refused: INVALID_CONFIG (40).
        res = admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "soon"})],
            incremental=True)
        assert "[Error 40]" in str(res["topic"][topic]), res
        assert topic_configs(admin, topic).get("retention.ms") == "7200000"

        # Round trip: produce keyed records, read them back with assign + seek.
        producer = KafkaProducer(bootstrap_servers=bs, acks="all", linger_ms=5,
                                 compression_type="gzip")
        futures = [producer.send(topic, key=b"k%d" % (i % 11), value=b"kp-%d" % i,
                                 headers=[("n", b"%d" % i)], timestamp_ms=1_700_000_000_000 + i)
                   for i in range(1000)]
        producer.flush(30)
        metas = [f.get(timeout=30) for f in futures]
        producer.close(10)
        acked = {b"kp-%d" % i: (m.partition, m.offset) for i, m in enumerate(metas)}
        assert len(set(acked.values())) == 1000

        consumer = KafkaConsumer(bootstrap_servers=bs, group_id=None, enable_auto_commit=False,
                                 consumer_timeout_ms=10_000)
        try:
            tps = [TopicPartition(topic, q) for q in range(3)]
            consumer.assign(tps)
            consumer.seek_to_beginning()
            ends = consumer.end_offsets(tps)
            assert sum(ends.values()) == 1000, ends
            assert consumer.beginning_offsets(tps) == {tp: 0 for tp in tps}
            got = {}
            deadline = time.monotonic() + 60
            while len(got) < 1000 and time.monotonic() < deadline:
                for tp, records in consumer.poll(timeout_ms=500).items():
                    for rec in records:
                        assert rec.value not in got, f"{rec.value} twice"
                        got[rec.value] = (rec.partition, rec.offset)
                        i = int(rec.value.split(b"-")[1])
                        assert rec.key == b"k%d" % (i % 11)
                        assert rec.timestamp == 1_700_000_000_000 + i
                        assert list(rec.headers) == [("n", b"%d" % i)]
            assert got == acked
        finally:
            consumer.close()

        res = admin.delete_topics([topic])
        assert [(t["name"], t["error_code"]) for t in res["topics"]] == [(topic, 0)], res
        deadline = time.monotonic() + 10
        while topic in admin.list_topics():
            assert time.monotonic() < deadline, "topic still listed after delete_topics"
            time.sleep(0.2)
    finally:
        admin.close()
