#!/usr/bin/env bash
# Black-box integration tests: a real strand-node driven by real Kafka clients
# (librdkafka via confluent-kafka and kcat, kafka-python) and raw sockets, and
# strand-bench runs.
# Installs what the tests need, builds the node and the CLI, runs pytest, and
# exits with pytest's code. Extra arguments go to pytest (e.g. -k kcat, -x).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo is required: install Rust from https://rustup.rs" >&2
  exit 1
fi
PYTHON=${PYTHON:-python3}

./scripts/deps.sh

cargo build -p strand-node -p strand-tools -p strand-bench

# Per-test limit 300 s; the whole suite takes a few minutes on 2 cores.
set +e
"$PYTHON" -m pytest -q --timeout 300 -rfE tests/integration "$@"
code=$?
set -e
exit "$code"
