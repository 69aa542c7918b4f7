//! Networks and VLANs host by host. A network is one resource on each of its hosts (its
//! bridge there), and so is each of its VLANs: on a network that spans hosts the VLAN
//! on one host carries its VXLAN tunnel ([`Tunnel`]: the VNI, this host's underlay
//! address and the other hosts'), so a host joining `hosts` changes the other hosts'
//! VLANs in place (a forwarding entry more), never re-creates them. A VLAN's gateway is
//! on its `gateway-host` only (on one host: that host).
//!
//! The diff ([`crate::diff`]) plans these against what the hosts report, and
//! [`crate::LiveFile::applied`] reports them as applied.

use std::collections::HashMap;
use std::net::IpAddr;

use vmctl_schema::{Config, Network, Vlan};

use crate::plan::{HostVlan, Tunnel};

/// The underlay address of each host of a config that has one.
pub struct Underlays<'c>(HashMap<&'c str, IpAddr>);

impl<'c> Underlays<'c> {
    pub fn of(config: &'c Config) -> Self {
        Underlays(
            config
                .hosts
                .iter()
                .filter_map(|h| Some((h.name.as_str(), h.underlay?)))
                .collect(),
        )
    }
}

/// `network` as it is on `host`, one of its hosts: that host's bridge.
pub fn network_on(network: &Network, host: &str) -> Network {
    Network {
        host: host.to_owned(),
        hosts: Vec::new(),
        ..network.clone()
    }
}

/// `vlan` of `network` as it is on `host`, one of the network's hosts.
pub fn vlan_on(network: &Network, vlan: &Vlan, host: &str, underlays: &Underlays<'_>) -> HostVlan {
    let gateway_here = match &vlan.gateway_host {
        Some(gateway_host) => gateway_host == host,
        None => !network.spans_hosts(),
    };
    HostVlan {
        vlan: Vlan {
            vni: None,
            gateway: vlan.gateway.clone().filter(|_| gateway_here),
            // The subnet is the planner's (its NICs' addresses); a host has none.
            subnet: None,
            gateway_host: None,
            // Its DHCP server is a resource of its own (`dhcp.<vlan>`), not the VLAN's.
            dhcp: false,
            // NAT and routes are the host's firewall (`crate::firewall`), not the VLAN's.
            nat: false,
            nat_via: None,
            route_to: Vec::new(),
            ..vlan.clone()
        },
        vxlan: tunnel(network, vlan, host, underlays),
    }
}

/// The tunnel of `vlan` on `host`: none unless its network spans hosts, and none where
/// the config lacks a VNI or this host's underlay (which `validate` refuses).
fn tunnel(network: &Network, vlan: &Vlan, host: &str, underlays: &Underlays<'_>) -> Option<Tunnel> {
    if !network.spans_hosts() {
        return None;
    }
    let local = *underlays.0.get(host)?;
    let mut peers: Vec<IpAddr> = network
        .on_hosts()
        .iter()
        .filter(|h| h.as_str() != host)
        .filter_map(|h| underlays.0.get(h.as_str()).copied())
        .filter(|&peer| peer != local)
        .collect();
    peers.sort();
    peers.dedup();
    Some(Tunnel {
        vni: vlan.vni?,
        local,
        peers,
    })
}

#[cfg(test)]
mod tests;
