//! Starting the application processors the way Linux does (smpboot.c
//! wakeup_secondary_cpu_via_init): for each AP the MP table lists, one at a time, an
//! INIT IPI (level-triggered assert, then de-assert) and two STARTUP IPIs whose vector
//! is the page of a real-mode trampoline below 1 MiB (entry.rs `ap_tramp16`). The AP
//! climbs to long mode, captures its view (cpuview.rs) into a slot of its own, marks it
//! done and halts; the BSP waits for it (bounded) before starting the next.

use crate::clock;
use crate::cpuview::{self, CpuView, LAPIC_BASE};
use crate::io::{mmio_rd32, mmio_wr32, phys_slice};
use core::sync::atomic::{AtomicU32, Ordering};

/// At most this many APs are started (the guest's MP table walk keeps APIC ids < 64).
pub const MAX_APS: u32 = 7;
/// Each AP's stack (`ap_stacks` in entry.rs, not zeroed, not in the ELF file).
pub const AP_STACK_SIZE: usize = 8192;
/// Where the trampoline is copied: a page in conventional memory that no boot
/// structure of vmctl or Firecracker uses (Linux takes one from memblock below 1 MiB).
pub const TRAMPOLINE: u64 = 0x1000;

const ICR_LOW: u64 = 0x300;
const ICR_HIGH: u64 = 0x310;
const ESR: u64 = 0x280;
const ICR_BUSY: u32 = 1 << 12;
const INIT_ASSERT: u32 = 0xc500; // level-triggered, assert, INIT
const INIT_DEASSERT: u32 = 0x8500; // level-triggered, INIT
const STARTUP: u32 = 0x600;

/// How long an AP may take from INIT to done (real mode on this emulator is slow).
const AP_TIMEOUT_MS: u64 = 3000;

static mut VIEWS: [CpuView; MAX_APS as usize] = [CpuView::EMPTY; MAX_APS as usize];
static DONE: [AtomicU32; MAX_APS as usize] = [const { AtomicU32::new(0) }; MAX_APS as usize];

extern "C" {
    static ap_tramp16: u8;
    static ap_tramp16_end: u8;
}

/// Where an AP lands once in long mode with its stack (entry.rs `ap_start64`).
#[no_mangle]
extern "C" fn testguest_ap_main(slot: u32) -> ! {
    let slot = slot as usize;
    // SAFETY: each AP owns slot `slot` (handed out once by ap_next); the BSP reads it
    // only after DONE[slot] (release/acquire).
    unsafe { cpuview::capture(&mut *core::ptr::addr_of_mut!(VIEWS[slot])) };
    DONE[slot].store(1, Ordering::Release);
    loop {
        // SAFETY: halting with interrupts off: the AP stays parked until the VM ends.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// The trampoline's bytes, as linked in the image.
#[allow(unused_unsafe)]
fn trampoline() -> &'static [u8] {
    // SAFETY: linker-defined bounds of the .text.ap16 code.
    unsafe {
        let start = core::ptr::addr_of!(ap_tramp16) as u64;
        let end = core::ptr::addr_of!(ap_tramp16_end) as u64;
        phys_slice(start, end - start)
    }
}

/// The trampoline's size (for the caller's placement checks).
pub fn trampoline_len() -> u64 {
    trampoline().len() as u64
}

fn wait_icr_idle() -> bool {
    for _ in 0..1000 {
        if mmio_rd32(LAPIC_BASE + ICR_LOW) & ICR_BUSY == 0 {
            return true;
        }
        clock::pause(10);
    }
    false
}

fn ipi(apic_id: u32, low: u32) -> bool {
    mmio_wr32(LAPIC_BASE + ESR, 0);
    mmio_wr32(LAPIC_BASE + ICR_HIGH, apic_id << 24);
    mmio_wr32(LAPIC_BASE + ICR_LOW, low);
    wait_icr_idle()
}

fn udelay(us: u64) {
    let end = clock::rdtsc().saturating_add(clock::ticks_per_ms().saturating_mul(us) / 1000);
    while clock::rdtsc() < end {
        clock::pause(1);
    }
}

/// Copies the trampoline to [`TRAMPOLINE`] (once).
pub fn install() {
    let t = trampoline();
    // SAFETY: TRAMPOLINE is conventional RAM the caller checked is free; the copy does
    // not overlap the image (at 1 MiB).
    unsafe { core::ptr::copy_nonoverlapping(t.as_ptr(), TRAMPOLINE as *mut u8, t.len()) };
}

/// What starting one AP gave.
pub enum Started {
    /// Its view, and the BSP's TSC just before its INIT.
    Up(&'static CpuView, u64),
    /// The ICR never went idle.
    IpiStuck,
    /// It did not report within the timeout.
    Silent,
}

/// Starts the AP with APIC id `apic_id` as AP number `slot` (0-based, in start order).
pub fn start(slot: u32, apic_id: u32) -> Started {
    let tsc_before = clock::rdtsc();
    let vector = (TRAMPOLINE >> 12) as u32;
    if !ipi(apic_id, INIT_ASSERT) || !ipi(apic_id, INIT_DEASSERT) {
        return Started::IpiStuck;
    }
    for _ in 0..2 {
        if !ipi(apic_id, STARTUP | vector) {
            return Started::IpiStuck;
        }
        udelay(10);
        if DONE[slot as usize].load(Ordering::Acquire) != 0 {
            break;
        }
    }
    let deadline = clock::deadline(AP_TIMEOUT_MS);
    while DONE[slot as usize].load(Ordering::Acquire) == 0 {
        if clock::passed(deadline) {
            return Started::Silent;
        }
        clock::pause(100);
    }
    // SAFETY: DONE[slot] was set (acquire) after the AP wrote the slot; nothing writes
    // it again.
    let view = unsafe { &*core::ptr::addr_of!(VIEWS[slot as usize]) };
    Started::Up(view, tsc_before)
}
