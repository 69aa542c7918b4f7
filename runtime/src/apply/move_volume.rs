//! The `create` step of a volume's `migrate`: the volume is made on its new host and
//! filled from its old one, chunk by chunk through this machine
//! ([`crate::host::volume_transfer`]): neither host needs to reach the other. The
//! volume exists on the new host only once every chunk is there; a failure or Ctrl-C
//! leaves it absent there (and whole on the old host), so the next plan moves it again.
//! Its old copy is deleted by the change's `delete` step, after.
//!
//! The copy reads a disk nothing writes: when its VM does not migrate, the VM's delete
//! or stop on the old host comes first (the graph says so). When the VM migrates, the
//! VM's own step finishes the copy with what the guest wrote meanwhile, so this step
//! leaves it unfinished — that step is not built yet (`LIVE_MIGRATION`), and such a
//! plan is never made by this build.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use vmctl_planner::{Action, Change, Phase, Plan, Resource, ResourceKind, Step};

use super::steps::{Inventory, StepError, StepNote};
use crate::host::volume_transfer::ReceivePart;
use crate::hosts::{Fleet, Host};

/// What moving one volume needs: both hosts and both pools.
pub struct VolumeMove<'a> {
    source: &'a dyn Host,
    target: &'a dyn Host,
    from: String,
    from_pool: PathBuf,
    to_pool: PathBuf,
    volume: vmctl_schema::Volume,
    /// Whether the copy is complete when every chunk is there (the VM does not migrate).
    finish: bool,
}

impl<'a> VolumeMove<'a> {
    /// The move `step` carries out, when it is the `create` of a volume's `migrate`.
    pub fn of(
        fleet: &'a Fleet,
        inventory: &Inventory,
        plan: &Plan,
        step: &Step,
    ) -> Result<Option<VolumeMove<'a>>, StepError> {
        if step.id.kind != ResourceKind::Volume
            || step.action != Action::Migrate
            || step.phase != Phase::Create
        {
            return Ok(None);
        }
        let empty = || StepError::Empty {
            step: step.to_string(),
        };
        let change = plan.changes.get(step.change).ok_or_else(empty)?;
        let (Some(from), Some(Resource::Volume(before)), Some(Resource::Volume(after))) =
            (&change.from, &change.before, &change.after)
        else {
            return Err(empty());
        };
        let host = |name: &str| {
            fleet.get(name).ok_or_else(|| StepError::Unknown {
                what: "host",
                name: name.to_owned(),
            })
        };
        Ok(Some(VolumeMove {
            source: host(from)?,
            target: host(&change.host)?,
            from: from.clone(),
            from_pool: inventory.pool_path(true, from, &before.pool)?.to_owned(),
            to_pool: inventory
                .pool_path(false, &change.host, &after.pool)?
                .to_owned(),
            volume: after.clone(),
            finish: !migrates_with_vm(plan, change),
        }))
    }

    /// Copies the volume; what the user is told.
    pub fn run(&self, project: &str, cancel: &AtomicBool) -> Result<Option<StepNote>, StepError> {
        let name = self.volume.name.as_str();
        let mut chunk = self.source.read_volume(project, &self.from_pool, name, 0)?;
        if self.volume.size < chunk.size {
            return Err(StepError::MoveShrinks {
                name: name.to_owned(),
                size: chunk.size,
                requested: self.volume.size,
            });
        }
        let begin = ReceivePart::Begin {
            size: self.volume.size,
            from: self.volume.from.clone(),
            from_digest: chunk.from_digest.clone(),
            prevent_destroy: self.volume.prevent_destroy,
        };
        self.receive(project, &begin)?;
        let mut bytes = 0;
        let copied = loop {
            if cancel.load(Ordering::SeqCst) {
                break Err(StepError::MoveCancelled {
                    name: name.to_owned(),
                });
            }
            if !chunk.data.is_empty() {
                bytes += chunk.data.len() as u64;
                let data = ReceivePart::Data {
                    offset: chunk.offset,
                    data: std::mem::take(&mut chunk.data),
                };
                if let Err(e) = self.receive(project, &data) {
                    break Err(e);
                }
            }
            if chunk.next >= chunk.size {
                break Ok(());
            }
            match self
                .source
                .read_volume(project, &self.from_pool, name, chunk.next)
            {
                Ok(next) => chunk = next,
                Err(e) => break Err(e),
            }
        };
        let done = copied.and_then(|()| match self.finish {
            true => self.receive(project, &ReceivePart::Finish),
            false => Ok(()),
        });
        if let Err(e) = done {
            // Nothing half-copied is left to look like the volume.
            let _ = self.receive(project, &ReceivePart::Abort);
            return Err(e);
        }
        Ok(Some(StepNote::VolumeMoved {
            name: name.to_owned(),
            from: self.from.clone(),
            bytes,
        }))
    }

    fn receive(&self, project: &str, part: &ReceivePart) -> Result<(), StepError> {
        self.target
            .receive_volume(project, &self.to_pool, &self.volume.name, part)
    }
}

/// Whether the volume of `change` is a disk of a VM that migrates in `plan` (whose own
/// step finishes its copy).
fn migrates_with_vm(plan: &Plan, change: &Change) -> bool {
    plan.changes.iter().any(|c| {
        c.action == Action::Migrate
            && matches!(&c.after, Some(Resource::Vm(vm)) if vm.disks.contains(&change.id.name))
    })
}
