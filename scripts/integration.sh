#!/usr/bin/env bash
# Black-box integration tests: a real strand-node driven by real Kafka clients
# (librdkafka via confluent-kafka and kcat, kafka-python) and raw sockets.
# Installs what the tests need, builds the node and the CLI, runs pytest, and
# exits with pytest's code. Extra arguments go to pytest (e.g. -k kcat, -x).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo is required: install Rust from https://rustup.rs" >&2
  exit 1
fi
PYTHON=${PYTHON:-python3}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v kcat >/dev/null; then
  echo "installing kcat (apt)" >&2
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y kcat
fi

if ! "$PYTHON" -c "import confluent_kafka, kafka, pytest, pytest_timeout" 2>/dev/null; then
  echo "installing Python test dependencies (pip)" >&2
  "$PYTHON" -m pip install --quiet confluent-kafka kafka-python pytest pytest-timeout
fi

cargo build -p strand-node -p strand-tools

# Per-test limit 300 s; the whole suite takes a few minutes on 2 cores.
set +e
"$PYTHON" -m pytest -q --timeout 300 -rfE tests/integration "$@"
code=$?
set -e
exit "$code"
