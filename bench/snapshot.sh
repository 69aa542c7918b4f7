#!/usr/bin/env bash
# Snapshot benchmark: snapshot create and restore-to-running times of a counting test
# guest (tests/guest, `testguest.count`) of 128 MiB and 1 GiB, RUNS runs each (default
# 10), from the binary: the VMM runs detached and jailed as `vmctl apply` starts it.
#
# - create: wall time of the `snapshot` control request (the client opens the state
#   and memory files and passes them with SCM_RIGHTS, as `vmctl snapshot create` does;
#   the VM is resumed by the same request), and the VMM's own `took_ms` (pause to end
#   of save); disks are not part of it (the guest has none here).
# - restore: wall time of `vmctl vmm --spec FILE --restore DIR` (detached): from the
#   process's start to its launcher's return, which is when the restored VMM serves
#   its control socket — built from the snapshot, jailed, every thread confined, its
#   vCPUs released. For comparison, the same for a boot of the same spec.
# Needs root and /dev/kvm, python3.
#
#   bench/snapshot.sh
#   RUNS=20 VMCTL=target/release/vmctl bench/snapshot.sh
#
# vmctl is the static-pie release build of bench/build-static (as bench/boot.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-10}
vmctl=${VMCTL:-$(bench/build-static)}
guest=$(tests/guest/build)

exec python3 - "$runs" "$vmctl" "$guest" <<'PY'
import array, atexit, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

runs, vmctl, guest = int(sys.argv[1]), sys.argv[2], sys.argv[3]
work = tempfile.mkdtemp(prefix="vmctl-snapshot-bench-")
atexit.register(shutil.rmtree, work, True)

def request(sock, body, files=()):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    line = (json.dumps(dict(v=1, **body)) + "\n").encode()
    if files:
        s.sendmsg([line], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", files))])
    else:
        s.sendall(line)
    reply = json.loads(s.makefile().readline())
    s.close()
    return reply

def counts(log):
    try:
        with open(log) as f:
            return sum(1 for l in f if l.startswith("testguest: count="))
    except FileNotFoundError:
        return 0

def wait(cond, what, timeout=60):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            sys.exit(f"bench/snapshot.sh: timed out waiting for {what}")
        time.sleep(0.01)

def launch(spec, extra=()):
    t = time.monotonic()
    out = subprocess.run([vmctl, "vmm", "--spec", spec, *extra], capture_output=True, text=True)
    took = time.monotonic() - t
    if out.returncode != 0:
        sys.exit(f"bench/snapshot.sh: vmctl vmm failed: {out.stdout}{out.stderr}")
    return took

def kill(sock):
    try:
        request(sock, {"cmd": "kill"})
    except OSError:
        pass
    wait(lambda: not os.path.exists(sock), "the VMM to end")

rows = []
for mem in ["128MiB", "1GiB"]:
    d = os.path.join(work, mem)
    os.makedirs(d)
    sock, log = os.path.join(d, "control.sock"), os.path.join(d, "console.log")
    spec = os.path.join(d, "vmm.json")
    with open(spec, "w") as f:
        json.dump({"kernel": guest, "cmdline": "console=ttyS0 testguest.count", "cpus": 1,
                   "memory": mem, "console_log": log, "control_socket": sock,
                   "pid_file": os.path.join(d, "vmm.pid")}, f)
    boot, create, took, restore = [], [], [], []
    snap = os.path.join(d, "snap")
    os.makedirs(snap)
    state_bytes = written = 0
    for i in range(runs):
        boot.append(launch(spec))
        wait(lambda: counts(log) >= 2, "the guest to count")
        st = os.open(os.path.join(snap, "state"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        mm = os.open(os.path.join(snap, "memory"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        t = time.monotonic()
        reply = request(sock, {"cmd": "snapshot", "resume": True}, [st, mm])
        create.append(time.monotonic() - t)
        os.close(st); os.close(mm)
        if reply.get("reply") != "snapshot":
            sys.exit(f"bench/snapshot.sh: snapshot failed: {reply}")
        took.append(reply["took_ms"] / 1000)
        state_bytes, written = reply["state_bytes"], reply["written_bytes"]
        kill(sock)
        before = counts(log)
        restore.append(launch(spec, ["--restore", snap]))
        wait(lambda: counts(log) > before, "the restored guest to count")
        kill(sock)
        os.remove(log)
    ms = lambda xs: f"{statistics.median(xs) * 1000:.1f} ms (min {min(xs) * 1000:.1f})"
    rows.append((mem, ms(create), ms(took), ms(restore), ms(boot),
                 f"{state_bytes / 1024:.0f} KiB", f"{written / 2**20:.1f} MiB"))

print(f"vmctl {vmctl}, {runs} runs, medians (min):")
head = ("guest", "create (request)", "save in VMM", "restore-to-running", "boot (same spec)", "state", "memory written")
print(" | ".join(head))
for r in rows:
    print(" | ".join(r))
PY
