#!/usr/bin/env bash
# The virtio-blk device path against dd, same file, same block sizes.
#
#   bench/blk.sh [SIZE_MIB]      (default 256; the file lives on /dev/shm)
#
# For each of read/write × 4 KiB/64 KiB, three rounds, each running the device benchmark
# (runtime/benches/blk.rs: a fake driver fills the queue in guest memory and calls the
# device's processing function; best of 3 passes) right before dd with the same block
# size on the same file: `dd if=FILE of=/dev/null bs=…` for reads,
# `dd if=/dev/zero of=FILE bs=… conv=notrunc` for writes. Interleaving keeps both sides
# under the same load; the best of each side is reported. MB/s are 10^6 bytes/s.
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib=${1:-256}
file=/dev/shm/vmctl-blk-bench.$$.img
trap 'rm -f "$file"' EXIT
dd if=/dev/zero of="$file" bs=1M count="$size_mib" status=none

cargo bench -q -p vmctl-runtime --bench blk --no-run
bench() {
  cargo bench -q -p vmctl-runtime --bench blk -- "$file" "$size_mib" "$1" "$2" |
    awk '$1 == "device" { print $4 }'
}

# dd's throughput in MB/s, from its byte count and seconds.
dd_mbs() {
  local line bytes secs
  line=$(LC_ALL=C dd "$@" 2>&1 | grep 'bytes')
  bytes=$(echo "$line" | awk '{print $1}')
  secs=$(echo "$line" | sed -E 's/.*copied, ([0-9.e+-]+) s.*/\1/')
  awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.0f", b / s / 1e6 }'
}

max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }

echo "file $file, $size_mib MiB, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %12s %12s %7s\n' "" "device" "dd" "ratio"
for op in read write; do
  for bs in 4 64; do
    count=$(( size_mib * 1024 / bs ))
    best_dev=0 best_dd=0
    for _ in 1 2 3; do
      best_dev=$(max "$best_dev" "$(bench "$op" "$bs")")
      if [ "$op" = read ]; then
        d=$(dd_mbs if="$file" of=/dev/null bs=${bs}k count=$count)
      else
        d=$(dd_mbs if=/dev/zero of="$file" bs=${bs}k count=$count conv=notrunc)
      fi
      best_dd=$(max "$best_dd" "$d")
    done
    printf '%-10s %7s MB/s %7s MB/s %6sx\n' "$op ${bs}k" "$best_dev" "$best_dd" \
      "$(awk -v d="$best_dev" -v r="$best_dd" 'BEGIN { printf "%.2f", d / r }')"
  done
done
