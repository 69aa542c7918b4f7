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
pub mod ssh;
pub mod stream;
pub mod wire;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use vmctl_planner::facts::{FactsRequest, HostFacts};
use vmctl_schema::Config;

use crate::apply::{StepError, StepNote, StepOrder};
use crate::host::facts::FactsError;
use crate::host::import::{ImportError, ImportOrder};
use crate::host::lock::LockError;
use crate::host::volume_transfer::{Chunk, ReceivePart};
use crate::vms::migrate::{MigrationAnswer, MigrationCall};
use crate::vms::snapshot_call::{SnapshotAnswer, SnapshotCall, SnapshotFailure};

pub use local::LocalHost;
pub use remote::{ConsoleView, Link, LinkError, RemoteHost};

/// One host, wherever it is.
pub trait Host: Send + Sync {
    /// The host's name in the config.
    fn name(&self) -> &str;

    /// What the host has of the request's project.
    fn facts(&self, request: &FactsRequest) -> Result<HostFacts, FactsError>;

    /// Takes the host's lock for `project`, waiting up to `timeout`; it is held until
    /// the returned value is dropped, or the process holding it dies. With `origin`
    /// (the config's path), records where the project comes from
    /// ([`crate::host::origin`]).
    fn lock(
        &self,
        project: &str,
        origin: Option<&Path>,
        timeout: Duration,
    ) -> Result<HeldLock, LockError>;

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

    /// The next run of data of volume `name` of `project` in the pool at `pool`, from
    /// `offset` on, at most `max` bytes (and a chunk): the source side of moving a
    /// volume to another host ([`crate::host::volume_transfer`]).
    fn read_volume(
        &self,
        project: &str,
        pool: &Path,
        name: &str,
        offset: u64,
        max: u64,
    ) -> Result<Chunk, StepError>;

    /// One thing this host does for a VM of `project` moving to or from it
    /// ([`crate::vms::migrate`]).
    fn migration(&self, project: &str, call: &MigrationCall) -> Result<MigrationAnswer, StepError>;

    /// A `vmctl snapshot` command on a VM of `project` here
    /// ([`crate::vms::snapshot_call`]): its answer or its failure there (`Err`: the host
    /// could not be asked).
    fn snapshot(
        &self,
        project: &str,
        call: &SnapshotCall,
    ) -> Result<Result<SnapshotAnswer, SnapshotFailure>, StepError>;

    /// One part of receiving volume `name` of `project` into the pool at `pool` from
    /// another host: the target side of moving a volume.
    fn receive_volume(
        &self,
        project: &str,
        pool: &Path,
        name: &str,
        part: &ReceivePart,
    ) -> Result<(), StepError>;

    /// Adopts the pool directory or volume file `order` names into `project` (the
    /// caller holds the host's lock; see [`crate::host::import`]): the path adopted.
    fn import(&self, project: &str, order: &ImportOrder) -> Result<PathBuf, ImportError>;

    /// Where this host has the file at `path` on this machine (a kernel, an initrd, a
    /// base image the config names): `None` when it reads `path` itself (this
    /// machine); a remote host gets a copy in its image cache, once per content.
    fn ship(&self, path: &Path) -> Result<Option<PathBuf>, StepError>;

    /// Whether [`Host::ship`] would send the file at `path` (the host lacks its
    /// content): its size when so. This machine lacks nothing.
    fn lacks(&self, _path: &Path) -> Result<Option<u64>, StepError> {
        Ok(None)
    }

    /// The command that shows VM `vm`'s console there, when it is not this machine (the
    /// caller shows a local VM's console itself); `tty` when a user's terminal is to be
    /// carried.
    fn console_command(
        &self,
        _project: &str,
        _vm: &str,
        _view: &ConsoleView,
        _tty: bool,
    ) -> Option<std::process::Command> {
        None
    }
}

/// `f` of each of `items`, at most `parallelism` at once (threads that each take the
/// next item); the results in the order of `items`. A panic in `f` is the caller's.
pub fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    parallelism: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..parallelism.min(items.len()).max(1))
            .map(|_| {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(item) = items.get(i) else {
                        break;
                    };
                    let result = f(item);
                    if let Ok(mut results) = results.lock() {
                        results.push((i, result));
                    }
                })
            })
            .collect();
        for worker in workers {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Fills in where `host` has the files `order` needs that the config names by their
/// paths on this machine (see [`Host::ship`]).
pub fn ship_files(host: &dyn Host, order: &mut StepOrder) -> Result<(), StepError> {
    use vmctl_planner::{Phase, Resource};
    match (&order.resource, order.phase) {
        (Resource::Vm(vm), Phase::Create | Phase::Start | Phase::Migrate) => {
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
    #[error(transparent)]
    Ssh(#[from] Box<ssh::SshHostError>),
    #[error(transparent)]
    ControlDir(#[from] crate::remote::ssh::ControlDirError),
}

impl ConnectError {
    /// The host it is about, when it is about one.
    pub fn host(&self) -> Option<&str> {
        match self {
            ConnectError::Ssh(e) => Some(e.host()),
            ConnectError::ControlDir(_) => None,
        }
    }
}

/// How to reach the hosts of a run.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// The binary that runs VMs on this machine.
    pub vmctl: PathBuf,
    /// Hosts of the config to leave out (`--exclude-host`): never reached.
    pub excluded: Vec<String>,
    /// How `ssh` is run for remote hosts (`--ssh-config`).
    pub ssh: crate::remote::ssh::SshOptions,
    /// Where the hosts' ssh connections live: kept across runs in a directory (what
    /// the CLI does by default, `--ssh-control-dir`), or one per host per run, closed
    /// after it (this library's default, `--ssh-control-dir none`).
    pub control: crate::remote::ssh::Control,
    /// Hosts reached (and later observed and applied) at once; 0 means
    /// [`HOST_PARALLELISM`].
    pub parallelism: usize,
    /// The config's absolute path on this machine (folder or file): recorded on each
    /// host with the project's lock, and asked about when observing (other projects of
    /// the same config).
    pub origin: Option<PathBuf>,
}

/// A file shipped to a host while reaching it (vmctl itself).
#[derive(Debug, Clone)]
pub struct ShippedTo {
    pub host: String,
    pub shipped: crate::remote::ship::Shipped,
}

/// A host for each host of a config, by name, for one run.
pub struct Fleet {
    hosts: BTreeMap<String, Box<dyn Host>>,
    /// Hosts observed (and applied) at once.
    parallelism: usize,
    /// Hosts of the config this run leaves out (`--exclude-host`): never reached.
    excluded: Vec<String>,
    /// What reaching the hosts shipped.
    shipped: Vec<ShippedTo>,
    /// The run's ssh control sockets; removed when the fleet drops (after its hosts).
    _control: Option<std::sync::Arc<crate::remote::ssh::ControlDir>>,
    /// The config's path ([`ConnectOptions::origin`]).
    origin: Option<PathBuf>,
}

/// Hosts observed and applied at once unless the caller says otherwise
/// (`--host-parallelism`).
pub const HOST_PARALLELISM: usize = 16;

impl Fleet {
    /// Reaches every host of `config` but the excluded ones: this machine in-process,
    /// a host with `ssh` through its agent (shipped there when it lacks this build),
    /// at most `options.parallelism` at once. Every host that cannot be reached is an
    /// error, all of them together.
    pub fn connect(config: &Config, options: &ConnectOptions) -> Result<Fleet, Vec<ConnectError>> {
        let parallelism = match options.parallelism {
            0 => HOST_PARALLELISM,
            n => n,
        };
        let wanted: Vec<&vmctl_schema::Host> = config
            .hosts
            .iter()
            .filter(|h| !options.excluded.contains(&h.name))
            .collect();
        let mut hosts: BTreeMap<String, Box<dyn Host>> = BTreeMap::new();
        let remote: Vec<(&vmctl_schema::Host, &str)> = wanted
            .iter()
            .filter_map(|h| h.ssh.as_deref().map(|ssh| (*h, ssh)))
            .collect();
        for host in wanted.iter().filter(|h| h.ssh.is_none()) {
            hosts.insert(
                host.name.clone(),
                Box::new(LocalHost::new(host, &options.vmctl)),
            );
        }
        let mut errors = Vec::new();
        let mut shipped = Vec::new();
        let mut control = None;
        if !remote.is_empty() {
            let dir = options
                .control
                .dir()
                .map_err(|e| vec![ConnectError::ControlDir(e)])?;
            let settings = ssh::SshSettings {
                options: options.ssh.clone(),
                control: std::sync::Arc::clone(&dir),
            };
            control = Some(dir);
            let vms_on: Vec<&str> = config.vms.iter().map(|v| v.host.as_str()).collect();
            let reached = in_parallel(&remote, parallelism, |(host, target)| {
                let needs = ssh::Needs {
                    kvm: vms_on.contains(&host.name.as_str()),
                };
                ssh::connect(host, target, &settings, needs)
            });
            for ((host, _), result) in remote.iter().zip(reached) {
                let host = host.name.as_str();
                match result {
                    Ok((reached, was_shipped)) => {
                        if let Some(s) = was_shipped {
                            shipped.push(ShippedTo {
                                host: host.to_owned(),
                                shipped: s,
                            });
                        }
                        hosts.insert(host.to_owned(), Box::new(reached));
                    }
                    Err(e) => errors.push(ConnectError::Ssh(Box::new(e))),
                }
            }
        }
        if errors.is_empty() {
            Ok(Fleet {
                hosts,
                parallelism,
                excluded: options.excluded.clone(),
                shipped,
                _control: control,
                origin: options.origin.clone(),
            })
        } else {
            Err(errors)
        }
    }

    /// The config's path, when the caller named it.
    pub fn origin(&self) -> Option<&Path> {
        self.origin.as_deref()
    }

    /// What reaching the hosts shipped to them (vmctl itself, where a host lacked it).
    pub fn shipped(&self) -> &[ShippedTo] {
        &self.shipped
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
        let fleet = Fleet::connect(&config, &ConnectOptions::default()).expect("fleet");
        let names: Vec<_> = fleet.iter().map(|h| h.name()).collect();
        assert_eq!(names, ["local"]);
        assert!(fleet.get("local").is_some());
        assert!(fleet.get("far").is_none());
    }

    #[test]
    fn each_host_that_cannot_be_reached_is_its_own_error_and_excluded_ones_are_not_tried() {
        // Targets ssh must never see (an option, a shell word), as a config that got
        // past validation by other means would hold them: refused before any ssh.
        let mut config = config(
            "project \"lab\"\nhost \"local\"\nhost \"far\" { ssh \"root@far\"; }\nhost \"farther\" { ssh \"root@farther\"; }\n",
        );
        config.hosts[1].ssh = Some("-oProxyCommand=sh".into());
        config.hosts[2].ssh = Some("root@far;ther".into());
        let Err(errors) = Fleet::connect(&config, &ConnectOptions::default()) else {
            panic!("bad targets were reached");
        };
        let hosts: Vec<_> = errors.iter().map(|e| e.host()).collect();
        assert_eq!(hosts, [Some("far"), Some("farther")]);
        assert!(
            errors[0].to_string().contains("not an ssh target"),
            "{}",
            errors[0]
        );
        let options = ConnectOptions {
            excluded: vec!["far".into(), "farther".into()],
            ..ConnectOptions::default()
        };
        let fleet = Fleet::connect(&config, &options).expect("only the local host is reached");
        assert!(fleet.excludes("far") && !fleet.excludes("local"));
        assert!(fleet.get("far").is_none() && fleet.get("local").is_some());
    }
}
