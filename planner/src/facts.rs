//! What a host reports of one project, with no config: [`HostFacts`], the answer to a
//! [`FactsRequest`]. Both are the wire format between vmctl and a remote host's agent
//! (versioned by [`FACTS_FORMAT`]; an agent refuses a request of another format), and
//! what a local host hands over in-process.
//!
//! One set of types from the host to the plan: the runtime's host modules build these
//! directly (pools, volumes and VMs from disk, networks, VLANs, taps and tunnels over
//! netlink), and the ones [`crate::live::LiveState`] holds as they are ([`LivePool`],
//! [`LiveVolume`], [`LiveNetwork`], [`LiveVm`], [`LiveNetns`], [`Unreadable`],
//! [`HostReport`]) are the same types here. The `*Fact` types are what only matching
//! to the config gives meaning to ([`crate::matching`]): a VLAN by network and id gets
//! its name, taps become a running VM's tap drift, tunnels a VLAN's tunnel, and the
//! names of interfaces that are not the project's become problems of the resources
//! that need those names.
//!
//! The one piece of the config a host is told is in the request: where the config's
//! pools are (found there even when the project's pool index does not list them) and
//! their names, which name a pool whose marker cannot be read in its repair hint. The
//! hints themselves are written on the host, which alone knows who runs vmctl there
//! and which VMM holds a VM's lock.
//!
//! Each field is either planned (the matcher or the diff reads it) or kept, documented,
//! for `status`; what a host could say but nothing plans is not reported, on purpose:
//!
//! | resource | field | |
//! | --- | --- | --- |
//! | VLAN | `network`, `id`, `gateway` | planned: named from the config by `(network, id)` |
//! | tap | `vm`, `nic`, `network`, `vlan`, `up` | planned: tap drift of a running VM (gone, off its VLAN, or down) |
//! | tap | `ifname` | shown by `status` |
//! | tap | its bridge and port VLAN table | dropped: what they mean is `network`/`vlan`, read on the host |
//! | tunnel | `vni`, `local`, `port`, `peers`, `attached`, `up` | planned: a VLAN's tunnel, or none when it is not in place |
//! | tunnel | its link name | dropped: always `vx<vni>`, and found by its mark |
//! | other links | their names | planned: names the config needs that are taken |
//! | network | `mode` ([`crate::live::VlanMode`]) | planned: which interface names its VLANs need (names taken) |
//! | network | `bridge-drift`: its bridge is down, or VLAN filtering is off | planned: the network's update brings the bridge up and turns filtering back on |
//! | volume | `allocated` | shown by `status` |
//! | volume | its file's path | dropped: always `<pool path>/<name>.raw` |
//! | VM | `status` | planned: running when its VMM answers; crashed when gone though vmctl left it running |
//! | VM | `pid`, `uptime-seconds` | shown by `status` |
//! | DHCP server | `config`, `leases` (hashes of its files), `running` | planned: re-written, reloaded or restarted |
//! | DHCP server | `pid` | shown by `status` |
//! | firewall | `table`, `marked`, `rules` (normalized listing), `record`, `forwarding-off` | planned: vmctl's table as applied, drifted (its rules or forwarding changed by hand), or a table of the name that is not vmctl's (a problem) |
//! | host | `default-route` | planned: the uplink of NAT VLANs without `nat-via` |
//! | other projects of the same config (`orphans`) | `project`, `origin`, `vms`, `pools` | a warning of `plan` and `status` (a renamed project's leftovers), never planned |
//!
//! The `status`-only fields are not compared by the diff and not part of a saved
//! plan's fingerprint ([`crate::live::LiveState::without_details`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vmctl_schema::{Config, Host};

use crate::dhcp::LiveDhcp;
use crate::live::{HostReport, LiveNetns, LiveNetwork, LivePool, LiveVm, LiveVolume, Unreadable};
use crate::record;

/// The format of [`FactsRequest`] and [`HostFacts`] this build speaks. 2: one set of
/// types with the live model (1 had the runtime's own observation types); 3: a
/// network's bridge drift; 4: each VM NIC's address (`ip`, `ip-allocated`); 5: the
/// host's DHCP servers (`dhcp`), the project's nftables table (`firewall`) and the
/// netns's `default-route`.
pub const FACTS_FORMAT: u32 = 5;

/// A pool the config names on the host: where to look besides the project's pool
/// index, and what to call it when its marker cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PoolProbe {
    pub name: String,
    pub path: PathBuf,
}

/// What to observe on a host: one project, in its state dir and netns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FactsRequest {
    /// Absent: format 1.
    #[serde(default = "record::unversioned")]
    pub format_version: u32,
    pub project: String,
    pub state_dir: PathBuf,
    #[serde(default)]
    pub netns: Option<String>,
    #[serde(default)]
    pub pools: Vec<PoolProbe>,
    /// The config's absolute path (folder or file) on the machine vmctl runs on: the
    /// host reports the other projects whose record names the same config ([`HostFacts::orphans`]). Absent:
    /// not asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<PathBuf>,
}

impl FactsRequest {
    /// A request of this build's format, naming no pools.
    pub fn new(project: &str, state_dir: &Path, netns: Option<&str>) -> FactsRequest {
        FactsRequest {
            format_version: FACTS_FORMAT,
            project: project.to_owned(),
            state_dir: state_dir.to_owned(),
            netns: netns.map(str::to_owned),
            pools: Vec::new(),
            origin: None,
        }
    }

    /// What to ask `host` for `config.project`: its state dir and netns, and the pools
    /// the config names on it.
    pub fn for_host(config: &Config, host: &Host) -> FactsRequest {
        let mut request =
            FactsRequest::new(&config.project, &host.state_dir, host.netns.as_deref());
        request.pools = config
            .pools
            .iter()
            .filter(|p| p.host == host.name)
            .map(|p| PoolProbe {
                name: p.name.clone(),
                path: p.path.clone(),
            })
            .collect();
        request
    }
}

/// Everything of one project on one host, as the host reports it, each list sorted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct HostFacts {
    /// Absent: format 1.
    #[serde(default = "record::unversioned")]
    pub format_version: u32,
    pub pools: Vec<LivePool>,
    /// By pool, then name.
    pub volumes: Vec<LiveVolume>,
    pub networks: Vec<LiveNetwork>,
    /// By network, then id.
    pub vlans: Vec<VlanFact>,
    /// By VM, then NIC.
    pub taps: Vec<TapFact>,
    /// The VXLAN links of VLANs that span hosts, by network, then id.
    pub tunnels: Vec<TunnelFact>,
    /// The project's VMs, each with whether its VMM runs (and no tap drift: that is the
    /// matcher's).
    pub vms: Vec<LiveVm>,
    /// The project's DHCP servers (their directories under `<project>/dhcp/`), by VLAN.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dhcp: Vec<LiveDhcp>,
    /// Records that cannot be read, each that resource's problem alone, named and with
    /// its repair hint.
    pub unreadable: Vec<Unreadable>,
    /// The names of the host's interfaces that are not the project's (unmarked, or
    /// another project's): names vmctl must not create.
    pub other_links: Vec<String>,
    /// The host's netns, when the request names one that exists.
    pub netns: Option<LiveNetns>,
    /// The host's online CPUs and memory.
    pub reported: Option<HostReport>,
    /// The CPU features the host's KVM can give a guest (see
    /// [`crate::live::LiveState::cpu_features`]); absent without `/dev/kvm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_features: Option<Vec<String>>,
    /// Other projects made from the same config as the request's project (a
    /// renamed project's leftovers), when the request names its folder. Shown as a
    /// warning; never planned: vmctl never touches another project's resources.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub orphans: Vec<OrphanProject>,
    /// The project's nftables table in the host's netns, when there is one of its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firewall: Option<FirewallFact>,
    /// The interface of the netns's IPv4 default route, when it has one: a NAT VLAN's
    /// uplink unless it names `nat-via`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_route: Option<String>,
}

/// The table `inet vmctl-<project>` as the host finds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct FirewallFact {
    pub table: String,
    /// Whether it is vmctl's: a rule carries the project's mark, or vmctl's record of
    /// it says vmctl made it.
    pub marked: bool,
    /// Its chains and rules as `nft -j list table` gives them, normalized
    /// ([`crate::firewall::normalize_listing`]).
    pub rules: Vec<serde_json::Value>,
    /// What vmctl applied, from its record; `None` when there is none.
    pub record: Option<FirewallRecord>,
    /// The interfaces of the record's `forwarding` that exist with forwarding off
    /// (turned off by hand): drift.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forwarding_off: Vec<String>,
}

/// vmctl's record of the table it applied (`<state-dir>/<project>/firewall.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct FirewallRecord {
    /// The firewall as planned and applied (its ruleset left out).
    pub applied: crate::firewall::Firewall,
    /// The hash of the normalized listing right after the apply: the same listing
    /// later means the table is as applied.
    pub listing: String,
    /// The interfaces whose forwarding vmctl turned on (it was off): turned off again
    /// when they no longer need it.
    pub enabled: Vec<String>,
}

/// Another project on the host whose record names the same config, with what it still
/// has there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct OrphanProject {
    pub project: String,
    /// The config its record names.
    pub origin: PathBuf,
    /// Its VMs' names (their state dirs), sorted.
    pub vms: Vec<String>,
    /// Its pools' names (their index entries), sorted.
    pub pools: Vec<String>,
}

impl Default for HostFacts {
    /// A host of this build's format with nothing of the project on it.
    fn default() -> Self {
        HostFacts {
            format_version: FACTS_FORMAT,
            pools: Vec::new(),
            volumes: Vec::new(),
            networks: Vec::new(),
            vlans: Vec::new(),
            taps: Vec::new(),
            tunnels: Vec::new(),
            vms: Vec::new(),
            dhcp: Vec::new(),
            unreadable: Vec::new(),
            other_links: Vec::new(),
            netns: None,
            reported: None,
            cpu_features: None,
            orphans: Vec::new(),
            firewall: None,
            default_route: None,
        }
    }
}

/// The UDP port of every VXLAN tunnel vmctl makes (IANA's VXLAN port; Linux's default
/// is the older 8472): the runtime makes tunnels on it, and a tunnel on another port is
/// not in place ([`crate::matching::tunnel`]).
pub const VXLAN_PORT: u16 = 4789;

/// A VLAN of one of the project's networks, as the host knows it: by network and id (a
/// bridge's VLAN table, or a VLAN's own bridge, holds ids, not names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VlanFact {
    pub project: String,
    pub network: String,
    pub id: u16,
    /// The gateway address in CIDR form, when the VLAN has a gateway of the project's
    /// with an address (the first one, if several).
    #[serde(default)]
    pub gateway: Option<String>,
}

/// A tap of the project (alias `vmctl:<project>:<vm>#<nic>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TapFact {
    /// Its interface name (for `status`).
    pub ifname: String,
    pub vm: String,
    pub nic: usize,
    /// The network and VLAN it is correctly attached to: an access port of exactly that
    /// VLAN on the network's VLAN-filtering bridge, or a port of that VLAN's bridge.
    /// `None` when it is not.
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub vlan: Option<u16>,
    /// Whether the link is up (`IFF_UP`).
    pub up: bool,
}

/// The VXLAN link of a VLAN that spans hosts (alias `vmctl:<project>:<network>/<id>`),
/// with its forwarding entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TunnelFact {
    /// The network and VLAN id of its mark.
    pub network: String,
    pub id: u16,
    pub vni: u32,
    /// Its source address, when it has one.
    #[serde(default)]
    pub local: Option<IpAddr>,
    /// Its UDP destination port.
    #[serde(default)]
    pub port: Option<u16>,
    /// The destinations of its `00:00:00:00:00:00` forwarding entries, sorted.
    #[serde(default)]
    pub peers: Vec<IpAddr>,
    /// Whether it is a port of its VLAN (of the VLAN's bridge, or an access port of the
    /// VLAN on a VLAN-filtering bridge).
    pub attached: bool,
    pub up: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::VmStatus;

    #[test]
    fn requests_and_facts_round_trip_as_json() {
        let mut request = FactsRequest::new("lab", Path::new("/var/lib/vmctl"), Some("ns"));
        request.pools.push(PoolProbe {
            name: "fast".into(),
            path: "/srv/fast".into(),
        });
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["format-version"], FACTS_FORMAT);
        assert_eq!(json["pools"][0]["path"], "/srv/fast");
        assert_eq!(
            serde_json::from_value::<FactsRequest>(json).unwrap(),
            request
        );
        let facts = HostFacts {
            vlans: vec![VlanFact {
                project: "lab".into(),
                network: "lan".into(),
                id: 100,
                gateway: Some("10.100.0.1/24".into()),
            }],
            vms: vec![LiveVm {
                name: "web-1".into(),
                project: "lab".into(),
                status: VmStatus::Running,
                pid: Some(42),
                ..LiveVm::default()
            }],
            other_links: vec!["eth0".into()],
            reported: Some(HostReport {
                cpus: 2,
                memory: 1 << 30,
            }),
            ..HostFacts::default()
        };
        let json = serde_json::to_value(&facts).unwrap();
        assert_eq!(
            serde_json::from_value::<HostFacts>(json.clone()).unwrap(),
            facts
        );
        // One flat object of the live model's fields, kebab-case.
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = [
            "format-version",
            "pools",
            "volumes",
            "networks",
            "vlans",
            "taps",
            "tunnels",
            "vms",
            "unreadable",
            "other-links",
            "netns",
            "reported",
        ];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(json["vlans"][0]["network"], "lan");
        assert_eq!(json["vms"][0]["pid"], 42);
    }

    #[test]
    fn dhcp_servers_travel_with_the_facts_and_are_matched_as_they_are() {
        let server = LiveDhcp {
            name: "front".into(),
            project: "lab".into(),
            config: "0123456789abcdef".into(),
            leases: "fedcba9876543210".into(),
            running: true,
            pid: Some(7),
        };
        let facts = HostFacts {
            dhcp: vec![server.clone()],
            ..HostFacts::default()
        };
        let json = serde_json::to_value(&facts).unwrap();
        assert_eq!(json["dhcp"][0]["leases"], "fedcba9876543210");
        assert_eq!(json["dhcp"][0]["pid"], 7);
        assert_eq!(serde_json::from_value::<HostFacts>(json).unwrap(), facts);
        // Facts that do not mention servers have none.
        let none: HostFacts = serde_json::from_str(r#"{"format-version": 5}"#).unwrap();
        assert!(none.dhcp.is_empty());
        let config = crate::testdata::quickstart();
        let live = crate::matching::to_live_state(&config, "local", &facts);
        assert_eq!(live.dhcp, [server]);
    }

    #[test]
    fn facts_without_a_version_read_as_format_one() {
        // What a vmctl of format 1 answers is never taken for this format.
        let facts: HostFacts = serde_json::from_str(r#"{"pools": []}"#).unwrap();
        assert_eq!(facts.format_version, 1);
        let request: FactsRequest =
            serde_json::from_str(r#"{"project": "lab", "state-dir": "/s"}"#).unwrap();
        assert_eq!(request.format_version, 1);
    }
}
