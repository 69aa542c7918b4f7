//! This machine as a [`Host`]: every call is the host module's own function, run
//! in-process (in the host's netns where it has one).

use std::path::{Path, PathBuf};
use std::time::Duration;

use vmctl_planner::facts::{FactsRequest, HostFacts};
use vmctl_schema::Host as HostConfig;

use super::{HeldLock, Host, RunSettings};
use crate::apply::steps::{self, HostContext};
use crate::apply::{StepError, StepNote, StepOrder};
use crate::host::facts::{self, FactsError};
use crate::host::import::{self, ImportError, ImportOrder};
use crate::host::lock::{self, LockError};
use crate::host::pool;
use crate::host::volume_transfer::{self, Chunk, ReceivePart};
use crate::vms::migrate::{MigrationAnswer, MigrationCall};
use crate::vms::snapshot_call::{SnapshotAnswer, SnapshotCall, SnapshotFailure};

/// A host vmctl reaches by being on it.
#[derive(Debug, Clone)]
pub struct LocalHost {
    name: String,
    state_dir: PathBuf,
    netns: Option<String>,
    /// The binary that runs VMs (`vmctl vmm`).
    vmctl: PathBuf,
}

impl LocalHost {
    pub fn new(host: &HostConfig, vmctl: &Path) -> LocalHost {
        LocalHost::at(&host.name, &host.state_dir, host.netns.as_deref(), vmctl)
    }

    /// The host `name` with its state dir and netns, running VMs with `vmctl`.
    pub fn at(name: &str, state_dir: &Path, netns: Option<&str>, vmctl: &Path) -> LocalHost {
        LocalHost {
            name: name.to_owned(),
            state_dir: state_dir.to_owned(),
            netns: netns.map(str::to_owned),
            vmctl: vmctl.to_owned(),
        }
    }

    /// The host's state dir.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn context<'a>(&'a self, project: &'a str, run: &RunSettings<'a>) -> HostContext<'a> {
        HostContext {
            state_dir: &self.state_dir,
            netns: self.netns.as_deref(),
            project,
            vmctl: &self.vmctl,
            stop_timeout: run.stop_timeout,
            cancel: run.cancel,
        }
    }
}

impl Host for LocalHost {
    fn name(&self) -> &str {
        &self.name
    }

    fn facts(&self, request: &FactsRequest) -> Result<HostFacts, FactsError> {
        facts::gather(request)
    }

    fn lock(
        &self,
        project: &str,
        origin: Option<&Path>,
        timeout: Duration,
    ) -> Result<HeldLock, LockError> {
        let held = lock::acquire(&self.state_dir, project, timeout)?;
        if let Some(origin) = origin {
            crate::host::origin::write(&self.state_dir, project, origin).map_err(|source| {
                LockError::WriteRecord {
                    path: self
                        .state_dir
                        .join(project)
                        .join(crate::host::origin::RECORD),
                    source,
                }
            })?;
        }
        Ok(HeldLock::new(held))
    }

    fn sweep(&self, project: &str, pools: &[PathBuf]) {
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let run = RunSettings {
            stop_timeout: Duration::ZERO,
            cancel: &cancel,
        };
        let _ = steps::sweep_orphan_taps(&self.context(project, &run));
        for path in pools {
            let _ = pool::sweep_leftovers(project, path);
        }
    }

    fn run(
        &self,
        project: &str,
        order: &StepOrder,
        run: &RunSettings<'_>,
    ) -> Result<Option<StepNote>, StepError> {
        steps::run_order(&self.context(project, run), order)
    }

    fn read_volume(
        &self,
        project: &str,
        pool: &Path,
        name: &str,
        offset: u64,
        max: u64,
    ) -> Result<Chunk, StepError> {
        Ok(volume_transfer::read_chunk(
            project, pool, name, offset, max,
        )?)
    }

    fn migration(&self, project: &str, call: &MigrationCall) -> Result<MigrationAnswer, StepError> {
        let host = crate::vms::VmHost {
            project,
            state_dir: &self.state_dir,
            netns: self.netns.as_deref(),
            vmctl: &self.vmctl,
        };
        Ok(crate::vms::migrate::serve(&host, call)?)
    }

    fn snapshot(
        &self,
        project: &str,
        call: &SnapshotCall,
    ) -> Result<Result<SnapshotAnswer, SnapshotFailure>, StepError> {
        let host = crate::vms::VmHost {
            project,
            state_dir: &self.state_dir,
            netns: self.netns.as_deref(),
            vmctl: &self.vmctl,
        };
        Ok(crate::vms::snapshot_call::serve(&host, call))
    }

    fn receive_volume(
        &self,
        project: &str,
        pool: &Path,
        name: &str,
        part: &ReceivePart,
    ) -> Result<(), StepError> {
        Ok(volume_transfer::receive(project, pool, name, part)?)
    }

    fn ship(&self, _path: &Path) -> Result<Option<PathBuf>, StepError> {
        Ok(None)
    }

    fn import(&self, project: &str, order: &ImportOrder) -> Result<PathBuf, ImportError> {
        import::import(&self.state_dir, project, order)
    }

    fn tidy(&self, project: &str) {
        crate::host::origin::remove(&self.state_dir, project);
        let dir = self.state_dir.join(project);
        for sub in ["vms", "pools"] {
            let _ = std::fs::remove_dir(dir.join(sub));
        }
    }
}
