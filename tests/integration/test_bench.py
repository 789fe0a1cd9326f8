"""strand-bench against real nodes: its files, its coordinated-omission
correction (against a node stopped on purpose with SIGSTOP), its errors, Ctrl-C,
and a short suite run so the bench cannot rot."""

import json
import re
import signal
import subprocess
import threading
import time

import pytest
from hdrh.log import HistogramLogReader

from conftest import TARGET


def bench(binaries, *args, timeout=120, **kw):
    return subprocess.run(
        [str(binaries["strand-bench"]), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, **kw,
    )


def out_dir(name):
    d = TARGET / f"it-bench-{name}-{time.monotonic_ns()}"
    d.mkdir(parents=True)
    return d


def start_bench(binaries, *args):
    """Starts strand-bench; returns (process, event set once its first progress line
    is out, i.e. once producing has started, and the list of stderr lines)."""
    proc = subprocess.Popen([str(binaries["strand-bench"]), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = threading.Event()
    lines = []

    def pump():
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("["):
                started.set()
        started.set()

    threading.Thread(target=pump, daemon=True).start()
    return proc, started, lines


def finish(proc, lines, timeout):
    stdout = proc.stdout.read() if proc.wait(timeout=timeout) is not None else ""
    time.sleep(0.1)
    return stdout, "".join(lines)


def log_intervals(path):
    """(start offset, length) of every interval line of an interval log."""
    out = []
    for line in path.read_text().splitlines():
        if line and line[0].isdigit():
            start, length = line.split(",")[:2]
            out.append((float(start), float(length)))
    return out


def read_log(path):
    """Every interval histogram of an interval log, via the hdrhistogram package."""
    reader = HistogramLogReader(str(path), None)
    hists = []
    while True:
        h = reader.get_next_interval_histogram()
        if h is None:
            return hists
        hists.append(h)


def count_above(hists, value_us):
    total = 0
    for h in hists:
        for item in h.get_recorded_iterator():
            if item.value_iterated_to >= value_us:
                total += item.count_added_in_this_iter_step
    return total


def test_run_writes_consistent_files(node, binaries):
    out = out_dir("run")
    r = bench(binaries, "--bootstrap", node.bootstrap, "--topic", "bench-files",
              "--partitions", "4", "--producers", "2", "--consumers", "1",
              "--rate", "2000", "--duration", "3s", "--warmup", "1s",
              "--out", out, "--label", "files")
    assert r.returncode == 0, r.stderr
    for name in ("summary.json", "produce.hgrm", "produce-service.hgrm", "end-to-end.hgrm",
                 "produce.hlog", "produce-service.hlog", "end-to-end.hlog", "latency.svg"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    res = summary["results"]
    assert summary["workload"]["producers"] == 2
    assert summary["machine"]["git_revision"]
    # Open loop at 2000 msg/s for ~3 s measured.
    assert 0.8 * 2000 <= res["produce"]["messages_per_sec"] <= 1.2 * 2000, res["produce"]
    assert res["errors"] == 0
    assert res["produce_latency"]["p50_ms"] <= res["produce_latency"]["p99_ms"] <= res["produce_latency"]["max_ms"]
    # The interval logs hold what the summary counts: the measured intervals.
    hists = read_log(out / "produce.hlog")
    assert len(hists) >= 3
    assert sum(h.get_total_count() for h in hists) == res["produce_latency"]["count"]
    e2e = read_log(out / "end-to-end.hlog")
    assert sum(h.get_total_count() for h in e2e) == res["end_to_end_latency"]["count"] > 0
    # Every message acknowledged in the measured time was also consumed.
    assert res["end_to_end_latency"]["count"] >= 0.9 * res["produce_latency"]["count"]
    # The .hgrm's last line is the maximum of the whole run, in milliseconds.
    rows = [l.split() for l in (out / "produce.hgrm").read_text().splitlines()
            if re.match(r"^\s+\d", l)]
    assert float(rows[-1][1]) == 1.0
    assert abs(float(rows[-1][0]) - res["produce_latency"]["max_ms"]) <= 0.01 * res["produce_latency"]["max_ms"] + 0.001
    assert "(warm-up)" in r.stderr and "produce" in r.stderr  # the live progress lines


def test_open_loop_counts_the_stall_a_closed_loop_hides(node, binaries):
    """Stop the node for 1 s in the middle of an open-loop run at 2000 msg/s. Every
    message meant for that second waits for the node: about 2000 messages, half of
    them more than 500 ms. Measured from the request write (what a closed-loop client
    reports), only the few requests in flight at the stall see it."""
    out = out_dir("co")
    proc, started, lines = start_bench(
        binaries, "--bootstrap", node.bootstrap, "--topic", "bench-co",
        "--producers", "1", "--consumers", "0", "--rate", "2000", "--linger", "1ms",
        "--duration", "5s", "--warmup", "0s", "--out", out)
    assert started.wait(30), "no progress line"
    time.sleep(1.0)
    node.proc.send_signal(signal.SIGSTOP)
    stall_s = 1.0
    time.sleep(stall_s)
    node.proc.send_signal(signal.SIGCONT)
    _, stderr = finish(proc, lines, 60)
    assert proc.returncode == 0, stderr
    corrected = read_log(out / "produce.hlog")
    service = read_log(out / "produce-service.hlog")
    expected_over_half = 2000 * stall_s / 2
    over_corrected = count_above(corrected, 500_000)
    over_service = count_above(service, 500_000)
    assert over_corrected >= 0.6 * expected_over_half, (over_corrected, over_service)
    assert over_service <= 0.2 * over_corrected, (over_corrected, over_service)
    res = json.loads((out / "summary.json").read_text())["results"]
    assert res["produce_latency"]["max_ms"] >= 0.8 * stall_s * 1000
    # Nothing was dropped to catch up: the whole schedule was sent.
    assert res["produce_latency"]["count"] == 2000 * 5
    # The intervals tile the run: none overlaps the next.
    iv = log_intervals(out / "produce.hlog")
    for (s0, l0), (s1, _) in zip(iv, iv[1:]):
        assert s1 >= s0 + l0 - 0.002, iv


def test_a_stall_across_the_end_is_still_counted(node, binaries):
    """The node stops 1 s before the end and resumes 1.5 s after it: the messages due
    in that last second are still sent and charged their whole wait."""
    out = out_dir("co-end")
    proc, started, lines = start_bench(
        binaries, "--bootstrap", node.bootstrap, "--topic", "bench-co-end", "--consumers", "0",
        "--rate", "1000", "--duration", "3s", "--warmup", "0s", "--out", out)
    assert started.wait(30), "no progress line"  # 1 s into the run
    time.sleep(1.0)
    node.proc.send_signal(signal.SIGSTOP)
    time.sleep(2.0)
    node.proc.send_signal(signal.SIGCONT)
    _, stderr = finish(proc, lines, 60)
    assert proc.returncode == 0, stderr
    res = json.loads((out / "summary.json").read_text())["results"]
    assert res["produce_latency"]["count"] == 3000, res
    assert res["produce_latency"]["max_ms"] >= 1500, res
    # The throughput counts what was acknowledged within the measured 3 s: not the
    # messages whose acknowledgements the stall pushed past the end.
    assert res["produce"]["messages"] <= 2600, res


def test_clean_errors(node, binaries):
    r = bench(binaries, "--bootstrap", "127.0.0.1:1", "--duration", "1s")
    assert r.returncode == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in r.stderr, r.stderr
    assert "panicked" not in r.stderr

    r = bench(binaries, "--bootstrap", node.bootstrap, "--topic", "no-such-topic",
              "--no-create", "--duration", "1s")
    assert r.returncode == 1
    assert "topic no-such-topic does not exist" in r.stderr, r.stderr

    r = bench(binaries, "--message-size", "12parsecs")
    assert r.returncode == 2
    assert "--message-size" in r.stderr and "size unit" in r.stderr, r.stderr

    r = bench(binaries, "--bootstrap", node.bootstrap, "--message-size", "4")
    assert r.returncode == 1
    assert "--message-size 4B is too small" in r.stderr, r.stderr

    r = bench(binaries, "--bootstrap", node.bootstrap, "--rate=-5")
    assert r.returncode == 1
    assert "--rate -5 must be a positive number" in r.stderr, r.stderr


def test_ctrl_c_writes_what_was_measured(node, binaries):
    out = out_dir("sigint")
    proc, started, lines = start_bench(
        binaries, "--bootstrap", node.bootstrap, "--topic", "bench-int",
        "--rate", "1000", "--duration", "60s", "--warmup", "0s", "--out", out)
    assert started.wait(30), "no progress line"
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = finish(proc, lines, 30)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["results"]["interrupted"] is True
    count = summary["results"]["produce_latency"]["count"]
    assert 2500 <= count <= 6000, count
    assert len(read_log(out / "produce.hlog")) >= 3
    assert (out / "produce.hgrm").read_text().strip().splitlines()[-1].startswith("#[Buckets")


def test_ctrl_c_in_the_warm_up_reports_no_rate(node, binaries):
    out = out_dir("sigint-warmup")
    proc, started, lines = start_bench(
        binaries, "--bootstrap", node.bootstrap, "--topic", "bench-int-warm",
        "--rate", "1000", "--duration", "60s", "--warmup", "30s", "--out", out)
    assert started.wait(30), "no progress line"
    proc.send_signal(signal.SIGINT)
    _, stderr = finish(proc, lines, 30)
    assert proc.returncode == 130, stderr
    res = json.loads((out / "summary.json").read_text())["results"]
    assert res["measured_secs"] == 0 and res["produce"]["messages_per_sec"] == 0, res


def test_ctrl_c_with_the_node_stopped_ends_promptly(node, binaries):
    out = out_dir("sigint-stalled")
    proc, started, lines = start_bench(
        binaries, "--bootstrap", node.bootstrap, "--topic", "bench-int-stall",
        "--rate", "1000", "--duration", "60s", "--warmup", "0s", "--out", out)
    assert started.wait(30), "no progress line"
    node.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = finish(proc, lines, 30)
        took = time.monotonic() - t0
    finally:
        node.proc.send_signal(signal.SIGCONT)
    assert proc.returncode in (1, 130), stderr
    assert took < 10, took
    # One line per interval, not a flood.
    assert len(log_intervals(out / "produce.hlog")) < 20
    assert stderr.count("\n[") < 20


def test_embedded_suite_quick(binaries):
    """The suite end to end, in a few seconds: probe, embedded node, 8 scenarios."""
    out = out_dir("suite")
    r = bench(binaries, "suite", "--out", out, "--quick", "--duration", "1s",
              "--warmup", "0s", "--embedded-dir", TARGET, timeout=240)
    assert r.returncode == 0, r.stderr + r.stdout
    lines = r.stdout.strip().splitlines()
    assert re.fullmatch(r"durable_produce_vs_disk: \d+\.\d\d", lines[-1]), lines[-3:]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["scenarios"]) == 8
    assert summary["disk"]["sequential_write_bytes_per_sec"] > 0
    for s in summary["scenarios"]:
        name = s["scenario"]["name"]
        assert s["results"]["produce"]["messages"] > 0, name
        assert s["results"]["errors"] == 0, name
        for f in ("produce.hgrm", "produce.hlog", "summary.json", "latency.svg"):
            assert (out / name / f).exists(), (name, f)
    # The 50% runs ran at half the max runs' rate.
    by = {s["scenario"]["name"]: s for s in summary["scenarios"]}
    for p in (1, 4):
        for n in (1, 16):
            mx, half = by[f"p{p}-n{n}-max"], by[f"p{p}-n{n}-half"]
            assert half["results"]["target_rate"] == pytest.approx(
                mx["results"]["produce"]["messages_per_sec"] * 0.5)
    assert (out / "latency.svg").exists() and (out / "disk-profile.json").exists()
    assert abs(float(lines[-1].split()[-1]) - summary["durable_produce_vs_disk"]) < 0.006
    assert summary["durable_produce_vs_disk"] == pytest.approx(by["p4-n16-max"]["produce_vs_disk"])
    assert summary["half_rate_p99_vs_fdatasync_p99"] == pytest.approx(
        by["p4-n16-half"]["results"]["produce_latency"]["p99_ms"] * 1000
        / summary["disk"]["fdatasync"]["p99_us"])
    # Each scenario's topic is deleted once measured.
    assert "cannot delete topic" not in r.stderr, r.stderr


def test_suite_refuses_bad_flags(binaries):
    r = bench(binaries, "suite", "--out", out_dir("suite-bad"), "--max-in-flight", "0")
    assert r.returncode == 2 and "--max-in-flight" in r.stderr, r.stderr


@pytest.mark.parametrize("codec", ["lz4", "zstd", "gzip", "snappy"])
def test_keyed_compressed_messages_round_trip(node, binaries, cli, codec):
    """Keyed, compressed batches: every acknowledged message is consumed (the consumer
    decompresses them to read the send time), spread over the partitions by key."""
    out = out_dir(f"keyed-{codec}")
    topic = f"bench-keyed-{codec}"
    r = bench(binaries, "--bootstrap", node.bootstrap, "--topic", topic, "--partitions", "4",
              "--keyed", "--key-count", "100", "--compression", codec, "--rate", "3000",
              "--consumers", "1", "--duration", "2s", "--warmup", "0s", "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "summary.json").read_text())["results"]
    assert res["errors"] == 0
    assert res["produce_latency"]["count"] >= 0.9 * 3000 * 2
    assert res["end_to_end_latency"]["count"] == res["produce_latency"]["count"]
    status = json.loads(cli(node, "cluster", "status", "--topic", topic, "--output", "json").stdout)
    ends = [p["end_offset"] for t in status["topics"] for p in t["partitions"]]
    assert len(ends) == 4 and all(e > 0 for e in ends), ends
    assert sum(ends) == res["produce_latency"]["count"]


def test_acks_zero_counts_what_was_sent(node, binaries):
    out = out_dir("acks0")
    r = bench(binaries, "--bootstrap", node.bootstrap, "--topic", "bench-acks0", "--acks", "0",
              "--rate", "2000", "--consumers", "1", "--duration", "2s", "--warmup", "0s",
              "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "summary.json").read_text())["results"]
    assert res["produce_latency"]["count"] == 0  # nothing is acknowledged
    assert res["produce"]["messages"] >= 0.9 * 2000 * 2
    assert res["end_to_end_latency"]["count"] >= 0.9 * 2000 * 2
