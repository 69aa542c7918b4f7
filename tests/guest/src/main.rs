//! The test guest: a tiny x86-64 kernel that checks the boot protocol as Linux reads
//! it and prints what it finds on the serial port. See ../README.md for the output
//! contract.
#![no_std]
#![no_main]

mod bootparams;
mod cmdline;
mod cpuid;
mod entry;
mod fnv;
mod io;
mod mem;
mod mptable;
mod power;
mod report;
mod serial;

use bootparams::{BootParams, Ram};
use cmdline::Cmdline;
use core::sync::atomic::Ordering;
use report::Report;

/// `hvm_start_info` magic (PVH).
const PVH_MAGIC: u32 = 0x336e_c578;
const PVH_CMDLINE_PADDR: u64 = 0x18;

#[no_mangle]
extern "C" fn testguest_main(info: u64, mode: u64) -> ! {
    let mut report = Report::new();
    let cmdline = if mode == entry::MODE_PVH {
        power::PVH.store(true, Ordering::Relaxed);
        serial::line(b"pvh");
        pvh_cmdline(info, &mut report)
    } else {
        linux_checks(info, &mut report)
    };

    let cpus = if mode == entry::MODE_PVH { None } else { mptable::check(&mut report) };
    let apic_id = cpuid::check(&mut report);
    if let Some(bsp) = cpus.and_then(|c| c.bsp_apic_id) {
        if u32::from(bsp) != apic_id {
            report.fail(b"mp table's BSP apic id differs from this CPU's (cpuid leaf 1)");
        }
    }
    report.verdict();

    if cmdline.has(b"testguest.fault") {
        serial::line(b"faulting");
        power::triple_fault();
    }
    if cmdline.has(b"testguest.halt") {
        power::wait_for_shutdown();
    }
    power::poweroff();
}

/// Prints `cmdline=<the command line>` (possibly empty).
fn print_cmdline(addr: u64, report: &mut Report) -> Cmdline<'static> {
    match Cmdline::at(addr) {
        Some(c) => {
            serial::begin();
            serial::bytes(b"cmdline=");
            serial::text(c.bytes);
            serial::end();
            c
        }
        None => {
            report.fail(b"command line is outside the identity-mapped first GiB");
            Cmdline::EMPTY
        }
    }
}

fn pvh_cmdline(info: u64, report: &mut Report) -> Cmdline<'static> {
    if !io::mapped(info, 0x38) || io::rd32(info) != PVH_MAGIC {
        report.fail(b"pvh hvm_start_info missing or bad magic");
        return Cmdline::EMPTY;
    }
    print_cmdline(io::rd64(info + PVH_CMDLINE_PADDR), report)
}

/// The zero-page checks: command line, header, e820, initrd.
fn linux_checks(boot_params: u64, report: &mut Report) -> Cmdline<'static> {
    let Some(bp) = BootParams::at(boot_params) else {
        report.fail(b"boot params address (rsi) is zero or not identity-mapped");
        return Cmdline::EMPTY;
    };
    let cmdline = print_cmdline(bp.cmd_line_ptr(), report);
    bp.check_header(report);

    let ram = Ram::check(bp, report);
    if let Some(ram) = &ram {
        let (start, end) = entry::image_range();
        if !ram.covers(start, end - start) {
            report.fail(b"e820 RAM does not cover the guest image at 1 MiB");
        }
        if !ram.covers(bp.addr, bootparams::SIZE) {
            report.fail(b"e820 RAM does not cover the boot params");
        }
        let c = bp.cmd_line_ptr();
        if c != 0 && !ram.covers(c, cmdline.bytes.len() as u64 + 1) {
            report.fail(b"e820 RAM does not cover the command line");
        }
    }

    let (addr, size) = bp.initrd();
    if size != 0 {
        check_initrd(bp, ram.as_ref(), addr, size, report);
    }
    cmdline
}

/// Prints `initrd=<size> sum=<fnv1a32>` after checking where it lies.
fn check_initrd(bp: BootParams, ram: Option<&Ram>, addr: u64, size: u64, report: &mut Report) {
    if bp.type_of_loader() == 0 {
        report.fail(b"initrd given but hdr.type_of_loader is 0: Linux ignores the initrd");
    }
    if !io::mapped(addr, size) {
        report.fail(b"initrd is at zero or beyond the identity-mapped first GiB");
        return;
    }
    let Some(ram) = ram else {
        report.fail(b"initrd cannot be checked without an e820 map");
        return;
    };
    if !ram.covers(addr, size) {
        report.fail(b"initrd is not inside e820 RAM");
        return;
    }
    let (start, end) = entry::image_range();
    if addr < end && start < addr + size {
        report.fail(b"initrd overlaps the guest image");
    }
    if addr < bp.addr + bootparams::SIZE && bp.addr < addr + size {
        report.fail(b"initrd overlaps the boot params");
    }
    let sum = fnv::fnv1a32(io::phys_slice(addr, size));
    serial::begin();
    serial::bytes(b"initrd=");
    serial::dec(size);
    serial::bytes(b" sum=");
    serial::hex(u64::from(sum), 8);
    serial::end();
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    serial::line(b"FAIL panic");
    serial::line(b"failed");
    power::poweroff();
}
