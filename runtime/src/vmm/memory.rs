//! Guest memory: checked against what the host can back, mapped lazily (anonymous,
//! `MAP_NORESERVE`: pages cost host memory only once the guest touches them), laid out
//! around the 32-bit MMIO hole, and registered with KVM.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{
    Address, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress,
};

use super::arch::x86_64::layout::{self, HIMEM_START, PAGE_SIZE};

/// Guest memory as the engine maps it: every region carries a bitmap of the pages the
/// VMM itself wrote (its devices: disk reads, received frames, used rings), which KVM's
/// dirty log cannot see — a live migration sends both (`crate::vmm::dirty`).
pub type GuestMemory = vm_memory::GuestMemoryMmap<AtomicBitmap>;

/// The least memory a VM may have: the boot structures below 1 MiB and a small kernel.
pub const MIN_MEMORY: u64 = 4 << 20;
/// The most memory a VM may have, whatever the host says.
pub const MAX_MEMORY: u64 = 1 << 40;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Too little memory for a VM.
    #[error("{requested} bytes of memory is too little: a VM needs at least {MIN_MEMORY} (4 MiB)")]
    TooSmall {
        /// Bytes asked for.
        requested: u64,
    },
    /// Memory size is not a whole number of pages.
    #[error("memory must be a multiple of 4 KiB, not {requested} bytes")]
    Unaligned {
        /// Bytes asked for.
        requested: u64,
    },
    /// The host cannot back that much memory.
    #[error("cannot give the VM {requested} bytes of memory: {why}")]
    TooLarge {
        /// Bytes asked for.
        requested: u64,
        /// What limits it (MemAvailable, RLIMIT_AS, the maximum).
        why: String,
    },
    /// mmap of guest memory failed.
    #[error("cannot map guest memory: {0}")]
    Mmap(vm_memory::mmap::FromRangesError),
    /// KVM_SET_USER_MEMORY_REGION failed.
    #[error("KVM_SET_USER_MEMORY_REGION failed for slot {slot}: {source}")]
    Register {
        /// The slot.
        slot: u32,
        /// The errno.
        source: kvm_ioctls::Error,
    },
}

/// What the host offers: `MemAvailable` and the address-space limit, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct HostLimits {
    /// `MemAvailable` from /proc/meminfo (None if unreadable).
    pub mem_available: Option<u64>,
    /// `RLIMIT_AS` soft limit (None if unlimited).
    pub rlimit_as: Option<u64>,
}

impl HostLimits {
    /// Reads the limits of this host and process.
    pub fn current() -> Self {
        let mem_available = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| parse_mem_available(&m));
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes to the rlimit struct we pass and nothing else.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut rl) };
        let rlimit_as = (rc == 0 && rl.rlim_cur != libc::RLIM_INFINITY).then_some(rl.rlim_cur);
        Self {
            mem_available,
            rlimit_as,
        }
    }
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Address space the VMM itself needs besides guest memory (binary, heap, stacks).
const VMM_OVERHEAD: u64 = 256 << 20;

/// Refuses sizes the host cannot back.
pub fn check_size(requested: u64, host: HostLimits) -> Result<(), MemoryError> {
    if requested < MIN_MEMORY {
        return Err(MemoryError::TooSmall { requested });
    }
    if requested & (PAGE_SIZE - 1) != 0 {
        return Err(MemoryError::Unaligned { requested });
    }
    let too_large = |why: String| Err(MemoryError::TooLarge { requested, why });
    if requested > MAX_MEMORY {
        return too_large(format!("vmctl's maximum is {MAX_MEMORY} bytes (1 TiB)"));
    }
    if let Some(avail) = host.mem_available {
        if requested > avail {
            return too_large(format!(
                "the host has only {avail} bytes available (MemAvailable)"
            ));
        }
    }
    if let Some(limit) = host.rlimit_as {
        if requested.saturating_add(VMM_OVERHEAD) > limit {
            return too_large(format!(
                "the address-space limit (RLIMIT_AS) is {limit} bytes"
            ));
        }
    }
    Ok(())
}

/// Maps `size` bytes of guest memory (unregistered).
pub fn create(size: u64) -> Result<GuestMemory, MemoryError> {
    let ranges: Vec<(GuestAddress, usize)> = layout::ram_ranges(size)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemory::from_ranges(&ranges).map_err(MemoryError::Mmap)
}

/// Registers every region of `mem` with the VM, one slot each.
pub fn register(vm: &VmFd, mem: &GuestMemory) -> Result<(), MemoryError> {
    set_slots(vm, mem, 0)
}

/// Registers every region of `mem` again with `flags` (`KVM_MEM_LOG_DIRTY_PAGES` on or
/// off: KVM changes only the flags of a slot registered again at the same place).
pub fn set_slots(vm: &VmFd, mem: &GuestMemory, flags: u32) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|_| MemoryError::Register {
                slot,
                source: kvm_ioctls::Error::new(libc::EFAULT),
            })?;
        let r = kvm_userspace_memory_region {
            slot,
            flags,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping of exactly `memory_size` bytes owned by
        // `mem`, which the Vmm keeps alive for as long as the VM (it is dropped after
        // the vCPUs and the VM fd).
        unsafe { vm.set_user_memory_region(r) }
            .map_err(|source| MemoryError::Register { slot, source })?;
    }
    Ok(())
}

/// End of the RAM below the MMIO hole (where an initrd goes).
pub fn low_ram_end(mem: &GuestMemory) -> u64 {
    mem.iter()
        .next()
        .map(|r| r.start_addr().raw_value() + r.len())
        .unwrap_or(HIMEM_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: HostLimits = HostLimits {
        mem_available: Some(16 << 30),
        rlimit_as: None,
    };

    #[test]
    fn mem_available_is_parsed() {
        let m = "MemTotal: 100 kB\nMemFree: 50 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_mem_available(m), Some(2 << 20));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn sizes_are_checked() {
        assert!(check_size(128 << 20, ROOMY).is_ok());
        assert!(matches!(
            check_size(1 << 20, ROOMY),
            Err(MemoryError::TooSmall { .. })
        ));
        assert!(matches!(
            check_size((128 << 20) + 1, ROOMY),
            Err(MemoryError::Unaligned { .. })
        ));
        let e = check_size(32 << 30, ROOMY).unwrap_err().to_string();
        assert!(e.contains("MemAvailable"), "{e}");
        let e = check_size(2 << 40, ROOMY).unwrap_err().to_string();
        assert!(e.contains("maximum"), "{e}");
        let limited = HostLimits {
            mem_available: None,
            rlimit_as: Some(1 << 30),
        };
        let e = check_size(1 << 30, limited).unwrap_err().to_string();
        assert!(e.contains("RLIMIT_AS"), "{e}");
    }

    #[test]
    fn created_memory_is_lazy_and_laid_out() {
        let mem = create(64 << 20).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(low_ram_end(&mem), 64 << 20);
    }
}
