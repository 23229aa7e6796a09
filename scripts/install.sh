#!/usr/bin/env bash
# Installs what vgpud needs on a Debian 12 machine with a Rust toolchain and
# builds the release binaries into target/release/.
#   --system   also install vgpud and vgpuctl into /usr/local/bin, the
#              example configuration into /etc/vgpud/ (if none is there) and
#              the systemd unit, then enable and start vgpud.service.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need cargo; then
  echo "install.sh: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
if ! need cc; then
  echo "install.sh: installing a C toolchain (build-essential)"
  apt-get update -qq && apt-get install -y -qq build-essential >/dev/null
fi

cargo build --release --locked -p vgpud --bins

if [ "${1:-}" = "--system" ]; then
  install -m 0755 target/release/vgpud target/release/vgpuctl /usr/local/bin/
  install -d -m 0755 /etc/vgpud
  [ -e /etc/vgpud/vgpud.toml ] || install -m 0644 configs/example.toml /etc/vgpud/vgpud.toml
  install -m 0644 configs/vgpud.service /etc/systemd/system/vgpud.service
  if need systemctl && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now vgpud.service
    systemctl --no-pager status vgpud.service || true
  else
    echo "install.sh: no running systemd; start it by hand: vgpud --config /etc/vgpud/vgpud.toml"
  fi
fi
