#!/usr/bin/env python3
"""Failover time of a Strand cluster started by `strand dev-cluster up`.

A producer (confluent-kafka, acks=all, idempotent) sends to one partition of a
replication-factor-3 topic without pause. Each round kills the partition's leader
with SIGKILL and measures the time from the kill to the first message acknowledged
after it (the client learns the new leader by itself: NOT_LEADER_OR_FOLLOWER, then a
metadata refresh). The killed node is restarted with the command line it ran with
and is back in the ISR before the next round.

Prints median and maximum; writes every time to --out.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def metadata(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(topic, timeout=5)
    return md.topics[topic].partitions[0]


def wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cluster", required=True, help="cluster.json of `strand dev-cluster up`")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--out")
    args = ap.parse_args()
    info = json.load(open(args.cluster))
    bootstrap = info["bootstrap"]
    topic = "failover"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, 1, 3)]).values():
        try:
            f.result()
        except Exception as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise
    wait(lambda: len(metadata(bootstrap, topic).isrs) == 3, 30, "a full ISR")

    # (send time, ack time) of acknowledged messages: a failover ends with the first
    # ack of a message sent after the kill (acks of earlier messages may still be on
    # their way back when the leader dies).
    acked = []
    lock = threading.Lock()
    stop = threading.Event()

    def produce():
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                      "linger.ms": 1, "message.timeout.ms": 60000,
                      "topic.metadata.refresh.interval.ms": 1000, "retry.backoff.ms": 20,
                      "retry.backoff.max.ms": 100, "log_level": 2})

        def done(err, msg):
            if err is None:
                sent = float(msg.value().decode().split(":")[1])
                with lock:
                    acked.append((sent, time.monotonic()))

        n = 0
        while not stop.is_set():
            try:
                value = f"{n}:{time.monotonic()}".encode()
                p.produce(topic, value=value, partition=0, on_delivery=done)
                n += 1
            except BufferError:
                pass
            p.poll(0.002)
        p.flush(60)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    wait(lambda: len(acked) > 100, 30, "the producer to get going")
    # librdkafka's own connection errors are expected here; keep stdout for figures.
    times = []
    for round_ in range(args.kills):
        wait(lambda: metadata(bootstrap, topic).leader > 0, 30, "a leader")
        leader = metadata(bootstrap, topic).leader
        node = next(n for n in info["nodes"] if n["id"] == leader)
        with open(f"/proc/{node['pid']}/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0") if a]
        killed_at = time.monotonic()
        os.kill(node["pid"], signal.SIGKILL)
        def first_after():
            with lock:
                return next((a for s, a in acked if s > killed_at), None)

        wait(lambda: first_after() is not None, 60, "a produce after the kill")
        times.append(first_after() - killed_at)
        print(f"kill {round_ + 1}: node {leader}, first ack after {times[-1]:.3f} s", flush=True)
        time.sleep(0.5)
        with open(node["log"], "ab") as log:
            node["pid"] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=log, start_new_session=True).pid
        # `strand dev-cluster down` must find the new process.
        info_on_disk = json.load(open(args.cluster))
        for n in info_on_disk["nodes"]:
            if n["id"] == node["id"]:
                n["pid"] = node["pid"]
        tmp = args.cluster + ".tmp"
        json.dump(info_on_disk, open(tmp, "w"), indent=1)
        os.replace(tmp, args.cluster)
        wait(lambda: len(metadata(bootstrap, topic).isrs) == 3, 60, "the restarted node in the ISR")
    stop.set()
    t.join(90)
    print(f"failover_median_s: {statistics.median(times):.3f}")
    print(f"failover_max_s: {max(times):.3f}")
    if args.out:
        json.dump({"kills": len(times), "seconds": times, "median": statistics.median(times),
                   "max": max(times)}, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
