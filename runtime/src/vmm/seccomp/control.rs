//! The control threads' filter (plus [`super::base`]): the control socket, the console
//! socket and the termination signals — what the host side tells the VMM. No file is
//! opened, no socket made: they serve the listeners they were given.

use super::{any, arg_in, ioctl, Rule};

/// The control rules, one a line.
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    any(libc::SYS_poll, "the control and console loops wait for clients"),
    any(libc::SYS_accept4, "a new client of the control or console socket"),
    any(libc::SYS_recvfrom, "a client's request or console input (a socket's read)"),
    any(libc::SYS_sendto, "replies, console headers (a socket's write)"),
    any(libc::SYS_write, "irqfds: the serial port's (console input), the i8042's (shutdown's Ctrl-Alt-Del)"),
    ioctl(&[libc::FIONBIO], "a client's socket made (non-)blocking around a reply"),
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
