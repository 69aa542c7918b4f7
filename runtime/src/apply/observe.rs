//! `observe`: a host's [`LiveState`] rebuilt from the host itself — pool and volume
//! markers, bridges and VLANs over netlink, the VMs' state dirs and control sockets —
//! and every host of a config observed in parallel.
//!
//! A record that cannot be read (a VM's `spec.json`, a pool's or volume's marker, a
//! stray file under `vms/`) is that resource's problem: it becomes a
//! [`Unreadable`] of the live state, with a help line for the user running vmctl, and
//! everything else on the host is observed as usual.
//!
//! A host's VLAN table holds ids, not names: live VLANs are named from the config by
//! `(network, id)`; one the config no longer has is named `<network>/<id>` (a name the
//! config language cannot spell, so it never matches a configured VLAN by accident).

use std::collections::BTreeMap;
use std::path::Path;

use vmctl_planner::live::{LiveNetwork, LivePool, LiveVlan, LiveVolume, Unreadable};
use vmctl_planner::{LiveFile, LiveState, ResourceKind};
use vmctl_schema::{Config, Host, PoolKind};

use crate::host::observe::{observe_host, HostObservation, HostSpec, ObserveError};
use crate::host::pool;
use crate::host::records::{BadRecord, Cause};
use crate::host::volume;
use crate::vms::{self, ObservedVm, VmError, VmPaths};

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
    #[error("cannot observe the network namespace of host {host:?}")]
    Netns {
        host: String,
        #[source]
        source: crate::host::net::netns::NetnsError,
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
    let mut observation = observation.map_err(|source| LiveError::Observe {
        host: host.name.clone(),
        source,
    })?;
    let (found_vms, bad_vms) = found_vms.map_err(|source| LiveError::ObserveVms {
        host: host.name.clone(),
        source,
    })?;
    let bad_vms = bad_vms.into_iter().map(|b| (ResourceKind::Vm, b));
    observation.unreadable.extend(bad_vms);
    let mut live = to_live_state(config, host, &observation, &found_vms);
    if let Some(name) = host.netns.as_deref() {
        live.netns =
            crate::host::net::netns::observe(&host.state_dir, project, name).map_err(|source| {
                LiveError::Netns {
                    host: host.name.clone(),
                    source,
                }
            })?;
    }
    live.problems = crate::host::net::conflicts::find(config, &host.name, &observation);
    for vm in &mut live.vms {
        vm.tap_drift = crate::host::net::drift::tap_drift(config, vm, &observation);
    }
    Ok((live, observation, found_vms))
}

/// Maps an observation of `host` into the planner's shape.
pub fn to_live_state(
    config: &Config,
    host: &Host,
    seen: &HostObservation,
    found: &[ObservedVm],
) -> LiveState {
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
        unreadable: seen
            .unreadable
            .iter()
            .map(|(kind, bad)| unreadable(config, host, *kind, bad))
            .collect(),
        reported: crate::host::proc::host_report(),
        problems: Vec::new(),
        // Filled in by `observe_host_state`, which reads the namespace's marker.
        netns: None,
    }
}

/// A bad record as the planner shows it: named (a pool by the config, from its
/// directory, when the index did not name it), with what to do.
fn unreadable(config: &Config, host: &Host, kind: ResourceKind, bad: &BadRecord) -> Unreadable {
    let mut name = bad.name.clone();
    if name.is_empty() {
        let dir = bad.path.parent().unwrap_or(&bad.path);
        name = config
            .pools
            .iter()
            .find(|p| p.host == host.name && p.path == dir)
            .map_or_else(|| dir.display().to_string(), |p| p.name.clone());
    }
    Unreadable {
        kind,
        help: repair_help(config, host, kind, &name, bad, euid()),
        name,
        project: config.project.clone(),
        path: bad.path.clone(),
        error: bad.error.clone(),
    }
}

/// The effective uid vmctl runs as: a hint says "run it as root" only when it is not.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// What the user running vmctl (as `euid`) can do about `bad`, the record of `kind`
/// `name`.
fn repair_help(
    config: &Config,
    host: &Host,
    kind: ResourceKind,
    name: &str,
    bad: &BadRecord,
    euid: u32,
) -> String {
    let path = bad.path.display();
    let what = format!("{kind} {name:?}");
    match bad.cause {
        Cause::Denied if euid == 0 => format!(
            "vmctl runs as root and still cannot read {path}: check what denies it (`ls -l {path}`, a read-only or network mount, an LSM policy); until then vmctl leaves {what} alone"
        ),
        Cause::Denied => format!(
            "vmctl reads the host's state dir and pools as root: run it as root (now it runs as uid {euid})"
        ),
        Cause::Newer => format!(
            "{path} was written by a newer vmctl: manage this host with that vmctl (or a newer one); this one leaves {what} alone"
        ),
        Cause::NotRegular => format!(
            "vmctl never follows or changes a symlink or other non-regular file in a pool: remove {path} (or move it away) and apply again to create {what}; until then vmctl leaves it alone"
        ),
        Cause::Stray => format!(
            "{path} is not a VM state dir vmctl made: move it away or remove it; vmctl leaves {what} alone until then"
        ),
        Cause::Corrupt | Cause::Io => match kind {
            ResourceKind::Vm => {
                let paths = VmPaths::new(&host.state_dir, &config.project, name);
                format!(
                    "restore {path} from a backup, or make vmctl forget the VM: {}; the next apply creates it anew. Until then vmctl leaves {what} alone",
                    forget_vm(&paths, vms::vmm_pid(&paths))
                )
            }
            ResourceKind::Volume => {
                let pool = bad.path.parent().unwrap_or(&bad.path);
                format!(
                    "restore the marker {path} (JSON: {{\"project\": {:?}, \"name\": {name:?}}}), or make vmctl forget the volume: move {} and the marker out of the pool; the next apply then makes a new volume in its place. Until then vmctl leaves {what} alone",
                    config.project,
                    volume::volume_path(pool, name).display()
                )
            }
            ResourceKind::Pool => format!(
                "restore the marker {path} (JSON: {{\"project\": {:?}, \"name\": {name:?}, \"kind\": \"dir\"}}) or remove it and apply again (vmctl then adopts the directory); until then vmctl leaves {what} and its volumes alone",
                config.project
            ),
            ResourceKind::Netns | ResourceKind::Network | ResourceKind::Vlan => {
                format!("check {path}; until then vmctl leaves {what} alone")
            }
        },
    }
}

/// How to make vmctl forget the VM at `paths` whose VMM is `vmm` (the holder of its
/// lock, never the pid file's word: that may name any process).
fn forget_vm(paths: &VmPaths, vmm: Option<u32>) -> String {
    let dir = paths.dir.display();
    match vmm {
        Some(pid) => format!(
            "its VMM still runs (pid {pid}, the holder of {}): stop it (`kill {pid}`), then remove {dir}",
            paths.lock.display()
        ),
        None => format!(
            "no VMM runs for it (none holds {}): remove {dir}",
            paths.lock.display()
        ),
    }
}

/// One host as observed: the planner's view and the details behind it (volume
/// allocation, taps, VMM pids) for `status`.
#[derive(Debug, Clone)]
pub struct HostSeen {
    pub live: LiveState,
    pub observation: HostObservation,
    pub vms: Vec<ObservedVm>,
}

/// Every host of `config`, observed in parallel. All errors are returned together.
pub fn observe(config: &Config) -> Result<LiveFile, Vec<LiveError>> {
    observe_detailed(config).map(into_live_file)
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
pub fn observe_detailed(config: &Config) -> Result<BTreeMap<String, HostSeen>, Vec<LiveError>> {
    let results: Vec<(String, Result<HostSeen, LiveError>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = config
            .hosts
            .iter()
            .map(|host| {
                let handle = scope.spawn(move || {
                    observe_host_state(config, host).map(|(live, observation, vms)| HostSeen {
                        live,
                        observation,
                        vms,
                    })
                });
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
        let live = to_live_state(&config(), &host("local", None), &seen, &[]);
        let names: Vec<_> = live.vlans.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["front", "lan/200", "wan/100"]);
    }

    fn host(name: &str, ssh: Option<&str>) -> Host {
        Host {
            name: name.into(),
            // Never a real state dir: the hints ask the host who holds a VM's lock, and a
            // lab running on this machine must not change what a test sees.
            state_dir: "/nonexistent/vmctl-test/state".into(),
            netns: None,
            cpus: None,
            memory: None,
            reserve_memory: 0.08,
            cpu_overcommit: 1.5,
            ssh: ssh.map(Into::into),
        }
    }

    #[test]
    fn repair_hints_fit_the_cause_and_the_user() {
        let config = config();
        let host = host("local", None);
        let bad = |cause| BadRecord {
            name: "web-1".into(),
            path: "/nonexistent/vmctl-test/state/lab/vms/web-1/spec.json".into(),
            error: "boom".into(),
            cause,
        };
        let help =
            |kind, cause, euid| repair_help(&config, &host, kind, "web-1", &bad(cause), euid);
        let vm = ResourceKind::Vm;
        // Root is never told to run as root.
        assert!(!help(vm, Cause::Denied, 0).contains("run it as root"));
        assert!(help(vm, Cause::Denied, 0).contains("runs as root and still cannot read"));
        assert!(help(vm, Cause::Denied, 1000).contains("run it as root (now it runs as uid 1000)"));
        let corrupt = help(vm, Cause::Corrupt, 0);
        assert!(
            corrupt.contains("no VMM runs for it (none holds /nonexistent/vmctl-test/state/lab/vms/web-1/vmm.lock): remove /nonexistent/vmctl-test/state/lab/vms/web-1;"),
            "{corrupt}"
        );
        assert!(!corrupt.contains("vmm.pid"), "{corrupt}");
        assert!(help(vm, Cause::Newer, 0).contains("written by a newer vmctl"));
        assert!(help(vm, Cause::Stray, 0).contains("not a VM state dir vmctl made"));
        let volume = help(ResourceKind::Volume, Cause::Corrupt, 0);
        assert!(volume.contains("restore the marker"), "{volume}");
        assert!(
            volume.contains("/nonexistent/vmctl-test/state/lab/vms/web-1/web-1.raw"),
            "{volume}"
        );
        let pool = help(ResourceKind::Pool, Cause::Corrupt, 0);
        assert!(pool.contains("\"kind\": \"dir\""), "{pool}");
    }

    #[test]
    fn forgetting_a_vm_names_its_lock_holder_never_the_pid_file() {
        let paths = VmPaths::new(Path::new("/s"), "lab", "web-1");
        let running = forget_vm(&paths, Some(4242));
        assert!(
            running.contains("its VMM still runs (pid 4242, the holder of /s/lab/vms/web-1/vmm.lock): stop it (`kill 4242`), then remove /s/lab/vms/web-1"),
            "{running}"
        );
        let gone = forget_vm(&paths, None);
        assert!(gone.starts_with("no VMM runs for it"), "{gone}");
        assert!(!gone.contains("kill"), "{gone}");
    }

    #[test]
    fn remote_hosts_are_refused_plainly() {
        let host = host("far", Some("root@far"));
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
