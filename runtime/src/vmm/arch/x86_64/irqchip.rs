//! The in-kernel IO-APIC's identity: KVM resets its ID register to 0, but the MP table
//! (mptable.rs) gives it the id after the last vCPU's, as APIC ids must be unique. A
//! kernel that reads the register (Linux on 32-bit reprograms a mismatch; a checking
//! guest reports it) must find what the table says.

use kvm_bindings::{kvm_irqchip, KVM_IRQCHIP_IOAPIC};
use kvm_ioctls::VmFd;

/// Errors setting up the in-kernel interrupt controller.
#[derive(Debug, thiserror::Error)]
pub enum IrqchipError {
    /// KVM_GET_IRQCHIP or KVM_SET_IRQCHIP failed.
    #[error("KVM_{ioctl} (IO-APIC) failed: {source}")]
    Kvm {
        /// The ioctl.
        ioctl: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
}

/// Sets the IO-APIC's ID register to `id` (after KVM_CREATE_IRQCHIP).
pub fn set_ioapic_id(vm: &VmFd, id: u8) -> Result<(), IrqchipError> {
    let mut chip = kvm_irqchip {
        chip_id: KVM_IRQCHIP_IOAPIC,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)
        .map_err(|source| IrqchipError::Kvm {
            ioctl: "GET_IRQCHIP",
            source,
        })?;
    // chip_id IOAPIC: KVM filled the `ioapic` member of the union.
    chip.chip.ioapic.id = u32::from(id);
    vm.set_irqchip(&chip).map_err(|source| IrqchipError::Kvm {
        ioctl: "SET_IRQCHIP",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_ioctls::Kvm;

    #[test]
    fn ioapic_id_register_is_set() {
        // Without /dev/kvm (never under CI, which fails instead) there is nothing to ask.
        let kvm = match Kvm::new() {
            Ok(kvm) => kvm,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("skipped: no /dev/kvm ({e})");
                return;
            }
            Err(e) => panic!("CI needs /dev/kvm: {e}"),
        };
        let vm = kvm.create_vm().unwrap();
        vm.create_irq_chip().unwrap();
        set_ioapic_id(&vm, 5).unwrap();
        let mut chip = kvm_irqchip {
            chip_id: KVM_IRQCHIP_IOAPIC,
            ..Default::default()
        };
        vm.get_irqchip(&mut chip).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { chip.chip.ioapic.id }, 5);
    }
}
