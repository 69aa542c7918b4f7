//! virtio-net over a [`Tap`]: queue 0 receives (tap → guest), queue 1 transmits
//! (guest → tap). No offloads are offered, so frames carry a zeroed 12-byte header.
//!
//! No busy loops: receiving runs when the tap became readable (the VMM polls its fd
//! edge-triggered, `EPOLLIN | EPOLLET`, and calls [`VirtioDevice::process_backend`]) or
//! when the guest adds receive buffers (a notification on queue 0). It takes frames from
//! the tap only while the guest has buffers for them, until the tap is empty; with no
//! buffers left it stops and leaves the rest in the tap until the guest adds some. A
//! frame read but not delivered (its chain was malformed) is kept for the next buffer.

use std::io;
use std::os::unix::io::RawFd;

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::Queue;
use vm_memory::Bytes;

use super::announce;
use super::tap::{Tap, VNET_HDR_LEN};
use crate::vmm::devices::virtio::{
    chain, take_queues, ActivateError, DeviceCounters, GuestMemoryMmap, IrqTrigger, VirtioDevice,
    VIRTIO_F_VERSION_1,
};

/// Index of the receive queue.
pub const RX_QUEUE: u16 = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: u16 = 1;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Largest frame moved, header included (a 64 KiB GSO frame, Ethernet and VLAN header).
pub const MAX_FRAME: usize = 65562;
/// Config space: the MAC and a status word (not offered: the link is always up).
const CONFIG_LEN: usize = 8;

/// The state a NIC has only while the driver runs it.
#[derive(Debug)]
struct Active {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    irq: IrqTrigger,
}

/// A virtio-net device over a tap.
#[derive(Debug)]
pub struct Net<T: Tap> {
    tap: T,
    config: [u8; CONFIG_LEN],
    active: Option<Active>,
    /// A frame read from the tap and not yet delivered: `rx_frame[..rx_len]`.
    rx_frame: Vec<u8>,
    rx_len: usize,
    tx_frame: Vec<u8>,
    descs: Vec<Descriptor>,
    counters: DeviceCounters,
}

impl<T: Tap> Net<T> {
    /// A NIC with address `mac` over `tap`.
    pub fn new(tap: T, mac: [u8; 6]) -> Self {
        let mut config = [0u8; CONFIG_LEN];
        config[..6].copy_from_slice(&mac);
        Self {
            tap,
            config,
            active: None,
            rx_frame: vec![0; MAX_FRAME],
            rx_len: 0,
            tx_frame: Vec::with_capacity(MAX_FRAME),
            descs: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            counters: DeviceCounters::default(),
        }
    }

    /// The NIC's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.config[..6]);
        mac
    }

    /// The tap behind the NIC.
    pub fn tap(&self) -> &T {
        &self.tap
    }

    /// The tap behind the NIC, mutably.
    pub fn tap_mut(&mut self) -> &mut T {
        &mut self.tap
    }

    /// Whether a frame from the tap waits for a guest buffer.
    pub fn rx_deferred(&self) -> bool {
        self.rx_len > 0
    }

    /// Moves frames from the tap into the guest's receive buffers while both last.
    fn process_rx(&mut self) {
        let Some(Active { mem, rx, irq, .. }) = self.active.as_mut() else {
            return;
        };
        let counters = &mut self.counters;
        let mut used = false;
        // Each turn consumes a guest buffer; it stops when the guest has none left or
        // the tap is empty.
        while let Some(1..) = chain::pending(rx, mem, counters) {
            if self.rx_len == 0 {
                match self.tap.read_frame(&mut self.rx_frame) {
                    Ok(n) if n > VNET_HDR_LEN => self.rx_len = n,
                    Ok(_) => {
                        counters.frames_dropped += 1;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        counters.io_errors += 1;
                        break;
                    }
                }
            }
            let Some((head, shape)) = chain::pop(rx, mem, &mut self.descs) else {
                break;
            };
            let delivered = match shape {
                Ok(()) if self.descs.iter().all(Descriptor::is_write_only) => {
                    let frame = &mut self.rx_frame[..self.rx_len];
                    // num_buffers: always one buffer without VIRTIO_NET_F_MRG_RXBUF.
                    frame[10..12].copy_from_slice(&1u16.to_le_bytes());
                    let len = deliver(mem, &self.descs, frame, counters);
                    self.rx_len = 0;
                    len
                }
                _ => {
                    // Keep the frame for the next, hopefully well-formed, buffer.
                    counters.bad_chains += 1;
                    0
                }
            };
            used |= chain::add_used(rx, mem, head, delivered, counters);
        }
        if used {
            chain::notify(rx, mem, irq, counters);
        }
    }

    /// Sends every frame the guest queued for transmission.
    fn process_tx(&mut self) {
        let Some(Active { mem, tx, irq, .. }) = self.active.as_mut() else {
            return;
        };
        let counters = &mut self.counters;
        let Some(pending) = chain::pending(tx, mem, counters) else {
            return;
        };
        let mut used = false;
        for _ in 0..pending {
            let Some((head, shape)) = chain::pop(tx, mem, &mut self.descs) else {
                break;
            };
            if shape.is_err() || self.descs.iter().any(Descriptor::is_write_only) {
                counters.bad_chains += 1;
            } else if gather(mem, &self.descs, &mut self.tx_frame) {
                match self.tap.write_frame(&self.tx_frame) {
                    Ok(_) => {
                        counters.requests += 1;
                        counters.bytes_from_guest += self.tx_frame.len() as u64;
                    }
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            counters.io_errors += 1;
                        }
                        counters.frames_dropped += 1;
                    }
                }
            } else {
                counters.bad_requests += 1;
                counters.frames_dropped += 1;
            }
            used |= chain::add_used(tx, mem, head, 0, counters);
        }
        if used {
            chain::notify(tx, mem, irq, counters);
        }
    }
}

/// Copies `frame` into the writable buffers `descs`; returns the used length, or 0 when
/// the frame does not fit (it is dropped: the guest's buffers are too small).
fn deliver(
    mem: &GuestMemoryMmap,
    descs: &[Descriptor],
    frame: &[u8],
    counters: &mut DeviceCounters,
) -> u32 {
    let room: u64 = descs.iter().map(|d| u64::from(d.len())).sum();
    if room < frame.len() as u64 {
        counters.frames_dropped += 1;
        return 0;
    }
    let mut done = 0;
    for d in descs {
        if done == frame.len() {
            break;
        }
        let n = (frame.len() - done).min(d.len() as usize);
        if mem.write_slice(&frame[done..done + n], d.addr()).is_err() {
            counters.frames_dropped += 1;
            return 0;
        }
        done += n;
    }
    counters.requests += 1;
    counters.bytes_to_guest += frame.len() as u64;
    frame.len() as u32
}

/// Gathers the readable buffers `descs` into `frame`; `false` when the result is not a
/// frame (shorter than its header, or longer than [`MAX_FRAME`]).
fn gather(mem: &GuestMemoryMmap, descs: &[Descriptor], frame: &mut Vec<u8>) -> bool {
    let len: u64 = descs.iter().map(|d| u64::from(d.len())).sum();
    if len <= VNET_HDR_LEN as u64 || len > MAX_FRAME as u64 {
        return false;
    }
    frame.clear();
    frame.resize(len as usize, 0);
    let mut done = 0;
    for d in descs {
        let n = d.len() as usize;
        if mem
            .read_slice(&mut frame[done..done + n], d.addr())
            .is_err()
        {
            return false;
        }
        done += n;
    }
    true
}

impl<T: Tap> VirtioDevice for Net<T> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | (1 << VIRTIO_NET_F_MAC)
    }

    fn config_space(&self) -> &[u8] {
        &self.config
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        _acked_features: u64,
        irq: IrqTrigger,
    ) -> Result<(), ActivateError> {
        let [rx, tx] = take_queues(self.active.is_some(), queues)?;
        self.active = Some(Active { mem, rx, tx, irq });
        // Frames may have waited in the tap since before the driver came up.
        self.process_rx();
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn process_queue(&mut self, index: u16) {
        match index {
            RX_QUEUE => self.process_rx(),
            TX_QUEUE => self.process_tx(),
            _ => {}
        }
    }

    fn process_backend(&mut self) {
        self.process_rx();
    }

    fn backend_fd(&self) -> Option<RawFd> {
        self.tap.fd()
    }

    fn reset(&mut self) {
        self.active = None;
        self.rx_len = 0;
    }

    /// A frame read from the tap and not yet delivered is not saved: like a frame lost
    /// on the wire, the sender's protocol sends it again.
    fn queue_states(&self) -> Option<Vec<virtio_queue::QueueState>> {
        self.active
            .as_ref()
            .map(|a| vec![a.rx.state(), a.tx.state()])
    }

    /// One RARP request of the NIC's MAC out of its tap ([`announce`]), whether or not
    /// the driver runs the device: the MAC is the device's. Counted in
    /// `announcements`; a tap that refuses it counts a dropped frame.
    fn announce(&mut self) {
        let frame = announce::rarp_frame(self.mac());
        match self.tap.write_frame(&frame) {
            Ok(_) => self.counters.announcements += 1,
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    self.counters.io_errors += 1;
                }
                self.counters.frames_dropped += 1;
            }
        }
    }

    fn counters(&self) -> DeviceCounters {
        self.counters
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
