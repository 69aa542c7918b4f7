#!/usr/bin/env bash
# Benchmark of `vmctl validate` (release build) on generated infra repos: 10,000 VMs
# with a volume each and 1,000 VLANs over 50 hosts (one file per host), and the same
# shape at 1,000 VMs / 100 VLANs for the scaling ratio. Prints wall time (best of RUNS)
# and peak RSS (GNU time's %M).
#
# Targets on the 2-core reference machine: 10k under 1 s and under 300 MiB peak RSS;
# 10k costs at most 12x the 1k time.
#
#   bench/validate.sh            # RUNS=5 by default
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
work=${BENCH_DIR:-target/bench-validate}

if [[ ! -x /usr/bin/time ]]; then
    echo "needs GNU time at /usr/bin/time (apt-get install time)" >&2
    exit 1
fi
cargo build --release -q -p vmctl
bin=target/release/vmctl

bench/gen-config.sh 10000 1000 50 "$work/10k"
bench/gen-config.sh 1000 100 50 "$work/1k"

measure() { # dir -> "best_seconds max_rss_kib"
    local dir=$1 best="" rss=0
    "$bin" validate "$dir" >/dev/null # warm the page cache
    for _ in $(seq "$runs"); do
        local out
        out=$( { /usr/bin/time -f "%e %M" "$bin" validate "$dir" >/dev/null; } 2>&1 | tail -1)
        local t=${out% *} m=${out#* }
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
echo "10k VMs ($((size / 1024)) KiB of KDL, 51 files): ${t10} s, $((m10 / 1024)) MiB peak RSS"
echo "1k VMs: ${t1} s, $((m1 / 1024)) MiB peak RSS"
echo "1k -> 10k: ${ratio}x"
