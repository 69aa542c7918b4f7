//! The virtio-mmio transport (virtio 1.x "modern" registers, version 2).
//!
//! One [`MmioTransport`] per device, mapped at a 4 KiB window the guest learns from its
//! command line (`virtio_mmio.device=4K@0xd0000000:5`). The VMM's MMIO bus calls
//! [`MmioTransport::read`] / [`MmioTransport::write`] with the offset in the window;
//! queue notifications arrive either as writes to `QueueNotify` or, when the VMM
//! registered an ioeventfd on [`NOTIFY_REG_OFFSET`] with datamatch = queue index, as
//! calls to [`MmioTransport::process_queue`] from its event loop.
//!
//! The register state machine distrusts the driver: registers are 32-bit aligned
//! accesses only (the config space at 0x100 takes aligned 1, 2, 4 and 8-byte accesses);
//! status may only move ACKNOWLEDGE → DRIVER → FEATURES_OK → DRIVER_OK (or FAILED, or
//! reset with 0); queue sizes must be non-zero powers of two within the maximum; queue
//! registers are frozen once a queue is ready or the driver set DRIVER_OK. Whatever is
//! refused is counted in [`TransportCounters`]; nothing panics.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

use super::{
    GuestMemoryMmap, Interrupt, IrqTrigger, IrqType, VirtioCounters, VirtioDevice,
    VIRTIO_F_VERSION_1,
};

/// Size of one device's MMIO window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// Offset of `QueueNotify`: where the VMM registers one ioeventfd per queue.
pub const NOTIFY_REG_OFFSET: u64 = 0x50;
/// Offset of the device-specific config space.
pub const CONFIG_SPACE_OFFSET: u64 = 0x100;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0; // not a registered PCI vendor; Linux ignores it

const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = NOTIFY_REG_OFFSET;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const REG_CONFIG_GENERATION: u64 = 0x0fc;

const S_ACK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
const S_DRIVER: u32 = VIRTIO_CONFIG_S_DRIVER;
const S_FEATURES_OK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;
const S_DRIVER_OK: u32 = VIRTIO_CONFIG_S_DRIVER_OK;
const S_FAILED: u32 = VIRTIO_CONFIG_S_FAILED;
const S_NEEDS_RESET: u32 = VIRTIO_CONFIG_S_NEEDS_RESET;

/// What the transport refused. Each counter is one kind of driver mistake.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportCounters {
    /// Accesses of the wrong width, misaligned, or outside the window or config space.
    pub bad_accesses: u64,
    /// Reads of write-only or unknown registers, writes to read-only or unknown ones.
    pub bad_registers: u64,
    /// Refused queue set-up: a size that is zero, not a power of two or above the
    /// maximum; a misaligned ring address; readying such a queue; a queue selector past
    /// the last queue.
    pub bad_queue_config: u64,
    /// Queue registers rewritten while the queue is ready or after DRIVER_OK.
    pub queue_config_after_ready: u64,
    /// Status writes that skip or undo a step, and refused FEATURES_OK (features the
    /// device does not offer, or no VERSION_1).
    pub bad_status: u64,
    /// Feature writes after FEATURES_OK.
    pub features_after_ok: u64,
    /// DRIVER_OK refused by the device (queues unusable); the device then shows
    /// NEEDS_RESET.
    pub activate_failures: u64,
    /// Queue notifications for an inactive device or a queue it does not have.
    pub bad_notifies: u64,
}

/// Why a transport could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MmioError {
    /// the device declares an invalid maximum queue size {size} for queue {index}
    #[error("the device declares an invalid maximum queue size {size} for queue {index}")]
    InvalidQueueMax { index: usize, size: u16 },
}

/// The virtio-mmio register interface of one device.
pub struct MmioTransport<D: VirtioDevice> {
    device: D,
    mem: GuestMemoryMmap,
    irq: IrqTrigger,
    queues: Vec<Queue>,
    /// Per queue: the driver wrote an invalid `QueueNum`, so the queue may not be readied.
    bad_size: Vec<bool>,
    /// Per queue and ring (table, avail, used): the address the driver wrote, and
    /// whether it is misaligned (then the queue may not be readied).
    ring_addrs: Vec<[u64; 3]>,
    bad_addr: Vec<[bool; 3]>,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
    counters: TransportCounters,
}

impl<D: VirtioDevice> std::fmt::Debug for MmioTransport<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_type", &self.device.device_type())
            .field("status", &self.status)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// A transport for `device` over `mem`, interrupting the guest through `line`
    /// (the VMM passes the irqfd of the device's GSI).
    pub fn new(
        mem: GuestMemoryMmap,
        device: D,
        line: Arc<dyn Interrupt>,
    ) -> Result<Self, MmioError> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .enumerate()
            .map(|(index, &size)| {
                Queue::new(size).map_err(|_| MmioError::InvalidQueueMax { index, size })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            bad_size: vec![false; queues.len()],
            bad_addr: vec![[false; 3]; queues.len()],
            ring_addrs: vec![[0; 3]; queues.len()],
            queues,
            device,
            mem,
            irq: IrqTrigger::new(line),
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
            counters: TransportCounters::default(),
        })
    }

    /// The device behind the transport.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device behind the transport, mutably (e.g. to hand a NIC its tap events).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// How many queues the device has (one ioeventfd each, datamatch = index).
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// The device status register as the driver last set it.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The `InterruptStatus` register.
    pub fn interrupt_status(&self) -> u32 {
        self.irq.status()
    }

    /// The counters of the transport and its device.
    pub fn counters(&self) -> VirtioCounters {
        VirtioCounters {
            transport: self.counters,
            device: self.device.counters(),
        }
    }

    /// A queue notification from the VMM's event loop (its ioeventfd for queue `index`
    /// fired). Ignored, and counted, while the device is not active.
    pub fn process_queue(&mut self, index: u16) {
        if self.device.is_activated() && usize::from(index) < self.queues.len() {
            self.device.process_queue(index);
        } else {
            self.counters.bad_notifies += 1;
        }
    }

    /// The device's host backend became ready (a NIC's tap is readable).
    pub fn process_backend(&mut self) {
        if self.device.is_activated() {
            self.device.process_backend();
        }
    }

    /// The fd of the device's host backend, if it has one (a NIC's tap): the VMM polls
    /// it with `EPOLLIN | EPOLLET` and calls [`MmioTransport::process_backend`].
    pub fn backend_fd(&self) -> Option<std::os::unix::io::RawFd> {
        self.device.backend_fd()
    }

    /// A guest read of `data.len()` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            self.read_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            self.counters.bad_accesses += 1;
            data.fill(0xff);
            return;
        }
        let value = match self.read_register(offset) {
            Some(v) => v,
            None => {
                self.counters.bad_registers += 1;
                0
            }
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// A guest write of `data` at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            self.write_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        let value = match <[u8; 4]>::try_from(data) {
            Ok(bytes) if offset.is_multiple_of(4) => u32::from_le_bytes(bytes),
            _ => {
                self.counters.bad_accesses += 1;
                return;
            }
        };
        self.write_register(offset, value);
    }

    fn read_register(&self, offset: u64) -> Option<u32> {
        let queue = self.queues.get(self.queue_sel as usize);
        Some(match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.avail_features() as u32,
                1 => (self.device.avail_features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.irq.status(),
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => self.config_generation,
            _ => return None,
        })
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            REG_DRIVER_FEATURES => self.write_driver_features(value),
            REG_QUEUE_SEL => self.queue_sel = value,
            REG_QUEUE_NUM => self.write_queue_num(value),
            REG_QUEUE_READY => self.write_queue_ready(value),
            REG_QUEUE_NOTIFY => match u16::try_from(value) {
                Ok(index) => self.process_queue(index),
                Err(_) => self.counters.bad_notifies += 1,
            },
            REG_INTERRUPT_ACK => self.irq.ack(value),
            REG_STATUS => self.write_status(value),
            REG_QUEUE_DESC_LOW
            | REG_QUEUE_DESC_HIGH
            | REG_QUEUE_DRIVER_LOW
            | REG_QUEUE_DRIVER_HIGH
            | REG_QUEUE_DEVICE_LOW
            | REG_QUEUE_DEVICE_HIGH => self.write_queue_address(offset, value),
            _ => self.counters.bad_registers += 1,
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status & S_FEATURES_OK != 0 {
            self.counters.features_after_ok += 1;
            return;
        }
        match self.driver_features_sel {
            0 => self.acked_features = (self.acked_features & !0xffff_ffff) | u64::from(value),
            1 => {
                self.acked_features = (self.acked_features & 0xffff_ffff) | (u64::from(value) << 32)
            }
            // Selectors past 1 name features nobody offers: acking none of them is fine.
            _ if value == 0 => {}
            _ => self.counters.bad_status += 1,
        }
    }

    /// The selected queue, if queue set-up may still change; counts why not otherwise.
    fn configurable_queue(&mut self) -> Option<usize> {
        let index = self.queue_sel as usize;
        if index >= self.queues.len() {
            self.counters.bad_queue_config += 1;
            return None;
        }
        if self.status & S_DRIVER_OK != 0 || self.queues[index].ready() {
            self.counters.queue_config_after_ready += 1;
            return None;
        }
        Some(index)
    }

    fn write_queue_num(&mut self, value: u32) {
        let Some(index) = self.configurable_queue() else {
            return;
        };
        let q = &mut self.queues[index];
        match u16::try_from(value) {
            Ok(size) if size != 0 && size.is_power_of_two() && size <= q.max_size() => {
                q.set_size(size);
                self.bad_size[index] = false;
            }
            _ => {
                self.bad_size[index] = true;
                self.counters.bad_queue_config += 1;
            }
        }
    }

    fn write_queue_ready(&mut self, value: u32) {
        let index = self.queue_sel as usize;
        if index >= self.queues.len() {
            self.counters.bad_queue_config += 1;
            return;
        }
        if self.status & S_DRIVER_OK != 0 {
            self.counters.queue_config_after_ready += 1;
            return;
        }
        match value {
            0 => self.queues[index].set_ready(false),
            1 if self.bad_size[index] || self.bad_addr[index].iter().any(|&b| b) => {
                self.counters.bad_queue_config += 1
            }
            1 => self.queues[index].set_ready(true),
            _ => self.counters.bad_queue_config += 1,
        }
    }

    fn write_queue_address(&mut self, offset: u64, value: u32) {
        let Some(index) = self.configurable_queue() else {
            return;
        };
        let (ring, high) = match offset {
            REG_QUEUE_DESC_LOW => (0, false),
            REG_QUEUE_DESC_HIGH => (0, true),
            REG_QUEUE_DRIVER_LOW => (1, false),
            REG_QUEUE_DRIVER_HIGH => (1, true),
            REG_QUEUE_DEVICE_LOW => (2, false),
            _ => (2, true),
        };
        // The driver's address as written so far (the queue keeps only valid ones).
        let addr = &mut self.ring_addrs[index][ring];
        *addr = if high {
            (*addr & 0xffff_ffff) | (u64::from(value) << 32)
        } else {
            (*addr & !0xffff_ffff) | u64::from(value)
        };
        let addr = GuestAddress(*addr);
        // The queue refuses misaligned rings (16 bytes for the table, 2 for the avail
        // ring, 4 for the used ring) and would keep its old address: refuse the queue
        // until the driver writes an aligned one.
        let q = &mut self.queues[index];
        let set = match ring {
            0 => q.try_set_desc_table_address(addr),
            1 => q.try_set_avail_ring_address(addr),
            _ => q.try_set_used_ring_address(addr),
        };
        self.bad_addr[index][ring] = set.is_err();
        if set.is_err() {
            self.counters.bad_queue_config += 1;
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & S_FAILED != 0 {
            // The driver gave up; nothing to check, the next step is a reset.
            self.status |= S_FAILED;
            return;
        }
        // NEEDS_RESET is the device's bit: the driver echoes it back, never sets it.
        let current = self.status & !S_NEEDS_RESET;
        let wanted = value & !S_NEEDS_RESET;
        if wanted == current {
            return;
        }
        if self.status & (S_NEEDS_RESET | S_FAILED) != 0 {
            self.counters.bad_status += 1;
            return;
        }
        let step = wanted & !current;
        let keeps_bits = wanted & current == current;
        match (keeps_bits, step) {
            (true, S_ACK) if current == 0 => self.status = wanted,
            (true, S_DRIVER) if current == S_ACK => self.status = wanted,
            (true, S_FEATURES_OK) if current == S_ACK | S_DRIVER => {
                if self.features_acceptable() {
                    self.status = wanted;
                } else {
                    self.counters.bad_status += 1;
                }
            }
            (true, S_DRIVER_OK) if current == S_ACK | S_DRIVER | S_FEATURES_OK => {
                self.status = wanted;
                self.activate();
            }
            _ => self.counters.bad_status += 1,
        }
    }

    fn features_acceptable(&self) -> bool {
        self.acked_features & !self.device.avail_features() == 0
            && self.acked_features & VIRTIO_F_VERSION_1 != 0
    }

    fn activate(&mut self) {
        let usable = self
            .queues
            .iter()
            .all(|q| !q.ready() || q.is_valid(&self.mem));
        // The device gets its own copies; the transport keeps its view for the
        // registers the driver may still read.
        let copies = self
            .queues
            .iter()
            .map(|q| Queue::try_from(q.state()))
            .collect::<Result<Vec<_>, _>>();
        let result = match copies {
            Ok(queues) if usable => self.device.activate(
                self.mem.clone(),
                queues,
                self.acked_features,
                self.irq.clone(),
            ),
            _ => Err(super::ActivateError::QueueNotUsable {
                index: self
                    .queues
                    .iter()
                    .position(|q| q.ready() && !q.is_valid(&self.mem))
                    .unwrap_or(0),
            }),
        };
        if result.is_err() {
            self.counters.activate_failures += 1;
            self.status |= S_NEEDS_RESET;
            // The spec asks for a config-change interrupt with NEEDS_RESET. A failing
            // irqfd is not worth more than the counter above.
            let _ = self.irq.trigger(IrqType::Config);
        }
    }

    fn reset(&mut self) {
        self.device.reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.bad_size.fill(false);
        self.bad_addr.fill([false; 3]);
        self.ring_addrs.fill([0; 3]);
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.queue_sel = 0;
        self.status = 0;
        self.irq.clear();
    }

    /// The config space is accessed in naturally aligned 1, 2, 4 or 8-byte units.
    fn config_access_ok(&mut self, offset: u64, len: usize) -> Option<usize> {
        let config_len = self.device.config_space().len() as u64;
        let aligned = matches!(len, 1 | 2 | 4 | 8) && offset.is_multiple_of(len as u64);
        let end = offset.checked_add(len as u64);
        if aligned && end.is_some_and(|end| end <= config_len) {
            Some(offset as usize)
        } else {
            self.counters.bad_accesses += 1;
            None
        }
    }

    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        match self.config_access_ok(offset, data.len()) {
            Some(start) => {
                data.copy_from_slice(&self.device.config_space()[start..start + data.len()])
            }
            None => data.fill(0xff),
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if let Some(start) = self.config_access_ok(offset, data.len()) {
            if self.device.write_config(start, data) {
                self.config_generation = self.config_generation.wrapping_add(1);
            } else {
                self.counters.bad_registers += 1;
            }
        }
    }
}

pub mod state;

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;

impl<D: VirtioDevice + Send> crate::vmm::devices::bus::BusDevice for MmioTransport<D> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        MmioTransport::read(self, offset, data)
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        MmioTransport::write(self, offset, data)
    }
}
