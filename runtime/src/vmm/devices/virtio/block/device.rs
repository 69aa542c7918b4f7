//! virtio-blk over a raw file: IN, OUT, FLUSH and GET_ID on one queue.
//!
//! Data moves with `pread`/`pwrite` straight between the file and guest memory (no bounce
//! buffer). Every request is checked before it touches the file: its buffers lie in
//! guest memory (checked with the chain), its length is whole sectors, and
//! `sector * 512 + length` stays within the file with no overflow. A read-only disk is
//! opened `O_RDONLY`, so a guest that ignores `VIRTIO_BLK_F_RO` still gets
//! `VIRTIO_BLK_S_IOERR` for its writes. The status byte is written last.

use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::Queue;
use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::request::{self, RequestKind};
use crate::vmm::devices::virtio::{
    chain, take_queues, ActivateError, DeviceCounters, GuestMemoryMmap, IrqTrigger, VirtioDevice,
    VIRTIO_F_VERSION_1,
};

/// Bytes per sector, as virtio-blk counts them.
pub const SECTOR_SIZE: u64 = 512;
/// The block device's only queue holds this many descriptors at most.
pub const QUEUE_SIZE: u16 = 256;
/// Length of the id string GET_ID returns.
pub const ID_LEN: usize = VIRTIO_BLK_ID_BYTES as usize;
/// Length of the config space (`struct virtio_blk_config`; only `capacity` is set).
const CONFIG_LEN: usize = 96;

/// Why a disk could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// cannot open disk {path}: {source}
    #[error("cannot open disk {path}: {source}")]
    OpenDisk { path: PathBuf, source: io::Error },
    /// cannot read the size of disk {path}: {source}
    #[error("cannot read the size of disk {path}: {source}")]
    StatDisk { path: PathBuf, source: io::Error },
    /// disk {path} is in use by another VMM or process (it holds a lock on it)
    #[error("disk {path} is in use by another VMM or process (it holds a lock on it)")]
    Locked { path: PathBuf },
}

/// The blocks a live migration tracks a disk's writes in (64 KiB).
pub const WRITTEN_BLOCK: usize = 64 << 10;

/// The host side of a disk: the file and what the guest may do with it.
#[derive(Debug)]
struct Disk {
    file: File,
    size: u64,
    id: [u8; ID_LEN],
    /// The blocks the guest wrote (always kept: an atomic OR a write; read and reset
    /// by a live migration, which re-sends them).
    written: Arc<AtomicBitmap>,
}

/// The state a block device has only while the driver runs it.
#[derive(Debug)]
struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    irq: IrqTrigger,
}

/// A virtio-blk device over a raw file.
#[derive(Debug)]
pub struct Block {
    disk: Disk,
    read_only: bool,
    config: [u8; CONFIG_LEN],
    active: Option<Active>,
    /// Scratch space for the descriptors of the chain being served.
    descs: Vec<Descriptor>,
    counters: DeviceCounters,
}

/// Locks a disk for as long as `file` is open: exclusively when it is written, shared
/// when read-only, so no two VMMs (or a VMM and another flock user) ever write one
/// image at once.
fn lock_disk(file: &File, path: &Path, read_only: bool) -> Result<(), BlockError> {
    let kind = if read_only {
        libc::LOCK_SH
    } else {
        libc::LOCK_EX
    };
    // SAFETY: flock on a valid fd owned by `file`.
    if unsafe { libc::flock(file.as_raw_fd(), kind | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::WouldBlock {
        return Err(BlockError::Locked {
            path: path.to_owned(),
        });
    }
    Err(BlockError::OpenDisk {
        path: path.to_owned(),
        source: err,
    })
}

impl Block {
    /// Opens the raw disk at `path`, locked ([`lock_disk`]); read-only disks are opened
    /// `O_RDONLY`.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| BlockError::OpenDisk {
                path: path.to_owned(),
                source,
            })?;
        lock_disk(&file, path, read_only)?;
        let meta = file.metadata().map_err(|source| BlockError::StatDisk {
            path: path.to_owned(),
            source,
        })?;
        let mut id = [0u8; ID_LEN];
        let default_id = format!("{:x}{:x}", meta.dev(), meta.ino());
        let n = default_id.len().min(ID_LEN);
        id[..n].copy_from_slice(&default_id.as_bytes()[..n]);

        let mut config = [0u8; CONFIG_LEN];
        config[..8].copy_from_slice(&(meta.len() / SECTOR_SIZE).to_le_bytes());
        Ok(Self {
            disk: Disk {
                file,
                size: meta.len(),
                id,
                written: Arc::new(AtomicBitmap::new(
                    meta.len() as usize,
                    NonZeroUsize::new(WRITTEN_BLOCK).unwrap_or(NonZeroUsize::MIN),
                )),
            },
            read_only,
            config,
            active: None,
            descs: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            counters: DeviceCounters::default(),
        })
    }

    /// Sets the string GET_ID returns (cut at 20 bytes; shorter ones are NUL-padded).
    pub fn set_id(&mut self, id: &str) {
        let n = id.len().min(ID_LEN);
        self.disk.id = [0; ID_LEN];
        self.disk.id[..n].copy_from_slice(&id.as_bytes()[..n]);
    }

    /// The blocks of [`WRITTEN_BLOCK`] bytes the guest wrote, one bit each.
    pub fn written(&self) -> Arc<AtomicBitmap> {
        self.disk.written.clone()
    }

    /// The disk's capacity in 512-byte sectors, as the guest sees it.
    pub fn capacity(&self) -> u64 {
        self.disk.size / SECTOR_SIZE
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        let ro = if self.read_only {
            1 << VIRTIO_BLK_F_RO
        } else {
            0
        };
        VIRTIO_F_VERSION_1 | (1 << VIRTIO_BLK_F_FLUSH) | ro
    }

    fn config_space(&self) -> &[u8] {
        &self.config
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        _acked_features: u64,
        irq: IrqTrigger,
    ) -> Result<(), ActivateError> {
        let [queue] = take_queues(self.active.is_some(), queues)?;
        self.active = Some(Active { mem, queue, irq });
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn process_queue(&mut self, index: u16) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if index != 0 {
            return;
        }
        let Active { mem, queue, irq } = active;
        let counters = &mut self.counters;
        let Some(pending) = chain::pending(queue, mem, counters) else {
            return;
        };
        let mut used = false;
        for _ in 0..pending {
            let Some((head, shape)) = chain::pop(queue, mem, &mut self.descs) else {
                break;
            };
            let len = match shape {
                Ok(()) => serve(&self.disk, mem, &self.descs, counters),
                Err(_) => {
                    counters.bad_chains += 1;
                    0
                }
            };
            used |= chain::add_used(queue, mem, head, len, counters);
        }
        if used {
            chain::notify(queue, mem, irq, counters);
        }
    }

    fn reset(&mut self) {
        self.active = None;
    }

    fn queue_states(&self) -> Option<Vec<virtio_queue::QueueState>> {
        self.active.as_ref().map(|a| vec![a.queue.state()])
    }

    fn counters(&self) -> DeviceCounters {
        self.counters
    }
}

/// Serves one well-formed chain; returns the used length (bytes written to the guest).
fn serve(
    disk: &Disk,
    mem: &GuestMemoryMmap,
    descs: &[Descriptor],
    counters: &mut DeviceCounters,
) -> u32 {
    let req = match request::parse(mem, descs) {
        Ok(req) => req,
        Err(bad) => {
            counters.bad_chains += 1;
            return bad.status.map_or(0, |at| {
                write_status(mem, at, VIRTIO_BLK_S_IOERR, 0, counters)
            });
        }
    };
    let buffers = &descs[req.data.clone()];
    let (status, written) = match req.kind {
        RequestKind::In | RequestKind::Out => match disk.offset_of(req.sector, req.data_len) {
            None => {
                counters.bad_requests += 1;
                (VIRTIO_BLK_S_IOERR, 0)
            }
            Some(offset) => {
                let reading = req.kind == RequestKind::In;
                let done = disk.transfer(mem, buffers, offset, reading);
                if !reading {
                    // After the write: a migration that reads the block before this
                    // mark sends it again at the pause.
                    disk.written
                        .set_addr_range(offset as usize, req.data_len as usize);
                }
                match done {
                    Ok(()) if reading => {
                        counters.requests += 1;
                        counters.bytes_to_guest += req.data_len;
                        (VIRTIO_BLK_S_OK, req.data_len)
                    }
                    Ok(()) => {
                        counters.requests += 1;
                        counters.bytes_from_guest += req.data_len;
                        (VIRTIO_BLK_S_OK, 0)
                    }
                    Err(_) => {
                        counters.io_errors += 1;
                        (VIRTIO_BLK_S_IOERR, 0)
                    }
                }
            }
        },
        RequestKind::Flush => match disk.file.sync_data() {
            Ok(()) => {
                counters.requests += 1;
                (VIRTIO_BLK_S_OK, 0)
            }
            Err(_) => {
                counters.io_errors += 1;
                (VIRTIO_BLK_S_IOERR, 0)
            }
        },
        RequestKind::GetId => {
            counters.requests += 1;
            let n = write_buffers(mem, buffers, &disk.id);
            counters.bytes_to_guest += n;
            (VIRTIO_BLK_S_OK, n)
        }
        RequestKind::Unsupported(_) => {
            counters.bad_requests += 1;
            (VIRTIO_BLK_S_UNSUPP, 0)
        }
    };
    write_status(mem, req.status, status, written, counters)
}

/// Writes the status byte; returns the used length (`written` data bytes plus it).
fn write_status(
    mem: &GuestMemoryMmap,
    at: GuestAddress,
    status: u32,
    written: u64,
    counters: &mut DeviceCounters,
) -> u32 {
    // The status descriptor was checked to lie in guest memory with the chain.
    if mem.write_obj(status as u8, at).is_err() {
        counters.used_ring_errors += 1;
        return u32::try_from(written).unwrap_or(u32::MAX);
    }
    u32::try_from(written.saturating_add(1)).unwrap_or(u32::MAX)
}

/// Copies `data` into the writable `buffers` in order, as far as they reach.
fn write_buffers(mem: &GuestMemoryMmap, buffers: &[Descriptor], data: &[u8]) -> u64 {
    let mut done = 0usize;
    for d in buffers {
        let rest = &data[done..];
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(d.len() as usize);
        if mem.write_slice(&rest[..n], d.addr()).is_err() {
            break;
        }
        done += n;
    }
    done as u64
}

impl Disk {
    /// The file offset of `len` bytes at `sector`, if they are whole sectors within the file.
    fn offset_of(&self, sector: u64, len: u64) -> Option<u64> {
        let offset = sector.checked_mul(SECTOR_SIZE)?;
        let end = offset.checked_add(len)?;
        (len.is_multiple_of(SECTOR_SIZE) && end <= self.size).then_some(offset)
    }

    /// Moves the buffers' bytes from (`reading`) or to the file at `offset`.
    fn transfer(
        &self,
        mem: &GuestMemoryMmap,
        buffers: &[Descriptor],
        mut offset: u64,
        reading: bool,
    ) -> io::Result<()> {
        for d in buffers {
            for slice in GuestMemoryBackend::get_slices(mem, d.addr(), d.len() as usize) {
                let slice = slice.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                if reading {
                    let guard = slice.ptr_guard_mut();
                    pread_exact(&self.file, guard.as_ptr(), slice.len(), offset)?;
                    // Written past vm-memory's accessors: marked for a migration's
                    // dirty pages by hand.
                    slice.bitmap().mark_dirty(0, slice.len());
                } else {
                    let guard = slice.ptr_guard();
                    pwrite_all(&self.file, guard.as_ptr(), slice.len(), offset)?;
                }
                offset += slice.len() as u64;
            }
        }
        Ok(())
    }
}

/// `pread` until `len` bytes landed at `ptr`.
fn pread_exact(file: &File, ptr: *mut u8, len: usize, offset: u64) -> io::Result<()> {
    let fd = file.as_raw_fd();
    retry_until_done(len, offset, io::ErrorKind::UnexpectedEof, |done, at| {
        // SAFETY: `ptr..ptr + len` is a guest memory slice the caller holds a guard on;
        // the kernel writes at most `len - done` bytes from `ptr + done`.
        unsafe { libc::pread64(fd, ptr.add(done).cast(), len - done, at) }
    })
}

/// `pwrite` until the `len` bytes at `ptr` are in the file.
fn pwrite_all(file: &File, ptr: *const u8, len: usize, offset: u64) -> io::Result<()> {
    let fd = file.as_raw_fd();
    retry_until_done(len, offset, io::ErrorKind::WriteZero, |done, at| {
        // SAFETY: `ptr..ptr + len` is a guest memory slice the caller holds a guard on;
        // the kernel reads at most `len - done` bytes from `ptr + done`.
        unsafe { libc::pwrite64(fd, ptr.add(done).cast(), len - done, at) }
    })
}

/// Calls `op(done, file offset)` until `len` bytes are done; retries EINTR, fails on
/// other errors and on a zero-byte transfer (`stalled`).
fn retry_until_done(
    len: usize,
    offset: u64,
    stalled: io::ErrorKind,
    mut op: impl FnMut(usize, i64) -> isize,
) -> io::Result<()> {
    let mut done = 0;
    while done < len {
        let at = i64::try_from(offset + done as u64)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        match op(done, at) {
            0 => return Err(stalled.into()),
            n if n > 0 => done += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
