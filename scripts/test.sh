#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "cargo is required: install Rust from https://rustup.rs" >&2
  exit 1
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The benchmark is a test too, with tiny inputs, so that it keeps working.
STRAND_BENCH_SMOKE=1 cargo test --workspace --all-targets
cargo test --workspace --doc
