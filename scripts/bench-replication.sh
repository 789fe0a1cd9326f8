#!/usr/bin/env bash
# Replication benchmark (issue 5): a 3-node cluster on loopback (`strand dev-cluster`),
# acks=all, the same closed-loop workload on a replication-factor-1 topic and on a
# replication-factor-3 topic in the same cluster, reported as ratios; then the
# failover time over --kills leader kills (kill -9 of a partition leader, time until
# the first acknowledged produce on that partition).
#
#   scripts/bench-replication.sh [--duration 20s] [--kills 20] [--cores 1] [--producers 4]
#                                [--max-in-flight 5] [--data-dir DIR]
#
# Figures go to stdout and to target/bench-replication/<time>/ (bench summaries,
# histograms, resources, failover.json). The nodes keep their data under that
# directory too, or under --data-dir (to measure another disk). --kills 0 skips the
# failover part. The nodes' data directories are deleted at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=20s kills=20 cores=1 producers=4 partitions=12 size=1KiB data_dir= in_flight=5
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=$2; shift 2 ;;
        --kills) kills=$2; shift 2 ;;
        --cores) cores=$2; shift 2 ;;
        --producers) producers=$2; shift 2 ;;
        --partitions) partitions=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --data-dir) data_dir=$2; shift 2 ;;
        --max-in-flight) in_flight=$2; shift 2 ;;
        *) echo "unknown flag $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done

./scripts/deps.sh >/dev/null
cargo build --release -q -p strand-node -p strand-tools -p strand-bench
bin=target/release
out=target/bench-replication/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
cluster=${data_dir:-$out}/cluster
if [ -n "$data_dir" ]; then
    if [ -e "$cluster" ]; then
        echo "$cluster exists: give --data-dir a directory without a cluster in it" >&2
        exit 2
    fi
    mkdir -p "$data_dir"
fi
$bin/strand dev-cluster up --nodes 3 --dir "$cluster" --cores "$cores"
# The nodes' data (gigabytes after a run) goes at exit; their logs stay.
trap '$bin/strand dev-cluster down --dir "$cluster" >/dev/null || true; rm -rf "$cluster"/node-*/data' EXIT
bootstrap=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['bootstrap'])" "$cluster/cluster.json")

pids=$(python3 -c "import json,sys; print(','.join(str(n['pid']) for n in json.load(open(sys.argv[1]))['nodes']))" "$cluster/cluster.json")
seconds=${duration%s}
case "$seconds" in
    ''|*[!0-9]*) echo "--duration takes whole seconds (20s), not $duration" >&2; exit 2 ;;
esac

# While each run is measured (after its warm-up), sample the nodes' CPU, the disk's
# writes and the machine's idle time: the figures that say which of them limits it.
for rf in 1 3; do
    python3 scripts/resource_sample.py --dir "$cluster" --pids "$pids" --delay 3.5 \
        --seconds $((seconds - 1)) --out "$out/resources-rf$rf.json" &
    sampler=$!
    $bin/strand-bench --bootstrap "$bootstrap" --topic "bench-rf$rf" --replication-factor $rf \
        --partitions "$partitions" --producers "$producers" --consumers 0 --message-size "$size" \
        --acks all --max-in-flight "$in_flight" --duration "$duration" --warmup 3s --out "$out/rf$rf" --label "rf$rf" --quiet
    wait "$sampler"
done

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
s = {rf: json.load(open(f"{out}/rf{rf}/summary.json"))["results"] for rf in (1, 3)}
for rf in (1, 3):
    r = s[rf]
    print(f"rf{rf}: {r['produce']['mb_per_sec']:.1f} MB/s {r['produce']['messages_per_sec']:.0f} msg/s "
          f"p50 {r['produce_latency']['p50_ms']:.2f} ms p99 {r['produce_latency']['p99_ms']:.2f} ms errors {r['errors']}")
print(f"rf3_vs_rf1_throughput: {s[3]['produce']['mb_per_sec'] / s[1]['produce']['mb_per_sec']:.2f}")
print(f"rf3_vs_rf1_p99: {s[3]['produce_latency']['p99_ms'] / s[1]['produce_latency']['p99_ms']:.2f}")
res = {rf: json.load(open(f"{out}/resources-rf{rf}.json")) for rf in (1, 3)}
for rf in (1, 3):
    r, mb = res[rf], s[rf]['produce']['mb_per_sec']
    print(f"rf{rf} resources: disk writes {r['disk_write_mb_per_sec']:.1f} MB/s "
          f"({r['disk_write_mb_per_sec'] / mb:.2f} per produced byte), nodes' CPU "
          f"{r['cpu_processes']:.2f} of {r['cpus']} CPUs ({r['cpu_processes'] / mb * 1000:.1f} ms per MB), "
          f"machine idle {r['machine_idle']:.0%} (iowait included)")
# The disk and the CPUs are shared by the three nodes: with factor 3 each produced
# byte is written, and handled, three times on this one machine.
print(f"rf3_vs_rf1_disk_writes: {res[3]['disk_write_mb_per_sec'] / res[1]['disk_write_mb_per_sec']:.2f}")
print(f"rf3_vs_rf1_cpu_per_byte: {(res[3]['cpu_processes'] / s[3]['produce']['mb_per_sec']) / (res[1]['cpu_processes'] / s[1]['produce']['mb_per_sec']):.2f}")
PY

if [ "$kills" -gt 0 ]; then
    python3 scripts/bench_failover.py --cluster "$cluster/cluster.json" --kills "$kills" \
        --out "$out/failover.json"
fi
echo "results in $out"
