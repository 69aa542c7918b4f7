//! virtio-net: read the MAC, broadcast a frame carrying the guest's name (again every
//! RESEND_MS during the listening window), and print each distinct sender heard, and
//! each RARP announcement (a VMM's, for a guest that moved). With `testguest.chat`
//! the first NIC goes on sending and hearing while the guest counts ([`Chat`]).
//! Queue 0 receives (RX_BUFS one-descriptor buffers), queue 1 transmits (a two-
//! descriptor chain: the zeroed 12-byte virtio_net_hdr_v1, then the frame).
//!
//! Frame (60 bytes, the Ethernet minimum without FCS):
//! dst ff:ff:ff:ff:ff:ff, src = own MAC, ethertype 0x88b5, then `vmctl-testguest`
//! (15 bytes), one byte name length (0–64), the name, zero padding.

use crate::clock;
use crate::io::{fill, phys_slice, rd8, wr8};
use wire::Rarp;
use crate::report::Report;
use crate::serial;
use crate::virtio::{self, Device, Queue, DESC_F_NEXT, DESC_F_WRITE};

pub mod cmdline_ip;
pub mod dhcp;
pub mod stack;
pub mod wire;

/// NICs the guest drives (more are reported as a failure).
pub const MAX_NICS: usize = 4;

const F_MAC: u64 = 1 << 5;

/// virtio_net_hdr_v1 (with VIRTIO_F_VERSION_1 the header always has num_buffers).
const HDR_LEN: u64 = 12;
const RX_BUFS: u16 = 8;
/// Receive buffer size: header + a 1514-byte frame (+ a VLAN tag) fits.
const BUF: u64 = 2048;
/// The frame's offset in the transmit buffer (the header is at 0).
const TX_FRAME: u64 = 64;

pub const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
pub const MAGIC: &[u8] = b"vmctl-testguest";
pub const MAX_NAME: usize = 64;
/// Offset of the name length byte in the frame; the name follows.
const NAME_LEN_AT: u64 = 14 + 15;
const FRAME_LEN: u64 = 60;

/// How often the frame is sent during the listening window.
const RESEND_MS: u64 = 300;
/// How long a transmission may take to come back on the used ring.
const TX_TIMEOUT_MS: u64 = 1000;
/// Distinct senders remembered per NIC (later ones are printed every time).
const MAX_SEEN: usize = 16;
/// `testguest.chat`: the senders heard are forgotten every this many ticks (1 s), so
/// one still heard is printed again.
const CHAT_FORGET_TICKS: u64 = 10;

#[repr(C, align(4096))]
struct Buffers {
    rx: [[[u8; BUF as usize]; RX_BUFS as usize]; MAX_NICS],
    tx: [[u8; 256]; MAX_NICS],
    seen: [[[u8; 1 + MAX_NAME]; MAX_SEEN]; MAX_NICS],
}

/// Not zeroed at entry (.noinit): what is read is written first.
#[link_section = ".noinit.virtio_net"]
static mut BUFFERS: Buffers = Buffers {
    rx: [[[0; BUF as usize]; RX_BUFS as usize]; MAX_NICS],
    tx: [[0; 256]; MAX_NICS],
    seen: [[[0; 1 + MAX_NAME]; MAX_SEEN]; MAX_NICS],
};

fn rx_buf(nic: usize, i: u64) -> u64 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of!(BUFFERS.rx[nic]) as u64 + i * BUF }
}
fn tx_buf(nic: usize) -> u64 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of!(BUFFERS.tx[nic]) as u64 }
}
fn seen_entry(nic: usize, i: usize) -> u64 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of!(BUFFERS.seen[nic][i]) as u64 }
}

pub struct Nic {
    dev: Device,
    n: usize,
    rx: Queue,
    tx: Queue,
    pub mac: [u8; 6],
    /// The name frame's length (descriptor 1 is pointed at it before each send).
    frame_len: u32,
    sent: u32,
    seen: usize,
}

/// `aa:bb:cc:dd:ee:ff`, inside a line.
fn print_mac(mac: &[u8; 6]) {
    for (i, &b) in mac.iter().enumerate() {
        if i != 0 {
            serial::byte(b':');
        }
        serial::hex(u64::from(b), 2);
    }
}

/// Sets NIC number `n` up, prints `nic<n> mac=…`, builds its frame and posts its
/// receive buffers.
pub fn init(dev: &Device, n: usize, name: &[u8], report: &mut Report) -> Option<Nic> {
    let features = dev.begin(F_MAC, report)?;
    let (Some(mut rx), Some(tx)) = (dev.queue(0, 1 + 2 * n, report), dev.queue(1, 2 + 2 * n, report)) else {
        dev.failed();
        return None;
    };
    if !dev.driver_ok(report) {
        return None;
    }
    let mut mac = [0x02, 0, 0, 0, 0, n as u8];
    if features & F_MAC != 0 && dev.size >= virtio::CONFIG + 6 {
        for (i, b) in mac.iter_mut().enumerate() {
            *b = dev.config8(i as u64);
        }
    } else {
        virtio::fail(report, dev.base, b"no MAC (VIRTIO_NET_F_MAC not offered); using 02:00:00:00:00:<n>");
    }
    serial::begin();
    serial::bytes(b"nic");
    serial::dec(n as u64);
    serial::bytes(b" mac=");
    print_mac(&mac);
    serial::end();

    // The transmit chain: header (zeroed), then the frame.
    let t = tx_buf(n);
    fill(t, 0, TX_FRAME + FRAME_LEN);
    let f = t + TX_FRAME;
    fill(f, 0xff, 6);
    for (i, &b) in mac.iter().chain(ETHERTYPE.iter()).chain(MAGIC.iter()).enumerate() {
        wr8(f + 6 + i as u64, b);
    }
    let name = &name[..name.len().min(MAX_NAME)];
    wr8(f + NAME_LEN_AT, name.len() as u8);
    for (i, &b) in name.iter().enumerate() {
        wr8(f + NAME_LEN_AT + 1 + i as u64, b);
    }
    let len = (NAME_LEN_AT + 1 + name.len() as u64).max(FRAME_LEN);
    tx.set_desc(0, t, HDR_LEN as u32, DESC_F_NEXT, 1);
    tx.set_desc(1, f, len as u32, 0, 0);

    let bufs = RX_BUFS.min(rx.size);
    for i in 0..bufs {
        rx.set_desc(i, rx_buf(n, u64::from(i)), BUF as u32, DESC_F_WRITE, 0);
        rx.publish(i);
    }
    rx.notify();
    Some(Nic { dev: *dev, n, rx, tx, mac, frame_len: len as u32, sent: 0, seen: 0 })
}

impl Nic {
    /// Sends the frame unless the previous transmission is still in flight.
    fn send(&mut self) {
        while self.tx.in_flight() > 0 && self.tx.pop_used().is_some() {}
        if self.tx.in_flight() == 0 {
            self.tx.set_desc(1, tx_buf(self.n) + TX_FRAME, self.frame_len, 0, 0);
            self.tx.publish(0);
            self.tx.notify();
            self.sent += 1;
        }
    }

    /// Sends the `len`-byte frame at `addr` (after the zeroed header), once the previous
    /// transmission has come back; false when it does not within TX_TIMEOUT_MS.
    pub fn send_frame(&mut self, addr: u64, len: usize) -> bool {
        while self.tx.in_flight() > 0 {
            if self.tx.wait_used(TX_TIMEOUT_MS).is_none() {
                return false;
            }
        }
        self.tx.set_desc(1, addr, len as u32, 0, 0);
        self.tx.publish(0);
        self.tx.notify();
        self.sent += 1;
        true
    }

    /// The next received frame, copied into `out` (cut to its length), its buffer
    /// posted again; its length.
    pub fn recv(&mut self, out: &mut [u8]) -> Option<usize> {
        loop {
            let (id, len) = self.rx.pop_used()?;
            if id >= u32::from(RX_BUFS.min(self.rx.size)) {
                continue; // not a buffer the guest posted: nothing to re-post
            }
            let len = (u64::from(len).min(BUF).saturating_sub(HDR_LEN) as usize).min(out.len());
            let b = rx_buf(self.n, u64::from(id)) + HDR_LEN;
            out[..len].copy_from_slice(phys_slice(b, len as u64));
            self.rx.publish(id as u16);
            self.rx.notify();
            return Some(len);
        }
    }

    /// Takes every received frame off the used ring, prints new senders, and posts the
    /// buffers again.
    fn poll_rx(&mut self, report: &mut Report) {
        let mut got = false;
        for _ in 0..self.rx.size {
            let Some((id, len)) = self.rx.pop_used() else { break };
            got = true;
            if id >= u32::from(RX_BUFS.min(self.rx.size)) {
                virtio::fail(report, self.dev.base, b"rx used ring returned an unknown descriptor");
                continue;
            }
            let len = u64::from(len).min(BUF);
            if len > HDR_LEN {
                self.frame(rx_buf(self.n, u64::from(id)) + HDR_LEN, len - HDR_LEN, report);
            }
            self.rx.publish(id as u16);
        }
        if got {
            self.rx.notify();
        }
    }

    /// A received frame: a RARP announcement? Then the MAC it announces. Ours (magic,
    /// not from our own MAC)? Then the sender's name.
    fn frame(&mut self, f: u64, len: u64, report: &mut Report) {
        match wire::parse_rarp(phys_slice(f, len)) {
            Some(Rarp::Announce(mac)) => {
                serial::begin();
                serial::bytes(b"nic");
                serial::dec(self.n as u64);
                serial::bytes(b" rarp mac=");
                print_mac(&mac);
                serial::end();
                return;
            }
            Some(Rarp::Other) => {
                virtio::fail(report, self.dev.base, b"a RARP frame that is not a MAC's announcement");
                return;
            }
            None => {}
        }
        if len < NAME_LEN_AT + 1 || rd8(f + 12) != ETHERTYPE[0] || rd8(f + 13) != ETHERTYPE[1] {
            return;
        }
        if (0..15).any(|i| rd8(f + 14 + i) != MAGIC[i as usize]) {
            return;
        }
        if (0..6).all(|i| rd8(f + 6 + i) == self.mac[i as usize]) {
            return;
        }
        let name_len = u64::from(rd8(f + NAME_LEN_AT)).min(MAX_NAME as u64).min(len - NAME_LEN_AT - 1);
        let name = f + NAME_LEN_AT + 1;
        let known = (0..self.seen).any(|s| {
            let e = seen_entry(self.n, s);
            u64::from(rd8(e)) == name_len && (0..name_len).all(|i| rd8(e + 1 + i) == rd8(name + i))
        });
        if known {
            return;
        }
        if self.seen < MAX_SEEN {
            let e = seen_entry(self.n, self.seen);
            wr8(e, name_len as u8);
            for i in 0..name_len {
                wr8(e + 1 + i, rd8(name + i));
            }
            self.seen += 1;
        }
        serial::begin();
        serial::bytes(b"nic");
        serial::dec(self.n as u64);
        serial::bytes(b" rx from=");
        for i in 0..name_len {
            serial::text(&[rd8(name + i)]);
        }
        serial::end();
    }
}

/// Sends on every NIC, then, for `listen_ms`, resends every RESEND_MS and prints new
/// senders. Finally checks that a transmission completed on each NIC and resets them,
/// except the first when `keep_first` (the IP stack's, `stack.rs`): it is returned.
pub fn run(nics: &mut [Option<Nic>], listen_ms: u64, keep_first: bool, report: &mut Report) -> Option<Nic> {
    if nics.iter().all(Option::is_none) {
        return None;
    }
    let end = clock::deadline(listen_ms);
    let mut next_send = 0;
    loop {
        let now = clock::rdtsc();
        if now >= next_send {
            for nic in nics.iter_mut().flatten() {
                nic.send();
            }
            next_send = clock::deadline(RESEND_MS);
        }
        for nic in nics.iter_mut().flatten() {
            nic.poll_rx(report);
        }
        if now >= end {
            break;
        }
        clock::pause(50);
    }
    for nic in nics.iter_mut().flatten() {
        while nic.tx.in_flight() > 0 {
            if nic.tx.wait_used(TX_TIMEOUT_MS).is_none() {
                break;
            }
        }
        nic.poll_rx(report);
        if nic.sent == 0 || nic.tx.in_flight() > 0 {
            virtio::fail_begin(report, nic.dev.base);
            serial::bytes(b"nic");
            serial::dec(nic.n as u64);
            serial::bytes(b" transmission not completed");
            serial::end();
        }
        if !(keep_first && nic.n == 0) {
            nic.dev.reset();
        }
    }
    if keep_first {
        nics[0].take()
    } else {
        None
    }
}

/// `testguest.chat` (with `testguest.count`): the first NIC, kept after the listening
/// window, sends its name frame every tick and prints what it hears between ticks
/// (`rx from=`, forgetting the senders every CHAT_FORGET_TICKS ticks; `rarp mac=`).
pub struct Chat {
    nic: Nic,
    /// Where a FAIL found while counting is counted (the verdict is printed already).
    report: Report,
}

impl Chat {
    pub fn new(nic: Nic) -> Chat {
        Chat { nic, report: Report::new() }
    }

    /// Tick `n`: forgets the senders heard every CHAT_FORGET_TICKS ticks, sends the
    /// name frame (unless the last one is still in flight).
    pub fn tick(&mut self, n: u64) {
        if n % CHAT_FORGET_TICKS == 0 {
            self.nic.seen = 0;
        }
        self.nic.send();
    }

    /// Between ticks: takes every frame received, prints what is new.
    pub fn poll(&mut self) {
        self.nic.poll_rx(&mut self.report);
    }
}
