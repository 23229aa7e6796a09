#!/usr/bin/env bash
# Runs every test of the workspace: unit, property and integration tests,
# the fuzz corpus replay, and the lint gates CI enforces.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The integration tests drive the real binary: build it first so they never
# run a stale one.
cargo build --workspace --bins --locked
cargo test --workspace --locked
