//! The `migrate` step of a running VM: it moves from the host it is on (the change's
//! `from`) to its new host, and keeps running — pre-copy, through this machine:
//!
//! 1. **pre-copy, the guest running**: round 0 turns dirty-page tracking on in the old
//!    host's VMM and sends all of memory (zero pages are not sent); each later round
//!    sends the pages written since the round before (`vmm::snapshot::pages`), which
//!    the new host lays into its copy. Rounds go on until the pause expected for
//!    what is left fits the VM's `migration-downtime` (the dirty rate times the last
//!    round's length, over the rate the rounds were sent at), or — a guest that
//!    writes faster than the move sends — until [`STALLED_ROUNDS`] rounds in a row
//!    did not shrink what is left by a tenth, or [`MAX_ROUNDS`] rounds: the move then
//!    goes on with a longer pause (it is said in the apply's note: "did not
//!    converge");
//! 2. the old host pauses the VM and its VMM saves it (vCPUs, interrupt controllers,
//!    clock, devices, and the pages written since the last round;
//!    `crate::vms::migrate::save_out`);
//! 3. its disks (the volumes that move with it) are copied to the new host, and made
//!    volumes there;
//! 4. the saved state and the last pages are copied to the new host;
//! 5. the new host starts the VM from them (`vmctl vmm --restore`: no boot, the guest
//!    goes on where it was paused), with its taps on the same VLANs and the same MACs;
//! 6. the old host discards its paused copy (its VMM is killed, its state dir removed).
//!
//! The guest is paused from 2 to 5: that is the migration's pause, reported with the
//! bytes sent, the rounds and the total time. A failure before 5 leaves the VM running
//! where it was (resumed, dirty-page tracking off) and nothing of it on the new host; a
//! failure in 6 leaves the VM running on the new host and its paused copy on the old,
//! which the next plan deletes. Either way exactly one copy of the guest runs.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use vmctl_planner::{Action, Phase, Plan, Resource, ResourceKind, Step};

use super::move_volume::VolumeMove;
use super::steps::{Inventory, StepError, StepNote, StepOrder};
use super::StepProgress;
use crate::host::volume_transfer::ReceivePart;
use crate::hosts::{Fleet, Host, RunSettings};
use crate::vmm::devices::virtio::block::WRITTEN_BLOCK;
use crate::vms::migrate::{InPart, MigrationAnswer, MigrationCall, MigrationFile, Precopied};

/// The most pre-copy rounds after round 0; then the guest is paused whatever is left.
pub const MAX_ROUNDS: u32 = 30;
/// Rounds in a row that did not shrink what is left to send by a tenth: the guest
/// writes as fast as the move sends, and is paused.
pub const STALLED_ROUNDS: u32 = 3;

/// What the pre-copy rounds did.
struct Precopy {
    /// Rounds after round 0.
    rounds: u32,
    /// Bytes sent while the guest ran.
    sent: u64,
    /// Whether the expected pause came within the budget.
    converged: bool,
}

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
    /// The VM's disks (volume names) in its device order.
    disk_order: Vec<String>,
    /// The pause the move aims under, in milliseconds.
    budget_ms: u64,
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
            disk_order: before.disks.clone(),
            budget_ms: after
                .migration_downtime
                .unwrap_or(vmctl_schema::DEFAULT_MIGRATION_DOWNTIME_MS),
        }))
    }

    /// Moves the VM, telling `progress` how the pre-copy goes; what the user is told.
    pub fn run(
        &self,
        project: &str,
        settings: &RunSettings<'_>,
        progress: &dyn Fn(&StepProgress),
    ) -> Result<Option<StepNote>, StepError> {
        let vm = self.vm.clone();
        let started = Instant::now();
        let mut disk_bytes = 0;
        // Nothing of an earlier, interrupted move is left in the way.
        self.target
            .migration(project, &MigrationCall::Discard { vm: vm.clone() })?;
        let pre = match self.precopy(project, settings.cancel, progress, &mut disk_bytes) {
            Ok(pre) => pre,
            Err(e) => {
                // The guest ran all along: it runs on, untracked; nothing stays on
                // the new host.
                self.abandon(project);
                return Err(e);
            }
        };
        // The guest is paused from the save request on.
        let paused = Instant::now();
        let save = MigrationCall::SaveOut {
            vm: vm.clone(),
            precopied: true,
        };
        let saved = match self.source.migration(project, &save) {
            Ok(MigrationAnswer::Saved { saved }) => saved,
            failed => {
                // The old host resumed the guest if it paused it; the disks and memory
                // the rounds sent go from the new host.
                self.abandon(project);
                return Err(match failed {
                    Err(e) => e,
                    Ok(other) => StepError::Remote {
                        message: format!("the save of VM {vm:?} answered {other:?}"),
                    },
                });
            }
        };
        stall_for_tests("VMCTL_TEST_MIGRATION_STALL_MS");
        let moved = self.copy_and_start(project, settings.cancel, &saved.disks);
        let (resent_bytes, paused_bytes) = match moved {
            Ok(sent) => sent,
            Err(e) => {
                // The guest runs on where it was; nothing of it stays on the new host.
                self.abandon(project);
                return Err(e);
            }
        };
        let pause = paused.elapsed();
        stall_for_tests("VMCTL_TEST_MIGRATION_STALL_STARTED_MS");
        // The paused copy goes only once the new one is seen running: a new VMM that
        // died after its start leaves the guest to its paused copy, resumed.
        let running = MigrationCall::Running { vm: vm.clone() };
        if let Err(e) = self.target.migration(project, &running) {
            let stop = RunSettings {
                stop_timeout: Duration::ZERO,
                cancel: &AtomicBool::new(false),
            };
            let _ = self.target.run(project, &self.start_undone(), &stop);
            for disk in &self.disks {
                let _ = disk.remove_made(project);
            }
            self.abandon(project);
            return Err(e);
        }
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
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Ok(Some(StepNote::VmMigrated {
            name: vm,
            from: self.from.clone(),
            pause_ms: ms(pause),
            save_ms: saved.took_ms,
            total_ms: ms(started.elapsed()),
            rounds: pre.rounds,
            converged: pre.converged,
            budget_ms: self.budget_ms,
            memory_bytes: pre.sent + paused_bytes,
            paused_bytes,
            disk_bytes: disk_bytes + resent_bytes,
            disk_paused_bytes: resent_bytes,
        }))
    }

    /// The delete of the copy the move started on the new host.
    fn start_undone(&self) -> StepOrder {
        StepOrder {
            step: format!(
                "delete vm.{} (its copy on the new host, which did not run)",
                self.vm
            ),
            phase: Phase::Delete,
            resource: self.start.resource.clone(),
            keep: None,
            places: self.start.places.clone(),
        }
    }

    /// Puts things back after a move that failed before the VM ran on the new host:
    /// the guest runs on where it was (resumed if paused, its dirty pages no longer
    /// tracked), and nothing of the move stays on either host.
    fn abandon(&self, project: &str) {
        let vm = self.vm.clone();
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
            .migration(project, &MigrationCall::Discard { vm });
    }

    /// One pre-copy round on the old host.
    fn round(&self, project: &str, round: u32) -> Result<Precopied, StepError> {
        let call = MigrationCall::PrecopyOut {
            vm: self.vm.clone(),
            round,
        };
        match self.source.migration(project, &call)? {
            MigrationAnswer::Precopied { precopied } => Ok(precopied),
            other => Err(StepError::Remote {
                message: format!(
                    "pre-copy round {round} of VM {:?} answered {other:?}",
                    self.vm
                ),
            }),
        }
    }

    /// Sends the pages file the old host wrote and lays it into the new host's copy:
    /// the bytes sent.
    fn send_pages(&self, project: &str) -> Result<u64, StepError> {
        let sent = self.copy_file(project, MigrationFile::Pages)?;
        let apply = MigrationCall::ApplyPages {
            vm: self.vm.clone(),
        };
        self.target.migration(project, &apply)?;
        Ok(sent)
    }

    /// Step 1, the guest running: round 0, then rounds until the expected pause fits
    /// the budget or the guest is found not to converge (see the module comment).
    /// Its disks are copied after round 0 (which starts tracking their writes too);
    /// `disk_bytes` counts their bytes.
    fn precopy(
        &self,
        project: &str,
        cancel: &AtomicBool,
        progress: &dyn Fn(&StepProgress),
        disk_bytes: &mut u64,
    ) -> Result<Precopy, StepError> {
        let began = Instant::now();
        self.round(project, 0)?;
        let disks_began = Instant::now();
        for disk in &self.disks {
            if let Some(StepNote::VolumeMoved { bytes, .. }) = disk.copy(project, cancel, false)? {
                *disk_bytes += bytes;
            }
        }
        // The rate memory is sent at leaves the disks' copy out (`sent` counts memory).
        let disk_time = disks_began.elapsed();
        let mut sent = self.copy_file(project, MigrationFile::Memory)?;
        let mut last = began.elapsed();
        let mut left = u64::MAX;
        let mut stalled = 0;
        let mut round = 0;
        loop {
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(StepError::MoveCancelled {
                    name: self.vm.clone(),
                });
            }
            round += 1;
            let t = Instant::now();
            let p = self.round(project, round)?;
            sent += self.send_pages(project)?;
            let took = t.elapsed();
            // What the guest wrote during the round before, per second; what it will
            // have written during this one is what the pause must send, at the rate
            // the move has sent so far.
            let dirty_rate = p.written_bytes as f64 / last.as_secs_f64().max(1e-3);
            let sending = began.elapsed().saturating_sub(disk_time);
            let send_rate = sent as f64 / sending.as_secs_f64().max(1e-3);
            let expected_ms = (dirty_rate * took.as_secs_f64() / send_rate.max(1.0)) * 1000.0;
            progress(&StepProgress::Migration {
                round,
                sent_bytes: sent,
                dirty_bytes_per_s: dirty_rate as u64,
                expected_pause_ms: expected_ms as u64,
            });
            if expected_ms <= self.budget_ms as f64 {
                return Ok(Precopy {
                    rounds: round,
                    sent,
                    converged: true,
                });
            }
            stalled = if p.written_bytes.saturating_mul(10) >= left.saturating_mul(9) {
                stalled + 1
            } else {
                0
            };
            if stalled >= STALLED_ROUNDS || round >= MAX_ROUNDS {
                return Ok(Precopy {
                    rounds: round,
                    sent,
                    converged: false,
                });
            }
            left = p.written_bytes;
            last = took;
        }
    }

    /// Steps 3 to 5 (the guest is paused): the blocks of its disks written since they
    /// were copied (`written`, in disk order) sent again, then its state and last
    /// pages; the bytes of disks, and of state and memory, sent.
    fn copy_and_start(
        &self,
        project: &str,
        cancel: &AtomicBool,
        written: &[Vec<[u64; 2]>],
    ) -> Result<(u64, u64), StepError> {
        let mut disk_bytes = 0;
        for (name, runs) in self.disk_order.iter().zip(written) {
            let Some(disk) = self.disks.iter().find(|d| d.name() == name) else {
                continue;
            };
            let block = WRITTEN_BLOCK as u64;
            let ranges: Vec<(u64, u64)> = runs
                .iter()
                .map(|[first, count]| {
                    let start = first.saturating_mul(block);
                    (start, start.saturating_add(count.saturating_mul(block)))
                })
                .collect();
            disk_bytes += disk.resend(project, &ranges)?;
        }
        let mut memory_bytes = self.copy_file(project, MigrationFile::State)?;
        memory_bytes += self.send_pages(project)?;
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

/// Debug builds only: waits the milliseconds the environment variable `var` says —
/// `VMCTL_TEST_MIGRATION_STALL_MS` with the guest saved and paused,
/// `VMCTL_TEST_MIGRATION_STALL_STARTED_MS` once the new host started it — so that a
/// test can kill something mid-move.
fn stall_for_tests(var: &str) {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var(var).ok().and_then(|v| v.parse().ok()) {
        std::thread::sleep(Duration::from_millis(ms));
    }
    #[cfg(not(debug_assertions))]
    let _ = var;
}
