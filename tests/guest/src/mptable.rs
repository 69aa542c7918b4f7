//! The Intel MultiProcessor table, found and walked exactly as Linux's mpparse.c does
//! — no stricter: the floating pointer is looked for in the first KiB of memory, the
//! last KiB of base memory (0x9fc00), the BIOS ROM (0xf0000–0xfffff), then the first
//! KiB of the EBDA (segment at 0x40e); it needs "_MP_", length 1, a zero checksum and
//! spec revision 1 or 4. Its feature byte 1 non-zero means a default configuration
//! (Linux accepts it; a VMM means a table: a FAIL here). The "PCMP" table needs its
//! signature, checksum over its length, revision 1 or 4 and a local APIC address;
//! entries are walked by the table's length (its entry count is ignored, as Linux
//! does), an unknown entry type ends the walk ("Your mptable is wrong").

use crate::io::{mapped, rd16, rd32, rd8};
use crate::report::{Check, Report};
use crate::serial;

const MPF_SIGNATURE: u32 = u32::from_le_bytes(*b"_MP_");
const MPC_SIGNATURE: u32 = u32::from_le_bytes(*b"PCMP");

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_INTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;
const PROCESSOR_ENABLED: u8 = 1;
const PROCESSOR_BSP: u8 = 2;
const MPC_APIC_USABLE: u8 = 1;

/// What the MP table says.
pub struct Mp {
    /// Enabled processor entries.
    pub enabled: u32,
    /// APIC ids of the enabled processors (ids below 64; others are a FAIL).
    pub apic_ids: u64,
    /// The APIC id of the entry flagged as the bootstrap processor, if any.
    pub bsp_apic_id: Option<u8>,
    /// The first usable IO-APIC: `(id, address)`.
    pub ioapic: Option<(u8, u32)>,
    /// The table's `[start, end)` in memory, floating pointer and table.
    pub floating: u64,
    pub table: (u64, u64),
}

fn sum(addr: u64, len: u64) -> u8 {
    let mut s: u8 = 0;
    for i in 0..len {
        s = s.wrapping_add(byte(addr + i));
    }
    s
}

/// The byte at physical address `addr`, which may be 0: Linux scans the first KiB of
/// memory, and io::rd8 (a Rust pointer read) must not touch address 0.
fn byte(addr: u64) -> u8 {
    let v: u8;
    // SAFETY: only called for the scan areas below 1 MiB, RAM or ROM-like memory the
    // guest's page tables identity-map.
    unsafe { core::arch::asm!("mov {0}, byte ptr [{1}]", out(reg_byte) v, in(reg) addr, options(nostack, readonly, preserves_flags)) };
    v
}

/// smp_scan_config(): the first valid floating pointer in `[base, base + len)`.
fn scan(base: u64, len: u64) -> Option<u64> {
    let mut at = base;
    while at + 16 <= base + len {
        let sig = u32::from_le_bytes([byte(at), byte(at + 1), byte(at + 2), byte(at + 3)]);
        if sig == MPF_SIGNATURE {
            let spec = byte(at + 9);
            if byte(at + 8) == 1 && sum(at, 16) == 0 && (spec == 1 || spec == 4) {
                return Some(at);
            }
        }
        at += 16;
    }
    None
}


/// default_find_smp_config(): the same places, in the same order.
fn find() -> Option<u64> {
    if let Some(at) = scan(0, 0x400).or_else(|| scan(639 * 0x400, 0x400)).or_else(|| scan(0xf0000, 0x10000)) {
        return Some(at);
    }
    let ebda = u64::from(rd16(0x40e)) << 4;
    if ebda != 0 {
        return scan(ebda, 0x400);
    }
    None
}

/// Finds and walks the MP table (check `mptable`); prints `cpus=<n>`.
pub fn check(report: &mut Report) -> Option<Mp> {
    let mut c = Check::new(report, None, b"mptable");
    let mp = walk(&mut c);
    c.done();
    let mp = mp?;
    serial::begin();
    serial::bytes(b"cpus=");
    serial::dec(u64::from(mp.enabled));
    serial::end();
    Some(mp)
}

fn walk(c: &mut Check<'_>) -> Option<Mp> {
    let Some(mpf) = find() else {
        c.fail(b"no valid floating pointer (\"_MP_\", length 1, checksum, revision 1 or 4) where Linux scans");
        return None;
    };
    if rd8(mpf + 11) != 0 {
        c.fail(b"floating pointer names a default configuration, not a table");
        return None;
    }
    let mpc = u64::from(rd32(mpf + 4));
    // physptr 0 with feature byte 0 is Linux's BUG().
    if !mapped(mpc, 44) {
        c.fail(b"configuration table pointer is zero or unmapped");
        return None;
    }
    if rd32(mpc) != MPC_SIGNATURE {
        c.fail(b"configuration table signature is not \"PCMP\"");
        return None;
    }
    let len = u64::from(rd16(mpc + 4));
    if len < 44 || !mapped(mpc, len) {
        c.fail(b"configuration table length is below its 44-byte header");
        return None;
    }
    if sum(mpc, len) != 0 {
        c.fail(b"configuration table checksum is bad");
        return None;
    }
    let spec = rd8(mpc + 6);
    if spec != 1 && spec != 4 {
        c.fail(b"configuration table spec revision is not 1 or 4");
        return None;
    }
    if rd32(mpc + 36) == 0 {
        c.fail(b"configuration table has no local APIC address");
        return None;
    }
    let mut mp = Mp { enabled: 0, apic_ids: 0, bsp_apic_id: None, ioapic: None, floating: mpf, table: (mpc, mpc + len) };
    let mut intsrc = 0u32;
    let mut at = mpc + 44;
    let end = mpc + len;
    while at < end {
        let kind = rd8(at);
        let size = match kind {
            ENTRY_PROCESSOR => 20,
            ENTRY_BUS | ENTRY_IOAPIC | ENTRY_INTSRC | ENTRY_LINTSRC => 8,
            _ => {
                c.fail_value(b"unknown entry type: Linux stops there (\"Your mptable is wrong\")", u64::from(kind), 0);
                break;
            }
        };
        if at + size > end {
            c.fail(b"the last entry runs past the table's length");
            break;
        }
        match kind {
            ENTRY_PROCESSOR => {
                let id = rd8(at + 1);
                let flags = rd8(at + 3);
                if flags & PROCESSOR_ENABLED != 0 {
                    mp.enabled += 1;
                    if id >= 64 {
                        c.fail_value(b"processor APIC id beyond what the guest tracks", u64::from(id), 63);
                    } else if mp.apic_ids & (1 << id) != 0 {
                        c.fail_value(b"enabled processor APIC id listed twice", u64::from(id), 0);
                    } else {
                        mp.apic_ids |= 1 << id;
                    }
                    // Linux takes the boot CPU's id from its own APIC, not this flag.
                    if flags & PROCESSOR_BSP != 0 && mp.bsp_apic_id.is_none() {
                        mp.bsp_apic_id = Some(id);
                    }
                }
            }
            ENTRY_IOAPIC => {
                // MP_ioapic_info() registers only IO-APICs flagged usable.
                if rd8(at + 3) & MPC_APIC_USABLE != 0 && mp.ioapic.is_none() {
                    mp.ioapic = Some((rd8(at + 1), rd32(at + 4)));
                }
            }
            ENTRY_INTSRC => intsrc += 1,
            // Buses and local interrupt entries: Linux only prints them.
            _ => {}
        }
        at += size;
    }
    if mp.enabled == 0 {
        c.fail(b"no enabled processor (\"MPTABLE: no processors registered!\")");
    }
    // Without IO interrupt entries Linux builds a default ISA routing ("BIOS bug").
    if intsrc == 0 {
        c.fail(b"no I/O interrupt entries (Linux: \"BIOS bug, no explicit IRQ entries\")");
    }
    Some(mp)
}
