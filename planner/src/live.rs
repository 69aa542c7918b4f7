//! The live model the diff plans against: [`LiveState`], everything vmctl finds on one
//! host, with each resource's project mark. Plain serde data: the matcher
//! ([`crate::matching`]) builds it from what a host reports ([`crate::facts::HostFacts`],
//! made of this module's resource types: one set of types from the host to the plan),
//! and `--live FILE` reads a [`LiveFile`] of them.
//!
//! A few fields are what a host reports for `status` only (a network's VLAN mode, a
//! volume's allocated bytes, a VMM's pid and uptime): optional, left out of JSON when
//! absent, never compared by the diff and never part of a fingerprint
//! ([`LiveState::without_details`]); see [`crate::facts`] for what is planned, kept and
//! dropped.
//!
//! In JSON every field may be left out: `{}` is a host with nothing on it. Resources of
//! every project are kept here; the diff only sees the config's own project.
//!
//! A [`LiveFile`] carries a `format-version` (absent: 1) and is read with
//! [`LiveFile::from_json`], which refuses a newer one ([`crate::record`]). Unlike the
//! records on a host, it refuses unknown fields: people write these files by hand, and a
//! misspelt field must not silently mean "nothing there". A VM's applied settings are
//! [`VmSpec`], not the config model.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vmctl_schema::{Config, Network, Pool, PoolKind, Vlan, VmState, Volume};

use crate::action::{ResourceId, ResourceKind};
use crate::dhcp::LiveDhcp;
use crate::plan::{HostVlan, Tunnel};
use crate::record::{self, NewerFormat, VmSpec};
use crate::spanning::{self, Underlays};

/// The format version of [`LiveFile`] this build writes and reads (see [`record`]);
/// 2 added a host's `netns`, 3 a network's `bridge-drift`, 4 each VM NIC's address
/// (`ip`, `ip-allocated`; an older vmctl must not rewrite a VM's record without them),
/// 5 a host's DHCP servers (`dhcp`), `firewalls` and `default-route`. Files of format
/// 1 read as hosts without a netns, of formats 1 and 2 as bridges without drift, of
/// formats 1 to 3 as NICs without addresses, of formats 1 to 4 as hosts without DHCP
/// servers, a firewall or a default route.
pub const LIVE_FORMAT_VERSION: u32 = 5;

/// The live state of every host, by host name, as `vmctl plan --live FILE` reads it:
/// `{"hosts": {"local": {…}}}`. A host missing from the file has nothing on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveFile {
    /// Absent in files written before it existed: format 1.
    #[serde(rename = "format-version", default = "record::unversioned")]
    pub format_version: u32,
    pub hosts: BTreeMap<String, LiveState>,
}

impl Default for LiveFile {
    fn default() -> Self {
        LiveFile {
            format_version: LIVE_FORMAT_VERSION,
            hosts: BTreeMap::new(),
        }
    }
}

/// Why a live-state file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LiveFileError {
    #[error("the live state is not valid JSON of a live state: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("cannot read the live state: {0}")]
    Newer(#[from] NewerFormat),
}

impl LiveFile {
    /// Reads a live-state file: its version first (a newer one is refused, not misread),
    /// then its fields.
    pub fn from_json(text: &str) -> Result<LiveFile, LiveFileError> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        record::check_version(&value, LIVE_FORMAT_VERSION)?;
        Ok(serde_json::from_value(value)?)
    }

    /// The live state of `host`; an empty one when the file does not name it.
    pub fn host(&self, host: &str) -> &LiveState {
        static EMPTY: LiveState = LiveState::EMPTY;
        self.hosts.get(host).unwrap_or(&EMPTY)
    }

    /// What the hosts would report once `config` is applied exactly: every resource with
    /// the project's mark, VMs running or stopped as asked, NICs with the addresses a
    /// plan against empty hosts gives them, each host's firewall (with a default route
    /// `eth0` when a NAT VLAN needs one). For tests, fixtures and benchmarks.
    pub fn applied(config: &Config) -> LiveFile {
        let resolved = crate::ipam::assign(config, &LiveFile::default());
        let config = resolved.as_ref().unwrap_or(config);
        let project = &config.project;
        let mut hosts: BTreeMap<String, LiveState> = config
            .hosts
            .iter()
            .map(|h| (h.name.clone(), LiveState::default()))
            .collect();
        let pool_host: BTreeMap<&str, &str> = config
            .pools
            .iter()
            .map(|p| (p.name.as_str(), p.host.as_str()))
            .collect();
        let networks: BTreeMap<&str, &Network> = config
            .networks
            .iter()
            .map(|n| (n.name.as_str(), n))
            .collect();
        let underlays = Underlays::of(config);
        for pool in &config.pools {
            let state = hosts.entry(pool.host.clone()).or_default();
            state.pools.push(LivePool {
                name: pool.name.clone(),
                project: project.clone(),
                kind: pool.kind,
                path: pool.path.clone(),
            });
        }
        for volume in &config.volumes {
            let Some(host) = pool_host.get(volume.pool.as_str()) else {
                continue;
            };
            let state = hosts.entry((*host).to_owned()).or_default();
            state.volumes.push(LiveVolume {
                name: volume.name.clone(),
                project: project.clone(),
                pool: volume.pool.clone(),
                size: volume.size,
                from: volume.from.clone(),
                from_digest: None,
                prevent_destroy: volume.prevent_destroy,
                allocated: None,
            });
        }
        for network in &config.networks {
            for host in network.on_hosts() {
                let state = hosts.entry(host.clone()).or_default();
                state.networks.push(LiveNetwork {
                    name: network.name.clone(),
                    project: project.clone(),
                    bridge: network.bridge.clone(),
                    uplink: network.uplink.clone(),
                    mode: None,
                    bridge_drift: Vec::new(),
                });
            }
        }
        for vlan in &config.vlans {
            let Some(network) = networks.get(vlan.network.as_str()) else {
                continue;
            };
            for host in network.on_hosts() {
                let on_host = spanning::vlan_on(network, vlan, host, &underlays);
                let state = hosts.entry(host.clone()).or_default();
                state.vlans.push(LiveVlan {
                    name: vlan.name.clone(),
                    project: project.clone(),
                    network: vlan.network.clone(),
                    id: vlan.id,
                    gateway: on_host.vlan.gateway,
                    vxlan: on_host.vxlan,
                });
            }
        }
        for host in &config.hosts {
            let (Some(name), Some(state)) = (&host.netns, hosts.get_mut(&host.name)) else {
                continue;
            };
            if crate::diff::netns::lives_in_netns(config, &host.name) {
                state.netns = Some(LiveNetns {
                    name: name.clone(),
                    created_by: Some(project.clone()),
                    projects: vec![project.clone()],
                });
            }
        }
        let dhcp = config.vlans.iter().any(|v| v.dhcp);
        let addresses = if dhcp {
            crate::ipam::allocate(config, &LiveFile::default()).unwrap_or_default()
        } else {
            crate::ipam::Addresses::default()
        };
        for (host, server) in crate::dhcp::servers(config, &addresses) {
            hosts.entry(host).or_default().dhcp.push(LiveDhcp {
                name: server.name,
                project: project.clone(),
                config: server.config,
                leases: server.leases,
                running: true,
                pid: None,
            });
        }
        // A host's default route is `eth0` when a NAT VLAN needs one.
        let needs_route = config.vlans.iter().any(|v| v.nat && v.nat_via.is_none());
        let default_route = needs_route.then_some("eth0");
        for host in &config.hosts {
            let state = hosts.entry(host.name.clone()).or_default();
            state.default_route = default_route.map(str::to_owned);
            let Ok(Some(firewall)) = crate::firewall::desired(config, &host.name, default_route)
            else {
                continue;
            };
            state.firewalls.push(LiveFirewall {
                name: firewall.name,
                project: project.clone(),
                table: firewall.table,
                vlans: firewall.vlans,
                uplinks: firewall.uplinks,
                forwarding: firewall.forwarding,
                hash: firewall.hash,
            });
        }
        for vm in &config.vms {
            let state = hosts.entry(vm.host.clone()).or_default();
            state.vms.push(LiveVm {
                name: vm.name.clone(),
                project: project.clone(),
                spec: VmSpec::from(vm),
                status: match vm.state {
                    VmState::Running => VmStatus::Running,
                    VmState::Stopped => VmStatus::Stopped,
                },
                ..LiveVm::default()
            });
        }
        LiveFile {
            hosts,
            ..LiveFile::default()
        }
    }
}

/// Everything vmctl finds on one host, of every project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct LiveState {
    pub pools: Vec<LivePool>,
    pub volumes: Vec<LiveVolume>,
    pub networks: Vec<LiveNetwork>,
    pub vlans: Vec<LiveVlan>,
    pub vms: Vec<LiveVm>,
    /// The DHCP servers vmctl runs there (`dhcp #true` VLANs), running or not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dhcp: Vec<LiveDhcp>,
    /// The host's declared network namespace, when it exists (absent: it does not, or
    /// the host declares none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<LiveNetns>,
    /// Resources whose record the host holds but vmctl cannot read: left alone by the
    /// plan (see [`LiveState::held`]), shown by `plan` and `status` with how to repair.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
    /// What the host reports of itself, for the capacity check of a host that declares
    /// no `cpus` or no `memory`. Absent (a `--live` file without it): not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported: Option<HostReport>,
    /// The CPU features the host's KVM can give a guest, by the names `cpuid-mask`
    /// takes ([`vmctl_schema::cpu::FEATURES`]). Absent: unknown (no `/dev/kvm`, or a
    /// `--live` file without it), and no VM migrates to or from the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_features: Option<Vec<String>>,
    /// Resources of the config that the host cannot take as they are (an interface of
    /// their name that vmctl did not make): each is an error of the plan for that
    /// resource; apply still applies the rest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<LiveProblem>,
    /// vmctl's nftables tables on the host, one per project ([`crate::firewall`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub firewalls: Vec<LiveFirewall>,
    /// The interface of the host netns's default route, as the host reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_route: Option<String>,
}

/// A project's nftables table on a host, as applied (by vmctl's record), with the hash
/// of its ruleset: the applied one while the table's rules are as applied, else a
/// `modified:` hash of what is there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct LiveFirewall {
    /// The host's name.
    pub name: String,
    pub project: String,
    pub table: String,
    pub vlans: Vec<String>,
    pub uplinks: Vec<String>,
    pub forwarding: Vec<String>,
    pub hash: String,
}

impl LiveFirewall {
    /// The firewall in the plan's shape (without a ruleset: only its hash is known).
    pub fn to_model(&self) -> crate::firewall::Firewall {
        crate::firewall::Firewall {
            name: self.name.clone(),
            table: self.table.clone(),
            vlans: self.vlans.clone(),
            uplinks: self.uplinks.clone(),
            forwarding: self.forwarding.clone(),
            hash: self.hash.clone(),
            ruleset: serde_json::Value::Null,
        }
    }
}

/// A host's online CPUs and its memory (`MemTotal`), as it reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct HostReport {
    pub cpus: u32,
    /// Bytes.
    pub memory: u64,
}

/// Why the host cannot take one resource of the config as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct LiveProblem {
    /// The resource's address (`network.lan`, `vlan.front`, `vm.web-1`).
    pub resource: String,
    /// What is wrong, on the host.
    pub message: String,
    /// What to do about it.
    pub help: String,
}

impl LiveState {
    /// A host with nothing on it.
    pub const EMPTY: LiveState = LiveState {
        pools: Vec::new(),
        volumes: Vec::new(),
        networks: Vec::new(),
        vlans: Vec::new(),
        vms: Vec::new(),
        dhcp: Vec::new(),
        netns: None,
        unreadable: Vec::new(),
        reported: None,
        cpu_features: None,
        problems: Vec::new(),
        firewalls: Vec::new(),
        default_route: None,
    };

    /// The resources of `project` the plan must leave alone on this host: those whose
    /// record is unreadable. (The volumes of an unreadable pool are held by the diff,
    /// which knows which pool each volume of the config is on.)
    pub fn held(&self, project: &str) -> Vec<ResourceId> {
        self.unreadable
            .iter()
            .filter(|u| u.project == project)
            .map(|u| ResourceId::new(u.kind, &u.name))
            .collect()
    }

    /// Only `project`'s resources, sorted by name, without what the host reports only
    /// for show (see [`LiveState::without_details`]): the form that fingerprints hash, so
    /// that neither the order a host lists things in, nor another project's work, nor a
    /// guest writing to its disk makes a saved plan stale.
    pub fn canonical(&self, project: &str) -> LiveState {
        fn mine<T: Clone + Marked>(items: &[T], project: &str) -> Vec<T> {
            let mut kept: Vec<T> = items
                .iter()
                .filter(|item| item.project() == project)
                .cloned()
                .collect();
            kept.sort_by(|a, b| a.name().cmp(b.name()));
            kept
        }
        let state = LiveState {
            pools: mine(&self.pools, project),
            volumes: mine(&self.volumes, project),
            networks: mine(&self.networks, project),
            vlans: mine(&self.vlans, project),
            vms: mine(&self.vms, project),
            dhcp: mine(&self.dhcp, project),
            // Other projects joining or leaving a shared namespace is not this project's
            // state: only whether it is among the users counts.
            netns: self.netns.as_ref().map(|n| LiveNetns {
                projects: n
                    .projects
                    .iter()
                    .filter(|p| *p == project)
                    .cloned()
                    .collect(),
                ..n.clone()
            }),
            unreadable: mine(&self.unreadable, project),
            // The host's size is not the project's state: a plan does not go stale by it.
            reported: None,
            cpu_features: None,
            problems: {
                let mut problems = self.problems.clone();
                problems.sort();
                problems
            },
            firewalls: mine(&self.firewalls, project),
            default_route: self.default_route.clone(),
        };
        state.without_details()
    }

    /// This state without the fields a host reports beside what the diff compares (a
    /// network's VLAN mode, a volume's allocated bytes, a VMM's pid and uptime): they
    /// are facts for the matcher and for `status`, not the project's state.
    pub fn without_details(mut self) -> LiveState {
        for network in &mut self.networks {
            network.mode = None;
        }
        for volume in &mut self.volumes {
            volume.allocated = None;
        }
        for vm in &mut self.vms {
            vm.pid = None;
            vm.uptime_seconds = None;
        }
        for server in &mut self.dhcp {
            server.pid = None;
        }
        self
    }
}

/// A live resource's name and project mark.
pub trait Marked {
    fn name(&self) -> &str;
    fn project(&self) -> &str;
}

macro_rules! marked {
    ($($ty:ty),*) => {$(
        impl Marked for $ty {
            fn name(&self) -> &str { &self.name }
            fn project(&self) -> &str { &self.project }
        }
    )*};
}
marked!(
    LivePool,
    LiveVolume,
    LiveNetwork,
    LiveVlan,
    LiveVm,
    LiveFirewall,
    Unreadable
);

/// A resource vmctl finds on a host by its record (a VM's `spec.json`, a pool's or
/// volume's marker, a stray entry where a VM's state dir should be) but cannot read:
/// corrupt, of a newer format, not a file it made. It is that resource's problem only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Unreadable {
    pub kind: ResourceKind,
    pub name: String,
    pub project: String,
    /// The file that cannot be read.
    pub path: PathBuf,
    /// Why, with its causes.
    pub error: String,
    /// What to do about it, said for the user running vmctl.
    pub help: String,
}

impl Default for Unreadable {
    fn default() -> Self {
        Unreadable {
            kind: ResourceKind::Vm,
            name: String::new(),
            project: String::new(),
            path: PathBuf::new(),
            error: String::new(),
            help: String::new(),
        }
    }
}

/// A host's named network namespace that exists, with what its marker says
/// (`/run/vmctl/netns/<name>.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct LiveNetns {
    pub name: String,
    /// The project vmctl made it for; `None`: vmctl did not make it (no marker), so it
    /// is never removed.
    pub created_by: Option<String>,
    /// The projects that use it, by its marker.
    pub projects: Vec<String>,
}

/// A pool directory with its `.vmctl.json` marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct LivePool {
    pub name: String,
    pub project: String,
    #[serde(rename = "type")]
    pub kind: PoolKind,
    pub path: PathBuf,
}

impl Default for LivePool {
    fn default() -> Self {
        LivePool {
            name: String::new(),
            project: String::new(),
            kind: PoolKind::Dir,
            path: PathBuf::new(),
        }
    }
}

impl LivePool {
    /// The pool as the config model says it, on `host`.
    pub fn to_model(&self, host: &str) -> Pool {
        Pool {
            name: self.name.clone(),
            host: host.to_owned(),
            kind: self.kind,
            path: self.path.clone(),
        }
    }
}

/// A volume file in a pool, as its pool's marker and `stat` describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct LiveVolume {
    pub name: String,
    pub project: String,
    pub pool: String,
    /// Size in bytes, from `stat`.
    pub size: u64,
    /// The base image it was made from, as the config named it.
    pub from: Option<PathBuf>,
    /// The base image's digest when it was copied (informational: the planner compares
    /// `from` paths; it reads no files).
    pub from_digest: Option<String>,
    /// Whether the applied config protected it. Kept in the marker so that removing a
    /// protected volume from the config still fails the plan.
    pub prevent_destroy: bool,
    /// Bytes allocated on disk, as the host reports it (for `status`). Not compared by
    /// the diff, nor part of a fingerprint: a guest writing to its disk changes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated: Option<u64>,
}

impl LiveVolume {
    /// The volume as the config model says it.
    pub fn to_model(&self) -> Volume {
        Volume {
            name: self.name.clone(),
            pool: self.pool.clone(),
            size: self.size,
            from: self.from.clone(),
            prevent_destroy: self.prevent_destroy,
        }
    }
}

/// A bridge whose alias says `vmctl:<project>:<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct LiveNetwork {
    pub name: String,
    pub project: String,
    pub bridge: String,
    pub uplink: Option<String>,
    /// How its VLANs are carried, as the host reads it off the bridge: which interface
    /// names its VLANs need (the matcher's check of names taken). Not compared by the
    /// diff, nor part of a fingerprint; absent in a `--live` file that does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<VlanMode>,
    /// What is not as applied on its bridge, as the host found it: set down, or VLAN
    /// filtering turned off (in [`VlanMode::Filtering`]). Drift the plan repairs in
    /// place (`crate::diff::bridges`); absent when there is none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bridge_drift: Vec<BridgeDrift>,
}

/// One way a network's bridge is not as vmctl applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BridgeDrift {
    /// The bridge is down: nothing on it is reached.
    Down,
    /// VLAN filtering is off: its VLANs are no longer kept apart.
    VlanFilteringOff,
}

/// How a network's VLANs are carried, chosen by what the host's kernel can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VlanMode {
    /// One VLAN-filtering bridge; VLANs in its VLAN table, each gateway on a VLAN link
    /// `<bridge>.<id>`.
    Filtering,
    /// The kernel cannot filter (no `CONFIG_BRIDGE_VLAN_FILTERING`): one bridge per
    /// VLAN, `<bridge>v<id>`.
    BridgePerVlan,
}

impl LiveNetwork {
    /// The network as the config model says it, on `host`.
    pub fn to_model(&self, host: &str) -> Network {
        Network {
            name: self.name.clone(),
            host: host.to_owned(),
            hosts: Vec::new(),
            bridge: self.bridge.clone(),
            uplink: self.uplink.clone(),
        }
    }
}

/// A VLAN read back from a bridge's VLAN table (or its own bridge), with its VXLAN
/// tunnel when it has one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct LiveVlan {
    pub name: String,
    pub project: String,
    pub network: String,
    pub id: u16,
    pub gateway: Option<String>,
    /// Its VXLAN link, when it has one that is a port of the VLAN and up: the VNI, its
    /// local address, and the peers of its forwarding entries. Absent in files written
    /// before networks could span hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<Tunnel>,
}

impl LiveVlan {
    /// The VLAN as it is on its host, in the shape the diff compares.
    pub fn to_model(&self) -> HostVlan {
        HostVlan {
            vlan: Vlan {
                name: self.name.clone(),
                network: self.network.clone(),
                id: self.id,
                vni: None,
                gateway: self.gateway.clone(),
                subnet: None,
                gateway_host: None,
                dhcp: false,
                nat: false,
                nat_via: None,
                route_to: Vec::new(),
            },
            vxlan: self.vxlan.clone(),
        }
    }
}

/// Whether a VM's process runs, as its VMM answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmStatus {
    Running,
    #[default]
    Stopped,
    /// The process died without being asked to.
    Crashed,
}

/// A VM's state dir: the spec it was applied with and whether it runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LiveVm {
    pub name: String,
    #[serde(default)]
    pub project: String,
    /// The `spec.json` the VM was applied with.
    pub spec: VmSpec,
    #[serde(default)]
    pub status: VmStatus,
    /// The NICs of a running VM whose tap is not as applied (see [`TapDrift`]): found by
    /// the matcher from the host's taps (a host reports none here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tap_drift: Vec<TapDrift>,
    /// Its VMM's pid on its host while it runs (for `status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// How long its VMM has run, as its host says (seconds; for `status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    /// Its VMM holds the guest paused: a move to another host that did not finish (its
    /// controller was killed) left it so. A running VM only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// The names of its snapshots on its host (`vmctl snapshot`), sorted (for
    /// `status` and `show`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
}

/// A running VM's NIC whose tap is gone, off its VLAN or down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TapDrift {
    /// The NIC's index.
    pub nic: usize,
    pub state: TapState,
}

/// What became of a running VM's tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TapState {
    /// Deleted: the VMM's descriptor points at nothing, so only a restart repairs it.
    Missing,
    /// There, but not a port of its VLAN (or on the wrong one), or set down: re-attached
    /// (and brought up) in place.
    Detached,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_json_is_an_empty_host() {
        let live: LiveState = serde_json::from_str("{}").unwrap();
        assert_eq!(live, LiveState::EMPTY);
        let file: LiveFile = serde_json::from_str(r#"{"hosts": {"local": {}}}"#).unwrap();
        assert_eq!(file.host("local"), &LiveState::EMPTY);
        assert_eq!(file.host("elsewhere"), &LiveState::EMPTY);
        let file: LiveFile = serde_json::from_str("{}").unwrap();
        assert!(file.hosts.is_empty());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<LiveState>(r#"{"vm": []}"#).is_err());
    }

    #[test]
    fn canonical_keeps_the_project_sorted() {
        let pool = |name: &str, project: &str| LivePool {
            name: name.into(),
            project: project.into(),
            ..LivePool::default()
        };
        let live = LiveState {
            pools: vec![pool("b", "lab"), pool("x", "other"), pool("a", "lab")],
            ..LiveState::default()
        };
        let names: Vec<_> = live
            .canonical("lab")
            .pools
            .iter()
            .map(|p| p.name.clone())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }
}
