#!/bin/busybox sh
# /init of the vGPU end-to-end test initramfs (build-initramfs.sh puts it
# there): mounts the kernel filesystems, inserts the display driver's modules
# (and vfio-pci's, which binds nothing until the engines programs hand it a
# vGPU), runs the guest test programs, prints their results on the console, then
# powers the machine off or reboots it.
#
# Kernel command line parameters it reads (all optional):
#   vgpu.expect=N            number of vGPUs probe must find
#   vgpu.subsystems=V:D,...  their PCI subsystem ids, one per vGPU
#   vgpu.mode=WxH            the mode modeset sets (default 800x600)
#   vgpu.tests=a,b,...       programs to run (default
#                            vram,probe,draw,modeset,dma,engines,engines-hostile;
#                            vram runs before the driver's modules go in)
#   vgpu.reboot_once=1       reboot after the first boot (QEMU resets the
#                            machine and sends DEVICE_RESET to every vGPU),
#                            power off after the second
#   vgpu.timeout=S           seconds each program may run (default 120)
#   vgpu.watch=S             how long the watch program runs (default 10)
#   vgpu.checkpoints=1       hold each drawn frame until the host has taken
#                            its screenshot (VGPU-SHOT lines; docs/e2e.md)
#
# Lines for the host all start with VGPU- (see docs/e2e.md):
#   VGPU-BOOT <n>                      this is boot number n of the machine
#   VGPU-TEST <check> PASS|FAIL <...>  one check
#   VGPU-INFO / VGPU-DMESG <...>       context
#   VGPU-DONE boot=<n> failed=<k>      the boot's tests are over
#   VGPU-SHOT <address> <name> ...     a frame held for the host's screenshot

/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin
exec </dev/console >/dev/console 2>&1

param() { # param NAME DEFAULT: the value of NAME= on the kernel command line
    for word in $(cat /proc/cmdline); do
        case "$word" in "$1="*) echo "${word#*=}"; return ;; esac
    done
    echo "$2"
}

failed=0
check() { # check NAME PASS|FAIL DETAIL...
    echo "VGPU-TEST $*"
    [ "$2" = PASS ] || failed=$((failed + 1))
}

# Without a count a reboot could loop: then run once and power off.
boot=$(vgpu-guest boot-count) || boot=0
echo "VGPU-BOOT $boot"
if [ "$boot" != 0 ]; then
    check init.boot-count PASS "boot $boot"
else
    check init.boot-count FAIL "cannot count boots (see above): no reboot"
fi
echo "VGPU-INFO init kernel $(uname -r); cmdline: $(cat /proc/cmdline)"

limit=$(param vgpu.timeout 120)
run() { # run PROGRAM ARGS...: a hung program must not hang the guest
    echo "VGPU-INFO init $1 starts at $(cut -d' ' -f1 /proc/uptime)s of uptime"
    timeout -s KILL "$limit" vgpu-guest "$@"
    status=$?
    case $status in
        0) ;;
        1) failed=$((failed + 1)) ;; # its FAIL lines are printed
        *) check "$1.run" FAIL "vgpu-guest $* exited with status $status (137: killed after ${limit}s)" ;;
    esac
}

tests=$(param vgpu.tests vram,probe,draw,modeset,dma,engines,engines-hostile | tr , ' ')
case " $tests " in *" vram "*) run vram ;; esac

loaded=""
for m in $(cat /etc/vgpu-modules); do
    if insmod "/lib/modules/$m.ko"; then
        loaded="$loaded $m"
    else
        check init.modules FAIL "insmod $m failed"
    fi
done
[ "$loaded" ] && check init.modules PASS "inserted$loaded"

if [ "$(param vgpu.checkpoints 0)" = 1 ]; then
    export VGPU_CHECKPOINTS=1
    # The text console on the first vGPU, as a person would see it.
    first=""
    for d in /sys/bus/pci/devices/*; do
        if [ "$(cat "$d/vendor"):$(cat "$d/device")" = "0x1234:0x1111" ]; then
            first=${d##*/}
            break
        fi
    done
    if [ -n "$first" ] && [ -e /dev/tty1 ]; then
        printf '\033[2J\033[H' > /dev/tty1
        {
            echo "vgpud end-to-end test: boot $boot"
            echo "Linux $(uname -r), bochs DRM driver on a vGPU served over vfio-user"
            echo
            for d in /sys/bus/pci/devices/*; do
                [ "$(cat "$d/vendor"):$(cat "$d/device")" = "0x1234:0x1111" ] || continue
                echo "  ${d##*/}  $(cat "$d/vendor"):$(cat "$d/device")  subsystem $(cat "$d/subsystem_vendor"):$(cat "$d/subsystem_device")  driver $(basename "$(readlink "$d/driver")")"
            done
            echo
            ls /dev/dri /dev/fb* 2>/dev/null | tr '\n' ' '
            echo
        } > /dev/tty1
        sleep 1
        vgpu-guest checkpoint --device "$first" --name console
    fi
fi

for test in $tests; do
    case "$test" in
        vram) ;; # ran before the modules went in
        probe)
            expect=$(param vgpu.expect "")
            subsystems=$(param vgpu.subsystems "")
            run probe ${expect:+--expect "$expect"} ${subsystems:+--subsystems "$subsystems"}
            ;;
        draw) run draw ;;
        modeset) run modeset --mode "$(param vgpu.mode 800x600)" ;;
        dma) run dma ;;
        engines) run engines ;;
        engines-hostile) run engines-hostile ;;
        watch) run watch --seconds "$(param vgpu.watch 10)" ;;
        *) check "init.tests" FAIL "unknown test $test" ;;
    esac
done

# The driver must take the devices without a complaint (bochs warns, for
# example, when VIDEO_MEMORY_64K and the BAR size disagree).
complaints=$(dmesg | grep -iE 'bochs|\[drm' | grep -iE 'warn|error|fail|mismatch|invalid|unsupported' || true)
if [ -n "$complaints" ]; then
    check init.driver-quiet FAIL "$(echo "$complaints" | head -3 | tr '\n' ' ')"
else
    check init.driver-quiet PASS "no warning or error from bochs or DRM"
fi
dmesg | grep -E '\[drm|bochs-drm|fbcon|fb[0-9]|vfio|1234:1111|: BAR [0-9]|[Ee]rror|[Ww]arn|Oops|BUG|Call Trace' \
    | sed 's/^/VGPU-DMESG /'
echo "VGPU-DONE boot=$boot failed=$failed uptime=$(cut -d' ' -f1 /proc/uptime)s"

if [ "$(param vgpu.reboot_once 0)" = 1 ] && [ "$boot" = 1 ]; then
    reboot -f
else
    poweroff -f
fi
# Not reached unless the machine refused to power off: say so, and wait
# for the host's timeout.
echo "VGPU-INFO init poweroff/reboot returned"
while :; do sleep 60; done
