"""Just enough of the Kafka wire format to poke a node with raw sockets.

Requests use header v1 (api_key i16, api_version i16, correlation_id i32,
client_id nullable string), which every non-flexible version takes. Responses are
a big-endian i32 size, then the correlation id, then the body.
"""

import errno
import socket
import struct
import time

API_PRODUCE = 0
API_FETCH = 1
API_LIST_OFFSETS = 2
API_METADATA = 3
API_API_VERSIONS = 18

UNSUPPORTED_VERSION = 35


def string(s):
    """A Kafka STRING / NULLABLE_STRING (i16 length)."""
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">h", len(b)) + b


def header_v1(api_key, api_version, correlation_id, client_id="strand-it"):
    return struct.pack(">hhi", api_key, api_version, correlation_id) + string(client_id)


def uvarint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def compact_string(s):
    b = s.encode()
    return uvarint(len(b) + 1) + b


def header_v2(api_key, api_version, correlation_id, client_id="strand-it"):
    """Header of flexible versions: v1 plus an empty tagged-field section."""
    return header_v1(api_key, api_version, correlation_id, client_id) + uvarint(0)


def api_versions_v3(correlation_id):
    body = compact_string("strand-it") + compact_string("1.0") + uvarint(0)
    return frame(header_v2(API_API_VERSIONS, 3, correlation_id) + body)


def frame(payload):
    """Prefix a payload with its big-endian i32 size."""
    return struct.pack(">i", len(payload)) + payload


def api_versions_v0(correlation_id):
    return frame(header_v1(API_API_VERSIONS, 0, correlation_id))


def metadata_v1(correlation_id, topics):
    """Metadata v1: topics is a list of names, or None for all topics."""
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics)) + b"".join(string(t) for t in topics)
    return frame(header_v1(API_METADATA, 1, correlation_id) + body)


def connect(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(sock, n, deadline):
    """n bytes, or fewer if the peer closed. Raises TimeoutError past deadline."""
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"got {len(buf)} of {n} bytes before the deadline")
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(buf))
        except socket.timeout as e:
            raise TimeoutError(f"got {len(buf)} of {n} bytes before the deadline") from e
        if not chunk:
            break
        buf += chunk
    return buf


def read_response(sock, timeout=5.0):
    """One response frame (without its size prefix), or None if the connection
    was closed (EOF or reset) before a whole frame arrived. Raises TimeoutError
    if neither happens within `timeout` seconds: that is a hang."""
    deadline = time.monotonic() + timeout
    try:
        size_bytes = recv_exact(sock, 4, deadline)
        if len(size_bytes) < 4:
            return None
        (size,) = struct.unpack(">i", size_bytes)
        assert 0 <= size < 64 << 20, f"implausible response size {size}"
        body = recv_exact(sock, size, deadline)
        if len(body) < size:
            return None
        return body
    except (ConnectionResetError, BrokenPipeError):
        return None
    except OSError as e:
        if e.errno in (errno.ECONNRESET, errno.EPIPE):
            return None
        raise


def parse_api_versions_v0(body):
    """(correlation_id, error_code, {api_key: (min, max)}) of an ApiVersions v0
    response body (as read_response returns it)."""
    correlation_id, error_code, n = struct.unpack_from(">ihi", body, 0)
    pos = 10
    keys = {}
    for _ in range(n):
        key, lo, hi = struct.unpack_from(">hhh", body, pos)
        pos += 6
        keys[key] = (lo, hi)
    assert pos == len(body), f"{len(body) - pos} trailing bytes in ApiVersions v0"
    return correlation_id, error_code, keys


def api_versions_ok(port, timeout=2.0):
    """True if the node at `port` answers ApiVersions v0 with error 0."""
    try:
        with connect(port, timeout=timeout) as s:
            s.sendall(api_versions_v0(7))
            body = read_response(s, timeout=timeout)
    except (OSError, TimeoutError):
        return False
    if body is None:
        return False
    corr, err, keys = parse_api_versions_v0(body)
    return corr == 7 and err == 0 and API_METADATA in keys


# ---------------------------------------------------------------------------
# Consumer groups: the group coordinator's requests (non-flexible versions, header
# v1) and a reader for their responses.

API_OFFSET_COMMIT = 8
API_OFFSET_FETCH = 9
API_FIND_COORDINATOR = 10
API_JOIN_GROUP = 11
API_HEARTBEAT = 12
API_LEAVE_GROUP = 13
API_SYNC_GROUP = 14
API_DESCRIBE_GROUPS = 15
API_LIST_GROUPS = 16
API_DELETE_GROUPS = 42
API_OFFSET_DELETE = 47

NONE = 0
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
FENCED_INSTANCE_ID = 82
GROUP_SUBSCRIBED_TO_TOPIC = 86


class Reader:
    """Reads the fields of a response body (as read_response returns it) in order."""

    def __init__(self, body, pos=0):
        self.body = body
        self.pos = pos

    def _unpack(self, fmt, size):
        (v,) = struct.unpack_from(fmt, self.body, self.pos)
        self.pos += size
        return v

    def i8(self):
        return self._unpack(">b", 1)

    def i16(self):
        return self._unpack(">h", 2)

    def i32(self):
        return self._unpack(">i", 4)

    def i64(self):
        return self._unpack(">q", 8)

    def string(self):
        """STRING or NULLABLE_STRING (None for length -1)."""
        n = self.i16()
        if n < 0:
            return None
        v = self.body[self.pos:self.pos + n].decode()
        self.pos += n
        return v

    def bytes_(self):
        """BYTES or NULLABLE_BYTES (None for length -1)."""
        n = self.i32()
        if n < 0:
            return None
        v = self.body[self.pos:self.pos + n]
        self.pos += n
        return v

    def array(self, item):
        n = self.i32()
        return [item(self) for _ in range(max(n, 0))]

    def done(self, what="response"):
        assert self.pos == len(self.body), (
            f"{len(self.body) - self.pos} trailing bytes in {what}: {self.body.hex()}")


def nbytes(b):
    """A Kafka BYTES / NULLABLE_BYTES (i32 length)."""
    if b is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(b)) + b


def array(items, encode):
    if items is None:
        return struct.pack(">i", -1)
    items = list(items)
    return struct.pack(">i", len(items)) + b"".join(encode(x) for x in items)


def request(api_key, api_version, correlation_id, body):
    """A framed non-flexible request (header v1)."""
    return frame(header_v1(api_key, api_version, correlation_id) + body)


def call(port, payload, timeout=10.0):
    """Send one framed request on a new connection and return the response body
    after the correlation id, or None if the node closed the connection instead."""
    with connect(port, timeout=timeout) as s:
        s.sendall(payload)
        body = read_response(s, timeout=timeout)
    if body is None:
        return None
    return body[4:]


# -- the consumer protocol's embedded formats (ConsumerProtocolSubscription /
#    ConsumerProtocolAssignment, version 0)

def consumer_subscription(topics, user_data=None):
    return struct.pack(">h", 0) + array(topics, string) + nbytes(user_data)


def consumer_assignment(assignment, user_data=None):
    """assignment: {topic: [partition, ...]}"""
    return (struct.pack(">h", 0)
            + array(sorted(assignment.items()),
                    lambda tp: string(tp[0]) + array(tp[1], lambda p: struct.pack(">i", p)))
            + nbytes(user_data))


def parse_consumer_assignment(data):
    """{topic: [partition, ...]} of a ConsumerProtocolAssignment (any version:
    fields after the first three are ignored)."""
    if not data:
        return {}
    r = Reader(data)
    r.i16()
    out = {}
    for topic, parts in r.array(lambda r: (r.string(), r.array(lambda r: r.i32()))):
        out[topic] = parts
    return out


# -- FindCoordinator v1

def find_coordinator_v1(correlation_id, key, key_type=0):
    return request(API_FIND_COORDINATOR, 1, correlation_id, string(key) + struct.pack(">b", key_type))


def parse_find_coordinator_v1(body):
    r = Reader(body)
    out = {"throttle_ms": r.i32(), "error": r.i16(), "message": r.string(),
           "node_id": r.i32(), "host": r.string(), "port": r.i32()}
    r.done("FindCoordinator v1")
    return out


# -- JoinGroup v2-v5

def join_group(correlation_id, version, group, session_timeout_ms, rebalance_timeout_ms,
               member_id="", instance_id=None, protocol_type="consumer", protocols=()):
    """protocols: [(name, metadata bytes)]. Versions 2-5 (v5 adds group_instance_id)."""
    assert 2 <= version <= 5, version
    body = (string(group) + struct.pack(">ii", session_timeout_ms, rebalance_timeout_ms)
            + string(member_id))
    if version >= 5:
        body += string(instance_id)
    body += string(protocol_type) + array(protocols, lambda p: string(p[0]) + nbytes(p[1]))
    return request(API_JOIN_GROUP, version, correlation_id, body)


def parse_join_group(body, version):
    assert 2 <= version <= 5, version
    r = Reader(body)
    out = {"throttle_ms": r.i32(), "error": r.i16(), "generation": r.i32(),
           "protocol_name": r.string(), "leader": r.string(), "member_id": r.string()}

    def member(r):
        m = {"member_id": r.string()}
        if version >= 5:
            m["instance_id"] = r.string()
        m["metadata"] = r.bytes_()
        return m

    out["members"] = r.array(member)
    r.done(f"JoinGroup v{version}")
    return out


# -- SyncGroup v3

def sync_group_v3(correlation_id, group, generation, member_id, instance_id=None, assignments=()):
    """assignments: [(member_id, assignment bytes)] (only the leader sends any)."""
    body = (string(group) + struct.pack(">i", generation) + string(member_id)
            + string(instance_id)
            + array(assignments, lambda a: string(a[0]) + nbytes(a[1])))
    return request(API_SYNC_GROUP, 3, correlation_id, body)


def parse_sync_group_v3(body):
    r = Reader(body)
    out = {"throttle_ms": r.i32(), "error": r.i16(), "assignment": r.bytes_()}
    r.done("SyncGroup v3")
    return out


# -- Heartbeat v3

def heartbeat_v3(correlation_id, group, generation, member_id, instance_id=None):
    body = string(group) + struct.pack(">i", generation) + string(member_id) + string(instance_id)
    return request(API_HEARTBEAT, 3, correlation_id, body)


def parse_heartbeat_v3(body):
    r = Reader(body)
    out = {"throttle_ms": r.i32(), "error": r.i16()}
    r.done("Heartbeat v3")
    return out


# -- LeaveGroup v3

def leave_group_v3(correlation_id, group, members):
    """members: [(member_id, instance_id or None)]"""
    body = string(group) + array(members, lambda m: string(m[0]) + string(m[1]))
    return request(API_LEAVE_GROUP, 3, correlation_id, body)


def parse_leave_group_v3(body):
    r = Reader(body)
    out = {"throttle_ms": r.i32(), "error": r.i16(),
           "members": r.array(lambda r: {"member_id": r.string(), "instance_id": r.string(),
                                         "error": r.i16()})}
    r.done("LeaveGroup v3")
    return out


# -- OffsetCommit v7

def offset_commit_v7(correlation_id, group, generation, member_id, offsets, instance_id=None):
    """offsets: {topic: {partition: offset}}; generation -1 and member id "" for a
    commit from outside the group (an admin client's)."""
    def partition(po):
        return struct.pack(">iqi", po[0], po[1], -1) + string(None)

    body = (string(group) + struct.pack(">i", generation) + string(member_id) + string(instance_id)
            + array(sorted(offsets.items()),
                    lambda t: string(t[0]) + array(sorted(t[1].items()), partition)))
    return request(API_OFFSET_COMMIT, 7, correlation_id, body)


def parse_offset_commit_v7(body):
    """{(topic, partition): error}"""
    r = Reader(body)
    r.i32()
    out = {}
    for name, parts in r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16())))):
        for p, err in parts:
            out[(name, p)] = err
    r.done("OffsetCommit v7")
    return out


# -- OffsetFetch v5

def offset_fetch_v5(correlation_id, group, topics=None):
    """topics: {topic: [partition, ...]}, or None for every committed offset."""
    body = string(group) + array(
        None if topics is None else sorted(topics.items()),
        lambda t: string(t[0]) + array(t[1], lambda p: struct.pack(">i", p)))
    return request(API_OFFSET_FETCH, 5, correlation_id, body)


def parse_offset_fetch_v5(body):
    """(top-level error, {(topic, partition): (offset, error)})"""
    r = Reader(body)
    r.i32()
    parts = {}

    def partition(r):
        return r.i32(), r.i64(), r.i32(), r.string(), r.i16()

    for name, ps in r.array(lambda r: (r.string(), r.array(partition))):
        for p, off, _epoch, _meta, err in ps:
            parts[(name, p)] = (off, err)
    error = r.i16()
    r.done("OffsetFetch v5")
    return error, parts


# -- OffsetDelete v0

def offset_delete_v0(correlation_id, group, topics):
    """topics: {topic: [partition, ...]}"""
    body = string(group) + array(
        sorted(topics.items()),
        lambda t: string(t[0]) + array(t[1], lambda p: struct.pack(">i", p)))
    return request(API_OFFSET_DELETE, 0, correlation_id, body)


def parse_offset_delete_v0(body):
    """(top-level error, {(topic, partition): error})"""
    r = Reader(body)
    error = r.i16()
    r.i32()
    parts = {}
    for name, ps in r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16())))):
        for p, err in ps:
            parts[(name, p)] = err
    r.done("OffsetDelete v0")
    return error, parts
