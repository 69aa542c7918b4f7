//! A hostile guest against a virtio-blk disk, through the API the VMM uses: MMIO reads
//! and writes on the transport, an eventfd as the interrupt (the irqfd), queue
//! notifications, and the counters `status` reports. Each bad request is refused and
//! counted, and the disk keeps serving well-formed requests.
#![cfg(target_arch = "x86_64")]

use std::io::Write;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};
use vmctl_runtime::vmm::devices::virtio::block::Block;
use vmctl_runtime::vmm::devices::virtio::mmio::{MmioTransport, CONFIG_SPACE_OFFSET};
use vmctl_runtime::vmm::devices::virtio::testing::{
    write_blk_header, QueueLayout, F_NEXT, F_WRITE,
};
use vmm_sys_util::eventfd::EventFd;

const QUEUE_NUM: u64 = 0x38;
const QUEUE_READY: u64 = 0x44;
const QUEUE_NOTIFY: u64 = 0x50;
const INTERRUPT_STATUS: u64 = 0x60;
const INTERRUPT_ACK: u64 = 0x64;
const STATUS: u64 = 0x70;

const HDR: u64 = 0x8000;
const DATA: u64 = 0x9000;
const STATUS_BYTE: u64 = 0xa000;

fn r32(t: &mut MmioTransport<Block>, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn w32(t: &mut MmioTransport<Block>, offset: u64, v: u32) {
    t.write(offset, &v.to_le_bytes());
}

/// What Linux's virtio_mmio and virtio_blk do at probe time.
fn probe(t: &mut MmioTransport<Block>, layout: QueueLayout) {
    assert_eq!(r32(t, 0x0), 0x7472_6976);
    assert_eq!(r32(t, 0x4), 2);
    assert_eq!(r32(t, 0x8), 2, "virtio-blk");
    w32(t, STATUS, 0);
    w32(t, STATUS, 1);
    w32(t, STATUS, 3);
    w32(t, 0x14, 1);
    let high = r32(t, 0x10);
    w32(t, 0x14, 0);
    let low = r32(t, 0x10);
    w32(t, 0x24, 1);
    w32(t, 0x20, high);
    w32(t, 0x24, 0);
    w32(t, 0x20, low);
    w32(t, STATUS, 0xb);
    assert_eq!(r32(t, STATUS), 0xb);
    w32(t, 0x30, 0);
    assert_eq!(r32(t, 0x34), 256);
    w32(t, QUEUE_NUM, u32::from(layout.size));
    for (reg, addr) in [
        (0x80, layout.desc),
        (0x90, layout.avail),
        (0xa0, layout.used),
    ] {
        w32(t, reg, addr as u32);
        w32(t, reg + 4, (addr >> 32) as u32);
    }
    w32(t, QUEUE_READY, 1);
    w32(t, STATUS, 0xf);
    assert_eq!(r32(t, STATUS), 0xf);
}

#[test]
fn hostile_guest_is_counted_and_the_disk_keeps_serving() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let content: Vec<u8> = (0..64 * 512).map(|i| (i % 253) as u8).collect();
    file.write_all(&content).unwrap();

    let mem = QueueLayout::memory(0x20000);
    let layout = QueueLayout::new(0x1000, 16);
    let irqfd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let blk = Block::open(file.path(), false).unwrap();
    let mut t = MmioTransport::new(mem.clone(), blk, Arc::new(irqfd.try_clone().unwrap())).unwrap();
    probe(&mut t, layout);
    assert_eq!(t.queue_count(), 1);
    assert_eq!(t.backend_fd(), None);

    // Capacity through the config space, as two aligned 32-bit reads.
    let lo = r32(&mut t, CONFIG_SPACE_OFFSET);
    let hi = r32(&mut t, CONFIG_SPACE_OFFSET + 4);
    assert_eq!(u64::from(lo) | u64::from(hi) << 32, 64);

    // Short and misaligned accesses; queue rewrites after DRIVER_OK.
    let mut b2 = [0u8; 2];
    t.read(CONFIG_SPACE_OFFSET + 1, &mut b2);
    t.read(STATUS, &mut b2);
    t.write(STATUS, &[0]);
    w32(&mut t, QUEUE_NUM, 3);
    w32(&mut t, QUEUE_NUM, 8);
    w32(&mut t, QUEUE_READY, 0);

    // A head-only chain, a buffer outside guest memory, a loop, an avail index too far
    // ahead.
    write_blk_header(&mem, HDR, 0, 0);
    layout.write_desc(&mem, 0, HDR, 16, 0, 0);
    layout.write_desc(&mem, 1, HDR, 16, F_NEXT, 2);
    layout.write_desc(&mem, 2, 0x1_0000_0000, 512, F_WRITE | F_NEXT, 3);
    layout.write_desc(&mem, 3, STATUS_BYTE, 1, F_WRITE, 0);
    layout.write_desc(&mem, 4, HDR, 16, F_NEXT, 5);
    layout.write_desc(&mem, 5, DATA, 512, F_WRITE | F_NEXT, 4);
    layout.publish(&mem, &[0, 1, 4]);
    w32(&mut t, QUEUE_NOTIFY, 0);
    let used = layout.used_idx(&mem);
    layout.set_avail_idx(&mem, used.wrapping_add(100));
    t.process_queue(0);
    layout.set_avail_idx(&mem, used);

    // A well-formed read of sector 3 is still served, and the guest is interrupted.
    while irqfd.read().is_ok() {}
    write_blk_header(&mem, HDR, 0, 3);
    layout.write_chain(
        &mem,
        6,
        &[(HDR, 16, false), (DATA, 512, true), (STATUS_BYTE, 1, true)],
    );
    layout.publish(&mem, &[6]);
    t.process_queue(0); // the ioeventfd path
    let mut data = vec![0u8; 512];
    mem.read_slice(&mut data, GuestAddress(DATA)).unwrap();
    assert_eq!(data, content[3 * 512..4 * 512]);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS_BYTE)).unwrap(), 0);
    assert_eq!(layout.used_elem(&mem, layout.used_idx(&mem) - 1), (6, 513));
    assert_eq!(irqfd.read().unwrap(), 1);
    assert_eq!(r32(&mut t, INTERRUPT_STATUS) & 1, 1);
    w32(&mut t, INTERRUPT_ACK, 1);
    assert_eq!(r32(&mut t, INTERRUPT_STATUS), 0);

    let status = serde_json::to_value(t.counters()).unwrap();
    let transport = &status["transport"];
    assert_eq!(transport["bad_accesses"], 3);
    assert_eq!(transport["queue_config_after_ready"], 3);
    let device = &status["device"];
    assert_eq!(device["bad_chains"], 3);
    assert_eq!(device["invalid_avail_idx"], 1);
    assert_eq!(device["requests"], 1);
    assert_eq!(r32(&mut t, STATUS), 0xf, "the device is still running");
}
