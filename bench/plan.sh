#!/usr/bin/env bash
# Benchmark of `vmctl plan` (release build), end to end: load and validate the config,
# read the live state, diff, build the apply graph, render the plan into a file.
#
# Configs: bench/gen-config.sh's 10,000 VMs with a volume each and 1,000 VLANs over 50
# hosts (from templates, counted per VLAN), and the same shape at 1,000 VMs / 100 VLANs
# for the scaling ratio. Live state:
# the config as applied, drifted in 10% of its resources (planner/examples/bench_live.rs).
# Prints wall time (best of RUNS) and peak RSS (GNU time's %M), and `validate` on the
# same config for comparison (what planning adds on top of loading).
#
# Targets on the 2-core reference machine: 10k under 1.5 s and under 400 MiB peak RSS;
# 10k costs at most 12x the 1k time.
#
#   bench/plan.sh                 # RUNS=5 by default
#   LAYOUT=flat bench/plan.sh       # every resource written out
#   VMCTL=path/to/vmctl BENCH_LIVE=path/to/bench_live bench/plan.sh   # other builds
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
work=${BENCH_DIR:-target/bench-plan}
gen=${GEN:-bench/gen-config.sh}

if [[ ! -x /usr/bin/time ]]; then
    echo "needs GNU time at /usr/bin/time (apt-get install time)" >&2
    exit 1
fi
if [[ ! -f $gen ]]; then
    echo "needs the config generator $gen (from the config-language benchmark)" >&2
    exit 1
fi
if [[ -z ${VMCTL:-} ]]; then
    cargo build --release -q -p vmctl
fi
if [[ -z ${BENCH_LIVE:-} ]]; then
    cargo build --release -q -p vmctl-planner --example bench_live
fi
bin=${VMCTL:-target/release/vmctl}
live=${BENCH_LIVE:-target/release/examples/bench_live}

bash "$gen" 10000 1000 50 "$work/10k"
bash "$gen" 1000 100 50 "$work/1k"
"$live" "$work/10k" "$work/10k.live.json" 10
"$live" "$work/1k" "$work/1k.live.json" 10

measure() { # command... -> "best_wall_s max_rss_kib best_cpu_s" (cpu = user + sys)
    local best="" rss=0 cpu=""
    "$@" >/dev/null # warm the page cache
    for _ in $(seq "$runs"); do
        local out t m c start end
        # Wall time to the microsecond (GNU time's %e has two decimals).
        start=$EPOCHREALTIME
        out=$( { /usr/bin/time -f "%M %U %S" "$@" >/dev/null; } 2>&1 | tail -1)
        end=$EPOCHREALTIME
        read -r m u s <<<"$out"
        t=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
        c=$(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')
        if [[ -z $best ]] || awk -v a="$t" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$t; fi
        if [[ -z $cpu ]] || awk -v a="$c" -v b="$cpu" 'BEGIN { exit !(a < b) }'; then cpu=$c; fi
        ((m > rss)) && rss=$m
    done
    echo "$best $rss $cpu"
}

plan() { # size -> plan into a file
    "$bin" plan "$work/$1" --live "$work/$1.live.json" >"$work/$1.plan.txt"
}
export -f plan
export bin work

read -r t10 m10 c10 < <(measure bash -c 'plan 10k')
read -r t1 m1 c1 < <(measure bash -c 'plan 1k')
read -r v10 vm10 vc10 < <(measure "$bin" validate "$work/10k")
echo "plan 10k: $(tail -1 "$work/10k.plan.txt")"
echo "plan 1k:  $(tail -1 "$work/1k.plan.txt")"
awk -v t10="$t10" -v m10="$m10" -v c10="$c10" -v t1="$t1" -v m1="$m1" -v c1="$c1" \
    -v v10="$v10" -v vm10="$vm10" -v vc10="$vc10" 'BEGIN {
    printf "plan 10k VMs: %.3f s wall, %.2f s CPU, %.0f MiB peak RSS\n", t10, c10, m10 / 1024
    printf "plan  1k VMs: %.3f s wall, %.2f s CPU, %.0f MiB peak RSS\n", t1, c1, m1 / 1024
    printf "validate 10k: %.3f s wall, %.2f s CPU, %.0f MiB peak RSS (loading alone)\n", v10, vc10, vm10 / 1024
    printf "1k -> 10k: %.1fx the wall time, %.1fx the CPU time\n", (t1 > 0 ? t10 / t1 : 0), (c1 > 0 ? c10 / c1 : 0)
}'
echo "config: $gen${LAYOUT:+ LAYOUT=$LAYOUT}; vmctl: $bin"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine inflates wall times)"
