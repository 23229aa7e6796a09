#!/usr/bin/env python3
"""Writes the end-to-end test's initramfs: a gzipped newc cpio archive.

It holds busybox, the guest test programs, /init, a /dev/console node (the
kernel opens it for /init before anything is mounted), and the kernel modules
the requested drivers need, decompressed, with /etc/vgpu-modules listing
them in load order (dependencies first).

Debian's kernel package ships no modules.dep (depmod runs at install time),
so the order is computed here from each module's own `depends=` field in its
.modinfo section, as depmod does. Modules that the kernel has built in
(modules.builtin) are left out. Busybox's insmod may not decompress, so
.ko.xz / .ko.gz / .ko.zst files are decompressed here.

Only the standard library is used (no cpio binary needed); the archive is
reproducible (every mtime is 0, entries sorted).
"""

import argparse
import gzip
import io
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys

SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


def module_name(filename):
    """The module name the kernel uses for a file name."""
    for suffix in SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)].replace("-", "_")
    return None


def decompress(path):
    """The module file's ELF bytes."""
    if path.endswith(".xz"):
        return lzma.open(path).read()
    if path.endswith(".gz"):
        return gzip.open(path).read()
    if path.endswith(".zst"):
        if not shutil.which("zstd"):
            sys.exit(f"mkinitramfs: {path} is zstd-compressed and there is no zstd here (apt-get install zstd)")
        return subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout
    with open(path, "rb") as f:
        return f.read()


def modinfo(elf, key):
    """The values of `key=` in a module's .modinfo strings."""
    pattern = re.compile(rb"(?:^|\0)" + re.escape(key.encode()) + rb"=([^\0]*)")
    return [m.group(1).decode() for m in pattern.finditer(elf)]


class ModuleTree:
    """The module tree of one kernel version: DIR/kernel/... and DIR/modules.builtin."""

    def __init__(self, root):
        self.root = root
        self.files = {}
        for dirpath, _, filenames in os.walk(os.path.join(root, "kernel")):
            for filename in filenames:
                name = module_name(filename)
                if name:
                    self.files[name] = os.path.join(dirpath, filename)
        self.builtin = set()
        builtin = os.path.join(root, "modules.builtin")
        if os.path.exists(builtin):
            with open(builtin) as f:
                for line in f:
                    name = module_name(os.path.basename(line.strip()))
                    if name:
                        self.builtin.add(name)

    def load_order(self, wanted):
        """Modules to insert for `wanted`, dependencies first, with their ELF bytes."""
        order, elves, visiting = [], {}, set()

        def visit(name, chain):
            if name in elves or name in self.builtin:
                return
            if name in visiting:
                sys.exit(f"mkinitramfs: module dependency cycle: {' -> '.join(chain + [name])}")
            path = self.files.get(name)
            if path is None:
                sys.exit(f"mkinitramfs: module {name} (needed by {' -> '.join(chain) or 'request'}) is not in {self.root}")
            visiting.add(name)
            elf = decompress(path)
            deps = [d.replace("-", "_") for field in modinfo(elf, "depends") for d in field.split(",") if d]
            # "softdep=pre: a b post: c": the pre modules must be loaded first
            # when they exist as modules (modprobe would do it).
            for soft in modinfo(elf, "softdep"):
                pre = re.search(r"pre:\s*([^:]*?)(?:\s+post:|$)", soft)
                if pre:
                    deps += [d.replace("-", "_") for d in pre.group(1).split() if d.replace("-", "_") in self.files]
            for dep in deps:
                visit(dep, chain + [name])
            visiting.discard(name)
            elves[name] = elf
            order.append(name)

        for name in wanted:
            visit(name.replace("-", "_"), [])
        return order, elves


class Cpio:
    """A newc ("070701") cpio archive being written."""

    def __init__(self):
        self.out = io.BytesIO()
        self.ino = 1

    def _entry(self, name, mode, data=b"", rdev=(0, 0)):
        encoded = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
        self.ino += 1
        self.out.write(b"070701" + b"".join(b"%08x" % v for v in fields))
        self.out.write(encoded)
        self.out.write(b"\0" * (-(110 + len(encoded)) % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 4))

    def directory(self, name):
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name, data, mode=0o644):
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name, target):
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name, major, minor, mode=0o600):
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        # The kernel wants the archive padded to a multiple of 512 bytes.
        self.out.write(b"\0" * (-self.out.tell() % 512))
        return self.out.getvalue()


def kernel_module_dir(path):
    """DIR itself if it holds kernel/, else its only <version>/ subdirectory (like /lib/modules)."""
    if os.path.isdir(os.path.join(path, "kernel")):
        return path
    versions = [d for d in sorted(os.listdir(path)) if os.path.isdir(os.path.join(path, d, "kernel"))]
    if len(versions) != 1:
        sys.exit(f"mkinitramfs: expected one kernel version under {path}, found {versions}")
    return os.path.join(path, versions[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busybox", required=True, help="static busybox binary")
    parser.add_argument("--guest-bin", required=True, help="static vgpu-guest binary")
    parser.add_argument("--init", required=True, help="the /init script")
    parser.add_argument("--modules", required=True, help="module tree (DIR/<version>/kernel or DIR/kernel)")
    parser.add_argument("--module", action="append", default=[], help="module to load (with its dependencies); repeatable")
    parser.add_argument("--out", required=True, help="output .cpio.gz")
    args = parser.parse_args()

    tree = ModuleTree(kernel_module_dir(args.modules))
    order, elves = tree.load_order(args.module)

    cpio = Cpio()
    for d in ["bin", "dev", "etc", "lib", "lib/modules", "proc", "run", "sys", "tmp"]:
        cpio.directory(d)
    cpio.char_device("dev/console", 5, 1)
    with open(args.busybox, "rb") as f:
        cpio.file("bin/busybox", f.read(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    with open(args.guest_bin, "rb") as f:
        cpio.file("bin/vgpu-guest", f.read(), 0o755)
    with open(args.init, "rb") as f:
        cpio.file("init", f.read(), 0o755)
    for name in order:
        cpio.file(f"lib/modules/{name}.ko", elves[name])
    cpio.file("etc/vgpu-modules", "".join(f"{name}\n" for name in order).encode())

    with open(args.out + ".tmp", "wb") as f:
        f.write(gzip.compress(cpio.finish(), compresslevel=6, mtime=0))
    os.replace(args.out + ".tmp", args.out)
    print(f"mkinitramfs: {args.out}: modules in load order: {' '.join(order)}", file=sys.stderr)


if __name__ == "__main__":
    main()
