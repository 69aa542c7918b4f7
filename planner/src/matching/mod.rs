//! The matcher: what a host reported ([`HostFacts`], which needs no config) matched to
//! the config, as the [`LiveState`] the diff plans against. Pure: no I/O.
//!
//! - A host's VLAN table holds ids, not names: live VLANs are named from the config by
//!   `(network, id)`; one the config no longer has is named `<network>/<id>` (a name
//!   the config language cannot spell, so it never matches a configured VLAN by
//!   accident). Each carries its VXLAN tunnel when its link is in place ([`tunnel`]).
//! - Interfaces the config wants under names the host has given to interfaces vmctl did
//!   not make are that resource's problem ([`conflicts`]).
//! - A running VM's taps that are gone, off their VLAN or down are its tap drift
//!   ([`drift`]).
//!
//! Pools, volumes, networks, VMs, the netns, unreadable records and the host's size are
//! the live model's own types in the facts already: they are taken as they are.

pub mod conflicts;
pub mod drift;
pub mod firewall;

use std::net::{IpAddr, Ipv4Addr};

use vmctl_schema::Config;

use crate::facts::{HostFacts, TunnelFact, VXLAN_PORT};
use crate::live::{LiveState, LiveVlan};
use crate::plan::Tunnel;

/// The planner's view of what `host` reported, matched to `config`.
pub fn to_live_state(config: &Config, host: &str, facts: &HostFacts) -> LiveState {
    let vlan_name = |network: &str, id: u16| {
        config
            .vlans
            .iter()
            .find(|v| v.network == network && v.id == id)
            .map_or_else(|| format!("{network}/{id}"), |v| v.name.clone())
    };
    let tunnel_of = |network: &str, id: u16| {
        facts
            .tunnels
            .iter()
            .find(|t| t.network == network && t.id == id)
            .and_then(tunnel)
    };
    let mut live = LiveState {
        pools: facts.pools.clone(),
        volumes: facts.volumes.clone(),
        networks: facts.networks.clone(),
        vlans: facts
            .vlans
            .iter()
            .map(|v| LiveVlan {
                name: vlan_name(&v.network, v.id),
                project: v.project.clone(),
                network: v.network.clone(),
                id: v.id,
                gateway: v.gateway.clone(),
                vxlan: tunnel_of(&v.network, v.id),
            })
            .collect(),
        vms: facts.vms.clone(),
        dhcp: facts.dhcp.clone(),
        netns: facts.netns.clone(),
        unreadable: facts.unreadable.clone(),
        reported: facts.reported,
        cpu_features: facts.cpu_features.clone(),
        problems: conflicts::find(config, host, facts),
        firewalls: Vec::new(),
        default_route: facts.default_route.clone(),
    };
    match facts
        .firewall
        .as_ref()
        .map(|f| firewall::live(config, host, f))
    {
        Some(Ok(found)) => live.firewalls.push(found),
        Some(Err(problem)) => live.problems.push(problem),
        None => {}
    }
    for vm in &mut live.vms {
        vm.tap_drift = drift::tap_drift(config, vm, facts);
    }
    live
}

/// A VLAN's tunnel as the diff compares it: only a link that is in place (a port of
/// its VLAN, up, on port [`VXLAN_PORT`]) carries the VLAN; anything else is no tunnel,
/// which apply makes whole again.
pub fn tunnel(fact: &TunnelFact) -> Option<Tunnel> {
    if !(fact.attached && fact.up && fact.port == Some(VXLAN_PORT)) {
        return None;
    }
    Some(Tunnel {
        vni: fact.vni,
        // A link without a source address is drift like any other setting.
        local: fact.local.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        peers: fact.peers.clone(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::facts::VlanFact;
    use crate::live::{LiveNetwork, LivePool};
    use crate::testdata::vlan;

    /// Project "lab" with VLAN "front" (network "lan", id 100) and nothing else.
    pub(crate) fn config() -> Config {
        Config {
            project: "lab".into(),
            hosts: Vec::new(),
            networks: Vec::new(),
            vlans: vec![vlan("front", 100, None)],
            pools: Vec::new(),
            volumes: Vec::new(),
            vms: Vec::new(),
        }
    }

    pub(crate) fn vlan_fact(network: &str, id: u16) -> VlanFact {
        VlanFact {
            project: "lab".into(),
            network: network.into(),
            id,
            gateway: None,
        }
    }

    fn tunnel_fact(attached: bool, up: bool, port: Option<u16>) -> TunnelFact {
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
    fn vlans_are_named_from_the_config_by_network_and_id() {
        let facts = HostFacts {
            vlans: vec![
                vlan_fact("lan", 100),
                vlan_fact("lan", 200),
                vlan_fact("wan", 100),
            ],
            ..HostFacts::default()
        };
        let live = to_live_state(&config(), "local", &facts);
        let names: Vec<_> = live.vlans.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["front", "lan/200", "wan/100"]);
    }

    #[test]
    fn a_vlan_carries_its_tunnel_only_when_in_place() {
        let facts = |fact: TunnelFact| HostFacts {
            vlans: vec![vlan_fact("lan", 100), vlan_fact("lan", 200)],
            tunnels: vec![fact],
            ..HostFacts::default()
        };
        let live = to_live_state(&config(), "a", &facts(tunnel_fact(true, true, Some(4789))));
        let tunnel = live.vlans[0].vxlan.as_ref().expect("front's tunnel");
        assert_eq!(tunnel.vni, 7);
        assert!(tunnel.local.is_unspecified(), "no local address is drift");
        assert_eq!(tunnel.peers.len(), 1);
        assert_eq!(live.vlans[1].vxlan, None, "VLAN 200 has none");
        let detached = to_live_state(&config(), "a", &facts(tunnel_fact(false, true, Some(4789))));
        assert_eq!(detached.vlans[0].vxlan, None);
    }

    #[test]
    fn only_a_tunnel_in_place_carries_its_vlan() {
        assert!(tunnel(&tunnel_fact(true, true, Some(VXLAN_PORT))).is_some());
        assert_eq!(tunnel(&tunnel_fact(false, true, Some(VXLAN_PORT))), None);
        assert_eq!(tunnel(&tunnel_fact(true, false, Some(VXLAN_PORT))), None);
        assert_eq!(tunnel(&tunnel_fact(true, true, Some(8472))), None);
        assert_eq!(tunnel(&tunnel_fact(true, true, None)), None);
    }

    #[test]
    fn what_the_live_model_holds_as_is_is_taken_as_is() {
        let pool = LivePool {
            name: "fast".into(),
            project: "lab".into(),
            ..LivePool::default()
        };
        let network = LiveNetwork {
            name: "lan".into(),
            project: "lab".into(),
            bridge: "vmbr0".into(),
            ..LiveNetwork::default()
        };
        let facts = HostFacts {
            pools: vec![pool.clone()],
            networks: vec![network.clone()],
            ..HostFacts::default()
        };
        let live = to_live_state(&config(), "local", &facts);
        assert_eq!((live.pools, live.networks), (vec![pool], vec![network]));
    }
}
