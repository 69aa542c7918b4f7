//! The plan as data: one [`Change`] per resource of the project, in apply order.
//!
//! What `before` and `after` hold, per action (both in the config model's shape; `before`
//! is the live resource converted, so the two compare attribute by attribute):
//!
//! | action    | before            | after             |
//! | --------- | ----------------- | ----------------- |
//! | `create`  | none              | the config's      |
//! | `update`  | live              | the config's      |
//! | `replace` | live (destroyed)  | the config's (created) |
//! | `delete`  | live              | none              |
//! | `start`, `stop` | live (its applied spec) | the config's |
//! | `no-op`   | live              | the config's      |
//! | `migrate` | live (on `from`)  | the config's (on `host`) |
//!
//! `attributes` lists the attributes that differ, each with its [`Effect`]. A `start` or
//! `stop` also rewrites the VM's spec with the in-place attributes listed.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use vmctl_schema::{Network, Pool, Vlan, Vm, Volume};

use crate::action::{Action, Effect, Reason, ResourceId, ResourceKind};
use crate::dhcp::DhcpServer;
use crate::live::VmStatus;

/// A resource in the config model's shape, tagged with its kind in JSON
/// (`{"kind": "vm", "name": "web-1", …}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Resource {
    Netns(Netns),
    Pool(Pool),
    Network(Network),
    Volume(Volume),
    Vlan(HostVlan),
    Dhcp(DhcpServer),
    Vm(Vm),
    Firewall(Firewall),
}

pub use crate::firewall::Firewall;

impl Resource {
    pub fn kind(&self) -> ResourceKind {
        match self {
            Resource::Netns(_) => ResourceKind::Netns,
            Resource::Pool(_) => ResourceKind::Pool,
            Resource::Network(_) => ResourceKind::Network,
            Resource::Volume(_) => ResourceKind::Volume,
            Resource::Vlan(_) => ResourceKind::Vlan,
            Resource::Dhcp(_) => ResourceKind::Dhcp,
            Resource::Vm(_) => ResourceKind::Vm,
            Resource::Firewall(_) => ResourceKind::Firewall,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Resource::Netns(r) => &r.name,
            Resource::Pool(r) => &r.name,
            Resource::Network(r) => &r.name,
            Resource::Volume(r) => &r.name,
            Resource::Vlan(r) => &r.name,
            Resource::Dhcp(r) => &r.name,
            Resource::Vm(r) => &r.name,
            Resource::Firewall(r) => &r.name,
        }
    }

    pub fn id(&self) -> ResourceId {
        ResourceId::new(self.kind(), self.name())
    }

    /// What this resource needs to exist first: a volume its pool, a VLAN its network, a
    /// DHCP server its VLAN, a VM its disks, its NICs' VLANs (and their DHCP servers,
    /// when they have one) and the VMs it `depends-on`.
    pub fn needs(&self) -> Vec<ResourceId> {
        let mut needs = Vec::new();
        self.each_need(|kind, name| needs.push(ResourceId::new(kind, name)));
        needs
    }

    /// What this resource holds exclusively on its host, beyond its name: a pool's path,
    /// a network's bridge, a VLAN's id on its network, a VM's MAC addresses; and on
    /// every host ([`Resource::claim_is_global`]), a VM's NIC addresses on their VLANs.
    /// A create that claims what a delete in the same plan frees must wait for that
    /// delete.
    pub fn claims(&self) -> Vec<String> {
        match self {
            Resource::Pool(p) => vec![format!("path {}", p.path.display())],
            Resource::Network(n) => vec![format!("bridge {}", n.bridge)],
            Resource::Vlan(v) => vec![format!("vlan {} {}", v.network, v.id)],
            Resource::Vm(vm) => {
                let macs = vm.nics.iter().map(|n| format!("mac {}", n.mac));
                let ips = vm
                    .nics
                    .iter()
                    .filter_map(|n| Some(format!("{IP_CLAIM}{} {}", n.vlan, n.ip?)));
                macs.chain(ips).collect()
            }
            Resource::Volume(_)
            | Resource::Netns(_)
            | Resource::Dhcp(_)
            | Resource::Firewall(_) => Vec::new(),
        }
    }

    /// Whether `claim` holds on every host, not only the resource's own: an address on a
    /// VLAN, which may span hosts.
    pub fn claim_is_global(claim: &str) -> bool {
        claim.starts_with(IP_CLAIM)
    }

    /// Calls `f` with the kind and name of each resource this one needs, allocating
    /// nothing (the diff and the graph call this for every resource).
    pub fn each_need(&self, mut f: impl FnMut(ResourceKind, &str)) {
        match self {
            // What lives in a host's netns follows it by host (see `graph`), not by name.
            Resource::Netns(_) | Resource::Pool(_) | Resource::Network(_) => {}
            Resource::Volume(v) => f(ResourceKind::Pool, &v.pool),
            Resource::Vlan(v) => f(ResourceKind::Network, &v.network),
            // A server listens on its VLAN's gateway address.
            Resource::Dhcp(d) => f(ResourceKind::Vlan, &d.name),
            // Its rules name the gateway interfaces of these VLANs.
            Resource::Firewall(fw) => fw.vlans.iter().for_each(|v| f(ResourceKind::Vlan, v)),
            Resource::Vm(vm) => {
                vm.disks.iter().for_each(|d| f(ResourceKind::Volume, d));
                for nic in &vm.nics {
                    f(ResourceKind::Vlan, &nic.vlan);
                    // Its lease is in place before it boots (when the VLAN has DHCP).
                    f(ResourceKind::Dhcp, &nic.vlan);
                }
                vm.depends_on.iter().for_each(|d| f(ResourceKind::Vm, d));
            }
        }
    }
}

/// The prefix of an address claim: `ip <vlan> <address>`.
const IP_CLAIM: &str = "ip ";

/// A VLAN as it is on one host: the config's VLAN, with its `gateway` only on the host
/// that holds it and without `gateway-host` and `vni` (the host sees neither), and —
/// when its network spans hosts — the VXLAN tunnel that joins it to the other hosts.
/// In JSON the VLAN's fields and `vxlan` side by side (`vxlan` absent when there is
/// none). It reads as the VLAN it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostVlan {
    #[serde(flatten)]
    pub vlan: Vlan,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<Tunnel>,
}

impl std::ops::Deref for HostVlan {
    type Target = Vlan;

    fn deref(&self) -> &Vlan {
        &self.vlan
    }
}

impl From<Vlan> for HostVlan {
    /// A VLAN without a tunnel (of a network on one host).
    fn from(vlan: Vlan) -> HostVlan {
        HostVlan { vlan, vxlan: None }
    }
}

/// The VXLAN tunnel of one VLAN on one host: a VXLAN link `vx<vni>` with `local` as its
/// source address, UDP port 4789, and one forwarding entry (`00:00:00:00:00:00 dst
/// <peer>`) per other host of the network. Every field changes in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Tunnel {
    /// The VXLAN network identifier, the same on every host of the VLAN.
    pub vni: u32,
    /// This host's underlay address.
    pub local: IpAddr,
    /// The other hosts' underlay addresses, sorted, each once.
    pub peers: Vec<IpAddr>,
}

/// A host's named network namespace (`/run/netns/<name>`), planned so that it exists
/// before the networks, VLANs and taps of the host are made in it, and is removed after
/// they are gone — only when vmctl made it and no other project uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Netns {
    pub name: String,
}

/// The change of one attribute. Values are JSON: `null` when absent, sizes in bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttrChange {
    /// The config's name of the attribute: `memory`, `prevent-destroy`, …
    pub name: String,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
    pub effect: Effect,
}

/// What the plan does to one resource on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Change {
    pub host: String,
    /// The host a `migrate` moves the resource from (`host` is where it goes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(flatten)]
    pub id: ResourceId,
    pub action: Action,
    /// Why; for people only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    pub before: Option<Resource>,
    pub after: Option<Resource>,
    /// The live VM's status (VMs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VmStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttrChange>,
}

impl Change {
    /// The strongest effect among the changed attributes.
    pub fn strongest_effect(&self) -> Option<Effect> {
        self.attributes.iter().map(|a| a.effect).max()
    }
}

/// The counts of `Plan: N to add, N to change, N to destroy.`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

impl Summary {
    pub fn is_empty(&self) -> bool {
        *self == Summary::default()
    }
}

/// A whole plan: every resource of the project on the config's hosts, actionable changes
/// first in apply order, then the no-ops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub project: String,
    pub changes: Vec<Change>,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for change in &self.changes {
            let (add, change, destroy) = change.action.counts();
            summary.add += add;
            summary.change += change;
            summary.destroy += destroy;
        }
        summary
    }

    /// True when applying would change something.
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::NoOp)
    }

    /// The changes that do something, in apply order.
    pub fn actionable(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.action != Action::NoOp)
    }
}
