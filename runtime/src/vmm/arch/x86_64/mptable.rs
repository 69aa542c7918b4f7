//! The Intel MultiProcessor Specification (1.4) tables through which a Linux guest
//! without ACPI finds its CPUs, IO-APIC and interrupt routing: a floating pointer
//! structure in the last KiB of base memory (where Linux scans) followed by the
//! configuration table — one processor entry per vCPU, an ISA bus, the IO-APIC, an
//! interrupt source entry per IO-APIC pin, and the LINT0/LINT1 wiring. Both carry
//! checksums (all bytes sum to zero).

use vm_memory::{Bytes, GuestAddress};

use crate::vmm::memory::GuestMemory;

use super::layout::{APIC_START, EBDA_START, IOAPIC_START, MPTABLE_START};

/// Errors writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// Too many vCPUs for the MP table.
    #[error("{cpus} vCPUs do not fit in the MP table (at most {MAX_CPUS})")]
    TooManyCpus {
        /// The vCPUs asked for.
        cpus: u32,
    },
    /// Failed to write the MP table into guest memory.
    #[error("failed to write the MP table into guest memory")]
    Write,
}

/// Number of IO-APIC pins, each with an interrupt source entry.
const IOAPIC_PINS: u8 = 24;
// Every virtio GSI has an IO interrupt entry (each pin is routed 1:1 below).
const _: () = assert!(super::layout::VIRTIO_GSI_END < IOAPIC_PINS as u32);
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const MP_SPEC_REV: u8 = 4;

const FLOATING_SIZE: usize = 16;
const HEADER_SIZE: usize = 44;
const PROCESSOR_SIZE: usize = 20;
const SMALL_ENTRY_SIZE: usize = 8;

/// The most vCPUs whose MP table fits between [`MPTABLE_START`] and 640 KiB.
pub const MAX_CPUS: u32 = 32;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
/// Family 6 signature, FPU and APIC feature flags.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 9) | 1;

/// The IO-APIC's id for `cpus` vCPUs (APIC ids 0..cpus): the next one, as APIC ids
/// are unique. irqchip.rs sets the IO-APIC's ID register to it.
pub fn ioapic_id(cpus: u32) -> u8 {
    (cpus + 1) as u8
}

/// Byte that makes the sum of `bytes` plus itself zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The floating pointer and configuration table for `cpus` vCPUs, as bytes to write at
/// `base` (the table follows the floating pointer).
pub fn mptable_bytes(base: u64, cpus: u32) -> Result<Vec<u8>, MptableError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(MptableError::TooManyCpus { cpus });
    }
    let ioapic_id = ioapic_id(cpus);

    let mut entries: Vec<u8> = Vec::with_capacity(
        cpus as usize * PROCESSOR_SIZE + (IOAPIC_PINS as usize + 4) * SMALL_ENTRY_SIZE,
    );
    let mut count: u16 = 0;
    for id in 0..cpus as u8 {
        let flags = CPU_ENABLED | if id == 0 { CPU_BSP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, id, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    count += 1;
    for pin in 0..IOAPIC_PINS {
        // type, interrupt type, flags (u16: conforming), source bus, source IRQ,
        // destination IO-APIC, destination pin.
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, INT_TYPE_INT, 0, 0, 0, pin]);
        entries.extend_from_slice(&[ioapic_id, pin]);
        count += 1;
    }
    // LINT0 of every local APIC gets ExtINT (the PIC), LINT1 gets NMI.
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_len = HEADER_SIZE + entries.len();
    let table_addr = base + FLOATING_SIZE as u64;
    let mut table = Vec::with_capacity(table_len);
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&(table_len as u16).to_le_bytes());
    table.push(MP_SPEC_REV);
    table.push(0); // checksum, below
    table.extend_from_slice(b"VMCTL   ");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    table.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    table.push(0); // extended table checksum
    table.push(0); // reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(FLOATING_SIZE);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&(table_addr as u32).to_le_bytes());
    floating.push(1); // length in 16-byte units
    floating.push(MP_SPEC_REV);
    floating.push(0); // checksum, below
    floating.extend_from_slice(&[0; 5]); // feature bytes: a configuration table follows
    floating[10] = checksum(&floating);

    floating.extend_from_slice(&table);
    Ok(floating)
}

/// Writes the MP table for `cpus` vCPUs at [`MPTABLE_START`].
pub fn setup_mptable(mem: &GuestMemory, cpus: u32) -> Result<(), MptableError> {
    let bytes = mptable_bytes(MPTABLE_START, cpus)?;
    debug_assert!(MPTABLE_START + bytes.len() as u64 <= EBDA_START + 0x400);
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(|_| MptableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    /// Parses the table as a guest would: (checksums ok, processor entries, BSP count).
    fn parse(bytes: &[u8], base: u64) -> (bool, usize, usize) {
        assert_eq!(&bytes[..4], b"_MP_");
        let ptr = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as u64;
        let t = &bytes[(ptr - base) as usize..];
        assert_eq!(&t[..4], b"PCMP");
        let len = u16::from_le_bytes([t[4], t[5]]) as usize;
        let count = u16::from_le_bytes([t[34], t[35]]) as usize;
        let ok = sum(&bytes[..16]) == 0 && sum(&t[..len]) == 0;
        let (mut off, mut cpus, mut bsp) = (HEADER_SIZE, 0, 0);
        for _ in 0..count {
            if t[off] == ENTRY_PROCESSOR {
                cpus += 1;
                bsp += usize::from(t[off + 3] & CPU_BSP != 0);
                off += PROCESSOR_SIZE;
            } else {
                off += SMALL_ENTRY_SIZE;
            }
        }
        assert_eq!(off, len);
        (ok, cpus, bsp)
    }

    #[test]
    fn one_processor_entry_per_vcpu() {
        for cpus in [1, 2, 7, MAX_CPUS] {
            let bytes = mptable_bytes(MPTABLE_START, cpus).unwrap();
            assert_eq!(parse(&bytes, MPTABLE_START), (true, cpus as usize, 1));
            assert!(MPTABLE_START + bytes.len() as u64 <= 0xa0000, "{cpus} cpus");
        }
    }

    #[test]
    fn refuses_zero_and_too_many_cpus() {
        assert!(mptable_bytes(MPTABLE_START, 0).is_err());
        assert!(mptable_bytes(MPTABLE_START, MAX_CPUS + 1).is_err());
    }

    #[test]
    fn written_where_linux_scans() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        setup_mptable(&mem, 2).unwrap();
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(639 * 1024)).unwrap();
        assert_eq!(&sig, b"_MP_");
    }
}
