//! CPUID checks: the hypervisor bit and vendor, the BSP's APIC ids.

use crate::report::Report;
use crate::serial;
use core::arch::x86_64::{CpuidResult, __cpuid_count};

#[allow(unused_unsafe)] // __cpuid_count is safe in newer Rust, unsafe in older
pub fn cpuid(leaf: u32, sub: u32) -> CpuidResult {
    // SAFETY: CPUID exists on every x86-64 CPU.
    unsafe {
        __cpuid_count(leaf, sub)
    }
}

/// Checks CPUID and prints `hypervisor=<vendor>`, `apic-id=<n>` and, when leaf 0xB is
/// there, `x2apic-id=<n>`. Returns the initial APIC id (leaf 1 EBX[31:24]).
pub fn check(report: &mut Report) -> u32 {
    let max_leaf = cpuid(0, 0).eax;
    let leaf1 = cpuid(1, 0);
    if leaf1.ecx & (1 << 31) == 0 {
        report.fail(b"cpuid hypervisor bit (leaf 1 ecx bit 31) is clear");
    } else {
        let hv = cpuid(0x4000_0000, 0);
        let mut vendor = [0u8; 12];
        vendor[0..4].copy_from_slice(&hv.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&hv.ecx.to_le_bytes());
        vendor[8..12].copy_from_slice(&hv.edx.to_le_bytes());
        serial::begin();
        serial::bytes(b"hypervisor=");
        serial::text(&vendor);
        serial::end();
    }
    let apic_id = leaf1.ebx >> 24;
    serial::begin();
    serial::bytes(b"apic-id=");
    serial::dec(u64::from(apic_id));
    serial::end();
    if max_leaf >= 0xb {
        let topo = cpuid(0xb, 0);
        // Leaf 0xB is implemented when subleaf 0 reports a non-zero EBX[15:0].
        if topo.ebx & 0xffff != 0 {
            serial::begin();
            serial::bytes(b"x2apic-id=");
            serial::dec(u64::from(topo.edx));
            serial::end();
            if topo.edx & 0xff != apic_id {
                report.fail(b"cpuid x2apic id (leaf 0xb edx) disagrees with the initial apic id");
            }
        }
    }
    apic_id
}
