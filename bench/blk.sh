#!/usr/bin/env bash
# The virtio-blk device path against dd, same file, same block sizes.
#
#   bench/blk.sh [SIZE_MIB]      (default 256; the file lives on /dev/shm)
#
# Runs the device benchmark (runtime/benches/blk.rs: a fake driver fills the queue in
# guest memory and calls the device's processing function) and then dd with the same
# block size on the same file: `dd if=FILE of=/dev/null bs=…` for reads and
# `dd if=/dev/zero of=FILE bs=… conv=notrunc` for writes. MB/s are 10^6 bytes/s.
# Each figure is the best of 3 runs.
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib=${1:-256}
file=/dev/shm/vmctl-blk-bench.$$.img
trap 'rm -f "$file"' EXIT

dd if=/dev/zero of="$file" bs=1M count="$size_mib" status=none

cargo bench -q -p vmctl-runtime --bench blk -- "$file" "$size_mib" | tee /tmp/vmctl-blk-bench.$$.out
echo

# Best-of-3 dd throughput in MB/s, computed from dd's byte count and seconds.
dd_mbs() {
  local best=0
  for _ in 1 2 3; do
    local line
    line=$(LC_ALL=C dd "$@" 2>&1 | grep 'bytes')
    local bytes secs
    bytes=$(echo "$line" | awk '{print $1}')
    secs=$(echo "$line" | sed -E 's/.*copied, ([0-9.e+-]+) s.*/\1/')
    best=$(awk -v b="$bytes" -v s="$secs" -v m="$best" 'BEGIN { r = b / s / 1e6; print (r > m ? r : m) }')
  done
  printf '%.0f' "$best"
}

printf '%-12s %10s %10s %7s\n' "" "device" "dd" "ratio"
for op in read write; do
  for bs in 4 64; do
    count=$(( size_mib * 1024 / bs ))
    if [ "$op" = read ]; then
      dd=$(dd_mbs if="$file" of=/dev/null bs=${bs}k count=$count)
    else
      dd=$(dd_mbs if=/dev/zero of="$file" bs=${bs}k count=$count conv=notrunc)
    fi
    dev=$(awk -v op="$op" -v bs="bs=${bs}k" '$2 == op && $3 == bs { print $4 }' /tmp/vmctl-blk-bench.$$.out)
    printf '%-12s %10s %10s %7s\n' "$op ${bs}k" "$dev MB/s" "$dd MB/s" \
      "$(awk -v d="$dev" -v r="$dd" 'BEGIN { printf "%.2fx", d / r }')"
  done
done
rm -f /tmp/vmctl-blk-bench.$$.out
