"""Bad bytes on the Kafka port: the node answers with an error or closes that
one connection, promptly; it never hangs, never dies, never leaks the
connection, and keeps serving a healthy client all along."""

import errno
import random
import socket
import struct
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

import kafka_wire as kw
from helpers import consumer, producer, wait_until

REQUEST_BYTES_MAX = 4 << 20
ANSWER_S = 5  # how long the node may take to answer or close


class Healthy:
    """A librdkafka producer and consumer that must keep working throughout."""

    def __init__(self, node):
        self.node = node
        self.topic = "healthy"
        self.p = producer(node.bootstrap, **{"linger.ms": 0, "message.timeout.ms": 15_000})
        self.c = consumer(node.bootstrap, **{"fetch.wait.max.ms": 100})
        self.c.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        self.n = 0

    def check(self, after):
        assert self.node.alive(), f"node died after: {after}\n{self.node.log_tail()}"
        self.n += 1
        value = b"ok-%d" % self.n
        got = []
        self.p.produce(self.topic, value=value, partition=0,
                       on_delivery=lambda err, m: got.append(err))
        assert self.p.flush(15) == 0, f"produce stuck after: {after}"
        assert got == [None], f"produce failed after {after}: {got}"
        deadline = time.monotonic() + 15
        while True:
            assert time.monotonic() < deadline, f"consumer did not see {value} after: {after}"
            m = self.c.poll(0.2)
            if m is not None and m.error() is None and m.value() == value:
                return

    def close(self):
        self.c.close()


def exchange(node, payload, shut_wr=False, timeout=ANSWER_S):
    """Send `payload` on a new connection (optionally half-closing it), then read
    responses until the node closes the connection. Returns the responses. Fails
    if the node neither answers nor closes within `timeout` seconds of the last
    bytes received."""
    s = kw.connect(node.port)
    responses = []
    try:
        try:
            s.sendall(payload)
            if shut_wr:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError, OSError) as e:
            # Closed while we were still sending (or before our half-close): fine.
            if isinstance(e, (BrokenPipeError, ConnectionResetError)) or e.errno == errno.ENOTCONN:
                return responses
            raise
        while True:
            try:
                # Once answered, the connection may stay open for the next request.
                r = kw.read_response(s, timeout=0.1 if responses else timeout)
            except TimeoutError:
                if responses and not shut_wr:
                    return responses  # answered, and waits for the next request
                raise AssertionError(
                    f"node neither answered nor closed within {timeout}s "
                    f"(payload {payload[:32].hex()}..., {len(payload)} bytes)")
            if r is None:
                return responses
            responses.append(r)
    finally:
        s.close()


def expect_closed(node, payload, what, shut_wr=False):
    """The node must close the connection, without answering."""
    responses = exchange(node, payload, shut_wr=shut_wr)
    assert responses == [], f"{what}: expected a close, got {len(responses)} response(s)"


def correlation(resp):
    return struct.unpack_from(">i", resp, 0)[0]


def open_sockets(node):
    """Server-side sockets the node still holds open: ESTABLISHED or CLOSE_WAIT
    (TIME_WAIT and orphaned FIN_WAIT sockets belong to the kernel)."""
    return [s for s in node.server_sockets() if s[0] in ("01", "08")]


def no_leaked_sockets(node, baseline, what):
    """The node's open sockets return to what the healthy client holds."""
    wait_until(lambda: len(open_sockets(node)) <= baseline, 10,
               f"node to close its side of the connections after: {what} "
               f"(sockets: {open_sockets(node)}, baseline {baseline})")


@pytest.mark.node_args("--request-bytes-max", str(REQUEST_BYTES_MAX))
def test_malformed_input_battery(node, cli):
    r = cli(node, "topic", "create", "healthy")
    assert r.returncode == 0, r.stderr
    healthy = Healthy(node)
    healthy.check("start")
    rss_before = node.rss_bytes()
    baseline = len(open_sockets(node))
    cases = []

    def case(what):
        def wrap(fn):
            cases.append((what, fn))
            return fn
        return wrap

    # -- framing -------------------------------------------------------------
    for seed in range(6):
        @case(f"random bytes, seed {seed}, then half-close")
        def _(seed=seed):
            rng = random.Random(seed)
            exchange(node, rng.randbytes(rng.randint(1, 8192)), shut_wr=True)

    for seed in range(6):
        @case(f"random frame body, seed {seed}")
        def _(seed=seed):
            rng = random.Random(100 + seed)
            exchange(node, kw.frame(rng.randbytes(rng.randint(0, 2048))))

    @case("length prefix longer than the data, then close")
    def _():
        s = kw.connect(node.port)
        s.sendall(struct.pack(">i", 1000) + b"x" * 10)
        s.close()
        no_leaked_sockets(node, baseline, "length prefix longer than the data, then close")

    @case("length prefix longer than the data, then half-close")
    def _():
        expect_closed(node, struct.pack(">i", 1000) + b"x" * 10, "short frame", shut_wr=True)

    @case("half a length prefix, then half-close")
    def _():
        expect_closed(node, b"\x00\x00", "half prefix", shut_wr=True)

    @case("2 GiB length prefix (0x7fffffff)")
    def _():
        expect_closed(node, struct.pack(">i", 0x7FFFFFFF) + b"\x00" * 64, "2 GiB prefix")

    for size in (-1, -(2**31), -4096):
        @case(f"negative length prefix {size}")
        def _(size=size):
            expect_closed(node, struct.pack(">i", size) + b"\x00" * 16, f"length {size}")

    @case("frame over --request-bytes-max (prefix only)")
    def _():
        expect_closed(node, struct.pack(">i", REQUEST_BYTES_MAX + 1), "oversize prefix")

    @case("frame over --request-bytes-max (with 1 MiB of its body)")
    def _():
        expect_closed(node, struct.pack(">i", REQUEST_BYTES_MAX + 1) + bytes(1 << 20), "oversize")

    @case("frame of exactly --request-bytes-max bytes of junk")
    def _():
        body = kw.header_v1(kw.API_METADATA, 1, 77) + struct.pack(">i", 1)
        body += bytes(REQUEST_BYTES_MAX - len(body))
        # A Metadata v1 request for topic "" followed by zeroes: trailing bytes are
        # ignored as Apache Kafka does, so an answer is as good as a close.
        for resp in exchange(node, kw.frame(body)):
            assert correlation(resp) == 77

    @case("empty frame")
    def _():
        expect_closed(node, kw.frame(b""), "empty frame")

    # -- headers ---------------------------------------------------------------
    @case("truncated header (5 bytes)")
    def _():
        expect_closed(node, kw.frame(struct.pack(">hhb", kw.API_API_VERSIONS, 0, 0)),
                      "truncated header")

    @case("client_id longer than the frame")
    def _():
        payload = struct.pack(">hhih", kw.API_METADATA, 1, 5, 100) + b"abc"
        expect_closed(node, kw.frame(payload), "client_id overrun")

    @case("truncated Metadata v1 body (2 topics claimed, 1 sent)")
    def _():
        body = struct.pack(">i", 2) + kw.string("healthy")
        expect_closed(node, kw.frame(kw.header_v1(kw.API_METADATA, 1, 6) + body),
                      "truncated body")

    @case("valid Metadata v1 cut short inside its frame, then half-close")
    def _():
        full = kw.metadata_v1(8, ["healthy"])
        expect_closed(node, full[: len(full) - 3], "cut frame", shut_wr=True)

    for key in (999, -1, 40, 32767):
        @case(f"unknown / unserved API key {key}")
        def _(key=key):
            expect_closed(node, kw.frame(kw.header_v1(key, 0, 9)), f"API key {key}")

    @case("Metadata v99 (unsupported version)")
    def _():
        responses = exchange(node, kw.frame(kw.header_v1(kw.API_METADATA, 99, 10)))
        # Kafka closes the connection; an error response would also do.
        for resp in responses:
            assert correlation(resp) == 10

    @case("ApiVersions v99 -> UNSUPPORTED_VERSION in a v0 body (KIP-511)")
    def _():
        s = kw.connect(node.port)
        try:
            s.sendall(kw.frame(kw.header_v1(kw.API_API_VERSIONS, 99, 11)))
            resp = kw.read_response(s, timeout=ANSWER_S)
            assert resp is not None, "connection closed instead of an ApiVersions error"
            corr, err, keys = kw.parse_api_versions_v0(resp)
            assert corr == 11
            assert err == kw.UNSUPPORTED_VERSION, err
            assert keys.get(kw.API_API_VERSIONS, (None, None))[0] == 0, keys
            assert kw.API_METADATA in keys and kw.API_PRODUCE in keys, keys
            # The client then retries at a version it found: same connection.
            s.sendall(kw.api_versions_v3(12))
            resp = kw.read_response(s, timeout=ANSWER_S)
            assert resp is not None and correlation(resp) == 12
            assert struct.unpack_from(">h", resp, 4)[0] == 0  # error_code NONE (v3 header v0)
        finally:
            s.close()

    # -- hostile counts inside bodies ------------------------------------------
    @case("Metadata v1 claiming 2^31-1 topics")
    def _():
        body = struct.pack(">i", 0x7FFFFFFF) + kw.string("healthy")
        expect_closed(node, kw.frame(kw.header_v1(kw.API_METADATA, 1, 13) + body),
                      "2^31 topics")

    @case("Metadata v9 (flexible) claiming 2^32-2 topics")
    def _():
        body = kw.uvarint(0xFFFFFFFF) + b"\x00" * 8
        expect_closed(node, kw.frame(kw.header_v2(kw.API_METADATA, 9, 14) + body),
                      "compact 2^32 topics")

    @case("CreateTopics v0 claiming 2^31-1 topics")
    def _():
        body = struct.pack(">i", 0x7FFFFFFF) + kw.string("x") + b"\x00" * 32
        expect_closed(node, kw.frame(kw.header_v1(19, 0, 15) + body), "2^31 new topics")

    @case("Produce v3 claiming 2^31-1 partitions")
    def _():
        body = kw.string(None) + struct.pack(">hii", 1, 1000, 1) + kw.string("healthy")
        body += struct.pack(">i", 0x7FFFFFFF) + b"\x00" * 16
        expect_closed(node, kw.frame(kw.header_v1(kw.API_PRODUCE, 3, 16) + body),
                      "2^31 partitions")

    @case("Produce v3 with a garbage record batch")
    def _():
        junk = random.Random(7).randbytes(200)
        body = kw.string(None) + struct.pack(">hii", 1, 1000, 1) + kw.string("healthy")
        body += struct.pack(">iii", 1, 0, len(junk)) + junk
        resp = exchange(node, kw.frame(kw.header_v1(kw.API_PRODUCE, 3, 17) + body))
        # CORRUPT_MESSAGE (2) or INVALID_RECORD (87) for the partition, or a close.
        for r in resp:
            corr, n_topics = struct.unpack_from(">ii", r, 0)
            assert (corr, n_topics) == (17, 1), r.hex()
            (name_len,) = struct.unpack_from(">h", r, 8)
            pos = 10 + name_len
            n_parts, index, error_code = struct.unpack_from(">iih", r, pos)
            assert (n_parts, index) == (1, 0), r.hex()
            assert error_code in (2, 87), f"garbage batch answered with error {error_code}"

    # -- fuzzed bodies behind valid headers, for every served API ----------------
    s = kw.connect(node.port)
    s.sendall(kw.api_versions_v0(1))
    _, _, served = kw.parse_api_versions_v0(kw.read_response(s))
    s.close()
    for key, (lo, hi) in sorted(served.items()):
        for version in sorted({lo, hi}):
            @case(f"API {key} v{version} with random bodies")
            def _(key=key, version=version):
                rng = random.Random(key * 1000 + version)
                for i in range(4):
                    corr = 1000 + i
                    body = rng.randbytes(rng.choice([0, 1, 7, 33, 300]))
                    # The header version does not matter to a hostile client; send
                    # both kinds.
                    header = (kw.header_v2 if i % 2 else kw.header_v1)(key, version, corr)
                    for resp in exchange(node, kw.frame(header + body)):
                        assert correlation(resp) == corr

    @case("bit flips in a valid Metadata v1 and ApiVersions v3")
    def _():
        rng = random.Random(4242)
        for base in (kw.metadata_v1(21, ["healthy"]), kw.api_versions_v3(21)):
            for _ in range(25):
                b = bytearray(base)
                for _ in range(rng.randint(1, 3)):
                    pos = rng.randrange(4, len(b))  # keep the length prefix
                    b[pos] ^= 1 << rng.randrange(8)
                exchange(node, bytes(b))

    # -- many connections ----------------------------------------------------------
    @case("300 connections opened and dropped")
    def _():
        for i in range(300):
            s = kw.connect(node.port)
            if i % 3 == 0:
                s.sendall(b"\x00\x00\x00\x10abc")
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # with SO_LINGER 0: a reset
        no_leaked_sockets(node, baseline, "300 dropped connections")

    # -- run -------------------------------------------------------------------------
    # Every case runs even when an earlier one failed, so one report lists them all.
    t0 = time.monotonic()
    failures = []
    for what, fn in cases:
        t1 = time.monotonic()
        try:
            fn()
        except AssertionError as e:
            failures.append(f"{what}: {e}")
        try:
            healthy.check(what)
        except AssertionError as e:
            failures.append(f"healthy client after {what}: {e}")
            if not node.alive():
                break
        if time.monotonic() - t1 > 2:
            print(f"slow case: {what}: {time.monotonic() - t1:.1f}s")
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)
    no_leaked_sockets(node, baseline, "the whole battery")
    rss_after = node.rss_bytes()
    healthy.close()
    print(f"{len(cases)} cases in {time.monotonic() - t0:.1f}s; "
          f"RSS {rss_before >> 20} -> {rss_after >> 20} MiB")
    assert rss_after - rss_before < 200 << 20, (
        f"RSS grew from {rss_before >> 20} MiB to {rss_after >> 20} MiB")
    assert "panicked" not in node.log_text()


@pytest.mark.node_args("--request-bytes-max", str(REQUEST_BYTES_MAX))
def test_unfinished_large_frames_do_not_starve_others(node, cli):
    """Slow or stalled senders must not stop the node serving everyone else.
    32 connections each announce a frame just under --request-bytes-max and send
    1 MiB of it, then stall. Kafka would keep serving other connections (its
    request memory pool is unbounded by default, and idle connections are closed
    after connections.max.idle.ms); here the healthy client must keep producing
    and consuming, and memory must stay bounded."""
    r = cli(node, "topic", "create", "healthy")
    assert r.returncode == 0, r.stderr
    healthy = Healthy(node)
    healthy.check("start")
    rss_before = node.rss_bytes()
    baseline = len(open_sockets(node))
    socks = []
    try:
        for _ in range(32):
            s = kw.connect(node.port)
            s.sendall(struct.pack(">i", REQUEST_BYTES_MAX - 8) + bytes(1 << 20))
            socks.append(s)
        try:
            healthy.check("32 unfinished near-limit frames open")
            assert kw.api_versions_ok(node.port, timeout=5), (
                "a new connection gets no ApiVersions answer while 32 frames are unfinished")
        finally:
            rss = node.rss_bytes()
        assert rss - rss_before < 200 << 20, f"RSS grew {(rss - rss_before) >> 20} MiB"
    finally:
        for s in socks:
            s.close()
        no_leaked_sockets(node, baseline, "closing 32 unfinished frames")
        healthy.close()
