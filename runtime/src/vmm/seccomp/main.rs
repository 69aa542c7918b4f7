//! The main thread's filter (plus [`super::base`]), installed once the VM is built and
//! every other thread started, before a vCPU enters the guest. From then on the main
//! thread only waits for the VM to stop, stops the other threads, removes the VM's
//! sockets and pid file, says how the VM ended, and exits.

use super::{any, ioctl, Rule};

/// The main rules, one a line.
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    any(libc::SYS_tgkill, "vCPU threads kicked out of KVM_RUN to stop"),
    any(libc::SYS_getpid, "pthread_kill names the process of the vCPU it kicks"),
    any(libc::SYS_write, "the event loop's stop eventfd; the last words on stderr"),
    any(libc::SYS_shutdown, "the console client closed when the VM stops"),
    any(libc::SYS_unlink, "the control and console sockets and the pid file removed"),
    ioctl(&[libc::TCGETS, libc::TIOCGWINSZ], "the last words' look: is stderr a terminal, how wide (never changes it)"),
    any(libc::SYS_exit_group, "the VMM exits"),
];

#[cfg(test)]
mod tests {
    #[test]
    fn compiles_for_x86_64() {
        super::super::tests::compiles_for_x86_64(crate::vmm::threads::ThreadKind::Main);
    }
}
