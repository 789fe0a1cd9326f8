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
