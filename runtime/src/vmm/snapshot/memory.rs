//! The memory file: guest RAM region after region (the layout's `ram_ranges`, so the
//! file's length is the guest's memory size), written with the zero pages left as
//! holes, and mapped back copy-on-write.
//!
//! **Restore maps, it does not read** (as Firecracker does): every region is an
//! `mmap(MAP_PRIVATE | MAP_NORESERVE)` of its part of the file. Restoring costs a few
//! system calls whatever the guest's size; a page is read from the file (the page
//! cache) the first time the guest touches it, and copied only when the guest writes
//! it, so the snapshot's file is never changed and several VMs may restore from one.
//! The cost moves to the guest's first touch of each page; holes read as zeros.
//!
//! **Saving skips what the guest never touched** without reading it: for anonymous
//! guest memory (a booted VM), a page that `/proc/self/pagemap` shows neither present
//! nor swapped was never written (or was discarded), so it is zero ([`Residency`],
//! opened before the jail). Every other page is read and compared with zero. Memory
//! mapped from a snapshot's file is always read (a page not yet faulted in holds the
//! file's data).

use std::fs::File;
use std::os::fd::AsRawFd;

use vm_memory::bitmap::{AtomicBitmap, NewBitmap};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap,
    MemoryRegionAddress,
};

use super::SnapshotError;
use crate::vmm::arch::x86_64::layout;
use crate::vmm::memory::GuestMemory;

const PAGE: usize = 4096;
/// The longest run written by one `pwrite`.
const MAX_RUN: usize = 1 << 20;

/// The process's page map (`/proc/self/pagemap`), opened before the jail: which pages
/// of anonymous memory the process has ever had.
#[derive(Debug)]
pub struct Residency {
    pagemap: File,
}

/// Pagemap entry bits: the page is present, or swapped out.
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
/// Pagemap entries read at once (512 KiB).
const PM_CHUNK: usize = 64 * 1024;

impl Residency {
    /// Opens the page map; `None` where there is none (no /proc): every page is read.
    pub fn open() -> Option<Self> {
        File::open("/proc/self/pagemap")
            .ok()
            .map(|pagemap| Self { pagemap })
    }

    /// For the `pages` pages from host address `addr`: whether each may hold data.
    fn touched(&self, addr: usize, pages: usize) -> std::io::Result<Vec<bool>> {
        use std::os::unix::fs::FileExt;
        let mut out = Vec::with_capacity(pages);
        let mut buf = vec![0u8; PM_CHUNK * 8];
        let first = (addr / PAGE) as u64;
        while out.len() < pages {
            let n = (pages - out.len()).min(PM_CHUNK);
            let bytes = &mut buf[..n * 8];
            self.pagemap
                .read_exact_at(bytes, (first + out.len() as u64) * 8)?;
            out.extend(bytes.chunks_exact(8).map(|e| {
                let mut word = [0u8; 8];
                word.copy_from_slice(e);
                u64::from_le_bytes(word) & (PM_PRESENT | PM_SWAPPED) != 0
            }));
        }
        Ok(out)
    }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> SnapshotError {
    move |source| SnapshotError::Io { what, source }
}

fn is_zero(page: &[u8]) -> bool {
    let (head, words, tail) = {
        // SAFETY: u64 has no invalid bit patterns; align_to splits off what is not
        // aligned.
        unsafe { page.align_to::<u64>() }
    };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

fn pwrite_all(file: &File, mut data: &[u8], mut offset: u64) -> Result<(), SnapshotError> {
    while !data.is_empty() {
        // SAFETY: `data` is a valid slice of `data.len()` bytes; pwrite reads only them.
        let n = unsafe {
            libc::pwrite(
                file.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                offset as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io("writing the memory file")(e));
        }
        if n == 0 {
            return Err(io("writing the memory file")(
                std::io::ErrorKind::WriteZero.into(),
            ));
        }
        data = &data[n as usize..];
        offset += n as u64;
    }
    Ok(())
}

/// Writes `mem` into `file` (sized to it first; its earlier contents are replaced);
/// returns the bytes written (the pages that are not all zero). For a consistent copy
/// call it with the vCPUs parked and no device serving a queue; a live migration's
/// round 0 calls it with the guest running, after dirty-page tracking is on, so every
/// page written meanwhile is sent again by a later round. With `residency`, anonymous
/// pages the process never had are skipped without being read.
pub fn save(
    mem: &GuestMemory,
    file: &File,
    residency: Option<&Residency>,
) -> Result<u64, SnapshotError> {
    let total: u64 = mem.iter().map(|r| r.len()).sum();
    file.set_len(0).map_err(io("emptying the memory file"))?;
    file.set_len(total).map_err(io("sizing the memory file"))?;
    let mut offset = 0u64;
    let mut written = 0u64;
    for region in mem.iter() {
        let len = region.len() as usize;
        let ptr = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| SnapshotError::Map(e.to_string()))?;
        // SAFETY: the region maps `len` bytes at `ptr` for as long as `mem` lives; the
        // vCPUs are parked and the devices locked, so nothing writes it meanwhile.
        let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
        let touched = match residency {
            Some(r) if region.file_offset().is_none() => Some(
                r.touched(ptr as usize, len / PAGE)
                    .map_err(io("reading the page map"))?,
            ),
            _ => None,
        };
        let data = |at: usize| {
            touched.as_ref().is_none_or(|t| t[at / PAGE]) && !is_zero(&bytes[at..at + PAGE])
        };
        let mut at = 0;
        while at < len {
            if !data(at) {
                at += PAGE;
                continue;
            }
            let start = at;
            while at < len && at - start < MAX_RUN && data(at) {
                at += PAGE;
            }
            pwrite_all(file, &bytes[start..at], offset + start as u64)?;
            written += (at - start) as u64;
        }
        offset += len as u64;
    }
    Ok(written)
}

/// Maps `memory` bytes of guest RAM from `file`, copy-on-write; the file must hold
/// exactly that much.
pub fn map_private(file: &File, memory: u64) -> Result<GuestMemory, SnapshotError> {
    let len = file
        .metadata()
        .map_err(io("reading the memory file's size"))?
        .len();
    if len != memory {
        return Err(SnapshotError::MemoryFile { file: len, memory });
    }
    let mut offset = 0u64;
    let mut regions = Vec::new();
    for (start, size) in layout::ram_ranges(memory) {
        let fd = file
            .try_clone()
            .map_err(io("duplicating the memory file"))?;
        let region = MmapRegionBuilder::new_with_bitmap(
            size as usize,
            AtomicBitmap::with_len(size as usize),
        )
        .with_file_offset(FileOffset::new(fd, offset))
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
        .build()
        .map_err(|e| SnapshotError::Map(e.to_string()))?;
        let region = GuestRegionMmap::new(region, GuestAddress(start))
            .ok_or_else(|| SnapshotError::Map(format!("region at {start:#x} overflows")))?;
        regions.push(region);
        offset += size;
    }
    GuestMemory::from_regions(regions).map_err(|e| SnapshotError::Map(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn memory_round_trips_through_a_sparse_file_and_the_file_stays_unchanged() {
        let size = 8 << 20;
        let mem = crate::vmm::memory::create(size).unwrap();
        mem.write_slice(b"hello", GuestAddress(0x1000)).unwrap();
        mem.write_slice(&[7u8; 8192], GuestAddress(0x30_0000))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let written = save(&mem, &file, None).unwrap();
        assert_eq!(written, 3 * PAGE as u64);
        // Skipping what was never touched writes the same.
        let residency = Residency::open().unwrap();
        assert_eq!(save(&mem, &file, Some(&residency)).unwrap(), written);
        assert_eq!(file.metadata().unwrap().len(), size);

        let back = map_private(&file, size).unwrap();
        let mut buf = [0u8; 5];
        back.read_slice(&mut buf, GuestAddress(0x1000)).unwrap();
        assert_eq!(&buf, b"hello");
        let mut page = [0u8; 8192];
        back.read_slice(&mut page, GuestAddress(0x30_0000)).unwrap();
        assert_eq!(page, [7u8; 8192]);
        // Writes go to the private copy, never to the file.
        back.write_slice(b"HELLO", GuestAddress(0x1000)).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[0x1000..0x1005], b"hello");

        assert!(matches!(
            map_private(&file, size * 2),
            Err(SnapshotError::MemoryFile { .. })
        ));
        // Memory mapped from a file is read whole (its untouched pages hold the file's
        // data): saving the restored memory writes the same pages.
        let copy = dir.path().join("copy");
        let out = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&copy)
            .unwrap();
        assert_eq!(save(&back, &out, Some(&residency)).unwrap(), written);
        let saved = std::fs::read(&copy).unwrap();
        assert_eq!(&saved[0x1000..0x1005], b"HELLO");
        assert_eq!(&saved[0x30_0000..0x30_2000], &[7u8; 8192][..]);
    }
}
