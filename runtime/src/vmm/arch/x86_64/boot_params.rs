//! The zero page (`struct boot_params` of the Linux x86 boot protocol) built with
//! linux-loader's bootparam structs: the e820 map, the setup header (copied from a
//! bzImage, or made up for an ELF vmlinux) with the command line and initrd.

use linux_loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestAddress};

use crate::vmm::memory::GuestMemory;

use super::layout::{EBDA_START, HIMEM_START, ZERO_PAGE_START};

/// Errors writing the zero page.
#[derive(Debug, thiserror::Error)]
pub enum BootParamsError {
    /// More e820 entries than the zero page holds.
    #[error("too many e820 entries ({0})")]
    TooManyE820Entries(usize),
    /// The command line does not fit the bzImage's `cmdline_size` (boot protocol
    /// 2.06+: the most the kernel reads, excluding the NUL).
    #[error(
        "the command line has {len} bytes but the bzImage accepts at most {max} \
         (its setup header's cmdline_size): shorten the VM's cmdline"
    )]
    CmdlineTooLong {
        /// Bytes in the command line, without its NUL.
        len: usize,
        /// The kernel's limit.
        max: u32,
    },
    /// Failed to write the zero page into guest memory.
    #[error("failed to write the boot parameters (zero page) into guest memory")]
    Write,
}

/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;

/// What the zero page describes.
#[derive(Debug, Clone, Default)]
pub struct BootInfo {
    /// Guest RAM as `(start, size)` ranges, ascending; the first starts at 0.
    pub ram: Vec<(u64, u64)>,
    /// Guest address of the NUL-terminated command line.
    pub cmdline_addr: u64,
    /// Command line length, without its NUL.
    pub cmdline_len: usize,
    /// Initrd `(address, size)`.
    pub initrd: Option<(u64, u64)>,
    /// The bzImage's setup header, when booting one.
    pub setup_header: Option<setup_header>,
}

/// The e820 map as `(address, size, type)`: RAM below the EBDA, the legacy hole
/// reserved up to 1 MiB, then RAM from 1 MiB (and above 4 GiB for large guests).
pub fn e820_map(ram: &[(u64, u64)]) -> Vec<(u64, u64, u32)> {
    let mut map = Vec::new();
    for &(start, size) in ram {
        let end = start + size;
        if start == 0 {
            map.push((0, EBDA_START.min(end), E820_RAM));
            if end > EBDA_START {
                map.push((EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED));
            }
            if end > HIMEM_START {
                map.push((HIMEM_START, end - HIMEM_START, E820_RAM));
            }
        } else {
            map.push((start, size, E820_RAM));
        }
    }
    map
}

/// The zero page for `info`.
pub fn build_boot_params(info: &BootInfo) -> Result<boot_params, BootParamsError> {
    let mut params = boot_params::default();
    if let Some(hdr) = info.setup_header {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.cmd_line_ptr = info.cmdline_addr as u32;
    // cmdline_size is the kernel's field (2.06+): a bzImage's stays as it is, and the
    // command line must fit it; an ELF vmlinux has no header, so the VMM states the
    // command line's size, NUL included.
    match info.setup_header {
        Some(hdr) if hdr.version >= 0x0206 => {
            let max = hdr.cmdline_size;
            if info.cmdline_len as u64 > u64::from(max) {
                return Err(BootParamsError::CmdlineTooLong {
                    len: info.cmdline_len,
                    max,
                });
            }
        }
        _ => params.hdr.cmdline_size = info.cmdline_len as u32 + 1,
    }
    if let Some((addr, size)) = info.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
        params.ext_ramdisk_image = (addr >> 32) as u32;
        params.ext_ramdisk_size = (size >> 32) as u32;
    }
    let map = e820_map(&info.ram);
    if map.len() > params.e820_table.len() {
        return Err(BootParamsError::TooManyE820Entries(map.len()));
    }
    for (slot, &(addr, size, kind)) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr,
            size,
            r#type: kind,
        };
    }
    params.e820_entries = map.len() as u8;
    Ok(params)
}

/// Writes the zero page for `info` at [`ZERO_PAGE_START`].
pub fn write_boot_params(mem: &GuestMemory, info: &BootInfo) -> Result<(), BootParamsError> {
    let params = build_boot_params(info)?;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(|_| BootParamsError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::arch::x86_64::layout::ram_ranges;

    #[test]
    fn e820_for_small_guest() {
        let map = e820_map(&ram_ranges(128 << 20));
        assert_eq!(
            map,
            vec![
                (0, 0x9fc00, E820_RAM),
                (0x9fc00, 0x100000 - 0x9fc00, E820_RESERVED),
                (0x100000, (128 << 20) - 0x100000, E820_RAM),
            ]
        );
    }

    #[test]
    fn e820_for_large_guest_skips_the_hole() {
        let map = e820_map(&ram_ranges(6 << 30));
        let ram: u64 = map.iter().filter(|e| e.2 == E820_RAM).map(|e| e.1).sum();
        assert_eq!(ram, (6 << 30) - 0x100000 + 0x9fc00);
        assert_eq!(map.last(), Some(&(1 << 32, 3 << 30, E820_RAM)));
        assert!(map.iter().all(|e| e.0 + e.1 <= 3 << 30 || e.0 >= 1 << 32));
    }

    #[test]
    fn zero_page_fields() {
        let info = BootInfo {
            ram: ram_ranges(64 << 20),
            cmdline_addr: 0x20000,
            cmdline_len: 11,
            initrd: Some((0x3000000, 0x1234)),
            setup_header: None,
        };
        let p = build_boot_params(&info).unwrap();
        let hdr = p.hdr;
        assert_eq!(
            (hdr.boot_flag, hdr.header, hdr.type_of_loader),
            (0xaa55, 0x53726448, 0xff)
        );
        assert_eq!((hdr.cmd_line_ptr, hdr.cmdline_size), (0x20000, 12));
        assert_eq!((hdr.ramdisk_image, hdr.ramdisk_size), (0x3000000, 0x1234));
        assert_eq!({ hdr.kernel_alignment }, 0x0100_0000);
        assert_eq!(p.e820_entries, 3);
    }

    #[test]
    fn bzimage_header_is_kept() {
        let mut hdr = setup_header {
            setup_sects: 27,
            version: 0x20f,
            kernel_alignment: 0x20_0000,
            cmdline_size: 2047,
            ..Default::default()
        };
        hdr.loadflags = 1;
        let info = BootInfo {
            ram: ram_ranges(64 << 20),
            setup_header: Some(hdr),
            ..Default::default()
        };
        let p = build_boot_params(&info).unwrap();
        let h = p.hdr;
        assert_eq!((h.setup_sects, h.version, h.loadflags), (27, 0x20f, 1));
        assert_eq!({ h.kernel_alignment }, 0x20_0000);
        // The kernel's cmdline_size is kept, not replaced by the command line's length.
        assert_eq!({ h.cmdline_size }, 2047);
    }

    #[test]
    fn bzimage_command_line_must_fit_its_cmdline_size() {
        let hdr = setup_header {
            version: 0x20f,
            cmdline_size: 255,
            ..Default::default()
        };
        let mut info = BootInfo {
            ram: ram_ranges(64 << 20),
            cmdline_len: 255,
            setup_header: Some(hdr),
            ..Default::default()
        };
        assert!(build_boot_params(&info).is_ok());
        info.cmdline_len = 256;
        let err = build_boot_params(&info).unwrap_err();
        assert!(
            matches!(err, BootParamsError::CmdlineTooLong { len: 256, max: 255 }),
            "{err}"
        );
    }
}
