//! The device thread's filter (plus [`super::base`]): the virtio event loop, which
//! waits on the queues' ioeventfds and the taps, serves disk requests and frames, and
//! raises interrupts through irqfds.

use super::{any, Rule};

/// The device rules, one a line.
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    any(libc::SYS_epoll_wait, "the event loop sleeps on ioeventfds, taps and its stop fd"),
    any(libc::SYS_read, "eventfd counters; frames from a tap"),
    any(libc::SYS_write, "irqfds; frames to a tap"),
    any(libc::SYS_pread64, "disk reads"),
    any(libc::SYS_pwrite64, "disk writes"),
    any(libc::SYS_fdatasync, "disk flushes"),
];

#[cfg(test)]
mod tests {
    #[test]
    fn compiles_for_x86_64() {
        super::super::tests::compiles_for_x86_64(crate::vmm::threads::ThreadKind::Device);
    }
}
