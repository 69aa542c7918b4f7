//! Guest physical address layout of an x86-64 vmctl microVM: every fixed address the
//! boot code uses, in one place.
//!
//! ```text
//! 0x0000_0500  GDT (5 entries)            0x0000_7000  boot params (zero page)
//! 0x0000_0530  IDT (empty)                0x0000_8ff0  boot stack pointer
//! 0x0000_9000  PML4                       0x0000_a000  PDPT
//! 0x0000_b000  PD (512 × 2 MiB = 1 GiB)   0x0002_0000  kernel command line
//! 0x0009_fc00  MP floating pointer + MP configuration table (last KiB of base memory)
//! 0x000a_0000  ─ legacy VGA/BIOS hole, reserved in the e820 map ─ 0x0010_0000
//! 0x0010_0000  kernel (ELF linked at 1 MiB, or bzImage protected-mode code)
//!   …          RAM up to 3 GiB; initrd at the top of it
//! 0xc000_0000  ─ 32-bit MMIO hole ─ 0x1_0000_0000
//!   0xd000_0000  virtio-mmio device n at 0xd000_0000 + n × 4 KiB, GSI 5 + n (n < 19)
//! 0x1_0000_0000  RAM above 4 GiB when memory is larger than 3 GiB
//! ```

/// The GDT: null, 64-bit code, data, TSS.
pub const BOOT_GDT_START: u64 = 0x500;
/// An empty IDT: the guest sets up its own before enabling interrupts.
pub const BOOT_IDT_START: u64 = 0x530;
/// The zero page (`struct boot_params`); `rsi` points here at entry.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Level 4 page table (PML4).
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory: 512 entries of 2 MiB identity-map the first GiB.
pub const PDE_START: u64 = 0xb000;
/// The kernel command line, NUL-terminated.
pub const CMDLINE_START: u64 = 0x20000;
/// Longest command line accepted, excluding its NUL (Linux's default COMMAND_LINE_SIZE
/// on x86 is 2048; recent kernels allow more, and the zero page says how long ours is).
pub const CMDLINE_MAX_SIZE: usize = 4095;
/// End of conventional RAM below 640 KiB as announced in the e820 map; the last KiB
/// (where Linux scans for the MP floating pointer) is reserved.
pub const EBDA_START: u64 = 0x9fc00;
/// The MP floating pointer structure, followed by the MP configuration table.
pub const MPTABLE_START: u64 = EBDA_START;
/// Start of the memory the kernel is loaded into ("high memory" for the boot protocol).
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole: RAM stops here and resumes at 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// First address past 32 bits: RAM beyond `MMIO_HOLE_START` continues here.
pub const FIRST_ADDR_PAST_32BITS: u64 = 1 << 32;
/// Where virtio-mmio devices are placed, inside the MMIO hole: device `n` (disks
/// first, then NICs, in spec order) at `VIRTIO_MMIO_START + n * VIRTIO_MMIO_SIZE`.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// The window of one virtio-mmio device (the `4K` of `virtio_mmio.device=4K@…`).
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// The IO-APIC pin (GSI) of virtio device 0; device `n` gets `VIRTIO_GSI_START + n`.
/// Below it: the PIT (0), the i8042 (1), the cascade (2), COM2 (3) and COM1 (4). Pins
/// 5–15 are ISA IRQs the MP table routes 1:1; 16–23 are described there too.
pub const VIRTIO_GSI_START: u32 = 5;
/// The last IO-APIC pin of KVM's in-kernel IO-APIC (24 pins).
pub const VIRTIO_GSI_END: u32 = 23;
/// How many virtio devices fit: one GSI each.
pub const MAX_VIRTIO_DEVICES: usize = (VIRTIO_GSI_END - VIRTIO_GSI_START + 1) as usize;
/// The local APIC's MMIO base.
pub const APIC_START: u64 = 0xfee0_0000;
/// The IO-APIC's MMIO base.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Three pages KVM needs on Intel for the real-mode TSS, at the top of the 32-bit space
/// (inside the MMIO hole, so never RAM).
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// Highest address an initrd may end at for kernels that don't say otherwise
/// (`initrd_addr_max` of the boot protocol, pre-2.03 default).
pub const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
/// Guest page size.
pub const PAGE_SIZE: u64 = 4096;

// The fixed structures must not overlap: checked at compile time.
const _: () = {
    assert!(BOOT_GDT_START + super::gdt::BOOT_GDT.len() as u64 * 8 <= BOOT_IDT_START);
    assert!(BOOT_IDT_START + 8 <= ZERO_PAGE_START);
    assert!(ZERO_PAGE_START + 4096 <= BOOT_STACK_POINTER);
    assert!(BOOT_STACK_POINTER < PML4_START);
    assert!(PDE_START + 4096 <= CMDLINE_START);
    assert!(CMDLINE_START + (CMDLINE_MAX_SIZE as u64) < MPTABLE_START);
    assert!(VIRTIO_MMIO_START > MMIO_HOLE_START);
    assert!(VIRTIO_MMIO_START + MAX_VIRTIO_DEVICES as u64 * VIRTIO_MMIO_SIZE <= IOAPIC_START);
};

/// The guest RAM ranges `(start, size)` for `memory` bytes: one range below the MMIO
/// hole, and a second one from 4 GiB when memory does not fit below it.
pub fn ram_ranges(memory: u64) -> Vec<(u64, u64)> {
    if memory <= MMIO_HOLE_START {
        vec![(0, memory)]
    } else {
        vec![
            (0, MMIO_HOLE_START),
            (FIRST_ADDR_PAST_32BITS, memory - MMIO_HOLE_START),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_range() {
        assert_eq!(ram_ranges(128 << 20), vec![(0, 128 << 20)]);
        assert_eq!(ram_ranges(MMIO_HOLE_START), vec![(0, MMIO_HOLE_START)]);
    }

    #[test]
    fn large_memory_skips_the_mmio_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r, vec![(0, 3 << 30), (1 << 32, 1 << 30)]);
        assert_eq!(r.iter().map(|r| r.1).sum::<u64>(), 4 << 30);
    }
}
