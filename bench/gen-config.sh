#!/usr/bin/env bash
# Generates a benchmark infra repo: VMS VMs with a root volume each and VLANS VLANs,
# spread over HOSTS hosts, one file per host (as real infra repos are split), plus a
# project file. Written as a user would: each host's VMs start from one template, and
# each VLAN's VMs and their volumes are counted nodes (`count`, `{n}`); one VM in ten
# starts after another (`depends-on`).
#
# LAYOUT=flat writes every resource out instead (no template, no count: the configs of
# the benchmarks before templates and count, one VM in ten depending on the one before).
# Every VLAN has a gateway (`10.<host>.<id>.1/24`), so every NIC gets an address at plan
# time (IPAM); ADDRESSES=none leaves the gateways out: no subnets, no addresses (for
# bench/plan-ipam.sh's comparison).
# Usage: [LAYOUT=flat] [ADDRESSES=none] bench/gen-config.sh VMS VLANS HOSTS OUTDIR
set -euo pipefail
vms=$1 vlans=$2 hosts=$3 out=$4
flat=0
[[ ${LAYOUT:-} == flat ]] && flat=1
addresses=1
[[ ${ADDRESSES:-} == none ]] && addresses=0
rm -rf "$out"
mkdir -p "$out"
echo 'project "bench"' > "$out/project.kdl"
awk -v vms="$vms" -v vlans="$vlans" -v hosts="$hosts" -v out="$out" -v flat="$flat" -v addresses="$addresses" '
BEGIN {
    vms_per_host = int(vms / hosts); vlans_per_host = int(vlans / hosts)
    for (h = 0; h < hosts; h++) {
        f = sprintf("%s/host-%02d.kdl", out, h)
        printf "host \"h%02d\" {\n    ssh \"root@10.0.%d.1\"\n    cpus 160\n    memory \"64GiB\"\n}\n\n", h, h > f
        printf "network \"lan-%02d\" host=\"h%02d\" {\n    uplink \"eth1\"\n}\n", h, h > f
        for (v = 0; v < vlans_per_host; v++) {
            id = v + 2
            if (addresses)
                printf "vlan \"v%02d-%d\" network=\"lan-%02d\" id=%d {\n    gateway \"10.%d.%d.1/24\"\n}\n", h, id, h, id, h, id > f
            else
                printf "vlan \"v%02d-%d\" network=\"lan-%02d\" id=%d\n", h, id, h, id > f
        }
        printf "\npool \"p%02d\" host=\"h%02d\" type=\"dir\" {\n    path \"/var/lib/vmctl/pools/p%02d\"\n}\n\n", h, h, h > f
        if (flat) {
            for (i = 0; i < vms_per_host; i++) {
                name = sprintf("vm-%02d-%04d", h, i)
                printf "volume \"%s-root\" pool=\"p%02d\" size=\"4GiB\"\n", name, h > f
                printf "vm \"%s\" host=\"h%02d\" {\n    cpus 1\n    memory \"256MiB\"\n    kernel \"images/vmlinux\"\n    cmdline \"console=ttyS0\"\n    disk \"%s-root\"\n    nic vlan=\"v%02d-%d\"\n", name, h, name, h, (i % vlans_per_host) + 2 > f
                if (i % 10 == 1) printf "    depends-on \"vm-%02d-%04d\"\n", h, i - 1 > f
                printf "}\n" > f
            }
            close(f)
            continue
        }
        printf "template \"vm-%02d\" {\n    host \"h%02d\"\n    cpus 1\n    memory \"256MiB\"\n    kernel \"images/vmlinux\"\n    cmdline \"console=ttyS0\"\n}\n", h, h > f
        for (v = 0; v < vlans_per_host; v++) {
            id = v + 2
            # The share of the VMs of the host on this VLAN.
            n = int(vms_per_host / vlans_per_host)
            if (v < vms_per_host % vlans_per_host) n++
            if (n == 0) continue
            group = sprintf("vm-%02d-%d", h, id)
            printf "\nvolume \"%s-{n}-root\" count=%d pool=\"p%02d\" size=\"4GiB\"\n", group, n, h > f
            counted = n >= 2 ? n - 1 : n
            printf "vm \"%s-{n}\" count=%d template=\"vm-%02d\" {\n    disk \"%s-{n}-root\"\n    nic vlan=\"v%02d-%d\"\n}\n", group, counted, h, group, h, id > f
            if (n >= 2) {
                # The last VM of the VLAN starts after the one before it.
                printf "vm \"%s-%d\" template=\"vm-%02d\" {\n    disk \"%s-%d-root\"\n    nic vlan=\"v%02d-%d\"\n    depends-on \"%s-%d\"\n}\n", group, n, h, group, n, h, id, group, n - 1 > f
            }
        }
        close(f)
    }
}'
