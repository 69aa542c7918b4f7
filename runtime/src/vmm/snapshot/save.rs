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

use crate::vmm::memory::GuestMemory;
use kvm_ioctls::VmFd;

use super::vcpu::{VcpuCommand, VcpuReply};
use super::{format, memory, pages, vm, DevicesState, Snapshot, SnapshotError};
use crate::vmm::devices::bus;
use crate::vmm::devices::serial::SerialDevice;
use crate::vmm::devices::virtio::VirtioDevice;
use crate::vmm::dirty::{self, DirtyLog};
use crate::vmm::lifecycle::{Lifecycle, RunState};
use crate::vmm::virtio_wiring::Transport;
use crate::vmm::I8042Device;
use vm_memory::bitmap::AtomicBitmap;

const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);
const VCPU_TIMEOUT: Duration = Duration::from_secs(5);

/// What was saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The state file's length.
    pub state_bytes: u64,
    /// The memory file's length (the guest's memory).
    pub memory_bytes: u64,
    /// Bytes of memory actually written (pages not all zero).
    pub written_bytes: u64,
    /// After pre-copy rounds (memory saved as the pages written since): each disk's
    /// blocks written since round 0, in disk order; empty otherwise.
    pub disks: Vec<WrittenBlocks>,
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
    pub mem: GuestMemory,
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
    /// The pages written since the last look, while a live migration runs.
    pub dirty: Arc<DirtyLog>,
    /// Each disk's written blocks, in disk order.
    pub disk_writes: Vec<Arc<AtomicBitmap>>,
}

/// The blocks of one disk written since a live migration's round 0, as ranges of
/// [`crate::vmm::devices::virtio::block::WRITTEN_BLOCK`]-byte blocks: `[first, count]`.
pub type WrittenBlocks = Vec<[u64; 2]>;

/// The runs of set bits in `words`: `[first, count]`.
fn runs(words: &[u64]) -> WrittenBlocks {
    let mut out: WrittenBlocks = Vec::new();
    for (w, word) in words.iter().enumerate() {
        let mut bits = *word;
        while bits != 0 {
            let bit = u64::from(bits.trailing_zeros());
            bits &= bits - 1;
            let block = w as u64 * 64 + bit;
            match out.last_mut() {
                Some([first, count]) if *first + *count == block => *count += 1,
                _ => out.push([block, 1]),
            }
        }
    }
    out
}

/// How a save writes the guest's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryOut {
    /// All of it, as a memory file (a snapshot).
    All,
    /// The pages written since the last pre-copy round, as a pages file (the last
    /// round of a live migration).
    Dirty,
}

/// What a pre-copy round wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precopied {
    /// Pages found written since the round before (round 0: every page of the guest).
    pub dirty_pages: u64,
    /// Bytes of pages written out.
    pub written_bytes: u64,
    /// Milliseconds the round took (the guest ran meanwhile).
    pub took_ms: u64,
}

impl Snapshotter {
    /// One round of a live migration's pre-copy, written into `out` while the guest
    /// runs. Round 0 turns dirty-page tracking on and writes all of memory (a memory
    /// file: zero pages as holes); every later round writes the pages written since the
    /// round before (a pages file).
    pub fn precopy(&self, round: u32, out: &File) -> Result<Precopied, SnapshotError> {
        let started = Instant::now();
        let dirty_err = |e: dirty::DirtyError| SnapshotError::Save(e.to_string());
        let (dirty_pages, written_bytes) = if round == 0 {
            self.dirty.start(&self.vm, &self.mem).map_err(dirty_err)?;
            // The disks are copied from now on, the guest writing: what it writes
            // is sent again at the pause.
            for disk in &self.disk_writes {
                disk.reset();
            }
            let written = memory::save(&self.mem, out, self.residency.as_deref())?;
            (self.life.memory / 4096, written)
        } else {
            let bits = self.dirty.take(&self.vm, &self.mem).map_err(dirty_err)?;
            (dirty::count(&bits), pages::write(&self.mem, &bits, out)?)
        };
        Ok(Precopied {
            dirty_pages,
            written_bytes,
            took_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Ends dirty-page tracking (a migration that did not happen).
    pub fn precopy_end(&self) -> Result<(), SnapshotError> {
        self.dirty
            .stop(&self.vm, &self.mem)
            .map_err(|e| SnapshotError::Save(e.to_string()))
    }

    /// Saves the VM into `state_out` and `memory_out` (its memory as `how` says); the
    /// VM is paused afterwards (also when the save failed, if it was paused for it).
    pub fn save(
        &self,
        state_out: &File,
        memory_out: &File,
        how: MemoryOut,
    ) -> Result<Saved, SnapshotError> {
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
        let disks = match how {
            MemoryOut::All => Vec::new(),
            MemoryOut::Dirty => self
                .disk_writes
                .iter()
                .map(|d| runs(&d.get_and_reset()))
                .collect(),
        };
        let written_bytes = match how {
            MemoryOut::All => memory::save(&self.mem, memory_out, self.residency.as_deref())?,
            MemoryOut::Dirty => {
                let bits = self
                    .dirty
                    .take(&self.vm, &self.mem)
                    .map_err(|e| SnapshotError::Save(e.to_string()))?;
                pages::write(&self.mem, &bits, memory_out)?
            }
        };
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
            disks,
            took_ms: started.elapsed().as_millis() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn written_blocks_are_runs() {
        assert_eq!(super::runs(&[0, 0]), Vec::<[u64; 2]>::new());
        assert_eq!(
            super::runs(&[0b1110_0001, 1 << 63, 1]),
            [[0, 1], [5, 3], [127, 2]]
        );
    }
}
