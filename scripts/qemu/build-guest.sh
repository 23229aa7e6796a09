#!/usr/bin/env bash
# build-guest.sh - builds the vgpu-guest test programs static and prints the
# binary's path (cargo's own answer, wherever its target dir is).
# Static, so that the initramfs needs no libc (the musl target is not
# installed; glibc's static build works for these programs: no NSS). The
# same binary runs on the host for `compare-png`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo/guest"
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --target x86_64-unknown-linux-gnu --bin vgpu-guest --message-format=json-render-diagnostics \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])'
