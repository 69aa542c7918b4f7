#!/usr/bin/env bash
# Benchmark of vmctl on a fleet of remote hosts (issue 10): HOSTS (default "10") host
# network namespaces, each running its own sshd, with VMS (default 10) test-guest VMs
# each, reached from a controller namespace over OpenSSH exactly as remote hosts are.
# For each host count it prints the apply from empty (vmctl shipped to every host on the
# way), the apply from empty with vmctl already on the hosts, and the no-change plan
# three ways, interleaved over RUNS rounds (default 7): the fleet by default (ssh
# connections and agents kept between runs), the fleet with --ssh-control-dir none (one
# per host per run), and the same number of VMs on one local host (the baseline);
# medians, spread (min–max) and the median of the per-round ratios.
# Targets: no-change plan < 1 s for 10 × 10, ≤ 3× the local baseline.
# HOLD=FILE keeps everything up after the rounds until FILE is removed (profiling).
#
#   sudo bench/fleet.sh                      # HOSTS=10 VMS=10
#   sudo HOSTS="2 10 20" bench/fleet.sh      # how it grows
# Needs root, /dev/kvm, iproute2 and OpenSSH (client and server). Release build.
# Everything it makes (namespaces, sshds, VMs, files) goes away at the end, also on
# failure: the harness is the e2e tests' (tests/e2e/fleet.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
tests/guest/build >/dev/null
export HOSTS=${HOSTS:-10} VMS=${VMS:-10} RUNS=${RUNS:-7} CI=true
exec cargo test --release -q -p vmctl --test e2e fleet_bench::fleet_bench -- --ignored --nocapture --test-threads 1
