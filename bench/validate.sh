#!/usr/bin/env bash
# Benchmark of `vmctl validate` (release build) on generated infra repos: 10,000 VMs
# with a volume each and 1,000 VLANs over 50 hosts (one file per host, the VMs from a
# template and counted per VLAN: bench/gen-config.sh), and the same shape at 1,000 VMs
# / 100 VLANs for the scaling ratio. Prints wall time (best of RUNS, to the millisecond)
# and peak RSS (GNU time's %M).
#
# Targets on the 2-core reference machine: 10k under 1 s and under 300 MiB peak RSS;
# 10k costs at most 12x the 1k time.
#
#   bench/validate.sh            # RUNS=5 by default
#   LAYOUT=flat bench/validate.sh    # every resource written out
#   VMCTL=path/to/vmctl bench/validate.sh              # another build (none is made)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
work=${BENCH_DIR:-target/bench-validate}
gen=${GEN:-bench/gen-config.sh}

if [[ ! -x /usr/bin/time ]]; then
    echo "needs GNU time at /usr/bin/time (apt-get install time)" >&2
    exit 1
fi
if [[ -z ${VMCTL:-} ]]; then
    cargo build --release -q -p vmctl
fi
bin=${VMCTL:-target/release/vmctl}

bash "$gen" 10000 1000 50 "$work/10k"
bash "$gen" 1000 100 50 "$work/1k"

measure() { # dir -> "best_seconds max_rss_kib"
    local dir=$1 best="" rss=0
    "$bin" validate "$dir" >/dev/null # warm the page cache
    for _ in $(seq "$runs"); do
        local out start end
        # Wall time to the microsecond (GNU time's %e has two decimals: too coarse
        # for a run of 10 ms), peak RSS from GNU time.
        start=$EPOCHREALTIME
        out=$( { /usr/bin/time -f "%M" "$bin" validate "$dir" >/dev/null; } 2>&1 | tail -1)
        end=$EPOCHREALTIME
        local t m=$out
        t=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
        if [[ -z $best ]] || awk -v a="$t" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$t; fi
        ((m > rss)) && rss=$m
    done
    echo "$best $rss"
}

"$bin" validate "$work/10k"
size=$(du -sb "$work/10k" | cut -f1)
read -r t10 m10 < <(measure "$work/10k")
read -r t1 m1 < <(measure "$work/1k")
ratio=$(awk -v a="$t10" -v b="$t1" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "inf" }')
echo "10k VMs ($((size / 1024)) KiB of KDL, 51 files, $gen${LAYOUT:+ LAYOUT=$LAYOUT}, $bin): ${t10} s, $((m10 / 1024)) MiB peak RSS"
echo "1k VMs: ${t1} s, $((m1 / 1024)) MiB peak RSS"
echo "1k -> 10k: ${ratio}x"
