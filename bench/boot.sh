#!/usr/bin/env bash
# Boot benchmark: `vmctl vmm run` against QEMU microvm on the test guest (tests/guest),
# interleaved, RUNS runs each (default 15): median and min wall time from process start
# to the guest's first serial byte, median and max peak RSS (/usr/bin/time -f %M), for a
# 128 MiB guest. Needs root (or /dev/kvm access), python3, /usr/bin/time and
# qemu-system-x86_64 (`apt-get install -y qemu-system-x86 time`).
#
#   bench/boot.sh            # builds vmctl (release) and the guest, then measures
#   RUNS=30 bench/boot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-15}
cargo build --release --quiet -p vmctl
vmctl=$PWD/target/release/vmctl
guest=$(tests/guest/build)
qemu=$(command -v qemu-system-x86_64 || true)
[ -n "$qemu" ] || { echo "bench/boot.sh: qemu-system-x86_64 is missing (apt-get install -y qemu-system-x86)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench/boot.sh: /usr/bin/time is missing (apt-get install -y time)" >&2; exit 1; }

exec python3 - "$runs" "$vmctl" "$qemu" "$guest" <<'PY'
import os, statistics, subprocess, sys, tempfile, time

runs, vmctl, qemu, guest = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
cmds = {
    "vmctl": [vmctl, "vmm", "run", "--kernel", guest, "--memory", "128MiB",
              "--cmdline", "console=ttyS0"],
    "qemu": [qemu, "-M", "microvm", "-accel", "kvm", "-m", "128M", "-nodefaults",
             "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
             "-kernel", guest, "-append", "console=ttyS0"],
}

def once(cmd):
    """(seconds to first stdout byte, peak RSS KiB, stdout) of one run."""
    with tempfile.NamedTemporaryFile() as rss:
        t0 = time.perf_counter()
        p = subprocess.Popen(["/usr/bin/time", "-q", "-f", "%M", "-o", rss.name] + cmd,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        first = p.stdout.read(1)
        t1 = time.perf_counter()
        rest = p.stdout.read()
        p.wait(timeout=60)
        if not first:
            sys.exit(f"{cmd[0]} printed nothing (exit {p.returncode})")
        kib = int(open(rss.name).read().split()[-1])
        return t1 - t0, kib, (first + rest).decode(errors="replace")

results = {name: [] for name in cmds}
for i in range(runs):
    for name, cmd in cmds.items():
        results[name].append(once(cmd))
        out = results[name][-1][2]
        if "testguest: ok" not in out and "testguest: pvh" not in out:
            sys.exit(f"{name}: unexpected guest output:\n{out}")

print(f"{runs} runs each, interleaved; 128 MiB guest; test guest {guest}")
print(f"{'':8} {'first byte: median':>20} {'min':>8} {'peak RSS: median':>18} {'max':>8}")
med = {}
for name, rs in results.items():
    t = [r[0] * 1000 for r in rs]
    m = [r[1] / 1024 for r in rs]
    med[name] = (statistics.median(t), statistics.median(m))
    print(f"{name:8} {statistics.median(t):17.1f} ms {min(t):5.1f} ms "
          f"{statistics.median(m):14.1f} MiB {max(m):4.1f} MiB")
ratio = med["vmctl"][0] / med["qemu"][0]
print(f"vmctl/QEMU time to first byte: {ratio:.3f} (target <= 0.2); "
      f"vmctl peak RSS {med['vmctl'][1]:.1f} MiB (target <= 6 MiB)")
PY
