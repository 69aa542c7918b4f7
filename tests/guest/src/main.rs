//! The test guest: a tiny x86-64 kernel that checks the boot protocol as Linux reads
//! it and prints what it finds on the serial port. See ../README.md for the output
//! contract.
#![no_std]
#![no_main]

mod blk;
mod bootparams;
mod clock;
mod cmdline;
mod count;
mod cpuid;
mod cpuview;
mod entry;
mod entry_state;
mod fnv;
mod hostile;
mod idle;
mod io;
mod machine;
mod mem;
mod mptable;
mod net;
mod power;
mod report;
mod serial;
mod setup_header;
mod smp;
mod virtio;

use bootparams::{BootParams, Ram};
use cmdline::Cmdline;
use net::cmdline_ip::IpArg;
use core::sync::atomic::Ordering;
use report::Report;

/// `hvm_start_info` magic (PVH).
const PVH_MAGIC: u32 = 0x336e_c578;
const PVH_CMDLINE_PADDR: u64 = 0x18;

#[no_mangle]
extern "C" fn testguest_main(info: u64, mode: u64) -> ! {
    let mut report = Report::new();
    // The BSP's per-CPU view first, before anything touches its local APIC.
    let bsp_view = (mode != entry::MODE_PVH).then(machine::capture_bsp);
    let (cmdline, ram, initrd, bp) = if mode == entry::MODE_PVH {
        power::PVH.store(true, Ordering::Relaxed);
        serial::line(b"pvh");
        (pvh_cmdline(info, &mut report), None, (0, 0), None)
    } else {
        linux_checks(info, &mut report)
    };
    if mode != entry::MODE_PVH {
        if let Some(bp) = bp {
            setup_header::check(bp, cmdline.bytes.len(), &mut report);
        }
        machine::entry(bp, &mut report);
    }

    let mp = if mode == entry::MODE_PVH { None } else { mptable::check(&mut report) };
    let apic_id = cpuid::check(&mut report);
    if let Some(bsp) = mp.as_ref().and_then(|m| m.bsp_apic_id) {
        if u32::from(bsp) != apic_id {
            report.fail(b"mp table's BSP apic id differs from this CPU's (cpuid leaf 1)");
        }
    }
    if let (Some(view), Some(bp)) = (bsp_view, bp) {
        machine::ioapic(mp.as_ref(), &mut report);
        machine::cpus(view, mp.as_ref(), bp, ram.as_ref(), &mut report);
    }
    // Chatting is something a counting guest does between its ticks.
    let chat = cmdline.has(b"testguest.chat") && cmdline.has(b"testguest.count");
    let (stack, chat, first_disk) = devices(&cmdline, chat, &mut report);
    let count_disk = cmdline.has(b"testguest.count-disk") && cmdline.has(b"testguest.count");
    let tick_disk = match (count_disk, first_disk) {
        (false, _) => None,
        (true, Some(dev)) => blk::TickDisk::open(&dev, &mut report),
        (true, None) => {
            report.fail(b"testguest.count-disk needs a virtio disk");
            None
        }
    };
    let memory = ram.as_ref().map(|ram| count::Memory { ram, initrd });
    let counter = count::setup(&cmdline, memory, &mut report);
    report.verdict();

    if cmdline.has(b"testguest.fault") {
        serial::line(b"faulting");
        power::triple_fault();
    }
    if let Some(counter) = counter {
        counter.run(tick_disk, stack, chat, cmdline.has(b"testguest.echo"));
    }
    if let (Some(mut stack), true) = (stack, cmdline.has(b"testguest.halt")) {
        stack.serve();
    }
    if cmdline.has(b"testguest.halt") {
        power::wait_for_shutdown(cmdline.has(b"testguest.echo"));
    }
    power::poweroff();
}

/// The virtio-mmio devices named on the command line, in order: each disk is driven
/// at once (`disk<i>` lines), the NICs are set up (`nic<i> mac=`), then they send and
/// listen together (`nic<i> rx from=`); then the first NIC gets its IPv4 address
/// (`ip=`, `testguest.dhcp`) and pings (`testguest.ping=`), or is kept to `chat` while
/// the guest counts. Returns the IP stack or the chat, if any, and the first disk.
fn devices(
    cmdline: &Cmdline<'static>,
    chat: bool,
    report: &mut Report,
) -> (Option<net::stack::Stack>, Option<net::Chat>, Option<virtio::Device>) {
    let name = cmdline.value(b"testguest.name").unwrap_or(b"");
    let marker = cmdline.value(b"testguest.write");
    let hostile = cmdline.has(b"testguest.hostile");
    let listen_ms = match cmdline.value(b"testguest.listen").map(parse_dec) {
        None => 0,
        Some(Some(ms)) => ms,
        Some(None) => {
            report.fail(b"testguest.listen= is not a number of milliseconds");
            0
        }
    };
    let mut nics: [Option<net::Nic>; net::MAX_NICS] = [const { None }; net::MAX_NICS];
    let (mut disks, mut nic_count) = (0u32, 0usize);
    let mut first_disk = None;
    for (i, w) in cmdline.values(b"virtio_mmio.device").enumerate() {
        if i == virtio::MAX_DEVICES {
            report.fail(b"more virtio_mmio.device entries than the guest drives (8)");
            break;
        }
        let Some(window) = virtio::parse_window(w) else {
            report.fail_begin();
            serial::bytes(b"cannot parse virtio_mmio.device=");
            serial::text(w);
            serial::end();
            continue;
        };
        let Some(dev) = virtio::probe(window, report) else { continue };
        match dev.id {
            virtio::ID_BLK => {
                if hostile {
                    hostile::run(&dev, disks, report);
                }
                blk::run(&dev, disks, marker, report);
                first_disk = first_disk.or(Some(dev));
                disks += 1;
            }
            virtio::ID_NET if nic_count == net::MAX_NICS => {
                virtio::fail(report, dev.base, b"more NICs than the guest drives (4)");
            }
            virtio::ID_NET => {
                nics[nic_count] = net::init(&dev, nic_count, name, report);
                nic_count += 1;
            }
            _ => {} // no device (0) or a type the guest does not drive
        }
    }
    let ip = ip_config(cmdline, report);
    let first = net::run(&mut nics, listen_ms, ip.is_some() || chat, report);
    let Some(ip) = ip else {
        return (None, first.map(net::Chat::new), first_disk);
    };
    if chat {
        report.fail(b"testguest.chat and an IPv4 address (ip=, testguest.dhcp) both want the first NIC");
    }
    let Some(nic) = first else {
        report.fail(b"an IPv4 address is asked for (ip=, testguest.dhcp) but there is no NIC");
        return (None, None, first_disk);
    };
    let mut stack = net::stack::Stack::new(nic);
    match ip {
        IpArg::Static { addr, mask, gw } => {
            stack.configure(addr, mask, gw);
            stack.print_ip_line();
        }
        IpArg::Dhcp | IpArg::Off => {
            stack.dhcp();
        }
    }
    for target in cmdline.value(b"testguest.ping").unwrap_or(b"").split(|&c| c == b',') {
        match net::cmdline_ip::parse_ip(target) {
            Some(addr) => stack.ping(addr),
            None if target.is_empty() => {}
            None => {
                report.fail_begin();
                serial::bytes(b"cannot parse testguest.ping= address ");
                serial::text(target);
                serial::end();
            }
        }
    }
    (Some(stack), None, first_disk)
}

/// The first NIC's IPv4 configuration: `testguest.dhcp` (DHCP), else the last `ip=` (a fixed
/// address, or DHCP); `None` without either, with `ip=off`, or when `ip=` is malformed
/// (a FAIL line).
fn ip_config(cmdline: &Cmdline<'static>, report: &mut Report) -> Option<IpArg> {
    if cmdline.has(b"testguest.dhcp") {
        return Some(IpArg::Dhcp);
    }
    // As in Linux, a later `ip=` overrides an earlier one (vmctl appends its own).
    let value = cmdline.values(b"ip").last()?;
    match net::cmdline_ip::parse(value) {
        Some(IpArg::Off) => None,
        Some(ip) => Some(ip),
        None => {
            report.fail_begin();
            serial::bytes(b"cannot parse ip=");
            serial::text(value);
            serial::end();
            None
        }
    }
}

/// A decimal number (at most 10 minutes' worth of milliseconds is used).
fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 12 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(c - b'0');
    }
    Some(n.min(600_000))
}

/// Prints `cmdline=<the command line>` (possibly empty).
fn print_cmdline(addr: u64, report: &mut Report) -> Cmdline<'static> {
    match Cmdline::at(addr) {
        Some(c) => {
            serial::begin();
            serial::bytes(b"cmdline=");
            serial::text(c.bytes);
            serial::end();
            if let Some(name) = c.value(b"testguest.name") {
                serial::begin();
                serial::bytes(b"name=");
                serial::text(name);
                serial::end();
            }
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

/// The zero-page checks: command line, header, e820, initrd. Returns the command
/// line, the e820 RAM (when there is a usable map) and the initrd's `(address, size)`
/// (size 0 without one).
fn linux_checks(
    boot_params: u64,
    report: &mut Report,
) -> (Cmdline<'static>, Option<Ram>, (u64, u64), Option<BootParams>) {
    let Some(bp) = BootParams::at(boot_params) else {
        report.fail(b"boot params address (rsi) is zero or not identity-mapped");
        return (Cmdline::EMPTY, None, (0, 0), None);
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
    (cmdline, ram, (addr, size), Some(bp))
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
