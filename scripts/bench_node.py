#!/usr/bin/env python3
"""Single-node throughput with a real Kafka client (confluent-kafka / librdkafka).

Starts strand-node on a fresh data directory, produces with acks=all, then measures
the raw disk with O_DIRECT sequential 1 MiB writes (dd) in the same directory, and
prints both and their ratio. Until strand-bench exists (issue 4) this is the
node's benchmark. Usage: scripts/bench-node.sh [--mib 1024] [--message-bytes 16384]
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"strand-node exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("strand-node did not start listening")


def raw_disk_mib_s(directory, mib):
    path = os.path.join(directory, "raw-disk-probe")
    start = time.time()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}",
         "oflag=direct", "conv=fdatasync", "status=none"],
        check=True,
    )
    elapsed = time.time() - start
    os.remove(path)
    return mib / elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024, help="MiB to produce")
    ap.add_argument("--message-bytes", type=int, default=16384)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--cores", default="2")
    args = ap.parse_args()
    node = os.path.join(ROOT, "target", "release", "strand-node")
    data = os.path.join(ROOT, "target", "bench-node")
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    port = free_port()
    log = open(os.path.join(ROOT, "target", "bench-node.log"), "w")
    proc = subprocess.Popen(
        [node, "--data-dir", os.path.join(data, "node"), "--kafka-addr", f"127.0.0.1:{port}",
         "--cores", args.cores, "--admin-addr", "127.0.0.1:0"],
        stdout=log, stderr=log,
    )
    try:
        wait_ready(port, proc)
        bootstrap = f"127.0.0.1:{port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("bench", args.partitions, 1)])["bench"].result(10)
        p = Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
            "batch.size": 1048576, "queue.buffering.max.kbytes": 1048576,
            "enable.idempotence": True, "compression.type": "none",
        })
        payload = os.urandom(args.message_bytes)
        count = args.mib * 1024 * 1024 // args.message_bytes
        errors = []

        def on_delivery(err, _msg):
            if err is not None:
                errors.append(err)

        start = time.time()
        for i in range(count):
            while True:
                try:
                    p.produce("bench", payload, partition=i % args.partitions, on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.01)
            if i % 1000 == 0:
                p.poll(0)
        p.flush(120)
        elapsed = time.time() - start
        node_mib_s = args.mib / elapsed
        if errors:
            sys.exit(f"{len(errors)} delivery errors, first: {errors[0]}")
        raw = raw_disk_mib_s(data, min(args.mib, 1024))
        print(f"produced {args.mib} MiB in {count} messages of {args.message_bytes} B, "
              f"acks=all, {args.partitions} partitions, {args.cores} shard(s)")
        print(f"node acks=all throughput: {node_mib_s:8.1f} MiB/s")
        print(f"raw disk (dd O_DIRECT 1 MiB + fdatasync): {raw:8.1f} MiB/s")
        print(f"node_vs_disk_ratio: {node_mib_s / raw:.2f}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
