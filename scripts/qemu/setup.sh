#!/usr/bin/env bash
# setup.sh - provide, from Debian's archive only, what the end-to-end test with
# QEMU needs on a Debian 12 (bookworm) x86-64 host:
#   - QEMU >= 10.1 with the vfio-user client (qemu-system-x86 from
#     trixie-backports; bookworm's 7.2 has no vfio-user-pci),
#   - a Debian guest kernel (flavour amd64: it has the bochs DRM driver as a
#     module; cloud-amd64 has no DRM at all) and its module tree,
#   - a static busybox for the guest's initramfs.
#
# Usage: setup.sh [DIR]
#   DIR defaults to $VGPUD_QEMU_DIR, else /var/cache/vgpud-qemu. Everything is
#   cached there: once a run has completed, the next one only checks that the
#   cache is whole and prints the paths (well under a second). Set
#   VGPUD_QEMU_REFRESH=1 to fetch again (e.g. for a newer kernel).
# Env: KERNEL_FLAVOUR (default amd64), MIRROR (default: the Debian archive
#   the host's apt sources already name).
# Prints, last, shell assignments the other scripts `eval`:
#   QEMU=… GUEST_KERNEL=… GUEST_BUSYBOX=… GUEST_MODULES=…
#
# How: a private apt state (its own sources, lists, status and .deb cache
# under DIR, checked with the host's debian-archive-keyring) resolves
# qemu-system-x86 from trixie-backports with its whole dependency closure.
# Its dpkg status is empty, so trixie's own libc6 and loader are fetched too;
# the .debs are unpacked with dpkg-deb -x (no chroot, no maintainer scripts)
# and QEMU runs through trixie's ld.so, so bookworm's older glibc and the
# host's apt configuration are never touched. Needs apt-get, dpkg-deb, tar,
# flock and awk, all in a base bookworm; run as root (apt's sandbox user).
set -euo pipefail

BASE=${1:-${VGPUD_QEMU_DIR:-/var/cache/vgpud-qemu}}
KERNEL_FLAVOUR=${KERNEL_FLAVOUR:-amd64}
# The archive the host's apt already uses: the first main-archive URI of
# its sources (deb822 or one-line format), not a name written here.
host_mirror() {
  { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
    grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      sed -E 's/\[[^]]*\]//' | awk '{print $2}'; } |
    grep -vE 'security|updates' | grep -E '/debian/?$' | head -1 || true
}
MIRROR=${MIRROR:-$(host_mirror)}
if [ -z "$MIRROR" ]; then
  echo "setup.sh: no Debian archive in the host's apt sources; set MIRROR" >&2
  exit 1
fi
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# The cache key: a change here makes the next run fetch again.
CACHE_KEY="v1 flavour=$KERNEL_FLAVOUR mirror=$MIRROR"

APTD=$BASE/work/apt
QROOT=$BASE/root
GUEST=$BASE/guest
STAMP=$BASE/complete

t0=$EPOCHREALTIME
phase() { echo "[setup +$(awk -v a="$EPOCHREALTIME" -v b="$t0" 'BEGIN{printf "%.1f", a-b}')s] $*" >&2; }

print_paths() {
  echo "QEMU=$QROOT/qemu-system-x86_64"
  echo "GUEST_KERNEL=$GUEST/vmlinuz"
  echo "GUEST_BUSYBOX=$GUEST/busybox"
  # Like /lib/modules: the directory that holds one <kernel version>/ tree.
  echo "GUEST_MODULES=$(dirname "$(cat "$GUEST/moduledir")")"
}

cache_is_whole() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$CACHE_KEY" ] \
    && [ -x "$QROOT/qemu-system-x86_64" ] && [ -s "$GUEST/vmlinuz" ] \
    && [ -x "$GUEST/busybox" ] && [ -f "$GUEST/moduledir" ] \
    && [ -d "$(cat "$GUEST/moduledir")/kernel" ]
}

mkdir -p "$BASE"
# Two test runs may start at once (CI, a developer's shell): one fetches, the
# other waits for it and then takes the fast path.
exec 9>"$BASE/lock"
flock 9

if [ -z "${VGPUD_QEMU_REFRESH:-}" ] && cache_is_whole; then
  phase "cached in $BASE"
  print_paths
  exit 0
fi
rm -f "$STAMP"

[ -r "$KEYRING" ] || { echo "setup: missing $KEYRING (apt-get install debian-archive-keyring)" >&2; exit 1; }
mkdir -p "$APTD"/{lists/partial,archives/partial,etc,dl}
: > "$APTD/status"
cat > "$APTD/etc/sources.list" <<EOF
deb [signed-by=$KEYRING] $MIRROR trixie main
deb [signed-by=$KEYRING] $MIRROR trixie-backports main
EOF
APT=(-o Dir::Etc::SourceList="$APTD/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
     -o Dir::State="$APTD" -o Dir::State::Lists="$APTD/lists" -o Dir::State::status="$APTD/status"
     -o Dir::Cache="$APTD" -o Dir::Cache::archives="$APTD/archives"
     -o Debug::NoLocking=1 -o APT::Sandbox::User=root -o Acquire::Languages=none
     -o APT::Install-Recommends=0 -o APT::Get::Assume-Yes=1 -q)

phase "apt-get update (trixie, trixie-backports)"
apt-get "${APT[@]}" update >&2

phase "download qemu-system-x86 (trixie-backports) and its dependency closure"
# A new QEMU may drop a library an older one needed: start from an empty cache
# of .debs so that what gets unpacked is exactly one consistent closure.
rm -f "$APTD"/archives/*.deb
apt-get "${APT[@]}" install --download-only -t trixie-backports qemu-system-x86 >&2

KPKG=$(apt-cache "${APT[@]}" depends "linux-image-$KERNEL_FLAVOUR/trixie" \
       | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$KPKG" ] || { echo "setup: cannot resolve linux-image-$KERNEL_FLAVOUR in trixie" >&2; exit 1; }
phase "download guest kernel $KPKG and busybox-static (trixie)"
rm -f "$APTD"/dl/*.deb
(cd "$APTD/dl" && apt-get "${APT[@]}" download "$KPKG" busybox-static/trixie >&2)

phase "unpack $(ls "$APTD"/archives/*.deb | wc -l) .debs"
rm -rf "$QROOT" && mkdir -p "$QROOT"
for d in "$APTD"/archives/*.deb; do dpkg-deb -x "$d" "$QROOT"; done

cat > "$QROOT/qemu-system-x86_64" <<'EOF'
#!/bin/sh
# Runs trixie-backports' QEMU through trixie's own ld.so (the host's glibc is
# older than the one it was built for). /proc/self/exe is then ld.so, so QEMU
# cannot find its data and module directories itself: give them.
R=$(dirname "$(readlink -f "$0")")
export QEMU_MODULE_DIR="$R/usr/lib/x86_64-linux-gnu/qemu"
exec "$R/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$R/usr/lib/x86_64-linux-gnu" \
  "$R/usr/bin/qemu-system-x86_64" -L "$R/usr/share/qemu" -L "$R/usr/share/seabios" -L "$R/usr/lib/ipxe/qemu" "$@"
EOF
chmod +x "$QROOT/qemu-system-x86_64"

phase "extract guest kernel, its modules and busybox"
rm -rf "$GUEST" && mkdir -p "$GUEST/kx" "$GUEST/bb"
# Debian 13 ships modules under /usr/lib/modules (merged /usr); older
# packages under /lib/modules: take whichever the package has.
dpkg-deb -x "$APTD"/dl/linux-image-*.deb "$GUEST/kx"
cp "$GUEST"/kx/boot/vmlinuz-* "$GUEST/vmlinuz"
moddir=$(ls -d "$GUEST"/kx/usr/lib/modules/* "$GUEST"/kx/lib/modules/* 2>/dev/null | head -1 || true)
[ -n "$moddir" ] && [ -d "$moddir/kernel" ] || { echo "setup: no module tree in $KPKG" >&2; exit 1; }
echo "$moddir" > "$GUEST/moduledir"
dpkg-deb -x "$APTD"/dl/busybox-static_*.deb "$GUEST/bb"
cp "$GUEST/bb/usr/bin/busybox" "$GUEST/busybox"

phase "verify"
"$QROOT/qemu-system-x86_64" --version | head -1 >&2
"$QROOT/qemu-system-x86_64" -device vfio-user-pci,help > "$BASE/vfio-user-pci-props.txt"
grep -q 'socket=<SocketAddress>' "$BASE/vfio-user-pci-props.txt" \
  || { echo "setup: this QEMU has no vfio-user-pci with a socket property" >&2; exit 1; }
[ -n "$(find "$moddir" -name 'bochs.ko*' -print -quit)" ] \
  || { echo "setup: kernel $KPKG has no bochs module (KERNEL_FLAVOUR=$KERNEL_FLAVOUR?)" >&2; exit 1; }
# Everything needed is unpacked: the .debs would only take space.
rm -f "$APTD"/archives/*.deb "$APTD"/dl/*.deb
echo "$CACHE_KEY" > "$STAMP"
phase "done"
print_paths
