#!/usr/bin/env bash
# Replication benchmark (issue 5): a 3-node cluster on loopback (`strand dev-cluster`),
# acks=all, the same closed-loop workload on a replication-factor-1 topic and on a
# replication-factor-3 topic in the same cluster, reported as ratios; then the
# failover time over --kills leader kills (kill -9 of a partition leader, time until
# the first acknowledged produce on that partition).
#
#   scripts/bench-replication.sh [--duration 20s] [--kills 20] [--cores 1] [--producers 4]
#
# Figures go to stdout and to target/bench-replication/<time>/ (bench summaries,
# histograms, failover.json).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=20s kills=20 cores=1 producers=4 partitions=12 size=1KiB
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=$2; shift 2 ;;
        --kills) kills=$2; shift 2 ;;
        --cores) cores=$2; shift 2 ;;
        --producers) producers=$2; shift 2 ;;
        --partitions) partitions=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        *) echo "unknown flag $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done

./scripts/deps.sh >/dev/null
cargo build --release -q -p strand-node -p strand-tools -p strand-bench
bin=target/release
out=target/bench-replication/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
$bin/strand dev-cluster up --nodes 3 --dir "$out/cluster" --cores "$cores"
trap '$bin/strand dev-cluster down --dir "$out/cluster" >/dev/null || true' EXIT
bootstrap=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['bootstrap'])" "$out/cluster/cluster.json")

for rf in 1 3; do
    $bin/strand-bench --bootstrap "$bootstrap" --topic "bench-rf$rf" --replication-factor $rf \
        --partitions "$partitions" --producers "$producers" --consumers 0 --message-size "$size" \
        --acks all --duration "$duration" --warmup 3s --out "$out/rf$rf" --label "rf$rf" --quiet
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
PY

python3 scripts/bench_failover.py --cluster "$out/cluster/cluster.json" --kills "$kills" \
    --out "$out/failover.json"
echo "results in $out"
