//! The pages file: the guest pages a live migration's round sends — those written
//! since the round before ([`crate::vmm::dirty`]) — and how the receiving host lays
//! them into its memory file ([`super::memory`]'s layout: region after region).
//!
//! Format 1, little-endian: the magic `VMCTLPGS`, the format version (u32), the page
//! size (u32, 4096); then runs, each its offset in the memory file (u64, page-aligned),
//! its page count (u32, 1 to [`MAX_RUN_PAGES`]), a zero u32, and its pages' bytes; then
//! the end mark (offset `u64::MAX`, count 0) and nothing after it. Every page of a run
//! is sent as it is, zero or not (a page the guest cleared must be cleared on the other
//! side too). A file without its end mark (cut short), with a run outside the memory
//! file, or of another version is refused before anything of it is applied past that
//! point; the memory file it was being applied to is then not used (the move fails).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;

use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::SnapshotError;
use crate::vmm::memory::GuestMemory;

/// The pages file's first bytes.
pub const MAGIC: &[u8; 8] = b"VMCTLPGS";
/// The format this build writes and reads.
pub const VERSION: u32 = 1;
const PAGE: usize = 4096;
/// The most pages one run holds (1 MiB).
pub const MAX_RUN_PAGES: u32 = 256;
const END: u64 = u64::MAX;

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> SnapshotError {
    move |source| SnapshotError::Io { what, source }
}

fn invalid(what: String) -> SnapshotError {
    SnapshotError::Invalid { what }
}

/// Writes the pages of `mem` set in `dirty` (per region, one bit a page, as
/// [`crate::vmm::dirty::DirtyLog::take`] gives them) into `out`, from where it stands;
/// returns the bytes of pages written.
pub fn write(mem: &GuestMemory, dirty: &[Vec<u64>], out: &File) -> Result<u64, SnapshotError> {
    let mut w = BufWriter::with_capacity(1 << 20, out);
    let mut header = Vec::with_capacity(16);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&(PAGE as u32).to_le_bytes());
    w.write_all(&header).map_err(io("writing the pages file"))?;
    let mut file_offset = 0u64;
    let mut written = 0u64;
    for (region, bits) in mem.iter().zip(dirty) {
        let len = region.len() as usize;
        let pages = len / PAGE;
        let ptr = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| SnapshotError::Map(e.to_string()))?;
        // SAFETY: the region maps `len` bytes at `ptr` for as long as `mem` lives. The
        // guest may write them meanwhile (a round runs while it does): what is read is
        // then stale, and the page is in the next round's dirty set.
        let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
        let set = |page: usize| {
            bits.get(page / 64)
                .is_some_and(|w| w >> (page % 64) & 1 == 1)
        };
        let mut page = 0;
        while page < pages {
            if !set(page) {
                page += 1;
                continue;
            }
            let start = page;
            while page < pages && page - start < MAX_RUN_PAGES as usize && set(page) {
                page += 1;
            }
            let run = &bytes[start * PAGE..page * PAGE];
            let mut head = [0u8; 16];
            head[..8].copy_from_slice(&(file_offset + (start * PAGE) as u64).to_le_bytes());
            head[8..12].copy_from_slice(&((page - start) as u32).to_le_bytes());
            w.write_all(&head).map_err(io("writing the pages file"))?;
            w.write_all(run).map_err(io("writing the pages file"))?;
            written += run.len() as u64;
        }
        file_offset += len as u64;
    }
    let mut end = [0u8; 16];
    end[..8].copy_from_slice(&END.to_le_bytes());
    w.write_all(&end).map_err(io("writing the pages file"))?;
    w.flush().map_err(io("writing the pages file"))?;
    Ok(written)
}

/// Reads exactly `buf.len()` bytes, or says the file was cut short.
fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), SnapshotError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            invalid("the pages file is cut short".into())
        } else {
            SnapshotError::Io {
                what: "reading the pages file",
                source: e,
            }
        }
    })
}

/// Lays the pages of the pages file `pages` into the memory file `memory`; returns the
/// pages applied.
pub fn apply(pages: &File, memory: &File) -> Result<u64, SnapshotError> {
    let size = memory
        .metadata()
        .map_err(io("reading the memory file's size"))?
        .len();
    let mut r = BufReader::with_capacity(1 << 20, pages);
    let mut header = [0u8; 16];
    read_exact(&mut r, &mut header)?;
    if &header[..8] != MAGIC {
        return Err(invalid(
            "this is not a pages file (no VMCTLPGS magic)".into(),
        ));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != VERSION {
        return Err(invalid(format!(
            "the pages file is of format {version}; this vmctl reads format {VERSION}"
        )));
    }
    let page_size = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if page_size as usize != PAGE {
        return Err(invalid(format!(
            "the pages file's pages are {page_size} bytes, not {PAGE}"
        )));
    }
    let mut buf = vec![0u8; MAX_RUN_PAGES as usize * PAGE];
    let mut applied = 0u64;
    loop {
        let mut head = [0u8; 16];
        read_exact(&mut r, &mut head)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(&head[..8]);
        let offset = u64::from_le_bytes(word);
        let count = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if offset == END && count == 0 {
            break;
        }
        let len = u64::from(count) * PAGE as u64;
        if count == 0
            || count > MAX_RUN_PAGES
            || head[12..] != [0; 4]
            || offset % PAGE as u64 != 0
            || offset.checked_add(len).is_none_or(|end| end > size)
        {
            return Err(invalid(format!(
                "a run of {count} pages at offset {offset:#x} does not fit a memory file of {size} bytes"
            )));
        }
        let run = &mut buf[..len as usize];
        read_exact(&mut r, run)?;
        memory
            .write_all_at(run, offset)
            .map_err(io("writing the memory file"))?;
        applied += u64::from(count);
    }
    let mut rest = [0u8; 1];
    match r.read(&mut rest) {
        Ok(0) => Ok(applied),
        Ok(_) => Err(invalid("the pages file goes on after its end mark".into())),
        Err(source) => Err(SnapshotError::Io {
            what: "reading the pages file",
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom};

    use vm_memory::{Bytes, GuestAddress};

    use super::*;

    fn temp() -> File {
        tempfile::tempfile().unwrap()
    }

    fn pages_of(mem: &GuestMemory, dirty: &[Vec<u64>]) -> (File, u64) {
        let out = temp();
        let written = write(mem, dirty, &out).unwrap();
        (out, written)
    }

    #[test]
    fn dirty_pages_go_to_their_place_zero_pages_too() {
        let mem = crate::vmm::memory::create(8 << 20).unwrap();
        mem.write_slice(&[5u8; PAGE], GuestAddress(3 * PAGE as u64))
            .unwrap();
        mem.write_slice(&[9u8; 2 * PAGE], GuestAddress(300 * PAGE as u64))
            .unwrap();
        // Page 4 is dirty but zero (the guest cleared it): it is sent.
        let mut bits = vec![0u64; (8 << 20) / PAGE / 64];
        for p in [3usize, 4, 300, 301] {
            bits[p / 64] |= 1 << (p % 64);
        }
        let (pages, written) = pages_of(&mem, &[bits]);
        assert_eq!(written, 4 * PAGE as u64);

        let memory = temp();
        memory.set_len(8 << 20).unwrap();
        memory.write_all_at(&[1u8; PAGE], 4 * PAGE as u64).unwrap();
        (&pages).seek(SeekFrom::Start(0)).unwrap();
        assert_eq!(apply(&pages, &memory).unwrap(), 4);
        let mut page = vec![0u8; PAGE];
        memory.read_exact_at(&mut page, 3 * PAGE as u64).unwrap();
        assert_eq!(page, [5u8; PAGE]);
        memory.read_exact_at(&mut page, 4 * PAGE as u64).unwrap();
        assert_eq!(page, [0u8; PAGE], "a cleared page is cleared there too");
        memory.read_exact_at(&mut page, 301 * PAGE as u64).unwrap();
        assert_eq!(page, [9u8; PAGE]);
    }

    #[test]
    fn cut_foreign_or_outsized_pages_files_are_refused() {
        let mem = crate::vmm::memory::create(8 << 20).unwrap();
        let mut bits = vec![0u64; (8 << 20) / PAGE / 64];
        bits[0] = 0b110;
        let (pages, _) = pages_of(&mem, &[bits]);
        let mut bytes = Vec::new();
        (&pages).seek(SeekFrom::Start(0)).unwrap();
        (&pages).read_to_end(&mut bytes).unwrap();
        let memory = temp();
        memory.set_len(8 << 20).unwrap();
        let refused = |bytes: &[u8]| {
            let f = temp();
            (&f).write_all(bytes).unwrap();
            (&f).seek(SeekFrom::Start(0)).unwrap();
            apply(&f, &memory).unwrap_err().to_string()
        };
        let e = refused(&bytes[..bytes.len() - 1]);
        assert!(e.contains("cut short"), "{e}");
        let mut other = bytes.clone();
        other[8] = 2;
        assert!(refused(&other).contains("format 2"));
        let mut foreign = bytes.clone();
        foreign[0] = b'X';
        assert!(refused(&foreign).contains("magic"));
        let mut outside = bytes.clone();
        outside[16..24].copy_from_slice(&((8u64 << 20) - PAGE as u64).to_le_bytes());
        assert!(refused(&outside).contains("does not fit"));
        let mut more = bytes.clone();
        more.push(0);
        assert!(refused(&more).contains("after its end mark"));
        // A memory file smaller than the guest's: its runs do not fit.
        let small = temp();
        small.set_len(PAGE as u64).unwrap();
        (&pages).seek(SeekFrom::Start(0)).unwrap();
        assert!(apply(&pages, &small).is_err());
    }
}
