//! The vCPU threads' filter (plus [`super::base`]): `KVM_RUN` and the exits it returns.
//! A port or MMIO exit runs device code on the vCPU thread: the serial port writes
//! the console log (and rotates it) and the console client, a device raises its
//! interrupt through its irqfd, and a virtio register write can run the device — a
//! queue notification that misses its ioeventfd, or a NIC whose driver becomes ready —
//! so the device's I/O calls are here too.

use kvm_bindings::{
    kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msrs, kvm_regs, kvm_sregs, kvm_vcpu_events,
    kvm_xcrs, kvm_xsave, KVMIO,
};
use vmm_sys_util::ioctl::{ioctl_expr, _IOC_NONE, _IOC_READ, _IOC_WRITE};

use super::{any, arg_in, ioctl, Rule};

/// `KVM_RUN`.
pub const KVM_RUN: u64 = ioctl_expr(_IOC_NONE, KVMIO, 0x80, 0) as u64;
/// `KVM_GET_REGS`.
pub const KVM_GET_REGS: u64 = ioctl_expr(
    _IOC_READ,
    KVMIO,
    0x81,
    std::mem::size_of::<kvm_regs>() as u32,
) as u64;

const fn ior<T>(nr: u32) -> u64 {
    ioctl_expr(_IOC_READ, KVMIO, nr, std::mem::size_of::<T>() as u32) as u64
}

/// The getters a parked vCPU thread runs to save its vCPU for a snapshot
/// (`snapshot::vcpu::save`): `KVM_GET_MP_STATE`, `KVM_GET_SREGS`, `KVM_GET_XSAVE`,
/// `KVM_GET_XCRS`, `KVM_GET_DEBUGREGS`, `KVM_GET_LAPIC`, `KVM_GET_MSRS`,
/// `KVM_GET_VCPU_EVENTS` (`KVM_GET_REGS` is above). Nothing that sets.
pub const KVM_GETTERS: [u64; 8] = [
    ior::<kvm_mp_state>(0x98),
    ior::<kvm_sregs>(0x83),
    ior::<kvm_xsave>(0xa4),
    ior::<kvm_xcrs>(0xa6),
    ior::<kvm_debugregs>(0xa1),
    ior::<kvm_lapic_state>(0x8e),
    ioctl_expr(
        _IOC_READ | _IOC_WRITE,
        KVMIO,
        0x88,
        std::mem::size_of::<kvm_msrs>() as u32,
    ) as u64,
    ior::<kvm_vcpu_events>(0x9f),
];

/// The flags the console log is opened with (`process::open_console_log`).
const CONSOLE_LOG_OPEN: u64 =
    (libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64;

/// The vCPU rules, one a line.
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    ioctl(&[KVM_RUN, KVM_GET_REGS], "KVM_RUN runs the guest; KVM_GET_REGS finds the rip of a guest fault and saves the registers"),
    ioctl(&KVM_GETTERS, "a parked vCPU saves its state for a snapshot (getters only)"),
    any(libc::SYS_rt_sigreturn, "return from the kick signal's handler"),
    any(libc::SYS_write, "serial output to the console log or stdout; irqfds; frames to a tap"),
    any(libc::SYS_read, "a NIC's tap, drained when its driver becomes ready"),
    any(libc::SYS_sendto, "serial output to the console client, never blocking"),
    any(libc::SYS_shutdown, "a console client gone away is detached"),
    any(libc::SYS_pread64, "a disk read run by a queue notification"),
    any(libc::SYS_pwrite64, "a disk write run by a queue notification"),
    any(libc::SYS_fdatasync, "a disk flush run by a queue notification"),
    any(libc::SYS_ftruncate, "a jailed VMM's console log emptied once copied into console.log.1 (or emptied when it cannot be rotated)"),
];

/// What only an unjailed VMM's vCPU (`--no-sandbox`) makes: the console log rotated by
/// path. A jailed VMM rotates it through file descriptors it already holds
/// (`console_log`: `pread64`, `write`, `ftruncate`), so its vCPUs may open nothing.
#[rustfmt::skip]
pub const UNJAILED_RULES: &[Rule] = &[
    any(libc::SYS_rename, "the console log rotated: console.log becomes console.log.1"),
    arg_in(libc::SYS_openat, 2, &[CONSOLE_LOG_OPEN], "the rotated console log's new file: write, append, create, no symlink"),
    any(libc::SYS_fchmod, "the new console log's mode (0640, whatever the umask)"),
    arg_in(libc::SYS_dup2, 1, &[libc::STDOUT_FILENO as u64, libc::STDERR_FILENO as u64], "a detached VMM's stdout and stderr follow the rotated console log"),
];

#[cfg(test)]
mod tests {
    #[test]
    fn compiles_for_x86_64() {
        super::super::tests::compiles_for_x86_64(crate::vmm::threads::ThreadKind::Vcpu);
    }
}
