#!/usr/bin/env python3
"""The host end of the guest's serial console during an end-to-end run.

Listens on a Unix socket that QEMU's serial port connects to, copies every
byte the guest prints into the console log, and answers the guest's
checkpoints (docs/e2e.md): on a line

    VGPU-SHOT <pci address> <name> seed=<seed|-> <width>x<height>[ pattern=engines]

it takes a screenshot of that vGPU from the host with `vgpuctl screenshot`
(while the guest holds the frame), checks it with `vgpu-guest compare-png`
(exactly the pattern of <seed> at <width>x<height>, or with pattern=engines
the engines picture of <seed>; or, without a seed, that the picture is not
blank), records a line

    VGPU-TEST screenshot.<name> PASS|FAIL <pci address> <detail>

in the console log, and writes `go` to the guest so that it goes on.
Exits when QEMU closes the connection.
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys

SHOT = re.compile(r"VGPU-SHOT (\S+) (\S+) seed=(\S+) (\d+)x(\d+)(?: pattern=(\S+))?")
BOOT = re.compile(r"VGPU-BOOT (\S+)")


def run(cmd, timeout=60):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, (p.stdout + p.stderr).strip().replace("\n", " ")
    except subprocess.TimeoutExpired:
        return 1, f"{cmd[0]} timed out after {timeout}s"


class Conductor:
    def __init__(self, args):
        self.args = args
        self.devices = dict(m.split("=", 1) for m in args.map)
        self.log = open(args.log, "ab", buffering=0)
        self.boot = "0"
        os.makedirs(args.shots, exist_ok=True)
        self.max_resolution = {}

    def preferred_mode(self, uuid):
        """The vGPU's EDID preferred mode: its profile's max_resolution."""
        if not self.max_resolution:
            status, out = run([self.args.vgpuctl, "--runtime-dir", self.args.runtime_dir, "--json", "list"])
            if status == 0:
                try:
                    for v in json.loads(out)["vgpus"]:
                        self.max_resolution[v["uuid"]] = v["max_resolution"]
                except (ValueError, KeyError):
                    pass
        return self.max_resolution.get(uuid)

    def record(self, line):
        self.log.write(b"\r\n" + line.encode() + b"\r\n")

    def checkpoint(self, address, name, seed, width, height, pattern=None):
        uuid = self.devices.get(address)
        if uuid is None:
            return f"FAIL {address} no vGPU is attached at this address (known: {sorted(self.devices)})"
        # The console and fbdev draw in the mode the driver chose from the
        # EDID: it must be the profile's preferred (maximum) mode.
        if name in ("console", "draw"):
            preferred = self.preferred_mode(uuid)
            if preferred != f"{width}x{height}":
                return f"FAIL {address} shows {width}x{height}, the EDID's preferred mode is {preferred}"
        shot = os.path.join(self.args.shots, f"boot{self.boot}-{name}-{address.replace(':', '_')}.png")
        status, out = run([self.args.vgpuctl, "--runtime-dir", self.args.runtime_dir,
                           "screenshot", uuid, shot])
        if status != 0:
            return f"FAIL {address} vgpuctl screenshot {uuid}: {out}"
        compare = [self.args.guest_bin, "compare-png", shot]
        if seed != "-":
            compare += ["--seed", seed, "--size", f"{width}x{height}"]
            if pattern:
                compare += ["--pattern", pattern]
        status, out = run(compare)
        if status == 0 and name == "console" and self.args.console_copy and self.boot == "1":
            shutil.copyfile(shot, self.args.console_copy)
        return f"{'PASS' if status == 0 else 'FAIL'} {address} {uuid} {out}"

    def serve(self, conn):
        pending = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return
            self.log.write(data)
            pending += data
            *lines, pending = re.split(rb"\r?\n|\r", pending)
            for raw in lines:
                line = raw.decode(errors="replace")
                if m := BOOT.search(line):
                    self.boot = m.group(1)
                if m := SHOT.search(line):
                    address, name, seed, width, height, pattern = m.groups()
                    verdict = self.checkpoint(address, name, seed, width, height, pattern)
                    self.record(f"VGPU-TEST screenshot.{name} {verdict}")
                    conn.sendall(b"go\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="Unix socket QEMU's serial port connects to")
    parser.add_argument("--log", required=True, help="console log to append to")
    parser.add_argument("--vgpuctl", required=True)
    parser.add_argument("--runtime-dir", required=True, help="the daemon's runtime directory")
    parser.add_argument("--guest-bin", required=True, help="vgpu-guest, run on the host for compare-png")
    parser.add_argument("--shots", required=True, help="directory for the screenshots")
    parser.add_argument("--map", action="append", default=[], help="PCI_ADDRESS=UUID, one per vGPU")
    parser.add_argument("--console-copy", help="also copy boot 1's console screenshot here")
    parser.add_argument("--accept-timeout", type=float, default=60)
    args = parser.parse_args()

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(args.socket)
    listener.listen(1)
    listener.settimeout(args.accept_timeout)
    try:
        conn, _ = listener.accept()
    except socket.timeout:
        print("conductor: QEMU never connected to the serial socket", file=sys.stderr)
        return 1
    conn.settimeout(None)
    Conductor(args).serve(conn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
