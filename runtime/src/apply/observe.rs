//! `observe`: a host's [`LiveState`] rebuilt from the host itself, and every host of a
//! config observed in parallel.
//!
//! The host says what it has with no config ([`crate::host::facts`]); this module
//! matches those facts to the config, with no I/O ([`to_live_state`]):
//!
//! - A host's VLAN table holds ids, not names: live VLANs are named from the config by
//!   `(network, id)`; one the config no longer has is named `<network>/<id>` (a name
//!   the config language cannot spell, so it never matches a configured VLAN by
//!   accident).
//! - Interfaces the config wants under names the host has given to interfaces vmctl did
//!   not make are that resource's problem (`host::net::conflicts`).
//! - A running VM's taps that are gone or off their VLAN are its tap drift
//!   (`host::net::drift`).
//!
//! A record that cannot be read (a VM's `spec.json`, a pool's or volume's marker, a
//! stray file under `vms/`) arrives as an [`Unreadable`] with its repair hint, and
//! everything else on the host is observed as usual.

use std::collections::BTreeMap;

use vmctl_planner::live::LiveVlan;
use vmctl_planner::{LiveFile, LiveState};
use vmctl_schema::{Config, Host};

use vmctl_planner::facts::{FactsRequest, HostFacts, TapFact};

use crate::host::facts::FactsError;
use crate::hosts::Fleet;

pub use crate::host::facts::euid;

/// Errors of observing a host.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("cannot observe host {host:?}")]
    Facts {
        host: String,
        #[source]
        source: FactsError,
    },
    #[error("the config's host {host:?} is not among the hosts reached for this run")]
    NotReached { host: String },
}

/// Everything of `config.project` on `host` (reached as `reached`), with the VMs'
/// processes asked whether they run; also the host's facts, for status.
pub fn observe_host_state(
    config: &Config,
    host: &Host,
    reached: &dyn crate::hosts::Host,
) -> Result<(LiveState, HostFacts), LiveError> {
    let facts = reached
        .facts(&FactsRequest::for_host(config, host))
        .map_err(|source| LiveError::Facts {
            host: host.name.clone(),
            source,
        })?;
    Ok((to_live_state(config, &host.name, &facts), facts))
}

/// The planner's view of what `host` reported, matched to `config` (no I/O).
pub fn to_live_state(config: &Config, host: &str, facts: &HostFacts) -> LiveState {
    let seen = facts;
    let vlan_name = |network: &str, id: u16| {
        config
            .vlans
            .iter()
            .find(|v| v.network == network && v.id == id)
            .map_or_else(|| format!("{network}/{id}"), |v| v.name.clone())
    };
    let mut live = LiveState {
        pools: seen.pools.clone(),
        volumes: seen.volumes.clone(),
        networks: seen.networks.clone(),
        vlans: seen
            .vlans
            .iter()
            .map(|v| LiveVlan {
                name: vlan_name(&v.network, v.id),
                project: v.project.clone(),
                network: v.network.clone(),
                id: v.id,
                gateway: v.gateway.clone(),
                vxlan: crate::host::net::vxlan::tunnel_of(seen, &v.network, v.id),
            })
            .collect(),
        vms: facts.vms.clone(),
        unreadable: facts.unreadable.clone(),
        reported: facts.reported,
        problems: crate::host::net::conflicts::find(config, host, seen),
        netns: facts.netns.clone(),
    };
    for vm in &mut live.vms {
        vm.tap_drift = crate::host::net::drift::tap_drift(config, vm, seen);
    }
    live
}

/// One host as observed: the planner's view, and the taps behind it for `status`.
#[derive(Debug, Clone)]
pub struct HostSeen {
    pub live: LiveState,
    pub taps: Vec<TapFact>,
}

impl HostSeen {
    /// The planner's view of `facts`, keeping the taps.
    pub fn of(live: LiveState, facts: HostFacts) -> HostSeen {
        HostSeen {
            live,
            taps: facts.taps,
        }
    }
}

/// Every host of `config`, observed in parallel through `fleet`. All errors are
/// returned together.
pub fn observe(config: &Config, fleet: &Fleet) -> Result<LiveFile, Vec<LiveError>> {
    observe_detailed(config, fleet).map(into_live_file)
}

/// The planner's view of observed hosts.
pub fn into_live_file(hosts: BTreeMap<String, HostSeen>) -> LiveFile {
    LiveFile {
        hosts: hosts
            .into_iter()
            .map(|(name, seen)| (name, seen.live))
            .collect(),
        ..LiveFile::default()
    }
}

/// The planner's view of observed hosts, keeping the details.
pub fn live_file(hosts: &BTreeMap<String, HostSeen>) -> LiveFile {
    LiveFile {
        hosts: hosts
            .iter()
            .map(|(name, seen)| (name.clone(), seen.live.clone()))
            .collect(),
        ..LiveFile::default()
    }
}

/// Every host of `config`, observed in parallel, with the details; by host name. All
/// errors are returned together.
pub fn observe_detailed(
    config: &Config,
    fleet: &Fleet,
) -> Result<BTreeMap<String, HostSeen>, Vec<LiveError>> {
    let hosts: Vec<&Host> = config
        .hosts
        .iter()
        .filter(|h| !fleet.excludes(&h.name))
        .collect();
    // At most `fleet.parallelism()` hosts at once, the results in the config's order.
    let seen = crate::hosts::in_parallel(&hosts, fleet.parallelism(), |host| {
        let reached = fleet.get(&host.name).ok_or_else(|| LiveError::NotReached {
            host: host.name.clone(),
        })?;
        observe_host_state(config, host, reached).map(|(live, facts)| HostSeen::of(live, facts))
    });
    let results = hosts.iter().map(|h| h.name.clone()).zip(seen);
    let mut hosts = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, result) in results {
        match result {
            Ok(seen) => {
                hosts.insert(name, seen);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(hosts)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use vmctl_planner::facts::VlanFact;
    use vmctl_schema::Vlan;

    /// Project "lab" with VLAN "front" (network "lan", id 100) and nothing else.
    pub(crate) fn config() -> Config {
        Config {
            project: "lab".into(),
            hosts: Vec::new(),
            networks: Vec::new(),
            vlans: vec![Vlan {
                name: "front".into(),
                network: "lan".into(),
                id: 100,
                vni: None,
                gateway: None,
                gateway_host: None,
            }],
            pools: Vec::new(),
            volumes: Vec::new(),
            vms: Vec::new(),
        }
    }

    #[test]
    fn vlans_are_named_from_the_config_by_network_and_id() {
        let vlan = |network: &str, id| VlanFact {
            project: "lab".into(),
            network: network.into(),
            id,
            gateway: None,
        };
        let facts = HostFacts {
            vlans: vec![vlan("lan", 100), vlan("lan", 200), vlan("wan", 100)],
            ..HostFacts::default()
        };
        let live = to_live_state(&config(), "local", &facts);
        let names: Vec<_> = live.vlans.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["front", "lan/200", "wan/100"]);
    }
}
