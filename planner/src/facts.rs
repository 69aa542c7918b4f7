//! What a host reports of one project's networking, as the matcher
//! ([`crate::live`]'s `LiveState` is its output) reads it: VLANs by network and id, the
//! project's taps and the VXLAN tunnels of VLANs that span hosts. The runtime's
//! `host::net` builds these directly from netlink; nothing converts them on the way.
//!
//! Each field is either planned (the matcher turns it into something the diff
//! compares) or kept for `status`; what the host could say but nothing here plans is
//! not reported on purpose:
//!
//! | fact | field | |
//! | --- | --- | --- |
//! | VLAN | `network`, `id`, `gateway` | planned: named from the config by `(network, id)` |
//! | tap | `vm`, `nic`, `network`, `vlan`, `up` | planned: tap drift of a running VM (gone, off its VLAN, or down) |
//! | tap | `ifname` | shown by `status` |
//! | tap | its bridge and port VLAN table | dropped: what they mean is `network`/`vlan`, read on the host |
//! | tunnel | `vni`, `local`, `port`, `peers`, `attached`, `up` | planned: a VLAN's tunnel, or none when it is not in place |
//! | tunnel | its link name | dropped: always `vx<vni>`, and found by its mark |
//! | network | `mode` ([`crate::live::VlanMode`]) | planned: which interface names its VLANs need (names taken) |
//! | network | whether its bridge is up, whether VLAN filtering is on | dropped: nothing plans their repair (creating the network again does both) |
//! | volume | `allocated` ([`crate::live::LiveVolume`]) | shown by `status` |
//! | volume | its file's path | dropped: always `<pool path>/<name>.raw` |
//! | VM | `status` ([`crate::live::LiveVm`]) | planned: running when its VMM answers; crashed when gone though vmctl left it running |
//! | VM | `pid`, `uptime-seconds` | shown by `status` |

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::plan::Tunnel;

/// The UDP port of every VXLAN tunnel vmctl makes (IANA's VXLAN port; Linux's default
/// is the older 8472).
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

impl TunnelFact {
    /// The tunnel as the diff compares it: only a link that is in place (a port of its
    /// VLAN, up, on port [`VXLAN_PORT`]) carries the VLAN; anything else is no tunnel,
    /// which apply makes whole again.
    pub fn tunnel(&self) -> Option<Tunnel> {
        if !(self.attached && self.up && self.port == Some(VXLAN_PORT)) {
            return None;
        }
        Some(Tunnel {
            vni: self.vni,
            // A link without a source address is drift like any other setting.
            local: self
                .local
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            peers: self.peers.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(attached: bool, up: bool, port: Option<u16>) -> TunnelFact {
        TunnelFact {
            network: "lan".into(),
            id: 100,
            vni: 7,
            local: None,
            port,
            peers: vec![IpAddr::from([192, 0, 2, 12])],
            attached,
            up,
        }
    }

    #[test]
    fn only_a_tunnel_in_place_carries_its_vlan() {
        let tunnel = fact(true, true, Some(VXLAN_PORT))
            .tunnel()
            .expect("a tunnel");
        assert_eq!(tunnel.vni, 7);
        assert!(tunnel.local.is_unspecified(), "no local address is drift");
        assert_eq!(tunnel.peers.len(), 1);
        assert_eq!(fact(false, true, Some(VXLAN_PORT)).tunnel(), None);
        assert_eq!(fact(true, false, Some(VXLAN_PORT)).tunnel(), None);
        assert_eq!(fact(true, true, Some(8472)).tunnel(), None);
    }
}
