//! The VM-wide KVM state: the in-kernel irqchip (both PICs and the IO-APIC), the PIT
//! when the VM has one, and the KVM clock. Saved by the control thread while the vCPUs
//! are parked; restored on the new VM before its vCPUs are created.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use super::SnapshotError;

/// The VM's interrupt controllers, timer and clock.
#[derive(Clone, Serialize, Deserialize)]
pub struct VmState {
    /// The master PIC.
    pub pic_master: kvm_irqchip,
    /// The slave PIC.
    pub pic_slave: kvm_irqchip,
    /// The IO-APIC.
    pub ioapic: kvm_irqchip,
    /// The PIT, when the VM has one.
    pub pit: Option<kvm_pit_state2>,
    /// The KVM clock.
    pub clock: kvm_clock_data,
}

impl std::fmt::Debug for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmState")
            .field("pit", &self.pit.is_some())
            .field("clock", &self.clock.clock)
            .finish_non_exhaustive()
    }
}

fn chip(vm: &VmFd, id: u32) -> Result<kvm_irqchip, String> {
    let mut chip = kvm_irqchip {
        chip_id: id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)
        .map_err(|e| format!("KVM_GET_IRQCHIP ({id}) failed: {e}"))?;
    Ok(chip)
}

/// Saves the VM's state; `pit` says whether the VM has a PIT.
pub fn save(vm: &VmFd, pit: bool) -> Result<VmState, String> {
    Ok(VmState {
        pic_master: chip(vm, KVM_IRQCHIP_PIC_MASTER)?,
        pic_slave: chip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
        ioapic: chip(vm, KVM_IRQCHIP_IOAPIC)?,
        pit: if pit {
            Some(
                vm.get_pit2()
                    .map_err(|e| format!("KVM_GET_PIT2 failed: {e}"))?,
            )
        } else {
            None
        },
        clock: vm
            .get_clock()
            .map_err(|e| format!("KVM_GET_CLOCK failed: {e}"))?,
    })
}

/// Sets `state` on a new VM whose irqchip (and PIT, when `state` has one) exist.
///
/// The clock is set without `KVM_CLOCK_REALTIME`: the guest's clock goes on from where
/// it was saved, as after a pause, instead of jumping by the time the snapshot spent on
/// disk (a guest resyncs its wall clock as after any pause).
pub fn restore(vm: &VmFd, state: &VmState) -> Result<(), SnapshotError> {
    let err = |what: &'static str| move |source| SnapshotError::SetVm { what, source };
    for (chip, id) in [
        (&state.pic_master, KVM_IRQCHIP_PIC_MASTER),
        (&state.pic_slave, KVM_IRQCHIP_PIC_SLAVE),
        (&state.ioapic, KVM_IRQCHIP_IOAPIC),
    ] {
        if chip.chip_id != id {
            return Err(SnapshotError::Invalid {
                what: format!("irqchip {} saved as chip {}", id, chip.chip_id),
            });
        }
        vm.set_irqchip(chip).map_err(err("KVM_SET_IRQCHIP"))?;
    }
    if let Some(pit) = &state.pit {
        vm.set_pit2(pit).map_err(err("KVM_SET_PIT2"))?;
    }
    let clock = kvm_clock_data {
        clock: state.clock.clock,
        ..Default::default()
    };
    vm.set_clock(&clock).map_err(err("KVM_SET_CLOCK"))?;
    Ok(())
}
