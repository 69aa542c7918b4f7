//! Register state of every vCPU at boot, as the Linux 64-bit boot protocol expects:
//! long mode with identity-mapped page tables, flat segments, `rip` at the kernel's
//! 64-bit entry and `rsi` at the zero page. Also the boot MSRs, the FPU and the local
//! APIC's LINT0/LINT1 wiring.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use crate::vmm::memory::GuestMemory;

use super::gdt::{self, BOOT_GDT, CODE_INDEX, DATA_INDEX, TSS_INDEX};
use super::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
    ZERO_PAGE_START,
};

/// Errors setting up a vCPU's registers.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// Failed to write the GDT, IDT or page tables into guest memory.
    #[error("failed to write the boot {what} into guest memory")]
    WriteBootTables {
        /// Which structure.
        what: &'static str,
    },
    /// A KVM register ioctl failed.
    #[error("KVM_{ioctl} failed: {source}")]
    Kvm {
        /// The ioctl, e.g. `SET_SREGS`.
        ioctl: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// KVM accepted fewer MSRs than we gave it.
    #[error("KVM_SET_MSRS set {set} of {wanted} boot MSRs")]
    SetMsrs {
        /// How many KVM set.
        set: usize,
        /// How many we asked for.
        wanted: usize,
    },
}

fn kvm(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> RegsError {
    move |source| RegsError::Kvm { ioctl, source }
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_NW: u64 = 0x2000_0000;
const X86_CR0_CD: u64 = 0x4000_0000;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Page-table entry flags: present, writable; `PS` marks a 2 MiB page.
const PTE_PRESENT_RW: u64 = 0x3;
const PTE_PS: u64 = 0x80;

/// Writes the GDT, an empty IDT and identity page tables for the first GiB (2 MiB
/// pages) into guest memory. Done once per VM; every vCPU's sregs point at them.
pub fn write_boot_tables(mem: &GuestMemory) -> Result<(), RegsError> {
    let write = |bytes: &[u8], addr: u64, what| {
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(|_| RegsError::WriteBootTables { what })
    };
    write(&gdt::gdt_bytes(), BOOT_GDT_START, "GDT")?;
    write(&0u64.to_le_bytes(), BOOT_IDT_START, "IDT")?;
    write(
        &(PDPTE_START | PTE_PRESENT_RW).to_le_bytes(),
        PML4_START,
        "PML4",
    )?;
    write(
        &(PDE_START | PTE_PRESENT_RW).to_le_bytes(),
        PDPTE_START,
        "PDPT",
    )?;
    write(&page_directory(), PDE_START, "page directory")
}

/// 512 entries mapping 2 MiB pages: virtual = physical for the first GiB.
fn page_directory() -> Vec<u8> {
    (0..512u64)
        .flat_map(|i| ((i << 21) | PTE_PRESENT_RW | PTE_PS).to_le_bytes())
        .collect()
}

/// Sets the special registers of a vCPU: flat segments from the boot GDT, long mode
/// with paging through the identity page tables.
pub fn setup_sregs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut sregs = vcpu.get_sregs().map_err(kvm("GET_SREGS"))?;
    fill_sregs(&mut sregs);
    vcpu.set_sregs(&sregs).map_err(kvm("SET_SREGS"))
}

fn fill_sregs(sregs: &mut kvm_sregs) {
    let code = gdt::kvm_segment_from_gdt(BOOT_GDT[CODE_INDEX as usize], CODE_INDEX);
    let data = gdt::kvm_segment_from_gdt(BOOT_GDT[DATA_INDEX as usize], DATA_INDEX);
    let tss = gdt::kvm_segment_from_gdt(BOOT_GDT[TSS_INDEX as usize], TSS_INDEX);

    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (BOOT_GDT.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;

    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    sregs.cr3 = PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    // KVM's reset CR0 has the caches disabled (CD, NW): a kernel must not start
    // uncached (a bzImage decompresses before Linux sets its own CR0).
    sregs.cr0 = (sregs.cr0 & !(X86_CR0_CD | X86_CR0_NW)) | X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
}

/// Sets the general registers: `rip` at `entry`, `rsi` at the zero page, a boot stack,
/// and `rflags` with only the reserved bit 1 set (interrupts off).
pub fn setup_regs(vcpu: &VcpuFd, entry: u64) -> Result<(), RegsError> {
    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm("SET_REGS"))
}

/// Sets the x87 control word and MXCSR to their reset values.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("SET_FPU"))
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 0x1;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// MTRRs enabled, default memory type write-back.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

/// The MSRs a booting Linux expects in a known state.
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

/// Sets the boot MSRs.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let entries = boot_msr_entries();
    let msrs = Msrs::from_entries(&entries).map_err(|_| RegsError::SetMsrs {
        set: 0,
        wanted: entries.len(),
    })?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm("SET_MSRS"))?;
    if set != entries.len() {
        return Err(RegsError::SetMsrs {
            set,
            wanted: entries.len(),
        });
    }
    Ok(())
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn get_apic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let mut b = [0u8; 4];
    for (i, v) in b.iter_mut().enumerate() {
        *v = lapic.regs[offset + i] as u8;
    }
    u32::from_le_bytes(b)
}

fn set_apic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, v) in value.to_le_bytes().into_iter().enumerate() {
        lapic.regs[offset + i] = v as _;
    }
}

/// Replaces the delivery mode (bits 8–10) of an LVT entry.
fn set_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Wires the local APIC like a PC: LINT0 receives the PIC's ExtINT, LINT1 the NMI.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut lapic = vcpu.get_lapic().map_err(kvm("GET_LAPIC"))?;
    let lvt0 = get_apic_reg(&lapic, APIC_LVT0);
    set_apic_reg(
        &mut lapic,
        APIC_LVT0,
        set_delivery_mode(lvt0, APIC_MODE_EXTINT),
    );
    let lvt1 = get_apic_reg(&lapic, APIC_LVT1);
    set_apic_reg(
        &mut lapic,
        APIC_LVT1,
        set_delivery_mode(lvt1, APIC_MODE_NMI),
    );
    vcpu.set_lapic(&lapic).map_err(kvm("SET_LAPIC"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_directory_identity_maps_one_gib() {
        let pd = page_directory();
        assert_eq!(pd.len(), 4096);
        let entry = |i: usize| u64::from_le_bytes(pd[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(entry(0), 0x83);
        assert_eq!(entry(1), 0x20_0083);
        assert_eq!(entry(511) & !0xfff, 511 << 21);
        assert_eq!((entry(511) & !0xfff) + (2 << 20), 1 << 30);
    }

    #[test]
    fn boot_tables_land_in_guest_memory() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_boot_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let pdpte: u64 = mem.read_obj(GuestAddress(PDPTE_START)).unwrap();
        assert_eq!(pdpte, PDE_START | 3);
        let code: u64 = mem.read_obj(GuestAddress(BOOT_GDT_START + 0x10)).unwrap();
        assert_eq!(code, BOOT_GDT[CODE_INDEX as usize]);
    }

    #[test]
    fn sregs_enter_long_mode() {
        let mut sregs = kvm_sregs {
            cr0: 0x6000_0010, // KVM's reset value: CD, NW, ET
            ..Default::default()
        };
        fill_sregs(&mut sregs);
        assert_eq!(sregs.cr0, X86_CR0_PE | X86_CR0_ET | X86_CR0_PG);
        assert_eq!(
            sregs.cr0 & (X86_CR0_PE | X86_CR0_PG),
            X86_CR0_PE | X86_CR0_PG
        );
        assert_eq!(sregs.cr4 & X86_CR4_PAE, X86_CR4_PAE);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(sregs.cr3, PML4_START);
        // boot.rst: CS = __BOOT_CS (0x10), DS = ES = SS = __BOOT_DS (0x18).
        assert_eq!((sregs.cs.selector, sregs.cs.l), (0x10, 1));
        assert_eq!(sregs.ss.selector, 0x18);
        assert_eq!((sregs.ds.selector, sregs.es.selector), (0x18, 0x18));
        assert_eq!(sregs.gdt.limit, 39);
    }

    #[test]
    fn lvt_delivery_modes() {
        let mut lapic = kvm_lapic_state::default();
        set_apic_reg(&mut lapic, APIC_LVT0, 0x0001_0000);
        let v = set_delivery_mode(get_apic_reg(&lapic, APIC_LVT0), APIC_MODE_EXTINT);
        assert_eq!(v, 0x0001_0700);
        assert_eq!(set_delivery_mode(0x700, APIC_MODE_NMI), 0x400);
        assert_eq!(boot_msr_entries().len(), 11);
    }
}
