//! The control threads' filter (plus [`super::base`]): the control socket, the console
//! socket and the termination signals — what the host side tells the VMM. No file is
//! opened, no socket made: they serve the listeners they were given. A snapshot is
//! saved on the control thread into files its client sends with the request.

use kvm_bindings::{
    kvm_clock_data, kvm_dirty_log, kvm_irqchip, kvm_pit_state2, kvm_userspace_memory_region, KVMIO,
};
use vmm_sys_util::ioctl::{ioctl_expr, _IOC_READ, _IOC_WRITE};

use super::{any, arg_in, ioctl, Rule};

/// The VM getters a snapshot's save runs (`snapshot::vm::save`): `KVM_GET_IRQCHIP`,
/// `KVM_GET_PIT2`, `KVM_GET_CLOCK`. Nothing that sets or adds.
pub const KVM_VM_GETTERS: [u64; 3] = [
    ioctl_expr(
        _IOC_READ | _IOC_WRITE,
        KVMIO,
        0x62,
        std::mem::size_of::<kvm_irqchip>() as u32,
    ) as u64,
    ioctl_expr(
        _IOC_READ,
        KVMIO,
        0x9f,
        std::mem::size_of::<kvm_pit_state2>() as u32,
    ) as u64,
    ioctl_expr(
        _IOC_READ,
        KVMIO,
        0x7c,
        std::mem::size_of::<kvm_clock_data>() as u32,
    ) as u64,
];

/// A live migration's dirty-page log: `KVM_GET_DIRTY_LOG`, and
/// `KVM_SET_USER_MEMORY_REGION` to turn `KVM_MEM_LOG_DIRTY_PAGES` on and off on the
/// slots already there (the control thread registers them again, same place, other
/// flags; the ioctl's argument is a pointer, so seccomp cannot hold it to that).
pub const KVM_DIRTY_LOG: [u64; 2] = [
    ioctl_expr(
        _IOC_WRITE,
        KVMIO,
        0x42,
        std::mem::size_of::<kvm_dirty_log>() as u32,
    ) as u64,
    ioctl_expr(
        _IOC_WRITE,
        KVMIO,
        0x46,
        std::mem::size_of::<kvm_userspace_memory_region>() as u32,
    ) as u64,
];

/// The control rules, one a line.
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    any(libc::SYS_poll, "the control and console loops wait for clients"),
    any(libc::SYS_accept4, "a new client of the control or console socket"),
    any(libc::SYS_recvfrom, "console input (a socket's read)"),
    any(libc::SYS_recvmsg, "a control request and the files sent with it (a snapshot's state and memory files)"),
    any(libc::SYS_sendto, "replies, console headers (a socket's write)"),
    any(libc::SYS_write, "irqfds: the serial port's (console input), the i8042's (shutdown's Ctrl-Alt-Del); a migration's pages file"),
    ioctl(&[libc::FIONBIO], "a client's socket made (non-)blocking around a reply"),
    ioctl(&KVM_VM_GETTERS, "a snapshot saves the irqchip, the PIT and the KVM clock (getters only)"),
    ioctl(&KVM_DIRTY_LOG, "a live migration's pre-copy reads the dirty-page log, and turns it on and off"),
    any(libc::SYS_pwrite64, "a snapshot's memory file written (sparse); a disk write served before a snapshot"),
    any(libc::SYS_ftruncate, "a snapshot's memory file sized to guest memory"),
    any(libc::SYS_pread64, "a disk read served before a snapshot (requests the guest made before the pause)"),
    any(libc::SYS_fdatasync, "a disk flush served before a snapshot"),
    any(libc::SYS_read, "a NIC's tap drained into buffers the guest posted before a snapshot"),
    arg_in(libc::SYS_fcntl, 1, &[libc::F_DUPFD_CLOEXEC as u64], "the attached console client's socket split into input and output ends"),
    any(libc::SYS_setsockopt, "a reply's write timeout (SO_SNDTIMEO)"),
    any(libc::SYS_shutdown, "a console client detached"),
    any(libc::SYS_getpid, "`status` reports the VMM's pid"),
    any(libc::SYS_clock_nanosleep, "console input waits 1 ms for room in the guest's FIFO"),
    any(libc::SYS_tgkill, "`pause` kicks the vCPUs out of KVM_RUN"),
    any(libc::SYS_rt_sigtimedwait, "the signals thread waits for SIGTERM, SIGINT, SIGHUP"),
];

#[cfg(test)]
mod tests {
    #[test]
    fn compiles_for_x86_64() {
        super::super::tests::compiles_for_x86_64(crate::vmm::threads::ThreadKind::Control);
    }
}
