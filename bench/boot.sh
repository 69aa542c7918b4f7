#!/usr/bin/env bash
# Boot benchmark: `vmctl vmm run` against QEMU microvm (when installed) and Firecracker
# (when FIRECRACKER names its binary) on the test guest (tests/guest), interleaved, RUNS
# runs each (default 15): median and min wall time from process start to the guest's
# first serial byte, median and max peak RSS (/usr/bin/time -f %M), for a 128 MiB
# guest, as one table from one run; vmctl also with `--no-seccomp`, for what its
# seccomp filters cost, and with `--no-sandbox`, for what its jail costs. Needs root
# (or /dev/kvm access), python3, /usr/bin/time (`apt-get install -y time`); QEMU from
# `apt-get install -y qemu-system-x86`; Firecracker is not packaged (bench/boot.md
# says how to build it).
#
#   bench/boot.sh                                   # vmctl (+ QEMU if installed)
#   RUNS=30 FIRECRACKER=/path/to/firecracker bench/boot.sh
#
# vmctl is the static-pie release build of bench/build-static (bench/boot.md says why);
# VMCTL=/path/to/vmctl measures another build (e.g. target/release/vmctl).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-15}
vmctl=${VMCTL:-$(bench/build-static)}
guest=$(tests/guest/build)
qemu=$(command -v qemu-system-x86_64 || true)
firecracker=${FIRECRACKER:-}
[ -x /usr/bin/time ] || { echo "bench/boot.sh: /usr/bin/time is missing (apt-get install -y time)" >&2; exit 1; }
if [ -n "$firecracker" ] && [ ! -x "$firecracker" ]; then
    echo "bench/boot.sh: FIRECRACKER=$firecracker is not an executable" >&2; exit 1
fi
[ -n "$qemu" ] || echo "bench/boot.sh: qemu-system-x86_64 is missing; measuring without it (apt-get install -y qemu-system-x86)" >&2

exec python3 - "$runs" "$vmctl" "$qemu" "$firecracker" "$guest" <<'PY'
import atexit, json, os, shutil, statistics, subprocess, sys, tempfile, time

runs, vmctl, qemu, firecracker, guest = int(sys.argv[1]), *sys.argv[2:6]
work = tempfile.mkdtemp(prefix="vmctl-boot-bench-")
atexit.register(shutil.rmtree, work, True)
vmctl_run = [vmctl, "vmm", "run", "--kernel", guest, "--memory", "128MiB",
             "--cmdline", "console=ttyS0"]
# The same VMM without its seccomp filters: what the filters cost at start-up.
cmds = {
    "vmctl": vmctl_run,
    "no-seccomp": vmctl_run + ["--no-seccomp"],
    # Without the jail (namespaces, uid, cgroup): what the jail costs at start-up.
    "no-sandbox": vmctl_run + ["--no-sandbox"],
}
if qemu:
    cmds["qemu"] = [qemu, "-M", "microvm", "-accel", "kvm", "-m", "128M", "-nodefaults",
                    "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
                    "-kernel", guest, "-append", "console=ttyS0"]
if firecracker:
    # No API socket: the VM from a config file; serial on stdout, its log discarded.
    # v1.16.1 enters the guest through its PVH note (`testguest: pvh`) and exits 1
    # after the guest's poweroff (i8042 reset, then triple fault): exit codes are not
    # checked, the guest's verdict is.
    config = os.path.join(work, "firecracker.json")
    with open(config, "w") as f:
        json.dump({
            "boot-source": {"kernel_image_path": guest, "boot_args": "console=ttyS0"},
            "drives": [],
            "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
        }, f)
    cmds["firecracker"] = [firecracker, "--no-api", "--config-file", config,
                           "--log-path", "/dev/null", "--level", "Error"]

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
        if "testguest: ok" not in out:
            sys.exit(f"{name}: unexpected guest output:\n{out}")

print(f"{runs} runs each, interleaved; 128 MiB guest; test guest {guest}; vmctl {vmctl}")
print(f"{'':12} {'first byte: median':>20} {'min':>8} {'peak RSS: median':>18} {'max':>8}")
med = {}
for name, rs in results.items():
    t = [r[0] * 1000 for r in rs]
    m = [r[1] / 1024 for r in rs]
    med[name] = (statistics.median(t), statistics.median(m))
    print(f"{name:12} {statistics.median(t):17.1f} ms {min(t):5.1f} ms "
          f"{statistics.median(m):14.1f} MiB {max(m):4.1f} MiB")
for other in ("qemu", "firecracker"):
    if other in med:
        print(f"vmctl/{other} time to first byte: {med['vmctl'][0] / med[other][0]:.3f}; "
              f"peak RSS: {med['vmctl'][1] / med[other][1]:.2f}")
print(f"seccomp filters: {med['vmctl'][0] - med['no-seccomp'][0]:+.2f} ms "
      f"({(med['vmctl'][0] / med['no-seccomp'][0] - 1) * 100:+.0f} %) to the first byte, "
      f"{med['vmctl'][1] - med['no-seccomp'][1]:+.2f} MiB peak RSS "
      "(target: <= +3 ms or +20 %, whichever is larger)")
print(f"jail: {med['vmctl'][0] - med['no-sandbox'][0]:+.2f} ms "
      f"({(med['vmctl'][0] / med['no-sandbox'][0] - 1) * 100:+.0f} %) to the first byte, "
      f"{med['vmctl'][1] - med['no-sandbox'][1]:+.2f} MiB peak RSS "
      "(target: <= +3 ms or +20 %, whichever is larger)")
print(f"vmctl peak RSS {med['vmctl'][1]:.1f} MiB (target <= 4 MiB); "
      "QEMU time ratio target <= 0.2")
PY
