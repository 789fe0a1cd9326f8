"""A replicated Strand cluster of real strand-node processes on 127.0.0.1 (Raft per
partition over QUIC with TLS), for the replication tests.

`cluster3` (function-scoped) makes a CA and one certificate per node, starts three
nodes with `--cores 1` and waits until every node answers Metadata listing three
brokers and a controller. Each node can be killed (-9), stopped (SIGTERM), frozen
(SIGSTOP), resumed (SIGCONT) and restarted on the same ports and data directory.
The nodes' logs are attached to the report of a failing test (conftest's
`strand_nodes`) and their data is kept; the teardown kills every node.

Metadata is read with a raw Metadata v1 request sent to one chosen node
(`metadata_from`), so a test knows which node said what (librdkafka picks any broker
it likes). `produce_raw` / `fetch_raw` send one Produce v3 / Fetch v4 to one chosen
node, to see a follower refuse.
"""

import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import kafka_wire as kw

TARGET = Path(__file__).resolve().parents[2] / "target"
LOG_TAIL_LINES = 150
NOT_LEADER_OR_FOLLOWER = 6

# Ports below the ephemeral range (32768-60999), so that an outgoing connection
# cannot take one between picking it and binding it.
PORT_LO, PORT_HI = 20000, 32000
_taken = set()


def _free(port):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def pick_ports(n):
    """n distinct ports, each free for TCP and UDP, not handed out before in this
    process."""
    out = []
    while len(out) < n:
        p = random.randint(PORT_LO, PORT_HI)
        if p in _taken or p in out or not _free(p):
            continue
        out.append(p)
    _taken.update(out)
    return out


# ---------------------------------------------------------------------------
# Raw Kafka requests to one node


def _read_string(body, pos):
    (n,) = struct.unpack_from(">h", body, pos)
    pos += 2
    if n < 0:
        return None, pos
    return body[pos:pos + n].decode(), pos + n


def _read_i32_array(body, pos):
    (n,) = struct.unpack_from(">i", body, pos)
    pos += 4
    vals = list(struct.unpack_from(f">{max(n, 0)}i", body, pos))
    return vals, pos + 4 * max(n, 0)


@dataclass
class PartitionMeta:
    error: int
    leader: int
    replicas: list
    isr: list


@dataclass
class Metadata:
    brokers: dict  # id -> (host, port)
    controller: int
    topics: dict = field(default_factory=dict)  # name -> (error, {partition: PartitionMeta})

    def partitions(self, topic):
        err, parts = self.topics[topic]
        assert err == 0, f"{topic}: error {err}"
        return parts

    def leaders(self, topic):
        return {p: m.leader for p, m in self.partitions(topic).items()}


def parse_metadata_v1(body):
    (corr,) = struct.unpack_from(">i", body, 0)
    pos = 4
    (nb,) = struct.unpack_from(">i", body, pos)
    pos += 4
    brokers = {}
    for _ in range(nb):
        (node_id,) = struct.unpack_from(">i", body, pos)
        pos += 4
        host, pos = _read_string(body, pos)
        (port,) = struct.unpack_from(">i", body, pos)
        pos += 4
        _rack, pos = _read_string(body, pos)
        brokers[node_id] = (host, port)
    (controller,) = struct.unpack_from(">i", body, pos)
    pos += 4
    (nt,) = struct.unpack_from(">i", body, pos)
    pos += 4
    topics = {}
    for _ in range(nt):
        (terr,) = struct.unpack_from(">h", body, pos)
        pos += 2
        name, pos = _read_string(body, pos)
        pos += 1  # is_internal
        (np_,) = struct.unpack_from(">i", body, pos)
        pos += 4
        parts = {}
        for _ in range(np_):
            perr, pidx, leader = struct.unpack_from(">hii", body, pos)
            pos += 10
            replicas, pos = _read_i32_array(body, pos)
            isr, pos = _read_i32_array(body, pos)
            parts[pidx] = PartitionMeta(perr, leader, replicas, isr)
        topics[name] = (terr, parts)
    assert pos == len(body), f"{len(body) - pos} trailing bytes in Metadata v1"
    return Metadata(brokers, controller, topics)


def metadata_from(port, topics=None, timeout=3.0):
    """Metadata v1 from the node at `port`, or None if it does not answer."""
    try:
        with kw.connect(port, timeout=timeout) as s:
            s.sendall(kw.metadata_v1(11, topics))
            body = kw.read_response(s, timeout=timeout)
    except (OSError, TimeoutError):
        return None
    if body is None:
        return None
    return parse_metadata_v1(body)


def _crc32c_table():
    poly = 0x82F63B78
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _varint(n):
    return kw.uvarint((n << 1) ^ (n >> 63))


def record_batch(values):
    """A RecordBatch v2 (no producer id, no compression) holding `values`."""
    now = int(time.time() * 1000)
    records = b""
    for i, v in enumerate(values):
        body = (b"\x00" + _varint(0) + _varint(i) + _varint(-1)
                + _varint(len(v)) + v + _varint(0))
        records += _varint(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", 0, len(values) - 1, now, now, -1, -1, -1,
                            len(values)) + records
    crc = crc32c(after_crc)
    after_length = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def produce_raw(port, topic, partition, values, acks=-1, timeout=10.0):
    """One Produce v3 to the node at `port`: (error_code, base_offset)."""
    batch = record_batch(values)
    body = (kw.string(None) + struct.pack(">hi", acks, 5000) + struct.pack(">i", 1)
            + kw.string(topic) + struct.pack(">i", 1)
            + struct.pack(">ii", partition, len(batch)) + batch)
    with kw.connect(port, timeout=timeout) as s:
        s.sendall(kw.frame(kw.header_v1(kw.API_PRODUCE, 3, 21) + body))
        resp = kw.read_response(s, timeout=timeout)
    assert resp is not None, "connection closed instead of a Produce response"
    pos = 4  # correlation id
    (nt,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    assert nt == 1, resp
    name, pos = _read_string(resp, pos)
    assert name == topic, name
    (np_,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    assert np_ == 1, resp
    pidx, err, base = struct.unpack_from(">ihq", resp, pos)
    assert pidx == partition, pidx
    return err, base


def fetch_raw(port, topic, partition, offset=0, timeout=10.0):
    """One Fetch v4 (max wait 100 ms) to the node at `port`: (error_code, high watermark)."""
    body = (struct.pack(">iiiib", -1, 100, 1, 1 << 20, 0) + struct.pack(">i", 1)
            + kw.string(topic) + struct.pack(">i", 1)
            + struct.pack(">iqi", partition, offset, 1 << 20))
    with kw.connect(port, timeout=timeout) as s:
        s.sendall(kw.frame(kw.header_v1(kw.API_FETCH, 4, 22) + body))
        resp = kw.read_response(s, timeout=timeout)
    assert resp is not None, "connection closed instead of a Fetch response"
    pos = 8  # correlation id, throttle time
    (nt,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    assert nt == 1, resp
    name, pos = _read_string(resp, pos)
    assert name == topic, name
    (np_,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    assert np_ == 1, resp
    pidx, err, hw = struct.unpack_from(">ihq", resp, pos)
    assert pidx == partition, pidx
    return err, hw


# ---------------------------------------------------------------------------
# Processes


class ClusterNode:
    """One strand-node of the cluster. Keeps its ports, data directory and TLS
    directory across restarts."""

    def __init__(self, cluster, node_id, kafka_port, repl_port, admin_port):
        self.cluster = cluster
        self.node_id = node_id
        self.root = cluster.root / f"n{node_id}"
        self.data_dir = self.root / "data"
        self.tls_dir = self.root / "tls"
        self.log_path = self.root / "node.log"
        self.kafka_port = kafka_port
        self.repl_port = repl_port
        self.admin_port = admin_port
        self.admin = f"http://127.0.0.1:{admin_port}"
        self.proc = None
        self.starts = 0
        self.stopped = False  # SIGSTOPped

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def port(self):
        return self.kafka_port

    def args(self, cluster_id=None, tls_dir=None, data_dir=None, extra=()):
        c = self.cluster
        return [
            str(c.binaries["strand-node"]),
            "--node-id", str(self.node_id),
            "--data-dir", str(data_dir or self.data_dir),
            "--kafka-addr", self.bootstrap,
            "--admin-addr", f"127.0.0.1:{self.admin_port}",
            "--replication-addr", f"127.0.0.1:{self.repl_port}",
            "--peers", c.peers,
            "--tls-dir", str(tls_dir or self.tls_dir),
            "--cores", "1",
            "--cluster-id", cluster_id or c.cluster_id,
            *c.extra_args,
            *extra,
        ]

    def spawn(self, **kw_args):
        """Start the process and return at once (no readiness wait)."""
        assert not self.alive(), f"node {self.node_id} is already running"
        self.root.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRAND_")}
        env.setdefault("RUST_BACKTRACE", "1")
        args = self.args(**kw_args)
        self.starts += 1
        self.stopped = False
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts} at {time.time():.3f}: {' '.join(args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.root, stdin=subprocess.DEVNULL)
        return self.proc

    def start(self, ready_timeout_s=60, attempts=3, **kw_args):
        """Start and wait until it answers ApiVersions. A start that fails with
        "Address already in use" (a port taken since it was picked) is retried."""
        for attempt in range(attempts):
            log_before = len(self.log_text())
            self.spawn(**kw_args)
            deadline = time.monotonic() + ready_timeout_s
            while time.monotonic() < deadline:
                rc = self.proc.poll()
                if rc is not None:
                    new = self.log_text()[log_before:]
                    if "Address already in use" in new and attempt + 1 < attempts:
                        time.sleep(1.0)
                        break
                    raise AssertionError(
                        f"node {self.node_id} exited with {rc} during startup:\n{self.log_tail()}")
                if kw.api_versions_ok(self.kafka_port, timeout=1.0):
                    return self
                time.sleep(0.05)
            else:
                raise AssertionError(
                    f"node {self.node_id} did not answer ApiVersions within {ready_timeout_s}s:\n"
                    f"{self.log_tail()}")
        raise AssertionError(f"node {self.node_id} could not start:\n{self.log_tail()}")

    def mark(self, what):
        with open(self.log_path, "ab") as log:
            log.write(f"===== {what} at {time.time():.3f}\n".encode())

    def kill9(self):
        assert self.alive(), f"node {self.node_id} is not running"
        self.mark("SIGKILL")
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.stopped = False

    def stop(self, timeout_s=30):
        """SIGTERM; returns (exit code, seconds to exit); kills it after timeout_s."""
        if not self.alive():
            return self.proc.returncode if self.proc else None, 0.0
        if self.stopped:
            self.cont()
        self.mark("SIGTERM")
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"node {self.node_id} did not exit within {timeout_s}s of SIGTERM:\n{self.log_tail()}")
        took = time.monotonic() - t0
        self.mark(f"exit {rc} {took:.2f}s after SIGTERM")
        return rc, took

    def sigstop(self):
        assert self.alive()
        self.mark("SIGSTOP")
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def cont(self):
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False
        self.mark("SIGCONT")

    def restart(self, **kw_args):
        if self.alive():
            self.stop()
        return self.start(**kw_args)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def metadata(self, topics=None, timeout=3.0):
        return metadata_from(self.kafka_port, topics, timeout)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=LOG_TAIL_LINES):
        text = [l for l in self.log_text().splitlines() if not l.startswith("  ")]
        return "\n".join(text[-lines:])


class Cluster:
    def __init__(self, binaries, root, size=3, cluster_id="strand-it", extra_args=()):
        self.binaries = binaries
        self.root = root
        self.cluster_id = cluster_id
        self.extra_args = list(extra_args)
        self.root.mkdir(parents=True, exist_ok=True)
        ports = pick_ports(3 * size)
        self.nodes = [ClusterNode(self, i + 1, ports[3 * i], ports[3 * i + 1], ports[3 * i + 2])
                      for i in range(size)]
        self.ca_dir = self.root / "ca"
        self.make_ca(self.ca_dir, cluster_id)
        for n in self.nodes:
            self.make_node_cert(self.ca_dir, n.node_id, n.tls_dir)

    # -- certificates --------------------------------------------------------
    def strand(self, *args, timeout=60):
        return subprocess.run([str(self.binaries["strand"]), *map(str, args)],
                              capture_output=True, text=True, timeout=timeout)

    def make_ca(self, out, cluster_id):
        r = self.strand("cert", "ca", "--out", out, "--cluster-id", cluster_id)
        assert r.returncode == 0, r.stdout + r.stderr

    def make_node_cert(self, ca_dir, node_id, out):
        r = self.strand("cert", "node", "--ca", ca_dir, "--node-id", node_id,
                        "--ip", "127.0.0.1", "--out", out)
        assert r.returncode == 0, r.stdout + r.stderr
        shutil.copy2(ca_dir / "ca.pem", out / "ca.pem")

    # -- membership ------------------------------------------------------------
    @property
    def peers(self):
        return ",".join(f"{n.node_id}@127.0.0.1:{n.repl_port}" for n in self.nodes)

    @property
    def bootstrap(self):
        return ",".join(n.bootstrap for n in self.nodes)

    def node(self, node_id):
        [n] = [n for n in self.nodes if n.node_id == node_id]
        return n

    def live(self):
        return [n for n in self.nodes if n.alive() and not n.stopped]

    def live_bootstrap(self):
        return ",".join(n.bootstrap for n in self.live())

    def start(self, timeout_s=90):
        for n in self.nodes:
            n.spawn()
        deadline = time.monotonic() + timeout_s
        for n in self.nodes:
            while not kw.api_versions_ok(n.kafka_port, timeout=1.0):
                for m in self.nodes:
                    rc = m.proc.poll()
                    assert rc is None, f"node {m.node_id} exited with {rc}:\n{m.log_tail()}"
                assert time.monotonic() < deadline, f"node {n.node_id} does not answer:\n{n.log_tail()}"
                time.sleep(0.05)
        self.wait_formed(deadline - time.monotonic())

    def wait_formed(self, timeout_s=60):
        """Every live node answers Metadata listing every node as a broker, and names
        a controller."""
        ids = sorted(n.node_id for n in self.nodes)
        last = {}

        def formed():
            for n in self.live():
                md = n.metadata()
                last[n.node_id] = md and (sorted(md.brokers), md.controller)
                if md is None or sorted(md.brokers) != ids or md.controller not in ids:
                    return False
            return True

        wait_until(formed, timeout_s, lambda: f"a formed cluster; last answers {last}")

    # -- topics and state ------------------------------------------------------
    def create_topic(self, topic, partitions, rf=3, via=None):
        via = via or self.live()[0]
        r = self.strand("--bootstrap", via.bootstrap, "topic", "create", topic,
                        "--partitions", partitions, "--replication-factor", rf)
        assert r.returncode == 0, r.stdout + r.stderr
        return r

    def status(self, via=None, topic=None):
        """`strand cluster status --output json` through `via` (a live node)."""
        via = via or self.live()[0]
        r = self.strand("--bootstrap", via.bootstrap, "cluster", "status", "--output", "json",
                        *(["--topic", topic] if topic else []), timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout)

    def partitions(self, topic, via=None):
        """{partition: PartitionMeta} from `via` (default: the first live node), or
        None if it does not answer."""
        via = via or self.live()[0]
        md = via.metadata([topic])
        if md is None or topic not in md.topics or md.topics[topic][0] != 0:
            return None
        return md.topics[topic][1]

    def wait_in_sync(self, topic, partitions, timeout_s=60, rf=3, via=None):
        """Every partition has a live leader and all `rf` replicas in its ISR, as
        every live node sees it (or `via` only). Returns the partitions' metadata."""
        last = {}

        def ok():
            for n in ([via] if via else self.live()):
                parts = self.partitions(topic, via=n)
                last[n.node_id] = parts
                if parts is None or len(parts) != partitions:
                    return None
                for m in parts.values():
                    if (m.leader < 0 or len(m.replicas) != rf
                            or sorted(m.isr) != sorted(m.replicas)):
                        return None
            return last[(via or self.live()[0]).node_id]

        return wait_until(ok, timeout_s, lambda: f"{topic}: every replica in sync; last {last}")

    def kill_all(self):
        for n in self.nodes:
            if n.alive():
                try:
                    if n.stopped:
                        n.cont()
                    n.kill9()
                except Exception:
                    n.proc.kill()


def wait_until(pred, timeout_s, what, interval_s=0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s:.1f}s waiting for {what() if callable(what) else what}")
        time.sleep(interval_s)


def make_cluster_fixture(request, binaries, size=3, extra_args=()):
    safe = "".join(c if c.isalnum() else "-" for c in request.node.name)[:50]
    root = TARGET / f"it-repl-{safe}-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(binaries, root, size=size, extra_args=extra_args)
    # conftest attaches these nodes' log tails to the report of a failing test.
    request.node.strand_nodes = list(cluster.nodes)
    return cluster


def _run_cluster(request, binaries, extra_args=()):
    cluster = make_cluster_fixture(request, binaries, extra_args=extra_args)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.kill_all()
        failed = any(getattr(request.node, f"rep_{w}", None) is not None
                     and getattr(request.node, f"rep_{w}").failed for w in ("setup", "call"))
        panicked = [n.node_id for n in request.node.strand_nodes
                    if "panicked at" in n.log_text()]
        if failed or panicked:
            # conftest attaches each node's log tail to the failing test's report.
            print(f"cluster data and logs kept in {cluster.root}")
        elif not os.environ.get("STRAND_IT_KEEP"):
            shutil.rmtree(cluster.root, ignore_errors=True)
        if panicked and not failed:
            pytest.fail(f"nodes {panicked} panicked (logs in {cluster.root})")


@pytest.fixture
def cluster3(request, binaries):
    """Three nodes, default election timeout (500 ms)."""
    yield from _run_cluster(request, binaries)


LONG_ELECTION_TIMEOUT_MS = 3000


@pytest.fixture
def cluster3_long_election(request, binaries):
    """Three nodes with a 3 s election timeout: a leader change that is faster than
    that was not an election after a timeout."""
    yield from _run_cluster(request, binaries,
                            ("--election-timeout-ms", str(LONG_ELECTION_TIMEOUT_MS)))
