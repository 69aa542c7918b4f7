//! Networks on a host over netlink: bridges with VLAN filtering ([`bridge`]; one bridge
//! per VLAN on kernels without it, see [`VlanMode`]), VLANs and their gateways
//! ([`vlan`]), the VXLAN tunnel of a VLAN that spans hosts ([`vxlan`]), a tap per VM NIC
//! ([`tap`]), and reading all of it back ([`observe_net`]).
//!
//! Everything runs through a [`Netlink`] session, which lives on a thread inside the
//! host's network namespace:
//!
//! ```no_run
//! use vmctl_runtime::host::net::{bridge, observe_net, vlan, Netlink};
//! # fn main() -> Result<(), vmctl_runtime::host::net::vlan::VlanError> {
//! Netlink::run(Some("vmctl-lab"), |nl| {
//!     bridge::create_bridge(nl, "lab", "lan", "vmbr0")?;
//!     vlan::add_vlan(nl, "lab", "lan", "vmbr0", 100)?;
//!     vlan::set_gateway(nl, "lab", "lan", "vmbr0", 100, Some("10.100.0.1/24"))?;
//!     let live = observe_net(nl, "lab")?;
//!     assert_eq!((live.vlans[0].network.as_str(), live.vlans[0].id), ("lan", 100));
//!     Ok(())
//! })
//! # }
//! ```

pub mod bridge;
pub mod created;
pub mod netns;
pub mod session;
pub mod tap;
pub mod vlan;
pub mod vxlan;

use vmctl_planner::facts::{TapFact, TunnelFact, VlanFact};
use vmctl_planner::live::LiveNetwork;

pub use bridge::VlanMode;
pub use session::{Link, LinkKind, Netlink, NetlinkError, PortVlan};

use crate::host::mark::Mark;

/// Everything of a project's networking on one host, in the planner's types (see
/// `vmctl_planner::facts` for what is reported and what is not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetInventory {
    /// The project's networks, by name.
    pub networks: Vec<LiveNetwork>,
    /// Their VLANs, by network and id.
    pub vlans: Vec<VlanFact>,
    /// The project's taps, by VM and NIC.
    pub taps: Vec<TapFact>,
    /// The VXLAN links of VLANs that span hosts.
    pub tunnels: Vec<TunnelFact>,
    /// The names of every interface that is not the project's (unmarked, or another
    /// project's): names vmctl must not create (`vmctl_planner::matching::conflicts`).
    pub others: Vec<String>,
}

/// Reads the project's networks (bridges by their mark), their VLANs (VLAN tables or VLAN
/// bridges), gateways, uplinks, VXLAN tunnels, and the project's taps. Interfaces of other projects
/// and unmarked ones are skipped.
pub fn observe_net(nl: &Netlink, project: &str) -> Result<NetInventory, NetlinkError> {
    let links = nl.links()?;
    let tables = nl.bridge_vlans()?;
    let by_index = |index: u32| links.iter().find(|l| l.index == index);
    let gateway_of = |carrier: &Link| -> Result<Option<String>, NetlinkError> {
        Ok(nl
            .addresses(carrier.index)?
            .first()
            .map(|a| format!("{}/{}", a.address, a.prefix)))
    };

    let mut inventory = NetInventory::default();
    for link in &links {
        let Some(mark) = bridge::mark_of(link, project) else {
            inventory.others.push(link.name.clone());
            continue;
        };
        match link.kind {
            LinkKind::Bridge if mark.vlan_parts().is_none() => {
                let mode = bridge::vlan_mode(link);
                let vlans = &mut inventory.vlans;
                let vlan = |id, gateway| VlanFact {
                    project: project.to_owned(),
                    network: mark.name.clone(),
                    id,
                    gateway,
                };
                match mode {
                    VlanMode::Filtering => {
                        for entry in tables.get(&link.index).into_iter().flatten() {
                            let vlan_mark = Mark::vlan(project, &mark.name, entry.id);
                            let mut gateway = None;
                            for gw in vlan::gateway_links(&links, link, entry.id) {
                                if bridge::mark_of(gw, project).as_ref() == Some(&vlan_mark) {
                                    gateway = gateway_of(gw)?;
                                }
                            }
                            vlans.push(vlan(entry.id, gateway));
                        }
                    }
                    VlanMode::BridgePerVlan => {
                        for carrier in &links {
                            let carrier_mark = bridge::mark_of(carrier, project);
                            let parts = carrier_mark.as_ref().and_then(Mark::vlan_parts);
                            if let (LinkKind::Bridge, Some((network, id))) = (&carrier.kind, parts)
                            {
                                if network == mark.name {
                                    vlans.push(vlan(id, gateway_of(carrier)?));
                                }
                            }
                        }
                    }
                }
                inventory.networks.push(LiveNetwork {
                    name: mark.name,
                    project: project.to_owned(),
                    bridge: link.name.clone(),
                    uplink: bridge::uplinks(&links, link.index)
                        .next()
                        .map(|l| l.name.clone()),
                    mode: Some(mode),
                    bridge_drift: bridge::drift(link, mode),
                });
            }
            LinkKind::Tun => {
                let Some((vm, nic)) = mark.tap_parts() else {
                    continue;
                };
                let port_vlans = tables.get(&link.index).cloned().unwrap_or_default();
                let controller = link.controller.and_then(by_index);
                let (network, vlan) = controller
                    .and_then(|c| tap_place(c, project, &port_vlans))
                    .unzip();
                inventory.taps.push(TapFact {
                    ifname: link.name.clone(),
                    vm: vm.into(),
                    nic,
                    network,
                    vlan,
                    up: link.up,
                });
            }
            _ => {}
        }
    }
    inventory.tunnels = vxlan::observe_tunnels(nl, project, &links, &tables)?;
    inventory.networks.sort_by(|a, b| a.name.cmp(&b.name));
    inventory
        .vlans
        .sort_by(|a, b| (&a.network, a.id).cmp(&(&b.network, b.id)));
    inventory.others.sort();
    inventory
        .taps
        .sort_by(|a, b| (&a.vm, a.nic).cmp(&(&b.vm, b.nic)));
    Ok(inventory)
}

/// The network and VLAN a tap sits on, given the bridge it is a port of.
fn tap_place(controller: &Link, project: &str, port_vlans: &[PortVlan]) -> Option<(String, u16)> {
    let mark = bridge::mark_of(controller, project)?;
    if controller.kind != LinkKind::Bridge {
        return None;
    }
    if let Some((network, id)) = mark.vlan_parts() {
        return Some((network.to_owned(), id));
    }
    match port_vlans {
        [only] if only.pvid && only.untagged => Some((mark.name, only.id)),
        _ => None,
    }
}
