//! `testguest.count[=<MiB>]`: a guest whose memory keeps changing, for snapshot,
//! restore and migration tests. At setup it places a region of `<MiB>` (default 4) in
//! e820 RAM and prints `count region=<bytes>@0x<addr>` and `nonce=<hex>` (from RDTSC:
//! different every boot). After the verdict it never powers off by itself: every
//! 100 ms of TSC time it runs one tick of `pattern` (check the region against tick
//! n-1, rewrite it for tick n) and prints `count=<n> sum=<hex>`, or first
//! `FAIL sum` when a word did not hold its n-1 value. Between ticks it answers the
//! first NIC's ARP and pings (with an address), or with `testguest.chat` sends its
//! name frame on the first NIC every tick and prints who it hears (`net::Chat`),
//! echoes serial input (`testguest.echo`) and powers off when a key arrives on the
//! i8042. With `testguest.count-disk` each tick also writes its record into a ring of
//! sectors on the first disk (`disk_ring`, `blk::TickDisk`) before its line is printed.

pub mod disk_ring;
pub mod pattern;

use crate::blk::TickDisk;
use crate::bootparams::Ram;
use crate::cmdline::Cmdline;
use crate::net::stack::Stack;
use crate::net::Chat;
use crate::report::Report;
use crate::{clock, power, serial};
use pattern::{Page, PAGE};

/// The region's size without `=<MiB>`.
const DEFAULT_MIB: u64 = 4;
/// Where the region may start: above the guest's image (which ends below 2 MiB) …
const REGION_ALIGN: u64 = 2 << 20;
/// … and where it must end: the identity map's cached part (entry.rs).
const REGION_LIMIT: u64 = 0xc000_0000;
/// Time between two ticks.
const PERIOD_MS: u64 = 100;
/// `pause`s between two polls of the NIC, and polls between two looks at the i8042
/// and the UART (each an I/O exit, ~20 µs here): about a millisecond.
const NIC_PAUSES: u32 = 50;
const POLLS: u32 = 20;

/// The region and the tick it is at.
pub struct Counter {
    base: u64,
    pages: usize,
    n: u64,
}

/// What the guest knows of its memory (Linux entry): the e820 RAM and the initrd.
pub struct Memory<'a> {
    pub ram: &'a Ram,
    /// `(address, size)`; size 0 without an initrd.
    pub initrd: (u64, u64),
}

/// Parses `testguest.count[=<MiB>]`, places the region and prints the `count region=`
/// and `nonce=` lines. `None` (after a FAIL line) when the size is not a number or the
/// region does not fit; `None` silently without the switch.
pub fn setup(
    cmdline: &Cmdline<'static>,
    memory: Option<Memory>,
    report: &mut Report,
) -> Option<Counter> {
    if !cmdline.has(b"testguest.count") {
        return None;
    }
    let mib = match cmdline.value(b"testguest.count") {
        None => DEFAULT_MIB,
        Some(v) => match crate::parse_dec(v) {
            Some(m) if (1..REGION_LIMIT >> 20).contains(&m) => m,
            _ => {
                report.fail(b"testguest.count= is not a number of MiB (1 to 3071)");
                return None;
            }
        },
    };
    let Some(memory) = memory else {
        report.fail(b"testguest.count needs the Linux entry's e820 map (not PVH)");
        return None;
    };
    let size = mib << 20;
    let (_, image_end) = crate::entry::image_range();
    let base = image_end.next_multiple_of(REGION_ALIGN);
    let (initrd, initrd_size) = memory.initrd;
    let overlaps_initrd = initrd_size != 0 && initrd < base + size && base < initrd + initrd_size;
    if base + size > REGION_LIMIT || !memory.ram.covers(base, size) || overlaps_initrd {
        report.fail_begin();
        serial::bytes(b"testguest.count=");
        serial::dec(mib);
        serial::bytes(b" does not fit: ");
        serial::dec(size);
        serial::bytes(b" bytes at 0x");
        serial::hex(base, 8);
        serial::bytes(if overlaps_initrd {
            b" overlap the initrd"
        } else {
            b" are not all in e820 RAM"
        });
        serial::end();
        return None;
    }
    serial::begin();
    serial::bytes(b"count region=");
    serial::dec(size);
    serial::bytes(b"@0x");
    serial::hex(base, 8);
    serial::end();
    serial::begin();
    serial::bytes(b"nonce=");
    serial::hex(mix(clock::rdtsc()), 16);
    serial::end();
    Some(Counter {
        base,
        pages: (size / PAGE as u64) as usize,
        n: 0,
    })
}

/// splitmix64's finalizer: spreads the TSC's varying low bits over the whole nonce.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Counter {
    fn region(&mut self) -> &mut [Page] {
        // SAFETY: `setup` checked [base, base + pages * 4 KiB) is e820 RAM in the
        // identity map, 2 MiB-aligned, clear of the image, the boot structures below
        // 1 MiB and the initrd; only this counter uses it.
        unsafe { core::slice::from_raw_parts_mut(self.base as *mut Page, self.pages) }
    }

    /// One tick: check, rewrite, write its record on `disk` (and wait for it), print.
    fn tick(&mut self, disk: Option<&mut TickDisk>) {
        self.n += 1;
        let n = self.n;
        let t = pattern::tick(self.region(), n);
        if let Some(disk) = disk {
            disk.write(n);
        }
        if t.mismatches != 0 {
            serial::line(b"FAIL sum");
        }
        serial::begin();
        serial::bytes(b"count=");
        serial::dec(n);
        serial::bytes(b" sum=");
        serial::hex(t.sum, 16);
        serial::end();
    }

    /// Ticks every 100 ms for ever; each tick also writes its record on `disk` and
    /// chats (`chat`); between ticks serves `stack`, hears for `chat`, echoes serial
    /// input (`echo`) and watches the i8042: a key prints `net dropped=` (with a
    /// stack) and `shutdown requested`, and powers off.
    ///
    /// The schedule follows the TSC without drift (tick k at start + k × 100 ms), but
    /// a TSC that jumps (a restore or migration with another TSC) restarts it from
    /// now instead of bursting to catch up or stalling.
    pub fn run(
        mut self,
        mut disk: Option<TickDisk>,
        mut stack: Option<Stack>,
        mut chat: Option<Chat>,
        echo: bool,
    ) -> ! {
        let period = PERIOD_MS * clock::ticks_per_ms();
        let mut next = clock::rdtsc().saturating_add(period);
        let mut in_line = false;
        loop {
            let now = clock::rdtsc();
            if now >= next {
                self.tick(disk.as_mut());
                if let Some(c) = chat.as_mut() {
                    c.tick(self.n);
                }
                next = if now - next >= period {
                    now + period
                } else {
                    next + period
                };
            } else if next - now > 2 * period {
                next = now + period;
            }
            for _ in 0..POLLS {
                if let Some(s) = stack.as_mut() {
                    s.serve_pending();
                }
                if let Some(c) = chat.as_mut() {
                    c.poll();
                }
                clock::pause(NIC_PAUSES);
            }
            if echo {
                while let Some(b) = serial::read() {
                    in_line = serial::echo(b, in_line);
                }
            }
            if power::key_pending() {
                if let Some(s) = &stack {
                    s.print_dropped();
                }
                power::shutdown_requested();
            }
        }
    }
}
