//! Loading the guest's kernel (ELF vmlinux through its 64-bit entry, or a bzImage),
//! its command line and its initrd into guest memory with linux-loader.

use std::fs::File;

use linux_loader::bootparam::setup_header;
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::{self, bzimage::BzImage, elf::Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, PAGE_SIZE};

/// Errors loading the kernel, command line or initrd.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The kernel is neither an x86-64 ELF vmlinux nor a bzImage.
    #[error("the kernel is neither an x86-64 ELF vmlinux ({elf}) nor a bzImage ({bzimage})")]
    UnknownKernelFormat {
        /// Why the ELF loader refused it.
        elf: loader::Error,
        /// Why the bzImage loader refused it.
        bzimage: loader::Error,
    },
    /// The ELF kernel could not be loaded.
    #[error("cannot load the ELF kernel: {0}")]
    LoadElf(loader::Error),
    /// The bzImage has no 64-bit entry point.
    #[error("the bzImage has no 64-bit entry point (XLF_KERNEL_64 unset)")]
    Bzimage32Bit,
    /// The command line is invalid or too long.
    #[error("invalid kernel command line: {0}")]
    Cmdline(linux_loader::cmdline::Error),
    /// Failed to write the command line into guest memory.
    #[error("failed to write the command line into guest memory: {0}")]
    WriteCmdline(loader::Error),
    /// The initrd does not fit between the kernel and the end of low memory.
    #[error(
        "the initrd ({size} bytes) does not fit in guest memory between the kernel \
         (ends at {kernel_end:#x}) and {limit:#x}; give the VM more memory"
    )]
    InitrdTooLarge {
        /// The initrd's size.
        size: u64,
        /// Where the kernel ends.
        kernel_end: u64,
        /// The highest address the initrd may end at.
        limit: u64,
    },
    /// Failed to read the initrd into guest memory.
    #[error("failed to read the initrd into guest memory: {0}")]
    ReadInitrd(vm_memory::GuestMemoryError),
}

/// Where a loaded kernel starts executing and what the zero page needs from it.
#[derive(Debug, Clone)]
pub struct LoadedKernel {
    /// The 64-bit entry point.
    pub entry: u64,
    /// First address past the kernel image.
    pub end: u64,
    /// The bzImage's setup header (none for an ELF vmlinux).
    pub setup_header: Option<setup_header>,
}

const XLF_KERNEL_64: u16 = 1;
/// The 64-bit entry of a bzImage is 0x200 past its protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// Loads an ELF vmlinux, or else a bzImage, from `kernel`.
pub fn load_kernel(mem: &GuestMemoryMmap, kernel: &mut File) -> Result<LoadedKernel, LoaderError> {
    let himem = Some(GuestAddress(HIMEM_START));
    let elf = match Elf::load(mem, None, kernel, himem) {
        Ok(r) => {
            return Ok(LoadedKernel {
                entry: r.kernel_load.0,
                end: r.kernel_end,
                setup_header: None,
            })
        }
        Err(loader::Error::Elf(loader::elf::Error::InvalidElfMagicNumber)) => {
            loader::Error::Elf(loader::elf::Error::InvalidElfMagicNumber)
        }
        Err(e) => return Err(LoaderError::LoadElf(e)),
    };
    let r = BzImage::load(mem, None, kernel, himem)
        .map_err(|bzimage| LoaderError::UnknownKernelFormat { elf, bzimage })?;
    let hdr = r.setup_header.unwrap_or_default();
    if hdr.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(LoaderError::Bzimage32Bit);
    }
    Ok(LoadedKernel {
        entry: r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
        end: r.kernel_end,
        setup_header: Some(hdr),
    })
}

/// Validates `cmdline` and writes it NUL-terminated at [`CMDLINE_START`]; returns its
/// address and length (without the NUL).
pub fn load_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(u64, usize), LoaderError> {
    let mut c = Cmdline::new(CMDLINE_MAX_SIZE + 1).map_err(LoaderError::Cmdline)?;
    if !cmdline.is_empty() {
        c.insert_str(cmdline).map_err(LoaderError::Cmdline)?;
    }
    loader::load_cmdline(mem, GuestAddress(CMDLINE_START), &c)
        .map_err(LoaderError::WriteCmdline)?;
    Ok((CMDLINE_START, cmdline.len()))
}

/// Where an initrd of `size` bytes goes: page-aligned, as high as possible below
/// `limit` (the end of low RAM or the kernel's `initrd_addr_max`), above the kernel.
pub fn initrd_address(size: u64, kernel_end: u64, limit: u64) -> Result<u64, LoaderError> {
    let too_large = LoaderError::InitrdTooLarge {
        size,
        kernel_end,
        limit,
    };
    let start = limit.checked_sub(size).ok_or(too_large)?;
    let start = start & !(PAGE_SIZE - 1);
    if start < kernel_end {
        return Err(LoaderError::InitrdTooLarge {
            size,
            kernel_end,
            limit,
        });
    }
    Ok(start)
}

/// Reads the initrd into guest memory at the top of low RAM; returns `(address, size)`.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    initrd: &mut File,
    size: u64,
    kernel: &LoadedKernel,
    low_ram_end: u64,
) -> Result<(u64, u64), LoaderError> {
    let mut limit = low_ram_end;
    if let Some(hdr) = kernel.setup_header {
        // Protocol 2.03+ says how high the initrd may go.
        if hdr.version >= 0x203 && hdr.initrd_addr_max != 0 {
            limit = limit.min(u64::from(hdr.initrd_addr_max) + 1);
        }
    }
    let addr = initrd_address(size, kernel.end, limit)?;
    let len = usize::try_from(size).map_err(|_| LoaderError::InitrdTooLarge {
        size,
        kernel_end: kernel.end,
        limit,
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), initrd, len)
        .map_err(LoaderError::ReadInitrd)?;
    Ok((addr, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap()
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        assert_eq!(
            initrd_address(0x1800, 0x200000, 0x1000000).unwrap(),
            0xffe000
        );
        assert!(initrd_address(0x1000000, 0x200000, 0x1000000).is_err());
        assert!(initrd_address(u64::MAX, 0, 0x1000000).is_err());
    }

    #[test]
    fn initrd_bytes_land_in_memory() {
        let mem = mem();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"hello initrd").unwrap();
        use std::io::Seek;
        f.rewind().unwrap();
        let k = LoadedKernel {
            entry: 0x100000,
            end: 0x200000,
            setup_header: None,
        };
        let (addr, size) = load_initrd(&mem, &mut f, 12, &k, 16 << 20).unwrap();
        assert_eq!(addr, (16 << 20) - 4096);
        let mut buf = [0u8; 12];
        mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        assert_eq!((&buf, size), (b"hello initrd", 12));
    }

    #[test]
    fn cmdline_written_with_nul() {
        let mem = mem();
        let (addr, len) = load_cmdline(&mem, "console=ttyS0 quiet").unwrap();
        let mut buf = [0xffu8; 20];
        mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        assert_eq!(&buf[..19], b"console=ttyS0 quiet");
        assert_eq!((buf[19], len), (0, 19));
        assert!(load_cmdline(&mem, &"x".repeat(CMDLINE_MAX_SIZE + 1)).is_err());
        assert!(load_cmdline(&mem, "").is_ok());
    }

    #[test]
    fn garbage_kernel_is_refused() {
        let mem = mem();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[0x42; 8192]).unwrap();
        let err = load_kernel(&mem, &mut f).unwrap_err().to_string();
        assert!(err.contains("neither"), "{err}");
    }
}
