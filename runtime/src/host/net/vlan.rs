//! VLANs of a network and their gateways.
//!
//! On a VLAN-filtering bridge ([`VlanMode::Filtering`]) a VLAN is an entry in the
//! bridge's own VLAN table ("self", tagged), which is also how it is found again, and
//! the uplink follows as a tagged member; its gateway is an address on a VLAN link
//! `<bridge>.<id>` on top of the bridge. In [`VlanMode::BridgePerVlan`] a VLAN is the
//! bridge `<bridge>v<id>` and its gateway an address on that bridge. Either carrier is
//! marked `vmctl:<project>:<network>/<id>`.

use std::net::IpAddr;

use rtnetlink::{LinkUnspec, LinkVlan};

use super::bridge::{self, our_bridge, uplinks, vlan_mode, BridgeError, VlanMode};
use super::created;
use super::session::{Link, LinkKind, Netlink, NetlinkError, PortVlan};
use crate::host::mark::{gateway_ifname, vlan_bridge_ifname, Mark};

/// Errors of adding, removing and addressing VLANs.
#[derive(Debug, thiserror::Error)]
pub enum VlanError {
    #[error("VLAN id {id} is out of range 1..=4094")]
    InvalidId { id: u16 },
    #[error("gateway {gateway:?} is not an address in CIDR form (10.100.0.1/24)")]
    InvalidGateway { gateway: String },
    #[error("bridge {bridge} does not exist")]
    MissingBridge { bridge: String },
    #[error("VLAN {id} is not on bridge {bridge}")]
    MissingVlan { bridge: String, id: u16 },
    #[error(
        "interface {ifname} exists and is not the gateway link of VLAN {id} (alias {alias:?})"
    )]
    ForeignGateway {
        ifname: String,
        id: u16,
        alias: Option<String>,
    },
    #[error("cannot add VLAN {id} to bridge {bridge}")]
    AddVlan {
        bridge: String,
        id: u16,
        source: NetlinkError,
    },
    #[error("cannot remove VLAN {id} from bridge {bridge}")]
    DeleteVlan {
        bridge: String,
        id: u16,
        source: NetlinkError,
    },
    #[error("cannot remove the gateway link of VLAN {id} on bridge {bridge}")]
    DeleteGateway {
        bridge: String,
        id: u16,
        source: NetlinkError,
    },
    #[error("cannot set the gateway of VLAN {id} on bridge {bridge}")]
    SetGateway {
        bridge: String,
        id: u16,
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
    Netlink(#[from] NetlinkError),
}

/// Parses `10.100.0.1/24` or `fd00::1/64` into address and prefix length.
pub fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = text.split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((address, prefix))
}

fn check_id(id: u16) -> Result<(), VlanError> {
    if (1..=4094).contains(&id) {
        Ok(())
    } else {
        Err(VlanError::InvalidId { id })
    }
}

fn bridge_link(
    nl: &Netlink,
    project: &str,
    network: &str,
    bridge: &str,
) -> Result<Link, VlanError> {
    our_bridge(nl, project, network, bridge)?.ok_or(VlanError::MissingBridge {
        bridge: bridge.into(),
    })
}

/// The bridge of VLAN `id` in [`VlanMode::BridgePerVlan`], when it exists and is ours.
pub(crate) fn vlan_bridge(
    nl: &Netlink,
    project: &str,
    network: &str,
    bridge: &str,
    id: u16,
) -> Result<Option<Link>, VlanError> {
    let name = vlan_bridge_ifname(bridge, id);
    Ok(bridge::find_marked_bridge(
        nl,
        &Mark::vlan(project, network, id),
        &name,
        network,
    )?)
}

/// Adds VLAN `id` to the network's bridge (and its uplink), or creates the VLAN's own
/// bridge. Adding a VLAN that is there already repairs it.
pub fn add_vlan(
    nl: &Netlink,
    project: &str,
    network: &str,
    bridge: &str,
    id: u16,
) -> Result<(), VlanError> {
    check_id(id)?;
    let link = bridge_link(nl, project, network, bridge)?;
    if vlan_mode(&link) == VlanMode::BridgePerVlan {
        let name = vlan_bridge_ifname(bridge, id);
        bridge::ensure_marked_bridge(nl, &Mark::vlan(project, network, id), &name, network)?;
        return Ok(());
    }
    let add_err = |source| VlanError::AddVlan {
        bridge: bridge.into(),
        id,
        source,
    };
    nl.add_port_vlan(link.index, PortVlan::tagged(id), true)
        .map_err(add_err)?;
    for port in uplinks(&nl.links()?, link.index) {
        nl.add_port_vlan(port.index, PortVlan::tagged(id), false)
            .map_err(add_err)?;
    }
    Ok(())
}

/// Removes VLAN `id` from the network: its VXLAN tunnel, its gateway, its membership on
/// every port and the bridge's own entry — or the VLAN's bridge (its taps are released,
/// not deleted).
/// Returns whether the VLAN was there.
pub fn delete_vlan(
    nl: &Netlink,
    project: &str,
    network: &str,
    bridge: &str,
    id: u16,
) -> Result<bool, VlanError> {
    check_id(id)?;
    let Some(link) = our_bridge(nl, project, network, bridge)? else {
        return Ok(false);
    };
    super::vxlan::delete_tunnels(nl, project, network, id)?;
    if vlan_mode(&link) == VlanMode::BridgePerVlan {
        let Some(vlan_link) = vlan_bridge(nl, project, network, bridge, id)? else {
            return Ok(false);
        };
        bridge::delete_link_of_bridge(nl, &vlan_link)?;
        return Ok(true);
    }
    remove_gateway_links(nl, project, network, &link, id)?;
    let del_err = |source| VlanError::DeleteVlan {
        bridge: bridge.into(),
        id,
        source,
    };
    let tables = nl.bridge_vlans()?;
    let links = nl.links()?;
    let mut had = false;
    for (index, vlans) in &tables {
        if !vlans.iter().any(|v| v.id == id) {
            continue;
        }
        if *index == link.index {
            had = true;
            continue;
        }
        let port_of_bridge = links
            .iter()
            .any(|l| l.index == *index && l.controller == Some(link.index));
        if port_of_bridge {
            nl.delete_port_vlan(*index, id, false).map_err(del_err)?;
        }
    }
    if had {
        nl.delete_port_vlan(link.index, id, true).map_err(del_err)?;
    }
    Ok(had)
}

/// The gateway links of VLAN `id` on `bridge`: VLAN links on top of it with that id.
pub(crate) fn gateway_links<'a>(
    links: &'a [Link],
    bridge: &Link,
    id: u16,
) -> impl Iterator<Item = &'a Link> {
    let index = bridge.index;
    links.iter().filter(move |l| {
        l.kind == LinkKind::Vlan && l.parent == Some(index) && l.vlan_id == Some(id)
    })
}

fn remove_gateway_links(
    nl: &Netlink,
    project: &str,
    network: &str,
    bridge: &Link,
    id: u16,
) -> Result<(), VlanError> {
    let mark = Mark::vlan(project, network, id);
    for gw in gateway_links(&nl.links()?, bridge, id) {
        if gw.alias.as_deref().and_then(Mark::parse).as_ref() == Some(&mark) {
            nl.delete_link(gw.index)
                .map_err(|source| VlanError::DeleteGateway {
                    bridge: bridge.name.clone(),
                    id,
                    source,
                })?;
        }
    }
    Ok(())
}

/// Makes `gateway` (CIDR) the only address of VLAN `id`'s gateway, creating the gateway
/// link when needed; `None` removes the gateway. The VLAN must exist.
pub fn set_gateway(
    nl: &Netlink,
    project: &str,
    network: &str,
    bridge: &str,
    id: u16,
    gateway: Option<&str>,
) -> Result<(), VlanError> {
    check_id(id)?;
    let wanted = gateway
        .map(|g| parse_cidr(g).ok_or_else(|| VlanError::InvalidGateway { gateway: g.into() }))
        .transpose()?;
    let link = bridge_link(nl, project, network, bridge)?;
    let missing = || VlanError::MissingVlan {
        bridge: bridge.into(),
        id,
    };
    let set_err = |source| VlanError::SetGateway {
        bridge: bridge.into(),
        id,
        source,
    };
    let carrier = if vlan_mode(&link) == VlanMode::BridgePerVlan {
        vlan_bridge(nl, project, network, bridge, id)?.ok_or_else(missing)?
    } else {
        let Some(_) = wanted else {
            return remove_gateway_links(nl, project, network, &link, id);
        };
        let self_vlans = nl.bridge_vlans()?.remove(&link.index).unwrap_or_default();
        if !self_vlans.iter().any(|v| v.id == id) {
            return Err(missing());
        }
        gateway_link(nl, project, network, &link, id)?
    };
    let mut present = false;
    for current in nl.addresses(carrier.index)? {
        if Some((current.address, current.prefix)) == wanted {
            present = true;
        } else {
            nl.delete_address(&current).map_err(set_err)?;
        }
    }
    if let (Some((address, prefix)), false) = (wanted, present) {
        nl.add_address(carrier.index, address, prefix)
            .map_err(set_err)?;
    }
    Ok(())
}

/// The marked, up VLAN link `<bridge>.<id>` on a VLAN-filtering bridge, made if needed.
fn gateway_link(
    nl: &Netlink,
    project: &str,
    network: &str,
    bridge: &Link,
    id: u16,
) -> Result<Link, VlanError> {
    let set_err = |source| VlanError::SetGateway {
        bridge: bridge.name.clone(),
        id,
        source,
    };
    let mark = Mark::vlan(project, network, id);
    let ifname = gateway_ifname(&bridge.name, id);
    let record_err = |source| VlanError::CreationRecord {
        ifname: ifname.clone(),
        source,
    };
    let gw = match nl.link_by_name(&ifname)? {
        Some(l) if l.alias.as_deref().and_then(Mark::parse).as_ref() == Some(&mark) => l,
        // What a crash between creating and marking it leaves (see `created`).
        Some(l) if l.kind == LinkKind::Vlan && created::is_leftover(nl, &l, &mark)? => l,
        Some(l) => {
            return Err(VlanError::ForeignGateway {
                ifname,
                id,
                alias: l.alias,
            })
        }
        None => {
            created::begin(nl, &ifname, &mark).map_err(record_err)?;
            let made = nl.add_link(&ifname, LinkVlan::new(&ifname, bridge.index, id).build());
            if let Err(e) = made {
                created::finish(nl, &ifname).map_err(record_err)?;
                return Err(set_err(e));
            }
            nl.link_by_name(&ifname)?
                .ok_or_else(|| VlanError::MissingVlan {
                    bridge: bridge.name.clone(),
                    id,
                })?
        }
    };
    let message = LinkUnspec::new_with_index(gw.index)
        .alias(mark.alias())
        .up()
        .build();
    nl.change_link(gw.index, message).map_err(set_err)?;
    created::finish(nl, &ifname).map_err(record_err)?;
    Ok(gw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            parse_cidr("10.100.0.1/24"),
            Some(("10.100.0.1".parse().unwrap(), 24))
        );
        assert_eq!(
            parse_cidr("fd00::1/64"),
            Some(("fd00::1".parse().unwrap(), 64))
        );
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "fd00::1/129",
            "x/24",
            "10.0.0.1/",
            "10.0.0.1/+4",
            "/24",
        ] {
            assert_eq!(parse_cidr(bad), None, "{bad}");
        }
    }
}
