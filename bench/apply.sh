#!/usr/bin/env bash
# Benchmark of `vmctl apply` and of the no-change `vmctl plan` on a live deployment
# (release build): a generated config of N VMs (default 50), each booting the test guest
# with 64 MiB, one volume and one NIC, on one host whose networking lives in a network
# namespace made for the run and whose state dir and pool are in a temp dir.
#
# Prints: the apply from empty until every VM runs (wall), the time until every console
# shows `testguest: ok`, then the no-change plan (best of RUNS, wall and CPU), then the
# destroy. Target on the 2-core reference machine: no-change plan under 0.5 s.
#
#   sudo bench/apply.sh           # N=50 RUNS=5
#   sudo N=20 bench/apply.sh
#   sudo VMCTL=/path/to/other/vmctl bench/apply.sh   # another build, same machine
# Needs root, /dev/kvm and iproute2. Everything it makes goes away at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${N:-50}
runs=${RUNS:-5}
ns="vmctl-bench-$$"
work=$(mktemp -d /tmp/vmctl-bench-apply.XXXXXX)

# VMCTL: another build to measure (e.g. an older commit's, to compare in one session).
if [[ -n ${VMCTL:-} ]]; then
    bin=$VMCTL
else
    cargo build --release -q -p vmctl
    bin=$PWD/target/release/vmctl
fi
guest=$(tests/guest/build)

cleanup() {
    # VMMs by pid (their pid files), then the namespace (bridges, taps), then files.
    for pidfile in "$work"/state/bench/vms/*/vmm.pid; do
        [[ -f $pidfile ]] && kill -9 "$(cat "$pidfile")" 2>/dev/null || true
    done
    ip netns delete "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"

mkdir -p "$work/config"
{
    echo 'project "bench"'
    echo "host \"local\" {"
    echo "    state-dir \"$work/state\""
    echo "    netns \"$ns\""
    echo "    cpus 64"
    echo "    memory \"16GiB\""
    echo "}"
    echo 'network "lan" host="local"'
    echo 'vlan "v10" network="lan" id=10'
    echo 'vlan "v20" network="lan" id=20'
    echo "pool \"fast\" host=\"local\" type=\"dir\" {"
    echo "    path \"$work/pool\""
    echo "}"
    for i in $(seq 1 "$n"); do
        vlan=v$(( (i % 2 + 1) * 10 ))
        echo "volume \"vm-$i-root\" pool=\"fast\" size=\"16MiB\""
        echo "vm \"vm-$i\" host=\"local\" {"
        echo "    cpus 1"
        echo "    memory \"64MiB\""
        echo "    kernel \"$guest\""
        echo "    cmdline \"console=ttyS0 testguest.name=vm-$i testguest.halt\""
        echo "    disk \"vm-$i-root\""
        echo "    nic vlan=\"$vlan\""
        echo "}"
    done
} > "$work/config/bench.kdl"

now() { date +%s.%N; }
start=$(now)
"$bin" apply "$work/config" --auto-approve > "$work/apply.log"
applied=$(now)
running=$(grep -l . "$work"/state/bench/vms/*/vmm.pid | wc -l)
for i in $(seq 1 "$n"); do
    until grep -q '^testguest: ok' "$work/state/bench/vms/vm-$i/console.log" 2>/dev/null; do
        sleep 0.05
    done
done
booted=$(now)
echo "apply from empty, $n VMs: $(echo "$applied - $start" | bc) s until all run ($running pid files); $(echo "$booted - $start" | bc) s until every console says ok"
tail -n 1 "$work/apply.log"

plan_best() { # label
best="" best_cpu=""
for _ in $(seq 1 "$runs"); do
    t0=$(now)
    cpu=$( { /usr/bin/time -f '%U %S' "$bin" plan "$work/config" --detailed-exitcode > "$work/plan.out"; } 2>&1 | tail -n 1)
    t1=$(now)
    grep -q '^No changes.' "$work/plan.out"
    wall=$(echo "$t1 - $t0" | bc)
    cpu=$(echo "$cpu" | awk '{print $1 + $2}')
    if [[ -z $best ]] || (( $(echo "$wall < $best" | bc) )); then best=$wall; best_cpu=$cpu; fi
done
echo "no-change plan on the live deployment ($n VMs, $1): best of $runs: ${best} s wall, ${best_cpu} s CPU"
}

plan_best "guests running"

t0=$(now)
"$bin" destroy "$work/config" --auto-approve > "$work/destroy.log"
t1=$(now)
echo "destroy: $(echo "$t1 - $t0" | bc) s; $(tail -n 1 "$work/destroy.log")"
