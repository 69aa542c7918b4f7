//! One vCPU's state: what `KVM_GET_*` returns for it, saved by its own thread while it
//! is parked (the commands of [`VcpuCommand`], served by
//! [`crate::vmm::lifecycle::Lifecycle::park_if_paused`]) and set again on a new vCPU
//! before its thread starts.
//!
//! Saved in Firecracker's order (MP state, registers, special registers, XSAVE — which
//! holds the FPU and SSE/AVX state —, XCRs, debug registers, LAPIC, MSRs, pending
//! events last); restored in the same order, the MSRs after the LAPIC (the TSC deadline
//! after the TSC) and the events last.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

use super::SnapshotError;

/// What the controller asks a parked vCPU thread.
#[derive(Debug)]
pub enum VcpuCommand {
    /// Save the vCPU's state: [`VcpuReply::Saved`].
    Save,
}

/// A parked vCPU thread's answer.
#[derive(Debug)]
pub enum VcpuReply {
    /// The vCPU's state.
    Saved(Box<VcpuState>),
    /// The command failed (an ioctl's error).
    Failed(String),
}

/// Everything KVM holds of one vCPU.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    /// The vCPU's index.
    pub id: u32,
    /// The CPUID the guest saw (restored as it was; compared with what the restoring
    /// host can offer).
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// `KVM_GET_MP_STATE`.
    pub mp_state: kvm_mp_state,
    /// `KVM_GET_REGS`.
    pub regs: kvm_regs,
    /// `KVM_GET_SREGS`.
    pub sregs: kvm_sregs,
    /// `KVM_GET_XSAVE` (FPU, SSE, AVX… in the XSAVE layout).
    pub xsave: kvm_xsave,
    /// `KVM_GET_XCRS`.
    pub xcrs: kvm_xcrs,
    /// `KVM_GET_DEBUGREGS`.
    pub debugregs: kvm_debugregs,
    /// `KVM_GET_LAPIC`.
    pub lapic: kvm_lapic_state,
    /// Every MSR KVM lists that this vCPU could read.
    pub msrs: Vec<kvm_msr_entry>,
    /// `KVM_GET_VCPU_EVENTS`: pending exceptions, interrupts, NMIs.
    pub events: kvm_vcpu_events,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState")
            .field("id", &self.id)
            .field("rip", &self.regs.rip)
            .field("msrs", &self.msrs.len())
            .finish_non_exhaustive()
    }
}

fn failed(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> String {
    move |e| format!("{what} failed: {e}")
}

/// Reads the MSRs of `indices` KVM will give; an MSR it refuses is left out (KVM stops
/// at the first MSR it cannot read and says how many it read).
fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, String> {
    let mut left: Vec<u32> = indices.to_vec();
    let mut out = Vec::with_capacity(indices.len());
    while !left.is_empty() {
        let entries: Vec<kvm_msr_entry> = left
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|e| format!("too many MSRs: {e:?}"))?;
        let read = fd.get_msrs(&mut msrs).map_err(failed("KVM_GET_MSRS"))?;
        out.extend_from_slice(&msrs.as_slice()[..read.min(left.len())]);
        // Skip the one it refused, go on after it.
        left.drain(..(read + 1).min(left.len()));
    }
    Ok(out)
}

/// Saves vCPU `id`'s state; called on its own thread, parked (outside `KVM_RUN`).
pub fn save(
    fd: &VcpuFd,
    id: u32,
    cpuid: &[kvm_cpuid_entry2],
    msr_indices: &[u32],
) -> Result<VcpuState, String> {
    Ok(VcpuState {
        id,
        cpuid: cpuid.to_vec(),
        mp_state: fd.get_mp_state().map_err(failed("KVM_GET_MP_STATE"))?,
        regs: fd.get_regs().map_err(failed("KVM_GET_REGS"))?,
        sregs: fd.get_sregs().map_err(failed("KVM_GET_SREGS"))?,
        xsave: fd.get_xsave().map_err(failed("KVM_GET_XSAVE"))?,
        xcrs: fd.get_xcrs().map_err(failed("KVM_GET_XCRS"))?,
        debugregs: fd.get_debug_regs().map_err(failed("KVM_GET_DEBUGREGS"))?,
        lapic: fd.get_lapic().map_err(failed("KVM_GET_LAPIC"))?,
        msrs: read_msrs(fd, msr_indices)?,
        events: fd
            .get_vcpu_events()
            .map_err(failed("KVM_GET_VCPU_EVENTS"))?,
    })
}

/// Sets `state` on a new vCPU before its thread starts. Returns how many saved MSRs KVM
/// refused to set (left at their reset values).
pub fn restore(fd: &VcpuFd, state: &VcpuState) -> Result<usize, SnapshotError> {
    let err = |what: &'static str| {
        let id = state.id;
        move |source| SnapshotError::SetVcpu { id, what, source }
    };
    let cpuid = CpuId::from_entries(&state.cpuid).map_err(|_| SnapshotError::Invalid {
        what: format!("vCPU {} has {} CPUID entries", state.id, state.cpuid.len()),
    })?;
    fd.set_cpuid2(&cpuid).map_err(err("KVM_SET_CPUID2"))?;
    fd.set_mp_state(state.mp_state)
        .map_err(err("KVM_SET_MP_STATE"))?;
    fd.set_regs(&state.regs).map_err(err("KVM_SET_REGS"))?;
    fd.set_sregs(&state.sregs).map_err(err("KVM_SET_SREGS"))?;
    // SAFETY: `kvm_xsave` is the 4 KiB legacy layout; the VMM refuses hosts whose
    // XSAVE area is larger (`KVM_CAP_XSAVE2` above 4096) before it builds a vCPU, so
    // KVM reads no more than the struct holds.
    unsafe { fd.set_xsave(&state.xsave) }.map_err(err("KVM_SET_XSAVE"))?;
    fd.set_xcrs(&state.xcrs).map_err(err("KVM_SET_XCRS"))?;
    fd.set_debug_regs(&state.debugregs)
        .map_err(err("KVM_SET_DEBUGREGS"))?;
    fd.set_lapic(&state.lapic).map_err(err("KVM_SET_LAPIC"))?;
    let mut refused = 0;
    let mut left: &[kvm_msr_entry] = &state.msrs;
    while !left.is_empty() {
        let msrs = Msrs::from_entries(left).map_err(|_| SnapshotError::Invalid {
            what: format!("vCPU {} has {} MSRs", state.id, state.msrs.len()),
        })?;
        let set = fd.set_msrs(&msrs).map_err(err("KVM_SET_MSRS"))?;
        if set < left.len() {
            refused += 1;
        }
        left = &left[(set + 1).min(left.len())..];
    }
    fd.set_vcpu_events(&state.events)
        .map_err(err("KVM_SET_VCPU_EVENTS"))?;
    Ok(refused)
}
