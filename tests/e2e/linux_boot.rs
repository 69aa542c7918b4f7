//! The engine's Linux boot path as the test guest checks it (tests/guest: every piece
//! of machine state Linux reads at entry, each vCPU's view, the MP table as mpparse.c
//! walks it; docs/linux-boot.md has the table): the guest booted as an ELF vmlinux and
//! as a bzImage, with 1, 2 and 4 vCPUs, prints `check <name> ok` for every check and
//! `cpu<n> check <name> ok` for every check of every CPU, and no FAIL.

use crate::vm::{assert_guest_ok, assert_line, guest, guest_bzimage, skip, vmm_run};

/// The machine-wide checks (the BSP's, at entry), by the names the guest prints.
const MACHINE_CHECKS: &[&str] = &[
    "boot-params",
    "e820",
    "setup-header",
    "cr0",
    "cr4",
    "efer",
    "rflags",
    "segments",
    "gdt",
    "idt",
    "cr3",
    "mptable",
    "ioapic",
    "smp",
];

/// The checks every CPU's view gets.
const CPU_CHECKS: &[&str] = &[
    "apic-base",
    "apic-id",
    "lapic-version",
    "lint",
    "spurious",
    "pat",
    "mtrr",
    "misc-enable",
    "tsc",
    "cpuid-vendor",
    "cpuid-family",
    "cpuid-topology",
    "cpuid-hypervisor",
    "cpuid-features",
];

#[test]
fn elf_and_bzimage_guests_pass_every_linux_boot_check_with_1_2_and_4_vcpus() {
    if skip() {
        return;
    }
    let elf = guest().to_str().unwrap().to_string();
    let bz = guest_bzimage().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let initrd_path = dir.path().join("initrd.img");
    std::fs::write(&initrd_path, vec![0x5au8; 3000]).unwrap();
    let initrd = initrd_path.to_str().unwrap();
    for (kernel, form) in [(&elf, "elf"), (&bz, "bzimage")] {
        for cpus in [1u32, 2, 4] {
            let n = cpus.to_string();
            let args = [
                "--kernel",
                kernel,
                "--cpus",
                &n,
                "--memory",
                "64MiB",
                "--initrd",
                initrd,
                "--cmdline",
                "console=ttyS0",
            ];
            let run = vmm_run(&args);
            let ctx = format!("{form}, {cpus} vCPUs");
            assert_guest_ok(&run);
            let out = &run.stdout;
            assert_line(out, &format!("testguest: boot={form}"));
            for check in MACHINE_CHECKS {
                assert_line(out, &format!("testguest: check {check} ok"));
            }
            for cpu in 0..cpus {
                assert_line(out, &format!("testguest: cpu{cpu} apic-id={cpu}"));
                for check in CPU_CHECKS {
                    assert_line(out, &format!("testguest: cpu{cpu} check {check} ok"));
                }
            }
            assert!(
                !out.contains(&format!("testguest: cpu{cpus} ")),
                "{ctx}: a CPU beyond the count reported:\n{out}"
            );
            assert_line(out, &format!("testguest: cpus-started={cpus}"));
            assert_line(out, &format!("testguest: cpus={cpus}"));
            // Every e820 entry against the memory size: conventional RAM below the
            // MP table's KiB, the legacy hole reserved, RAM from 1 MiB to 64 MiB.
            let e820: Vec<&str> = out
                .lines()
                .filter(|l| l.starts_with("testguest: e820 "))
                .collect();
            assert_eq!(
                e820,
                [
                    "testguest: e820 0x00000000-0x0009fc00 type=1",
                    "testguest: e820 0x0009fc00-0x00100000 type=2",
                    "testguest: e820 0x00100000-0x04000000 type=1",
                ],
                "{ctx}"
            );
            // boot.rst's selectors; the IO-APIC id after the vCPUs' APIC ids.
            assert_line(
                out,
                "testguest: segments cs=0x10 ds=0x18 es=0x18 ss=0x18 fs=0x18 gs=0x18 tr=0x20",
            );
            assert_line(
                out,
                &format!("testguest: ioapic id={} version=0x11 entries=24", cpus + 1),
            );
            // The initrd is placed where both forms' checks accept it.
            assert!(
                out.lines()
                    .any(|l| l.starts_with("testguest: initrd=3000 sum=")),
                "{ctx}:\n{out}"
            );
        }
    }
}

/// Above 3 GiB the RAM continues at 4 GiB: every e820 entry of a 4 GiB guest, the
/// 32-bit MMIO hole (virtio, IO-APIC, LAPIC) left out.
#[test]
fn a_4_gib_guest_has_its_ram_around_the_mmio_hole() {
    if skip() {
        return;
    }
    let run = vmm_run(&[
        "--kernel",
        guest().to_str().unwrap(),
        "--cpus",
        "2",
        "--memory",
        "4GiB",
    ]);
    assert_guest_ok(&run);
    let e820: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("testguest: e820 "))
        .collect();
    assert_eq!(
        e820,
        [
            "testguest: e820 0x00000000-0x0009fc00 type=1",
            "testguest: e820 0x0009fc00-0x00100000 type=2",
            "testguest: e820 0x00100000-0xc0000000 type=1",
            "testguest: e820 0x100000000-0x140000000 type=1",
        ],
        "{}",
        run.stdout
    );
    assert_line(
        &run.stdout,
        &format!("testguest: memory={}", (4u64 << 30) - 0x100000 + 0x9fc00),
    );
}

/// A bzImage states the longest command line it reads (cmdline_size, 2047 for the
/// test guest): vmctl refuses a longer one instead of letting the kernel cut it.
#[test]
fn bzimage_command_line_longer_than_its_cmdline_size_is_refused() {
    if skip() {
        return;
    }
    let bz = guest_bzimage().to_str().unwrap().to_string();
    let long = format!("console=ttyS0 {}", "x".repeat(2100));
    let run = vmm_run(&[
        "--kernel",
        &bz,
        "--cpus",
        "1",
        "--memory",
        "64MiB",
        "--cmdline",
        &long,
    ]);
    assert!(!run.status.success(), "{}", run.stdout);
    assert!(run.stderr.contains("cmdline_size"), "{}", run.stderr);
    assert!(!run.stdout.contains("testguest:"), "{}", run.stdout);
    // The ELF has no such limit of its own: the same command line boots.
    let run = vmm_run(&[
        "--kernel",
        guest().to_str().unwrap(),
        "--cpus",
        "1",
        "--memory",
        "64MiB",
        "--cmdline",
        &long,
    ]);
    assert_guest_ok(&run);
}
