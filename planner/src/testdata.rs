//! Literal configs and live states for the planner's tests: a config shaped like the
//! quickstart (one host, one network with two VLANs, one pool, three volumes, three VMs)
//! and helpers to plan it.

use std::path::PathBuf;

use vmctl_schema::{Config, Host, Network, Nic, Pool, PoolKind, Vlan, Vm, VmState, Volume};

use crate::live::LiveFile;
use crate::plan::{Change, Plan};
use crate::{plan, ApplyGraph, PlanErrors, PlanOptions};

pub fn host(name: &str) -> Host {
    Host {
        name: name.into(),
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
    }
}

pub fn volume(name: &str, size: u64) -> Volume {
    Volume {
        name: name.into(),
        pool: "fast".into(),
        size,
        from: Some(PathBuf::from("/lab/images/rootfs.ext4")),
        prevent_destroy: false,
    }
}

pub fn vm(name: &str, vlan: &str, mac: &str) -> Vm {
    Vm {
        name: name.into(),
        host: "local".into(),
        cpus: 1,
        memory: 256 << 20,
        kernel: "/lab/images/vmlinux".into(),
        initrd: None,
        cmdline: "console=ttyS0 root=/dev/vda rw".into(),
        disks: vec![format!("{name}-root")],
        nics: vec![Nic {
            vlan: vlan.into(),
            mac: mac.into(),
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
    }
}

/// The quickstart's shape: `web-1` and `web-2` on VLAN `front`, `db-1` on `back`; the
/// web VMs depend on `db-1`; `db-1-root` is protected.
pub fn quickstart() -> Config {
    let mut web1 = vm("web-1", "front", "52:54:00:00:00:01");
    web1.depends_on = vec!["db-1".into()];
    let mut web2 = vm("web-2", "front", "52:54:00:00:00:02");
    web2.depends_on = vec!["db-1".into()];
    let mut db_root = volume("db-1-root", 2 << 30);
    db_root.prevent_destroy = true;
    Config {
        project: "lab".into(),
        hosts: vec![host("local")],
        networks: vec![Network {
            name: "lan".into(),
            host: "local".into(),
            hosts: Vec::new(),
            bridge: "vmbr-lab".into(),
            uplink: None,
        }],
        vlans: vec![
            vlan("front", 100, Some("10.100.0.1/24")),
            vlan("back", 200, None),
        ],
        pools: vec![Pool {
            name: "fast".into(),
            host: "local".into(),
            kind: PoolKind::Dir,
            path: "/var/lib/vmctl/pools/fast".into(),
        }],
        volumes: vec![
            volume("web-1-root", 1 << 30),
            volume("web-2-root", 1 << 30),
            db_root,
        ],
        vms: vec![web1, web2, vm("db-1", "back", "52:54:00:00:00:03")],
    }
}

pub fn vlan(name: &str, id: u16, gateway: Option<&str>) -> Vlan {
    Vlan {
        name: name.into(),
        network: "lan".into(),
        id,
        vni: None,
        gateway: gateway.map(Into::into),
        subnet: gateway
            .and_then(|g| g.parse::<ipnet::IpNet>().ok())
            .map(|n| n.trunc().to_string()),
        gateway_host: None,
        dhcp: false,
        nat: false,
        nat_via: None,
        route_to: Vec::new(),
    }
}

/// Three hosts `kvm-01`..`kvm-03` (underlay `192.0.2.11`..`13`) and network `lan`
/// spanning them with VLANs `front` (gateway on `kvm-01`) and `back`; `web-1` on
/// `kvm-01` and `web-2` on `kvm-02` on `front`, `db-1` on `kvm-03` on `back`.
pub fn fleet() -> Config {
    let hosts = ["kvm-01", "kvm-02", "kvm-03"];
    let mut config = quickstart();
    config.hosts = hosts
        .iter()
        .zip(11..)
        .map(|(name, last)| Host {
            underlay: Some(std::net::Ipv4Addr::new(192, 0, 2, last).into()),
            ..host(name)
        })
        .collect();
    config.networks[0].host = String::new();
    config.networks[0].hosts = hosts.iter().map(|h| h.to_string()).collect();
    for vlan in &mut config.vlans {
        vlan.vni = Some(vmctl_schema::derive::vni("lab", "lan", vlan.id));
    }
    config.vlans[0].gateway_host = Some("kvm-01".into());
    config.pools.clear();
    config.volumes.clear();
    for (vm, host) in config.vms.iter_mut().zip(hosts) {
        vm.host = host.into();
        vm.disks.clear();
        vm.depends_on.clear();
    }
    config
}

/// Plans with default options.
pub fn plan_of(config: &Config, live: &LiveFile) -> Result<Plan, PlanErrors> {
    plan(config, live, &PlanOptions::default())
}

/// The plan's change for `address` (`vm.web-1`); panics when there is none.
pub fn change<'a>(plan: &'a Plan, address: &str) -> &'a Change {
    plan.changes
        .iter()
        .find(|c| c.id.to_string() == address)
        .unwrap_or_else(|| panic!("no change for {address} in {:#?}", plan.changes))
}

/// Plans and builds the apply graph; panics on errors.
pub fn graph_of(config: &Config, live: &LiveFile, options: &PlanOptions) -> (Plan, ApplyGraph) {
    let plan = plan(config, live, options).expect("plan");
    let graph = ApplyGraph::build(&plan).expect("graph");
    (plan, graph)
}
