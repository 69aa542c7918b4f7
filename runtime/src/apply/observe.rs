//! `observe`: a host's [`LiveState`] rebuilt from the host itself — pool and volume
//! markers, bridges and VLANs over netlink, the VMs' state dirs and control sockets —
//! and every host of a config observed in parallel.
//!
//! A host's VLAN table holds ids, not names: live VLANs are named from the config by
//! `(network, id)`; one the config no longer has is named `<network>/<id>` (a name the
//! config language cannot spell, so it never matches a configured VLAN by accident).

use std::path::Path;

use vmctl_planner::live::{LiveNetwork, LivePool, LiveVlan, LiveVolume};
use vmctl_planner::{LiveFile, LiveState};
use vmctl_schema::{Config, Host, PoolKind};

use crate::host::observe::{observe_host, HostObservation, HostSpec, ObserveError};
use crate::host::pool;
use crate::vms::{self, ObservedVm, VmError};

/// Errors of observing a host.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("host {host:?} is reached over ssh ({ssh}), and remote hosts are not built yet: vmctl only manages this machine so far")]
    RemoteHost { host: String, ssh: String },
    #[error("cannot observe host {host:?}")]
    Observe {
        host: String,
        #[source]
        source: ObserveError,
    },
    #[error("cannot observe the VMs of host {host:?}")]
    ObserveVms {
        host: String,
        #[source]
        source: VmError,
    },
}

/// Refuses hosts this build cannot reach (those with `ssh`).
pub fn check_local(host: &Host) -> Result<(), LiveError> {
    match &host.ssh {
        Some(ssh) => Err(LiveError::RemoteHost {
            host: host.name.clone(),
            ssh: ssh.clone(),
        }),
        None => Ok(()),
    }
}

/// Everything of `config.project` on `host`, with the VMs' processes asked whether they
/// run; also the raw observation, for status and the executor.
pub fn observe_host_state(
    config: &Config,
    host: &Host,
) -> Result<(LiveState, HostObservation, Vec<ObservedVm>), LiveError> {
    check_local(host)?;
    let project = config.project.as_str();
    let pool_paths: Vec<&Path> = config
        .pools
        .iter()
        .filter(|p| p.host == host.name)
        .map(|p| p.path.as_path())
        .collect();
    let spec = HostSpec {
        project,
        state_dir: &host.state_dir,
        netns: host.netns.as_deref(),
        pool_paths: &pool_paths,
    };
    let (observation, found_vms) = std::thread::scope(|scope| {
        let found = scope.spawn(|| vms::observe_vms(&host.state_dir, project));
        let observation = observe_host(&spec);
        let found = found
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (observation, found)
    });
    let observation = observation.map_err(|source| LiveError::Observe {
        host: host.name.clone(),
        source,
    })?;
    let found_vms = found_vms.map_err(|source| LiveError::ObserveVms {
        host: host.name.clone(),
        source,
    })?;
    let mut live = to_live_state(config, &observation, &found_vms);
    live.problems = crate::host::net::conflicts::find(config, &host.name, &observation);
    for vm in &mut live.vms {
        vm.tap_drift = crate::host::net::drift::tap_drift(config, vm, &observation);
    }
    Ok((live, observation, found_vms))
}

/// Maps an observation into the planner's shape.
pub fn to_live_state(config: &Config, seen: &HostObservation, found: &[ObservedVm]) -> LiveState {
    let vlan_name = |network: &str, id: u16| {
        config
            .vlans
            .iter()
            .find(|v| v.network == network && v.id == id)
            .map_or_else(|| format!("{network}/{id}"), |v| v.name.clone())
    };
    LiveState {
        pools: seen
            .pools
            .iter()
            .map(|p| LivePool {
                name: p.name.clone(),
                project: p.project.clone(),
                kind: match p.kind {
                    pool::PoolKind::Dir => PoolKind::Dir,
                },
                path: p.path.clone(),
            })
            .collect(),
        volumes: seen
            .volumes
            .iter()
            .map(|v| LiveVolume {
                name: v.name.clone(),
                project: v.project.clone(),
                pool: v.pool.clone(),
                size: v.size,
                from: v.from.clone(),
                from_digest: v.from_digest.clone(),
                prevent_destroy: v.prevent_destroy,
            })
            .collect(),
        networks: seen
            .networks
            .iter()
            .map(|n| LiveNetwork {
                name: n.name.clone(),
                project: n.project.clone(),
                bridge: n.bridge.clone(),
                uplink: n.uplink.clone(),
            })
            .collect(),
        vlans: seen
            .vlans
            .iter()
            .map(|v| LiveVlan {
                name: vlan_name(&v.network, v.id),
                project: v.project.clone(),
                network: v.network.clone(),
                id: v.id,
                gateway: v.gateway.clone(),
            })
            .collect(),
        vms: found.iter().map(ObservedVm::to_live).collect(),
        problems: Vec::new(),
    }
}

/// Every host of `config`, observed in parallel. All errors are returned together.
pub fn observe(config: &Config) -> Result<LiveFile, Vec<LiveError>> {
    let results: Vec<(String, Result<LiveState, LiveError>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = config
            .hosts
            .iter()
            .map(|host| {
                let handle =
                    scope.spawn(move || observe_host_state(config, host).map(|(live, ..)| live));
                (host.name.clone(), handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| {
                (
                    name,
                    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                )
            })
            .collect()
    });
    let mut live = LiveFile::default();
    let mut errors = Vec::new();
    for (name, result) in results {
        match result {
            Ok(state) => {
                live.hosts.insert(name, state);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(live)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::observe::ObservedVlan;
    use vmctl_schema::Vlan;

    fn config() -> Config {
        Config {
            project: "lab".into(),
            hosts: Vec::new(),
            networks: Vec::new(),
            vlans: vec![Vlan {
                name: "front".into(),
                network: "lan".into(),
                id: 100,
                gateway: None,
            }],
            pools: Vec::new(),
            volumes: Vec::new(),
            vms: Vec::new(),
        }
    }

    #[test]
    fn vlans_are_named_from_the_config_by_network_and_id() {
        let vlan = |network: &str, id| ObservedVlan {
            project: "lab".into(),
            network: network.into(),
            id,
            gateway: None,
        };
        let seen = HostObservation {
            vlans: vec![vlan("lan", 100), vlan("lan", 200), vlan("wan", 100)],
            ..HostObservation::default()
        };
        let live = to_live_state(&config(), &seen, &[]);
        let names: Vec<_> = live.vlans.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["front", "lan/200", "wan/100"]);
    }

    #[test]
    fn remote_hosts_are_refused_plainly() {
        let host = Host {
            name: "far".into(),
            state_dir: "/var/lib/vmctl".into(),
            netns: None,
            cpus: None,
            memory: None,
            reserve_memory: 0.08,
            cpu_overcommit: 1.5,
            ssh: Some("root@far".into()),
        };
        let err = check_local(&host).unwrap_err();
        assert!(
            err.to_string().contains("remote hosts are not built yet"),
            "{err}"
        );
        let mut config = config();
        config.hosts.push(host);
        assert!(observe(&config).is_err());
    }
}
