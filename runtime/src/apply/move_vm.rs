//! The `migrate` step of a running VM: it moves from the host it is on (the change's
//! `from`) to its new host, and keeps running — stop-and-copy, through this machine:
//!
//! 1. the old host pauses the VM and its VMM saves it (vCPUs, interrupt controllers,
//!    clock, devices, memory; `crate::vms::migrate::save_out`);
//! 2. its disks (the volumes that move with it) are copied to the new host, and made
//!    volumes there;
//! 3. the saved state and memory are copied to the new host (zero pages are not sent);
//! 4. the new host starts the VM from them (`vmctl vmm --restore`: no boot, the guest
//!    goes on where it was paused), with its taps on the same VLANs and the same MACs;
//! 5. the old host discards its paused copy (its VMM is killed, its state dir removed).
//!
//! The guest is paused from 1 to 4: that is the migration's pause, reported with the
//! bytes sent. A failure before 4 leaves the VM running where it was (resumed) and
//! nothing of it on the new host; a failure in 5 leaves the VM running on the new host
//! and its paused copy on the old, which the next plan deletes. Either way exactly one
//! copy of the guest runs.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use vmctl_planner::{Action, Phase, Plan, Resource, ResourceKind, Step};

use super::move_volume::VolumeMove;
use super::steps::{Inventory, StepError, StepNote, StepOrder};
use crate::host::volume_transfer::ReceivePart;
use crate::hosts::{Fleet, Host, RunSettings};
use crate::vms::migrate::{InPart, MigrationAnswer, MigrationCall, MigrationFile};

/// What moving one running VM needs.
pub struct VmMove<'a> {
    source: &'a dyn Host,
    target: &'a dyn Host,
    from: String,
    vm: String,
    /// The target's half: its step order (start from the saved VM).
    start: StepOrder,
    /// The source's last half: the delete of its paused copy.
    discard: StepOrder,
    /// The volumes that move with it.
    disks: Vec<VolumeMove<'a>>,
}

impl<'a> VmMove<'a> {
    /// The move `step` carries out, when it is a VM's `migrate`.
    pub fn of(
        fleet: &'a Fleet,
        inventory: &Inventory,
        plan: &Plan,
        step: &Step,
    ) -> Result<Option<VmMove<'a>>, StepError> {
        if step.id.kind != ResourceKind::Vm || step.phase != Phase::Migrate {
            return Ok(None);
        }
        let empty = || StepError::Empty {
            step: step.to_string(),
        };
        let change = plan.changes.get(step.change).ok_or_else(empty)?;
        let (Some(from), Some(Resource::Vm(before)), Some(Resource::Vm(after))) =
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
        let (source, target) = (host(from)?, host(&change.host)?);
        let mut start = StepOrder::of(inventory, plan, step)?;
        crate::hosts::ship_files(target, &mut start)?;
        let discard = StepOrder {
            step: format!("delete {} (its paused copy on host {from:?})", change.id),
            phase: Phase::Delete,
            resource: Resource::Vm(before.clone()),
            keep: None,
            places: Default::default(),
        };
        let disks = plan
            .changes
            .iter()
            .filter(|c| c.id.kind == ResourceKind::Volume && c.action == Action::Migrate)
            .filter(|c| after.disks.contains(&c.id.name))
            .map(|c| VolumeMove::of_change(fleet, inventory, plan, c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(VmMove {
            source,
            target,
            from: from.clone(),
            vm: after.name.clone(),
            start,
            discard,
            disks,
        }))
    }

    /// Moves the VM; what the user is told.
    pub fn run(
        &self,
        project: &str,
        settings: &RunSettings<'_>,
    ) -> Result<Option<StepNote>, StepError> {
        let vm = self.vm.clone();
        // Nothing of an earlier, interrupted move is left in the way.
        self.target
            .migration(project, &MigrationCall::Discard { vm: vm.clone() })?;
        // The guest is paused from the save request on.
        let paused = Instant::now();
        let saved = match self
            .source
            .migration(project, &MigrationCall::SaveOut { vm: vm.clone() })?
        {
            MigrationAnswer::Saved { saved } => saved,
            other => {
                return Err(StepError::Remote {
                    message: format!("the save of VM {vm:?} answered {other:?}"),
                })
            }
        };
        stall_for_tests();
        let moved = self.copy_and_start(project, settings.cancel);
        let (disk_bytes, memory_bytes) = match moved {
            Ok(sent) => sent,
            Err(e) => {
                // The guest runs on where it was; nothing of it stays on the new host.
                let _ = self
                    .source
                    .migration(project, &MigrationCall::Resume { vm: vm.clone() });
                for disk in &self.disks {
                    let _ = disk.receive(project, &ReceivePart::Abort);
                }
                let _ = self
                    .target
                    .migration(project, &MigrationCall::Discard { vm: vm.clone() });
                let _ = self
                    .source
                    .migration(project, &MigrationCall::Discard { vm: vm.clone() });
                return Err(e);
            }
        };
        let pause = paused.elapsed();
        // Its paused copy: killed at once (its guest runs on the new host).
        let kill = RunSettings {
            stop_timeout: Duration::ZERO,
            cancel: &AtomicBool::new(false),
        };
        let discarded = self.source.run(project, &self.discard, &kill);
        let _ = self
            .source
            .migration(project, &MigrationCall::Discard { vm: vm.clone() });
        discarded?;
        Ok(Some(StepNote::VmMigrated {
            name: vm,
            from: self.from.clone(),
            pause_ms: u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
            save_ms: saved.took_ms,
            memory_bytes,
            disk_bytes,
        }))
    }

    /// Steps 2 to 4 (the guest is paused): the bytes of disks and memory sent.
    fn copy_and_start(&self, project: &str, cancel: &AtomicBool) -> Result<(u64, u64), StepError> {
        let mut disk_bytes = 0;
        for disk in &self.disks {
            if let Some(StepNote::VolumeMoved { bytes, .. }) = disk.copy(project, cancel, false)? {
                disk_bytes += bytes;
            }
        }
        let mut memory_bytes = 0;
        for file in MigrationFile::ALL {
            memory_bytes += self.copy_file(project, file)?;
        }
        for disk in &self.disks {
            disk.receive(project, &ReceivePart::Finish)?;
        }
        let start = RunSettings {
            stop_timeout: Duration::from_secs(5),
            cancel,
        };
        if let Err(e) = self.target.run(project, &self.start, &start) {
            // Its disks there were made by this move: they go (the source's stay).
            for disk in &self.disks {
                let _ = disk.remove_made(project);
            }
            return Err(e);
        }
        Ok((disk_bytes, memory_bytes))
    }

    /// Copies one of the saved VM's files to the new host: the bytes sent.
    fn copy_file(&self, project: &str, file: MigrationFile) -> Result<u64, StepError> {
        let vm = &self.vm;
        let read = |offset| {
            let call = MigrationCall::ReadOut {
                vm: vm.clone(),
                file,
                offset,
            };
            match self.source.migration(project, &call)? {
                MigrationAnswer::Chunk { chunk } => Ok(chunk),
                other => Err(StepError::Remote {
                    message: format!("reading VM {vm:?}'s saved {file:?} answered {other:?}"),
                }),
            }
        };
        let write = |part| {
            let call = MigrationCall::ReceiveIn {
                vm: vm.clone(),
                file,
                part,
            };
            self.target.migration(project, &call).map(|_| ())
        };
        let mut chunk = read(0)?;
        write(InPart::Begin { size: chunk.size })?;
        let mut sent = 0;
        loop {
            if !chunk.data.is_empty() {
                sent += chunk.data.len() as u64;
                write(InPart::Data {
                    offset: chunk.offset,
                    data: std::mem::take(&mut chunk.data),
                })?;
            }
            if chunk.next >= chunk.size {
                return Ok(sent);
            }
            chunk = read(chunk.next)?;
        }
    }
}

/// Debug builds only: waits `VMCTL_TEST_MIGRATION_STALL_MS` milliseconds with the guest
/// saved and paused, so that a test can kill the controller mid-move.
fn stall_for_tests() {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("VMCTL_TEST_MIGRATION_STALL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
}
