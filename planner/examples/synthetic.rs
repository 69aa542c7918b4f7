//! Times the planner alone (no KDL parsing) on a synthetic config: `cargo run --release
//! -p vmctl-planner --example synthetic -- VMS` (default 10,000 VMs with a volume each,
//! 1,000 VLANs over 50 hosts), against a live state that differs in 10% of resources.

use std::time::Instant;

use vmctl_planner::render::{human, json};
use vmctl_planner::{plan, ApplyGraph, LiveFile, PlanOptions, VmStatus};
use vmctl_schema::{Config, Host, Network, Nic, Pool, PoolKind, Vlan, Vm, VmState, Volume};

fn config(vms: usize) -> Config {
    let hosts = 50.min(vms.div_ceil(200)).max(1);
    let vlans_per_host = (vms / 10 / hosts).max(1);
    let host = |i: usize| format!("h{i:02}");
    let mut c = Config::new("bench");
    for h in 0..hosts {
        c.hosts.push(Host {
            name: host(h),
            state_dir: "/var/lib/vmctl".into(),
            netns: None,
            cpus: None,
            memory: None,
            reserve_memory: 0.08,
            cpu_overcommit: 1.5,
            ssh: None,
            sudo: false,
            underlay: None,
            cpuid_mask: Vec::new(),
            migration_downtime: None,
        });
        c.networks.push(Network {
            name: format!("net-{h}"),
            host: host(h),
            hosts: Vec::new(),
            bridge: format!("br{h}"),
            uplink: None,
        });
        c.pools.push(Pool {
            name: format!("pool-{h}"),
            host: host(h),
            kind: PoolKind::Dir,
            path: format!("/srv/pool-{h}").into(),
        });
        for v in 0..vlans_per_host {
            c.vlans.push(Vlan {
                name: format!("vlan-{h}-{v}"),
                network: format!("net-{h}"),
                id: 100 + v as u16,
                vni: None,
                gateway: None,
                subnet: None,
                gateway_host: None,
                dhcp: false,
                nat: false,
                nat_via: None,
                route_to: Vec::new(),
            });
        }
    }
    for i in 0..vms {
        let h = i % hosts;
        c.volumes.push(Volume {
            name: format!("vm-{i}-root"),
            pool: format!("pool-{h}"),
            size: 1 << 30,
            from: None,
            prevent_destroy: false,
        });
        c.vms.push(Vm {
            name: format!("vm-{i}"),
            host: host(h),
            cpus: 1,
            memory: 256 << 20,
            kernel: "/images/vmlinux".into(),
            initrd: None,
            cmdline: "console=ttyS0 root=/dev/vda rw".into(),
            disks: vec![format!("vm-{i}-root")],
            nics: vec![Nic {
                vlan: format!("vlan-{h}-{}", (i / hosts) % vlans_per_host),
                mac: format!(
                    "52:54:00:{:02x}:{:02x}:{:02x}",
                    i >> 16,
                    (i >> 8) & 255,
                    i & 255
                ),
                ip: None,
                ip_allocated: false,
            }],
            cpuset: None,
            state: VmState::Running,
            depends_on: Vec::new(),
            ip_cmdline: false,
            ip_argument: None,
            migrate: true,
            migration_downtime: None,
            cpuid_mask: Vec::new(),
        });
    }
    c
}

fn main() {
    let vms: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let config = config(vms);
    let mut live = LiveFile::applied(&config);
    // 10% of VMs and volumes differ: memory, crashes, missing, grown, extra.
    for (h, state) in live.hosts.values_mut().enumerate() {
        for (i, vm) in state.vms.iter_mut().enumerate() {
            match i % 30 {
                0 => vm.spec.memory = 128 << 20,
                1 => vm.status = VmStatus::Crashed,
                _ => {}
            }
        }
        state.vms.retain(|vm| !vm.name.ends_with('7') || h % 2 == 1);
        for (i, volume) in state.volumes.iter_mut().enumerate() {
            if i % 20 == 0 {
                volume.size = 512 << 20;
            }
        }
    }
    let start = Instant::now();
    let planned = plan(&config, &live, &PlanOptions::default()).expect("plan");
    let diffed = start.elapsed();
    let graph = ApplyGraph::build(&planned).expect("graph");
    let graphed = start.elapsed();
    let text = human::render(&planned, false);
    let rendered = start.elapsed();
    let json = json::render(&planned, &graph);
    let all = start.elapsed();
    let s = planned.summary();
    println!(
        "{vms} VMs: {} changes ({} add, {} change, {} destroy), {} steps; plan {:?}, graph {:?}, human {:?} ({} KiB), json {:?} ({} KiB)",
        planned.actionable().count(),
        s.add,
        s.change,
        s.destroy,
        graph.graph.node_count(),
        diffed,
        graphed - diffed,
        rendered - graphed,
        text.len() / 1024,
        all - rendered,
        json.len() / 1024,
    );
}
