//! `testguest.hostile`: before a disk is driven normally, attack its virtio-mmio
//! transport and queue 0 the way a malicious driver would, then reset the device.
//! The VMM must survive, keep serving (the normal `disk<i> sector0=` read follows),
//! and count each attack. In order, with the counter the VMM should bump:
//!
//! 1. a 16-bit read of MagicValue (transport `bad_accesses`);
//! 2. a misaligned 32-bit read of the config space at 0x101 (`bad_accesses`);
//! 3. QueueNum 0, then 3 (`bad_queue_config` each), then QueueReady 1 on that bad size
//!    (`bad_queue_config`; the queue must stay not ready);
//! 4. after a proper set-up and DRIVER_OK: QueueNum 8 and QueueReady 0
//!    (`queue_config_after_ready` each);
//! 5. a head-only chain (just the 16-byte header), a chain whose header lies at 1 TiB
//!    (outside guest memory), and a descriptor loop 0 → 1 → 0 (device `bad_chains`
//!    each; each waited for at most 200 ms — returning them is the device's choice);
//! 6. a notification of queue 5, which a disk does not have (`bad_notifies`);
//! 7. the avail index 1000 entries ahead, notified (device `invalid_avail_idx`).
//!
//! Then Status 0 (reset) and `testguest: disk<i> hostile done`. Nothing here is checked
//! by the guest except that the bad queue did not become ready: the test reads the
//! counters from the VMM.

use crate::io::{fill, wr32, wr64};
use crate::report::Report;
use crate::serial;
use crate::virtio::{self, Device, DESC_F_NEXT, DESC_F_WRITE};
use core::arch::asm;

/// Header at 0, status byte at 16, data at 512. Not zeroed at entry.
#[repr(C, align(4096))]
struct Buffers([u8; 1024]);
#[link_section = ".noinit.hostile"]
static mut BUFFERS: Buffers = Buffers([0; 1024]);

fn header() -> u64 {
    core::ptr::addr_of!(BUFFERS) as u64
}

/// Far outside any test guest's memory (which the VMM must check, not the guest).
const OUTSIDE: u64 = 1 << 40;
const WAIT_MS: u64 = 200;

/// One 16-bit MMIO read (a short access to a 32-bit register).
fn mmio_rd16(addr: u64) {
    let _v: u16;
    // SAFETY: `addr` lies in a device window below 4 GiB, identity-mapped uncached;
    // the read has no effect on guest memory.
    unsafe { asm!("mov {0:x}, word ptr [{1}]", out(reg) _v, in(reg) addr, options(nostack, preserves_flags)) }
}

/// One 32-bit MMIO read at a misaligned address.
fn mmio_rd32_unaligned(addr: u64) {
    let _v: u32;
    // SAFETY: as `mmio_rd16`.
    unsafe { asm!("mov {0:e}, dword ptr [{1}]", out(reg) _v, in(reg) addr, options(nostack, preserves_flags)) }
}

pub fn run(dev: &Device, disk: u32, report: &mut Report) {
    mmio_rd16(dev.base + virtio::MAGIC_VALUE);
    mmio_rd32_unaligned(dev.base + virtio::CONFIG + 1);

    if dev.begin(0, report).is_none() {
        return;
    }
    dev.wr(virtio::QUEUE_SEL, 0);
    dev.wr(virtio::QUEUE_NUM, 0);
    dev.wr(virtio::QUEUE_NUM, 3);
    dev.wr(virtio::QUEUE_READY, 1);
    if dev.rd(virtio::QUEUE_READY) != 0 {
        virtio::fail(report, dev.base, b"hostile: a queue of size 3 became ready");
    }
    let Some(mut q) = dev.queue(0, 0, report) else {
        dev.failed();
        return;
    };
    if !dev.driver_ok(report) {
        return;
    }
    dev.wr(virtio::QUEUE_SEL, 0);
    dev.wr(virtio::QUEUE_NUM, 8);
    dev.wr(virtio::QUEUE_READY, 0);

    // A read of sector 0: type IN, reserved, sector.
    wr32(header(), 0);
    wr32(header() + 4, 0);
    wr64(header() + 8, 0);
    fill(header() + 16, 0xff, 1);
    let (status, data) = (header() + 16, header() + 512);

    // Head-only.
    q.set_desc(0, header(), 16, 0, 0);
    q.publish(0);
    q.notify();
    q.wait_used(WAIT_MS);
    // Header outside guest memory.
    q.set_desc(0, OUTSIDE, 16, DESC_F_NEXT, 1);
    q.set_desc(1, data, 512, DESC_F_WRITE | DESC_F_NEXT, 2);
    q.set_desc(2, status, 1, DESC_F_WRITE, 0);
    q.publish(0);
    q.notify();
    q.wait_used(WAIT_MS);
    // A loop.
    q.set_desc(0, header(), 16, DESC_F_NEXT, 1);
    q.set_desc(1, data, 512, DESC_F_WRITE | DESC_F_NEXT, 0);
    q.publish(0);
    q.notify();
    q.wait_used(WAIT_MS);

    crate::io::mmio_wr32(dev.base + virtio::QUEUE_NOTIFY, 5);
    q.claim_ahead(1000);
    q.notify();
    // The device looks at the queue on the notification; give it a moment.
    q.wait_used(WAIT_MS);

    dev.reset();
    serial::begin();
    serial::bytes(b"disk");
    serial::dec(u64::from(disk));
    serial::bytes(b" hostile done");
    serial::end();
}
