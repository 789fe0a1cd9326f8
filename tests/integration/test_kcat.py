"""kcat 1.7.1 on librdkafka 2.0.2 (Debian 12): a compatibility canary. That
librdkafka drops the connection when a flexible-version response carries tagged
fields it does not expect, so every kcat run below must finish without a
disconnect or error line."""

import re
import shutil
import subprocess
import time

import pytest

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")

BAD_LOG = re.compile(r"disconnect|fail|error|%[0-3]\|", re.IGNORECASE)


def kcat(node, *args, input=None, timeout=30, check=True):
    r = subprocess.run(
        ["kcat", "-b", node.bootstrap, "-X", "broker.address.family=v4", *args],
        input=input, capture_output=True, text=True, timeout=timeout,
    )
    if check:
        assert r.returncode == 0, f"kcat {args} exited {r.returncode}: {r.stderr}"
        bad = [l for l in r.stderr.splitlines() if BAD_LOG.search(l)]
        assert not bad, f"kcat {args} logged problems:\n" + "\n".join(bad)
    return r


def test_kcat_roundtrip(node, cli):
    topic = "kcat-rt"
    r = cli(node, "topic", "create", topic, "--partitions", 3)
    assert r.returncode == 0, r.stderr

    # Metadata: the topic and its partitions, led by this node.
    md = kcat(node, "-L", "-t", topic).stdout
    assert f'topic "{topic}" with 3 partitions' in md, md
    for q in range(3):
        assert re.search(rf"partition {q}, leader 0, replicas: 0, isrs: 0", md), md
    assert f"broker 0 at {node.bootstrap}" in md, md
    # All topics, and the same with api.version.request spelled out (its default).
    assert f'topic "{topic}"' in kcat(node, "-L").stdout
    assert f'topic "{topic}"' in kcat(node, "-X", "api.version.request=true", "-L").stdout

    # Produce: keyed lines, two runs so that the second one's timestamps are later.
    first = [f"key{i % 7}:value-{i}" for i in range(300)]
    kcat(node, "-P", "-t", topic, "-K:", "-z", "snappy", input="\n".join(first) + "\n")
    time.sleep(0.05)
    boundary_ms = int(time.time() * 1000)
    time.sleep(0.05)
    second = [f"key{i % 7}:value-{i}" for i in range(300, 400)]
    kcat(node, "-P", "-t", topic, "-K:", "-H", "origin=kcat", "-X", "api.version.request=true",
         input="\n".join(second) + "\n")

    # Consume everything back and exit at the end (-e).
    out = kcat(node, "-C", "-t", topic, "-e", "-f", "%p|%o|%k|%s|%h|%T\n").stdout
    rows = [l.split("|") for l in out.splitlines()]
    assert len(rows) == 400, out[-2000:]
    got = {}
    key_part = {}
    by_part = {}
    for part, off, key, value, headers, ts in rows:
        i = int(value.split("-")[1])
        assert key == f"key{i % 7}", (key, value)
        assert value not in got, f"{value} consumed twice"
        got[value] = (int(part), int(off), int(ts))
        assert key_part.setdefault(key, part) == part, f"{key} in two partitions"
        by_part.setdefault(int(part), []).append((int(off), i))
        assert headers == ("origin=kcat" if i >= 300 else ""), (i, headers)
    assert set(got) == {f"value-{i}" for i in range(400)}
    for part, rs in by_part.items():
        assert [o for o, _ in rs] == list(range(len(rs))), f"partition {part} offsets"
        assert [i for _, i in rs] == sorted(i for _, i in rs), f"partition {part} order"

    # Query offsets by timestamp (-Q, ListOffsets v1+, KIP-79): the first record
    # at or after the boundary is the first of the second run in each partition.
    for q in range(3):
        want_first = min((o for o, i in by_part.get(q, []) if i >= 300), default=None)
        end = len(by_part.get(q, []))
        res = kcat(node, "-Q", "-t", f"{topic}:{q}:{boundary_ms}").stdout
        m = re.search(rf"{topic} \[{q}\] offset (-?\d+)", res)
        assert m, res
        assert int(m.group(1)) == (want_first if want_first is not None else -1), (q, res)
        res = kcat(node, "-Q", "-t", f"{topic}:{q}:0").stdout
        assert re.search(rf"{topic} \[{q}\] offset 0\b", res) or end == 0, res
        res = kcat(node, "-Q", "-t", f"{topic}:{q}:{int(time.time() * 1000) + 60_000}").stdout
        assert re.search(rf"{topic} \[{q}\] offset -1\b", res), res

    # Consume from a timestamp (-o s@, offsets_for_times under the hood).
    out = kcat(node, "-C", "-t", topic, "-e", "-o", f"s@{boundary_ms}", "-f", "%s\n").stdout
    assert sorted(out.split()) == sorted(f"value-{i}" for i in range(300, 400))
