#!/usr/bin/env python3
"""Judges the guest's serial console log of an end-to-end run.

Reads the VGPU-BOOT / VGPU-TEST / VGPU-DONE lines that the guest's /init and
test programs print (docs/e2e.md) and passes only if:
- the machine booted exactly --boots times, and every boot reached VGPU-DONE;
- no check failed;
- on every boot, every required check passed: once per machine for the
  machine-wide ones, once per vGPU (--devices) for the per-device ones.

Prints one line per problem and a summary; exits 0 on pass, 1 on fail.
"""

import argparse
import re
import sys

# Checks a boot must pass once.
PER_MACHINE = ["init.boot-count", "init.modules", "init.driver-quiet", "probe.count"]
# Checks a boot must pass once per vGPU.
PER_DEVICE = [
    "vram.zero",
    "probe.identity",
    "probe.bars",
    "probe.caps",
    "probe.driver",
    "probe.nodes",
    "probe.regs",
    "draw.fbdev",
    "modeset.setcrtc",
    "modeset.flip",
    "modeset.flip-back",
    "modeset.restore",
    "dma.to-vram",
    "dma.from-vram",
    "dma.unmapped",
    "engines.mmu",
    "engines.channels",
    "engines.submit",
    "engines.fences",
    "engines.frame",
]
# Checks a boot must pass once when there are two vGPUs or more: the engines
# program hands the last vGPU to vfio-pci and waits on its MSI-X vectors,
# and engines-hostile needs a hostile vGPU and an innocent one.
PER_MACHINE_TWO_VGPUS = [
    "engines.msix",
    "engines-hostile.privileged",
    "engines-hostile.fault",
    "engines-hostile.isolation",
    "engines-hostile.recover",
    "engines-hostile.frame",
]

# With --screenshots: the host's checks of the frames the guest held, by
# the program that drew them; "console" once per machine.
SCREENSHOTS_PER_DEVICE = {
    "screenshot.draw": "draw",
    "screenshot.modeset-front": "modeset",
    "screenshot.modeset-back": "modeset",
    "screenshot.engines": "engines",
}
SCREENSHOTS_PER_MACHINE = ["screenshot.console"]
# The innocent vGPU's frame after the attacks, once, by engines-hostile.
SCREENSHOTS_PER_MACHINE_TWO_VGPUS = {"screenshot.engines-hostile": "engines-hostile"}

LINE = re.compile(r"VGPU-(BOOT|TEST|DONE)\s*(.*)$")


def parse(text):
    """[(boot number, {check: [verdicts]}, done?)] in boot order."""
    boots = []
    for raw in text.splitlines():
        m = LINE.search(raw.rstrip("\r"))
        if not m:
            continue
        kind, rest = m.groups()
        if kind == "BOOT":
            boots.append({"number": rest.strip(), "checks": {}, "done": False, "failures": []})
            continue
        if not boots:
            # Lines before the first VGPU-BOOT (boot-count itself) belong to boot 1.
            boots.append({"number": "?", "checks": {}, "done": False, "failures": []})
        boot = boots[-1]
        if kind == "DONE":
            boot["done"] = True
            continue
        fields = rest.split(None, 2)
        if len(fields) < 2 or fields[1] not in ("PASS", "FAIL"):
            boot["failures"].append(f"malformed result line: {raw.strip()}")
            continue
        name, verdict = fields[0], fields[1]
        boot["checks"].setdefault(name, []).append(verdict)
        if verdict == "FAIL":
            boot["failures"].append(rest.strip())
    return boots


def judge(boots, expected_boots, devices, required_per_machine, required_per_device):
    problems = []
    if len(boots) != expected_boots:
        problems.append(f"the guest booted {len(boots)} times, expected {expected_boots}")
    for i, boot in enumerate(boots, 1):
        label = f"boot {i} (VGPU-BOOT {boot['number']})"
        problems += [f"{label}: FAIL {f}" for f in boot["failures"]]
        if not boot["done"]:
            problems.append(f"{label}: never reached VGPU-DONE")
        for name in required_per_machine:
            if boot["checks"].get(name, []).count("PASS") < 1:
                problems.append(f"{label}: {name} never passed")
        for name in required_per_device:
            passed = boot["checks"].get(name, []).count("PASS")
            if passed != devices:
                problems.append(f"{label}: {name} passed {passed} times, expected {devices} (one per vGPU)")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", help="the guest's serial console log")
    parser.add_argument("--boots", type=int, default=1, help="boots expected (2 with vgpu.reboot_once=1)")
    parser.add_argument("--devices", type=int, required=True, help="vGPUs attached")
    parser.add_argument("--tests", default="vram,probe,draw,modeset,dma,engines,engines-hostile",
                        help="programs the guest ran")
    parser.add_argument("--screenshots", action="store_true", help="the host took screenshots at checkpoints")
    args = parser.parse_args()

    with open(args.log, errors="replace") as f:
        boots = parse(f.read())
    programs = set(args.tests.split(","))
    per_machine = [c for c in PER_MACHINE if c.split(".")[0] in programs | {"init"}]
    per_device = [c for c in PER_DEVICE if c.split(".")[0] in programs]
    if args.devices >= 2:
        per_machine += [c for c in PER_MACHINE_TWO_VGPUS if c.split(".")[0] in programs]
    if args.screenshots:
        per_machine += SCREENSHOTS_PER_MACHINE
        per_device += [c for c, program in SCREENSHOTS_PER_DEVICE.items() if program in programs]
        if args.devices >= 2:
            per_machine += [c for c, program in SCREENSHOTS_PER_MACHINE_TWO_VGPUS.items() if program in programs]
    problems = judge(boots, args.boots, args.devices, per_machine, per_device)
    passed = sum(v.count("PASS") for b in boots for v in b["checks"].values())
    for p in problems:
        print(f"e2e: {p}")
    verdict = "FAIL" if problems else "PASS"
    print(f"e2e: {verdict}: {len(boots)} boot(s), {passed} checks passed, {len(problems)} problem(s)")
    # The plain closing line a CI log reader counts.
    print(f"e2e: {passed} passed, {len(problems)} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
