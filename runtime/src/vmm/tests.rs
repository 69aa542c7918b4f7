//! In-process boots of hand-assembled guests: the whole build → run path without the
//! test guest. Skipped unless /dev/kvm can be opened.

use std::io::Write;
use std::sync::{Arc, Mutex};

use super::*;

/// A minimal x86-64 ELF executable: one PT_LOAD segment of `code` at 1 MiB, entry there.
fn elf(code: &[u8]) -> Vec<u8> {
    const BASE: u64 = 0x10_0000;
    let mut f = Vec::new();
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&BASE.to_le_bytes()); // entry
    f.extend_from_slice(&64u64.to_le_bytes()); // phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [64u16, 56, 1, 64, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    f.extend_from_slice(&5u32.to_le_bytes()); // R+X
    f.extend_from_slice(&120u64.to_le_bytes()); // offset
    f.extend_from_slice(&BASE.to_le_bytes()); // vaddr
    f.extend_from_slice(&BASE.to_le_bytes()); // paddr
    f.extend_from_slice(&(code.len() as u64).to_le_bytes());
    f.extend_from_slice(&(code.len() as u64).to_le_bytes());
    f.extend_from_slice(&0x1000u64.to_le_bytes());
    assert_eq!(f.len(), 120);
    f.extend_from_slice(code);
    f
}

/// `mov dx,0x3f8; mov al,'K'; out dx,al; mov al,0xfe; out 0x64,al; hlt; jmp $-1`
const HELLO_POWEROFF: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, 0xb0, b'K', 0xee, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd,
];
/// `in al,0x80` (nobody there), then `ud2` with an empty IDT: a triple fault.
const TRIPLE_FAULT: &[u8] = &[0xe4, 0x80, 0x0f, 0x0b];

/// `mov eax,[0x2000000]` (past the end of 16 MiB of RAM: MMIO nobody claims), print
/// `al`, `mov [0x2000000],eax`, power off.
const UNKNOWN_MMIO: &[u8] = &[
    0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x02, 0x66, 0xba, 0xf8, 0x03, 0xee, 0x89, 0x04, 0x25, 0x00,
    0x00, 0x00, 0x02, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd,
];

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        bus::lock(&self.0).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn kvm_usable() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        eprintln!("SKIPPED: needs /dev/kvm");
    }
    ok
}

fn boot(code: &[u8], cpus: u32) -> (Result<Exit, VmmError>, Vec<u8>, Arc<Lifecycle>) {
    let mut kernel = tempfile::NamedTempFile::new().unwrap();
    kernel.write_all(&elf(code)).unwrap();
    let mut spec = VmmSpec::new(kernel.path());
    spec.cpus = cpus;
    spec.memory = spec::Size(16 << 20);
    let sink = Sink::default();
    let vmm = Vmm::build(&spec, Box::new(sink.clone()), Threads::unconfined()).unwrap();
    let life = vmm.lifecycle().clone();
    let r = vmm.run();
    let out = bus::lock(&sink.0).clone();
    (r, out, life)
}

#[test]
fn hand_assembled_guest_prints_and_powers_off() {
    if !kvm_usable() {
        return;
    }
    for cpus in [1, 2] {
        let (r, out, life) = boot(HELLO_POWEROFF, cpus);
        assert_eq!(r.unwrap(), Exit::PowerOff);
        assert_eq!(out, b"K");
        assert!(life.counters.io.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    }
}

#[test]
fn faulting_guest_is_reported_and_unknown_io_counted() {
    if !kvm_usable() {
        return;
    }
    let (r, _, life) = boot(TRIPLE_FAULT, 1);
    let err = r.unwrap_err();
    assert!(matches!(err, VmmError::GuestFault { vcpu: 0, .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("triple fault") || msg.contains("emulation"),
        "{msg}"
    );
    assert_eq!(
        life.counters
            .unknown_io
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn unknown_mmio_reads_all_ones_and_is_counted() {
    if !kvm_usable() {
        return;
    }
    let (r, out, life) = boot(UNKNOWN_MMIO, 1);
    assert_eq!(r.unwrap(), Exit::PowerOff);
    assert_eq!(out, [0xff]);
    let c = &life.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((load(&c.mmio), load(&c.unknown_mmio)), (2, 2));
}

#[test]
fn absurd_memory_is_refused_before_kvm() {
    let mut spec = VmmSpec::new("/proc/self/exe");
    spec.memory = spec::Size(1 << 50);
    let err = Vmm::build(&spec, Box::new(std::io::sink()), Threads::unconfined())
        .err()
        .unwrap();
    assert!(
        matches!(err, VmmError::Memory(MemoryError::TooLarge { .. })),
        "{err}"
    );
}
