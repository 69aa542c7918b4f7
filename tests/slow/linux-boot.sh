#!/usr/bin/env bash
# Slow test, not part of CI: boots a real Linux kernel with `vmctl vmm run` and reports
# the time from process start to a marker printed by the initramfs's /init.
#
#   tests/slow/linux-boot.sh [KERNEL]
#
# KERNEL is a bzImage or ELF vmlinux. Without it, Debian's cloud kernel is fetched with
# `apt-get download` (linux-image-cloud-amd64's dependency) and its vmlinuz used. The
# initramfs is built here: a static busybox (Debian's busybox-static, also fetched with
# `apt-get download`, or $BUSYBOX) and an /init that prints the marker and reboots
# (reboot=k: an i8042 reset, which vmctl treats as power-off).
#
# Needs root, /dev/kvm with HARDWARE virtualization (VT-x/AMD-V), python3 and dpkg-deb.
# It cannot pass on the nested-KVM development machines, which emulate every guest
# instruction: a distribution kernel takes minutes there and stops at its first `int3`.
#
# Environment: TIMEOUT (seconds, default 120), MEMORY (default 512MiB), CPUS (default 2),
# VMCTL (binary; default: build target/release/vmctl), KEEP=1 keeps the work directory.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
timeout_s=${TIMEOUT:-120}
marker="VMCTL-LINUX-BOOT-OK"
work=$(mktemp -d)
chmod 755 "$work" # apt-get download drops privileges to _apt
[ "${KEEP:-}" = 1 ] || trap 'rm -rf "$work"' EXIT

if [ -z "${VMCTL:-}" ]; then
    (cd "$root" && cargo build --release --quiet -p vmctl)
    VMCTL=$root/target/release/vmctl
fi

fetch_deb() { # package → extracted into $work/$1
    (cd "$work" && apt-get download -q "$1" >/dev/null)
    mkdir -p "$work/$1"
    dpkg-deb -x "$work"/"$1"_*.deb "$work/$1"
}

kernel=${1:-}
if [ -z "$kernel" ]; then
    pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
    [ -n "$pkg" ] || { echo "linux-boot.sh: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
    echo "linux-boot.sh: fetching $pkg" >&2
    fetch_deb "$pkg"
    kernel=$(ls "$work/$pkg"/boot/vmlinuz-* | head -1)
fi

busybox=${BUSYBOX:-}
if [ -z "$busybox" ]; then
    echo "linux-boot.sh: fetching busybox-static" >&2
    fetch_deb busybox-static
    busybox=$work/busybox-static/bin/busybox
fi

# The initramfs: a newc cpio with /bin/busybox, /init and /dev/console.
python3 - "$busybox" "$work/initramfs.cpio" "$marker" <<'PY'
import sys
busybox, out, marker = sys.argv[1], sys.argv[2], sys.argv[3]
init = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys
/bin/busybox mount -t proc proc /proc
echo {marker}
echo "uptime: $(/bin/busybox cat /proc/uptime)"
/bin/busybox reboot -f
""".encode()
entries = [
    ("bin", 0o040755, b"", 0), ("dev", 0o040755, b"", 0),
    ("dev/console", 0o020600, b"", (5 << 8) | 1),
    ("bin/busybox", 0o100755, open(busybox, "rb").read(), 0),
    ("bin/sh", 0o120777, b"busybox", 0),
    ("init", 0o100755, init, 0),
]
def pad(b):
    return b + b"\0" * (-len(b) % 4)
blob = b""
for ino, (name, mode, data, rdev) in enumerate(entries + [("TRAILER!!!", 0, b"", 0)], 1):
    n = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xff, len(n), 0]
    blob += pad(b"070701" + b"".join(b"%08x" % f for f in fields) + n) + pad(data)
open(out, "wb").write(blob)
PY

cmdline="${CMDLINE_EXTRA:-} console=ttyS0 reboot=k panic=1 pci=off nomodeset i8042.noaux i8042.nomux i8042.dumbkbd rdinit=/init"
echo "linux-boot.sh: booting $kernel" >&2
python3 - "$timeout_s" "$marker" "$VMCTL" vmm run --kernel "$kernel" \
    --initrd "$work/initramfs.cpio" --cmdline "$cmdline" --cpus "${CPUS:-2}" \
    --memory "${MEMORY:-512MiB}" --pit <<'PY'
import selectors, subprocess, sys, time
timeout, marker, cmd = float(sys.argv[1]), sys.argv[2].encode(), sys.argv[3:]
start = time.monotonic()
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
sel = selectors.DefaultSelector()
sel.register(p.stdout, selectors.EVENT_READ)
buf, found = b"", None
while time.monotonic() - start < timeout:
    if not sel.select(timeout=0.1):
        continue
    chunk = p.stdout.read1(65536)
    if not chunk:
        break
    sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
    buf = (buf + chunk)[-4096:]
    if found is None and marker in buf:
        found = time.monotonic() - start
if p.poll() is None:
    p.kill()  # the vmctl process this script started
status = p.wait()
if found is None:
    sys.exit(f"linux-boot.sh: FAILED: no {marker.decode()} within {timeout:.0f}s (vmctl status {status})")
print(f"linux-boot.sh: marker after {found * 1000:.0f} ms (vmctl status {status})")
PY
