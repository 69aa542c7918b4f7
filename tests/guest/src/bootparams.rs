//! The Linux boot params ("zero page", `struct boot_params`) and what Linux reads from
//! it: the command line, the e820 map and the initrd. Offsets from
//! Documentation/arch/x86/zero-page.rst and boot.rst.

use crate::io::{mapped, rd16, rd32, rd64, rd8};
use crate::report::{Check, Report};
use crate::serial;

const EXT_RAMDISK_IMAGE: u64 = 0x0c0;
const EXT_RAMDISK_SIZE: u64 = 0x0c4;
const EXT_CMD_LINE_PTR: u64 = 0x0c8;
const E820_ENTRIES: u64 = 0x1e8;
const SENTINEL: u64 = 0x1ef;
const HDR_BOOT_FLAG: u64 = 0x1fe;
const HDR_HEADER: u64 = 0x202;
const HDR_TYPE_OF_LOADER: u64 = 0x210;
const HDR_RAMDISK_IMAGE: u64 = 0x218;
const HDR_RAMDISK_SIZE: u64 = 0x21c;
const HDR_CMD_LINE_PTR: u64 = 0x228;
const E820_TABLE: u64 = 0x2d0;

/// The most entries the zero page holds (E820_MAX_ENTRIES_ZEROPAGE).
pub const E820_MAX: usize = 128;
const E820_ENTRY_SIZE: u64 = 20;
pub const E820_RAM: u32 = 1;

/// Size of the boot params page.
pub const SIZE: u64 = 4096;

#[derive(Clone, Copy)]
pub struct BootParams {
    pub addr: u64,
}

#[derive(Clone, Copy)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

impl BootParams {
    /// The boot params at `addr` (from `rsi`), if the page can be read at all.
    pub fn at(addr: u64) -> Option<BootParams> {
        if mapped(addr, SIZE) {
            Some(BootParams { addr })
        } else {
            None
        }
    }

    pub fn cmd_line_ptr(&self) -> u64 {
        u64::from(rd32(self.addr + HDR_CMD_LINE_PTR))
            | (u64::from(rd32(self.addr + EXT_CMD_LINE_PTR)) << 32)
    }

    /// `(address, size)` of the initrd; size 0 when there is none.
    pub fn initrd(&self) -> (u64, u64) {
        let addr = u64::from(rd32(self.addr + HDR_RAMDISK_IMAGE))
            | (u64::from(rd32(self.addr + EXT_RAMDISK_IMAGE)) << 32);
        let size = u64::from(rd32(self.addr + HDR_RAMDISK_SIZE))
            | (u64::from(rd32(self.addr + EXT_RAMDISK_SIZE)) << 32);
        (addr, size)
    }

    pub fn e820_count(&self) -> usize {
        usize::from(rd8(self.addr + E820_ENTRIES))
    }

    pub fn e820(&self, i: usize) -> E820Entry {
        let at = self.addr + E820_TABLE + i as u64 * E820_ENTRY_SIZE;
        E820Entry { addr: rd64(at), size: rd64(at + 8), kind: rd32(at + 16) }
    }

    /// The zero page's own fields Linux relies on (check `boot-params`): a zero
    /// sentinel (otherwise sanitize_boot_params() wipes ext_*, e820 and more as left by
    /// a broken loader), the setup header's magic numbers, a loader type (Linux ignores
    /// the initrd when it is 0).
    pub fn check_header(&self, report: &mut Report) {
        let mut c = Check::new(report, None, b"boot-params");
        c.expect(rd8(self.addr + SENTINEL) == 0, b"sentinel (0x1ef) is not zero: Linux would discard fields");
        c.expect_eq(u64::from(rd32(self.addr + HDR_HEADER)), 0x5372_6448, b"hdr.header is not \"HdrS\"");
        c.expect_eq(u64::from(rd16(self.addr + HDR_BOOT_FLAG)), 0xaa55, b"hdr.boot_flag is not 0xaa55");
        c.expect(self.type_of_loader() != 0, b"hdr.type_of_loader is 0 (Linux then ignores the initrd)");
        c.done();
    }

    pub fn type_of_loader(&self) -> u8 {
        rd8(self.addr + HDR_TYPE_OF_LOADER)
    }
}

/// The e820 RAM entries, checked.
pub struct Ram {
    bp: BootParams,
    count: usize,
}

impl Ram {
    /// Reads and checks the e820 map; prints `memory=<bytes of RAM>` and a FAIL for each
    /// problem. `None` when there is no usable map.
    pub fn check(bp: BootParams, report: &mut Report) -> Option<Ram> {
        let mut c = Check::new(report, None, b"e820");
        let ram = Self::walk(bp, &mut c);
        c.done();
        ram
    }

    fn walk(bp: BootParams, c: &mut Check<'_>) -> Option<Ram> {
        let count = bp.e820_count();
        if count == 0 {
            c.fail(b"e820 map is empty");
            return None;
        }
        if count > E820_MAX {
            c.fail_value(b"more e820 entries than the zero page holds", count as u64, E820_MAX as u64);
            return None;
        }
        let mut total: u64 = 0;
        for i in 0..count {
            let e = bp.e820(i);
            serial::begin();
            serial::bytes(b"e820 0x");
            serial::hex_at_least(e.addr, 8);
            serial::bytes(b"-0x");
            serial::hex_at_least(e.addr.wrapping_add(e.size), 8);
            serial::bytes(b" type=");
            serial::dec(u64::from(e.kind));
            serial::end();
            if e.kind != E820_RAM {
                continue;
            }
            if e.size == 0 || e.addr.checked_add(e.size).is_none() {
                c.fail_value(b"RAM entry has a bad size: entry", i as u64, i as u64);
                continue;
            }
            total = total.wrapping_add(e.size);
            // RAM must not cover the APICs (Linux maps them uncached as MMIO).
            for mmio in [0xfec0_0000u64, 0xfee0_0000] {
                if e.addr <= mmio && mmio < e.addr + e.size {
                    c.fail_value(b"a RAM entry covers an APIC's MMIO page", mmio, 0);
                }
            }
            for j in 0..i {
                let f = bp.e820(j);
                if f.kind == E820_RAM
                    && f.addr.checked_add(f.size).is_some()
                    && e.addr < f.addr + f.size
                    && f.addr < e.addr + e.size
                {
                    c.fail_value(b"RAM entries overlap: entries", j as u64, i as u64);
                }
            }
        }
        serial::begin();
        serial::bytes(b"memory=");
        serial::dec(total);
        serial::end();
        if count < 2 {
            // append_e820_table() ignores a map of fewer than two entries.
            c.fail(b"e820 map has fewer than 2 entries: Linux ignores it");
        }
        // Still usable for the coverage checks after an entry-level failure.
        Some(Ram { bp, count })
    }

    /// Whether `[addr, addr + len)` lies inside one e820 RAM entry.
    pub fn covers(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len) else { return false };
        (0..self.count).any(|i| {
            let e = self.bp.e820(i);
            e.kind == E820_RAM && e.addr <= addr && end <= e.addr + e.size
        })
    }
}
