#!/usr/bin/env bash
# run-guest.sh - the end-to-end test: vgpud serving two vGPUs of different
# profiles, QEMU (TCG, q35) attaching both over vfio-user, and an unmodified
# Debian Linux guest whose bochs DRM driver drives them while the vgpu-guest
# programs check them (probe, draw through fbdev, modeset and flips through
# DRM, the DMA self-test, the engines drawing through two channels with one
# vGPU handed to vfio-pci for its MSI-X interrupts, and a hostile guest's
# channels stopped while the other vGPU draws on). The guest has a vIOMMU
# (intel-iommu) for vfio-pci. By default the guest reboots once (QEMU resets
# the machine and sends DEVICE_RESET to both vGPUs) and runs everything
# again.
#
# Usage: run-guest.sh [--vgpud PATH] [--no-reboot] [--timeout SECS] [--keep]
#                     [--tests vram,probe,draw,modeset,dma,engines,engines-hostile]
#                     [-- EXTRA QEMU ARGS]
#   --vgpud PATH   the daemon (default: $VGPUD, else ${CARGO_TARGET_DIR:-target}/debug/vgpud,
#                  built with `cargo build -p vgpud --bins` if missing)
#   --no-reboot    one boot only
#   --no-seccomp   run vgpud bare instead of under configs/vgpud.service's
#                  system-call filter (seccomp-run, as systemd would)
#   --timeout S    bound on the QEMU run, all boots (default $VGPU_E2E_TIMEOUT or 150)
#   --keep         keep the temporary directory (logs, config, initramfs)
#   --tests LIST   guest programs to run (also: watch, see docs/operations.md)
#   --stop-vgpud-on TEXT
#                  send SIGKILL (or --stop-signal) to vgpud once the guest
#                  prints TEXT, to see what a guest and QEMU go through when
#                  the daemon goes away (the run then does not judge it)
# Env: VGPUD_QEMU_DIR (setup.sh's cache), SECCOMP_RUN (the seccomp-run
#      binary, default beside vgpud, else built), VGPU_INITRAMFS (use this initramfs
#      instead of building one), VGPU_GUEST_BIN, RUST_LOG (daemon log filter,
#      default info).
# Exit status: 0 when every check passed on every boot, 1 otherwise.
# Everything it starts is stopped and its temporary directory removed on
# every exit path.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

vgpud=${VGPUD:-}
reboot=1
seccomp=1
timeout_s=${VGPU_E2E_TIMEOUT:-150}
keep=0
tests=vram,probe,draw,modeset,dma,engines,engines-hostile
extra_qemu=()
stop_on=""
stop_signal=KILL
while [ $# -gt 0 ]; do
  case "$1" in
    --vgpud) vgpud=$2; shift 2 ;;
    --no-reboot) reboot=0; shift ;;
    --no-seccomp) seccomp=0; shift ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --tests) tests=$2; shift 2 ;;
    --stop-vgpud-on) stop_on=$2; shift 2 ;;
    --stop-signal) stop_signal=$2; shift 2 ;;
    --) shift; extra_qemu=("$@"); break ;;
    *) echo "run-guest: unknown argument $1" >&2; exit 2 ;;
  esac
done

t0=$EPOCHREALTIME
say() { echo "[run-guest +$(awk -v a="$EPOCHREALTIME" -v b="$t0" 'BEGIN{printf "%.1f", a-b}')s] $*"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vgpu-e2e.XXXXXX")
vgpud_pid=""
qemu_pid=""
tail_pid=""
conductor_pid=""

stop() { # stop PID NAME: SIGTERM, then SIGKILL after 10 s
  local pid=$1 name=$2
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name did not stop on SIGTERM within 10 s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  stop "$qemu_pid" qemu
  stop "$vgpud_pid" vgpud
  stop "$tail_pid" tail
  stop "$conductor_pid" conductor
  if [ "$keep" = 1 ]; then
    echo "run-guest: kept $tmp"
  else
    rm -rf "$tmp"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- what to run --------------------------------------------------------
eval "$(bash "$here/setup.sh")"
if [ -z "$vgpud" ]; then
  vgpud=${CARGO_TARGET_DIR:-$repo/target}/debug/vgpud
  if [ ! -x "$vgpud" ]; then
    say "building vgpud"
    (cd "$repo" && cargo build -p vgpud --bins)
  fi
fi
[ -x "$vgpud" ] || { echo "run-guest: no vgpud at $vgpud" >&2; exit 1; }
vgpuctl=${VGPUCTL:-$(dirname "$vgpud")/vgpuctl}
[ -x "$vgpuctl" ] || { echo "run-guest: no vgpuctl at $vgpuctl" >&2; exit 1; }
# The daemon runs under the unit's SystemCallFilter= (seccomp-run,
# tests/src/bin/seccomp-run.rs), so a real guest exercises the filter: a
# call outside it kills vgpud with SIGSYS and fails the run.
wrap=()
if [ "$seccomp" = 1 ]; then
  seccomp_run=${SECCOMP_RUN:-$(dirname "$vgpud")/seccomp-run}
  if [ ! -x "$seccomp_run" ]; then
    say "building seccomp-run"
    (cd "$repo" && cargo build -p vgpud-tests --bin seccomp-run)
    seccomp_run=${CARGO_TARGET_DIR:-$repo/target}/debug/seccomp-run
  fi
  [ -x "$seccomp_run" ] || { echo "run-guest: no seccomp-run at $seccomp_run" >&2; exit 1; }
  wrap=("$seccomp_run" "$repo/configs/vgpud.service" --)
fi
say "building the guest programs"
export VGPU_GUEST_BIN=${VGPU_GUEST_BIN:-$(bash "$here/build-guest.sh")}

# --- the daemon: two vGPUs of different profiles (configs/example.toml's),
# one from the configuration file, the other created at run time with
# vgpuctl, as an operator would.
uuid_a=6f1c2a4e-0d4e-4a43-9f7b-3b1d8e0c1a01
uuid_b=6f1c2a4e-0d4e-4a43-9f7b-3b1d8e0c1a02
cat > "$tmp/vgpud.toml" <<EOF
runtime_dir = "$tmp/run"
state_dir = "$tmp/state"

[[gpu]]
id = "gpu0"
backend = "sim"
vram = "2GiB"

[[profile]]
name = "vgpu-1g"
framebuffer = "1GiB"
max_instances = 1
channels = 4
max_resolution = "1920x1080"

[[profile]]
name = "vgpu-256m"
framebuffer = "256MiB"
max_instances = 1
channels = 2
max_resolution = "1280x1024"
subsystem_vendor_id = 0x1234
subsystem_id = 0x1101

[[vgpu]]
uuid = "$uuid_a"
gpu = "gpu0"
profile = "vgpu-1g"

EOF
subsystems=1234:1100,1234:1101
devices=2

say "starting ${wrap[*]:+${wrap[*]} }$vgpud"
# seccomp-run execs vgpud, so $! is the daemon itself.
RUST_LOG=${RUST_LOG:-info} "${wrap[@]}" "$vgpud" --config "$tmp/vgpud.toml" > "$tmp/vgpud.out" 2> "$tmp/vgpud.log" &
vgpud_pid=$!
# It prints "UUID SOCKET" per vGPU of the file once every socket listens.
for _ in $(seq 200); do
  [ "$(grep -c '\.sock$' "$tmp/vgpud.out" || true)" -ge 1 ] && break
  kill -0 "$vgpud_pid" 2>/dev/null || break
  sleep 0.1
done
if [ "$(grep -c '\.sock$' "$tmp/vgpud.out" || true)" -lt 1 ]; then
  echo "run-guest: vgpud did not get ready within 20 s; its log:" >&2
  cat "$tmp/vgpud.out" "$tmp/vgpud.log" >&2
  exit 1
fi
say "creating the second vGPU with vgpuctl create"
if ! socket_b=$("$vgpuctl" --runtime-dir "$tmp/run" create --type vgpu-256m --uuid "$uuid_b" 2>>"$tmp/vgpuctl.log"); then
  echo "run-guest: vgpuctl create failed:" >&2
  cat "$tmp/vgpuctl.log" "$tmp/vgpud.log" >&2
  exit 1
fi
# Every vGPU the guest gets, "UUID SOCKET" per line, in PCI slot order.
{ grep '\.sock$' "$tmp/vgpud.out"; echo "$uuid_b $socket_b"; } > "$tmp/vgpus"

# --- the guest ----------------------------------------------------------
initramfs=${VGPU_INITRAMFS:-}
if [ -z "$initramfs" ]; then
  say "building the initramfs"
  initramfs=$tmp/initramfs.cpio.gz
  bash "$here/build-initramfs.sh" "$initramfs"
fi

# intel_iommu=on iommu=pt: the guest has an IOMMU (below) so that vfio-pci
# can take a vGPU for the engines programs, and every device keeps the
# identity (passthrough) domain until then, so DMA is as without one.
cmdline="console=ttyS0 panic=-1 quiet iomem=relaxed intel_iommu=on iommu=pt vgpu.checkpoints=1 vgpu.expect=$devices vgpu.subsystems=$subsystems vgpu.tests=$tests"
boots=1
qemu_reboot=(-no-reboot)
if [ "$reboot" = 1 ]; then
  cmdline="$cmdline vgpu.reboot_once=1"
  boots=2
  qemu_reboot=()
fi
# Fixed PCI slots, so that the guest's addresses name the vGPUs. The
# vIOMMU comes first (QEMU wants it before the devices it translates for);
# interrupt remapping makes MSI isolated, which vfio's type1 backend wants,
# and caching mode is what QEMU's VFIO code needs to follow the guest's
# IOMMU mappings.
device_args=(-device intel-iommu,intremap=on,caching-mode=on)
map_args=()
slot=4
while read -r uuid socket; do
  device_args+=(-device "{\"driver\":\"vfio-user-pci\",\"addr\":\"$(printf '0x%x' "$slot")\",\"socket\":{\"type\":\"unix\",\"path\":\"$socket\"}}")
  map_args+=(--map "$(printf '0000:00:%02x.0' "$slot")=$uuid")
  slot=$((slot + 1))
done < "$tmp/vgpus"

# The serial console goes through the conductor, which takes the host's
# screenshots at the guest's checkpoints and copies everything to the log.
: > "$tmp/serial.log"
python3 "$here/conductor.py" --socket "$tmp/serial.sock" --log "$tmp/serial.log" \
  --vgpuctl "$vgpuctl" --runtime-dir "$tmp/run" --guest-bin "$VGPU_GUEST_BIN" \
  --shots "$tmp/shots" "${map_args[@]}" ${VGPU_E2E_CONSOLE_PNG:+--console-copy "$VGPU_E2E_CONSOLE_PNG"} \
  2> "$tmp/conductor.log" &
conductor_pid=$!
for _ in $(seq 100); do [ -S "$tmp/serial.sock" ] && break; sleep 0.05; done
[ -S "$tmp/serial.sock" ] || { echo "run-guest: the conductor did not start" >&2; cat "$tmp/conductor.log" >&2; exit 1; }

say "starting QEMU ($boots boot(s), at most ${timeout_s}s)"
"$QEMU" -accel tcg -nodefaults -no-user-config -display none -m 512M \
  -object memory-backend-memfd,id=mem,size=512M,share=on -machine q35,memory-backend=mem \
  -kernel "$GUEST_KERNEL" -initrd "$initramfs" -append "$cmdline" \
  -chardev "socket,id=serial0,path=$tmp/serial.sock" -serial chardev:serial0 "${qemu_reboot[@]}" "${device_args[@]}" "${extra_qemu[@]}" \
  < /dev/null > "$tmp/qemu.log" 2>&1 &
qemu_pid=$!
# Show the guest's result lines as they come; tail ends with QEMU.
tail -n +1 --pid="$qemu_pid" -f "$tmp/serial.log" 2>/dev/null | grep --line-buffered -a 'VGPU-' | tr -d '\r' &
tail_pid=$!

deadline=$(( $(date +%s) + timeout_s ))
verdict_note=""
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    verdict_note="QEMU still running after ${timeout_s}s: stopped"
    break
  fi
  # A panicking guest reboots (panic=-1): never let it loop.
  if [ "$(grep -ac 'VGPU-BOOT' "$tmp/serial.log" || true)" -gt "$boots" ]; then
    verdict_note="the guest booted more than $boots times: stopped"
    break
  fi
  if [ -n "$stop_on" ] && [ -z "${stopped_vgpud:-}" ] && grep -aqF -- "$stop_on" "$tmp/serial.log"; then
    say "the guest printed '$stop_on': sending SIG$stop_signal to vgpud"
    kill -"$stop_signal" "$vgpud_pid" || { echo "run-guest: cannot signal vgpud" >&2; exit 1; }
    stopped_vgpud=1
  fi
  sleep 0.5
done
qemu_status=0
if [ -n "$verdict_note" ]; then
  stop "$qemu_pid" qemu
  qemu_status=1
else
  wait "$qemu_pid" || qemu_status=$?
fi
qemu_pid=""
# tail notices QEMU's exit within a second; let the pipeline drain first.
for _ in $(seq 30); do kill -0 "$tail_pid" 2>/dev/null || break; sleep 0.1; done
stop "$tail_pid" tail
tail_pid=""
say "QEMU exited (status $qemu_status)"

# The daemon must survive the whole run (a guest cannot kill it) and stop
# cleanly on SIGTERM.
vgpud_note=""
if [ -n "${stopped_vgpud:-}" ]; then
  say "vgpud was stopped on purpose; QEMU's messages and the guest's VGPU-WATCH lines follow"
  grep -a 'VGPU-WATCH' "$tmp/serial.log" | tr -d '\r' || true
  stop "$vgpud_pid" vgpud
  vgpud_pid=""
elif ! kill -0 "$vgpud_pid" 2>/dev/null; then
  vgpud_status=0
  wait "$vgpud_pid" || vgpud_status=$?
  vgpud_pid=""
  vgpud_note="vgpud died during the run (status $vgpud_status)"
  # 128 + SIGSYS: the unit's SystemCallFilter= refused a call.
  [ "$vgpud_status" != $((128 + $(kill -l SYS))) ] ||
    vgpud_note="$vgpud_note: killed by SIGSYS, a system call outside configs/vgpud.service's SystemCallFilter= (see the audit log or dmesg)"
else
  kill -TERM "$vgpud_pid"
  vgpud_status=0
  for _ in $(seq 100); do kill -0 "$vgpud_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$vgpud_pid" 2>/dev/null; then
    vgpud_note="vgpud did not stop within 10 s of SIGTERM"
  else
    wait "$vgpud_pid" || vgpud_status=$?
    vgpud_pid=""
    [ "$vgpud_status" = 0 ] || vgpud_note="vgpud exited with status $vgpud_status on SIGTERM"
    [ "$vgpud_status" != $((128 + $(kill -l SYS))) ] ||
      vgpud_note="$vgpud_note (SIGSYS: a system call outside configs/vgpud.service's SystemCallFilter=)"
  fi
fi

status=0
# The conductor ends when QEMU closes the serial port.
for _ in $(seq 50); do kill -0 "$conductor_pid" 2>/dev/null || break; sleep 0.1; done
stop "$conductor_pid" conductor
conductor_pid=""
python3 "$here/check-results.py" "$tmp/serial.log" --boots "$boots" --devices "$devices" --tests "$tests" --screenshots || status=1
for note in "$verdict_note" "$vgpud_note"; do
  [ -n "$note" ] && { echo "e2e: $note"; status=1; }
done
[ "$qemu_status" = 0 ] || { echo "e2e: QEMU exit status $qemu_status"; status=1; }
if [ -s "$tmp/qemu.log" ]; then
  # With the vIOMMU, QEMU sweeps the whole IOVA space with DMA_UNMAPs when
  # the guest moves a vGPU between IOMMU domains (vfio-pci taking it, and
  # letting it go); the daemon refuses an unmap that names no map with
  # ENOENT (docs/vfio-user.md) and QEMU logs each refusal. Count those
  # rather than print a few hundred lines of them.
  # (QEMU posts some of them, and reports those as an "error reply on
  # async request" of command 3, DMA_UNMAP.)
  sweep='vfio_container_dma_unmap\(.*\) = -2 \(No such file or directory\)|error reply on async request:? command 3 error'
  swept=$(grep -cE "$sweep" "$tmp/qemu.log" || true)
  if grep -qvE "$sweep" "$tmp/qemu.log"; then
    echo "--- QEMU's messages:"; grep -vE "$sweep" "$tmp/qemu.log"
  fi
  [ "$swept" = 0 ] || echo "--- QEMU: $swept lines about DMA_UNMAPs of IOVA ranges with nothing mapped, refused with ENOENT (the vIOMMU's sweeps; expected)"
fi
if [ "$status" != 0 ]; then
  echo "--- daemon log (last 60 lines):"; tail -n 60 "$tmp/vgpud.log"
  echo "--- guest console (last 80 lines):"; tail -n 80 "$tmp/serial.log" | tr -d '\r'
fi
say "done: $([ "$status" = 0 ] && echo PASS || echo FAIL)"
exit "$status"
