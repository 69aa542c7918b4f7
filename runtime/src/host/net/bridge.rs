//! Bridges: one Linux bridge per network, marked `vmctl:<project>:<network>` in its
//! alias; and the network's optional uplink, a port vmctl enslaves (never creates, marks
//! or deletes) as a tagged member of every VLAN.
//!
//! Two ways to carry a network's VLANs, chosen by what the kernel can do ([`VlanMode`]):
//!
//! - [`VlanMode::Filtering`] (the design): the bridge has `vlan_filtering 1` and
//!   `vlan_default_pvid 0`, so neither it nor a new port joins VLAN 1 by itself; VLANs
//!   are entries of its VLAN table, taps are access ports, the uplink a trunk.
//! - [`VlanMode::BridgePerVlan`], for kernels built without
//!   `CONFIG_BRIDGE_VLAN_FILTERING` (and `CONFIG_VLAN_8021Q`), such as the ones vmctl's
//!   own CI runs on: the network's bridge stays, and each VLAN is a bridge of its own,
//!   `<bridge>v<id>` marked `vmctl:<project>:<network>/<id>`, holding that VLAN's taps and
//!   gateway. The VLANs stay isolated from each other; an uplink trunk is impossible
//!   there (it needs 802.1Q) and is refused.
//!
//! The mode is not stored: a bridge's link info carries `IFLA_BR_VLAN_DEFAULT_PVID`
//! exactly when the kernel has VLAN filtering (`IFLA_BR_VLAN_FILTERING` is always
//! there), so every function reads it off the bridge.
//!
//! The kernel does not take an alias in the create request, so it is set right after; a
//! bridge of the expected name without a mark is adopted only when vmctl's creation
//! record names it and it is untouched since (what a crash between the two requests
//! leaves, see [`super::created`]). Any other unmarked or foreign-marked interface of
//! that name is refused, never renamed, re-aliased or deleted.

use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec};

use super::created;
use super::session::{Link, LinkKind, Netlink, NetlinkError, PortVlan};
use crate::host::mark::{Mark, IFNAME_MAX};

/// Errors of creating, deleting and wiring bridges.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("{name:?} is not a valid interface name (1 to 15 bytes, no '/', ':' or spaces)")]
    InvalidName { name: String },
    #[error("bridge {bridge} exists and is not vmctl's (not network {network:?} of this project; alias {alias:?}); pick another `bridge` name or remove it")]
    ForeignBridge {
        bridge: String,
        network: String,
        alias: Option<String>,
    },
    #[error("bridge {bridge} does not exist")]
    MissingBridge { bridge: String },
    #[error("uplink {uplink} does not exist")]
    MissingUplink { uplink: String },
    #[error("uplink {uplink} is already a port of another bridge (index {controller})")]
    UplinkInUse { uplink: String, controller: u32 },
    #[error("uplink {uplink} needs a kernel with bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING) to trunk the VLANs of bridge {bridge}")]
    UplinkNeedsVlanFiltering { bridge: String, uplink: String },
    #[error("cannot create bridge {bridge}")]
    CreateBridge {
        bridge: String,
        source: NetlinkError,
    },
    #[error("cannot write or remove the creation record of bridge {bridge} (under {dir})", dir = super::created::RECORD_DIR)]
    CreationRecord {
        bridge: String,
        source: std::io::Error,
    },
    #[error("cannot delete bridge {bridge}")]
    DeleteBridge {
        bridge: String,
        source: NetlinkError,
    },
    #[error("cannot attach uplink {uplink} to bridge {bridge}")]
    AttachUplink {
        bridge: String,
        uplink: String,
        source: NetlinkError,
    },
    #[error("cannot detach uplink {uplink} from bridge {bridge}")]
    DetachUplink {
        bridge: String,
        uplink: String,
        source: NetlinkError,
    },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// How a network's VLANs are carried (see the module doc): the planner's type, which a
/// host reports with each network.
pub use vmctl_planner::live::{BridgeDrift, VlanMode};

/// The VLAN mode of a network's bridge, read off its link info.
pub fn vlan_mode(bridge: &Link) -> VlanMode {
    if bridge.vlan_default_pvid.is_some() {
        VlanMode::Filtering
    } else {
        VlanMode::BridgePerVlan
    }
}

/// How a network's bridge is not as [`create_bridge`] leaves it: down, or (in
/// [`VlanMode::Filtering`]) with VLAN filtering off.
pub fn drift(bridge: &Link, mode: VlanMode) -> Vec<BridgeDrift> {
    let mut drift = Vec::new();
    if !bridge.up {
        drift.push(BridgeDrift::Down);
    }
    if mode == VlanMode::Filtering && bridge.vlan_filtering == Some(false) {
        drift.push(BridgeDrift::VlanFilteringOff);
    }
    drift
}

/// Whether `name` can be a Linux interface name.
pub fn is_valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}

pub(crate) fn check_ifname(name: &str) -> Result<(), BridgeError> {
    if is_valid_ifname(name) {
        Ok(())
    } else {
        Err(BridgeError::InvalidName { name: name.into() })
    }
}

/// The mark on `link`, if it is one of `project`'s.
pub(crate) fn mark_of(link: &Link, project: &str) -> Option<Mark> {
    link.alias
        .as_deref()
        .and_then(Mark::parse)
        .filter(|m| m.project == project)
}

/// Whether `link` is a bridge marked `mark`.
fn is_marked_bridge(link: &Link, mark: &Mark) -> bool {
    link.kind == LinkKind::Bridge
        && link.alias.as_deref().and_then(Mark::parse).as_ref() == Some(mark)
}

/// The bridge `bridge` of `network`, when it exists and is ours; an error when an
/// interface of that name exists and is not.
pub(crate) fn our_bridge(
    nl: &Netlink,
    project: &str,
    network: &str,
    bridge: &str,
) -> Result<Option<Link>, BridgeError> {
    find_marked_bridge(nl, &Mark::new(project, network), bridge, network)
}

pub(crate) fn find_marked_bridge(
    nl: &Netlink,
    mark: &Mark,
    bridge: &str,
    network: &str,
) -> Result<Option<Link>, BridgeError> {
    match nl.link_by_name(bridge)? {
        None => Ok(None),
        Some(link) if is_marked_bridge(&link, mark) => Ok(Some(link)),
        Some(link) => Err(BridgeError::ForeignBridge {
            bridge: bridge.into(),
            network: network.into(),
            alias: link.alias,
        }),
    }
}

/// Creates the bridge of `network` (VLAN filtering on where the kernel has it, no
/// default VLAN, up, marked), or brings an existing one of ours back to that shape.
/// Returns it.
pub fn create_bridge(
    nl: &Netlink,
    project: &str,
    network: &str,
    bridge: &str,
) -> Result<Link, BridgeError> {
    ensure_marked_bridge(nl, &Mark::new(project, network), bridge, network)
}

/// Creates or repairs bridge `bridge` carrying `mark` (a network's, or a VLAN's in
/// [`VlanMode::BridgePerVlan`]).
pub(crate) fn ensure_marked_bridge(
    nl: &Netlink,
    mark: &Mark,
    bridge: &str,
    network: &str,
) -> Result<Link, BridgeError> {
    check_ifname(bridge)?;
    let create_err = |source| BridgeError::CreateBridge {
        bridge: bridge.into(),
        source,
    };
    let record_err = |source| BridgeError::CreationRecord {
        bridge: bridge.into(),
        source,
    };
    let existing = match nl.link_by_name(bridge)? {
        Some(link) if is_marked_bridge(&link, mark) => Some(link),
        Some(link) if link.kind == LinkKind::Bridge && created::is_leftover(nl, &link, mark)? => {
            Some(link)
        }
        Some(link) => {
            return Err(BridgeError::ForeignBridge {
                bridge: bridge.into(),
                network: network.into(),
                alias: link.alias,
            })
        }
        None => None,
    };
    let created = existing.is_none();
    let link = match existing {
        Some(link) => link,
        None => {
            created::begin(nl, bridge, mark).map_err(record_err)?;
            // NLM_F_EXCL: a bridge someone makes meanwhile is an error, never taken over.
            let made = match nl.add_link(bridge, filtering(LinkBridge::new(bridge)).build()) {
                Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => {
                    nl.add_link(bridge, LinkBridge::new(bridge).build())
                }
                other => other,
            };
            if let Err(e) = made {
                created::finish(nl, bridge).map_err(record_err)?;
                return Err(create_err(e));
            }
            nl.link_by_name(bridge)?.ok_or(BridgeError::MissingBridge {
                bridge: bridge.into(),
            })?
        }
    };
    // Alias, options and state in one change; the same request repairs drift.
    let filters = vlan_mode(&link) == VlanMode::Filtering;
    let mut builder = LinkBridge::new(bridge)
        .index(link.index)
        .alias(mark.alias());
    if filters {
        builder = filtering(builder);
    }
    nl.change_link(link.index, builder.build())
        .map_err(create_err)?;
    // Marked now: the record has done its job (also for an adopted leftover).
    created::finish(nl, bridge).map_err(record_err)?;
    if created && filters {
        // A new bridge may have joined the default VLAN before `vlan_default_pvid 0`
        // took effect; a VLAN of the bridge is only ever one vmctl added.
        let own = nl.bridge_vlans()?.remove(&link.index).unwrap_or_default();
        nl.set_port_vlans(link.index, &own, &[], true)
            .map_err(create_err)?;
    }
    nl.link_by_name(bridge)?.ok_or(BridgeError::MissingBridge {
        bridge: bridge.into(),
    })
}

fn filtering(builder: LinkMessageBuilder<LinkBridge>) -> LinkMessageBuilder<LinkBridge> {
    builder.vlan_filtering(true).vlan_default_pvid(0)
}

/// Deletes the bridge of `network` when it is ours, with every VLAN bridge, gateway
/// link and VXLAN tunnel of the network (other ports are released, never deleted). Returns whether there was
/// a bridge.
pub fn delete_bridge(
    nl: &Netlink,
    project: &str,
    network: &str,
    bridge: &str,
) -> Result<bool, BridgeError> {
    check_ifname(bridge)?;
    let Some(link) = our_bridge(nl, project, network, bridge)? else {
        return Ok(false);
    };
    let delete_err = |name: &str| {
        let bridge = name.to_owned();
        move |source| BridgeError::DeleteBridge { bridge, source }
    };
    for carrier in nl.links()? {
        let of_network = mark_of(&carrier, project)
            .as_ref()
            .and_then(Mark::vlan_parts)
            .is_some_and(|(net, _)| net == network);
        let carries = matches!(
            carrier.kind,
            LinkKind::Bridge | LinkKind::Vlan | LinkKind::Vxlan
        );
        if of_network && carries {
            nl.delete_link(carrier.index)
                .map_err(delete_err(&carrier.name))?;
        }
    }
    nl.delete_link(link.index).map_err(delete_err(bridge))?;
    Ok(true)
}

/// Deletes bridge `link` (already known to be ours).
pub(crate) fn delete_link_of_bridge(nl: &Netlink, link: &Link) -> Result<(), BridgeError> {
    nl.delete_link(link.index)
        .map_err(|source| BridgeError::DeleteBridge {
            bridge: link.name.clone(),
            source,
        })
}

/// The ports of bridge `index` that vmctl did not make: its uplinks.
pub(crate) fn uplinks(links: &[Link], index: u32) -> impl Iterator<Item = &Link> {
    links.iter().filter(move |l| {
        l.controller == Some(index) && l.alias.as_deref().and_then(Mark::parse).is_none()
    })
}

/// Makes `uplink` the only uplink of the bridge of `network`: other non-vmctl ports
/// are released, `uplink` is enslaved, brought up, and made a tagged member of exactly
/// the bridge's VLANs. `None` releases the uplink.
pub fn set_uplink(
    nl: &Netlink,
    project: &str,
    network: &str,
    bridge: &str,
    uplink: Option<&str>,
) -> Result<(), BridgeError> {
    check_ifname(bridge)?;
    if let Some(name) = uplink {
        check_ifname(name)?;
    }
    let link = our_bridge(nl, project, network, bridge)?.ok_or(BridgeError::MissingBridge {
        bridge: bridge.into(),
    })?;
    let links = nl.links()?;
    for port in uplinks(&links, link.index) {
        if Some(port.name.as_str()) != uplink {
            let message = LinkUnspec::new_with_index(port.index)
                .nocontroller()
                .build();
            nl.change_link(port.index, message)
                .map_err(|source| BridgeError::DetachUplink {
                    bridge: bridge.into(),
                    uplink: port.name.clone(),
                    source,
                })?;
        }
    }
    let Some(name) = uplink else {
        return Ok(());
    };
    if vlan_mode(&link) == VlanMode::BridgePerVlan {
        return Err(BridgeError::UplinkNeedsVlanFiltering {
            bridge: bridge.into(),
            uplink: name.into(),
        });
    }
    let port = links
        .iter()
        .find(|l| l.name == name)
        .ok_or(BridgeError::MissingUplink {
            uplink: name.into(),
        })?;
    let attach_err = |source| BridgeError::AttachUplink {
        bridge: bridge.into(),
        uplink: name.into(),
        source,
    };
    match port.controller {
        Some(c) if c != link.index => {
            return Err(BridgeError::UplinkInUse {
                uplink: name.into(),
                controller: c,
            })
        }
        Some(_) => {}
        None => {
            let message: LinkMessage = LinkUnspec::new_with_index(port.index)
                .controller(link.index)
                .up()
                .build();
            nl.change_link(port.index, message).map_err(attach_err)?;
        }
    }
    let tables = nl.bridge_vlans()?;
    let trunk: Vec<PortVlan> = tables
        .get(&link.index)
        .into_iter()
        .flatten()
        .map(|v| PortVlan::tagged(v.id))
        .collect();
    let current = tables.get(&port.index).cloned().unwrap_or_default();
    nl.set_port_vlans(port.index, &current, &trunk, false)
        .map_err(attach_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge(up: bool, filtering: Option<bool>) -> Link {
        Link {
            index: 7,
            name: "br0".into(),
            alias: Some("vmctl:lab:lan".into()),
            kind: LinkKind::Bridge,
            up,
            controller: None,
            parent: None,
            vlan_id: None,
            vlan_filtering: filtering,
            vlan_default_pvid: filtering.map(|_| 0),
            vxlan: None,
        }
    }

    #[test]
    fn a_bridge_down_or_unfiltered_is_drift() {
        use VlanMode::{BridgePerVlan, Filtering};
        assert_eq!(drift(&bridge(true, Some(true)), Filtering), []);
        assert_eq!(
            drift(&bridge(false, Some(true)), Filtering),
            [BridgeDrift::Down]
        );
        assert_eq!(
            drift(&bridge(false, Some(false)), Filtering),
            [BridgeDrift::Down, BridgeDrift::VlanFilteringOff]
        );
        // A kernel without VLAN filtering: one bridge per VLAN, and nothing to turn on.
        assert_eq!(drift(&bridge(true, None), BridgePerVlan), []);
        assert_eq!(drift(&bridge(true, Some(false)), BridgePerVlan), []);
    }
}
