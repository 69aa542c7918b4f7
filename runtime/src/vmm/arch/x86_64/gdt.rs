//! The boot GDT and the `kvm_segment`s derived from it: a flat 64-bit code segment, a
//! flat data segment and a TSS, where the Linux 64-bit boot protocol (boot.rst) wants
//! them: code at selector 0x10 (`__BOOT_CS`), data at 0x18 (`__BOOT_DS`). Firecracker
//! puts them at 0x8 and 0x10, which works only because Linux reloads its own GDT
//! before it uses a selector.

use kvm_bindings::kvm_segment;

/// Packs a GDT entry from its flags (access byte in bits 0–7, flags nibble in 12–15),
/// base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT: null, unused, code (64-bit, present, readable), data (present,
/// writable), TSS.
pub const BOOT_GDT: [u64; 5] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];
/// Index of the code segment in [`BOOT_GDT`].
pub const CODE_INDEX: u8 = 2;
/// Index of the data segment in [`BOOT_GDT`].
pub const DATA_INDEX: u8 = 3;
/// Index of the TSS in [`BOOT_GDT`].
pub const TSS_INDEX: u8 = 4;

fn base(entry: u64) -> u64 {
    ((entry & 0xff00_0000_0000_0000) >> 32)
        | ((entry & 0x0000_00ff_0000_0000) >> 16)
        | ((entry & 0x0000_0000_ffff_0000) >> 16)
}

fn limit(entry: u64) -> u32 {
    let raw = (((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0x0000_0000_0000_ffff)) as u32;
    // With the granularity bit set the limit counts 4 KiB pages.
    if (entry >> 55) & 1 == 1 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

fn bit(entry: u64, n: u32) -> u8 {
    ((entry >> n) & 1) as u8
}

/// The `kvm_segment` a GDT entry at `index` describes.
pub fn kvm_segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    kvm_segment {
        base: base(entry),
        limit: limit(entry),
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(entry, 47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(entry, 54),
        s: bit(entry, 44),
        l: bit(entry, 53),
        g: bit(entry, 55),
        avl: bit(entry, 52),
        padding: 0,
        // A segment that is not present is unusable.
        unusable: u8::from(bit(entry, 47) == 0),
    }
}

/// The GDT as the bytes to write into guest memory.
pub fn gdt_bytes() -> Vec<u8> {
    BOOT_GDT.iter().flat_map(|e| e.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_flat_64_bit() {
        let cs = kvm_segment_from_gdt(BOOT_GDT[CODE_INDEX as usize], CODE_INDEX);
        assert_eq!(cs.selector, 0x10);
        assert_eq!(cs.l, 1);
        assert_eq!(cs.db, 0);
        assert_eq!(cs.present, 1);
        assert_eq!(cs.s, 1);
        assert_eq!(cs.type_, 0xb);
        assert_eq!(cs.base, 0);
        assert_eq!(cs.limit, 0xffff_ffff);
        assert_eq!(cs.unusable, 0);
    }

    #[test]
    fn data_segment_and_tss() {
        let ds = kvm_segment_from_gdt(BOOT_GDT[DATA_INDEX as usize], DATA_INDEX);
        assert_eq!((ds.selector, ds.type_, ds.db, ds.l), (0x18, 3, 1, 0));
        let tss = kvm_segment_from_gdt(BOOT_GDT[TSS_INDEX as usize], TSS_INDEX);
        assert_eq!((tss.selector, tss.type_, tss.s), (0x20, 0xb, 0));
    }

    #[test]
    fn entry_round_trips_base_and_limit() {
        let e = gdt_entry(0x409b, 0x1234_5678, 0xabcde);
        assert_eq!(base(e), 0x1234_5678);
        assert_eq!(limit(e), 0xabcde);
        assert_eq!(kvm_segment_from_gdt(0, 0).unusable, 1);
        assert_eq!(gdt_bytes().len(), 40);
    }
}
