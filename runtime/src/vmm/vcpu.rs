//! vCPUs: creation and boot set-up (CPUID, MSRs, registers, FPU, LAPIC), and the run
//! loop each vCPU thread executes — port I/O and MMIO to the buses, guest faults end
//! the VM, nothing a guest does panics the host. Parked, a vCPU thread answers the
//! controller's commands ([`crate::vmm::snapshot::vcpu`]: save its state).

use std::sync::Arc;

use kvm_bindings::{
    kvm_cpuid_entry2, CpuId, KVM_INTERNAL_ERROR_DELIVERY_EV, KVM_INTERNAL_ERROR_EMULATION,
    KVM_INTERNAL_ERROR_SIMUL_EX, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use super::arch::x86_64::cpuid::{self, CpuidError, FeatureBit};
use super::arch::x86_64::regs::{self, RegsError};
use super::devices::bus::{MmioBus, PioBus};
use super::lifecycle::{ExitCounters, Lifecycle, StopReason};
use super::snapshot::vcpu::{self as state, VcpuCommand, VcpuReply, VcpuState};
use super::snapshot::SnapshotError;

/// Errors creating or setting up a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// KVM_CREATE_VCPU failed.
    #[error("cannot create vCPU {id}: {source}")]
    Create {
        /// The vCPU.
        id: u32,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// Building the vCPU's CPUID failed.
    #[error("vCPU {id} CPUID: {source}")]
    Cpuid {
        /// The vCPU.
        id: u32,
        /// Why.
        source: CpuidError,
    },
    /// KVM_SET_CPUID2 failed.
    #[error("KVM_SET_CPUID2 failed on vCPU {id}: {source}")]
    SetCpuid {
        /// The vCPU.
        id: u32,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// Register set-up failed.
    #[error("vCPU {id}: {source}")]
    Regs {
        /// The vCPU.
        id: u32,
        /// Why.
        source: RegsError,
    },
    /// The saved state could not be set.
    #[error(transparent)]
    Restore(#[from] SnapshotError),
}

/// One vCPU, set up and ready to run on its own thread.
pub struct Vcpu {
    id: u32,
    fd: VcpuFd,
    /// The CPUID the guest sees (saved with the vCPU).
    cpuid: Vec<kvm_cpuid_entry2>,
    /// The MSRs a snapshot saves (KVM's index list).
    msrs: Arc<[u32]>,
    pio: Arc<PioBus>,
    mmio: Arc<MmioBus>,
    life: Arc<Lifecycle>,
}

/// What the boot set-up of every vCPU needs.
pub struct VcpuConfig<'a> {
    /// KVM's supported CPUID.
    pub supported_cpuid: &'a CpuId,
    /// The CPUID mask.
    pub cpuid_mask: &'a [FeatureBit],
    /// vCPU count.
    pub cpus: u32,
    /// The kernel's 64-bit entry.
    pub entry: u64,
    /// The MSRs a snapshot saves (`KVM_GET_MSR_INDEX_LIST`).
    pub msrs: Arc<[u32]>,
}

impl Vcpu {
    /// Creates vCPU `id` and sets it up to enter the kernel. Every vCPU gets the same
    /// boot state; only vCPU 0 (the BSP) runs, the others keep KVM's default
    /// wait-for-SIPI state until the guest starts them.
    pub fn new(
        vm: &VmFd,
        id: u32,
        cfg: &VcpuConfig<'_>,
        pio: Arc<PioBus>,
        mmio: Arc<MmioBus>,
        life: Arc<Lifecycle>,
    ) -> Result<Self, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(|source| VcpuError::Create { id, source })?;
        let cpuid = cpuid::vcpu_cpuid(cfg.supported_cpuid, id, cfg.cpus, cfg.cpuid_mask)
            .map_err(|source| VcpuError::Cpuid { id, source })?;
        fd.set_cpuid2(&cpuid)
            .map_err(|source| VcpuError::SetCpuid { id, source })?;
        let regs_err = |source| VcpuError::Regs { id, source };
        regs::setup_msrs(&fd).map_err(regs_err)?;
        regs::setup_regs(&fd, cfg.entry).map_err(regs_err)?;
        regs::setup_sregs(&fd).map_err(regs_err)?;
        regs::setup_fpu(&fd).map_err(regs_err)?;
        regs::setup_lapic(&fd).map_err(regs_err)?;
        Ok(Self {
            id,
            fd,
            cpuid: cpuid.as_slice().to_vec(),
            msrs: cfg.msrs.clone(),
            pio,
            mmio,
            life,
        })
    }

    /// Creates vCPU `saved.id` in the state a snapshot saved (its CPUID included);
    /// returns it and how many of its MSRs KVM would not set.
    pub fn restore(
        vm: &VmFd,
        saved: &VcpuState,
        msrs: Arc<[u32]>,
        pio: Arc<PioBus>,
        mmio: Arc<MmioBus>,
        life: Arc<Lifecycle>,
    ) -> Result<(Self, usize), VcpuError> {
        let id = saved.id;
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(|source| VcpuError::Create { id, source })?;
        let refused = state::restore(&fd, saved)?;
        let vcpu = Self {
            id,
            fd,
            cpuid: saved.cpuid.clone(),
            msrs,
            pio,
            mmio,
            life,
        };
        Ok((vcpu, refused))
    }

    /// Runs a command of the controller; called parked, outside `KVM_RUN`.
    fn command(&self, cmd: VcpuCommand) -> VcpuReply {
        match cmd {
            VcpuCommand::Save => match state::save(&self.fd, self.id, &self.cpuid, &self.msrs) {
                Ok(s) => VcpuReply::Saved(Box::new(s)),
                Err(e) => VcpuReply::Failed(e),
            },
        }
    }

    /// The vCPU's index.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The guest's TSC rate in kHz (`KVM_GET_TSC_KHZ`), when KVM says.
    pub fn tsc_khz(&self) -> Option<u32> {
        self.fd.get_tsc_khz().ok()
    }

    /// Runs the guest until the VM stops. Stop reasons go to the lifecycle.
    pub fn run(mut self) {
        self.life.register_vcpu_thread(self.id);
        let life = self.life.clone();
        while !life.stopping() {
            life.park_if_paused(self.id, &mut |cmd| self.command(cmd));
            if life.stopping() {
                break;
            }
            if let Some(reason) = self.run_once() {
                self.life.request_stop(reason);
                break;
            }
        }
        self.life.unregister_vcpu_thread(self.id);
    }

    /// One `KVM_RUN`; returns a reason when the VM must stop.
    fn run_once(&mut self) -> Option<StopReason> {
        let counters = &self.life.counters;
        let outcome = match self.fd.run() {
            Ok(exit) => {
                ExitCounters::bump(&counters.total);
                handle_exit(exit, &self.pio, &self.mmio, counters)
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                ExitCounters::bump(&counters.interrupted);
                Outcome::Continue
            }
            Err(e) => Outcome::Fault(format!("KVM_RUN failed: {e}")),
        };
        match outcome {
            Outcome::Continue => None,
            Outcome::PowerOff => Some(StopReason::PowerOff),
            Outcome::InternalError => {
                let reason = self.internal_error();
                Some(self.fault(reason))
            }
            Outcome::Fault(reason) => Some(self.fault(reason)),
        }
    }

    /// Describes KVM's internal error from the run structure.
    fn internal_error(&mut self) -> String {
        let run = self.fd.get_kvm_run();
        // SAFETY: after KVM_EXIT_INTERNAL_ERROR the `internal` member of the union is
        // the one KVM filled in.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let what = match internal.suberror {
            KVM_INTERNAL_ERROR_EMULATION => "instruction emulation failed",
            KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
            KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
            _ => "KVM internal error",
        };
        format!(
            "{what} (KVM_EXIT_INTERNAL_ERROR, suberror {})",
            internal.suberror
        )
    }

    /// A fault reason with where the vCPU was.
    fn fault(&self, reason: String) -> StopReason {
        let reason = match self.fd.get_regs() {
            Ok(r) => format!("{reason} at rip {:#x}", r.rip),
            Err(_) => reason,
        };
        StopReason::Fault {
            vcpu: self.id,
            reason,
        }
    }
}

enum Outcome {
    Continue,
    PowerOff,
    InternalError,
    Fault(String),
}

fn handle_exit(exit: VcpuExit<'_>, pio: &PioBus, mmio: &MmioBus, c: &ExitCounters) -> Outcome {
    match exit {
        VcpuExit::IoOut(port, data) => {
            ExitCounters::bump(&c.io);
            if !pio.write(u64::from(port), data) {
                ExitCounters::bump(&c.unknown_io);
            }
            Outcome::Continue
        }
        VcpuExit::IoIn(port, data) => {
            ExitCounters::bump(&c.io);
            if !pio.read(u64::from(port), data) {
                ExitCounters::bump(&c.unknown_io);
            }
            Outcome::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            ExitCounters::bump(&c.mmio);
            if !mmio.write(addr, data) {
                ExitCounters::bump(&c.unknown_mmio);
            }
            Outcome::Continue
        }
        VcpuExit::MmioRead(addr, data) => {
            ExitCounters::bump(&c.mmio);
            if !mmio.read(addr, data) {
                ExitCounters::bump(&c.unknown_mmio);
            }
            Outcome::Continue
        }
        // Only without an in-kernel irqchip; a halted guest with nothing to wake it.
        VcpuExit::Hlt => Outcome::PowerOff,
        VcpuExit::Shutdown => Outcome::Fault("triple fault (KVM_EXIT_SHUTDOWN)".into()),
        VcpuExit::InternalError => Outcome::InternalError,
        VcpuExit::FailEntry(reason, cpu) => Outcome::Fault(format!(
            "VM entry failed (KVM_EXIT_FAIL_ENTRY, hardware reason {reason:#x}, cpu {cpu})"
        )),
        VcpuExit::SystemEvent(kind, _) => match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN | KVM_SYSTEM_EVENT_RESET => Outcome::PowerOff,
            KVM_SYSTEM_EVENT_CRASH => Outcome::Fault("the guest crashed (system event)".into()),
            other => Outcome::Fault(format!("unexpected KVM system event {other}")),
        },
        VcpuExit::Intr => Outcome::Continue,
        other => Outcome::Fault(format!("unexpected KVM exit {other:?}")),
    }
}
