#!/usr/bin/env python3
"""One consumer-group member in its own OS process, for test_groups.py (so that a
test can kill -9 it, SIGSTOP it, or let it leave cleanly with SIGTERM).

It subscribes to one topic with a real client (librdkafka through confluent-kafka,
kafka-python or aiokafka), never auto-commits, and commits synchronously, with
explicit offsets (the next offset to read), every --commit-every messages, every
--commit-interval-s seconds if something is uncommitted, and for the partitions it
loses in a revocation (not for partitions lost with the session). On SIGTERM it
commits what it consumed and closes (which sends LeaveGroup, except for a static
member with librdkafka).

Everything it sees goes to stdout as one JSON object per line, each with "ev" and
"t" (time.monotonic(), which is system-wide on Linux, so the test can compare it
with its own clock):
  {"ev": "start", "pid": ...}
  {"ev": "assigned" | "revoked" | "lost", "partitions": [changed], "assignment": [all now]}
  {"ev": "msg", "p": partition, "o": offset, "v": value}
  {"ev": "commit", "offsets": {partition: next offset}, "ok": true|false, "error": "..."}
  {"ev": "error", "error": "..."}   (a client error; the member carries on)
  {"ev": "closed"}
"""

import argparse
import json
import signal
import sys
import time

stop = False


def emit(ev, **fields):
    fields = {"ev": ev, "t": time.monotonic(), **fields}
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class Tracker:
    """The assignment, the positions (next offset per partition, from the messages
    handed to the application) and what was committed; decides when to commit."""

    def __init__(self, args, commit_fn):
        self.args = args
        self.commit_fn = commit_fn  # {partition: offset} -> None, raises on failure
        self.assignment = set()
        self.position = {}
        self.committed = {}
        self.since_commit = 0
        self.last_commit = time.monotonic()

    def assigned(self, parts):
        self.assignment |= set(parts)
        emit("assigned", partitions=sorted(parts), assignment=sorted(self.assignment))

    def revoked(self, parts, lost=False):
        if not lost:
            self.commit(only=set(parts))
        for p in parts:
            self.assignment.discard(p)
            self.position.pop(p, None)
        emit("lost" if lost else "revoked", partitions=sorted(parts),
             assignment=sorted(self.assignment))

    def consumed(self, p, o, v):
        emit("msg", p=p, o=o, v=v.decode(errors="replace") if v is not None else None)
        self.position[p] = o + 1
        self.since_commit += 1

    def due(self):
        if self.since_commit >= self.args.commit_every:
            return True
        return (self.since_commit > 0
                and time.monotonic() - self.last_commit >= self.args.commit_interval_s)

    def commit(self, only=None):
        todo = {p: o for p, o in self.position.items()
                if (only is None or p in only) and self.committed.get(p) != o}
        self.since_commit = 0
        self.last_commit = time.monotonic()
        if not todo:
            return
        try:
            self.commit_fn(todo)
        except Exception as e:  # noqa: BLE001 - reported to the test, which judges it
            emit("commit", offsets={str(p): o for p, o in todo.items()}, ok=False,
                 error=f"{type(e).__name__}: {e}")
            return
        self.committed.update(todo)
        emit("commit", offsets={str(p): o for p, o in todo.items()}, ok=True)


def run_confluent(args):
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    conf = {
        "bootstrap.servers": args.bootstrap,
        "broker.address.family": "v4",
        "group.id": args.group,
        "client.id": args.name,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": args.assignor,
        "session.timeout.ms": args.session_timeout_ms,
        "heartbeat.interval.ms": args.heartbeat_interval_ms,
        "max.poll.interval.ms": args.max_poll_interval_ms,
        "fetch.wait.max.ms": 100,
        "topic.metadata.refresh.interval.ms": 2000,
    }
    if args.instance_id:
        conf["group.instance.id"] = args.instance_id
    c = Consumer(conf)

    def commit_fn(offsets):
        res = c.commit(offsets=[TopicPartition(args.topic, p, o) for p, o in offsets.items()],
                       asynchronous=False)
        bad = [(tp.partition, str(tp.error)) for tp in res or [] if tp.error is not None]
        if bad:
            raise KafkaException(f"per-partition errors {bad}")

    tr = Tracker(args, commit_fn)
    c.subscribe([args.topic],
                on_assign=lambda _c, parts: tr.assigned([tp.partition for tp in parts]),
                on_revoke=lambda _c, parts: tr.revoked([tp.partition for tp in parts]),
                on_lost=lambda _c, parts: tr.revoked([tp.partition for tp in parts], lost=True))
    while not stop:
        m = c.poll(0.1)
        if m is not None:
            err = m.error()
            if err is None:
                tr.consumed(m.partition(), m.offset(), m.value())
            elif err.code() != KafkaError._PARTITION_EOF:
                emit("error", error=str(err))
        if tr.due():
            tr.commit()
    tr.commit()
    c.close()
    emit("closed")


def run_kafka_python(args):
    from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.structs import OffsetAndMetadata

    assignor = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}[args.assignor]
    c = KafkaConsumer(
        bootstrap_servers=args.bootstrap, group_id=args.group, client_id=args.name,
        enable_auto_commit=False, auto_offset_reset="earliest",
        partition_assignment_strategy=[assignor],
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        max_poll_interval_ms=args.max_poll_interval_ms,
        fetch_max_wait_ms=100, metadata_max_age_ms=2000,
    )

    def commit_fn(offsets):
        c.commit({TopicPartition(args.topic, p): OffsetAndMetadata(o, "", -1)
                  for p, o in offsets.items()})

    tr = Tracker(args, commit_fn)

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            tr.revoked([tp.partition for tp in revoked])

        def on_partitions_assigned(self, assigned):
            tr.assigned([tp.partition for tp in assigned])

    c.subscribe([args.topic], listener=Listener())
    while not stop:
        for _tp, records in c.poll(timeout_ms=100).items():
            for r in records:
                tr.consumed(r.partition, r.offset, r.value)
        if tr.due():
            tr.commit()
    tr.commit()
    c.close(autocommit=False)
    emit("closed")


def run_aiokafka(args):
    import asyncio

    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    assignor = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}[args.assignor]

    async def main():
        done = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
        c = AIOKafkaConsumer(
            bootstrap_servers=args.bootstrap, group_id=args.group, client_id=args.name,
            enable_auto_commit=False, auto_offset_reset="earliest",
            partition_assignment_strategy=(assignor,),
            session_timeout_ms=args.session_timeout_ms,
            heartbeat_interval_ms=args.heartbeat_interval_ms,
            max_poll_interval_ms=args.max_poll_interval_ms,
            fetch_max_wait_ms=100, metadata_max_age_ms=2000,
        )
        async def commit_async(offsets):
            await c.commit({TopicPartition(args.topic, p): o for p, o in offsets.items()})

        # The Tracker's bookkeeping, with commits awaited here instead.
        tr = Tracker(args, None)

        async def commit(only=None):
            todo = {p: o for p, o in tr.position.items()
                    if (only is None or p in only) and tr.committed.get(p) != o}
            tr.since_commit = 0
            tr.last_commit = time.monotonic()
            if not todo:
                return
            try:
                await commit_async(todo)
            except Exception as e:  # noqa: BLE001
                emit("commit", offsets={str(p): o for p, o in todo.items()}, ok=False,
                     error=f"{type(e).__name__}: {e}")
                return
            tr.committed.update(todo)
            emit("commit", offsets={str(p): o for p, o in todo.items()}, ok=True)

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                parts = [tp.partition for tp in revoked]
                await commit(set(parts))
                for p in parts:
                    tr.assignment.discard(p)
                    tr.position.pop(p, None)
                emit("revoked", partitions=sorted(parts), assignment=sorted(tr.assignment))

            async def on_partitions_assigned(self, assigned):
                tr.assigned([tp.partition for tp in assigned])

        await c.start()
        c.subscribe([args.topic], listener=Listener())
        try:
            while not done.is_set():
                data = await c.getmany(timeout_ms=100)
                for _tp, records in data.items():
                    for r in records:
                        tr.consumed(r.partition, r.offset, r.value)
                if tr.due():
                    await commit()
            await commit()
        finally:
            await c.stop()
        emit("closed")

    asyncio.run(main())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", choices=["confluent", "kafka-python", "aiokafka"], default="confluent")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--name", default="member")
    ap.add_argument("--assignor", default="range")
    ap.add_argument("--instance-id")
    ap.add_argument("--session-timeout-ms", type=int, default=6000)
    ap.add_argument("--heartbeat-interval-ms", type=int, default=500)
    ap.add_argument("--max-poll-interval-ms", type=int, default=30000)
    ap.add_argument("--commit-every", type=int, default=10)
    ap.add_argument("--commit-interval-s", type=float, default=1.0)
    args = ap.parse_args()

    def on_term(_sig, _frame):
        global stop
        stop = True

    if args.client != "aiokafka":
        signal.signal(signal.SIGTERM, on_term)
    emit("start", pid=__import__("os").getpid(), client=args.client, name=args.name)
    {"confluent": run_confluent, "kafka-python": run_kafka_python,
     "aiokafka": run_aiokafka}[args.client](args)


if __name__ == "__main__":
    main()
