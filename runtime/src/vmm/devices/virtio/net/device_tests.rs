//! Tests of the NIC against an in-memory tap, with good and hostile queues.

use std::sync::Arc;

use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::vmm::devices::virtio::testing::{CountingInterrupt, FakeTap, QueueLayout, F_NEXT};

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const BUF: u64 = 0x10000;
const MEM: usize = 0x80000;

struct Harness {
    mem: GuestMemoryMmap,
    rxq: QueueLayout,
    txq: QueueLayout,
    net: Net<FakeTap>,
    line: Arc<CountingInterrupt>,
    rx_next: u16,
    tx_next: u16,
}

/// A frame as the tap delivers it: a zeroed header and `body`.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend_from_slice(body);
    f
}

fn harness() -> Harness {
    let mem = QueueLayout::memory(MEM);
    let rxq = QueueLayout::new(0x1000, 16);
    let txq = QueueLayout::new(0x4000, 16);
    let mut net = Net::new(FakeTap::default(), MAC);
    let line = Arc::new(CountingInterrupt::default());
    net.activate(
        mem.clone(),
        vec![rxq.queue(&mem), txq.queue(&mem)],
        net.avail_features(),
        IrqTrigger::new(line.clone()),
    )
    .unwrap();
    Harness {
        mem,
        rxq,
        txq,
        net,
        line,
        rx_next: 0,
        tx_next: 0,
    }
}

impl Harness {
    /// Adds a receive chain of `bufs` and notifies queue 0.
    fn add_rx(&mut self, bufs: &[(u64, u32, bool)]) {
        let head = self.rxq.write_chain(&self.mem, self.rx_next, bufs);
        self.rx_next = (self.rx_next + bufs.len() as u16) % 16;
        self.rxq.publish(&self.mem, &[head]);
        self.net.process_queue(RX_QUEUE);
    }

    /// Queues a transmit chain of `bufs` and notifies queue 1.
    fn send(&mut self, bufs: &[(u64, u32, bool)]) {
        let head = self.txq.write_chain(&self.mem, self.tx_next, bufs);
        self.tx_next = (self.tx_next + bufs.len() as u16) % 16;
        self.txq.publish(&self.mem, &[head]);
        self.net.process_queue(TX_QUEUE);
    }

    fn guest(&self, at: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(at)).unwrap();
        v
    }

    /// The frame the guest sees in buffer `at` (num_buffers = 1 in its header).
    fn expect_rx(&self, at: u64, sent: &[u8]) {
        let mut want = sent.to_vec();
        want[10] = 1;
        assert_eq!(self.guest(at, want.len()), want);
    }

    /// A good frame still goes out (after something hostile).
    fn assert_sends(&mut self) {
        let before = self.net.tap().tx.len();
        let f = frame(b"still-alive");
        self.mem
            .write_slice(&f, GuestAddress(BUF + 0x8000))
            .unwrap();
        self.send(&[(BUF + 0x8000, f.len() as u32, false)]);
        assert_eq!(self.net.tap().tx.len(), before + 1);
        assert_eq!(self.net.tap().tx.last().unwrap(), &f);
    }
}

#[test]
fn features_and_mac() {
    let h = harness();
    assert_eq!(h.net.device_type(), VIRTIO_ID_NET);
    assert_ne!(h.net.avail_features() & (1 << VIRTIO_NET_F_MAC), 0);
    assert_ne!(h.net.avail_features() & VIRTIO_F_VERSION_1, 0);
    assert_eq!(&h.net.config_space()[..6], &MAC);
    assert_eq!(h.net.mac(), MAC);
    assert_eq!(h.net.backend_fd(), None);
}

#[test]
fn transmit_gathers_the_chain() {
    let mut h = harness();
    let f = frame(b"\xff\xff\xff\xff\xff\xff\x52\x54\x00\x12\x34\x56\x88\xb5hello");
    h.mem
        .write_slice(&f[..VNET_HDR_LEN], GuestAddress(BUF))
        .unwrap();
    h.mem
        .write_slice(&f[VNET_HDR_LEN..], GuestAddress(BUF + 0x1000))
        .unwrap();
    h.send(&[
        (BUF, VNET_HDR_LEN as u32, false),
        (BUF + 0x1000, (f.len() - VNET_HDR_LEN) as u32, false),
    ]);
    assert_eq!(h.net.tap().tx, vec![f.clone()]);
    assert_eq!(h.txq.used_idx(&h.mem), 1);
    assert_eq!(h.txq.used_elem(&h.mem, 0), (0, 0));
    assert_eq!(h.line.count(), 1);
    let c = h.net.counters();
    assert_eq!(
        (c.requests, c.bytes_from_guest, c.bad_total()),
        (1, f.len() as u64, 0)
    );
}

#[test]
fn receive_into_a_buffer() {
    let mut h = harness();
    let f = frame(b"from-the-bridge");
    h.net.tap_mut().rx.push_back(f.clone());
    h.add_rx(&[(BUF, 1526, true)]);
    h.expect_rx(BUF, &f);
    assert_eq!(h.rxq.used_elem(&h.mem, 0), (0, f.len() as u32));
    assert_eq!(h.line.count(), 1);
    // The tap becomes readable again.
    let g = frame(b"second");
    h.net.tap_mut().rx.push_back(g.clone());
    h.add_rx(&[(BUF + 0x1000, 100, true), (BUF + 0x2000, 1426, true)]);
    h.expect_rx(BUF + 0x1000, &g);
    assert_eq!(h.net.counters().requests, 2);
}

#[test]
fn receive_spreads_over_small_buffers() {
    let mut h = harness();
    let f = frame(&[7u8; 40]);
    h.net.tap_mut().rx.push_back(f.clone());
    h.add_rx(&[
        (BUF, 12, true),
        (BUF + 0x1000, 20, true),
        (BUF + 0x2000, 20, true),
    ]);
    assert_eq!(h.guest(BUF + 0x1000, 20), vec![7u8; 20]);
    assert_eq!(h.guest(BUF + 0x2000, 20), vec![7u8; 20]);
    assert_eq!(h.rxq.used_elem(&h.mem, 0).1, 52);
}

#[test]
fn no_buffers_means_no_tap_reads() {
    let mut h = harness();
    for i in 0..3u8 {
        h.net.tap_mut().rx.push_back(frame(&[i; 20]));
    }
    // The tap is readable, but the guest gave no buffers: nothing is read, however
    // often the event loop calls.
    for _ in 0..5 {
        h.net.process_backend();
    }
    assert_eq!(h.net.tap().reads, 0);
    assert_eq!(h.net.tap().rx.len(), 3);
    // One buffer: one frame taken, the others stay in the tap.
    h.add_rx(&[(BUF, 1526, true)]);
    assert_eq!(h.net.tap().reads, 1);
    assert_eq!(h.net.tap().rx.len(), 2);
    h.net.process_backend();
    assert_eq!(h.net.tap().reads, 1);
    // Two more buffers take the rest, then one read finds the tap empty.
    h.add_rx(&[(BUF + 0x1000, 1526, true)]);
    h.add_rx(&[(BUF + 0x2000, 1526, true)]);
    h.add_rx(&[(BUF + 0x3000, 1526, true)]);
    assert_eq!(h.net.tap().rx.len(), 0);
    assert_eq!(h.net.tap().reads, 4);
    h.expect_rx(BUF + 0x2000, &frame(&[2u8; 20]));
    assert_eq!(h.rxq.used_idx(&h.mem), 3);
}

#[test]
fn bad_receive_chain_keeps_the_frame() {
    let mut h = harness();
    let f = frame(b"precious");
    h.net.tap_mut().rx.push_back(f.clone());
    // A device-readable buffer on the receive queue, then one outside memory.
    h.add_rx(&[(BUF, 1526, false)]);
    h.add_rx(&[(MEM as u64 - 10, 1526, true)]);
    assert!(h.net.rx_deferred());
    assert_eq!(h.rxq.used_idx(&h.mem), 2);
    assert_eq!(h.rxq.used_elem(&h.mem, 1).1, 0);
    assert_eq!(h.net.counters().bad_chains, 2);
    h.add_rx(&[(BUF + 0x1000, 1526, true)]);
    h.expect_rx(BUF + 0x1000, &f);
    assert!(!h.net.rx_deferred());
    assert_eq!(h.net.tap().reads, 1);
}

#[test]
fn frame_too_big_for_the_buffer_is_dropped() {
    let mut h = harness();
    h.net.tap_mut().rx.push_back(frame(&[1u8; 100]));
    h.add_rx(&[(BUF, 64, true)]);
    assert_eq!(h.rxq.used_elem(&h.mem, 0).1, 0);
    assert_eq!(h.net.counters().frames_dropped, 1);
    assert!(!h.net.rx_deferred());
}

#[test]
fn hostile_transmit_chains() {
    let mut h = harness();
    let f = frame(b"x");
    h.mem.write_slice(&f, GuestAddress(BUF)).unwrap();
    // Head-only chain with only a header: not a frame.
    h.send(&[(BUF, VNET_HDR_LEN as u32, false)]);
    // Too long.
    h.send(&[(BUF, MAX_FRAME as u32 + 1, false)]);
    assert_eq!(h.net.counters().bad_requests, 2);
    // A writable buffer, a buffer outside memory.
    h.send(&[(BUF, f.len() as u32, true)]);
    h.send(&[(u64::MAX - 8, 100, false)]);
    // A loop.
    h.txq.write_desc(&h.mem, 4, BUF, 13, F_NEXT, 5);
    h.txq.write_desc(&h.mem, 5, BUF, 13, F_NEXT, 4);
    h.txq.publish(&h.mem, &[4]);
    h.net.process_queue(TX_QUEUE);
    h.tx_next = 6;
    let c = h.net.counters();
    assert_eq!(c.bad_chains, 3);
    assert!(h.net.tap().tx.is_empty());
    assert_eq!(h.txq.used_idx(&h.mem), 5, "every chain is given back");
    h.assert_sends();
}

#[test]
fn transmit_avail_index_far_ahead() {
    let mut h = harness();
    h.txq.set_avail_idx(&h.mem, 1000);
    h.net.process_queue(TX_QUEUE);
    assert_eq!(h.net.counters().invalid_avail_idx, 1);
    h.txq.set_avail_idx(&h.mem, 0);
    h.assert_sends();
}

#[test]
fn receive_avail_index_far_ahead() {
    let mut h = harness();
    h.net.tap_mut().rx.push_back(frame(b"x"));
    h.rxq.set_avail_idx(&h.mem, 17);
    h.net.process_backend();
    assert_eq!(h.net.counters().invalid_avail_idx, 1);
    assert_eq!(h.net.tap().reads, 0);
}

#[test]
fn full_tap_drops_frames() {
    let mut h = harness();
    h.net.tap_mut().write_error = Some(io::ErrorKind::WouldBlock);
    let f = frame(b"dropped");
    h.mem.write_slice(&f, GuestAddress(BUF)).unwrap();
    h.send(&[(BUF, f.len() as u32, false)]);
    h.net.tap_mut().write_error = Some(io::ErrorKind::Other);
    h.send(&[(BUF, f.len() as u32, false)]);
    let c = h.net.counters();
    assert_eq!((c.frames_dropped, c.io_errors), (2, 1));
    h.net.tap_mut().write_error = None;
    h.assert_sends();
}

#[test]
fn frames_waiting_at_activation_are_delivered() {
    let mem = QueueLayout::memory(MEM);
    let rxq = QueueLayout::new(0x1000, 16);
    let txq = QueueLayout::new(0x4000, 16);
    let head = rxq.write_chain(&mem, 0, &[(BUF, 1526, true)]);
    rxq.publish(&mem, &[head]);
    let mut net = Net::new(FakeTap::default(), MAC);
    net.tap_mut().rx.push_back(frame(b"early"));
    let irq = IrqTrigger::new(Arc::new(CountingInterrupt::default()));
    net.activate(mem.clone(), vec![rxq.queue(&mem), txq.queue(&mem)], 0, irq)
        .unwrap();
    assert_eq!(rxq.used_idx(&mem), 1);
}

#[test]
fn activation_needs_two_ready_queues() {
    let mem = QueueLayout::memory(MEM);
    let irq = IrqTrigger::new(Arc::new(CountingInterrupt::default()));
    let mut net = Net::new(FakeTap::default(), MAC);
    let one = vec![QueueLayout::new(0x1000, 16).queue(&mem)];
    assert_eq!(
        net.activate(mem.clone(), one, 0, irq.clone()),
        Err(ActivateError::QueueCount { got: 1, want: 2 })
    );
    let rx = QueueLayout::new(0x1000, 16).queue(&mem);
    let tx = <Queue as QueueT>::new(16).unwrap();
    assert_eq!(
        net.activate(mem.clone(), vec![rx, tx], 0, irq),
        Err(ActivateError::QueueNotUsable { index: 1 })
    );
    assert!(!net.is_activated());
}

#[test]
fn reset_drops_the_deferred_frame() {
    let mut h = harness();
    h.net.tap_mut().rx.push_back(frame(b"x"));
    h.add_rx(&[(BUF, 1526, false)]);
    assert!(h.net.rx_deferred());
    h.net.reset();
    assert!(!h.net.rx_deferred());
    assert!(!h.net.is_activated());
    h.net.process_backend();
    h.net.process_queue(TX_QUEUE);
}

/// An announcement is one RARP request of the NIC's MAC on the tap, active or not,
/// touching no queue; a tap that refuses it counts a dropped frame, not an announcement.
#[test]
fn an_announcement_is_a_rarp_of_the_mac_on_the_tap() {
    let mut net = Net::new(FakeTap::default(), MAC);
    net.announce();
    let mut h = harness();
    h.net.announce();
    h.net.announce();
    for (tap, n) in [(net.tap(), 1), (h.net.tap(), 2)] {
        assert_eq!(tap.tx.len(), n);
        for f in &tap.tx {
            assert_eq!(f[..], super::announce::rarp_frame(MAC)[..]);
        }
    }
    assert_eq!(net.counters().announcements, 1);
    let c = h.net.counters();
    assert_eq!((c.announcements, c.requests, c.bytes_from_guest), (2, 0, 0));
    assert_eq!(h.line.count(), 0, "no interrupt");

    h.net.tap_mut().write_error = Some(std::io::ErrorKind::WouldBlock);
    h.net.announce();
    h.net.tap_mut().write_error = Some(std::io::ErrorKind::Other);
    h.net.announce();
    let c = h.net.counters();
    assert_eq!((c.announcements, c.frames_dropped, c.io_errors), (2, 2, 1));
}
