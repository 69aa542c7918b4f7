//! Tests of the real tap: name checks anywhere; frames through a real tap and a
//! `Net` device inside a network namespace the test makes and removes (root only — the
//! machine's own namespace is never touched).

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::vmm::devices::virtio::net::{Net, RX_QUEUE, TX_QUEUE};
use crate::vmm::devices::virtio::testing::{CountingInterrupt, QueueLayout};
use crate::vmm::devices::virtio::{IrqTrigger, VirtioDevice};

#[test]
fn invalid_names_are_refused() {
    for name in ["", "a-name-far-too-long", "nul\0"] {
        assert!(matches!(
            TapDevice::open(name),
            Err(TapError::InvalidName { .. })
        ));
    }
}

/// A network namespace made for one test and removed when dropped.
struct Netns(String);

impl Netns {
    fn create() -> Option<Self> {
        Self::create_named("vmctl-virtio")
    }

    /// `<prefix>-<pid>`: tests running at once each have their own.
    fn create_named(prefix: &str) -> Option<Self> {
        let name = format!("{prefix}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(name))
    }

    fn ip(&self, args: &[&str]) {
        let status = Command::new("ip")
            .arg("-n")
            .arg(&self.0)
            .args(args)
            .status()
            .expect("run ip");
        assert!(status.success(), "ip -n {} {args:?}", self.0);
    }

    /// Moves the calling thread (only) into the namespace.
    fn enter_this_thread(&self) {
        let ns = File::open(format!("/var/run/netns/{}", self.0)).expect("open netns");
        // SAFETY: setns with a namespace fd we own; it changes this thread only.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

const ETHERTYPE: [u8; 2] = [0x88, 0xb5]; // IEEE local experimental
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0xab, 0xcd, 0xef];

/// A raw packet socket on interface `name` of the calling thread's namespace.
struct PacketSocket(libc::c_int);

impl PacketSocket {
    fn bind(name: &str) -> Self {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        let cname = std::ffi::CString::new(name).unwrap();
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        assert_ne!(ifindex, 0);
        // SAFETY: all-zero sockaddr_ll is valid; we fill what bind needs.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: `sll` is a sockaddr_ll of `len` bytes.
        let rc = unsafe { libc::bind(fd, (&sll as *const libc::sockaddr_ll).cast(), len) };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        Self(fd)
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is valid for its length.
        let n = unsafe { libc::send(self.0, frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(n, frame.len() as isize);
    }

    /// Waits up to 5 s for a frame whose payload starts with `payload`.
    fn expect(&self, payload: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 2048];
        while Instant::now() < deadline {
            let mut pfd = libc::pollfd {
                fd: self.0,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 100) };
            // SAFETY: `buf` is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.0,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 14 && buf[12..14] == ETHERTYPE && buf[14..].starts_with(payload) {
                return buf[..n as usize].to_vec();
            }
        }
        panic!("no frame with payload {payload:?} within 5 s");
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

fn ethernet(src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE);
    f.extend_from_slice(payload);
    f
}

fn frames_through_a_real_tap(ns: &Netns) {
    ns.enter_this_thread();
    let tap = TapDevice::open("vmctl-t0").expect("open tap");
    assert_eq!(tap.name(), "vmctl-t0");
    ns.ip(&["link", "set", "vmctl-t0", "up"]);
    let sock = PacketSocket::bind("vmctl-t0");

    let mem = QueueLayout::memory(0x100000);
    let rxq = QueueLayout::new(0x1000, 64);
    let txq = QueueLayout::new(0x4000, 64);
    let mut net = Net::new(tap, GUEST_MAC);
    let irq = IrqTrigger::new(Arc::new(CountingInterrupt::default()));
    net.activate(mem.clone(), vec![rxq.queue(&mem), txq.queue(&mem)], 0, irq)
        .unwrap();
    let tap_fd = net.backend_fd().expect("a real tap has an fd");

    // Guest → host.
    let mut out = vec![0u8; VNET_HDR_LEN];
    out.extend_from_slice(&ethernet(GUEST_MAC, b"vmctl-tx"));
    mem.write_slice(&out, GuestAddress(0x10000)).unwrap();
    let head = txq.write_chain(&mem, 0, &[(0x10000, out.len() as u32, false)]);
    txq.publish(&mem, &[head]);
    net.process_queue(TX_QUEUE);
    let seen = sock.expect(b"vmctl-tx");
    assert_eq!(&seen[6..12], &GUEST_MAC);
    assert_eq!(net.counters().requests, 1);

    // Host → guest: give the guest many buffers (the kernel may send its own frames
    // first, e.g. IPv6 router solicitations) and look for ours.
    let heads: Vec<u16> = (0..32u16)
        .map(|i| rxq.write_chain(&mem, i, &[(0x20000 + 0x800 * u64::from(i), 0x800, true)]))
        .collect();
    rxq.publish(&mem, &heads);
    net.process_queue(RX_QUEUE);
    sock.send(&ethernet([0x02, 0, 0, 0, 0, 1], b"vmctl-rx"));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut found = false;
    while !found && Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd: tap_fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        net.process_backend();
        for n in 0..rxq.used_idx(&mem) {
            let (id, len) = rxq.used_elem(&mem, n);
            let mut buf = vec![0u8; len as usize];
            mem.read_slice(&mut buf, GuestAddress(0x20000 + 0x800 * u64::from(id)))
                .unwrap();
            let body = &buf[VNET_HDR_LEN.min(buf.len())..];
            if body.len() > 14 && body[12..14] == ETHERTYPE && body[14..].starts_with(b"vmctl-rx") {
                assert_eq!(u16::from_le_bytes([buf[10], buf[11]]), 1, "num_buffers");
                found = true;
            }
        }
    }
    assert!(found, "the frame sent on the bridge side reached the guest");
    assert_eq!(net.counters().bad_total(), 0);
}

#[test]
fn real_tap_in_a_fresh_network_namespace() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED real_tap_in_a_fresh_network_namespace: needs root");
        return;
    }
    let Some(ns) = Netns::create() else {
        eprintln!("SKIPPED real_tap_in_a_fresh_network_namespace: `ip netns add` failed");
        return;
    };
    let ns = Arc::new(ns);
    let inner = ns.clone();
    let result = std::thread::spawn(move || frames_through_a_real_tap(&inner)).join();
    drop(ns);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// A tap another descriptor holds for a moment (a process forked by another thread of
/// vmctl keeps a copy of the one that made the tap until it execs) is waited for.
fn a_briefly_held_tap_is_waited_for(ns: &Netns) {
    ns.enter_this_thread();
    let holder = TapDevice::open("vmctl-t1").expect("open tap");
    let started = Instant::now();
    std::thread::scope(|scope| {
        let second = scope.spawn(|| {
            ns.enter_this_thread();
            TapDevice::open("vmctl-t1")
        });
        std::thread::sleep(Duration::from_millis(200));
        drop(holder);
        let opened = second.join().expect("the second open returns");
        assert!(opened.is_ok(), "{opened:?}");
    });
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[test]
fn a_tap_held_for_a_moment_is_waited_for_not_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED a_tap_held_for_a_moment_is_waited_for_not_refused: needs root");
        return;
    }
    let Some(ns) = Netns::create_named("vmctl-tapwait") else {
        eprintln!(
            "SKIPPED a_tap_held_for_a_moment_is_waited_for_not_refused: `ip netns add` failed"
        );
        return;
    };
    let result =
        std::thread::scope(|scope| scope.spawn(|| a_briefly_held_tap_is_waited_for(&ns)).join());
    drop(ns);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
