#!/usr/bin/env bash
# Single-node acks=all throughput with a real Kafka client, against the raw disk.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import confluent_kafka" 2>/dev/null || pip install -q confluent-kafka
cargo build --release -p strand-node
exec python3 scripts/bench_node.py "$@"
