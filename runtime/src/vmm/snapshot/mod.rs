//! Snapshots of a running VM: what is saved, how it is written, and how a VMM is built
//! again from it (docs/snapshot.md).
//!
//! A snapshot is two files: the **state** ([`Snapshot`]: every vCPU, the VM's
//! irqchip, PIT and clock, every device; [`format`]: magic, format version, length and
//! SHA-256 in front of the JSON) and the **memory** (guest RAM, raw, region after
//! region, zero pages left as holes: [`memory`]). The VMM writes both into file
//! descriptors its client passes over the control socket (a jailed VMM opens no file),
//! so the same save writes into a migration stream later.
//!
//! One job per file: [`vcpu`] (a vCPU's KVM state, saved by its own parked thread),
//! [`vm`] (irqchip, PIT, clock), [`devices`] (serial, i8042, virtio transports and
//! queues), [`format`] (the state file), [`memory`] (the memory file and the
//! copy-on-write mapping a restore runs on), [`pages`] (the pages a live migration's
//! round sends), [`save`] (pausing and saving a running VM, and the pre-copy rounds of
//! a live migration), [`restore`] (building a VMM from a snapshot).

pub mod devices;
pub mod format;
pub mod memory;
pub mod pages;
pub mod restore;
pub mod save;
pub mod vcpu;
pub mod vm;

use serde::{Deserialize, Serialize};

pub use devices::DevicesState;
pub use format::FormatError;
pub use vcpu::VcpuState;
pub use vm::VmState;

/// Errors saving or restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The state file is not a snapshot this build reads.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The state is well-formed but describes something this VM cannot be.
    #[error("the snapshot is invalid: {what}")]
    Invalid {
        /// What is wrong.
        what: String,
    },
    /// The snapshot is of another VM shape than the spec restoring it.
    #[error("the snapshot does not fit this VM: {what}")]
    Mismatch {
        /// What differs.
        what: String,
    },
    /// The guest saw CPU features this host (with the VM's CPUID mask) cannot offer.
    #[error("this host cannot offer CPU features the snapshot's guest uses: {}", missing.join(", "))]
    CpuFeatures {
        /// The features, by /proc/cpuinfo name.
        missing: Vec<String>,
    },
    /// The restoring host's TSC runs at another rate than the saved guest's.
    #[error("the snapshot's guest ran with a TSC of {saved} kHz, this host's runs at {here} kHz, and KVM here cannot set it (KVM_CAP_TSC_CONTROL): its clock would run at the wrong rate")]
    TscRate {
        /// The saved rate.
        saved: u32,
        /// This host's.
        here: u32,
    },
    /// A device's state was refused.
    #[error("device {index}: {why}")]
    Device {
        /// The device (virtio order; serial and i8042 by name).
        index: String,
        /// Why.
        why: String,
    },
    /// A vCPU ioctl refused the saved state.
    #[error("{what} failed on vCPU {id}: {source}")]
    SetVcpu {
        /// The vCPU.
        id: u32,
        /// The ioctl.
        what: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// A VM ioctl refused the saved state.
    #[error("{what} failed: {source}")]
    SetVm {
        /// The ioctl.
        what: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// Reading or writing a snapshot file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The memory file cannot back the guest's memory.
    #[error("the memory file holds {file} bytes, the snapshot's guest has {memory}")]
    MemoryFile {
        /// The file's length.
        file: u64,
        /// The guest's memory.
        memory: u64,
    },
    /// The running VM could not be saved (paused, its vCPUs asked, the VM read).
    #[error("cannot save the VM: {0}")]
    Save(String),
    /// Mapping the memory file failed.
    #[error("cannot map the memory file: {0}")]
    Map(String),
}

/// Everything of a VM but its memory.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// vCPUs.
    pub cpus: u32,
    /// Guest memory in bytes (the memory file's length).
    pub memory: u64,
    /// The guest's TSC rate in kHz (0: unknown). This machine's KVM cannot set it
    /// (`KVM_CAP_TSC_CONTROL` is 0), so a restore where it differs is refused.
    pub tsc_khz: u32,
    /// Each vCPU, in index order.
    pub vcpus: Vec<VcpuState>,
    /// The irqchip, the PIT (when the VM has one), the clock.
    pub vm: VmState,
    /// The devices.
    pub devices: DevicesState,
}
