//! Test support: plays the guest driver's side of a split virtqueue in a
//! `GuestMemoryMmap` (descriptor table, avail and used rings), and a counting interrupt.
//!
//! Used by the unit tests, the fuzz harness (`runtime/tests/virtio_fuzz.rs`) and the
//! block benchmark (`runtime/benches/blk.rs`); not part of the engine's API.

use std::collections::VecDeque;
use std::io;
use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::net::Tap;
use super::{GuestMemoryMmap, Interrupt};

/// Descriptor flag: the chain continues at `next`.
pub const F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is an indirect descriptor table.
pub const F_INDIRECT: u16 = 4;

/// An interrupt line that counts how often it was raised.
#[derive(Debug, Default)]
pub struct CountingInterrupt(AtomicUsize);

impl CountingInterrupt {
    /// How often the line was raised.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Interrupt for CountingInterrupt {
    fn notify(&self) -> io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Where a split virtqueue lies in guest memory: the descriptor table at `desc`, the
/// avail ring right after it, the used ring after that (4-byte aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLayout {
    /// Descriptor table address.
    pub desc: u64,
    /// Avail ring address.
    pub avail: u64,
    /// Used ring address.
    pub used: u64,
    /// Queue size.
    pub size: u16,
}

impl QueueLayout {
    /// Guest memory of `size` bytes at address 0.
    pub fn memory(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).expect("test guest memory")
    }

    /// A layout of a queue of `size` entries starting at `base`.
    pub fn new(base: u64, size: u16) -> Self {
        let n = u64::from(size);
        let avail = base + 16 * n;
        let used = (avail + 6 + 2 * n + 3) & !3;
        Self {
            desc: base,
            avail,
            used,
            size,
        }
    }

    /// The first address past the used ring.
    pub fn end(&self) -> u64 {
        self.used + 6 + 8 * u64::from(self.size)
    }

    /// A ready `Queue` pointing at this layout (as the transport would build it).
    pub fn queue(&self, _mem: &GuestMemoryMmap) -> Queue {
        let mut q = Queue::new(self.size).expect("power-of-two queue size");
        self.configure(&mut q);
        q
    }

    /// Points `q` at this layout and marks it ready.
    pub fn configure(&self, q: &mut Queue) {
        q.set_size(self.size);
        q.set_desc_table_address(Some(self.desc as u32), Some((self.desc >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q.set_ready(true);
    }

    /// Writes descriptor `index` of the table (no bounds check: tests may write garbage).
    pub fn write_desc(
        &self,
        mem: &GuestMemoryMmap,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let at = GuestAddress(self.desc + 16 * u64::from(index));
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&raw, at).expect("descriptor in memory");
    }

    /// Writes a chain of `bufs` (address, length, device-writable) into descriptors
    /// `first`, `first + 1`, … (modulo the size); returns its head, `first`.
    pub fn write_chain(&self, mem: &GuestMemoryMmap, first: u16, bufs: &[(u64, u32, bool)]) -> u16 {
        let n = bufs.len();
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let index = (first as usize + i) % usize::from(self.size);
            let next = ((index + 1) % usize::from(self.size)) as u16;
            let mut flags = if writable { F_WRITE } else { 0 };
            if i + 1 < n {
                flags |= F_NEXT;
            }
            self.write_desc(mem, index as u16, addr, len, flags, next);
        }
        first
    }

    /// The avail ring's index.
    pub fn avail_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj::<u16>(GuestAddress(self.avail + 2))
            .expect("avail ring in memory")
    }

    /// Sets the avail ring's index (hostile guests set anything).
    pub fn set_avail_idx(&self, mem: &GuestMemoryMmap, idx: u16) {
        mem.write_obj(idx, GuestAddress(self.avail + 2))
            .expect("avail ring in memory");
    }

    /// Makes the chains starting at `heads` available, in order.
    pub fn publish(&self, mem: &GuestMemoryMmap, heads: &[u16]) {
        let mut idx = self.avail_idx(mem);
        for &h in heads {
            let slot = u64::from(idx % self.size);
            mem.write_obj(h, GuestAddress(self.avail + 4 + 2 * slot))
                .expect("avail ring in memory");
            idx = idx.wrapping_add(1);
        }
        self.set_avail_idx(mem, idx);
    }

    /// The used ring's index.
    pub fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj::<u16>(GuestAddress(self.used + 2))
            .expect("used ring in memory")
    }

    /// Used ring element `n` (by position, modulo the size): (head id, length).
    pub fn used_elem(&self, mem: &GuestMemoryMmap, n: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(n % self.size);
        let id = mem.read_obj::<u32>(GuestAddress(at)).expect("used ring");
        let len = mem
            .read_obj::<u32>(GuestAddress(at + 4))
            .expect("used ring");
        (id, len)
    }

    /// Clears both rings' indices (the driver's view after a device reset).
    pub fn reset_rings(&self, mem: &GuestMemoryMmap) {
        self.set_avail_idx(mem, 0);
        mem.write_obj(0u16, GuestAddress(self.used + 2))
            .expect("used ring in memory");
    }
}

/// Writes a virtio-blk request header (`type`, reserved, `sector`) at `at`.
pub fn write_blk_header(mem: &GuestMemoryMmap, at: u64, kind: u32, sector: u64) {
    let mut raw = [0u8; 16];
    raw[0..4].copy_from_slice(&kind.to_le_bytes());
    raw[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&raw, GuestAddress(at))
        .expect("header in memory");
}

/// An in-memory tap: frames to hand the device in `rx`, frames it sent in `tx`.
#[derive(Debug, Default)]
pub struct FakeTap {
    /// Frames waiting to be read by the device (host → guest).
    pub rx: VecDeque<Vec<u8>>,
    /// Frames the device wrote (guest → host).
    pub tx: Vec<Vec<u8>>,
    /// How often the device read (including reads that found nothing).
    pub reads: usize,
    /// When set, writes fail with this error.
    pub write_error: Option<io::ErrorKind>,
}

impl Tap for FakeTap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        let frame = self.rx.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(n)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        if let Some(kind) = self.write_error {
            return Err(kind.into());
        }
        self.tx.push(frame.to_vec());
        Ok(frame.len())
    }

    fn fd(&self) -> Option<RawFd> {
        None
    }
}
