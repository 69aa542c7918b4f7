//! Machine-wide checks on the BSP, Linux 64-bit entry only: the CPU state at entry as
//! boot.rst's "64-bit Boot Protocol" requires it (entry_state.rs recorded it), the
//! IO-APIC, and the application processors (smp.rs) with their per-CPU views
//! (cpuview.rs).

use crate::bootparams::{BootParams, Ram};
use crate::cpuview::{self, CpuView, Expect};
use crate::entry_state::{self, EntryState};
use crate::io::{mapped, mmio_rd32, mmio_wr32, rd64, rd8};
use crate::mptable::Mp;
use crate::report::{Check, Report};
use crate::serial;
use crate::smp;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_FIXED: u64 = 1 << 1;
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
/// boot.rst: `__BOOT_CS` and `__BOOT_DS`.
const BOOT_CS: u16 = 0x10;
const BOOT_DS: u16 = 0x18;
/// Linux's COMMAND_LINE_SIZE on x86: copy_bootdata() copies this much from
/// cmd_line_ptr, so it must be mapped.
const COMMAND_LINE_SIZE: u64 = 2048;

pub const IOAPIC_BASE: u64 = 0xfec0_0000;

/// The entry-state checks (`cr0`, `cr3`, `cr4`, `efer`, `segments`, `gdt`, `rflags`,
/// `idt`); `cr3` walks the entry page tables over what boot.rst wants identity-mapped.
pub fn entry(bp: Option<BootParams>, report: &mut Report) {
    let Some(s) = entry_state::get() else {
        report.fail(b"entry state not recorded");
        return;
    };
    let mut c = Check::new(report, None, b"cr0");
    c.expect(s.cr0 & (CR0_PE | CR0_PG) == CR0_PE | CR0_PG, b"CR0: protection or paging off (the 64-bit entry needs long mode)");
    c.expect(s.cr0 & (CR0_CD | CR0_NW) == 0, b"CR0: caches disabled (CD/NW set)");
    c.expect(s.cr0 & CR0_ET != 0, b"CR0: ET clear");
    c.done();

    let mut c = Check::new(report, None, b"cr4");
    c.expect(s.cr4 & CR4_PAE != 0, b"CR4.PAE clear");
    c.expect(s.cr4 & CR4_LA57 == 0, b"CR4.LA57 set: 5-level paging at entry");
    c.done();

    let mut c = Check::new(report, None, b"efer");
    c.expect(s.efer & (EFER_LME | EFER_LMA) == EFER_LME | EFER_LMA, b"EFER.LME/LMA clear: not in long mode");
    c.done();

    let mut c = Check::new(report, None, b"rflags");
    c.expect(s.rflags & RFLAGS_IF == 0, b"RFLAGS.IF set: interrupts must be disabled at entry");
    c.expect(s.rflags & RFLAGS_TF == 0, b"RFLAGS.TF set");
    c.expect(s.rflags & RFLAGS_FIXED != 0, b"RFLAGS bit 1 clear");
    c.done();

    segments(s, report);
    idt(s, report);

    let mut c = Check::new(report, None, b"cr3");
    c.expect(s.cr3 & 0xfff & !0x18 == 0, b"CR3 has reserved low bits set");
    let (start, end) = crate::entry::image_range();
    c.expect(identity_mapped(s.cr3, start, end - start), b"the kernel image at 1 MiB is not identity-mapped");
    if let Some(bp) = bp {
        c.expect(identity_mapped(s.cr3, bp.addr, crate::bootparams::SIZE), b"the zero page is not identity-mapped");
        let cl = bp.cmd_line_ptr();
        if cl != 0 {
            c.expect(identity_mapped(s.cr3, cl, COMMAND_LINE_SIZE), b"the command line (2048 bytes, what Linux copies) is not identity-mapped");
        }
    }
    c.done();
}

/// Walks the 4-level page tables at `cr3` (as the VMM built them): is every page of
/// `[addr, addr + len)` present and mapped to itself?
fn identity_mapped(cr3: u64, addr: u64, len: u64) -> bool {
    let mut va = addr & !0xfff;
    let end = addr + len;
    while va < end {
        let mut table = cr3 & !0xfff;
        let mut level = 4;
        let size = loop {
            let idx = (va >> (12 + 9 * (level - 1))) & 0x1ff;
            if !mapped(table.max(1), 4096) {
                return false;
            }
            let e = rd64(table + idx * 8);
            if e & 1 == 0 {
                return false;
            }
            let page = 1u64 << (12 + 9 * (level - 1));
            if level == 1 || (level <= 3 && e & 0x80 != 0) {
                let phys = (e & 0x000f_ffff_ffff_f000) & !(page - 1);
                if phys != va & !(page - 1) {
                    return false;
                }
                break page;
            }
            table = e & 0x000f_ffff_ffff_f000;
            level -= 1;
        };
        va = (va & !(size - 1)) + size;
    }
    true
}

/// A GDT entry's `(base, limit in bytes - 1, access byte, flags nibble)`.
fn descriptor(gdt: u64, limit: u16, sel: u16) -> Option<(u64, u64, u8, u8)> {
    let off = u64::from(sel & !7);
    if sel & 4 != 0 || off + 7 > u64::from(limit) || !mapped(gdt + off, 8) {
        return None;
    }
    let e = rd64(gdt + off);
    let base = ((e >> 16) & 0xff_ffff) | (((e >> 56) & 0xff) << 24);
    let raw = (e & 0xffff) | (((e >> 48) & 0xf) << 16);
    let flags = ((e >> 52) & 0xf) as u8;
    let lim = if flags & 0x8 != 0 { (raw << 12) | 0xfff } else { raw };
    Some((base, lim, ((e >> 40) & 0xff) as u8, flags))
}

/// `segments`: CS = __BOOT_CS, DS/ES/SS = __BOOT_DS; `gdt`: the descriptors behind
/// them, 4 GiB flat, code execute/read 64-bit, data read/write (boot.rst).
fn segments(s: &EntryState, report: &mut Report) {
    let [cs, ds, es, ss, fs, gs, tr, _] = s.selectors;
    serial::begin();
    serial::bytes(b"segments cs=0x");
    serial::hex(u64::from(cs), 2);
    for (name, v) in [(&b" ds=0x"[..], ds), (b" es=0x", es), (b" ss=0x", ss), (b" fs=0x", fs), (b" gs=0x", gs), (b" tr=0x", tr)] {
        serial::bytes(name);
        serial::hex(u64::from(v), 2);
    }
    serial::end();
    let mut c = Check::new(report, None, b"segments");
    c.expect_eq(u64::from(cs), u64::from(BOOT_CS), b"CS is not __BOOT_CS");
    for v in [ds, es, ss] {
        c.expect_eq(u64::from(v), u64::from(BOOT_DS), b"DS/ES/SS is not __BOOT_DS");
    }
    c.done();

    let (base, limit) = entry_state::table(&s.gdtr);
    let mut c = Check::new(report, None, b"gdt");
    match descriptor(base, limit, cs) {
        None => c.fail(b"CS's descriptor is outside the GDT"),
        Some((b, l, access, flags)) => {
            // present, S, code, readable; L set, D clear.
            c.expect(access & 0x9a == 0x9a && access & 0x60 == 0, b"CS descriptor is not a present DPL-0 readable code segment");
            c.expect(flags & 0x6 == 0x2, b"CS descriptor is not 64-bit (L=1, D=0)");
            c.expect(b == 0 && l == 0xffff_ffff, b"CS descriptor is not 4 GiB flat");
        }
    }
    match descriptor(base, limit, ds) {
        None => c.fail(b"DS's descriptor is outside the GDT"),
        Some((b, l, access, _)) => {
            c.expect(access & 0x9a == 0x92 && access & 0x60 == 0, b"DS descriptor is not a present DPL-0 writable data segment");
            c.expect(b == 0 && l == 0xffff_ffff, b"DS descriptor is not 4 GiB flat");
        }
    }
    c.done();
}

/// `idt`: the IDT the VMM loaded holds no present gate (Linux loads its own before it
/// enables interrupts; a fault before that must end the VM, not jump into junk).
fn idt(s: &EntryState, report: &mut Report) {
    let (base, limit) = entry_state::table(&s.idtr);
    let mut c = Check::new(report, None, b"idt");
    let mut off = 0u64;
    while off + 15 <= u64::from(limit) {
        if !mapped(base + off, 16) || rd8(base + off + 5) & 0x80 != 0 {
            c.fail_value(b"a present (or unreadable) gate in the boot IDT", off / 16, 0);
            break;
        }
        off += 16;
    }
    c.done();
}

fn ioapic_rd(reg: u32) -> u32 {
    mmio_wr32(IOAPIC_BASE, reg);
    mmio_rd32(IOAPIC_BASE + 0x10)
}

/// `ioapic`: the IO-APIC at the MP table's address (0xfec00000): its ID register as the
/// table says, a version Linux knows, at least 24 redirection entries (every pin the
/// table routes), all masked as after reset.
pub fn ioapic(mp: Option<&Mp>, report: &mut Report) {
    let mut c = Check::new(report, None, b"ioapic");
    let Some((id, addr)) = mp.and_then(|m| m.ioapic) else {
        c.fail(b"the MP table names no usable IO-APIC");
        c.done();
        return;
    };
    c.expect_eq(u64::from(addr), IOAPIC_BASE, b"IO-APIC address in the MP table");
    let reg_id = ioapic_rd(0);
    let version = ioapic_rd(1);
    let entries = ((version >> 16) & 0xff) + 1;
    serial::begin();
    serial::bytes(b"ioapic id=");
    serial::dec(u64::from((reg_id >> 24) & 0xf));
    serial::bytes(b" version=0x");
    serial::hex(u64::from(version & 0xff), 2);
    serial::bytes(b" entries=");
    serial::dec(u64::from(entries));
    serial::end();
    // KVM's IO-APIC ID register has 4 bits: the table's id modulo 16.
    c.expect_eq(u64::from((reg_id >> 24) & 0xf), u64::from(id & 0xf), b"IO-APIC ID register differs from the MP table's IO-APIC id");
    c.expect(matches!(version & 0xff, 0x11 | 0x20), b"IO-APIC version is not 0x11 or 0x20");
    c.expect(entries >= 24, b"IO-APIC has fewer than 24 redirection entries");
    for pin in 0..entries.min(24) {
        let low = ioapic_rd(0x10 + 2 * pin);
        if low & (1 << 16) == 0 {
            c.fail_value(b"redirection entry not masked at boot", u64::from(pin), 0);
            break;
        }
    }
    c.done();
}

/// The BSP's view, captured as early as possible (before anything touches the LAPIC).
static mut BSP_VIEW: CpuView = CpuView::EMPTY;

pub fn capture_bsp() -> &'static CpuView {
    // SAFETY: only the BSP runs here, before any AP is started.
    unsafe {
        cpuview::capture(&mut *core::ptr::addr_of_mut!(BSP_VIEW));
        &*core::ptr::addr_of!(BSP_VIEW)
    }
}

/// Starts every AP the MP table lists and checks every CPU's view: `cpu0 …` (the BSP),
/// then `cpu<n> …` per AP; `smp` says whether all started. `ram` for the trampoline's
/// placement.
pub fn cpus(bsp: &CpuView, mp: Option<&Mp>, bp: BootParams, ram: Option<&Ram>, report: &mut Report) {
    let n = mp.map_or(1, |m| m.enabled.max(1));
    cpuview::evaluate(bsp, &Expect { cpu: 0, apic_id: mp.and_then(|m| m.bsp_apic_id).map(u32::from), cpus: n, bsp: None, tsc_before: 0 }, report);
    let Some(mp) = mp else { return };
    let bsp_id = bsp.lapic_id >> 24;
    let t = smp::TRAMPOLINE;
    let clear = |a: u64, l: u64| t + 4096 <= a || a + l <= t;
    let (initrd, isize) = bp.initrd();
    let free = ram.is_some_and(|r| r.covers(t, 4096))
        && clear(bp.addr, crate::bootparams::SIZE)
        && clear(bp.cmd_line_ptr(), COMMAND_LINE_SIZE)
        && clear(mp.floating, 16)
        && clear(mp.table.0, mp.table.1 - mp.table.0)
        && (isize == 0 || clear(initrd, isize))
        && smp::trampoline_len() <= 4096;
    // APIC ids whose AP's IPIs stuck / which never reported; too many APs.
    let (mut stuck, mut silent, mut too_many) = (0u64, 0u64, false);
    let mut started = 0u32;
    if free {
        smp::install();
        let mut slot = 0u32;
        for id in 0..64u32 {
            if mp.apic_ids & (1 << id) == 0 || id == bsp_id {
                continue;
            }
            if slot >= smp::MAX_APS {
                too_many = true;
                break;
            }
            match smp::start(slot, id) {
                smp::Started::Up(view, tsc_before) => {
                    started += 1;
                    let e = Expect { cpu: slot + 1, apic_id: Some(id), cpus: n, bsp: Some(bsp), tsc_before };
                    cpuview::evaluate(view, &e, report);
                }
                smp::Started::IpiStuck => stuck |= 1 << id,
                smp::Started::Silent => silent |= 1 << id,
            }
            slot += 1;
        }
    }
    serial::begin();
    serial::bytes(b"cpus-started=");
    serial::dec(u64::from(started + 1));
    serial::end();
    let mut c = Check::new(report, None, b"smp");
    if bsp_id >= 64 || mp.apic_ids & (1u64 << bsp_id) == 0 {
        c.fail(b"the BSP's APIC id is not an enabled MP table processor");
    }
    c.expect(free, b"the AP trampoline page (0x1000) is not free e820 RAM");
    c.expect(!too_many, b"more APs than the guest starts (7)");
    for id in 0..64u64 {
        if stuck & (1 << id) != 0 {
            c.fail_value(b"INIT/STARTUP IPI never left the ICR for APIC id", id, id);
        }
        if silent & (1 << id) != 0 {
            c.fail_value(b"AP did not come up within 3 s of INIT/SIPI: APIC id", id, id);
        }
    }
    c.expect_eq(u64::from(started + 1), u64::from(n), b"CPUs running is not the MP table's count");
    c.done();
}
