//! Saving a running VM: pause, quiesce the devices, save every vCPU (each on its own
//! parked thread), the VM and the devices, write the state and the memory into the
//! files the client passed, and leave the VM paused (the caller resumes it, or keeps
//! it paused while the disks are copied).
//!
//! The devices are quiesced by holding every virtio transport's lock from before the
//! first vCPU is saved until the memory is written: the event loop cannot serve a queue
//! or fill a receive buffer meanwhile. Requests the guest made available before the
//! pause are served first (so no request is half done in the snapshot, and a disk
//! copied after the save holds every write the saved guest was told is done).

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvm_ioctls::VmFd;
use vm_memory::GuestMemoryMmap;

use super::vcpu::{VcpuCommand, VcpuReply};
use super::{format, memory, vm, DevicesState, Snapshot, SnapshotError};
use crate::vmm::devices::bus;
use crate::vmm::devices::serial::SerialDevice;
use crate::vmm::devices::virtio::VirtioDevice;
use crate::vmm::lifecycle::{Lifecycle, RunState};
use crate::vmm::virtio_wiring::Transport;
use crate::vmm::I8042Device;

const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);
const VCPU_TIMEOUT: Duration = Duration::from_secs(5);

/// What was saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    /// The state file's length.
    pub state_bytes: u64,
    /// The memory file's length (the guest's memory).
    pub memory_bytes: u64,
    /// Bytes of memory actually written (pages not all zero).
    pub written_bytes: u64,
    /// Milliseconds from the pause to the end of the save.
    pub took_ms: u64,
}

/// What a save reads: the VM's parts the control thread can reach while it runs.
pub struct Snapshotter {
    /// The VM's shared state (pause, vCPU commands).
    pub life: Arc<Lifecycle>,
    /// The VM (irqchip, PIT, clock).
    pub vm: Arc<VmFd>,
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// Whether the VM has a PIT.
    pub pit: bool,
    /// The guest's TSC rate in kHz (0: unknown).
    pub tsc_khz: u32,
    /// COM1.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// The i8042.
    pub i8042: Arc<Mutex<I8042Device>>,
    /// The virtio transports, in device order.
    pub virtio: Vec<Arc<Mutex<Transport>>>,
    /// The page map, to skip memory the guest never touched.
    pub residency: Option<Arc<memory::Residency>>,
}

impl Snapshotter {
    /// Saves the VM into `state_out` and `memory_out`; the VM is paused afterwards
    /// (also when the save failed, if it was paused for it).
    pub fn save(&self, state_out: &File, memory_out: &File) -> Result<Saved, SnapshotError> {
        let started = Instant::now();
        if self.life.state() != RunState::Paused {
            self.life
                .pause(PAUSE_TIMEOUT)
                .map_err(|e| SnapshotError::Save(e.to_string()))?;
        }
        let mut transports: Vec<MutexGuard<'_, Transport>> =
            self.virtio.iter().map(|t| bus::lock(t)).collect();
        for t in transports.iter_mut() {
            if t.device().is_activated() {
                for q in 0..t.queue_count() {
                    // `queue_count` is a device's few queues.
                    t.process_queue(q as u16);
                }
            }
        }
        let replies = self
            .life
            .ask_vcpus(|_| VcpuCommand::Save, VCPU_TIMEOUT)
            .map_err(|e| SnapshotError::Save(e.to_string()))?;
        let mut vcpus = Vec::with_capacity(replies.len());
        for reply in replies {
            match reply {
                VcpuReply::Saved(s) => vcpus.push(*s),
                VcpuReply::Failed(why) => return Err(SnapshotError::Save(why)),
            }
        }
        let vm = vm::save(&self.vm, self.pit).map_err(SnapshotError::Save)?;
        let devices = DevicesState {
            serial: bus::lock(&self.serial).snapshot(),
            i8042: bus::lock(&self.i8042).state(),
            virtio: transports.iter().map(|t| t.save_state()).collect(),
        };
        let snapshot = Snapshot {
            cpus: self.life.vcpus,
            memory: self.life.memory,
            tsc_khz: self.tsc_khz,
            vcpus,
            vm,
            devices,
        };
        let bytes = format::encode(&snapshot)?;
        let written_bytes = memory::save(&self.mem, memory_out, self.residency.as_deref())?;
        drop(transports);
        let mut out = state_out;
        out.write_all(&bytes).map_err(|source| SnapshotError::Io {
            what: "writing the state file",
            source,
        })?;
        Ok(Saved {
            state_bytes: bytes.len() as u64,
            memory_bytes: self.life.memory,
            written_bytes,
            took_ms: started.elapsed().as_millis() as u64,
        })
    }
}
