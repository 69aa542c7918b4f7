//! Descriptor chains as the devices see them: taken from the avail ring, checked, and
//! given back on the used ring — with every guest mistake counted, never trusted.
//!
//! rust-vmm's `virtio-queue` walks the chains (it stops loops, chains longer than the
//! queue, bad indirect tables); it ends a broken chain silently, so a chain is whole here
//! only when its last descriptor has no NEXT flag. Every buffer is also checked against
//! guest memory before a device looks at it.

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryBackend;

use super::{DeviceCounters, GuestMemoryMmap, IrqTrigger, IrqType};

/// Why a chain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainError {
    /// No descriptor at all: the head index lies outside the queue, or the table outside
    /// guest memory.
    Empty,
    /// The chain ended on a descriptor that still had NEXT (a loop, a `next` outside the
    /// queue, a broken indirect table, more than 4 GiB), or it is longer than
    /// [`MAX_CHAIN_LEN`].
    Truncated,
    /// A buffer lies (partly) outside guest memory.
    OutsideMemory,
}

/// The longest chain served. Split queues hold at most 256 descriptors here, but an
/// indirect table may hold 65535: a guest could make every chain that long just to burn
/// host time. Linux's block and net drivers stay far below this.
pub(crate) const MAX_CHAIN_LEN: usize = 1024;

/// How many chains the guest made available, or `None` (counted) when its avail index
/// is more than the queue size ahead of what the device consumed.
pub(crate) fn pending(
    queue: &Queue,
    mem: &GuestMemoryMmap,
    counters: &mut DeviceCounters,
) -> Option<u16> {
    let avail = match queue.avail_idx(mem, Ordering::Acquire) {
        Ok(idx) => idx,
        Err(_) => {
            counters.invalid_avail_idx += 1;
            return None;
        }
    };
    let ahead = (avail - Wrapping(queue.next_avail())).0;
    if ahead > queue.size() {
        counters.invalid_avail_idx += 1;
        return None;
    }
    Some(ahead)
}

/// Pops the next available chain into `descs`; returns its head index and whether it is
/// well formed. `None` when the avail ring is empty (or unreadable).
pub(crate) fn pop(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    descs: &mut Vec<Descriptor>,
) -> Option<(u16, Result<(), ChainError>)> {
    let chain = queue.pop_descriptor_chain(mem)?;
    let head = chain.head_index();
    descs.clear();
    descs.extend(chain.take(MAX_CHAIN_LEN + 1));
    if descs.len() > MAX_CHAIN_LEN {
        return Some((head, Err(ChainError::Truncated)));
    }
    Some((head, check(mem, descs)))
}

fn check(mem: &GuestMemoryMmap, descs: &[Descriptor]) -> Result<(), ChainError> {
    let last = descs.last().ok_or(ChainError::Empty)?;
    if last.has_next() {
        return Err(ChainError::Truncated);
    }
    for d in descs {
        if d.len() > 0 && !GuestMemoryBackend::check_range(mem, d.addr(), d.len() as usize) {
            return Err(ChainError::OutsideMemory);
        }
    }
    Ok(())
}

/// Puts chain `head` on the used ring with `len` bytes written; counts a failure.
pub(crate) fn add_used(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    len: u32,
    counters: &mut DeviceCounters,
) -> bool {
    match queue.add_used(mem, head, len) {
        Ok(()) => true,
        Err(_) => {
            counters.used_ring_errors += 1;
            false
        }
    }
}

/// Interrupts the guest after used-ring updates, if the queue wants it.
pub(crate) fn notify(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    irq: &IrqTrigger,
    counters: &mut DeviceCounters,
) {
    // Without EVENT_IDX every update wants an interrupt; an unreadable used_event
    // still gets one rather than leaving the guest waiting.
    if queue.needs_notification(mem).unwrap_or(true) {
        match irq.trigger(IrqType::Vring) {
            Ok(()) => counters.interrupts += 1,
            Err(_) => counters.interrupt_errors += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::devices::virtio::testing::{QueueLayout, F_INDIRECT, F_NEXT, F_WRITE};

    fn setup() -> (GuestMemoryMmap, QueueLayout, Queue) {
        let mem = QueueLayout::memory(0x10000);
        let layout = QueueLayout::new(0x1000, 16);
        let queue = layout.queue(&mem);
        (mem, layout, queue)
    }

    #[test]
    fn good_chain_is_collected() {
        let (mem, l, mut q) = setup();
        l.write_desc(&mem, 0, 0x8000, 16, F_NEXT, 1);
        l.write_desc(&mem, 1, 0x9000, 1, F_WRITE, 0);
        l.publish(&mem, &[0]);
        let mut c = DeviceCounters::default();
        assert_eq!(pending(&q, &mem, &mut c), Some(1));
        let mut descs = Vec::new();
        let (head, ok) = pop(&mut q, &mem, &mut descs).unwrap();
        assert_eq!((head, ok), (0, Ok(())));
        assert_eq!(descs.len(), 2);
        assert!(pop(&mut q, &mem, &mut descs).is_none());
    }

    #[test]
    fn loop_is_truncated() {
        let (mem, l, mut q) = setup();
        l.write_desc(&mem, 0, 0x8000, 16, F_NEXT, 1);
        l.write_desc(&mem, 1, 0x9000, 16, F_NEXT, 0);
        l.publish(&mem, &[0]);
        let mut descs = Vec::new();
        let (_, res) = pop(&mut q, &mem, &mut descs).unwrap();
        assert_eq!(res, Err(ChainError::Truncated));
        assert!(descs.len() <= 16);
    }

    #[test]
    fn next_outside_queue_is_truncated() {
        let (mem, l, mut q) = setup();
        l.write_desc(&mem, 0, 0x8000, 16, F_NEXT, 999);
        l.publish(&mem, &[0]);
        let mut descs = Vec::new();
        assert_eq!(
            pop(&mut q, &mem, &mut descs).unwrap().1,
            Err(ChainError::Truncated)
        );
    }

    #[test]
    fn head_outside_queue_is_empty() {
        let (mem, l, mut q) = setup();
        l.publish(&mem, &[40]);
        let mut descs = Vec::new();
        assert_eq!(
            pop(&mut q, &mem, &mut descs).unwrap(),
            (40, Err(ChainError::Empty))
        );
        let mut c = DeviceCounters::default();
        assert!(!add_used(&mut q, &mem, 40, 0, &mut c));
        assert_eq!(c.used_ring_errors, 1);
    }

    #[test]
    fn buffer_outside_memory_is_refused() {
        let (mem, l, mut q) = setup();
        l.write_desc(&mem, 0, 0xfff0, 0x20, 0, 0);
        l.write_desc(&mem, 1, u64::MAX - 4, 0x20, 0, 0);
        l.publish(&mem, &[0, 1]);
        let mut descs = Vec::new();
        for _ in 0..2 {
            assert_eq!(
                pop(&mut q, &mem, &mut descs).unwrap().1,
                Err(ChainError::OutsideMemory)
            );
        }
    }

    #[test]
    fn overlong_indirect_chain_is_refused() {
        let (mem, l, mut q) = setup();
        // An indirect table of 2000 chained descriptors at 0x2000...
        let long = QueueLayout::new(0x2000, 2048);
        for i in 0..2000u16 {
            let flags = if i < 1999 { F_NEXT } else { 0 };
            long.write_desc(&mem, i, 0x1800, 1, flags, i + 1);
        }
        l.write_desc(&mem, 0, 0x2000, 2000 * 16, F_INDIRECT, 0);
        // ... and one of 1024, just short enough, at 0xa000.
        let short = QueueLayout::new(0xa000, 1024);
        for i in 0..1024u16 {
            let flags = if i < 1023 { F_NEXT } else { 0 };
            short.write_desc(&mem, i, 0x1800, 1, flags, i + 1);
        }
        l.write_desc(&mem, 1, 0xa000, 1024 * 16, F_INDIRECT, 0);
        l.publish(&mem, &[0, 1]);
        let mut descs = Vec::new();
        let (_, long) = pop(&mut q, &mem, &mut descs).unwrap();
        assert_eq!(long, Err(ChainError::Truncated));
        let (_, ok) = pop(&mut q, &mem, &mut descs).unwrap();
        assert_eq!((ok, descs.len()), (Ok(()), 1024));
    }

    #[test]
    fn avail_index_too_far_ahead_is_counted() {
        let (mem, l, q) = setup();
        l.set_avail_idx(&mem, 17);
        let mut c = DeviceCounters::default();
        assert_eq!(pending(&q, &mem, &mut c), None);
        assert_eq!(c.invalid_avail_idx, 1);
        l.set_avail_idx(&mem, 16);
        assert_eq!(pending(&q, &mem, &mut c), Some(16));
    }
}
