//! Emulated devices and the buses that route guest port I/O and MMIO to them.
//!
//! Device logic knows nothing of KVM (vm-superio style): a device is generic over how
//! it raises an interrupt or asks for a reset ([`vm_superio::Trigger`]), and the
//! engine wires those triggers to eventfds. Virtio devices (issue 4) will live in
//! `devices/virtio/` (device, mmio transport, queues apart) on the [`bus::MmioBus`].

pub mod bus;
pub mod i8042;
pub mod serial;
pub mod virtio;

use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

/// A [`Trigger`] that writes an eventfd, e.g. one registered as a KVM irqfd.
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
