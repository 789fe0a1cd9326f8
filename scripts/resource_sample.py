#!/usr/bin/env python3
"""Samples what a benchmark run uses of the machine, for the figures next to its
throughput: CPU seconds a second of the given processes, bytes the block device
holding DIR wrote a second (from /proc/diskstats, so it counts every copy every
node wrote, page rewrites included), and the machine's idle share (iowait counted
as idle: a CPU waiting for the disk is not the limit).

    resource_sample.py --dir DIR --pids 1,2,3 --delay 3 --seconds 15 --out FILE

Waits --delay seconds (the benchmark's warm-up), then measures --seconds and writes
one JSON object to --out.
"""
import argparse
import json
import os
import time


def block_device(path):
    """The /proc/diskstats name of the whole disk holding `path`."""
    st = os.stat(path)
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    sys_dev = os.path.realpath(f"/sys/dev/block/{major}:{minor}")
    # A partition's directory sits inside its disk's; a whole disk's holds `device`
    # or is itself the disk (virtio, nvme namespaces).
    if os.path.exists(os.path.join(sys_dev, "partition")):
        sys_dev = os.path.dirname(sys_dev)
    return os.path.basename(sys_dev)


def sectors_written(device):
    with open("/proc/diskstats") as f:
        for line in f:
            fields = line.split()
            if fields[2] == device:
                return int(fields[9])
    raise SystemExit(f"resource_sample: no {device} in /proc/diskstats")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_and_total():
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return values[3] + values[4], sum(values)


def sample(device, pids):
    return {
        "sectors": sectors_written(device),
        "cpu": [cpu_seconds(p) for p in pids],
        "idle": idle_and_total(),
        "time": time.monotonic(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, help="a path on the disk to watch")
    ap.add_argument("--pids", required=True, help="comma-separated process ids")
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    pids = [int(p) for p in args.pids.split(",") if p]
    device = block_device(args.dir)
    time.sleep(args.delay)
    a = sample(device, pids)
    time.sleep(args.seconds)
    b = sample(device, pids)
    elapsed = b["time"] - a["time"]
    idle = (b["idle"][0] - a["idle"][0]) / max(1, b["idle"][1] - a["idle"][1])
    result = {
        "device": device,
        "seconds": elapsed,
        "disk_write_mb_per_sec": (b["sectors"] - a["sectors"]) * 512 / elapsed / 1e6,
        "cpu_per_process": [(y - x) / elapsed for x, y in zip(a["cpu"], b["cpu"])],
        "machine_idle": idle,
        "cpus": os.cpu_count(),
    }
    result["cpu_processes"] = sum(result["cpu_per_process"])
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
