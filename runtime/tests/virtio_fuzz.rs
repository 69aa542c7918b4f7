//! Fuzzing the virtio request paths with proptest: arbitrary queue sizes and ring
//! addresses written through the MMIO transport, arbitrary descriptor tables, avail
//! rings and avail indices in guest memory, for virtio-blk and virtio-net.
//!
//! Each case asserts: no panic, no hang (a case finishes within a few seconds), and —
//! where it can be told — guest memory outside the used rings and the device-writable
//! buffers is untouched. `cargo test` runs 256 cases; a long run sets PROPTEST_CASES:
//!
//! ```text
//! PROPTEST_CASES=200000 cargo test --release -p vmctl-runtime --test virtio_fuzz
//! ```
#![cfg(target_arch = "x86_64")]

use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress};
use vmctl_runtime::vmm::devices::virtio::block::Block;
use vmctl_runtime::vmm::devices::virtio::mmio::MmioTransport;
use vmctl_runtime::vmm::devices::virtio::net::Net;
use vmctl_runtime::vmm::devices::virtio::testing::{
    write_blk_header, CountingInterrupt, FakeTap, QueueLayout, F_INDIRECT, F_NEXT, F_WRITE,
};
use vmctl_runtime::vmm::devices::virtio::{GuestMemoryMmap, VirtioDevice};

const MEM_SIZE: u64 = 0x20000;
const DATA_START: u64 = 0x10000;

// virtio-mmio registers.
const QUEUE_SEL: u64 = 0x30;
const QUEUE_NUM: u64 = 0x38;
const QUEUE_READY: u64 = 0x44;
const QUEUE_NOTIFY: u64 = 0x50;
const STATUS: u64 = 0x70;
const DRIVER_FEATURES: u64 = 0x20;
const DRIVER_FEATURES_SEL: u64 = 0x24;
const QUEUE_ADDR: [u64; 6] = [0x80, 0x84, 0x90, 0x94, 0xa0, 0xa4];

#[derive(Debug, Clone)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

#[derive(Debug, Clone)]
struct QueueCase {
    /// What the driver writes to QueueNum.
    num: u32,
    /// Ring addresses (desc, avail, used), or the standard layout when `None`.
    addrs: Option<(u64, u64, u64)>,
    descs: Vec<Desc>,
    /// Raw bytes written over the descriptor table after `descs` (garbage tables).
    raw_table: Vec<u8>,
    ring: Vec<u16>,
    /// Avail index values, each followed by a notification.
    idx_steps: Vec<u16>,
    /// Chain shapes imposed on consecutive descriptors, so that many chains look like
    /// requests: (descriptors in the chain, block request type, sector).
    shapes: Vec<(usize, u32, u64)>,
}

#[derive(Debug, Clone)]
struct Case {
    queues: Vec<QueueCase>,
    /// Block request headers planted in guest memory: (address, type, sector).
    headers: Vec<(u64, u32, u64)>,
    /// Frames the fake tap hands the NIC.
    frames: Vec<Vec<u8>>,
    data_seed: u8,
}

fn desc() -> impl Strategy<Value = Desc> {
    let addr = prop_oneof![
        8 => DATA_START..MEM_SIZE,
        2 => 0u64..MEM_SIZE + 0x100,
        1 => any::<u64>(),
    ];
    let len = prop_oneof![
        8 => 0u32..0x1100,
        1 => any::<u32>(),
    ];
    let flags = prop_oneof![
        8 => 0u16..8,
        1 => any::<u16>(),
    ];
    let next = prop_oneof![
        8 => 0u16..16,
        2 => 0u16..300,
        1 => any::<u16>(),
    ];
    (addr, len, flags, next).prop_map(|(addr, len, flags, next)| Desc {
        addr,
        len,
        flags,
        next,
    })
}

fn queue_case() -> impl Strategy<Value = QueueCase> {
    let num = prop_oneof![
        6 => (0u32..=8).prop_map(|s| 1 << s),
        1 => 0u32..300,
        1 => any::<u32>(),
    ];
    let addrs = prop_oneof![
        6 => Just(None),
        1 => (0u64..MEM_SIZE, 0u64..MEM_SIZE, 0u64..MEM_SIZE).prop_map(Some),
        1 => (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(Some),
    ];
    let raw = prop_oneof![
        4 => Just(Vec::new()),
        1 => proptest::collection::vec(any::<u8>(), 0..512),
    ];
    let ring = proptest::collection::vec(prop_oneof![4 => 0u16..16, 1 => any::<u16>()], 0..20);
    let steps = proptest::collection::vec(prop_oneof![4 => 0u16..20, 1 => any::<u16>()], 1..4);
    let shape = (
        1usize..5,
        prop_oneof![Just(0u32), Just(1), Just(4), Just(8), any::<u32>()],
        prop_oneof![4 => 0u64..80, 1 => any::<u64>()],
    );
    let shapes = prop_oneof![
        1 => Just(Vec::new()),
        3 => proptest::collection::vec(shape, 1..6),
    ];
    (
        (num, addrs),
        proptest::collection::vec(desc(), 0..24),
        raw,
        ring,
        steps,
        shapes,
    )
        .prop_map(
            |((num, addrs), descs, raw_table, ring, idx_steps, shapes)| QueueCase {
                num,
                addrs,
                descs,
                raw_table,
                ring,
                idx_steps,
                shapes,
            },
        )
}

fn case(queues: usize) -> impl Strategy<Value = Case> {
    let header = (
        0u64..MEM_SIZE,
        prop_oneof![Just(0u32), Just(1), Just(4), Just(8), any::<u32>()],
        prop_oneof![0u64..80, any::<u64>()],
    );
    let frame = proptest::collection::vec(any::<u8>(), 0..2000);
    (
        proptest::collection::vec(queue_case(), queues),
        proptest::collection::vec(header, 0..8),
        proptest::collection::vec(frame, 0..6),
        any::<u8>(),
    )
        .prop_map(|(queues, headers, frames, data_seed)| Case {
            queues,
            headers,
            frames,
            data_seed,
        })
}

/// Where queue `i` lies: the case's addresses, or a standard layout.
fn addresses(i: usize, q: &QueueCase) -> (u64, u64, u64) {
    q.addrs.unwrap_or_else(|| {
        let size = u16::try_from(q.num)
            .ok()
            .filter(|s| s.is_power_of_two() && *s <= 256)
            .unwrap_or(256);
        let l = QueueLayout::new(0x1000 + 0x3000 * i as u64, size);
        (l.desc, l.avail, l.used)
    })
}

/// Lays out the case in fresh guest memory.
fn build_memory(case: &Case) -> GuestMemoryMmap {
    let mem = QueueLayout::memory(MEM_SIZE as usize);
    let data: Vec<u8> = (0..MEM_SIZE - DATA_START)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(case.data_seed))
        .collect();
    mem.write_slice(&data, GuestAddress(DATA_START)).unwrap();
    for &(at, kind, sector) in &case.headers {
        if at + 16 <= MEM_SIZE {
            write_blk_header(&mem, at, kind, sector);
        }
    }
    for (i, q) in case.queues.iter().enumerate() {
        let (desc, avail, _) = addresses(i, q);
        let (descs, ring) = shaped(&mem, q);
        for (n, d) in descs.iter().enumerate() {
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&d.addr.to_le_bytes());
            raw[8..12].copy_from_slice(&d.len.to_le_bytes());
            raw[12..14].copy_from_slice(&d.flags.to_le_bytes());
            raw[14..16].copy_from_slice(&d.next.to_le_bytes());
            let _ = mem.write_slice(&raw, GuestAddress(desc.wrapping_add(16 * n as u64)));
        }
        let after = desc.wrapping_add(16 * descs.len() as u64);
        let _ = mem.write_slice(&q.raw_table, GuestAddress(after));
        for (n, head) in ring.iter().enumerate() {
            let at = avail.wrapping_add(4 + 2 * n as u64);
            let _ = mem.write_obj(*head, GuestAddress(at));
        }
    }
    mem
}

/// The case's descriptors with its chain shapes imposed (header, data, status — with
/// the block header planted where the first descriptor points), and the avail ring
/// with those chains first.
fn shaped(mem: &GuestMemoryMmap, q: &QueueCase) -> (Vec<Desc>, Vec<u16>) {
    let mut descs = q.descs.clone();
    let mut ring = Vec::new();
    let mut start = 0;
    for &(len, kind, sector) in &q.shapes {
        if start + len > descs.len() {
            break;
        }
        ring.push(start as u16);
        for j in 0..len {
            let d = &mut descs[start + j];
            let last = j + 1 == len;
            d.next = (start + j + 1) as u16;
            d.flags = if last {
                F_WRITE
            } else {
                F_NEXT | (d.flags & F_WRITE)
            };
            if j == 0 && !last {
                d.flags = F_NEXT;
                d.len = 16;
                if d.addr < MEM_SIZE - 16 {
                    write_blk_header(mem, d.addr, kind, sector);
                }
            } else if last && d.len > 0x800 {
                d.len = 1;
            } else if !last {
                d.len &= !511;
            }
        }
        start += len;
    }
    ring.extend_from_slice(&q.ring);
    (descs, ring)
}

fn clip(start: u64, len: u64) -> Range<u64> {
    start.min(MEM_SIZE)..start.saturating_add(len).min(MEM_SIZE)
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < a.end && b.start < b.end && a.start < b.end && b.start < a.end
}

fn read_desc(snapshot: &[u8], at: u64) -> Option<Desc> {
    let at = usize::try_from(at).ok()?;
    let raw = snapshot.get(at..at.checked_add(16)?)?;
    Some(Desc {
        addr: u64::from_le_bytes(raw[0..8].try_into().ok()?),
        len: u32::from_le_bytes(raw[8..12].try_into().ok()?),
        flags: u16::from_le_bytes(raw[12..14].try_into().ok()?),
        next: 0,
    })
}

/// The ranges the device may write (used rings, writable buffers), or `None` when a
/// writable range overlaps what the device reads as control data (tables, rings), so
/// that what it writes could change what it later reads.
fn writable_ranges(case: &Case, sizes: &[u16], snapshot: &[u8]) -> Option<Vec<Range<u64>>> {
    let mut allowed = Vec::new();
    let mut control = Vec::new();
    for (i, q) in case.queues.iter().enumerate() {
        let size = u64::from(sizes[i]);
        let (desc, avail, used) = addresses(i, q);
        allowed.push(clip(used, 6 + 8 * size));
        control.push(clip(desc, 16 * size));
        control.push(clip(avail, 6 + 2 * size));
        let mut tables = vec![(desc, size)];
        for n in 0..size {
            let Some(d) = read_desc(snapshot, desc.wrapping_add(16 * n)) else {
                continue;
            };
            if d.flags & F_INDIRECT != 0 {
                let entries = u64::from(d.len / 16).min(MEM_SIZE / 16);
                control.push(clip(d.addr, u64::from(d.len)));
                tables.push((d.addr, entries));
            }
        }
        for (table, entries) in tables {
            for n in 0..entries {
                let at = table.wrapping_add(16 * n);
                if let Some(d) = read_desc(snapshot, at) {
                    if d.flags & F_WRITE != 0 {
                        allowed.push(clip(d.addr, u64::from(d.len)));
                    }
                }
            }
        }
    }
    let clash = allowed
        .iter()
        .any(|a| control.iter().any(|c| overlaps(a, c)));
    // The avail indices are the harness's own writes (the driver's).
    for (i, q) in case.queues.iter().enumerate() {
        let (_, avail, _) = addresses(i, q);
        allowed.push(clip(avail.wrapping_add(2), 2));
    }
    (!clash).then_some(allowed)
}

fn snapshot(mem: &GuestMemoryMmap) -> Vec<u8> {
    let mut v = vec![0u8; MEM_SIZE as usize];
    mem.read_slice(&mut v, GuestAddress(0)).unwrap();
    v
}

/// Drives one device through the transport as the case's driver would.
fn drive<D: VirtioDevice>(case: &Case, mem: &GuestMemoryMmap, device: D) -> (Vec<u16>, bool) {
    let irq = Arc::new(CountingInterrupt::default());
    let mut t = MmioTransport::new(mem.clone(), device, irq).unwrap();
    let w = |t: &mut MmioTransport<D>, off: u64, v: u32| t.write(off, &v.to_le_bytes());
    w(&mut t, STATUS, 1);
    w(&mut t, STATUS, 3);
    w(&mut t, DRIVER_FEATURES_SEL, 1);
    w(&mut t, DRIVER_FEATURES, 1);
    w(&mut t, STATUS, 0xb);
    let mut sizes = Vec::new();
    for (i, q) in case.queues.iter().enumerate() {
        let (desc, avail, used) = addresses(i, q);
        w(&mut t, QUEUE_SEL, i as u32);
        w(&mut t, QUEUE_NUM, q.num);
        for (reg, value) in QUEUE_ADDR.iter().zip(
            [desc, avail, used]
                .iter()
                .flat_map(|a| [*a as u32, (*a >> 32) as u32]),
        ) {
            w(&mut t, *reg, value);
        }
        w(&mut t, QUEUE_READY, 1);
        let mut ready = [0u8; 4];
        t.read(QUEUE_READY, &mut ready);
        let aligned = desc % 16 == 0 && avail % 2 == 0 && used % 4 == 0;
        let valid = u16::try_from(q.num)
            .ok()
            .filter(|s| aligned && *s != 0 && s.is_power_of_two() && *s <= 256);
        assert_eq!(ready[0] == 1, valid.is_some(), "queue {i} num {}", q.num);
        sizes.push(valid.unwrap_or(0));
    }
    w(&mut t, STATUS, 0xf);
    let active = t.device().is_activated();
    let steps = case
        .queues
        .iter()
        .map(|q| q.idx_steps.len())
        .max()
        .unwrap_or(0);
    for step in 0..steps {
        for (i, q) in case.queues.iter().enumerate() {
            let Some(&idx) = q.idx_steps.get(step) else {
                continue;
            };
            let (_, avail, _) = addresses(i, q);
            let _ = mem.write_obj(idx, GuestAddress(avail.wrapping_add(2)));
            if step % 2 == 0 {
                w(&mut t, QUEUE_NOTIFY, i as u32);
            } else {
                t.process_queue(i as u16);
            }
            t.process_backend();
        }
    }
    // Whatever happened, the transport's counters are readable and serializable.
    let _ = t.counters();
    (sizes, active)
}

fn check_untouched(case: &Case, before: &[u8], after: &[u8], sizes: &[u16]) {
    let Some(allowed) = writable_ranges(case, sizes, before) else {
        return;
    };
    for (addr, (b, a)) in before.iter().zip(after).enumerate() {
        if b != a {
            let addr = addr as u64;
            assert!(
                allowed.iter().any(|r| r.contains(&addr)),
                "guest memory at {addr:#x} changed outside the used ring and writable buffers"
            );
        }
    }
}

fn disk() -> &'static tempfile::TempPath {
    static DISK: OnceLock<tempfile::TempPath> = OnceLock::new();
    DISK.get_or_init(|| {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(64 * 512).unwrap();
        file.into_temp_path()
    })
}

const CASE_DEADLINE: Duration = Duration::from_secs(5);

proptest! {
    #[test]
    fn block_survives_arbitrary_queues(case in case(1)) {
        let start = Instant::now();
        let mem = build_memory(&case);
        let before = snapshot(&mem);
        let blk = Block::open(disk(), false).unwrap();
        let (sizes, _) = drive(&case, &mem, blk);
        check_untouched(&case, &before, &snapshot(&mem), &sizes);
        prop_assert!(start.elapsed() < CASE_DEADLINE, "case took {:?}", start.elapsed());
    }

    #[test]
    fn net_survives_arbitrary_queues(case in case(2)) {
        let start = Instant::now();
        let mem = build_memory(&case);
        let before = snapshot(&mem);
        let mut tap = FakeTap::default();
        tap.rx.extend(case.frames.iter().cloned());
        let net = Net::new(tap, [0x52, 0x54, 0, 0, 0, 1]);
        let (sizes, _) = drive(&case, &mem, net);
        check_untouched(&case, &before, &snapshot(&mem), &sizes);
        prop_assert!(start.elapsed() < CASE_DEADLINE, "case took {:?}", start.elapsed());
    }
}
