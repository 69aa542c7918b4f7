//! The setup header in the zero page (check `setup-header`), as the 64-bit boot
//! protocol hands it over. A bzImage's loader copies the kernel's header from the
//! image (0x1f1 on) and fills in its own fields; for an ELF vmlinux there is no header
//! to copy and the VMM makes one up. Which one it is shows in `syssize` (0 without a
//! bzImage): printed as `boot=bzimage` or `boot=elf`, so a test can insist.
//!
//! The values below are those of the guest's own bzImage header (../bzimage.S, built
//! by ../build): a loader must hand them over unchanged.

use crate::bootparams::BootParams;
use crate::io::{rd16, rd32, rd64, rd8};
use crate::report::{Check, Report};
use crate::serial;

const SETUP_SECTS: u64 = 0x1f1;
const SYSSIZE: u64 = 0x1f4;
const VERSION: u64 = 0x206;
const LOADFLAGS: u64 = 0x211;
const CODE32_START: u64 = 0x214;
const INITRD_ADDR_MAX: u64 = 0x22c;
const KERNEL_ALIGNMENT: u64 = 0x230;
const RELOCATABLE: u64 = 0x234;
const XLOADFLAGS: u64 = 0x236;
const CMDLINE_SIZE: u64 = 0x238;
const PREF_ADDRESS: u64 = 0x258;
const INIT_SIZE: u64 = 0x260;

/// The guest's bzImage header (bzimage.S).
pub const BZ_SETUP_SECTS: u8 = 4;
pub const BZ_VERSION: u16 = 0x020f;
pub const BZ_CMDLINE_SIZE: u32 = 2047;
pub const BZ_INITRD_ADDR_MAX: u32 = 0x7fff_ffff;
pub const BZ_KERNEL_ALIGNMENT: u32 = 0x20_0000;
const LOADED_HIGH: u8 = 1;
const XLF_KERNEL_64: u16 = 1;
/// Where a bzImage's protected-mode kernel goes (not relocatable: exactly there).
const LOAD_ADDRESS: u64 = 0x10_0000;
/// Linux's default when the header has no initrd_addr_max (before 2.03).
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

extern "C" {
    static __data_end: u8;
}

/// Checks the header; returns whether it is a bzImage's.
pub fn check(bp: BootParams, cmdline_len: usize, report: &mut Report) -> bool {
    let a = bp.addr;
    let bz = rd32(a + SYSSIZE) != 0;
    serial::line(if bz { b"boot=bzimage" } else { b"boot=elf" });
    let mut c = Check::new(report, None, b"setup-header");
    let version = rd16(a + VERSION);
    let (initrd, isize) = bp.initrd();
    if bz {
        let (start, end) = crate::entry::image_range();
        // SAFETY: only the symbol's address is taken.
        #[allow(unused_unsafe)]
        let file_end = unsafe { core::ptr::addr_of!(__data_end) as u64 };
        c.expect_eq(u64::from(rd8(a + SETUP_SECTS)), u64::from(BZ_SETUP_SECTS), b"setup_sects is not the image's");
        c.expect_eq(u64::from(version), u64::from(BZ_VERSION), b"version is not the image's");
        c.expect(u64::from(rd32(a + SYSSIZE)) * 16 >= file_end - start, b"syssize does not cover the protected-mode code");
        c.expect(rd8(a + LOADFLAGS) & LOADED_HIGH != 0, b"loadflags lost LOADED_HIGH");
        c.expect_eq(u64::from(rd32(a + CODE32_START)), LOAD_ADDRESS, b"code32_start: the kernel is not at 1 MiB (it is not relocatable)");
        c.expect_eq(u64::from(rd8(a + RELOCATABLE)), 0, b"relocatable_kernel is not the image's");
        c.expect_eq(u64::from(rd32(a + KERNEL_ALIGNMENT)), u64::from(BZ_KERNEL_ALIGNMENT), b"kernel_alignment is not the image's");
        c.expect(rd16(a + XLOADFLAGS) & XLF_KERNEL_64 != 0, b"xloadflags lost XLF_KERNEL_64");
        c.expect_eq(u64::from(rd32(a + CMDLINE_SIZE)), u64::from(BZ_CMDLINE_SIZE), b"cmdline_size is not the image's (a loader must not change it)");
        c.expect_eq(u64::from(rd32(a + INITRD_ADDR_MAX)), u64::from(BZ_INITRD_ADDR_MAX), b"initrd_addr_max is not the image's");
        c.expect_eq(rd64(a + PREF_ADDRESS), LOAD_ADDRESS, b"pref_address is not the image's");
        let init_size = u64::from(rd32(a + INIT_SIZE));
        c.expect(init_size >= end - start, b"init_size does not cover the image's memory (bss, stack)");
        if isize != 0 {
            c.expect(initrd >= start + init_size || initrd + isize <= start, b"the initrd lies inside [load address, + init_size)");
        }
    }
    // What Linux reads whatever the form: the command line within cmdline_size (2.06+;
    // the kernel's limit), the initrd below initrd_addr_max (2.03+; else 0x37ffffff).
    if version >= 0x0206 {
        let size = u64::from(rd32(a + CMDLINE_SIZE));
        c.expect((cmdline_len as u64) < size.max(1), b"the command line is longer than cmdline_size allows");
    }
    if isize != 0 {
        let max = if version >= 0x0203 { u64::from(rd32(a + INITRD_ADDR_MAX)) } else { DEFAULT_INITRD_ADDR_MAX };
        c.expect(initrd + isize - 1 <= max, b"the initrd ends above initrd_addr_max");
    }
    c.done();
    bz
}
