#!/usr/bin/env bash
# build-initramfs.sh OUT.cpio.gz - builds the end-to-end test's initramfs:
# static busybox, the vgpu-guest test programs (built static here unless
# VGPU_GUEST_BIN names a binary), the modules of Linux's bochs DRM driver in
# dependency order, and /init (init.sh beside this script).
#
# Env: GUEST_BUSYBOX, GUEST_MODULES (default: what setup.sh prints, which
#      fetches them on first use), VGPU_GUEST_BIN, CARGO_TARGET_DIR,
#      GUEST_DRIVER_MODULES (default "bochs").
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:?usage: build-initramfs.sh OUT.cpio.gz}

if [ -z "${GUEST_BUSYBOX:-}" ] || [ -z "${GUEST_MODULES:-}" ]; then
  eval "$(bash "$here/setup.sh")"
fi

guest_bin=${VGPU_GUEST_BIN:-}
if [ -z "$guest_bin" ]; then
  # Static, so that the initramfs needs no libc (the musl target is not
  # installed; glibc's static build works for these programs: no NSS).
  # The binary's path comes from cargo itself, wherever its target dir is.
  guest_bin=$(cd "$repo/guest" && RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --target x86_64-unknown-linux-gnu --bin vgpu-guest --message-format=json-render-diagnostics \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])')
fi
[ -x "$guest_bin" ] || { echo "build-initramfs: no guest binary at '$guest_bin'" >&2; exit 1; }

modules=()
for m in ${GUEST_DRIVER_MODULES:-bochs}; do modules+=(--module "$m"); done
python3 "$here/mkinitramfs.py" --busybox "$GUEST_BUSYBOX" --guest-bin "$guest_bin" --init "$here/init.sh" \
  --modules "$GUEST_MODULES" "${modules[@]}" --out "$out"
