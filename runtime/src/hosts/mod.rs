//! How vmctl reaches the hosts of a config: one interface, [`Host`], for everything a
//! run does on a host — say what it has ([`Host::facts`]), take its lock, sweep what an
//! interrupted apply left, carry out a step, tidy after a destroy — and a [`Fleet`]
//! that holds one per host of the config for the whole run.
//!
//! Every call takes and returns plain serde data (`FactsRequest`/`HostFacts`,
//! `StepOrder`), so a host over SSH answers the same calls through its agent as this
//! machine does in-process ([`LocalHost`]). Which one a config's host gets is decided
//! once, in [`Fleet::connect`].

mod local;
pub mod remote;
pub mod stream;
pub mod wire;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use vmctl_schema::Config;

use crate::apply::{StepError, StepNote, StepOrder};
use crate::host::facts::{FactsError, FactsRequest, HostFacts};
use crate::host::lock::LockError;

pub use local::LocalHost;
pub use remote::{Link, LinkError, RemoteHost};

/// One host, wherever it is.
pub trait Host: Send + Sync {
    /// The host's name in the config.
    fn name(&self) -> &str;

    /// What the host has of the request's project.
    fn facts(&self, request: &FactsRequest) -> Result<HostFacts, FactsError>;

    /// Takes the host's lock for `project`, waiting up to `timeout`; it is held until
    /// the returned value is dropped, or the process holding it dies.
    fn lock(&self, project: &str, timeout: Duration) -> Result<HeldLock, LockError>;

    /// Before a run's steps: removes what an interrupted apply of `project` left —
    /// taps of VMs that do not run, temp and partial files in `pools`. Best effort: a
    /// pool that cannot be swept fails its own steps with the reason.
    fn sweep(&self, project: &str, pools: &[PathBuf]);

    /// Carries out one step of `project`; what it has to tell the user.
    fn run(
        &self,
        project: &str,
        order: &StepOrder,
        run: &RunSettings<'_>,
    ) -> Result<Option<StepNote>, StepError>;

    /// After a complete destroy: removes the project's empty `vms/` and `pools/` dirs.
    fn tidy(&self, project: &str);

    /// Where this host has the file at `path` on this machine (a kernel, an initrd, a
    /// base image the config names): `None` when it reads `path` itself (this
    /// machine); a remote host gets a copy in its image cache, once per content.
    fn ship(&self, path: &Path) -> Result<Option<PathBuf>, StepError>;
}

/// Fills in where `host` has the files `order` needs that the config names by their
/// paths on this machine (see [`Host::ship`]).
pub fn ship_files(host: &dyn Host, order: &mut StepOrder) -> Result<(), StepError> {
    use vmctl_planner::{Phase, Resource};
    match (&order.resource, order.phase) {
        (Resource::Vm(vm), Phase::Create | Phase::Start) => {
            order.places.kernel = host.ship(&vm.kernel)?;
            order.places.initrd = match &vm.initrd {
                Some(initrd) => host.ship(initrd)?,
                None => None,
            };
        }
        (Resource::Volume(volume), Phase::Create) => {
            order.places.image = match &volume.from {
                Some(from) => host.ship(from)?,
                None => None,
            };
        }
        _ => {}
    }
    Ok(())
}

/// What every step of a run shares.
#[derive(Debug, Clone, Copy)]
pub struct RunSettings<'a> {
    /// How long a VM gets to shut down before it is killed.
    pub stop_timeout: Duration,
    /// The run's cancel flag: long work inside a step (copying or hashing a base image)
    /// stops when it is set.
    pub cancel: &'a AtomicBool,
}

/// A held host lock, whatever holds it (an open file here; an agent's connection for a
/// remote host). Dropping it releases the lock.
pub struct HeldLock {
    _held: Box<dyn Send>,
}

impl HeldLock {
    pub fn new(held: impl Send + 'static) -> HeldLock {
        HeldLock {
            _held: Box::new(held),
        }
    }
}

impl std::fmt::Debug for HeldLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeldLock")
    }
}

/// Errors of reaching a host.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("host {host:?} is reached over ssh ({ssh}), and remote hosts are not built yet: vmctl only manages this machine so far")]
    RemoteHost { host: String, ssh: String },
}

/// A host for each host of a config, by name, for one run.
pub struct Fleet {
    hosts: BTreeMap<String, Box<dyn Host>>,
    /// Hosts observed (and applied) at once.
    parallelism: usize,
    /// Hosts of the config this run leaves out (`--exclude-host`): never reached.
    excluded: Vec<String>,
}

/// Hosts observed and applied at once unless the caller says otherwise
/// (`--host-parallelism`).
pub const HOST_PARALLELISM: usize = 16;

impl Fleet {
    /// Reaches every host of `config` but the `excluded` ones; `vmctl` is the binary
    /// that runs VMs on this machine. Every host that cannot be reached is an error,
    /// all of them together.
    pub fn connect(
        config: &Config,
        vmctl: &Path,
        excluded: &[String],
    ) -> Result<Fleet, Vec<ConnectError>> {
        let mut hosts: BTreeMap<String, Box<dyn Host>> = BTreeMap::new();
        let mut errors = Vec::new();
        for host in config.hosts.iter().filter(|h| !excluded.contains(&h.name)) {
            match &host.ssh {
                Some(ssh) => errors.push(ConnectError::RemoteHost {
                    host: host.name.clone(),
                    ssh: ssh.clone(),
                }),
                None => {
                    hosts.insert(host.name.clone(), Box::new(LocalHost::new(host, vmctl)));
                }
            }
        }
        if errors.is_empty() {
            Ok(Fleet {
                hosts,
                parallelism: HOST_PARALLELISM,
                excluded: excluded.to_vec(),
            })
        } else {
            Err(errors)
        }
    }

    /// A fleet of the given hosts (tests, and callers that pick their own).
    pub fn of(hosts: Vec<Box<dyn Host>>) -> Fleet {
        Fleet {
            hosts: hosts
                .into_iter()
                .map(|h| (h.name().to_owned(), h))
                .collect(),
            parallelism: HOST_PARALLELISM,
            excluded: Vec::new(),
        }
    }

    /// Whether this run leaves host `name` out (`--exclude-host`).
    pub fn excludes(&self, name: &str) -> bool {
        self.excluded.iter().any(|e| e == name)
    }

    /// Observes (and applies) at most `hosts` hosts at once (at least 1).
    pub fn with_parallelism(mut self, hosts: usize) -> Fleet {
        self.parallelism = hosts.max(1);
        self
    }

    /// How many hosts are observed (and applied) at once.
    pub fn parallelism(&self) -> usize {
        self.parallelism
    }

    /// The host named `name`.
    pub fn get(&self, name: &str) -> Option<&dyn Host> {
        self.hosts.get(name).map(|h| &**h)
    }

    /// Every host, by name.
    pub fn iter(&self) -> impl Iterator<Item = &dyn Host> {
        self.hosts.values().map(|h| &**h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        vmctl_schema::load_str("c.kdl", text)
            .expect("config")
            .config
    }

    #[test]
    fn a_host_without_ssh_is_this_machine() {
        let config = config("project \"lab\"\nhost \"local\"\n");
        let fleet = Fleet::connect(&config, Path::new("/nonexistent/vmctl"), &[]).expect("fleet");
        let names: Vec<_> = fleet.iter().map(|h| h.name()).collect();
        assert_eq!(names, ["local"]);
        assert!(fleet.get("local").is_some());
        assert!(fleet.get("far").is_none());
    }

    #[test]
    fn remote_hosts_are_refused_plainly_each_of_them() {
        let config = config(
            "project \"lab\"\nhost \"local\"\nhost \"far\" { ssh \"root@far\"; }\nhost \"farther\" { ssh \"root@farther\"; }\n",
        );
        let Err(errors) = Fleet::connect(&config, Path::new("/nonexistent/vmctl"), &[]) else {
            panic!("remote hosts were reached");
        };
        let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(texts[0].contains("\"far\""), "{texts:?}");
        assert!(
            texts[0].contains("remote hosts are not built yet"),
            "{texts:?}"
        );
    }
}
