//! Loading the guest's kernel (ELF vmlinux through its 64-bit entry, or a bzImage),
//! its command line and its initrd into guest memory with linux-loader.
//!
//! Before a byte is loaded, [`kernel_format`] reads the file's head: an ELF must be
//! ELFCLASS64, little-endian, `ET_EXEC` and `EM_X86_64` (linux-loader checks only the
//! magic and the byte order), a bzImage must carry `HdrS` at 0x202; anything else is
//! refused naming the field. `vmctl plan` runs the same check on the config's kernels.

use std::fs::File;
use std::os::unix::fs::FileExt;

use linux_loader::bootparam::setup_header;
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::{self, bzimage::BzImage, elf::Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress};

use crate::vmm::memory::GuestMemory;

use super::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, PAGE_SIZE};

/// Errors loading the kernel, command line or initrd.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The kernel is neither an ELF file nor a bzImage.
    #[error(
        "the kernel is neither an ELF vmlinux (no \\x7fELF magic) nor a bzImage \
         (no \"HdrS\" at offset 0x202)"
    )]
    UnknownKernelFormat,
    /// The kernel is an ELF file, but not one this engine can run.
    #[error(
        "the kernel is not an ELF64 x86-64 executable: {field} is {found}, expected {expected}"
    )]
    ElfHeader {
        /// The header field that is wrong (`EI_CLASS`, `EI_DATA`, `e_type`, `e_machine`).
        field: &'static str,
        /// What the field must say.
        expected: &'static str,
        /// What it says.
        found: String,
    },
    /// The kernel file could not be read.
    #[error("cannot read the kernel: {0}")]
    ReadKernel(std::io::Error),
    /// The bzImage could not be loaded.
    #[error("cannot load the bzImage kernel: {0}")]
    LoadBzimage(loader::Error),
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

/// The kind of kernel a file holds, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// An ELF64 x86-64 executable (a vmlinux).
    Elf,
    /// A bzImage (`HdrS` at 0x202).
    BzImage,
}

/// How many bytes of a kernel file [`kernel_format`] looks at.
pub const KERNEL_HEAD_LEN: usize = 0x206;
const BZIMAGE_MAGIC_OFFSET: usize = 0x202;
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELF_HEADER_LEN: usize = 64;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;

/// What kind of kernel `head` (the first [`KERNEL_HEAD_LEN`] bytes of a file, or all of
/// a shorter one) starts; an ELF that is not ELF64 little-endian x86-64 `ET_EXEC` is
/// refused naming the field.
pub fn kernel_format(head: &[u8]) -> Result<KernelFormat, LoaderError> {
    if head.starts_with(ELF_MAGIC) {
        check_elf_header(head)?;
        return Ok(KernelFormat::Elf);
    }
    if head.get(BZIMAGE_MAGIC_OFFSET..KERNEL_HEAD_LEN) == Some(b"HdrS") {
        return Ok(KernelFormat::BzImage);
    }
    Err(LoaderError::UnknownKernelFormat)
}

fn check_elf_header(head: &[u8]) -> Result<(), LoaderError> {
    let wrong = |field, expected, found: String| LoaderError::ElfHeader {
        field,
        expected,
        found,
    };
    let Some(header) = head.get(..ELF_HEADER_LEN) else {
        return Err(wrong(
            "the ELF header",
            "64 bytes",
            format!("{} bytes", head.len()),
        ));
    };
    let class = header[4];
    if class != ELFCLASS64 {
        let found = match class {
            1 => "ELFCLASS32".to_owned(),
            other => format!("{other}"),
        };
        return Err(wrong("EI_CLASS", "ELFCLASS64", found));
    }
    let data = header[5];
    if data != ELFDATA2LSB {
        let found = match data {
            2 => "ELFDATA2MSB (big-endian)".to_owned(),
            other => format!("{other}"),
        };
        return Err(wrong("EI_DATA", "ELFDATA2LSB (little-endian)", found));
    }
    let half = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
    let e_type = half(16);
    if e_type != ET_EXEC {
        let found = match e_type {
            1 => "ET_REL (an object file)".to_owned(),
            3 => "ET_DYN (a shared object or PIE)".to_owned(),
            4 => "ET_CORE (a core dump)".to_owned(),
            other => format!("{other}"),
        };
        return Err(wrong("e_type", "ET_EXEC", found));
    }
    let machine = half(18);
    if machine != EM_X86_64 {
        let found = match machine {
            3 => "EM_386".to_owned(),
            40 => "EM_ARM".to_owned(),
            183 => "EM_AARCH64".to_owned(),
            243 => "EM_RISCV".to_owned(),
            other => format!("{other}"),
        };
        return Err(wrong("e_machine", "EM_X86_64 (62)", found));
    }
    Ok(())
}

/// Reads up to [`KERNEL_HEAD_LEN`] bytes from the start of `file` (without moving its
/// cursor).
pub fn read_kernel_head(file: &File) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0u8; KERNEL_HEAD_LEN];
    let mut got = 0;
    while got < head.len() {
        match file.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    Ok(head)
}

const XLF_KERNEL_64: u16 = 1;
/// The 64-bit entry of a bzImage is 0x200 past its protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// Loads an ELF vmlinux or a bzImage from `kernel`, after [`kernel_format`] checked it.
pub fn load_kernel(mem: &GuestMemory, kernel: &mut File) -> Result<LoadedKernel, LoaderError> {
    let himem = Some(GuestAddress(HIMEM_START));
    let head = read_kernel_head(kernel).map_err(LoaderError::ReadKernel)?;
    if kernel_format(&head)? == KernelFormat::Elf {
        let r = Elf::load(mem, None, kernel, himem).map_err(LoaderError::LoadElf)?;
        return Ok(LoadedKernel {
            entry: r.kernel_load.0,
            end: r.kernel_end,
            setup_header: None,
        });
    }
    let r = BzImage::load(mem, None, kernel, himem).map_err(LoaderError::LoadBzimage)?;
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
pub fn load_cmdline(mem: &GuestMemory, cmdline: &str) -> Result<(u64, usize), LoaderError> {
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
    mem: &GuestMemory,
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

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap()
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

    /// A minimal ELF64 little-endian x86-64 `ET_EXEC` header (no program headers).
    fn elf_header() -> Vec<u8> {
        let mut h = vec![0u8; ELF_HEADER_LEN];
        h[..4].copy_from_slice(ELF_MAGIC);
        h[4] = ELFCLASS64;
        h[5] = ELFDATA2LSB;
        h[6] = 1; // EV_CURRENT
        h[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        h[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        h
    }

    fn field_of(head: &[u8]) -> (&'static str, String) {
        match kernel_format(head) {
            Err(LoaderError::ElfHeader { field, found, .. }) => (field, found),
            other => panic!("expected an ELF header error, got {other:?}"),
        }
    }

    #[test]
    fn a_good_elf_header_is_an_elf_kernel() {
        assert_eq!(kernel_format(&elf_header()).unwrap(), KernelFormat::Elf);
    }

    #[test]
    fn elf32_is_refused_naming_ei_class() {
        let mut h = elf_header();
        h[4] = 1;
        assert_eq!(field_of(&h), ("EI_CLASS", "ELFCLASS32".to_owned()));
    }

    #[test]
    fn big_endian_elf_is_refused_naming_ei_data() {
        let mut h = elf_header();
        h[5] = 2;
        assert_eq!(field_of(&h).0, "EI_DATA");
    }

    #[test]
    fn a_shared_object_is_refused_naming_e_type() {
        let mut h = elf_header();
        h[16..18].copy_from_slice(&3u16.to_le_bytes());
        assert_eq!(field_of(&h).0, "e_type");
        h[16..18].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(field_of(&h).0, "e_type");
    }

    #[test]
    fn an_aarch64_elf_is_refused_naming_e_machine() {
        let mut h = elf_header();
        h[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert_eq!(field_of(&h), ("e_machine", "EM_AARCH64".to_owned()));
        h[18..20].copy_from_slice(&3u16.to_le_bytes());
        assert_eq!(field_of(&h), ("e_machine", "EM_386".to_owned()));
    }

    #[test]
    fn a_truncated_elf_header_is_refused() {
        let h = elf_header();
        assert_eq!(field_of(&h[..20]).0, "the ELF header");
    }

    #[test]
    fn hdrs_at_0x202_is_a_bzimage() {
        let mut h = vec![0u8; KERNEL_HEAD_LEN];
        h[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(kernel_format(&h).unwrap(), KernelFormat::BzImage);
        h[0x203] = b'x';
        assert!(matches!(
            kernel_format(&h),
            Err(LoaderError::UnknownKernelFormat)
        ));
        assert!(matches!(
            kernel_format(b""),
            Err(LoaderError::UnknownKernelFormat)
        ));
    }

    #[test]
    fn load_kernel_refuses_a_wrong_machine_before_loading() {
        let mem = mem();
        let mut h = elf_header();
        h[18..20].copy_from_slice(&183u16.to_le_bytes());
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&h).unwrap();
        let err = load_kernel(&mem, &mut f).unwrap_err().to_string();
        assert!(err.contains("e_machine is EM_AARCH64"), "{err}");
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
