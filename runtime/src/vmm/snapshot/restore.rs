//! Building a VMM from a snapshot instead of booting: the same VM and devices the spec
//! describes (its disks and taps opened as for a boot), guest memory mapped
//! copy-on-write from the memory file ([`super::memory::map_private`]), then the
//! saved state set — the irqchip, PIT and clock on the VM, each device, and each vCPU
//! before any thread starts. No kernel is loaded and no boot table written. Once it
//! runs, its NICs announce the guest's MACs on the network (RARP, as QEMU does after
//! a migration: [`crate::vmm::devices::virtio::net::announce`]).
//!
//! Refused before anything runs: a snapshot of another shape than the spec (vCPUs,
//! memory, PIT, devices), a device state that does not fit (a queue outside memory),
//! and a guest that saw CPU features this host with this spec's CPUID mask cannot
//! offer ([`SnapshotError::CpuFeatures`]).

use std::fs::File;
use std::sync::Arc;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, Kvm};

use super::{memory as snapshot_memory, vm, Snapshot, SnapshotError};
use crate::vmm::arch::x86_64::cpuid;
use crate::vmm::console::{ConsoleHub, ConsoleOut};
use crate::vmm::devices::bus::MmioBus;
use crate::vmm::devices::serial::SerialOut;
use crate::vmm::lifecycle::{self, Lifecycle};
use crate::vmm::threads::Threads;
use crate::vmm::vcpu::Vcpu;
use crate::vmm::virtio_wiring::VirtioDevices;
use crate::vmm::{kvm_err, memory, Vmm, VmmError, VmmSpec};

/// The largest XSAVE area `kvm_xsave` holds.
const XSAVE_SIZE: i32 = 4096;

/// Refuses a snapshot whose VM is not the one `spec` describes.
fn check_shape(spec: &VmmSpec, snap: &Snapshot) -> Result<(), SnapshotError> {
    let mismatch = |what: String| Err(SnapshotError::Mismatch { what });
    if snap.cpus != spec.cpus || snap.vcpus.len() != spec.cpus as usize {
        return mismatch(format!(
            "the snapshot has {} vCPUs, the spec {}",
            snap.vcpus.len(),
            spec.cpus
        ));
    }
    if snap.memory != spec.memory.0 {
        return mismatch(format!(
            "the snapshot has {} bytes of memory, the spec {}",
            snap.memory, spec.memory.0
        ));
    }
    if snap.vm.pit.is_some() != spec.pit {
        return mismatch("the snapshot and the spec disagree on the PIT".into());
    }
    if let Some((i, s)) = snap
        .vcpus
        .iter()
        .enumerate()
        .find(|(i, s)| s.id as usize != *i)
    {
        return Err(SnapshotError::Invalid {
            what: format!("vCPU {i} is saved as vCPU {}", s.id),
        });
    }
    Ok(())
}

/// Refuses a snapshot whose guest saw CPU features this host, with `spec`'s CPUID
/// mask, cannot offer.
fn check_cpu(kvm: &Kvm, spec: &VmmSpec, snap: &Snapshot) -> Result<(), VmmError> {
    let cpuid_mask = spec.cpuid_features()?;
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let mut missing: Vec<String> = Vec::new();
    for saved in &snap.vcpus {
        let here =
            cpuid::vcpu_cpuid(&supported, saved.id, spec.cpus, &cpuid_mask).map_err(|source| {
                crate::vmm::vcpu::VcpuError::Cpuid {
                    id: saved.id,
                    source,
                }
            })?;
        for name in cpuid::missing_features(&saved.cpuid, here.as_slice()) {
            if !missing.iter().any(|m| m == name) {
                missing.push(name.to_string());
            }
        }
    }
    if !missing.is_empty() {
        return Err(SnapshotError::CpuFeatures { missing }.into());
    }
    Ok(())
}

/// Tolerance between the saved TSC rate and this host's: 0.05 % (500 ppm; the kernel
/// calibrates the same CPU model a few ppm apart).
const TSC_TOLERANCE_PPM: u64 = 500;

/// Refuses a TSC rate this host cannot give the guest (0 on either side: unknown).
fn check_tsc(saved: u32, here: u32) -> Result<(), SnapshotError> {
    let (s, h) = (u64::from(saved), u64::from(here));
    if s == 0 || h == 0 || s.abs_diff(h) * 1_000_000 <= s * TSC_TOLERANCE_PPM {
        return Ok(());
    }
    Err(SnapshotError::TscRate { saved, here })
}

/// Whether this host could restore `snap` into the VM `spec` describes — its shape
/// and the CPU features its guest saw — checked without building anything, so a
/// caller can refuse before it stops the running VM.
pub fn check(spec: &VmmSpec, snap: &Snapshot) -> Result<(), VmmError> {
    spec.validate()?;
    check_shape(spec, snap)?;
    let kvm = Kvm::new().map_err(VmmError::OpenKvm)?;
    check_cpu(&kvm, spec, snap)?;
    // The rate is a vCPU's: ask one of a throw-away VM.
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    let vcpu = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
    let here = vcpu.get_tsc_khz().unwrap_or(0);
    Ok(check_tsc(snap.tsc_khz, here)?)
}

impl Vmm {
    /// Builds the VM `spec` describes in the state `snap` and `memory_file` saved;
    /// guest serial output goes to `console`. Returns the VMM ready to
    /// [`run`](Vmm::run), and how many saved MSRs KVM would not set (summed over the
    /// vCPUs; they keep their reset values).
    pub fn restore(
        spec: &VmmSpec,
        snap: &Snapshot,
        memory_file: &File,
        console: SerialOut,
        threads: Threads,
    ) -> Result<(Self, usize), VmmError> {
        spec.validate()?;
        check_shape(spec, snap)?;
        lifecycle::install_kick_handler()?;

        let (kvm, vm) = Self::create_vm()?;
        let xsave = kvm.check_extension_int(Cap::Xsave2);
        if xsave > XSAVE_SIZE {
            return Err(SnapshotError::Invalid {
                what: format!("this host's XSAVE area is {xsave} bytes; vmctl saves 4096"),
            }
            .into());
        }
        check_cpu(&kvm, spec, snap)?;

        let mem = snapshot_memory::map_private(memory_file, snap.memory)?;
        memory::register(&vm, &mem)?;
        Self::create_irqchip(&vm, spec.pit, spec.cpus)?;
        vm::restore(&vm, &snap.vm)?;

        let mut mmio = MmioBus::new();
        let mut virtio = VirtioDevices::attach(&vm, &mem, &spec.devices, &mut mmio)?;
        virtio.restore(&snap.devices.virtio)?;
        // The guest may have moved: its NICs tell the network where it is now.
        virtio.announce_on_start();
        let mmio = Arc::new(mmio);

        let life = Arc::new(Lifecycle::new(spec.cpus, spec.memory.0));
        let console_hub = Arc::new(ConsoleHub::new());
        let console = Box::new(ConsoleOut::new(console, console_hub.clone()));
        let (pio, i8042, serial) =
            Self::add_legacy_devices(&vm, &life, console, Some(&snap.devices))?;

        let msrs = Self::msr_list(&kvm)?;
        let mut refused = 0;
        let mut vcpus = Vec::with_capacity(snap.vcpus.len());
        for saved in &snap.vcpus {
            let (vcpu, r) = Vcpu::restore(
                &vm,
                saved,
                msrs.clone(),
                pio.clone(),
                mmio.clone(),
                life.clone(),
            )?;
            refused += r;
            vcpus.push(vcpu);
        }

        let tsc_khz = vcpus.first().and_then(Vcpu::tsc_khz).unwrap_or(0);
        check_tsc(snap.tsc_khz, tsc_khz)?;
        let (control, console) = Self::bind_sockets(spec)?;
        let vmm = Self {
            tsc_khz,
            vcpus,
            i8042,
            serial,
            console_hub,
            virtio,
            control,
            console,
            life,
            threads,
            pit: spec.pit,
            // Its memory is mapped from a file: every page is read when it is saved.
            residency: None,
            vm: Arc::new(vm),
            _kvm: kvm,
            mem,
        };
        Ok((vmm, refused))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tsc_rate_off_by_more_than_the_tolerance_is_refused() {
        assert!(check_tsc(2_100_000, 2_100_000).is_ok());
        assert!(check_tsc(2_100_000, 2_100_900).is_ok());
        assert!(check_tsc(0, 3_000_000).is_ok());
        assert!(check_tsc(2_100_000, 0).is_ok());
        assert!(matches!(
            check_tsc(2_100_000, 2_400_000),
            Err(SnapshotError::TscRate {
                saved: 2_100_000,
                here: 2_400_000
            })
        ));
        assert!(check_tsc(2_100_000, 2_098_000).is_err());
    }
}
