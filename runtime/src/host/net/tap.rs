//! Taps: one persistent tap per VM NIC, named [`tap_ifname`], marked
//! `vmctl:<project>:<vm>#<nic>`: on a VLAN-filtering bridge a port that is an access
//! (pvid, untagged) member of its VLAN and of nothing else; in
//! [`VlanMode::BridgePerVlan`] a port of its VLAN's bridge.
//!
//! The tap is made with `TUNSETIFF` (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`) and
//! `TUNSETPERSIST` on the session's thread, so it is born in the host's netns; the VM
//! engine later attaches to it by name with the same flags (opening `/dev/net/tun` from
//! inside the same netns).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

use rtnetlink::LinkUnspec;

use super::bridge::{is_valid_ifname, vlan_mode, VlanMode};
use super::created;
use super::session::{Link, LinkKind, Netlink, NetlinkError, PortVlan};
use super::vlan::{vlan_bridge, VlanError};
pub use crate::host::mark::tap_ifname;
use crate::host::mark::Mark;

/// The flags of every vmctl tap (also what the engine must attach with).
pub const TAP_FLAGS: libc::c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

/// Errors of creating, attaching and deleting taps.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("VLAN id {id} is out of range 1..=4094")]
    InvalidVlan { id: u16 },
    #[error("{name:?} is not a valid interface name")]
    InvalidName { name: String },
    #[error("interface {tap} exists and is not vmctl's tap of {vm} NIC {nic} (alias {alias:?}); remove it, or rename the VM")]
    ForeignTap {
        tap: String,
        vm: String,
        nic: usize,
        alias: Option<String>,
    },
    #[error("bridge {bridge} is not the bridge of network {network:?} of this project")]
    ForeignBridge { bridge: String, network: String },
    #[error("bridge {bridge} does not exist")]
    MissingBridge { bridge: String },
    #[error("VLAN {id} of network {network:?} does not exist")]
    MissingVlan { network: String, id: u16 },
    #[error(transparent)]
    Vlan(#[from] VlanError),
    #[error("cannot create tap {tap}")]
    CreateTap { tap: String, source: io::Error },
    #[error("cannot write or remove the creation record of tap {tap} (under {dir})", dir = super::created::RECORD_DIR)]
    CreationRecord { tap: String, source: io::Error },
    #[error("cannot attach tap {tap} to bridge {bridge} on VLAN {id}")]
    AttachTap {
        tap: String,
        bridge: String,
        id: u16,
        source: NetlinkError,
    },
    #[error("cannot open tap {tap}")]
    OpenTap { tap: String, source: io::Error },
    #[error("cannot delete tap {tap}")]
    DeleteTap { tap: String, source: NetlinkError },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// `struct ifreq` as `TUNSETIFF` reads it: the name and the flags, padded to 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens `/dev/net/tun` attached to tap `name` with [`TAP_FLAGS`] (creating the tap when
/// there is none; it goes away with the fd unless made persistent).
fn attach(name: &str) -> io::Result<File> {
    attach_with(name, TAP_FLAGS)
}

fn attach_with(name: &str, flags: libc::c_int) -> io::Result<File> {
    let tun: File = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: flags as libc::c_short,
        _pad: [0; 22],
    };
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` has its layout and size
    // and lives across the call.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tun)
}

/// Creates the persistent tap `name`, then lets go of it. `IFF_TUN_EXCL`: a tap someone
/// made meanwhile under that name is an error (`EBUSY`), never taken over.
fn make_persistent_tap(name: &str) -> io::Result<()> {
    let tun = attach_with(name, TAP_FLAGS | libc::IFF_TUN_EXCL)?;
    // SAFETY: TUNSETPERSIST takes an integer argument; no memory is passed.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens the existing tap `ifname` for a VM's virtio-net device: an fd with
/// [`TAP_FLAGS`] (so each frame carries a 10-byte `virtio_net_hdr`), usable from any
/// thread once returned. Taking the session makes the open happen in the host's netns.
pub fn open_tap(nl: &Netlink, ifname: &str) -> Result<File, TapError> {
    if nl
        .link_by_name(ifname)?
        .is_none_or(|l| l.kind != LinkKind::Tun)
    {
        return Err(TapError::OpenTap {
            tap: ifname.into(),
            source: io::ErrorKind::NotFound.into(),
        });
    }
    attach(ifname).map_err(|source| TapError::OpenTap {
        tap: ifname.into(),
        source,
    })
}

/// Whether `link` is the tap of NIC `nic` of `vm` in `project`.
fn is_ours(link: &Link, project: &str, vm: &str, nic: usize) -> bool {
    link.kind == LinkKind::Tun
        && link.alias.as_deref().and_then(Mark::parse) == Some(Mark::tap(project, vm, nic))
}

/// Where a tap goes: the network, its bridge and the VLAN.
#[derive(Debug, Clone, Copy)]
pub struct TapPort<'a> {
    pub network: &'a str,
    pub bridge: &'a str,
    pub vlan_id: u16,
}

/// Creates the tap of NIC `nic` of `vm` and puts it on its VLAN (an access port of the
/// network's bridge, or a port of the VLAN's bridge), or brings an existing one back to
/// that shape. Returns the tap's name.
pub fn create_tap(
    nl: &Netlink,
    project: &str,
    vm: &str,
    nic: usize,
    port: TapPort<'_>,
) -> Result<String, TapError> {
    let TapPort {
        network,
        bridge,
        vlan_id,
    } = port;
    if !(1..=4094).contains(&vlan_id) {
        return Err(TapError::InvalidVlan { id: vlan_id });
    }
    if !is_valid_ifname(bridge) {
        return Err(TapError::InvalidName {
            name: bridge.into(),
        });
    }
    let tap = tap_ifname(project, vm, nic);
    let links = nl.links()?;
    let bridge_link =
        links
            .iter()
            .find(|l| l.name == bridge)
            .ok_or_else(|| TapError::MissingBridge {
                bridge: bridge.into(),
            })?;
    let bridge_ours = bridge_link.kind == LinkKind::Bridge
        && bridge_link.alias.as_deref().and_then(Mark::parse) == Some(Mark::new(project, network));
    if !bridge_ours {
        return Err(TapError::ForeignBridge {
            bridge: bridge.into(),
            network: network.into(),
        });
    }
    let mark = Mark::tap(project, vm, nic);
    let record_err = |source| TapError::CreationRecord {
        tap: tap.clone(),
        source,
    };
    match links.iter().find(|l| l.name == tap) {
        Some(link) if is_ours(link, project, vm, nic) => {}
        // What a crash right after creating it leaves, by vmctl's record (see
        // `created`); anything else is not ours.
        Some(link) if link.kind == LinkKind::Tun && created::is_leftover(nl, link, &mark)? => {}
        Some(link) => {
            return Err(TapError::ForeignTap {
                tap,
                vm: vm.into(),
                nic,
                alias: link.alias.clone(),
            });
        }
        None => {
            created::begin(nl, &tap, &mark).map_err(record_err)?;
            if let Err(source) = make_persistent_tap(&tap) {
                created::finish(nl, &tap).map_err(record_err)?;
                return Err(TapError::CreateTap {
                    tap: tap.clone(),
                    source,
                });
            }
        }
    }
    let attach_err = |source| TapError::AttachTap {
        tap: tap.clone(),
        bridge: bridge.into(),
        id: vlan_id,
        source,
    };
    let index = nl
        .link_by_name(&tap)?
        .ok_or_else(|| TapError::CreateTap {
            tap: tap.clone(),
            source: io::ErrorKind::NotFound.into(),
        })?
        .index;
    let mode = vlan_mode(bridge_link);
    let controller = match mode {
        VlanMode::Filtering => bridge_link.index,
        VlanMode::BridgePerVlan => {
            vlan_bridge(nl, project, network, bridge, vlan_id)?
                .ok_or_else(|| TapError::MissingVlan {
                    network: network.into(),
                    id: vlan_id,
                })?
                .index
        }
    };
    let message = LinkUnspec::new_with_index(index)
        .alias(mark.alias())
        .controller(controller)
        .up()
        .build();
    nl.change_link(index, message).map_err(attach_err)?;
    created::finish(nl, &tap).map_err(record_err)?;
    if mode == VlanMode::Filtering {
        let current = nl.bridge_vlans()?.remove(&index).unwrap_or_default();
        nl.set_port_vlans(index, &current, &[PortVlan::access(vlan_id)], false)
            .map_err(attach_err)?;
    }
    Ok(tap)
}

/// Puts the existing tap of NIC `nic` of `vm` back on its VLAN (a running VM's tap that
/// was detached by hand). Returns false, making nothing, when there is no such tap: a
/// new tap would be of no use to the VM's running engine, which holds the old one.
pub fn reattach_tap(
    nl: &Netlink,
    project: &str,
    vm: &str,
    nic: usize,
    port: TapPort<'_>,
) -> Result<bool, TapError> {
    let tap = tap_ifname(project, vm, nic);
    match nl.link_by_name(&tap)? {
        Some(link) if is_ours(&link, project, vm, nic) => {
            create_tap(nl, project, vm, nic, port)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Deletes the tap of NIC `nic` of `vm` when it is ours. Returns whether there was one.
pub fn delete_tap(nl: &Netlink, project: &str, vm: &str, nic: usize) -> Result<bool, TapError> {
    let tap = tap_ifname(project, vm, nic);
    match nl.link_by_name(&tap)? {
        Some(link) if is_ours(&link, project, vm, nic) => {
            nl.delete_link(link.index)
                .map_err(|source| TapError::DeleteTap { tap, source })?;
            Ok(true)
        }
        Some(link) => Err(TapError::ForeignTap {
            tap,
            vm: vm.into(),
            nic,
            alias: link.alias,
        }),
        None => Ok(false),
    }
}
