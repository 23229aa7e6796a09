#!/usr/bin/env bash
# Installs what is needed, builds vgpud, and runs it in the foreground on
# configs/example.toml with a runtime directory that needs no root
# (${XDG_RUNTIME_DIR:-/tmp}/vgpud). Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
runtime_dir=${VGPUD_RUNTIME_DIR:-${XDG_RUNTIME_DIR:-/tmp}/vgpud}
echo "quickstart: vgpud serving in $runtime_dir (list with: VGPUD_RUNTIME_DIR=$runtime_dir target/release/vgpuctl list)"
exec target/release/vgpud --config configs/example.toml --runtime-dir "$runtime_dir" "$@"
