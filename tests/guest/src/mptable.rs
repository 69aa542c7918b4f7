//! The Intel MultiProcessor table, found and checked as Linux's mpparse.c does.

use crate::io::{mapped, rd16, rd32, rd8};
use crate::report::Report;
use crate::serial;

const MPF_SIGNATURE: u32 = u32::from_le_bytes(*b"_MP_");
const MPC_SIGNATURE: u32 = u32::from_le_bytes(*b"PCMP");
/// A bound on the configuration table's length (the base table's length is 16 bits).
const MPC_MAX_LEN: u64 = 0x10000;

const ENTRY_PROCESSOR: u8 = 0;
const PROCESSOR_ENABLED: u8 = 1;
const PROCESSOR_BSP: u8 = 2;

/// What the MP table says about the CPUs.
pub struct Cpus {
    /// Processor entries with the enabled flag.
    pub enabled: u32,
    /// The APIC id of the entry flagged as the bootstrap processor.
    pub bsp_apic_id: Option<u8>,
}

fn sum(addr: u64, len: u64) -> u8 {
    let mut s: u8 = 0;
    for i in 0..len {
        s = s.wrapping_add(rd8(addr + i));
    }
    s
}

/// Scans `[base, base + len)` on 16-byte boundaries for a valid floating pointer
/// structure: "_MP_", length 1 (16 bytes), checksum zero, spec revision 1 or 4.
/// Counts candidates with the signature but a bad checksum in `bad`.
fn scan(base: u64, len: u64, bad: &mut u32) -> Option<u64> {
    let mut at = base;
    while at + 16 <= base + len {
        if rd32(at) == MPF_SIGNATURE {
            let spec = rd8(at + 9);
            if rd8(at + 8) == 1 && sum(at, 16) == 0 && (spec == 1 || spec == 4) {
                return Some(at);
            }
            *bad += 1;
        }
        at += 16;
    }
    None
}

/// Finds the floating pointer structure where Linux looks: the first KiB of the EBDA
/// (real-mode segment at 0x40e), the last KiB of base memory, the BIOS ROM area.
fn find(bad: &mut u32) -> Option<u64> {
    let ebda = u64::from(rd16(0x40e)) << 4;
    if ebda != 0 {
        if let Some(at) = scan(ebda, 0x400, bad) {
            return Some(at);
        }
    }
    scan(0x9fc00, 0x400, bad).or_else(|| scan(0xf0000, 0x10000, bad))
}

/// Whether an enabled processor entry in `[from, to)` (entries already checked) has
/// APIC id `apic_id`. Rescanning keeps no bitmap on the stack (a zeroed array of 16+
/// bytes is where rustc would reach for SSE stores).
fn enabled_before(from: u64, to: u64, apic_id: u8) -> bool {
    let mut at = from;
    while at < to {
        let kind = rd8(at);
        if kind == ENTRY_PROCESSOR {
            if rd8(at + 1) == apic_id && rd8(at + 3) & PROCESSOR_ENABLED != 0 {
                return true;
            }
            at += 20;
        } else {
            at += 8;
        }
    }
    false
}

/// Finds and checks the MP table; prints `cpus=<n>` (enabled processor entries).
pub fn check(report: &mut Report) -> Option<Cpus> {
    let mut bad = 0;
    let Some(mpf) = find(&mut bad) else {
        report.fail(if bad > 0 {
            b"mp floating pointer found but invalid (length, checksum or revision)"
        } else {
            b"mp floating pointer \"_MP_\" not found"
        });
        return None;
    };
    if rd8(mpf + 11) != 0 {
        report.fail(b"mp floating pointer names a default configuration, not a table");
        return None;
    }
    let mpc = u64::from(rd32(mpf + 4));
    if !mapped(mpc, 44) {
        report.fail(b"mp configuration table pointer is zero or unmapped");
        return None;
    }
    if rd32(mpc) != MPC_SIGNATURE {
        report.fail(b"mp configuration table signature is not \"PCMP\"");
        return None;
    }
    let len = u64::from(rd16(mpc + 4));
    if len < 44 || len > MPC_MAX_LEN || !mapped(mpc, len) {
        report.fail(b"mp configuration table length is bad");
        return None;
    }
    if sum(mpc, len) != 0 {
        report.fail(b"mp configuration table checksum is bad");
        return None;
    }
    let spec = rd8(mpc + 6);
    if spec != 1 && spec != 4 {
        report.fail(b"mp configuration table spec revision is not 1 or 4");
    }
    if rd32(mpc + 36) == 0 {
        report.fail(b"mp configuration table has no local APIC address");
    }
    let count = rd16(mpc + 34);
    let mut cpus = Cpus { enabled: 0, bsp_apic_id: None };
    let mut at = mpc + 44;
    let end = mpc + len;
    for _ in 0..count {
        if at >= end {
            report.fail(b"mp configuration table entries run past its length");
            break;
        }
        let kind = rd8(at);
        let size = match kind {
            ENTRY_PROCESSOR => 20,
            1..=4 => 8, // bus, I/O APIC, I/O interrupt, local interrupt
            _ => {
                report.fail_begin();
                serial::bytes(b"mp configuration table has an unknown entry type ");
                serial::dec(u64::from(kind));
                serial::end();
                break;
            }
        };
        if at + size > end {
            report.fail(b"mp configuration table entries run past its length");
            break;
        }
        if kind == ENTRY_PROCESSOR {
            let apic_id = rd8(at + 1);
            let flags = rd8(at + 3);
            if flags & PROCESSOR_ENABLED != 0 {
                cpus.enabled += 1;
                if enabled_before(mpc + 44, at, apic_id) {
                    report.fail_begin();
                    serial::bytes(b"mp table lists apic id ");
                    serial::dec(u64::from(apic_id));
                    serial::bytes(b" twice");
                    serial::end();
                }
            }
            if flags & PROCESSOR_BSP != 0 {
                if cpus.bsp_apic_id.is_some() {
                    report.fail(b"mp table flags more than one processor as the BSP");
                }
                cpus.bsp_apic_id = Some(apic_id);
            }
        }
        at += size;
    }
    serial::begin();
    serial::bytes(b"cpus=");
    serial::dec(u64::from(cpus.enabled));
    serial::end();
    if cpus.enabled == 0 {
        report.fail(b"mp table lists no enabled processor");
    }
    if cpus.bsp_apic_id.is_none() {
        report.fail(b"mp table flags no processor as the BSP");
    }
    Some(cpus)
}
