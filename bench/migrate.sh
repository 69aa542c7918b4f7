#!/usr/bin/env bash
# Migration benchmark: a running counting test guest (tests/guest, `testguest.count`) of
# 128 MiB with a 64 MiB disk moved between two hosts by editing its `host` (and its
# disk's pool) and `vmctl apply`, RUNS moves (default 6), back and forth, for:
#   - idle:    `testguest.halt` (the guest checks its machine, then halts);
#   - writing: `testguest.count=96` (the guest rewrites 96 MiB of its memory, a page
#     pattern per tick, and prints a checksum every tick).
# Both hosts are this machine (two state dirs, two pools; no ssh): what is measured is
# the migration itself — the save, the copy of disk, state and memory through vmctl,
# the restore — not a network. Reported per move, from the apply's own line
# (`Migrated VM … paused N ms (its save M ms); sent …`): the guest's pause, from the
# save request to the new VMM running it, and the bytes sent.
# Needs root and /dev/kvm.
#
#   sudo bench/migrate.sh
#   RUNS=10 VMCTL=target/release/vmctl sudo -E bench/migrate.sh
#
# vmctl is the static-pie release build of bench/build-static (as bench/boot.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-6}
vmctl=${VMCTL:-$(bench/build-static)}
guest=$(tests/guest/build)
work=$(mktemp -d /tmp/vmctl-migrate-bench-XXXXXX)
config="$work/config"
cleanup() {
    "$vmctl" --color never destroy --auto-approve --stop-timeout 0 "$config" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$config"

write_config() { # HOST CMDLINE
    cat > "$config/main.kdl" <<KDL
project "migbench"
host "a" {
    state-dir "$work/a"
}
host "b" {
    state-dir "$work/b"
}
pool "pool-a" host="a" type="dir" path="$work/pool-a"
pool "pool-b" host="b" type="dir" path="$work/pool-b"
volume "mover-root" pool="pool-$1" size="64MiB"
vm "mover" host="$1" {
    cpus 1
    memory "128MiB"
    kernel "$guest"
    cmdline "console=ttyS0 testguest.name=mover $2"
    disk "mover-root"
}
KDL
}

apply() {
    "$vmctl" --color never apply --auto-approve --stop-timeout 0 "$config"
}

for mode in idle writing; do
    case $mode in
        idle) cmdline="testguest.halt" ;;
        writing) cmdline="testguest.count=96" ;;
    esac
    write_config a "$cmdline"
    apply >/dev/null
    sleep 1 # the guest boots and starts its work
    pauses=()
    at=a
    for _ in $(seq "$runs"); do
        if [ "$at" = a ]; then to=b; else to=a; fi
        write_config "$to" "$cmdline"
        line=$(apply | grep '^Migrated VM "mover"')
        echo "$mode $at->$to: ${line#Migrated VM \"mover\" }"
        pauses+=("$(sed -E 's/.*paused ([0-9]+) ms.*/\1/' <<<"$line")")
        at=$to
        sleep 0.5
    done
    sorted=$(printf '%s\n' "${pauses[@]}" | sort -n)
    median=$(sed -n "$(( (runs + 1) / 2 ))p" <<<"$sorted")
    echo "$mode: pause median ${median} ms, min $(head -1 <<<"$sorted") ms, max $(tail -1 <<<"$sorted") ms over $runs moves"
    "$vmctl" --color never destroy --auto-approve --stop-timeout 0 "$config" >/dev/null
done
