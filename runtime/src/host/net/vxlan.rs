//! The VXLAN tunnel of a VLAN whose network spans hosts.
//!
//! On each host each such VLAN has one VXLAN link `vx<vni>` (the name is
//! `vmctl_schema::derive::vxlan_name`), marked like the VLAN's carrier
//! `vmctl:<project>:<network>/<id>`, with `local` = the host's underlay address, UDP port
//! [`VXLAN_PORT`], learning on and no multicast group. Broadcast and unknown frames reach
//! the other hosts by head-end replication: one static entry `00:00:00:00:00:00 dst
//! <peer>` per other host in the link's own forwarding database. The link is a port of
//! the VLAN's bridge `<bridge>v<id>` ([`VlanMode::BridgePerVlan`]), or an access port of
//! the VLAN on the network's VLAN-filtering bridge ([`VlanMode::Filtering`]).
//!
//! As every interface of vmctl's: a creation record is written before the link is made
//! (the kernel ignores the alias in the create request, see [`super::created`]), an
//! unmarked link of that name is adopted only as a crash leftover, and a VXLAN that is
//! not the project's is never changed or deleted.

use std::net::IpAddr;

use rtnetlink::{LinkUnspec, LinkVxlan};
use vmctl_planner::facts::TunnelFact;
use vmctl_planner::Tunnel;

use super::bridge::{self, our_bridge, vlan_mode, BridgeError, VlanMode};
use super::session::{Link, LinkKind, Netlink, NetlinkError, PortVlan};
use super::{created, vlan};
use crate::host::mark::Mark;

/// The UDP port of every tunnel (the planner's: it judges a tunnel by it).
pub use vmctl_planner::facts::VXLAN_PORT;

pub use vmctl_schema::derive::vxlan_name as vxlan_ifname;

/// Errors of making, wiring and removing a VLAN's tunnel.
#[derive(Debug, thiserror::Error)]
pub enum VxlanError {
    #[error("interface {ifname} exists and is not the VXLAN of VLAN {id} of network {network:?} (alias {alias:?}); vmctl never changes or deletes it")]
    ForeignVxlan {
        ifname: String,
        network: String,
        id: u16,
        alias: Option<String>,
    },
    #[error("VLAN {id} of network {network:?} has no bridge on this host to attach its VXLAN to")]
    MissingCarrier { network: String, id: u16 },
    #[error("cannot create VXLAN {ifname} (VNI {vni}, local {local}, port {VXLAN_PORT}); another VXLAN of this host may have that VNI")]
    CreateVxlan {
        ifname: String,
        vni: u32,
        local: IpAddr,
        source: NetlinkError,
    },
    #[error("cannot mark, attach or bring up VXLAN {ifname}")]
    WireVxlan {
        ifname: String,
        source: NetlinkError,
    },
    #[error("cannot set the peers of VXLAN {ifname}")]
    SetPeers {
        ifname: String,
        source: NetlinkError,
    },
    #[error("cannot delete VXLAN {ifname}")]
    DeleteVxlan {
        ifname: String,
        source: NetlinkError,
    },
    #[error("cannot write or remove the creation record of {ifname} (under {dir})", dir = super::created::RECORD_DIR)]
    CreationRecord {
        ifname: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    #[error(transparent)]
    Vlan(#[from] vlan::VlanError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// The project's VXLAN links, each with its forwarding entries and whether it is a port
/// of its VLAN. `links` and `tables` are the host's links and bridge VLAN tables.
pub(crate) fn observe_tunnels(
    nl: &Netlink,
    project: &str,
    links: &[Link],
    tables: &std::collections::BTreeMap<u32, Vec<PortVlan>>,
) -> Result<Vec<TunnelFact>, NetlinkError> {
    let ours: Vec<(&Link, String, u16)> = links
        .iter()
        .filter(|l| l.kind == LinkKind::Vxlan)
        .filter_map(|l| {
            let mark = bridge::mark_of(l, project)?;
            let (network, id) = mark.vlan_parts()?;
            Some((l, network.to_owned(), id))
        })
        .collect();
    if ours.is_empty() {
        return Ok(Vec::new()); // no forwarding database to read
    }
    let mut fdb = nl.fdb_flood_peers()?;
    let mut tunnels = Vec::new();
    for (link, network, id) in ours {
        let info = link.vxlan.clone().unwrap_or_default();
        let controller = link
            .controller
            .and_then(|index| links.iter().find(|l| l.index == index));
        let attached = controller.is_some_and(|c| {
            let mark = bridge::mark_of(c, project);
            match mark.as_ref().map(|m| (m, m.vlan_parts())) {
                // The VLAN's own bridge.
                Some((_, Some((net, vid)))) => net == network && vid == id,
                // The network's VLAN-filtering bridge, the link an access port of the VLAN.
                Some((m, None)) => {
                    m.name == network
                        && tables.get(&link.index).map(Vec::as_slice)
                            == Some(&[PortVlan::access(id)][..])
                }
                None => false,
            }
        }) && controller.is_some_and(|c| c.kind == LinkKind::Bridge);
        tunnels.push(TunnelFact {
            network,
            id,
            vni: info.vni,
            local: info.local,
            port: info.port,
            peers: fdb.remove(&link.index).unwrap_or_default(),
            attached,
            up: link.up,
        });
    }
    tunnels.sort_by(|a, b| (&a.network, a.id).cmp(&(&b.network, b.id)));
    Ok(tunnels)
}

/// Makes VLAN `id` of `network` (bridge `bridge`) carry exactly `tunnel`: its VXLAN
/// link made or repaired, attached, up, with one forwarding entry per peer and no
/// other; `None` removes the VLAN's tunnels. The VLAN must exist.
pub fn set_tunnel(
    nl: &Netlink,
    project: &str,
    network: &str,
    bridge: &str,
    id: u16,
    tunnel: Option<&Tunnel>,
) -> Result<(), VxlanError> {
    let Some(tunnel) = tunnel else {
        delete_tunnels(nl, project, network, id)?;
        return Ok(());
    };
    let missing = || VxlanError::MissingCarrier {
        network: network.into(),
        id,
    };
    let net = our_bridge(nl, project, network, bridge)?.ok_or_else(missing)?;
    let mode = vlan_mode(&net);
    let carrier = match mode {
        VlanMode::BridgePerVlan => {
            vlan::vlan_bridge(nl, project, network, bridge, id)?.ok_or_else(missing)?
        }
        VlanMode::Filtering => net,
    };
    let mark = Mark::vlan(project, network, id);
    let ifname = vxlan_ifname(tunnel.vni);
    // The VLAN's tunnel under another name (its VNI changed) goes.
    for old in nl.links()? {
        if old.kind == LinkKind::Vxlan && is_marked(&old, &mark) && old.name != ifname {
            delete_link(nl, &old)?;
        }
    }
    let link = ensure_link(nl, &mark, network, id, &ifname, tunnel)?;
    let wire_err = |source| VxlanError::WireVxlan {
        ifname: ifname.clone(),
        source,
    };
    let message = LinkUnspec::new_with_index(link.index)
        .alias(mark.alias())
        .controller(carrier.index)
        .up()
        .build();
    nl.change_link(link.index, message).map_err(wire_err)?;
    created::finish(nl, &ifname).map_err(|source| VxlanError::CreationRecord {
        ifname: ifname.clone(),
        source,
    })?;
    if mode == VlanMode::Filtering {
        let current = nl.bridge_vlans()?.remove(&link.index).unwrap_or_default();
        nl.set_port_vlans(link.index, &current, &[PortVlan::access(id)], false)
            .map_err(wire_err)?;
    }
    set_peers(nl, &link, &tunnel.peers)
}

/// The VLAN's link `ifname` as `tunnel` wants it (VNI, local address, port): the one
/// there when it is ours (or a crash leftover of ours) and right, else made anew.
fn ensure_link(
    nl: &Netlink,
    mark: &Mark,
    network: &str,
    id: u16,
    ifname: &str,
    tunnel: &Tunnel,
) -> Result<Link, VxlanError> {
    if let Some(link) = nl.link_by_name(ifname)? {
        let ours = link.kind == LinkKind::Vxlan
            && (is_marked(&link, mark) || created::is_leftover(nl, &link, mark)?);
        if !ours {
            return Err(VxlanError::ForeignVxlan {
                ifname: ifname.into(),
                network: network.into(),
                id,
                alias: link.alias,
            });
        }
        let info = link.vxlan.clone().unwrap_or_default();
        let right = info.vni == tunnel.vni
            && info.local == Some(tunnel.local)
            && info.port == Some(VXLAN_PORT)
            && info.group.is_none();
        if right {
            return Ok(link);
        }
        delete_link(nl, &link)?;
    }
    let record_err = |source| VxlanError::CreationRecord {
        ifname: ifname.into(),
        source,
    };
    created::begin(nl, ifname, mark).map_err(record_err)?;
    let builder = LinkVxlan::new(ifname, tunnel.vni)
        .port(VXLAN_PORT)
        .learning(true);
    let builder = match tunnel.local {
        IpAddr::V4(ip) => builder.local(ip),
        IpAddr::V6(ip) => builder.local6(ip),
    };
    // NLM_F_EXCL: a link someone makes meanwhile is an error, never taken over.
    if let Err(source) = nl.add_link(ifname, builder.build()) {
        created::finish(nl, ifname).map_err(record_err)?;
        return Err(VxlanError::CreateVxlan {
            ifname: ifname.into(),
            vni: tunnel.vni,
            local: tunnel.local,
            source,
        });
    }
    nl.link_by_name(ifname)?
        .ok_or_else(|| VxlanError::MissingCarrier {
            network: network.into(),
            id,
        })
}

/// Makes the head-end replication entries of `link` exactly `peers`.
fn set_peers(nl: &Netlink, link: &Link, peers: &[IpAddr]) -> Result<(), VxlanError> {
    let err = |source| VxlanError::SetPeers {
        ifname: link.name.clone(),
        source,
    };
    let current = nl
        .fdb_flood_peers()?
        .remove(&link.index)
        .unwrap_or_default();
    for extra in current.iter().filter(|p| !peers.contains(p)) {
        nl.delete_fdb(link.index, *extra).map_err(err)?;
    }
    for missing in peers.iter().filter(|p| !current.contains(p)) {
        nl.append_fdb(link.index, *missing).map_err(err)?;
    }
    Ok(())
}

/// Deletes every VXLAN link of the project's VLAN `id` of `network`; whether there was
/// one. (Deleting a VLAN's bridge only releases its ports.)
pub fn delete_tunnels(
    nl: &Netlink,
    project: &str,
    network: &str,
    id: u16,
) -> Result<bool, NetlinkError> {
    let mark = Mark::vlan(project, network, id);
    let mut had = false;
    for link in nl.links()? {
        if link.kind == LinkKind::Vxlan && is_marked(&link, &mark) {
            nl.delete_link(link.index)?;
            had = true;
        }
    }
    Ok(had)
}

fn is_marked(link: &Link, mark: &Mark) -> bool {
    link.alias.as_deref().and_then(Mark::parse).as_ref() == Some(mark)
}

fn delete_link(nl: &Netlink, link: &Link) -> Result<(), VxlanError> {
    nl.delete_link(link.index)
        .map_err(|source| VxlanError::DeleteVxlan {
            ifname: link.name.clone(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_fit_and_follow_the_vni() {
        assert_eq!(vxlan_ifname(222_400), "vx222400");
        assert!(vxlan_ifname(vmctl_schema::derive::MAX_VNI).len() <= crate::host::mark::IFNAME_MAX);
    }
}
