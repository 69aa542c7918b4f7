//! virtio-blk: read sector 0, optionally write a marker to sector 1 (then flush), read
//! sector 1. One request at a time on queue 0, three descriptors: header (16 bytes,
//! device-readable), data (512 bytes), status (1 byte, device-writable).
//!
//! With `testguest.count-disk` the first disk is set up once more, after those checks,
//! and kept ([`TickDisk`]): every count tick writes its record there and flushes.

use crate::count::disk_ring;
use crate::io::{fill, rd8, wr32, wr64, wr8};
use crate::report::Report;
use crate::serial;
use crate::virtio::{self, Device, Queue, DESC_F_NEXT, DESC_F_WRITE};

const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const S_OK: u8 = 0;

const SECTOR: u64 = 512;
/// How long a request may take before the guest gives up (FAIL).
const TIMEOUT_MS: u64 = 3000;

/// Header at 0, status byte at 16, data at 512. Not zeroed at entry.
#[repr(C, align(4096))]
struct Buffers([u8; 1024]);
#[link_section = ".noinit.virtio_blk"]
static mut BUFFERS: Buffers = Buffers([0; 1024]);

fn header() -> u64 {
    core::ptr::addr_of!(BUFFERS) as u64
}
fn status() -> u64 {
    header() + 16
}
fn data() -> u64 {
    header() + 512
}

/// Drives disk number `disk`: prints `disk<i> sector0=…`, with `marker` writes it to
/// sector 1 (`disk<i> wrote` / `disk<i> write refused`), then `disk<i> sector1=…`.
pub fn run(dev: &Device, disk: u32, marker: Option<&[u8]>, report: &mut Report) {
    // F_RO is accepted only to read it: the write is sent anyway, so that a test
    // proves the device (not the guest) refuses it.
    let Some(features) = dev.begin(F_RO | F_FLUSH, report) else { return };
    let Some(mut q) = dev.queue(0, 0, report) else {
        dev.failed();
        return;
    };
    if !dev.driver_ok(report) {
        return;
    }
    if request(&mut q, dev, T_IN, 0, report) == Some(S_OK) {
        print_sector(disk, b" sector0=");
    }
    if let Some(marker) = marker {
        let len = (marker.len() as u64).min(SECTOR);
        fill(data(), 0, SECTOR);
        for (i, &b) in marker[..len as usize].iter().enumerate() {
            wr8(data() + i as u64, b);
        }
        if let Some(st) = request(&mut q, dev, T_OUT, 1, report) {
            let ok = st == S_OK
                && (features & F_FLUSH == 0 || request(&mut q, dev, T_FLUSH, 0, report) == Some(S_OK));
            serial::begin();
            serial::bytes(b"disk");
            serial::dec(u64::from(disk));
            serial::bytes(if ok { b" wrote" as &[u8] } else { b" write refused" });
            serial::end();
        }
    }
    if request(&mut q, dev, T_IN, 1, report) == Some(S_OK) {
        print_sector(disk, b" sector1=");
    }
    dev.reset();
}

/// The first disk, kept driven while the guest counts (`testguest.count-disk`): its
/// queue lives in its own ring memory ([`virtio::TICK_DISK_SLOT`]), so the other
/// devices never touch it.
pub struct TickDisk {
    dev: Device,
    q: Queue,
    flush: bool,
    /// A request went unanswered (or came back wrong): the queue's state is unknown,
    /// and the disk is not written again.
    lost: bool,
}

impl TickDisk {
    /// Sets the disk up again (reset, features, queue 0, DRIVER_OK) and checks it can
    /// hold the ring: writable, at least [`disk_ring::FIRST`] + [`disk_ring::SECTORS`]
    /// sectors. `None` after a FAIL line.
    pub fn open(dev: &Device, report: &mut Report) -> Option<TickDisk> {
        let features = dev.begin(F_RO | F_FLUSH, report)?;
        let sectors = (0..8).fold(0u64, |c, i| c | u64::from(dev.config8(i)) << (8 * i));
        let needed = disk_ring::FIRST + disk_ring::SECTORS;
        if features & F_RO != 0 || sectors < needed {
            dev.failed();
            report.fail_begin();
            serial::bytes(b"testguest.count-disk: the first disk ");
            if features & F_RO != 0 {
                serial::bytes(b"is read-only");
            } else {
                serial::bytes(b"has ");
                serial::dec(sectors);
                serial::bytes(b" sectors, the ring needs ");
                serial::dec(needed);
            }
            serial::end();
            return None;
        }
        let Some(q) = dev.queue(0, virtio::TICK_DISK_SLOT, report) else {
            dev.failed();
            return None;
        };
        if !dev.driver_ok(report) {
            return None;
        }
        serial::begin();
        serial::bytes(b"count disk sectors=");
        serial::dec(disk_ring::FIRST);
        serial::bytes(b"-");
        serial::dec(needed - 1);
        serial::end();
        Some(TickDisk {
            dev: *dev,
            q,
            flush: features & F_FLUSH != 0,
            lost: false,
        })
    }

    /// Writes tick `n`'s record into its sector of the ring and flushes it (when the
    /// device offers FLUSH), waiting for each. A request that fails prints a FAIL line
    /// (the disk's, or `FAIL count-disk: write of sector <s>: status <st>`); the
    /// count goes on, without the disk after a request that timed out.
    pub fn write(&mut self, n: u64) {
        if self.lost {
            return;
        }
        let mut record = [0u8; disk_ring::SECTOR];
        disk_ring::record(n, &mut record);
        for (i, &b) in record.iter().enumerate() {
            wr8(data() + i as u64, b);
        }
        // The verdict is printed: FAIL lines from here on stand alone.
        let mut report = Report::new();
        let sector = disk_ring::sector_of(n);
        let written = request(&mut self.q, &self.dev, T_OUT, sector, &mut report);
        // IOERR or UNSUPP (`request` reports other statuses itself).
        if let Some(st @ 1..=2) = written {
            report.fail_begin();
            serial::bytes(b"count-disk: write of sector ");
            serial::dec(sector);
            serial::bytes(b": status ");
            serial::dec(u64::from(st));
            serial::end();
        }
        let flushed = match written {
            Some(S_OK) if self.flush => request(&mut self.q, &self.dev, T_FLUSH, 0, &mut report),
            other => other,
        };
        self.lost = flushed.is_none();
    }
}

fn print_sector(disk: u32, what: &[u8]) {
    serial::begin();
    serial::bytes(b"disk");
    serial::dec(u64::from(disk));
    serial::bytes(what);
    for i in 0..16 {
        serial::hex(u64::from(rd8(data() + i)), 2);
    }
    serial::end();
}

/// Submits one request and waits for it. Returns the status byte (FAIL lines for a
/// timeout, a wrong used id, or a failed read or flush; a refused write is not a
/// failure here).
fn request(q: &mut Queue, dev: &Device, kind: u32, sector: u64, report: &mut Report) -> Option<u8> {
    wr32(header(), kind);
    wr32(header() + 4, 0);
    wr64(header() + 8, sector);
    wr8(status(), 0xff);
    q.set_desc(0, header(), 16, DESC_F_NEXT, 1);
    if kind == T_FLUSH {
        q.set_desc(1, status(), 1, DESC_F_WRITE, 0);
    } else {
        let data_flags = if kind == T_IN { DESC_F_WRITE } else { 0 };
        q.set_desc(1, data(), SECTOR as u32, data_flags | DESC_F_NEXT, 2);
        q.set_desc(2, status(), 1, DESC_F_WRITE, 0);
    }
    q.publish(0);
    q.notify();
    let what: &[u8] = match kind {
        T_IN => b"read of sector ",
        T_OUT => b"write of sector ",
        _ => b"flush",
    };
    let fail = |report: &mut Report, why: &[u8], n: u64| {
        virtio::fail_begin(report, dev.base);
        serial::bytes(what);
        if kind != T_FLUSH {
            serial::dec(sector);
        }
        serial::bytes(why);
        serial::dec(n);
        serial::end();
    };
    let Some((id, _len)) = q.wait_used(TIMEOUT_MS) else {
        fail(report, b": no answer within ms ", TIMEOUT_MS);
        return None;
    };
    if id != 0 {
        fail(report, b": used ring returned descriptor ", u64::from(id));
        return None;
    }
    let st = rd8(status());
    // 0 OK, 1 IOERR, 2 UNSUPP; anything else (0xff: never written) is a device bug.
    if st > 2 || (st != S_OK && kind != T_OUT) {
        fail(report, b": status ", u64::from(st));
    }
    Some(st)
}
