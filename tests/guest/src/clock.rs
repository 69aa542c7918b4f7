//! Wall-clock time from the TSC, for the NIC's resend period and listening window and
//! the driver's timeouts.
//!
//! Under KVM the TSC runs at the host's rate however slowly the guest executes, so it
//! measures real time. Its rate comes from, in order: kvmclock (KVM's pvclock, enabled
//! for one read and disabled again: `tsc_to_system_mul` and `tsc_shift` give ns per
//! tick), CPUID leaf 0x15 (crystal × ratio), CPUID leaf 0x16 (base MHz), else an
//! assumed 2 GHz. Rough is good enough: nothing here needs better than ~10 %.

use crate::cpuid::cpuid;
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x4d]; // "KVMKVMKVM\0\0\0"
const KVM_FEATURE_CLOCKSOURCE: u32 = 1 << 0;
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
const MSR_KVM_SYSTEM_TIME: u32 = 0x12;
const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
const FALLBACK_TICKS_PER_MS: u64 = 2_000_000;

static TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);

/// `struct pvclock_vcpu_time_info` (32 bytes, must not cross a page): KVM writes it.
#[repr(C, align(64))]
struct PvClock([u32; 8]);
static mut PVCLOCK: PvClock = PvClock([0; 8]);

pub fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: rdtsc has no memory effects.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    (u64::from(hi) << 32) | u64::from(lo)
}

fn wrmsr(msr: u32, value: u64) {
    // SAFETY: only the kvmclock MSRs, after CPUID said they exist.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    }
}

/// TSC ticks per millisecond (calibrated on first use).
pub fn ticks_per_ms() -> u64 {
    let t = TICKS_PER_MS.load(Ordering::Relaxed);
    if t != 0 {
        return t;
    }
    let t = kvmclock().or_else(cpuid_tsc).unwrap_or(FALLBACK_TICKS_PER_MS).max(1);
    TICKS_PER_MS.store(t, Ordering::Relaxed);
    t
}

/// The TSC value `ms` milliseconds from now.
pub fn deadline(ms: u64) -> u64 {
    rdtsc().saturating_add(ms.saturating_mul(ticks_per_ms()))
}

pub fn passed(deadline: u64) -> bool {
    rdtsc() >= deadline
}

fn kvmclock() -> Option<u64> {
    let sig = cpuid(0x4000_0000, 0);
    if [sig.ebx, sig.ecx, sig.edx] != KVM_SIGNATURE || sig.eax < 0x4000_0001 {
        return None;
    }
    let features = cpuid(0x4000_0001, 0).eax;
    let msr = if features & KVM_FEATURE_CLOCKSOURCE2 != 0 {
        MSR_KVM_SYSTEM_TIME_NEW
    } else if features & KVM_FEATURE_CLOCKSOURCE != 0 {
        MSR_KVM_SYSTEM_TIME
    } else {
        return None;
    };
    let addr = core::ptr::addr_of!(PVCLOCK) as u64;
    wrmsr(msr, addr | 1);
    // SAFETY: KVM filled the structure when the vCPU re-entered after the wrmsr.
    let word = |i: usize| unsafe { core::ptr::read_volatile((addr as *const u32).add(i)) };
    let (version, mul, shift) = (word(0), word(6), word(7) as u8 as i8);
    wrmsr(msr, 0);
    if version & 1 != 0 || mul == 0 || !(-32..=32).contains(&shift) {
        return None;
    }
    // ns = ((ticks << shift) * mul) >> 32, so ticks per ms = (10^6 << 32) / mul >> shift.
    let t = (1_000_000u64 << 32) / u64::from(mul);
    let t = if shift >= 0 { t >> shift } else { t << -shift };
    Some(t)
}

fn cpuid_tsc() -> Option<u64> {
    let max = cpuid(0, 0).eax;
    if max >= 0x15 {
        let l = cpuid(0x15, 0);
        if l.eax != 0 && l.ebx != 0 && l.ecx != 0 {
            return Some(u64::from(l.ecx) * u64::from(l.ebx) / u64::from(l.eax) / 1000);
        }
    }
    if max >= 0x16 {
        let mhz = cpuid(0x16, 0).eax & 0xffff;
        if mhz != 0 {
            return Some(u64::from(mhz) * 1000);
        }
    }
    None
}

/// Spins `n` times with `pause` between polls of memory.
pub fn pause(n: u32) {
    for _ in 0..n {
        core::hint::spin_loop();
    }
}
