#!/usr/bin/env bash
# Runs every test of the workspace: formatting, lints, Rust unit/integration/crash/
# fuzz tests, the benchmarks in smoke mode, then the real-client integration tests
# (scripts/deps.sh first installs kcat, confluent-kafka, kafka-python, pytest and
# hdrhistogram when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "cargo is required: install Rust from https://rustup.rs" >&2
  exit 1
fi
./scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Benches run in smoke mode under `cargo test`, so they keep working.
cargo test --workspace --all-targets
cargo test --workspace --doc
./scripts/integration.sh
