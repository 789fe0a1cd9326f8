#!/usr/bin/env bash
# Installs what the tests need beyond Rust, when missing: kcat (apt) and the Python
# packages (pip): confluent-kafka, kafka-python and aiokafka (real Kafka clients), pytest,
# hdrhistogram (an independent reader of the bench's histogram logs), prometheus-client
# (a real parser for the node's /metrics); and the Kubernetes manifest validators.
set -euo pipefail
PYTHON=${PYTHON:-python3}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v kcat >/dev/null; then
  echo "installing kcat (apt)" >&2
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y kcat
fi

if ! "$PYTHON" -c "import confluent_kafka, kafka, aiokafka, prometheus_client, pytest, pytest_timeout, hdrh" 2>/dev/null; then
  echo "installing Python test dependencies (pip)" >&2
  "$PYTHON" -m pip install --quiet confluent-kafka kafka-python aiokafka prometheus-client pytest pytest-timeout hdrhistogram
fi
"$(dirname "$0")/validate-k8s.sh" --install-only # k8s validators (own venv: checkov pins old packages) and kubectl
