#!/usr/bin/env bash
# Installs what is needed, builds vgpud, and runs it in the foreground on
# configs/example.toml with a runtime directory that needs no root
# (${XDG_RUNTIME_DIR:-/tmp}/vgpud, definitions in .../vgpud-state). Stop it
# with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
runtime_dir=${VGPUD_RUNTIME_DIR:-${XDG_RUNTIME_DIR:-/tmp}/vgpud}
# Definitions (vgpuctl define) kept beside it, not in /var/lib/vgpud.
state_dir=${VGPUD_STATE_DIR:-${XDG_RUNTIME_DIR:-/tmp}/vgpud-state}
echo "quickstart: vgpud serving in $runtime_dir (list with: VGPUD_RUNTIME_DIR=$runtime_dir target/release/vgpuctl list)"
exec target/release/vgpud --config configs/example.toml --runtime-dir "$runtime_dir" --state-dir "$state_dir" "$@"
