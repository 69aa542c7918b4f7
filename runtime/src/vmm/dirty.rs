//! Which guest pages changed since the last look, for a live migration's pre-copy
//! rounds: KVM's dirty log (pages the vCPUs wrote; `KVM_MEM_LOG_DIRTY_PAGES` is on for
//! every slot while a migration runs, off otherwise) ORed with each region's bitmap
//! (pages the VMM's own devices wrote — disk reads, received frames, used rings —
//! which KVM does not see; vm-memory's `AtomicBitmap`, always kept).
//!
//! Both are per slot and per page, bit `i` of word `i / 64` for the slot's page `i`,
//! and both are reset by reading them: what [`DirtyLog::take`] returns changed since
//! the previous take (or since [`DirtyLog::start`]).

use std::sync::atomic::{AtomicBool, Ordering};

use kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES;
use kvm_ioctls::VmFd;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::mmap::MmapRegion;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::memory::{self, GuestMemory};

/// Errors of dirty-page tracking.
#[derive(Debug, thiserror::Error)]
pub enum DirtyError {
    /// Turning KVM's dirty log on or off failed.
    #[error("cannot turn KVM's dirty-page log {}: {source}", if *.on { "on" } else { "off" })]
    Slots {
        /// Whether it was being turned on.
        on: bool,
        /// Why.
        source: memory::MemoryError,
    },
    /// `KVM_GET_DIRTY_LOG` failed.
    #[error("KVM_GET_DIRTY_LOG failed for slot {slot}: {source}")]
    Get {
        /// The slot.
        slot: u32,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// Asked for dirty pages while nothing tracks them.
    #[error("dirty pages are not being tracked (no pre-copy round 0 ran)")]
    NotTracking,
}

/// Whether dirty pages are being tracked, and the taking of them.
#[derive(Debug, Default)]
pub struct DirtyLog {
    on: AtomicBool,
}

/// The bitmap of a region's pages the VMM wrote.
fn vmm_bitmap(region: &MmapRegion<AtomicBitmap>) -> &AtomicBitmap {
    region.bitmap()
}

impl DirtyLog {
    /// Whether tracking is on.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Turns tracking on (again): what [`take`](Self::take) returns next changed from
    /// now on.
    pub fn start(&self, vm: &VmFd, mem: &GuestMemory) -> Result<(), DirtyError> {
        if self.is_on() {
            // Restarted: forget what was logged so far.
            self.take(vm, mem)?;
        } else {
            memory::set_slots(vm, mem, KVM_MEM_LOG_DIRTY_PAGES)
                .map_err(|source| DirtyError::Slots { on: true, source })?;
            for region in mem.iter() {
                vmm_bitmap(region).reset();
            }
            self.on.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Turns tracking off (a move that did not happen: the guest runs on here).
    pub fn stop(&self, vm: &VmFd, mem: &GuestMemory) -> Result<(), DirtyError> {
        if self.on.swap(false, Ordering::AcqRel) {
            memory::set_slots(vm, mem, 0)
                .map_err(|source| DirtyError::Slots { on: false, source })?;
        }
        Ok(())
    }

    /// The pages written since the last take, per region (slot order), one bit a page.
    pub fn take(&self, vm: &VmFd, mem: &GuestMemory) -> Result<Vec<Vec<u64>>, DirtyError> {
        if !self.is_on() {
            return Err(DirtyError::NotTracking);
        }
        mem.iter()
            .enumerate()
            .map(|(slot, region)| {
                let slot = slot as u32;
                let mut bits = vm
                    .get_dirty_log(slot, region.len() as usize)
                    .map_err(|source| DirtyError::Get { slot, source })?;
                let by_vmm = vmm_bitmap(region).get_and_reset();
                for (word, vmm) in bits.iter_mut().zip(by_vmm) {
                    *word |= vmm;
                }
                Ok(bits)
            })
            .collect()
    }
}

/// The number of pages set in `bits`.
pub fn count(bits: &[Vec<u64>]) -> u64 {
    bits.iter()
        .flatten()
        .map(|w| u64::from(w.count_ones()))
        .sum()
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;

    #[test]
    fn device_writes_are_in_the_regions_bitmaps() {
        let mem = memory::create(8 << 20).unwrap();
        mem.write_obj(7u32, GuestAddress(3 * 4096 + 8)).unwrap();
        mem.write_slice(&[1u8; 2 * 4096], GuestAddress(10 * 4096))
            .unwrap();
        let region = mem.iter().next().unwrap();
        let words = vmm_bitmap(region).get_and_reset();
        assert_eq!(words[0], (1 << 3) | (1 << 10) | (1 << 11));
        assert_eq!(count(&[words]), 3);
        // Read and reset.
        assert_eq!(vmm_bitmap(region).get_and_reset()[0], 0);
    }

    #[test]
    fn nothing_is_taken_while_tracking_is_off() {
        let log = DirtyLog::default();
        assert!(!log.is_on());
        let kvm = match kvm_ioctls::Kvm::new() {
            Ok(kvm) => kvm,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED: no /dev/kvm ({e})");
                return;
            }
            Err(e) => panic!("CI has /dev/kvm: {e}"),
        };
        let vm = kvm.create_vm().unwrap();
        let mem = memory::create(8 << 20).unwrap();
        memory::register(&vm, &mem).unwrap();
        assert!(matches!(log.take(&vm, &mem), Err(DirtyError::NotTracking)));
        log.start(&vm, &mem).unwrap();
        mem.write_obj(1u8, GuestAddress(5 * 4096)).unwrap();
        let bits = log.take(&vm, &mem).unwrap();
        assert_eq!(bits[0][0], 1 << 5);
        assert_eq!(count(&log.take(&vm, &mem).unwrap()), 0);
        log.stop(&vm, &mem).unwrap();
        assert!(!log.is_on());
    }
}
