//! A minimal IPv4 host on the first NIC: answers ARP requests for its address and
//! ICMP echo requests to it, pings (`testguest.ping=`), and takes a DHCP lease
//! (`testguest.dhcp`, `ip=dhcp`). Frames are checked by `wire`; a malformed ARP, IPv4,
//! ICMP or UDP packet is dropped and counted, never trusted.

use super::dhcp;
use super::wire::{self, Arp, Echo, Ip, Mac};
use super::Nic;
use crate::{clock, power, serial};

/// The identifier of the guest's echo requests ("tg").
const PING_ID: u16 = 0x7467;
/// How long one address is pinged, and how often the ARP or echo request is resent.
const PING_MS: u64 = 4000;
const RESEND_MS: u64 = 500;
/// How long a DHCP lease is waited for, and how often DISCOVER/REQUEST are resent.
const DHCP_MS: u64 = 15_000;
const DHCP_RESEND_MS: u64 = 2000;
const ARP_CACHE: usize = 4;

struct Frame([u8; 2048]);
/// Not zeroed at entry (.noinit): what is read is written first.
#[link_section = ".noinit.net_stack"]
static mut RX: Frame = Frame([0; 2048]);
#[link_section = ".noinit.net_stack"]
static mut TX: Frame = Frame([0; 2048]);

fn rx() -> &'static mut [u8; 2048] {
    // SAFETY: the guest runs on one CPU, and only `Stack::poll` uses RX, never re-entered.
    unsafe { &mut (*core::ptr::addr_of_mut!(RX)).0 }
}
fn tx() -> &'static mut [u8; 2048] {
    // SAFETY: as for RX; only `Stack::send`'s callers fill TX, one frame at a time.
    unsafe { &mut (*core::ptr::addr_of_mut!(TX)).0 }
}

/// What a polled frame brought the caller (besides what was answered at once).
enum Heard {
    Nothing,
    Arp(Ip, Mac),
    EchoReply { src: Ip, seq: u16 },
    Dhcp(dhcp::Reply),
}

pub struct Stack {
    nic: Nic,
    pub ip: Ip,
    mask: Ip,
    gw: Option<Ip>,
    arp: [(Ip, Mac); ARP_CACHE],
    arp_next: usize,
    ip_id: u16,
    /// Malformed frames dropped.
    pub dropped: u64,
}

pub fn print_ip(ip: Ip) {
    for (i, &o) in ip.iter().enumerate() {
        if i != 0 {
            serial::byte(b'.');
        }
        serial::dec(u64::from(o));
    }
}

impl Stack {
    /// A stack on `nic` without an address yet (0.0.0.0).
    pub fn new(nic: Nic) -> Stack {
        Stack { nic, ip: [0; 4], mask: [0; 4], gw: None, arp: [([0; 4], [0; 6]); ARP_CACHE], arp_next: 0, ip_id: 0, dropped: 0 }
    }

    pub fn configure(&mut self, ip: Ip, mask: Ip, gw: Option<Ip>) {
        (self.ip, self.mask, self.gw) = (ip, mask, gw);
    }

    /// ` <ip>/<prefix>[ gw <gw>]`
    fn print_config(&self) {
        print_ip(self.ip);
        serial::byte(b'/');
        serial::dec(u64::from(wire::prefix_len(self.mask).unwrap_or(0)));
        if let Some(gw) = self.gw {
            serial::bytes(b" gw ");
            print_ip(gw);
        }
    }

    /// `ip <addr>/<prefix>[ gw <gw>]`
    pub fn print_ip_line(&self) {
        serial::begin();
        serial::bytes(b"ip ");
        self.print_config();
        serial::end();
    }

    fn send(&mut self, len: usize) {
        // A transmission that never completes leaves the next one unsent: the ping
        // or lease then times out, which is what the test sees.
        let _ = self.nic.send_frame(tx().as_ptr() as u64, len);
    }

    fn learn(&mut self, ip: Ip, mac: Mac) {
        if ip == [0; 4] {
            return;
        }
        let slot = match self.arp.iter().position(|e| e.0 == ip) {
            Some(i) => i,
            None => {
                self.arp_next = (self.arp_next + 1) % ARP_CACHE;
                self.arp_next
            }
        };
        self.arp[slot] = (ip, mac);
    }

    /// Takes one received frame, answers it if it is an ARP request for our address
    /// or an echo request to it, and tells what else it was. `xid`: the DHCP
    /// transaction under way, if any.
    fn poll(&mut self, xid: Option<u32>) -> Option<Heard> {
        let len = self.nic.recv(rx())?;
        let f = &rx()[..len];
        let Some(eth) = wire::parse_eth(f) else {
            self.dropped += 1;
            return Some(Heard::Nothing);
        };
        // Our own frames, and unicast for others (a bridge floods until it learns).
        if eth.src == self.nic.mac || (eth.dst != self.nic.mac && eth.dst != wire::BROADCAST_MAC) {
            return Some(Heard::Nothing);
        }
        let heard = match eth.ethertype {
            wire::ETHERTYPE_ARP => self.arp_frame(eth.payload),
            wire::ETHERTYPE_IPV4 => self.ip_frame(eth.src, eth.payload, xid),
            _ => Some(Heard::Nothing), // the name frames, IPv6, …: not ours
        };
        if heard.is_none() {
            self.dropped += 1;
        }
        Some(heard.unwrap_or(Heard::Nothing))
    }

    fn arp_frame(&mut self, p: &[u8]) -> Option<Heard> {
        let a = wire::parse_arp(p)?;
        if a.op == wire::ARP_REQUEST && a.tpa == self.ip && self.ip != [0; 4] {
            let reply = Arp { op: wire::ARP_REPLY, sha: self.nic.mac, spa: self.ip, tha: a.sha, tpa: a.spa };
            let n = wire::build_arp(tx(), &reply);
            self.send(n);
        }
        self.learn(a.spa, a.sha);
        Some(Heard::Arp(a.spa, a.sha))
    }

    fn ip_frame(&mut self, src_mac: Mac, p: &[u8], xid: Option<u32>) -> Option<Heard> {
        let ip = wire::parse_ipv4(p)?;
        if ip.proto == wire::PROTO_UDP && xid.is_some() && (ip.dst == [255; 4] || ip.dst == self.ip) {
            let udp = wire::parse_udp(&ip)?;
            if udp.dst_port != dhcp::CLIENT_PORT || udp.src_port != dhcp::SERVER_PORT {
                return Some(Heard::Nothing);
            }
            // Another client's reply or a stray message is not malformed: ignored.
            let reply = xid.and_then(|x| dhcp::parse(udp.payload, self.nic.mac, x));
            return Some(reply.map_or(Heard::Nothing, Heard::Dhcp));
        }
        if ip.dst != self.ip || self.ip == [0; 4] || ip.proto != wire::PROTO_ICMP {
            return Some(Heard::Nothing);
        }
        if ip.payload.first().is_some_and(|&t| t != wire::ICMP_ECHO_REQUEST && t != wire::ICMP_ECHO_REPLY) {
            return Some(Heard::Nothing); // other ICMP (unreachable, …): not answered
        }
        let e = wire::parse_echo(ip.payload)?;
        if e.kind == wire::ICMP_ECHO_REPLY {
            return Some(if e.id == PING_ID { Heard::EchoReply { src: ip.src, seq: e.seq } } else { Heard::Nothing });
        }
        // The reply echoes the request's data (in RX; TX is as large, so it fits).
        self.ip_id = self.ip_id.wrapping_add(1);
        let reply = Echo { kind: wire::ICMP_ECHO_REPLY, ..e };
        let n = wire::build_echo(tx(), src_mac, self.nic.mac, self.ip, ip.src, self.ip_id, &reply);
        self.send(n);
        Some(Heard::Nothing)
    }

    /// Pings `addr` through its next hop (itself when on-link, else the gateway):
    /// ARP until the hop answers, then echo requests, every RESEND_MS for PING_MS.
    /// Prints `ping <addr> ok` or `ping <addr> timeout`.
    pub fn ping(&mut self, addr: Ip) {
        let hop = wire::next_hop(addr, self.ip, self.mask, self.gw);
        let mut mac = self.arp.iter().find(|e| e.0 == hop && hop != [0; 4]).map(|e| e.1);
        let ok = self.ip != [0; 4] && self.ping_via(addr, hop, &mut mac);
        serial::begin();
        serial::bytes(b"ping ");
        print_ip(addr);
        serial::bytes(if ok { b" ok" } else { b" timeout" });
        serial::end();
    }

    fn ping_via(&mut self, addr: Ip, hop: Ip, mac: &mut Option<Mac>) -> bool {
        let end = clock::deadline(PING_MS);
        let mut next = 0;
        let mut seq: u16 = 0;
        while !clock::passed(end) {
            if clock::rdtsc() >= next {
                let n = match *mac {
                    None => {
                        let req = Arp { op: wire::ARP_REQUEST, sha: self.nic.mac, spa: self.ip, tha: [0; 6], tpa: hop };
                        wire::build_arp(tx(), &req)
                    }
                    Some(m) => {
                        seq = seq.wrapping_add(1);
                        self.ip_id = self.ip_id.wrapping_add(1);
                        let e = Echo { kind: wire::ICMP_ECHO_REQUEST, id: PING_ID, seq, data: b"vmctl-testguest" };
                        wire::build_echo(tx(), m, self.nic.mac, self.ip, addr, self.ip_id, &e)
                    }
                };
                self.send(n);
                next = clock::deadline(RESEND_MS);
            }
            match self.poll(None) {
                Some(Heard::Arp(ip, m)) if ip == hop && mac.is_none() => {
                    *mac = Some(m);
                    next = 0; // send the echo request now
                }
                Some(Heard::EchoReply { src, seq: s }) if src == addr && s != 0 && s <= seq => return true,
                Some(_) => {}
                None => clock::pause(20),
            }
        }
        false
    }

    /// DISCOVER, OFFER, REQUEST, ACK (a NAK starts again), each resent every
    /// DHCP_RESEND_MS, for at most DHCP_MS. Prints `dhcp lease …` and takes the address,
    /// or `dhcp timeout`.
    pub fn dhcp(&mut self) -> bool {
        let xid = (clock::rdtsc() as u32) ^ u32::from_be_bytes([self.nic.mac[2], self.nic.mac[3], self.nic.mac[4], self.nic.mac[5]]);
        let end = clock::deadline(DHCP_MS);
        let mut offer: Option<(Ip, Ip)> = None;
        let mut next = 0;
        while !clock::passed(end) {
            if clock::rdtsc() >= next {
                let b = tx();
                let at = wire::ETH_HLEN + wire::IP_HLEN + 8;
                let len = dhcp::build(&mut b[at..], self.nic.mac, xid, offer);
                let ports = (dhcp::CLIENT_PORT, dhcp::SERVER_PORT);
                let n = wire::wrap_udp(b, wire::BROADCAST_MAC, self.nic.mac, [0; 4], [255; 4], ports, len);
                self.send(n);
                next = clock::deadline(DHCP_RESEND_MS);
            }
            match self.poll(Some(xid)) {
                Some(Heard::Dhcp(r)) => match (r.kind, offer) {
                    (dhcp::OFFER, None) => {
                        if let Some(server) = r.server {
                            offer = Some((r.addr, server));
                            next = 0;
                        }
                    }
                    (dhcp::ACK, Some((addr, _))) if r.addr == addr => {
                        let mask = r.mask.unwrap_or([255, 255, 255, 0]);
                        if wire::prefix_len(mask).is_none() {
                            self.dropped += 1;
                            continue;
                        }
                        self.configure(addr, mask, r.router);
                        serial::begin();
                        serial::bytes(b"dhcp lease ");
                        self.print_config();
                        if let Some(dns) = r.dns {
                            serial::bytes(b" dns ");
                            print_ip(dns);
                        }
                        serial::end();
                        return true;
                    }
                    (dhcp::NAK, Some(_)) => {
                        offer = None;
                        next = 0;
                    }
                    _ => {}
                },
                Some(_) => {}
                None => clock::pause(20),
            }
        }
        serial::line(b"dhcp timeout");
        false
    }

    /// Answers ARP and pings until a key arrives on the i8042 (graceful shutdown),
    /// then prints `shutdown requested` and powers off. Polls: a busy host core.
    pub fn serve(&mut self) -> ! {
        loop {
            if self.poll(None).is_none() {
                if power::key_pending() {
                    self.print_dropped();
                    power::shutdown_requested();
                }
                clock::pause(50);
            }
        }
    }

    /// Answers every frame waiting on the NIC (`testguest.count`'s loop, between ticks).
    pub fn serve_pending(&mut self) {
        while self.poll(None).is_some() {}
    }

    /// `net dropped=<n>`, printed when the shutdown key arrives.
    pub fn print_dropped(&self) {
        serial::begin();
        serial::bytes(b"net dropped=");
        serial::dec(self.dropped);
        serial::end();
    }
}
