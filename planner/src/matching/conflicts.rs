//! Names the config wants that the host has given to interfaces vmctl did not make.
//!
//! A network's bridge, a VLAN's own bridge (`<bridge>v<id>`, where the kernel has no
//! VLAN filtering) or gateway link (`<bridge>.<id>`, where it has), a VLAN's VXLAN link
//! (`vx<vni>`, where its network spans hosts), and a VM NIC's tap
//! are made under names vmctl derives or the config gives. When an interface of that
//! name exists without the project's mark, apply refuses to touch it (the runtime's
//! `host::net::created`); this finds those cases from a host's facts (the names of
//! its interfaces that are not the project's), so that `plan` says so for that
//! resource before anything is applied. The names come from `vmctl_schema::derive`,
//! the very functions the runtime names the interfaces with.

use std::collections::BTreeSet;

use vmctl_schema::derive::{gateway_link_name, tap_name, vlan_bridge_name, vxlan_name};
use vmctl_schema::Config;

use crate::facts::HostFacts;
use crate::live::{LiveProblem, VlanMode};

/// Every resource of `config` on `host` whose interface name is taken by an interface
/// that is not the project's (`facts.other_links`).
pub fn find(config: &Config, host: &str, facts: &HostFacts) -> Vec<LiveProblem> {
    let others: BTreeSet<&str> = facts.other_links.iter().map(String::as_str).collect();
    let mut problems = Vec::new();
    let networks = config
        .networks
        .iter()
        .filter(|n| n.on_hosts().iter().any(|h| h == host));
    for network in networks {
        let ours = facts.networks.iter().find(|n| n.name == network.name);
        // A bridge of ours under another name is renamed by nothing: it stays, and the
        // configured name is only made when the network is (re)created.
        if others.contains(network.bridge.as_str()) {
            problems.push(LiveProblem {
                resource: format!("network.{}", network.name),
                message: format!(
                    "bridge {} exists and is not vmctl's; pick another `bridge` name or remove it",
                    network.bridge
                ),
                help: format!(
                    "vmctl never adopts, changes or deletes an interface it did not make; \
                     set `bridge` of network {:?} to a free name, or delete {} yourself \
                     (`ip link del {}`) if it is a leftover",
                    network.name, network.bridge, network.bridge
                ),
            });
        }
        let mode = ours.and_then(|n| n.mode);
        for vlan in config.vlans.iter().filter(|v| v.network == network.name) {
            let tunnel = vlan.vni.filter(|_| network.spans_hosts()).map(vxlan_name);
            if let Some(tunnel) = tunnel.filter(|t| others.contains(t.as_str())) {
                problems.push(LiveProblem {
                    resource: format!("vlan.{}", vlan.name),
                    message: format!(
                        "interface {tunnel} exists and is not vmctl's; VLAN {:?} needs that name for its VXLAN (VNI {})",
                        vlan.name,
                        vlan.vni.unwrap_or_default()
                    ),
                    help: format!(
                        "vmctl never adopts an interface it did not make: remove {tunnel}, or \
                         give VLAN {:?} another `vni`",
                        vlan.name
                    ),
                });
            }
            // A gateway is on its `gateway-host` only (on a network on one host: there).
            let gateway_here =
                vlan.gateway.is_some() && vlan.gateway_host.as_deref().is_none_or(|h| h == host);
            let name = match mode {
                Some(VlanMode::Filtering) if gateway_here => {
                    gateway_link_name(&network.bridge, vlan.id)
                }
                Some(VlanMode::Filtering) => continue,
                Some(VlanMode::BridgePerVlan) | None => vlan_bridge_name(&network.bridge, vlan.id),
            };
            if others.contains(name.as_str()) {
                problems.push(LiveProblem {
                    resource: format!("vlan.{}", vlan.name),
                    message: format!(
                        "interface {name} exists and is not vmctl's; VLAN {:?} needs that name",
                        vlan.name
                    ),
                    help: format!(
                        "vmctl never adopts an interface it did not make: remove {name}, or \
                         give network {:?} another `bridge` name",
                        network.name
                    ),
                });
            }
        }
    }
    for vm in config.vms.iter().filter(|v| v.host == host) {
        for nic in 0..vm.nics.len() {
            let tap = tap_name(&config.project, &vm.name, nic);
            if others.contains(tap.as_str()) {
                problems.push(LiveProblem {
                    resource: format!("vm.{}", vm.name),
                    message: format!(
                        "tap {tap} of NIC {nic} exists and is not vmctl's; VM {:?} needs that name",
                        vm.name
                    ),
                    help: format!("vmctl never adopts an interface it did not make: remove {tap}"),
                });
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::LiveNetwork;
    use vmctl_schema::{Network, Vlan};

    fn config() -> Config {
        Config {
            project: "lab".into(),
            hosts: Vec::new(),
            networks: vec![
                Network {
                    name: "lan".into(),
                    host: "local".into(),
                    hosts: Vec::new(),
                    bridge: "br0".into(),
                    uplink: None,
                },
                Network {
                    name: "dmz".into(),
                    host: "local".into(),
                    hosts: Vec::new(),
                    bridge: "vmbr1".into(),
                    uplink: None,
                },
            ],
            vlans: vec![Vlan {
                name: "edge".into(),
                network: "dmz".into(),
                id: 7,
                vni: None,
                gateway: None,
                subnet: None,
                gateway_host: None,
                dhcp: false,
                nat: false,
                nat_via: None,
                route_to: Vec::new(),
            }],
            pools: Vec::new(),
            volumes: Vec::new(),
            vms: Vec::new(),
        }
    }

    #[test]
    fn names_taken_by_others_are_problems_of_their_resource() {
        let mut facts = HostFacts {
            other_links: vec!["lo".into(), "br0".into(), "vmbr1v7".into()],
            ..HostFacts::default()
        };
        let problems = find(&config(), "local", &facts);
        let resources: Vec<&str> = problems.iter().map(|p| p.resource.as_str()).collect();
        assert_eq!(resources, ["network.lan", "vlan.edge"]);
        assert!(problems[0]
            .message
            .contains("bridge br0 exists and is not vmctl's; pick another `bridge` name"));
        // Another host's config is not this host's problem.
        assert!(find(&config(), "elsewhere", &facts).is_empty());
        // On a VLAN-filtering bridge of ours the VLAN needs no bridge of its own.
        facts.networks.push(LiveNetwork {
            name: "dmz".into(),
            project: "lab".into(),
            bridge: "vmbr1".into(),
            uplink: None,
            mode: Some(VlanMode::Filtering),
            bridge_drift: Vec::new(),
        });
        let problems = find(&config(), "local", &facts);
        assert_eq!(problems.len(), 1);
    }
}
