#!/usr/bin/env bash
# build-initramfs.sh OUT.cpio.gz - builds the end-to-end test's initramfs:
# static busybox, the vgpu-guest test programs (built static here unless
# VGPU_GUEST_BIN names a binary), the modules of Linux's bochs DRM driver and
# of vfio-pci in dependency order, and /init (init.sh beside this script).
#
# Env: GUEST_BUSYBOX, GUEST_MODULES (default: what setup.sh prints, which
#      fetches them on first use), VGPU_GUEST_BIN, CARGO_TARGET_DIR,
#      GUEST_DRIVER_MODULES (default "bochs vfio_pci vfio_iommu_type1").
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:?usage: build-initramfs.sh OUT.cpio.gz}

if [ -z "${GUEST_BUSYBOX:-}" ] || [ -z "${GUEST_MODULES:-}" ]; then
  eval "$(bash "$here/setup.sh")"
fi

guest_bin=${VGPU_GUEST_BIN:-$(bash "$here/build-guest.sh")}
[ -x "$guest_bin" ] || { echo "build-initramfs: no guest binary at '$guest_bin'" >&2; exit 1; }

modules=()
# bochs for the display; vfio-pci and its type1 IOMMU backend so that the
# engines programs can take a vGPU's MSI-X interrupts in userspace.
for m in ${GUEST_DRIVER_MODULES:-bochs vfio_pci vfio_iommu_type1}; do modules+=(--module "$m"); done
python3 "$here/mkinitramfs.py" --busybox "$GUEST_BUSYBOX" --guest-bin "$guest_bin" --init "$here/init.sh" \
  --modules "$GUEST_MODULES" "${modules[@]}" --out "$out"
