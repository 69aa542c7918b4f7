//! The virtio-blk device path without a guest: a fake driver fills the queue in guest
//! memory with sequential requests and calls the device's processing function, over a
//! file (on tmpfs, /dev/shm, by default). Prints MB/s (10^6 bytes per second) for
//! sequential reads and writes of 4 KiB and 64 KiB; `bench/blk.sh` compares with `dd`.
//!
//! ```text
//! cargo bench -p vmctl-runtime --bench blk -- [FILE [SIZE_MIB [read|write [BS_KIB]]]]
//! ```
//!
//! Without the last two, every combination runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
use vm_memory::{Bytes, GuestAddress};
use vmctl_runtime::vmm::devices::virtio::block::Block;
use vmctl_runtime::vmm::devices::virtio::testing::{
    write_blk_header, CountingInterrupt, QueueLayout,
};
use vmctl_runtime::vmm::devices::virtio::{IrqTrigger, VirtioDevice};

const QUEUE_SIZE: u16 = 256;
/// Requests per notification: three descriptors each, as Linux sends them.
const BATCH: u64 = 64;
const HEADERS: u64 = 0x10000;
const STATUS: u64 = 0x20000;
const DATA: u64 = 0x100000;
const ROUNDS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let path = PathBuf::from(
        args.first()
            .map_or("/dev/shm/vmctl-blk-bench.img", String::as_str),
    );
    let size_mib: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let size = size_mib << 20;
    let created = !path.exists();
    if created {
        let file = std::fs::File::create(&path).expect("create bench file");
        file.set_len(size).expect("size bench file");
        // Touch every page so reads hit memory, as dd's will.
        let zeros = vec![1u8; 1 << 20];
        for i in 0..size_mib {
            std::os::unix::fs::FileExt::write_all_at(&file, &zeros, i << 20).expect("fill");
        }
    }

    let ops: Vec<(&str, u32)> = [("read", VIRTIO_BLK_T_IN), ("write", VIRTIO_BLK_T_OUT)]
        .into_iter()
        .filter(|(name, _)| args.get(2).is_none_or(|op| op == name))
        .collect();
    let sizes: Vec<u64> = [4u64, 64]
        .into_iter()
        .filter(|bs| args.get(3).is_none_or(|want| want.parse() == Ok(*bs)))
        .map(|bs| bs * 1024)
        .collect();
    println!("file {} ({} MiB)", path.display(), size_mib);
    for &(name, kind) in &ops {
        for &bs in &sizes {
            let best = (0..ROUNDS)
                .map(|_| pass(&path, size, bs, kind))
                .min()
                .expect("rounds");
            let mbs = size as f64 / best.as_secs_f64() / 1e6;
            println!(
                "device {name:5} bs={}k {mbs:8.0} MB/s  ({:.3} s for {size_mib} MiB, best of {ROUNDS})",
                bs / 1024,
                best.as_secs_f64()
            );
        }
    }
    if created {
        let _ = std::fs::remove_file(&path);
    }
}

/// One sequential pass over the file with requests of `bs` bytes.
fn pass(path: &std::path::Path, size: u64, bs: u64, kind: u32) -> Duration {
    let mem = QueueLayout::memory((DATA + BATCH * bs) as usize);
    let layout = QueueLayout::new(0x1000, QUEUE_SIZE);
    let mut blk = Block::open(path, false).expect("open bench file");
    let irq = IrqTrigger::new(Arc::new(CountingInterrupt::default()));
    blk.activate(
        mem.clone(),
        vec![layout.queue(&mem)],
        blk.avail_features(),
        irq,
    )
    .expect("activate");

    // The chains never change: request i uses descriptors 3i..3i+2.
    let writable = kind == VIRTIO_BLK_T_IN;
    let heads: Vec<u16> = (0..BATCH)
        .map(|i| {
            let bufs = [
                (HEADERS + 16 * i, 16, false),
                (DATA + bs * i, bs as u32, writable),
                (STATUS + i, 1, true),
            ];
            layout.write_chain(&mem, (3 * i) as u16, &bufs)
        })
        .collect();

    let sectors_per_req = bs / 512;
    let requests = size / bs;
    let start = Instant::now();
    let mut sector = 0;
    let mut done = 0;
    while done < requests {
        let n = BATCH.min(requests - done);
        for i in 0..n {
            write_blk_header(&mem, HEADERS + 16 * i, kind, sector);
            sector += sectors_per_req;
        }
        layout.publish(&mem, &heads[..n as usize]);
        blk.process_queue(0);
        done += n;
    }
    let elapsed = start.elapsed();

    let c = blk.counters();
    assert_eq!(c.requests, requests, "every request served: {c:?}");
    let status: u8 = mem.read_obj(GuestAddress(STATUS)).expect("status");
    assert_eq!(status, 0);
    elapsed
}
