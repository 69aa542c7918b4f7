//! The `create` step of a volume's `migrate`: the volume is made on its new host and
//! filled from its old one, chunk by chunk through this machine
//! ([`crate::host::volume_transfer`]): neither host needs to reach the other. The
//! volume exists on the new host only once every chunk is there; a failure or Ctrl-C
//! leaves it absent there (and whole on the old host), so the next plan moves it again.
//! Its old copy is deleted by the change's `delete` step, after.
//!
//! The copy reads a disk nothing writes: when its VM does not migrate, the VM's delete
//! or stop on the old host comes first (the graph says so). When the VM migrates, the
//! VM's own step copies it while the guest is paused ([`super::move_vm`]), and this
//! step does nothing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use vmctl_planner::{Action, Change, Phase, Plan, Resource, ResourceKind, Step};

use super::steps::{Inventory, Places, StepError, StepNote, StepOrder};
use crate::host::volume_transfer::{ReceivePart, CHUNK};
use crate::hosts::{Fleet, Host, RunSettings};

/// The most zero bytes sent in one part (a cleared block sent again).
const ZERO_PIECE: u64 = 1 << 20;

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
        let change = plan
            .changes
            .get(step.change)
            .ok_or_else(|| StepError::Empty {
                step: step.to_string(),
            })?;
        VolumeMove::of_change(fleet, inventory, plan, change).map(Some)
    }

    /// The move of the volume `change` migrates.
    pub fn of_change(
        fleet: &'a Fleet,
        inventory: &Inventory,
        plan: &Plan,
        change: &Change,
    ) -> Result<VolumeMove<'a>, StepError> {
        let (Some(from), Some(Resource::Volume(before)), Some(Resource::Volume(after))) =
            (&change.from, &change.before, &change.after)
        else {
            return Err(StepError::Empty {
                step: format!("migrate {}", change.id),
            });
        };
        let host = |name: &str| {
            fleet.get(name).ok_or_else(|| StepError::Unknown {
                what: "host",
                name: name.to_owned(),
            })
        };
        Ok(VolumeMove {
            source: host(from)?,
            target: host(&change.host)?,
            from: from.clone(),
            from_pool: inventory.pool_path(true, from, &before.pool)?.to_owned(),
            to_pool: inventory
                .pool_path(false, &change.host, &after.pool)?
                .to_owned(),
            volume: after.clone(),
            finish: !migrates_with_vm(plan, change),
        })
    }

    /// Copies the volume; what the user is told. A disk of a VM that migrates is
    /// copied by the VM's own step (while the guest runs, the blocks it wrote
    /// meanwhile sent again at the pause): nothing to do here.
    pub fn run(&self, project: &str, cancel: &AtomicBool) -> Result<Option<StepNote>, StepError> {
        if !self.finish {
            return Ok(None);
        }
        self.copy(project, cancel, true)
    }

    /// Makes the volume on the new host and fills it from the old; `finish`: the
    /// volume is complete then (else it stays a partial file, for the caller to
    /// finish or abort).
    pub fn copy(
        &self,
        project: &str,
        cancel: &AtomicBool,
        finish: bool,
    ) -> Result<Option<StepNote>, StepError> {
        let name = self.volume.name.as_str();
        let mut chunk = self
            .source
            .read_volume(project, &self.from_pool, name, 0, CHUNK)?;
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
                .read_volume(project, &self.from_pool, name, chunk.next, CHUNK)
            {
                Ok(next) => chunk = next,
                Err(e) => break Err(e),
            }
        };
        let done = copied.and_then(|()| match finish {
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

    /// The volume's name.
    pub fn name(&self) -> &str {
        &self.volume.name
    }

    /// Sends again the byte ranges `[start, end)` of the volume (its guest wrote them
    /// while it was copied; the guest is paused now), zeros included: a block the
    /// guest cleared must be cleared on the new host too. The bytes sent.
    pub fn resend(&self, project: &str, ranges: &[(u64, u64)]) -> Result<u64, StepError> {
        let name = self.volume.name.as_str();
        let mut bytes = 0;
        let zeros = |from: u64, to: u64| -> Result<(), StepError> {
            let mut at = from;
            while at < to {
                let len = (to - at).min(ZERO_PIECE);
                let data = ReceivePart::Data {
                    offset: at,
                    data: vec![0; len as usize],
                };
                self.receive(project, &data)?;
                at += len;
            }
            Ok(())
        };
        for &(start, end) in ranges {
            let mut at = start;
            while at < end {
                // Only what the range needs is read and sent, not a whole chunk.
                let mut chunk =
                    self.source
                        .read_volume(project, &self.from_pool, name, at, end - at)?;
                let end = end.min(chunk.size);
                // A hole before the chunk's data (or up to the end): zeros there.
                let data_at = chunk.offset.clamp(at, end);
                zeros(at, data_at)?;
                let stop = chunk.next.clamp(data_at, end);
                if data_at < stop {
                    if chunk.data.is_empty() {
                        zeros(data_at, stop)?;
                    } else {
                        chunk.data.truncate((stop - data_at) as usize);
                        let data = ReceivePart::Data {
                            offset: data_at,
                            data: std::mem::take(&mut chunk.data),
                        };
                        self.receive(project, &data)?;
                    }
                }
                bytes += stop - at;
                // `stop > at` unless the chunk ends the file: then nothing is left.
                at = if stop > at { stop } else { end };
            }
        }
        Ok(bytes)
    }

    /// Removes the volume this move made on the new host (a move that failed after
    /// the copy was complete).
    pub fn remove_made(&self, project: &str) -> Result<(), StepError> {
        let order = StepOrder {
            step: format!(
                "delete volume.{} (copied by a failed move)",
                self.volume.name
            ),
            phase: Phase::Delete,
            resource: Resource::Volume(self.volume.clone()),
            keep: None,
            places: Places {
                pool: Some(self.to_pool.clone()),
                ..Places::default()
            },
        };
        let settings = RunSettings {
            stop_timeout: std::time::Duration::ZERO,
            cancel: &AtomicBool::new(false),
        };
        self.target.run(project, &order, &settings).map(|_| ())
    }

    /// One part of receiving the volume on the new host.
    pub fn receive(&self, project: &str, part: &ReceivePart) -> Result<(), StepError> {
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
