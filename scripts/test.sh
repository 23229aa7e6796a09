#!/usr/bin/env bash
# Runs every test of the project: the lint gates CI enforces, every unit,
# property and integration test (with the fuzz corpus replay), and the
# end-to-end test with QEMU and a Linux guest (docs/e2e.md; it fetches QEMU
# from Debian's archive on first use and needs root). VGPUD_SKIP_E2E=1 skips
# the last one.
set -euo pipefail
cd "$(dirname "$0")/.."
# tests/tests/systemd_unit.rs verifies configs/vgpud.service and
# seccomp-run expands its @groups with systemd-analyze (Debian's systemd
# package; systemd need not be running). From the machine's apt sources.
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "test.sh: installing systemd (for systemd-analyze)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The integration tests and the end-to-end test drive the real binaries:
# build them first so they never run stale ones.
cargo build --workspace --bins --locked
cargo test --workspace --locked
if [ "${VGPUD_SKIP_E2E:-0}" != 1 ]; then
  bash scripts/qemu/run-guest.sh
fi
