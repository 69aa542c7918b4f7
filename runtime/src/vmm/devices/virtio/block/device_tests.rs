//! Tests of the block device: requests laid out in guest memory by a fake driver, good
//! and hostile.

use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use vm_memory::Bytes;

use super::*;
use crate::vmm::devices::virtio::testing::{
    write_blk_header, CountingInterrupt, QueueLayout, F_NEXT, F_WRITE,
};

const HDR: u64 = 0x8000;
const DATA: u64 = 0x10000;
const STATUS: u64 = 0x9000;
const DISK_SECTORS: u64 = 64;

struct Harness {
    _file: tempfile::NamedTempFile,
    mem: GuestMemoryMmap,
    layout: QueueLayout,
    blk: Block,
    line: Arc<CountingInterrupt>,
    next_desc: u16,
}

fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

fn harness(read_only: bool) -> Harness {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let bytes: Vec<u8> = (0..DISK_SECTORS * SECTOR_SIZE).map(pattern).collect();
    file.write_all(&bytes).unwrap();
    let mem = QueueLayout::memory(0x40000);
    let layout = QueueLayout::new(0x1000, 16);
    let mut blk = Block::open(file.path(), read_only).unwrap();
    let line = Arc::new(CountingInterrupt::default());
    blk.activate(
        mem.clone(),
        vec![layout.queue(&mem)],
        blk.avail_features(),
        IrqTrigger::new(line.clone()),
    )
    .unwrap();
    Harness {
        _file: file,
        mem,
        layout,
        blk,
        line,
        next_desc: 0,
    }
}

impl Harness {
    /// Publishes a chain of `bufs` and runs the queue.
    fn run_chain(&mut self, bufs: &[(u64, u32, bool)]) {
        let head = self.layout.write_chain(&self.mem, self.next_desc, bufs);
        self.next_desc = (self.next_desc + bufs.len() as u16) % self.layout.size;
        self.layout.publish(&self.mem, &[head]);
        self.blk.process_queue(0);
    }

    /// A request with a header, data buffers of `lens` at DATA, DATA + 0x1000, …, and a
    /// status byte; returns (status, used length).
    fn request(&mut self, kind: u32, sector: u64, lens: &[u32], writable: bool) -> (u8, u32) {
        write_blk_header(&self.mem, HDR, kind, sector);
        self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let mut bufs = vec![(HDR, 16, false)];
        for (i, &len) in lens.iter().enumerate() {
            bufs.push((DATA + 0x1000 * i as u64, len, writable));
        }
        bufs.push((STATUS, 1, true));
        self.run_chain(&bufs);
        self.last()
    }

    /// The status byte and the used length of the last used element.
    fn last(&self) -> (u8, u32) {
        let used = self.layout.used_idx(&self.mem);
        let (_, len) = self.layout.used_elem(&self.mem, used.wrapping_sub(1));
        (self.mem.read_obj(GuestAddress(STATUS)).unwrap(), len)
    }

    fn used(&self) -> u16 {
        self.layout.used_idx(&self.mem)
    }

    fn guest_bytes(&self, at: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(at)).unwrap();
        v
    }

    fn file_bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        std::os::unix::fs::FileExt::read_exact_at(&self.blk.disk.file, &mut v, offset).unwrap();
        v
    }

    /// A good read still works (after some hostile request).
    fn assert_serves(&mut self) {
        let before = self.blk.counters().requests;
        assert_eq!(self.request(VIRTIO_BLK_T_IN, 2, &[512], true), (0, 513));
        assert_eq!(self.guest_bytes(DATA, 512), self.file_bytes(1024, 512));
        assert_eq!(self.blk.counters().requests, before + 1);
    }
}

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

#[test]
fn features_and_capacity() {
    let h = harness(false);
    assert_eq!(h.blk.device_type(), VIRTIO_ID_BLOCK);
    let f = h.blk.avail_features();
    assert_ne!(f & VIRTIO_F_VERSION_1, 0);
    assert_ne!(f & (1 << VIRTIO_BLK_F_FLUSH), 0);
    assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
    assert_eq!(h.blk.config_space()[..8], DISK_SECTORS.to_le_bytes());
    assert_eq!(h.blk.capacity(), DISK_SECTORS);
    assert_ne!(
        harness(true).blk.avail_features() & (1 << VIRTIO_BLK_F_RO),
        0
    );
}

#[test]
fn read_across_buffers() {
    let mut h = harness(false);
    assert_eq!(
        h.request(VIRTIO_BLK_T_IN, 3, &[512, 1024], true),
        (OK, 1537)
    );
    assert_eq!(h.guest_bytes(DATA, 512), h.file_bytes(3 * 512, 512));
    assert_eq!(
        h.guest_bytes(DATA + 0x1000, 1024),
        h.file_bytes(4 * 512, 1024)
    );
    assert_eq!(h.line.count(), 1);
    assert_ne!(h.blk.active.as_ref().unwrap().irq.status() & 1, 0);
    let c = h.blk.counters();
    assert_eq!((c.requests, c.bytes_to_guest, c.bad_total()), (1, 1536, 0));
}

#[test]
fn write_then_flush() {
    let mut h = harness(false);
    h.mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
    h.mem
        .write_slice(&[0xcd; 512], GuestAddress(DATA + 0x1000))
        .unwrap();
    assert_eq!(h.request(VIRTIO_BLK_T_OUT, 10, &[512, 512], false), (OK, 1));
    assert_eq!(h.file_bytes(10 * 512, 512), vec![0xab; 512]);
    assert_eq!(h.file_bytes(11 * 512, 512), vec![0xcd; 512]);
    assert_eq!(h.file_bytes(12 * 512, 1), vec![pattern(12 * 512)]);
    assert_eq!(h.request(VIRTIO_BLK_T_FLUSH, 0, &[], false), (OK, 1));
    assert_eq!(h.blk.counters().bytes_from_guest, 1024);
}

#[test]
fn last_sector_is_reachable_and_the_next_is_not() {
    let mut h = harness(false);
    assert_eq!(
        h.request(VIRTIO_BLK_T_IN, DISK_SECTORS - 1, &[512], true),
        (OK, 513)
    );
    assert_eq!(
        h.request(VIRTIO_BLK_T_IN, DISK_SECTORS - 1, &[1024], true),
        (IOERR, 1)
    );
    assert_eq!(
        h.request(VIRTIO_BLK_T_IN, DISK_SECTORS, &[512], true),
        (IOERR, 1)
    );
    assert_eq!(
        h.request(VIRTIO_BLK_T_OUT, DISK_SECTORS, &[512], false),
        (IOERR, 1)
    );
    assert_eq!(h.blk.counters().bad_requests, 3);
}

#[test]
fn overflowing_and_partial_sectors_are_refused() {
    let mut h = harness(false);
    assert_eq!(
        h.request(VIRTIO_BLK_T_IN, u64::MAX, &[512], true),
        (IOERR, 1)
    );
    assert_eq!(
        h.request(VIRTIO_BLK_T_IN, u64::MAX / 512, &[512], true),
        (IOERR, 1)
    );
    assert_eq!(h.request(VIRTIO_BLK_T_IN, 0, &[100], true), (IOERR, 1));
    assert_eq!(h.request(VIRTIO_BLK_T_OUT, 0, &[100], false), (IOERR, 1));
    assert_eq!(h.blk.counters().bad_requests, 4);
    assert_eq!(
        h.file_bytes(0, 100),
        (0..100).map(pattern).collect::<Vec<_>>()
    );
    h.assert_serves();
}

#[test]
fn get_id() {
    let mut h = harness(false);
    h.blk.set_id("vmctl-disk-0");
    assert_eq!(h.request(VIRTIO_BLK_T_GET_ID, 0, &[512], true), (OK, 21));
    let mut want = b"vmctl-disk-0".to_vec();
    want.resize(20, 0);
    assert_eq!(h.guest_bytes(DATA, 20), want);
    // A short buffer gets what fits.
    h.blk.set_id("0123456789abcdefghijKLMN");
    assert_eq!(h.request(VIRTIO_BLK_T_GET_ID, 0, &[8], true), (OK, 9));
    assert_eq!(h.guest_bytes(DATA, 8), b"01234567");
}

#[test]
fn unsupported_type() {
    let mut h = harness(false);
    assert_eq!(h.request(11, 0, &[512], false), (UNSUPP, 1));
    assert_eq!(h.blk.counters().bad_requests, 1);
    h.assert_serves();
}

#[test]
fn read_only_disk_refuses_writes_even_without_f_ro() {
    let mut h = harness(true);
    let mode = unsafe { libc::fcntl(h.blk.disk.file.as_raw_fd(), libc::F_GETFL) };
    assert_eq!(mode & libc::O_ACCMODE, libc::O_RDONLY);
    h.mem.write_slice(&[0xee; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(h.request(VIRTIO_BLK_T_OUT, 0, &[512], false), (IOERR, 1));
    assert_eq!(
        h.file_bytes(0, 512),
        (0..512).map(pattern).collect::<Vec<_>>()
    );
    assert_eq!(h.blk.counters().io_errors, 1);
    h.assert_serves();
}

#[test]
fn head_only_chain() {
    let mut h = harness(false);
    write_blk_header(&h.mem, HDR, VIRTIO_BLK_T_IN, 0);
    h.run_chain(&[(HDR, 16, false)]);
    assert_eq!(h.used(), 1, "the chain is given back");
    assert_eq!(h.layout.used_elem(&h.mem, 0).1, 0);
    assert_eq!(h.blk.counters().bad_chains, 1);
    // A head-only chain whose one buffer is writable: still no place for a status.
    h.run_chain(&[(STATUS, 16, true)]);
    assert_eq!(h.blk.counters().bad_chains, 2);
    h.assert_serves();
}

#[test]
fn buffers_outside_guest_memory() {
    let mut h = harness(false);
    let end = 0x40000u64;
    write_blk_header(&h.mem, HDR, VIRTIO_BLK_T_IN, 0);
    for bad in [end - 256, end, u64::MAX - 100] {
        h.run_chain(&[(HDR, 16, false), (bad, 512, true), (STATUS, 1, true)]);
    }
    // A status byte past the end, and a header there.
    h.run_chain(&[(HDR, 16, false), (DATA, 512, true), (end, 1, true)]);
    h.run_chain(&[(end - 8, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
    assert_eq!(h.blk.counters().bad_chains, 5);
    assert_eq!(h.used(), 5);
    h.assert_serves();
}

#[test]
fn descriptor_loop() {
    let mut h = harness(false);
    write_blk_header(&h.mem, HDR, VIRTIO_BLK_T_IN, 0);
    h.layout.write_desc(&h.mem, 0, HDR, 16, F_NEXT, 1);
    h.layout
        .write_desc(&h.mem, 1, DATA, 512, F_WRITE | F_NEXT, 2);
    h.layout
        .write_desc(&h.mem, 2, STATUS, 1, F_WRITE | F_NEXT, 1);
    h.layout.publish(&h.mem, &[0]);
    h.blk.process_queue(0);
    assert_eq!(h.blk.counters().bad_chains, 1);
    assert_eq!(h.used(), 1);
    h.next_desc = 3;
    h.assert_serves();
}

#[test]
fn avail_index_far_ahead() {
    let mut h = harness(false);
    h.layout.set_avail_idx(&h.mem, 17);
    h.blk.process_queue(0);
    assert_eq!(h.blk.counters().invalid_avail_idx, 1);
    assert_eq!(h.used(), 0, "nothing consumed");
    h.layout.set_avail_idx(&h.mem, 0);
    h.assert_serves();
}

#[test]
fn head_index_outside_queue() {
    let mut h = harness(false);
    h.layout.publish(&h.mem, &[100]);
    h.blk.process_queue(0);
    let c = h.blk.counters();
    assert_eq!((c.bad_chains, c.used_ring_errors), (1, 1));
    h.assert_serves();
}

#[test]
fn many_requests_in_one_notification() {
    let mut h = harness(false);
    let mut heads = Vec::new();
    for i in 0..5u16 {
        let hdr = HDR + 0x20 * u64::from(i);
        write_blk_header(&h.mem, hdr, VIRTIO_BLK_T_IN, u64::from(i));
        let bufs = [
            (hdr, 16, false),
            (DATA + 0x1000 * u64::from(i), 512, true),
            (STATUS + u64::from(i), 1, true),
        ];
        heads.push(h.layout.write_chain(&h.mem, 3 * i, &bufs));
    }
    h.layout.publish(&h.mem, &heads);
    h.blk.process_queue(0);
    assert_eq!(h.used(), 5);
    assert_eq!(h.line.count(), 1, "one interrupt for the batch");
    for i in 0..5u64 {
        assert_eq!(
            h.guest_bytes(DATA + 0x1000 * i, 512),
            h.file_bytes(512 * i, 512)
        );
    }
}

#[test]
fn reset_stops_the_device() {
    let mut h = harness(false);
    h.blk.reset();
    assert!(!h.blk.is_activated());
    write_blk_header(&h.mem, HDR, VIRTIO_BLK_T_IN, 0);
    h.run_chain(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
    assert_eq!(h.used(), 0);
}

#[test]
fn activation_needs_one_ready_queue() {
    let h = harness(false);
    // A second device on the disk, once the first (which locks it) is gone.
    drop(h.blk);
    let mut blk = Block::open(h._file.path(), false).unwrap();
    let irq = IrqTrigger::new(Arc::new(CountingInterrupt::default()));
    assert_eq!(
        blk.activate(h.mem.clone(), vec![], 0, irq.clone()),
        Err(ActivateError::QueueCount { got: 0, want: 1 })
    );
    let not_ready = <Queue as virtio_queue::QueueT>::new(16).unwrap();
    assert_eq!(
        blk.activate(h.mem.clone(), vec![not_ready], 0, irq),
        Err(ActivateError::QueueNotUsable { index: 0 })
    );
    assert!(Block::open(Path::new("/nonexistent/disk"), true).is_err());
}

#[test]
fn a_written_disk_has_one_writer() {
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().set_len(4096).unwrap();
    let writer = Block::open(file.path(), false).unwrap();
    // A second writer, or a reader, is refused while it is open.
    for read_only in [false, true] {
        let second = Block::open(file.path(), read_only);
        assert!(
            matches!(&second, Err(BlockError::Locked { path }) if path == file.path()),
            "{second:?}"
        );
    }
    drop(writer);
    // Readers share; a writer waits for them to go.
    let r1 = Block::open(file.path(), true).unwrap();
    let _r2 = Block::open(file.path(), true).unwrap();
    assert!(Block::open(file.path(), false).is_err());
    drop((r1, _r2));
    assert!(Block::open(file.path(), false).is_ok());
}

#[test]
fn writes_mark_their_blocks_and_reads_mark_the_guest_pages_they_fill() {
    use vm_memory::GuestMemoryBackend;
    let mut h = harness(false);
    let written = h.blk.written();
    let mem = h.mem.clone();
    let region = mem.iter().next().unwrap();
    let pages = |r: &vm_memory::GuestRegionMmap<vm_memory::bitmap::AtomicBitmap>| {
        let map: &vm_memory::mmap::MmapRegion<_> = r;
        map.bitmap().get_and_reset()
    };
    pages(region);
    // A read fills guest memory past vm-memory's accessors: its pages are marked.
    assert_eq!(h.request(VIRTIO_BLK_T_IN, 3, &[512], true), (OK, 513));
    let marked = pages(region);
    let data_page = (DATA / 4096) as usize;
    assert_ne!(marked[data_page / 64] & (1 << (data_page % 64)), 0);
    assert_eq!(written.get_and_reset(), vec![0]);
    // A write marks the disk's block, not before.
    h.mem.write_slice(&[1; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(h.request(VIRTIO_BLK_T_OUT, 10, &[512], false), (OK, 1));
    assert_eq!(written.get_and_reset(), vec![1]);
}
