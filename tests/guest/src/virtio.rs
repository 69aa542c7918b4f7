//! A minimal virtio-mmio transport (virtio 1.x, "modern" registers, version 2) with
//! split virtqueues, polled: interrupts stay off, the guest polls the used ring in RAM
//! (cheap) rather than device registers (each access a VM exit).
//!
//! Devices come from the command line, as Linux reads them:
//! `virtio_mmio.device=<size>@<base>:<irq>[:<id>]`, one per device, in order.

use crate::clock;
use crate::io::{fill, mmio_rd32, mmio_rd8, mmio_wr32, rd16_volatile, rd32, wr16, wr32, wr64, MMIO_LIMIT};
use crate::report::Report;
use crate::serial;
use core::sync::atomic::{compiler_fence, Ordering};

pub const MAGIC: u32 = 0x7472_6976; // "virt"

pub const MAGIC_VALUE: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
pub const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
pub const QUEUE_NUM: u64 = 0x038;
pub const QUEUE_READY: u64 = 0x044;
pub const QUEUE_NOTIFY: u64 = 0x050;
const STATUS: u64 = 0x070;
const QUEUE_DESC_LOW: u64 = 0x080;
const QUEUE_DESC_HIGH: u64 = 0x084;
const QUEUE_DRIVER_LOW: u64 = 0x090;
const QUEUE_DRIVER_HIGH: u64 = 0x094;
const QUEUE_DEVICE_LOW: u64 = 0x0a0;
const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
/// Start of the device-specific configuration space.
pub const CONFIG: u64 = 0x100;

const S_ACKNOWLEDGE: u32 = 1;
const S_DRIVER: u32 = 2;
const S_DRIVER_OK: u32 = 4;
const S_FEATURES_OK: u32 = 8;
const S_FAILED: u32 = 128;

pub const F_VERSION_1: u64 = 1 << 32;

pub const ID_NET: u32 = 1;
pub const ID_BLK: u32 = 2;

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;

/// Entries per queue the driver asks for (fewer if the device's QueueNumMax is lower).
pub const QUEUE_SIZE: u16 = 16;

/// How many virtio_mmio.device entries the guest looks at.
pub const MAX_DEVICES: usize = 8;

/// A device window from the command line.
#[derive(Clone, Copy)]
pub struct Window {
    pub base: u64,
    pub size: u64,
}

/// Parses the number at `s[*i..]`: `0x` hex or decimal.
fn number(s: &[u8], i: &mut usize) -> Option<u64> {
    let hex = s.len() > *i + 1 && s[*i] == b'0' && (s[*i + 1] | 0x20) == b'x';
    if hex {
        *i += 2;
    }
    let radix = if hex { 16 } else { 10 };
    let start = *i;
    let mut n: u64 = 0;
    while let Some(&c) = s.get(*i) {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' if hex => c - b'a' + 10,
            b'A'..=b'F' if hex => c - b'A' + 10,
            _ => break,
        };
        n = n.checked_mul(radix)?.checked_add(u64::from(d))?;
        *i += 1;
    }
    (*i > start).then_some(n)
}

/// Parses `<size>@<base>:<irq>[:<id>]` (size with an optional K/M/G suffix).
pub fn parse_window(s: &[u8]) -> Option<Window> {
    let mut i = 0;
    let mut size = number(s, &mut i)?;
    let shift = match s.get(i) {
        Some(b'k' | b'K') => 10,
        Some(b'm' | b'M') => 20,
        Some(b'g' | b'G') => 30,
        _ => 0,
    };
    if shift != 0 {
        i += 1;
        size = size.checked_mul(1 << shift)?;
    }
    if s.get(i) != Some(&b'@') {
        return None;
    }
    i += 1;
    let base = number(s, &mut i)?;
    if s.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    number(s, &mut i)?; // irq: unused, interrupts stay off
    if s.get(i) == Some(&b':') {
        i += 1;
        number(s, &mut i)?; // platform device id
    }
    if i != s.len() {
        return None;
    }
    Some(Window { base, size })
}

/// A device whose registers answered: its window and DeviceID.
#[derive(Clone, Copy)]
pub struct Device {
    pub base: u64,
    pub size: u64,
    pub id: u32,
}

/// Starts `testguest: FAIL virtio-mmio@0x<base>: `; the caller prints the rest.
pub fn fail_begin(report: &mut Report, base: u64) {
    report.fail_begin();
    serial::bytes(b"virtio-mmio@0x");
    serial::hex(base, if base >> 32 == 0 { 8 } else { 16 });
    serial::bytes(b": ");
}

pub fn fail(report: &mut Report, base: u64, what: &[u8]) {
    fail_begin(report, base);
    serial::bytes(what);
    serial::end();
}

/// Checks the window and its registers. `None` for no device (DeviceID 0), device
/// types the guest does not drive, and failures (printed).
pub fn probe(w: Window, report: &mut Report) -> Option<Device> {
    if w.base == 0 || w.base & 3 != 0 || w.size < CONFIG || w.base >= MMIO_LIMIT
        || w.size > MMIO_LIMIT - w.base
    {
        fail(report, w.base, b"window unusable (zero, unaligned, under 256 bytes, or past 4 GiB)");
        return None;
    }
    let magic = mmio_rd32(w.base + MAGIC_VALUE);
    if magic != MAGIC {
        fail_begin(report, w.base);
        serial::bytes(b"bad magic 0x");
        serial::hex(u64::from(magic), 8);
        serial::end();
        return None;
    }
    let version = mmio_rd32(w.base + VERSION);
    if version != 2 {
        fail_begin(report, w.base);
        serial::bytes(if version == 1 { b"legacy virtio-mmio (version 1) not supported" as &[u8] } else { b"unknown version " });
        if version != 1 {
            serial::dec(u64::from(version));
        }
        serial::end();
        return None;
    }
    let id = mmio_rd32(w.base + DEVICE_ID);
    Some(Device { base: w.base, size: w.size, id })
}

impl Device {
    pub fn rd(&self, reg: u64) -> u32 {
        mmio_rd32(self.base + reg)
    }

    pub fn wr(&self, reg: u64, value: u32) {
        mmio_wr32(self.base + reg, value)
    }

    pub fn config8(&self, offset: u64) -> u8 {
        mmio_rd8(self.base + CONFIG + offset)
    }

    /// Writes 0 to Status and waits (bounded) until it reads back 0.
    pub fn reset(&self) -> bool {
        self.wr(STATUS, 0);
        for _ in 0..1000 {
            if self.rd(STATUS) == 0 {
                return true;
            }
            clock::pause(10);
        }
        false
    }

    /// Reset, ACKNOWLEDGE, DRIVER, feature negotiation (VERSION_1 required, plus the
    /// offered bits of `wanted`), FEATURES_OK. Returns the accepted features.
    pub fn begin(&self, wanted: u64, report: &mut Report) -> Option<u64> {
        if !self.reset() {
            fail(report, self.base, b"reset: status did not read back 0");
            return None;
        }
        self.wr(STATUS, S_ACKNOWLEDGE);
        self.wr(STATUS, S_ACKNOWLEDGE | S_DRIVER);
        self.wr(DEVICE_FEATURES_SEL, 0);
        let lo = self.rd(DEVICE_FEATURES);
        self.wr(DEVICE_FEATURES_SEL, 1);
        let hi = self.rd(DEVICE_FEATURES);
        let offered = u64::from(lo) | (u64::from(hi) << 32);
        if offered & F_VERSION_1 == 0 {
            self.wr(STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FAILED);
            fail(report, self.base, b"VIRTIO_F_VERSION_1 not offered");
            return None;
        }
        let accepted = offered & (wanted | F_VERSION_1);
        self.wr(DRIVER_FEATURES_SEL, 0);
        self.wr(DRIVER_FEATURES, accepted as u32);
        self.wr(DRIVER_FEATURES_SEL, 1);
        self.wr(DRIVER_FEATURES, (accepted >> 32) as u32);
        self.wr(STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
        if self.rd(STATUS) & S_FEATURES_OK == 0 {
            self.wr(STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FAILED);
            fail(report, self.base, b"device did not accept FEATURES_OK");
            return None;
        }
        Some(accepted)
    }

    /// DRIVER_OK, after the queues are set up; checks the device did not fail.
    pub fn driver_ok(&self, report: &mut Report) -> bool {
        self.wr(STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
        let status = self.rd(STATUS);
        if status & (S_FAILED | 64) != 0 || status & S_DRIVER_OK == 0 {
            fail_begin(report, self.base);
            serial::bytes(b"status after DRIVER_OK is 0x");
            serial::hex(u64::from(status), 2);
            serial::end();
            return false;
        }
        true
    }

    pub fn failed(&self) {
        self.wr(STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FAILED);
    }

    /// Sets up queue `index` in ring memory `slot` (see `QUEUE_SLOTS`): at most
    /// `QUEUE_SIZE` entries, a power of two no larger than QueueNumMax.
    pub fn queue(&self, index: u32, slot: usize, report: &mut Report) -> Option<Queue> {
        self.wr(QUEUE_SEL, index);
        if self.rd(QUEUE_READY) != 0 {
            fail(report, self.base, b"queue already ready after reset");
            return None;
        }
        let max = self.rd(QUEUE_NUM_MAX);
        if max == 0 {
            fail_begin(report, self.base);
            serial::bytes(b"queue ");
            serial::dec(u64::from(index));
            serial::bytes(b" not available (QueueNumMax 0)");
            serial::end();
            return None;
        }
        let mut size = QUEUE_SIZE;
        while u32::from(size) > max {
            size /= 2;
        }
        let mem = ring_memory(slot);
        let q = Queue {
            notify: self.base + QUEUE_NOTIFY,
            index,
            size,
            desc: mem,
            avail: mem + 4096,
            used: mem + 8192,
            next_avail: 0,
            last_used: 0,
        };
        // Rings start zeroed: flags 0 (interrupts wanted; they stay masked), idx 0.
        fill(q.desc, 0, 16 * u64::from(size));
        fill(q.avail, 0, 6 + 2 * u64::from(size));
        fill(q.used, 0, 6 + 8 * u64::from(size));
        self.wr(QUEUE_NUM, u32::from(size));
        self.wr(QUEUE_DESC_LOW, q.desc as u32);
        self.wr(QUEUE_DESC_HIGH, (q.desc >> 32) as u32);
        self.wr(QUEUE_DRIVER_LOW, q.avail as u32);
        self.wr(QUEUE_DRIVER_HIGH, (q.avail >> 32) as u32);
        self.wr(QUEUE_DEVICE_LOW, q.used as u32);
        self.wr(QUEUE_DEVICE_HIGH, (q.used >> 32) as u32);
        self.wr(QUEUE_READY, 1);
        Some(q)
    }
}

/// Ring memory: one slot per queue, three pages each (descriptor table, available
/// ring, used ring; each page-aligned, more than any device asks). Slot 0 is the disk
/// being driven (disks are driven one after another), slots 1.. the NICs' queues, the
/// last the disk a counting guest keeps writing (`blk::TickDisk`).
pub const QUEUE_SLOTS: usize = 2 + 2 * crate::net::MAX_NICS;
pub const TICK_DISK_SLOT: usize = QUEUE_SLOTS - 1;

#[repr(C, align(4096))]
struct RingMemory([[u8; 3 * 4096]; QUEUE_SLOTS]);

/// Not zeroed at entry (.noinit): `queue` zeroes what it uses.
#[link_section = ".noinit.virtio_rings"]
static mut RINGS: RingMemory = RingMemory([[0; 3 * 4096]; QUEUE_SLOTS]);

fn ring_memory(slot: usize) -> u64 {
    core::ptr::addr_of!(RINGS) as u64 + (slot as u64) * 3 * 4096
}

/// A split virtqueue the guest drives.
pub struct Queue {
    notify: u64,
    index: u32,
    pub size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    next_avail: u16,
    last_used: u16,
}

impl Queue {
    /// Writes descriptor `i`.
    pub fn set_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = self.desc + 16 * u64::from(i);
        wr64(d, addr);
        wr32(d + 8, len);
        wr16(d + 12, flags);
        wr16(d + 14, next);
    }

    /// Puts the chain starting at descriptor `head` on the available ring (without
    /// notifying).
    pub fn publish(&mut self, head: u16) {
        let slot = self.next_avail % self.size;
        wr16(self.avail + 4 + 2 * u64::from(slot), head);
        compiler_fence(Ordering::SeqCst);
        self.next_avail = self.next_avail.wrapping_add(1);
        wr16(self.avail + 2, self.next_avail);
        compiler_fence(Ordering::SeqCst);
    }

    /// Sets the available ring's idx `ahead` entries past what was published, without
    /// publishing anything (`testguest.hostile`: an avail index far ahead).
    pub fn claim_ahead(&self, ahead: u16) {
        wr16(self.avail + 2, self.next_avail.wrapping_add(ahead));
        compiler_fence(Ordering::SeqCst);
    }

    pub fn notify(&self) {
        mmio_wr32(self.notify, self.index);
    }

    /// The next used element `(id, len)`, if the device returned one.
    pub fn pop_used(&mut self) -> Option<(u32, u32)> {
        let idx = rd16_volatile(self.used + 2);
        if idx == self.last_used {
            return None;
        }
        compiler_fence(Ordering::SeqCst);
        let e = self.used + 4 + 8 * u64::from(self.last_used % self.size);
        self.last_used = self.last_used.wrapping_add(1);
        Some((rd32(e), rd32(e + 4)))
    }

    /// Chains published but not yet returned.
    pub fn in_flight(&self) -> u16 {
        self.next_avail.wrapping_sub(self.last_used)
    }

    /// Polls the used ring (a `pause` loop between polls) until an element comes back
    /// or `ms` milliseconds pass. Also bounded in polls, should the TSC be off.
    pub fn wait_used(&mut self, ms: u64) -> Option<(u32, u32)> {
        let deadline = clock::deadline(ms);
        for _ in 0..10_000_000u32 {
            if let Some(e) = self.pop_used() {
                return Some(e);
            }
            if clock::passed(deadline) {
                break;
            }
            clock::pause(20);
        }
        self.pop_used()
    }
}
