//! Base images: copying one into a new volume file (a reflink where the filesystem can,
//! else a sparse copy) and its digest.
//!
//! The sparse copy walks the source's data extents with `SEEK_DATA`/`SEEK_HOLE` and, in
//! them, skips every all-zero block, so holes stay holes and zero runs of a
//! non-sparse image become holes too (a filesystem without `SEEK_DATA` is treated as one
//! data extent).
//!
//! Both the copy and the digest read at most the source's size as `fstat` gave it (the
//! source must be a regular file), and both look at a cancel flag between chunks: a
//! cancelled apply stops a long copy or hash at once ([`is_cancelled`]).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

/// The granularity at which zero blocks are skipped.
const BLOCK: usize = 4096;
/// How much is read at once.
const CHUNK: usize = 1 << 20;

/// The error a cancelled copy or hash returns.
#[derive(Debug, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// Whether `error` is a cancelled copy or hash.
pub fn is_cancelled(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|e| e.is::<Cancelled>())
}

fn check_cancel(cancel: Option<&AtomicBool>) -> io::Result<()> {
    if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
        return Err(io::Error::new(io::ErrorKind::Interrupted, Cancelled));
    }
    Ok(())
}

/// How an image was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// `FICLONE`: the destination shares the source's extents, copy-on-write.
    Reflink,
    /// Data extents copied, holes and zero blocks skipped.
    Sparse,
}

/// Copies all of `src` into the empty file `dst` and sets `dst`'s length to `src`'s.
/// Tries a reflink first and falls back to a sparse copy, which stops with
/// [`Cancelled`] once `cancel` is set.
pub fn copy_image(src: &File, dst: &File, cancel: Option<&AtomicBool>) -> io::Result<CopyMethod> {
    check_cancel(cancel)?;
    if reflink(src, dst).is_ok() {
        return Ok(CopyMethod::Reflink);
    }
    sparse_copy(src, dst, cancel)?;
    Ok(CopyMethod::Sparse)
}

/// `ioctl(dst, FICLONE, src)`.
fn reflink(src: &File, dst: &File) -> io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its integer argument; both fds are open for
    // the duration of the call, and no memory is passed to the kernel.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copies the data of `src` into `dst` at the same offsets, skipping holes and all-zero
/// blocks, then sets `dst`'s length to `src`'s. Stops with [`Cancelled`] once `cancel`
/// is set.
pub fn sparse_copy(src: &File, dst: &File, cancel: Option<&AtomicBool>) -> io::Result<()> {
    let len = src.metadata()?.len();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < len {
        let Some(start) = seek(src, pos, libc::SEEK_DATA)? else {
            break; // only a hole is left
        };
        let end = seek(src, start, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        copy_range(src, dst, start, end, &mut buf, cancel)?;
        pos = end;
    }
    dst.set_len(len)
}

/// `lseek` with `SEEK_DATA`/`SEEK_HOLE`: `None` past the last data (`ENXIO`). A
/// filesystem that cannot answer is treated as all data from `offset`.
fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let off = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    // SAFETY: lseek on an open fd; no memory involved.
    let rc = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if rc >= 0 {
        return Ok(Some(rc as u64));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        Some(libc::EINVAL) if whence == libc::SEEK_DATA => Ok(Some(offset)),
        Some(libc::EINVAL) => Ok(None),
        _ => Err(err),
    }
}

fn copy_range(
    src: &File,
    dst: &File,
    start: u64,
    end: u64,
    buf: &mut [u8],
    cancel: Option<&AtomicBool>,
) -> io::Result<()> {
    let mut pos = start;
    while pos < end {
        check_cancel(cancel)?;
        let want = usize::try_from(end - pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let got = src.read_at(&mut buf[..want], pos)?;
        if got == 0 {
            break; // the source shrank under us; set_len settles the length
        }
        write_nonzero(dst, &buf[..got], pos)?;
        pos += got as u64;
    }
    Ok(())
}

/// Writes `data` at `offset`, leaving out every all-zero `BLOCK`-sized block (aligned to
/// the file) so they stay holes in the freshly created destination.
fn write_nonzero(dst: &File, data: &[u8], offset: u64) -> io::Result<()> {
    let mut i = 0;
    while i < data.len() {
        let block_end = (((offset + i as u64) / BLOCK as u64 + 1) * BLOCK as u64 - offset) as usize;
        let end = block_end.min(data.len());
        let block = &data[i..end];
        if block.iter().any(|&b| b != 0) {
            dst.write_all_at(block, offset + i as u64)?;
        }
        i = end;
    }
    Ok(())
}

/// The digest of a base image as the volume marker records it: `sha256:<hex>`. The
/// image must be a regular file (a FIFO or device is refused, without blocking); at most
/// its size is read; the hash stops with [`Cancelled`] once `cancel` is set.
pub fn image_digest(path: &Path, cancel: Option<&AtomicBool>) -> io::Result<String> {
    let (file, meta) = super::fsutil::open_regular(path, true)?;
    let (hex, _) = sha256_of(&mut file.take(meta.len()), cancel)?;
    Ok(format!("sha256:{hex}"))
}

/// The sha256 (lower-case hex) and length of everything `reader` yields; stops with
/// [`Cancelled`] once `cancel` is set. The one hashing loop of the runtime: base
/// images, the vmctl executable (its build id), files received into an image cache.
pub fn sha256_of(reader: &mut dyn Read, cancel: Option<&AtomicBool>) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        check_cancel(cancel)?;
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const MIB: u64 = 1 << 20;

    /// A 9 MiB source: data at 0, a 4 MiB hole, a fully written but all-zero MiB, data
    /// straddling a block boundary, and a hole at the end.
    fn sparse_source(dir: &Path) -> File {
        let file = new_file(dir, "src");
        file.write_all_at(b"boot sector", 0).unwrap();
        file.write_all_at(&vec![0u8; MIB as usize], 5 * MIB)
            .unwrap();
        file.write_all_at(b"across", 6 * MIB + 4093).unwrap();
        file.set_len(9 * MIB).unwrap();
        file
    }

    fn new_file(dir: &Path, name: &str) -> File {
        File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join(name))
            .unwrap()
    }

    fn contents(file: &File) -> Vec<u8> {
        let mut out = vec![0u8; file.metadata().unwrap().len() as usize];
        file.read_exact_at(&mut out, 0).unwrap();
        out
    }

    #[test]
    fn sparse_copy_keeps_contents_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = sparse_source(dir.path());
        let dst = new_file(dir.path(), "dst");
        sparse_copy(&src, &dst, None).unwrap();

        assert_eq!(dst.metadata().unwrap().len(), 9 * MIB);
        assert_eq!(contents(&src), contents(&dst));
        // Three written blocks at most (plus filesystem slack), never the zero MiB.
        let allocated = dst.metadata().unwrap().blocks() * 512;
        assert!(allocated <= 64 * 1024, "{allocated} bytes allocated");
    }

    #[test]
    fn zero_blocks_are_skipped_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let dst = new_file(dir.path(), "dst");
        let mut data = vec![0u8; 3 * BLOCK];
        data[BLOCK + 7] = 1;
        // Unaligned start: the first partial block ends at the next block boundary.
        write_nonzero(&dst, &data, 100).unwrap();
        dst.set_len(100 + data.len() as u64).unwrap();
        let got = contents(&dst);
        assert_eq!(&got[100..], &data[..]);
        assert!(got[..100].iter().all(|&b| b == 0));
    }

    #[test]
    fn copy_image_copies_whatever_the_method() {
        let dir = tempfile::tempdir().unwrap();
        let src = sparse_source(dir.path());
        let dst = new_file(dir.path(), "dst");
        copy_image(&src, &dst, None).unwrap();
        assert_eq!(contents(&src), contents(&dst));
    }

    #[test]
    fn empty_source_copies_to_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("src"), b"").unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        let dst = File::create(dir.path().join("dst")).unwrap();
        sparse_copy(&src, &dst, None).unwrap();
        assert_eq!(dst.metadata().unwrap().len(), 0);
    }

    #[test]
    fn a_cancelled_copy_or_hash_stops() {
        let dir = tempfile::tempdir().unwrap();
        let src = sparse_source(dir.path());
        let dst = new_file(dir.path(), "dst");
        let cancel = AtomicBool::new(true);
        let err = sparse_copy(&src, &dst, Some(&cancel)).unwrap_err();
        assert!(is_cancelled(&err), "{err}");
        assert_eq!(dst.metadata().unwrap().len(), 0, "nothing was copied");
        let err = copy_image(&src, &dst, Some(&cancel)).unwrap_err();
        assert!(is_cancelled(&err), "{err}");
        let err = image_digest(&dir.path().join("src"), Some(&cancel)).unwrap_err();
        assert!(is_cancelled(&err), "{err}");
    }

    #[test]
    fn only_regular_files_are_hashed() {
        // /dev/zero never ends and a FIFO blocks: both are refused at once.
        let err = image_digest(Path::new("/dev/zero"), None).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = image_digest(&fifo, None).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        let err = image_digest(dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
    }

    #[test]
    fn digest_is_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            image_digest(&path, None).unwrap(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
