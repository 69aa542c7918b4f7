//! The typed config model: plain data that every other crate works from.
//!
//! A `Config` is what a whole infra repo (one file or a folder of files) means once
//! parsed and validated: names resolved, defaults filled in, sizes in bytes, paths
//! absolute. Spans for diagnostics live beside it (see `Loaded`), not in it, so the
//! model stays plain data that serializes the same whatever file it came from.

use std::net::IpAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A whole validated config: one project's resources across its hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// The project namespace: vmctl only touches what this project made.
    pub project: String,
    pub hosts: Vec<Host>,
    pub networks: Vec<Network>,
    pub vlans: Vec<Vlan>,
    pub pools: Vec<Pool>,
    pub volumes: Vec<Volume>,
    pub vms: Vec<Vm>,
}

impl Config {
    /// A config of `project` with no resources yet.
    pub fn new(project: impl Into<String>) -> Self {
        Config {
            project: project.into(),
            hosts: Vec::new(),
            networks: Vec::new(),
            vlans: Vec::new(),
            pools: Vec::new(),
            volumes: Vec::new(),
            vms: Vec::new(),
        }
    }
}

/// A machine vmctl manages: `local` is this machine, no daemon; `ssh` hosts are reached
/// over OpenSSH.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Host {
    pub name: String,
    /// Where vmctl keeps VM state dirs and locks. Default `/var/lib/vmctl`.
    pub state_dir: PathBuf,
    /// Run this host's networking in this named network namespace.
    pub netns: Option<String>,
    /// Host CPUs available to VMs; `None` means what the host reports.
    pub cpus: Option<u32>,
    /// Host memory in bytes; `None` means what the host reports.
    pub memory: Option<u64>,
    /// Fraction of memory kept free for the host itself, 0.0..1.0. Default 0.08.
    pub reserve_memory: f64,
    /// vCPUs allowed per host CPU. Default 1.5.
    pub cpu_overcommit: f64,
    /// `user@host[:port]` for a remote host; `None` for this machine.
    pub ssh: Option<String>,
    /// Run vmctl's agent on the remote host through `sudo -n` (a non-root ssh user).
    #[serde(default)]
    pub sudo: bool,
    /// The address other hosts reach this one at for the VXLAN tunnels of networks that
    /// span hosts: `underlay` as given, else the address in `ssh` when that is an IP
    /// literal, else `None`.
    pub underlay: Option<IpAddr>,
    /// CPU features hidden from every VM this host starts (`cpuid-mask "avx512f"`): a
    /// fleet's common CPU, so that its VMs can move between its hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpuid_mask: Vec<String>,
    /// The longest pause a live migration to or from this host may give its VMs, in
    /// milliseconds, unless a VM says otherwise; `None`: the default (300 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_downtime: Option<u64>,
}

/// A Linux bridge with VLAN filtering on one host, or on each of several hosts with its
/// VLANs joined across them by VXLAN. Exactly one of `host` and `hosts` is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Network {
    pub name: String,
    /// The host of a network on one host (`host="…"`); empty when `hosts` is given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// The hosts of a network given as `hosts …`, in order; empty when `host` is given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The bridge interface name (given, or derived stably; at most 15 bytes).
    pub bridge: String,
    /// An optional trunk port enslaved to the bridge.
    pub uplink: Option<String>,
}

impl Network {
    /// Every host the network is on: `hosts`, or else its one `host`.
    pub fn on_hosts(&self) -> &[String] {
        if self.hosts.is_empty() {
            std::slice::from_ref(&self.host)
        } else {
            &self.hosts
        }
    }

    /// Whether the network is on two or more hosts, its VLANs joined by VXLAN.
    pub fn spans_hosts(&self) -> bool {
        self.hosts.len() > 1
    }
}

/// A VLAN on a network's bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Vlan {
    pub name: String,
    pub network: String,
    /// 1..=4094, unique per network.
    pub id: u16,
    /// The VXLAN network identifier joining this VLAN across the hosts of a network
    /// that spans hosts (given, or derived: `derive::vni`); `None` on one host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// Optional host address on this VLAN, in CIDR form (`10.100.0.1/24`).
    pub gateway: Option<String>,
    /// The subnet NICs on this VLAN take their addresses from (`10.100.0.0/24`): as
    /// given, else the gateway's; `None` when the VLAN has neither (its NICs have no
    /// address). Not on a host: a host's VLAN has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// The host that holds the gateway address, when the network spans hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_host: Option<String>,
    /// Whether vmctl runs a DHCP and DNS server (dnsmasq) for this VLAN on the host that
    /// holds its gateway: a static lease per NIC from IPAM, names `<vm>.<project>`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp: bool,
    /// Masquerade traffic from the subnet out of the host's uplink (`nat #true`; needs
    /// a gateway).
    #[serde(default, skip_serializing_if = "is_false")]
    pub nat: bool,
    /// The uplink interface NAT leaves through, instead of the interface of the host
    /// netns's default route (needs `nat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_via: Option<String>,
    /// VLANs of the project that this VLAN's subnet may open connections to, routed
    /// through the host (one way: the other VLAN answers, it does not open). Both
    /// VLANs have a gateway on the same host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route_to: Vec<String>,
}

/// The kinds of storage pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PoolKind {
    /// A directory holding one raw file per volume.
    Dir,
}

/// A storage pool on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Pool {
    pub name: String,
    pub host: String,
    #[serde(rename = "type")]
    pub kind: PoolKind,
    /// Absolute path of the pool directory on its host.
    pub path: PathBuf,
}

/// A raw volume file in a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Volume {
    pub name: String,
    pub pool: String,
    /// Size in bytes, > 0.
    pub size: u64,
    /// Optional base image, absolute path (resolved against the declaring file).
    pub from: Option<PathBuf>,
    /// When true, a plan that would delete or replace this volume fails.
    pub prevent_destroy: bool,
}

/// Whether a VM should be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum VmState {
    #[default]
    Running,
    Stopped,
}

/// A virtio-net interface of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Nic {
    /// The VLAN this NIC is an untagged member of.
    pub vlan: String,
    /// Lowercase `aa:bb:cc:dd:ee:ff`, unicast; derived stably from project, VM and
    /// index when not given.
    pub mac: String,
    /// The NIC's address in its VLAN's subnet: as declared (`ip="10.100.0.20"`); in a
    /// plan, else the one vmctl allocated (see `ip_allocated`). `None` on a VLAN
    /// without a subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Whether `ip` was allocated by the planner rather than declared.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ip_allocated: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

fn yes() -> bool {
    true
}

/// A KVM microVM.
/// A live migration's pause budget where neither the VM nor its host sets
/// `migration-downtime`, in milliseconds (QEMU's and Cloud Hypervisor's default).
pub const DEFAULT_MIGRATION_DOWNTIME_MS: u64 = 300;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Vm {
    pub name: String,
    pub host: String,
    /// vCPUs, >= 1.
    pub cpus: u32,
    /// Guest memory in bytes, >= 16 MiB and a multiple of 4 KiB.
    pub memory: u64,
    /// Absolute path of an ELF vmlinux or bzImage.
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// Volume names, attached as vda, vdb, … in order.
    pub disks: Vec<String>,
    pub nics: Vec<Nic>,
    /// cpu list the VMM is pinned to through a cgroup cpuset (`2-3`, `0,4-5`).
    pub cpuset: Option<String>,
    pub state: VmState,
    /// Names of VMs that must be created/started before this one.
    pub depends_on: Vec<String>,
    /// Append the kernel's `ip=` argument for the first NIC to the command line.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ip_cmdline: bool,
    /// With `ip_cmdline`, the argument itself
    /// (`ip=<addr>::<gw>:<mask>:<hostname>:eth0:off`): set by the planner once the
    /// first NIC has its address; `None` in a loaded config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_argument: Option<String>,
    /// Whether a change of `host` moves the running VM (`migrate`) rather than
    /// replacing it. Default `#true`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub migrate: bool,
    /// The longest pause a live migration may give this VM, in milliseconds: its own
    /// `migration-downtime`, else its host's; `None`: the default (300 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_downtime: Option<u64>,
    /// The CPU features hidden from the guest: its host's `cpuid-mask`, set by the
    /// planner; empty in a loaded config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpuid_mask: Vec<String>,
}
