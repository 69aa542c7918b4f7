//! What one CPU sees where Linux reads it per CPU — its local APIC, the MSRs Linux
//! reads early, CPUID — captured on that CPU (the BSP at entry, each AP when it
//! starts) and checked afterwards on the BSP, which prints the findings
//! (`cpu<n> check <name> ok` or `FAIL cpu<n> <name>: …`): APs never print, so lines
//! never interleave.

use crate::cpuid::cpuid;
use crate::io::mmio_rd32;
use crate::report::{Check, Report};
use crate::serial;
use core::arch::asm;
use core::arch::x86_64::CpuidResult;

/// The local APIC's MMIO base (and IA32_APIC_BASE's base field) Linux expects.
pub const LAPIC_BASE: u64 = 0xfee0_0000;
const LAPIC_ID: u64 = 0x20;
const LAPIC_VERSION: u64 = 0x30;
const LAPIC_SVR: u64 = 0xf0;
const LAPIC_LVT0: u64 = 0x350;
const LAPIC_LVT1: u64 = 0x360;

const MSR_IA32_APIC_BASE: u32 = 0x1b;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_CR_PAT: u32 = 0x277;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;

const APIC_BASE_BSP: u64 = 1 << 8;
const APIC_BASE_EXTD: u64 = 1 << 10;
const APIC_BASE_ENABLE: u64 = 1 << 11;
/// PAT at power-on and after INIT (SDM 11.12.4): WB, WT, UC-, UC, WB, WT, UC-, UC.
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;
/// MTRRs on, default type write-back: what vmctl (and Firecracker) set.
const MTRR_DEF_ENABLED_WB: u64 = (1 << 11) | 6;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MISC_ENABLE_LIMIT_CPUID: u64 = 1 << 22;
const MISC_ENABLE_XD_DISABLE: u64 = 1 << 34;

const EDX_MSR: u32 = 1 << 5;
const EDX_APIC: u32 = 1 << 9;
const EDX_MTRR: u32 = 1 << 12;
const EDX_PAT: u32 = 1 << 16;
const EDX_HTT: u32 = 1 << 28;
const ECX_XSAVE: u32 = 1 << 26;
const ECX_OSXSAVE: u32 = 1 << 27;
const ECX_HYPERVISOR: u32 = 1 << 31;

const ZERO: CpuidResult = CpuidResult { eax: 0, ebx: 0, ecx: 0, edx: 0 };

/// One CPU's view. Plain data: an AP fills it in shared memory, the BSP reads it.
#[derive(Clone, Copy)]
pub struct CpuView {
    pub leaf0: CpuidResult,
    pub leaf1: CpuidResult,
    pub leaf4: CpuidResult,
    pub leaf7: CpuidResult,
    pub leafd: CpuidResult,
    /// Leaf 0xB, subleaves 0..=2.
    pub leafb: [CpuidResult; 3],
    /// Leaf 0x1F, subleaves 0..=2 (zero when the leaf is beyond the maximum).
    pub leaf1f: [CpuidResult; 3],
    pub hv0: CpuidResult,
    pub hv1: CpuidResult,
    pub ext1: CpuidResult,
    pub lapic_id: u32,
    pub lapic_version: u32,
    pub lvt0: u32,
    pub lvt1: u32,
    pub svr: u32,
    pub apic_base: u64,
    pub pat: u64,
    pub misc_enable: u64,
    pub mtrr_def: u64,
    pub tsc: u64,
    pub cr4: u64,
}

impl CpuView {
    pub const EMPTY: CpuView = CpuView {
        leaf0: ZERO,
        leaf1: ZERO,
        leaf4: ZERO,
        leaf7: ZERO,
        leafd: ZERO,
        leafb: [ZERO; 3],
        leaf1f: [ZERO; 3],
        hv0: ZERO,
        hv1: ZERO,
        ext1: ZERO,
        lapic_id: 0,
        lapic_version: 0,
        lvt0: 0,
        lvt1: 0,
        svr: 0,
        apic_base: 0,
        pat: 0,
        misc_enable: 0,
        mtrr_def: 0,
        tsc: 0,
        cr4: 0,
    };

    fn intel(&self) -> bool {
        (self.leaf0.ebx, self.leaf0.edx, self.leaf0.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e)
    }

    /// The initial APIC id, CPUID leaf 1 EBX[31:24].
    pub fn initial_apic_id(&self) -> u32 {
        self.leaf1.ebx >> 24
    }
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only MSRs CPUID says exist (callers check); no memory effects.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Fills `v` with this CPU's view. Reads only MSRs CPUID announces (a missing one
/// would fault, and there is no IDT).
pub fn capture(v: &mut CpuView) {
    v.tsc = crate::clock::rdtsc();
    v.leaf0 = cpuid(0, 0);
    let max = v.leaf0.eax;
    v.leaf1 = cpuid(1, 0);
    if max >= 4 {
        v.leaf4 = cpuid(4, 0);
    }
    if max >= 7 {
        v.leaf7 = cpuid(7, 0);
    }
    if max >= 0xd {
        v.leafd = cpuid(0xd, 0);
    }
    for sub in 0..3 {
        if max >= 0xb {
            v.leafb[sub] = cpuid(0xb, sub as u32);
        }
        if max >= 0x1f {
            v.leaf1f[sub] = cpuid(0x1f, sub as u32);
        }
    }
    if v.leaf1.ecx & ECX_HYPERVISOR != 0 {
        v.hv0 = cpuid(0x4000_0000, 0);
        if v.hv0.eax >= 0x4000_0001 {
            v.hv1 = cpuid(0x4000_0001, 0);
        }
    }
    if cpuid(0x8000_0000, 0).eax >= 0x8000_0001 {
        v.ext1 = cpuid(0x8000_0001, 0);
    }
    let edx = v.leaf1.edx;
    if edx & EDX_MSR != 0 {
        if edx & EDX_APIC != 0 {
            v.apic_base = rdmsr(MSR_IA32_APIC_BASE);
        }
        if edx & EDX_PAT != 0 {
            v.pat = rdmsr(MSR_IA32_CR_PAT);
        }
        if edx & EDX_MTRR != 0 {
            v.mtrr_def = rdmsr(MSR_MTRR_DEF_TYPE);
        }
        if v.intel() {
            v.misc_enable = rdmsr(MSR_IA32_MISC_ENABLE);
        }
    }
    // The xAPIC registers, at the base the MSR names (only when it is the default one
    // in xAPIC mode: anything else is a finding of its own).
    if v.apic_base & !0xfff == LAPIC_BASE && v.apic_base & APIC_BASE_EXTD == 0 && v.apic_base & APIC_BASE_ENABLE != 0 {
        v.lapic_id = mmio_rd32(LAPIC_BASE + LAPIC_ID);
        v.lapic_version = mmio_rd32(LAPIC_BASE + LAPIC_VERSION);
        v.lvt0 = mmio_rd32(LAPIC_BASE + LAPIC_LVT0);
        v.lvt1 = mmio_rd32(LAPIC_BASE + LAPIC_LVT1);
        v.svr = mmio_rd32(LAPIC_BASE + LAPIC_SVR);
    }
    let cr4: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags)) }
    v.cr4 = cr4;
}

/// What a CPU's view is checked against.
pub struct Expect<'a> {
    /// The CPU's index: 0 for the BSP, then the APs in the order they were started.
    pub cpu: u32,
    /// The APIC id the MP table gives it (for an AP: the one its INIT/SIPI went to).
    pub apic_id: Option<u32>,
    /// vCPUs in the machine (enabled MP table processors).
    pub cpus: u32,
    /// The BSP's view (for an AP: everything that must be the same on every CPU).
    pub bsp: Option<&'a CpuView>,
    /// For an AP: the BSP's TSC just before it sent INIT (the AP's must not be lower).
    pub tsc_before: u64,
}

/// Prints `cpu<n> apic-id=<id>` and every per-CPU check of `v`.
pub fn evaluate(v: &CpuView, e: &Expect<'_>, report: &mut Report) {
    let cpu = Some(e.cpu);
    let is_bsp = e.bsp.is_none();
    serial::begin();
    serial::bytes(b"cpu");
    serial::dec(u64::from(e.cpu));
    serial::bytes(b" apic-id=");
    serial::dec(u64::from(v.lapic_id >> 24));
    serial::end();

    // IA32_APIC_BASE: Linux (apic.c) expects the xAPIC enabled at 0xfee00000, the BSP
    // flag on the boot CPU only, x2APIC off (vmctl does not enable it).
    let mut c = Check::new(report, cpu, b"apic-base");
    let want = LAPIC_BASE | APIC_BASE_ENABLE | if is_bsp { APIC_BASE_BSP } else { 0 };
    c.expect_eq(v.apic_base, want, b"IA32_APIC_BASE is not the enabled xAPIC at 0xfee00000 with BSP set on the boot CPU only");
    c.done();

    // The APIC id: the LAPIC's ID register, CPUID's initial id, the x2APIC id of
    // leaf 0xB and the MP table must all agree (Linux maps CPUs by it).
    let mut c = Check::new(report, cpu, b"apic-id");
    let id = v.lapic_id >> 24;
    c.expect_eq(u64::from(v.initial_apic_id()), u64::from(id), b"cpuid leaf 1 ebx[31:24] differs from the LAPIC ID register");
    if v.leafb[0].ebx & 0xffff != 0 {
        c.expect_eq(u64::from(v.leafb[0].edx), u64::from(id), b"cpuid leaf 0xb edx (x2apic id) differs from the LAPIC ID register");
    }
    if let Some(want) = e.apic_id {
        c.expect_eq(u64::from(id), u64::from(want), b"LAPIC ID differs from the MP table's");
    }
    c.done();

    // LAPIC version: integrated (0x1x), at least the 5 LVT entries Linux programs.
    let mut c = Check::new(report, cpu, b"lapic-version");
    c.expect(v.lapic_version & 0xf0 == 0x10, b"LAPIC version register: not an integrated APIC (0x1x)");
    c.expect((v.lapic_version >> 16) & 0xff >= 4, b"LAPIC version register: fewer than 5 LVT entries");
    if let Some(bsp) = e.bsp {
        c.expect_eq(u64::from(v.lapic_version), u64::from(bsp.lapic_version), b"LAPIC version differs from the BSP's");
    }
    c.done();

    // LINT0/LINT1 (apic.c setup_local_APIC reads LVT0's mask bit on the BSP): on the
    // BSP the PC wiring, LINT0 = ExtINT unmasked (virtual wire), LINT1 = NMI. An AP
    // comes out of INIT with its LVTs masked (Linux programs them itself).
    let mut c = Check::new(report, cpu, b"lint");
    if is_bsp {
        c.expect_eq(u64::from(v.lvt0 & 0x1_0700), 0x700, b"LVT LINT0 is not unmasked ExtINT");
        c.expect_eq(u64::from(v.lvt1 & 0x700), 0x400, b"LVT LINT1 is not NMI");
    } else {
        c.expect(v.lvt0 & 0x1_0000 != 0 && v.lvt1 & 0x1_0000 != 0, b"LVT LINT0/LINT1 not masked after INIT");
    }
    c.done();

    // The spurious-interrupt vector register after reset/INIT: 0xff, the APIC
    // software-disabled until Linux enables it (apic.c writes it).
    let mut c = Check::new(report, cpu, b"spurious");
    c.expect_eq(u64::from(v.svr), 0xff, b"spurious vector register is not its reset value");
    c.done();

    let mut c = Check::new(report, cpu, b"pat");
    c.expect_eq(v.pat, PAT_RESET, b"IA32_PAT is not the power-on default");
    c.done();

    // MTRRs: Linux (mtrr/generic.c) uses the BSP's and warns when a CPU differs.
    let mut c = Check::new(report, cpu, b"mtrr");
    c.expect_eq(v.mtrr_def, MTRR_DEF_ENABLED_WB, b"MTRRdefType is not enabled write-back");
    c.done();

    // MISC_ENABLE (Intel): fast strings on; XD-disable and limit-CPUID-maxval off
    // (Linux's early_init_intel clears them, but a VMM leaving them set hides NX and
    // CPUID leaves from the early boot).
    let mut c = Check::new(report, cpu, b"misc-enable");
    if v.intel() {
        c.expect(v.misc_enable & MISC_ENABLE_FAST_STRING != 0, b"IA32_MISC_ENABLE fast strings off");
        c.expect(v.misc_enable & (MISC_ENABLE_LIMIT_CPUID | MISC_ENABLE_XD_DISABLE) == 0, b"IA32_MISC_ENABLE limits CPUID or disables XD");
        if let Some(bsp) = e.bsp {
            c.expect_eq(v.misc_enable, bsp.misc_enable, b"IA32_MISC_ENABLE differs from the BSP's");
        }
    }
    c.done();

    // TSC: running; on an AP not behind the BSP's (Linux's tsc_sync check).
    let mut c = Check::new(report, cpu, b"tsc");
    c.expect(v.tsc != 0, b"TSC reads 0");
    if !is_bsp {
        c.expect(v.tsc >= e.tsc_before, b"TSC is behind the BSP's (read before the INIT IPI)");
    }
    c.done();

    cpuid_checks(v, e, report);
}

/// The CPUID leaves Linux picks its paths from.
fn cpuid_checks(v: &CpuView, e: &Expect<'_>, report: &mut Report) {
    let cpu = Some(e.cpu);
    let mut c = Check::new(report, cpu, b"cpuid-vendor");
    c.expect(v.leaf0.eax >= 0xb, b"cpuid max basic leaf below 0xb (no x2APIC topology leaf)");
    c.expect(v.intel() || (v.leaf0.ebx, v.leaf0.edx, v.leaf0.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163), b"cpuid vendor is neither GenuineIntel nor AuthenticAMD");
    if let Some(bsp) = e.bsp {
        c.expect(v.leaf0.ebx == bsp.leaf0.ebx && v.leaf0.ecx == bsp.leaf0.ecx && v.leaf0.edx == bsp.leaf0.edx && v.leaf0.eax == bsp.leaf0.eax, b"cpuid leaf 0 differs from the BSP's");
    }
    c.done();

    // Family/model/stepping (leaf 1 EAX) pick Linux's quirks: same on every CPU.
    let mut c = Check::new(report, cpu, b"cpuid-family");
    let family = ((v.leaf1.eax >> 8) & 0xf) + if (v.leaf1.eax >> 8) & 0xf == 0xf { (v.leaf1.eax >> 20) & 0xff } else { 0 };
    c.expect(family >= 6, b"cpuid family below 6");
    if let Some(bsp) = e.bsp {
        c.expect_eq(u64::from(v.leaf1.eax), u64::from(bsp.leaf1.eax), b"cpuid leaf 1 eax (family/model/stepping) differs from the BSP's");
    }
    c.done();

    // Topology: one package of `cpus` cores, one thread each (what vmctl describes).
    // Linux (kernel/cpu/topology*.c) reads leaf 0x1F if present, else 0xB; leaf 1's
    // HTT and logical count; leaf 4's cores per package.
    let mut c = Check::new(report, cpu, b"cpuid-topology");
    let n = e.cpus;
    c.expect_eq(u64::from((v.leaf1.ebx >> 16) & 0xff), u64::from(n), b"cpuid leaf 1 ebx[23:16] (logical processors) is not the vCPU count");
    // HTT only says EBX[23:16] is valid (this host's KVM sets it even for one vCPU,
    // which Linux reads as one logical processor): needed when there are several.
    c.expect(v.leaf1.edx & EDX_HTT != 0 || n == 1, b"cpuid leaf 1 HTT bit clear with several vCPUs");
    for (leaf, subs) in [(0xb_u32, &v.leafb), (0x1f, &v.leaf1f)] {
        if leaf == 0x1f && (v.leaf0.eax < 0x1f || subs[0].ebx & 0xffff == 0) {
            continue;
        }
        let smt = &subs[0];
        let core = &subs[1];
        let ok = (smt.ecx >> 8) & 0xff == 1
            && smt.ebx & 0xffff == 1
            && (core.ecx >> 8) & 0xff == 2
            && core.ebx & 0xffff == n
            && (1u64 << (core.eax & 0x1f)) >= u64::from(n)
            && (subs[2].ecx >> 8) & 0xff == 0
            && u64::from(v.lapic_id >> 24) >> (core.eax & 0x1f) == 0;
        if !ok {
            c.fail_value(
                if leaf == 0xb { b"cpuid leaf 0xb does not describe one package of single-thread cores for the vCPU count (core level ebx)" } else { b"cpuid leaf 0x1f does not describe one package of single-thread cores for the vCPU count (core level ebx)" },
                u64::from(core.ebx & 0xffff),
                u64::from(n),
            );
        }
    }
    if v.intel() && v.leaf4.eax & 0x1f != 0 {
        c.expect_eq(u64::from(((v.leaf4.eax >> 26) & 0x3f) + 1), u64::from(n), b"cpuid leaf 4 eax[31:26]+1 (cores per package) is not the vCPU count");
    }
    c.done();

    // Hypervisor leaves: KVM's signature and feature leaf (Linux's kvm guest code).
    let mut c = Check::new(report, cpu, b"cpuid-hypervisor");
    c.expect(v.leaf1.ecx & ECX_HYPERVISOR != 0, b"cpuid leaf 1 hypervisor bit clear");
    c.expect((v.hv0.ebx, v.hv0.ecx, v.hv0.edx) == (0x4b4d_564b, 0x564b_4d56, 0x4d), b"cpuid 0x40000000 signature is not KVMKVMKVM");
    c.expect(v.hv0.eax >= 0x4000_0001, b"cpuid 0x40000000 eax: no 0x40000001 feature leaf");
    c.expect(v.hv1.eax & ((1 << 0) | (1 << 3)) != 0, b"cpuid 0x40000001: no kvmclock");
    c.done();

    // The feature words, for tests that mask features (`--mask-cpuid`): every CPU must
    // see the mask.
    serial::begin();
    serial::bytes(b"cpu");
    serial::dec(u64::from(e.cpu));
    for (name, w) in [(&b" cpuid 1:ecx="[..], v.leaf1.ecx), (b" 1:edx=", v.leaf1.edx), (b" 7:ebx=", v.leaf7.ebx), (b" 7:ecx=", v.leaf7.ecx), (b" 7:edx=", v.leaf7.edx)] {
        serial::bytes(name);
        serial::hex(u64::from(w), 8);
    }
    serial::end();

    // Features: what Linux requires of x86-64 (arch/x86/include/asm/required-features.h,
    // verify_cpu.S) and what Linux reports as an error when it disagrees (dependent
    // features it merely clears, cpuid-deps.c, are not failures).
    let mut c = Check::new(report, cpu, b"cpuid-features");
    // FPU, PSE, TSC, MSR, PAE, CX8, APIC, PGE, CMOV, FXSR, SSE, SSE2.
    let required_edx: u32 = 1 | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 8) | (1 << 9) | (1 << 13) | (1 << 15) | (1 << 24) | (1 << 25) | (1 << 26);
    c.expect_eq(u64::from(v.leaf1.edx & required_edx), u64::from(required_edx), b"cpuid leaf 1 edx lacks a feature x86-64 Linux requires");
    c.expect(v.ext1.edx & (1 << 29) != 0, b"cpuid 0x80000001 edx: no long mode");
    c.expect((v.leaf1.ecx & ECX_OSXSAVE != 0) == (v.cr4 & (1 << 18) != 0), b"cpuid OSXSAVE does not follow CR4.OSXSAVE");
    if v.leaf1.ecx & ECX_XSAVE != 0 {
        // fpu__init_system_xstate(): "FP/SSE not present amongst the CPU's xstate
        // features" disables XSAVE with an error.
        c.expect(v.leafd.eax & 3 == 3 && v.leafd.ecx >= 512 + 64, b"cpuid XSAVE set but leaf 0xd does not describe x87/SSE state");
    }
    if let Some(bsp) = e.bsp {
        c.expect(v.leaf1.ecx == bsp.leaf1.ecx && v.leaf1.edx == bsp.leaf1.edx && v.leaf7.ebx == bsp.leaf7.ebx && v.leaf7.ecx == bsp.leaf7.ecx && v.leaf7.edx == bsp.leaf7.edx, b"cpuid feature leaves 1/7 differ from the BSP's");
    }
    c.done();
}
