#!/usr/bin/env bash
# What addresses (IPAM) cost `vmctl plan` at 10,000 VMs: bench/gen-config.sh's 10k config
# as it is (every VLAN has a gateway, so every one of the 10,000 NICs gets an address:
# kept from the live state, or allocated for the VMs the drift removed) against the same
# config with ADDRESSES=none (no subnets: no NIC has an address), each planned against
# its own applied-and-10%-drifted live state (planner/examples/bench_live.rs). The two
# are run interleaved, RUNS times each (one with, one without, …), so load on the
# machine hits both alike; prints the best and the median wall time of each.
#
#   bench/plan-ipam.sh            # RUNS=9 by default
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-9}
work=${BENCH_DIR:-target/bench-plan-ipam}
cargo build --release -q -p vmctl
cargo build --release -q -p vmctl-planner --example bench_live
bin=target/release/vmctl
live=target/release/examples/bench_live

bash bench/gen-config.sh 10000 1000 50 "$work/with"
ADDRESSES=none bash bench/gen-config.sh 10000 1000 50 "$work/without"
for c in with without; do
    "$live" "$work/$c" "$work/$c.live.json" 10
    "$bin" plan "$work/$c" --live "$work/$c.live.json" >"$work/$c.plan.txt" # warm
done

wall() { # config -> seconds of one plan
    local start end
    start=$EPOCHREALTIME
    "$bin" plan "$work/$1" --live "$work/$1.live.json" >"$work/$1.plan.txt"
    end=$EPOCHREALTIME
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
}

: >"$work/with.times"
: >"$work/without.times"
for _ in $(seq "$runs"); do
    wall with >>"$work/with.times"
    wall without >>"$work/without.times"
done
stats() { sort -n "$1" | awk '{ t[NR] = $1 } END { printf "best %.3f s, median %.3f s", t[1], t[int((NR + 1) / 2)] }'; }
echo "with addresses:    $(stats "$work/with.times")   $(tail -1 "$work/with.plan.txt")"
echo "without addresses: $(stats "$work/without.times")   $(tail -1 "$work/without.plan.txt")"
grep -c 'ip   = ' "$work/with.plan.txt" | sed 's/^/NIC addresses shown in the with-addresses plan: /'
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo build --release -q -p vmctl-planner --example bench_ipam
target/release/examples/bench_ipam "$work/with" "$runs"
