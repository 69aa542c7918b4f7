//! virtio devices: the device trait, interrupts, counters, and the devices themselves.
//!
//! Three things are kept apart (see STYLE.md, "Device, transport and interrupt apart"):
//!
//! - the **device** ([`VirtioDevice`]): features, config space, and the request
//!   processing of its queues ([`block::Block`], [`net::Net`]);
//! - the **transport** ([`mmio::MmioTransport`]): the virtio-mmio register state machine
//!   that the guest driver talks to, which owns the queues until the driver sets
//!   DRIVER_OK and then hands them to the device;
//! - the **interrupt** ([`Interrupt`]): how the device tells the guest that it used
//!   buffers or changed its config. The VMM implements it with a KVM irqfd (an
//!   [`EventFd`], implemented here); tests use a counting fake.
//!
//! Guest memory and every descriptor are hostile input: nothing here panics on what a
//! guest writes; bad requests are refused and counted in [`DeviceCounters`] and
//! [`mmio::TransportCounters`], which the engine's `status` reports.
//!
//! # Wiring a device into the VMM
//!
//! For device `n` at `base = 0xd000_0000 + n * 0x1000` with GSI `irq`:
//!
//! 1. Build the device: [`block::Block::open`]`(path, read_only)`, or
//!    [`net::Net::new`]`(`[`net::TapDevice::open`]`(tap_name)?, mac)`.
//! 2. `let irqfd = EventFd::new(EFD_NONBLOCK)?`; `vm.register_irqfd(&irqfd, irq)`;
//!    `let t = MmioTransport::new(guest_mem.clone(), device, Arc::new(irqfd))?` and keep it
//!    in an `Arc<Mutex<_>>` (vCPU threads and the event loop both call it). Devices of
//!    different kinds fit one list as `MmioTransport<Box<dyn VirtioDevice>>`.
//! 3. Map `base..base + `[`mmio::MMIO_WINDOW_SIZE`] on the MMIO bus; the bus calls
//!    `t.read(addr - base, data)` / `t.write(addr - base, data)`.
//! 4. For each queue `q in 0..t.queue_count()`: an `EventFd`, registered with
//!    `vm.register_ioevent(&fd, &IoEventAddress::Mmio(base + `[`mmio::NOTIFY_REG_OFFSET`]`),
//!    q as u32)` (datamatch = queue index, 4 bytes); the event loop reads the fd and
//!    calls `t.process_queue(q)`. Without ioeventfds, the write reaches `t.write` and
//!    does the same.
//! 5. If `t.backend_fd()` is `Some(fd)` (a NIC's tap), add it to the event loop with
//!    `EPOLLIN | EPOLLET` and call `t.process_backend()` when it fires.
//! 6. Announce it on the kernel command line: `virtio_mmio.device=4K@<base>:<irq>`.
//! 7. `t.counters()` is a serializable [`VirtioCounters`] for `status`.

pub mod block;
mod chain;
pub mod mmio;
pub mod net;
#[doc(hidden)]
pub mod testing;

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

/// The guest memory type the devices work on.
pub type GuestMemoryMmap = crate::vmm::memory::GuestMemory;

/// `InterruptStatus` bit: the device used buffers in at least one queue.
pub const VIRTIO_MMIO_INT_VRING: u32 = 0x01;
/// `InterruptStatus` bit: the device's configuration changed.
pub const VIRTIO_MMIO_INT_CONFIG: u32 = 0x02;

/// The feature bit every modern (virtio 1.x) device offers and requires.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// Raises the device's interrupt line in the guest (an edge: one call, one interrupt).
///
/// The VMM's implementation is the irqfd registered with KVM for the device's GSI.
pub trait Interrupt: Send + Sync {
    /// Signals the guest.
    fn notify(&self) -> io::Result<()>;
}

impl Interrupt for EventFd {
    fn notify(&self) -> io::Result<()> {
        self.write(1)
    }
}

/// Why a device interrupts the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqType {
    /// Buffers were added to a used ring.
    Vring,
    /// The config space changed (or the device needs a reset).
    Config,
}

/// The device's side of the interrupt: sets the transport's `InterruptStatus` bit and
/// raises the line. Cheap to clone; the transport and the device share one.
#[derive(Clone)]
pub struct IrqTrigger {
    status: Arc<AtomicU32>,
    line: Arc<dyn Interrupt>,
}

impl std::fmt::Debug for IrqTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IrqTrigger")
            .field("status", &self.status.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl IrqTrigger {
    /// A trigger raising `line`, with `InterruptStatus` initially clear.
    pub fn new(line: Arc<dyn Interrupt>) -> Self {
        Self {
            status: Arc::new(AtomicU32::new(0)),
            line,
        }
    }

    /// Sets the status bit for `kind` and raises the line.
    pub fn trigger(&self, kind: IrqType) -> io::Result<()> {
        let bit = match kind {
            IrqType::Vring => VIRTIO_MMIO_INT_VRING,
            IrqType::Config => VIRTIO_MMIO_INT_CONFIG,
        };
        self.status.fetch_or(bit, Ordering::SeqCst);
        self.line.notify()
    }

    /// The current `InterruptStatus` register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clears the bits the driver acknowledged (`InterruptACK`).
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Clears every bit (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }

    /// Sets the register as a snapshot saved it (no interrupt is raised: a pending one
    /// is in the restored interrupt controller).
    pub fn set_status(&self, bits: u32) {
        self.status.store(bits, Ordering::SeqCst);
    }
}

/// What a device counts. Bad requests never stop a device; they are refused, counted, and
/// (where the chain can be returned at all) given back to the guest on the used ring.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCounters {
    /// Well-formed requests served (block requests, net frames moved).
    pub requests: u64,
    /// Malformed descriptor chains: head-only, looping, too long, pointing outside guest
    /// memory, buffers in the wrong direction, a head index outside the queue.
    pub bad_chains: u64,
    /// Well-formed chains carrying a bad request: unsupported type, out-of-bounds sector,
    /// length not a multiple of the sector size, oversized frame.
    pub bad_requests: u64,
    /// Notifications whose avail index ran more than the queue size ahead.
    pub invalid_avail_idx: u64,
    /// Failures writing the used ring (a guest that moved it outside its memory).
    pub used_ring_errors: u64,
    /// Host I/O errors (a write to a read-only disk, a failing tap).
    pub io_errors: u64,
    /// Bytes the device wrote into guest memory (disk reads, received frames).
    pub bytes_to_guest: u64,
    /// Bytes the device took from guest memory (disk writes, sent frames).
    pub bytes_from_guest: u64,
    /// Frames dropped: a full tap, no room in the guest's buffer, bad frames.
    pub frames_dropped: u64,
    /// Interrupts raised.
    pub interrupts: u64,
    /// Interrupts that could not be raised (the irqfd write failed).
    pub interrupt_errors: u64,
    /// Frames the device sent on its own to say where the guest is (a NIC of a
    /// restored VM: RARP requests of its MAC, [`net::announce`]).
    #[serde(default)]
    pub announcements: u64,
}

impl DeviceCounters {
    /// Adds `other` to these counters (used to keep totals across a device reset).
    pub fn add(&mut self, other: &DeviceCounters) {
        self.requests += other.requests;
        self.bad_chains += other.bad_chains;
        self.bad_requests += other.bad_requests;
        self.invalid_avail_idx += other.invalid_avail_idx;
        self.used_ring_errors += other.used_ring_errors;
        self.io_errors += other.io_errors;
        self.bytes_to_guest += other.bytes_to_guest;
        self.bytes_from_guest += other.bytes_from_guest;
        self.frames_dropped += other.frames_dropped;
        self.interrupts += other.interrupts;
        self.interrupt_errors += other.interrupt_errors;
        self.announcements += other.announcements;
    }

    /// Every refused guest request, whatever the reason.
    pub fn bad_total(&self) -> u64 {
        self.bad_chains + self.bad_requests + self.invalid_avail_idx + self.used_ring_errors
    }
}

/// Why a device refused to start when the driver set DRIVER_OK.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActivateError {
    /// the device got {got} queues, it needs {want}
    #[error("the device got {got} queues, it needs {want}")]
    QueueCount { got: usize, want: usize },
    /// queue {index} is not ready or lies outside guest memory
    #[error("queue {index} is not ready or lies outside guest memory")]
    QueueNotUsable { index: usize },
    /// the device is already active
    #[error("the device is already active")]
    AlreadyActive,
}

/// Checks the queues a device gets at activation: exactly `N`, each ready, and the
/// device not already active.
pub(crate) fn take_queues<const N: usize>(
    already_active: bool,
    queues: Vec<Queue>,
) -> Result<[Queue; N], ActivateError> {
    use virtio_queue::QueueT;
    if already_active {
        return Err(ActivateError::AlreadyActive);
    }
    let got = queues.len();
    let queues =
        <[Queue; N]>::try_from(queues).map_err(|_| ActivateError::QueueCount { got, want: N })?;
    if let Some(index) = queues.iter().position(|q| !q.ready()) {
        return Err(ActivateError::QueueNotUsable { index });
    }
    Ok(queues)
}

/// A virtio device, independent of its transport.
///
/// The transport calls these; the VMM calls them only through the transport
/// ([`mmio::MmioTransport::process_queue`] and friends).
pub trait VirtioDevice: Send {
    /// The virtio device ID (`VIRTIO_ID_BLOCK`, `VIRTIO_ID_NET`, …).
    fn device_type(&self) -> u32;

    /// The maximum size of each of the device's queues (each a power of two).
    fn queue_max_sizes(&self) -> &[u16];

    /// The feature bits the device offers.
    fn avail_features(&self) -> u64;

    /// The device-specific config space, as the guest reads it at offset 0x100.
    fn config_space(&self) -> &[u8];

    /// A driver write to the config space; `false` refuses it (the default: the
    /// devices here have read-only config spaces).
    fn write_config(&mut self, _offset: usize, _data: &[u8]) -> bool {
        false
    }

    /// Starts the device with the queues the driver set up and the features it acked.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        acked_features: u64,
        irq: IrqTrigger,
    ) -> Result<(), ActivateError>;

    /// Whether [`VirtioDevice::activate`] succeeded and no reset came since.
    fn is_activated(&self) -> bool;

    /// Serves the requests the guest made available on queue `index` (a queue
    /// notification: an ioeventfd fired, or a write to `QueueNotify`).
    fn process_queue(&mut self, index: u16);

    /// Serves the device's host-side backend (the tap of a NIC became readable).
    /// Devices without one ignore it.
    fn process_backend(&mut self) {}

    /// The fd of the device's host backend (a NIC's tap), which the VMM polls with
    /// `EPOLLIN | EPOLLET` and answers with [`VirtioDevice::process_backend`].
    fn backend_fd(&self) -> Option<std::os::unix::io::RawFd> {
        None
    }

    /// Back to the state before activation; the device drops its queues and memory.
    fn reset(&mut self);

    /// Where the active device is in each of its queues (`None` when not active), for
    /// a snapshot; [`VirtioDevice::activate`] with queues rebuilt from them restores it.
    fn queue_states(&self) -> Option<Vec<virtio_queue::QueueState>>;

    /// Tells the network the guest is here now (a restored VM's NIC: a RARP request
    /// of its MAC out of its tap). Devices with nothing to announce ignore it.
    fn announce(&mut self) {}

    /// The device's counters since it was created.
    fn counters(&self) -> DeviceCounters;
}

/// Lets transports of different device kinds live in one list:
/// `MmioTransport<Box<dyn VirtioDevice>>`.
impl VirtioDevice for Box<dyn VirtioDevice> {
    fn device_type(&self) -> u32 {
        (**self).device_type()
    }
    fn queue_max_sizes(&self) -> &[u16] {
        (**self).queue_max_sizes()
    }
    fn avail_features(&self) -> u64 {
        (**self).avail_features()
    }
    fn config_space(&self) -> &[u8] {
        (**self).config_space()
    }
    fn write_config(&mut self, offset: usize, data: &[u8]) -> bool {
        (**self).write_config(offset, data)
    }
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        acked_features: u64,
        irq: IrqTrigger,
    ) -> Result<(), ActivateError> {
        (**self).activate(mem, queues, acked_features, irq)
    }
    fn is_activated(&self) -> bool {
        (**self).is_activated()
    }
    fn process_queue(&mut self, index: u16) {
        (**self).process_queue(index)
    }
    fn process_backend(&mut self) {
        (**self).process_backend()
    }
    fn backend_fd(&self) -> Option<std::os::unix::io::RawFd> {
        (**self).backend_fd()
    }
    fn reset(&mut self) {
        (**self).reset()
    }
    fn queue_states(&self) -> Option<Vec<virtio_queue::QueueState>> {
        (**self).queue_states()
    }
    fn announce(&mut self) {
        (**self).announce()
    }
    fn counters(&self) -> DeviceCounters {
        (**self).counters()
    }
}

/// The counters of one device and its transport, as the engine's `status` reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioCounters {
    /// Counters of the virtio-mmio transport (the register interface).
    pub transport: mmio::TransportCounters,
    /// Counters of the device (its queues).
    pub device: DeviceCounters,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Counting(AtomicUsize);

    impl Interrupt for Counting {
        fn notify(&self) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn irq_trigger_sets_status_and_raises_line() {
        let line = Arc::new(Counting(AtomicUsize::new(0)));
        let irq = IrqTrigger::new(line.clone());
        irq.trigger(IrqType::Vring).unwrap();
        irq.trigger(IrqType::Config).unwrap();
        assert_eq!(irq.status(), VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);
        assert_eq!(line.0.load(Ordering::SeqCst), 2);
        irq.ack(VIRTIO_MMIO_INT_VRING);
        assert_eq!(irq.status(), VIRTIO_MMIO_INT_CONFIG);
        irq.clear();
        assert_eq!(irq.status(), 0);
    }

    #[test]
    fn transports_are_shareable_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<std::sync::Mutex<mmio::MmioTransport<block::Block>>>();
        shareable::<std::sync::Mutex<mmio::MmioTransport<net::Net<net::TapDevice>>>>();
        shareable::<std::sync::Mutex<mmio::MmioTransport<Box<dyn VirtioDevice>>>>();
    }

    #[test]
    fn counters_serialize_for_status() {
        let c = VirtioCounters::default();
        let json = serde_json::to_value(c).unwrap();
        assert_eq!(json["transport"]["bad_accesses"], 0);
        assert_eq!(json["device"]["bad_chains"], 0);
    }

    #[test]
    fn eventfd_is_an_interrupt() {
        let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let irq = IrqTrigger::new(Arc::new(fd.try_clone().unwrap()));
        irq.trigger(IrqType::Vring).unwrap();
        assert_eq!(fd.read().unwrap(), 1);
    }
}
