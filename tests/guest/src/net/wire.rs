//! Ethernet, ARP, IPv4, ICMP echo and UDP: parsing (every length, version and checksum
//! checked; a malformed packet is `None`) and building, on byte slices. Pure code: the
//! host's tests include this file (tests/e2e/main.rs, `guest_net`).

pub type Mac = [u8; 6];
pub type Ip = [u8; 4];

pub const BROADCAST_MAC: Mac = [0xff; 6];
pub const ETH_HLEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const IP_HLEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_UDP: u8 = 17;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const TTL: u8 = 64;
/// The Ethernet minimum without FCS: shorter frames are padded with zeros.
pub const MIN_FRAME: usize = 60;

pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

pub fn ip_at(b: &[u8], at: usize) -> Ip {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}

pub fn mac_at(b: &[u8], at: usize) -> Mac {
    [b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]]
}

/// The Internet checksum (RFC 1071) of `data` with `sum` (a partial sum) added: over a
/// packet whose checksum field is filled in, 0 when it is right.
pub fn checksum_with(mut sum: u32, data: &[u8]) -> u16 {
    let mut pairs = data.chunks_exact(2);
    for p in &mut pairs {
        sum += u32::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn checksum(data: &[u8]) -> u16 {
    checksum_with(0, data)
}

/// Whether `a` and `b` are in the same subnet under `mask`.
pub fn on_link(a: Ip, b: Ip, mask: Ip) -> bool {
    (0..4).all(|i| a[i] & mask[i] == b[i] & mask[i])
}

/// Where a packet to `dst` goes first from `ip`/`mask`: `dst` itself when on-link (or
/// without a gateway), else the gateway.
pub fn next_hop(dst: Ip, ip: Ip, mask: Ip, gw: Option<Ip>) -> Ip {
    match gw {
        Some(gw) if !on_link(dst, ip, mask) => gw,
        _ => dst,
    }
}

/// The prefix length of a contiguous netmask, `None` for a mask like 255.0.255.0.
pub fn prefix_len(mask: Ip) -> Option<u8> {
    let m = u32::from_be_bytes(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// A received Ethernet frame: destination, source, ethertype and payload.
pub struct Eth<'a> {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
    pub payload: &'a [u8],
}

pub fn parse_eth(f: &[u8]) -> Option<Eth<'_>> {
    if f.len() < ETH_HLEN {
        return None;
    }
    Some(Eth {
        dst: mac_at(f, 0),
        src: mac_at(f, 6),
        ethertype: be16(f, 12),
        payload: &f[ETH_HLEN..],
    })
}

/// Writes the Ethernet header; the payload goes at `ETH_HLEN`.
pub fn put_eth(buf: &mut [u8], dst: Mac, src: Mac, ethertype: u16) {
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    put16(buf, 12, ethertype);
}

/// Zero-pads a frame of `len` bytes to the Ethernet minimum; the length to send.
pub fn pad(buf: &mut [u8], len: usize) -> usize {
    if len < MIN_FRAME {
        buf[len..MIN_FRAME].fill(0);
        MIN_FRAME
    } else {
        len
    }
}

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// An ARP packet for IPv4 over Ethernet.
#[derive(Debug, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sha: Mac,
    pub spa: Ip,
    pub tha: Mac,
    pub tpa: Ip,
}

/// An ARP payload: hardware type 1 (Ethernet), protocol 0x0800, lengths 6 and 4,
/// operation request or reply.
pub fn parse_arp(p: &[u8]) -> Option<Arp> {
    if p.len() < 28 || be16(p, 0) != 1 || be16(p, 2) != ETHERTYPE_IPV4 || p[4] != 6 || p[5] != 4 {
        return None;
    }
    let op = be16(p, 6);
    if op != ARP_REQUEST && op != ARP_REPLY {
        return None;
    }
    Some(Arp {
        op,
        sha: mac_at(p, 8),
        spa: ip_at(p, 14),
        tha: mac_at(p, 18),
        tpa: ip_at(p, 24),
    })
}

pub const ETHERTYPE_RARP: u16 = 0x8035;
pub const RARP_REQUEST_REVERSE: u16 = 3;

/// A RARP frame, as a VMM sends one for each NIC of a guest that moved (QEMU's
/// `announce_self`, vmctl's restored VMM).
#[derive(Debug, PartialEq, Eq)]
pub enum Rarp {
    /// The announcement of a MAC, laid out as QEMU builds it: broadcast, from the
    /// MAC; hardware type 1, protocol 0x0800, lengths 6 and 4, opcode 3 (request
    /// reverse); sender and target hardware address the MAC, protocol addresses 0.
    Announce(Mac),
    /// A RARP frame that is not such an announcement.
    Other,
}

/// The frame's RARP, if its EtherType is RARP.
pub fn parse_rarp(f: &[u8]) -> Option<Rarp> {
    let eth = parse_eth(f)?;
    if eth.ethertype != ETHERTYPE_RARP {
        return None;
    }
    let p = eth.payload;
    let announce = eth.dst == BROADCAST_MAC
        && p.len() >= 28
        && be16(p, 0) == 1
        && be16(p, 2) == ETHERTYPE_IPV4
        && p[4] == 6
        && p[5] == 4
        && be16(p, 6) == RARP_REQUEST_REVERSE
        && mac_at(p, 8) == eth.src
        && mac_at(p, 18) == eth.src
        && ip_at(p, 14) == [0; 4]
        && ip_at(p, 24) == [0; 4];
    Some(if announce {
        Rarp::Announce(eth.src)
    } else {
        Rarp::Other
    })
}

/// A whole ARP frame (requests broadcast, replies to the asker); its length.
pub fn build_arp(buf: &mut [u8], a: &Arp) -> usize {
    let dst = if a.op == ARP_REQUEST {
        BROADCAST_MAC
    } else {
        a.tha
    };
    put_eth(buf, dst, a.sha, ETHERTYPE_ARP);
    let p = &mut buf[ETH_HLEN..];
    put16(p, 0, 1);
    put16(p, 2, ETHERTYPE_IPV4);
    p[4] = 6;
    p[5] = 4;
    put16(p, 6, a.op);
    p[8..14].copy_from_slice(&a.sha);
    p[14..18].copy_from_slice(&a.spa);
    p[18..24].copy_from_slice(&a.tha);
    p[24..28].copy_from_slice(&a.tpa);
    pad(buf, ETH_HLEN + 28)
}

/// A received IPv4 packet (not a fragment), its payload bounded by the total length.
pub struct Ipv4<'a> {
    pub src: Ip,
    pub dst: Ip,
    pub proto: u8,
    pub payload: &'a [u8],
}

/// Version 4, header length ≥ 20 and within the packet, total length within the
/// packet (Ethernet padding is cut off), header checksum right, not a fragment.
pub fn parse_ipv4(p: &[u8]) -> Option<Ipv4<'_>> {
    if p.len() < IP_HLEN || p[0] >> 4 != 4 {
        return None;
    }
    let hlen = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(be16(p, 2));
    if hlen < IP_HLEN || total < hlen || total > p.len() || checksum(&p[..hlen]) != 0 {
        return None;
    }
    // More fragments, or a fragment offset: the guest does not reassemble.
    if be16(p, 6) & 0x3fff != 0 {
        return None;
    }
    Some(Ipv4 {
        src: ip_at(p, 12),
        dst: ip_at(p, 16),
        proto: p[9],
        payload: &p[hlen..total],
    })
}

/// Writes a 20-byte IPv4 header (DF clear, TTL 64) for `payload_len` bytes of payload,
/// checksum filled in.
pub fn put_ipv4(buf: &mut [u8], src: Ip, dst: Ip, proto: u8, id: u16, payload_len: usize) {
    let h = &mut buf[..IP_HLEN];
    h[0] = 0x45;
    h[1] = 0;
    put16(h, 2, (IP_HLEN + payload_len) as u16);
    put16(h, 4, id);
    put16(h, 6, 0);
    h[8] = TTL;
    h[9] = proto;
    put16(h, 10, 0);
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    let sum = checksum(h);
    put16(h, 10, sum);
}

/// An ICMP echo request or reply.
#[derive(Debug, PartialEq, Eq)]
pub struct Echo<'a> {
    pub kind: u8,
    pub id: u16,
    pub seq: u16,
    pub data: &'a [u8],
}

/// An ICMP message that is an echo request or reply with a right checksum.
pub fn parse_echo(p: &[u8]) -> Option<Echo<'_>> {
    if p.len() < 8 || (p[0] != ICMP_ECHO_REQUEST && p[0] != ICMP_ECHO_REPLY) || p[1] != 0 {
        return None;
    }
    if checksum(p) != 0 {
        return None;
    }
    Some(Echo {
        kind: p[0],
        id: be16(p, 4),
        seq: be16(p, 6),
        data: &p[8..],
    })
}

/// A whole frame carrying an ICMP echo (`buf` must hold it); its length.
#[allow(clippy::too_many_arguments)]
pub fn build_echo(
    buf: &mut [u8],
    dst_mac: Mac,
    src_mac: Mac,
    src: Ip,
    dst: Ip,
    ip_id: u16,
    e: &Echo,
) -> usize {
    let len = 8 + e.data.len();
    put_eth(buf, dst_mac, src_mac, ETHERTYPE_IPV4);
    put_ipv4(&mut buf[ETH_HLEN..], src, dst, PROTO_ICMP, ip_id, len);
    let m = &mut buf[ETH_HLEN + IP_HLEN..ETH_HLEN + IP_HLEN + len];
    m[0] = e.kind;
    m[1] = 0;
    put16(m, 2, 0);
    put16(m, 4, e.id);
    put16(m, 6, e.seq);
    m[8..].copy_from_slice(e.data);
    let sum = checksum(m);
    put16(m, 2, sum);
    pad(buf, ETH_HLEN + IP_HLEN + len)
}

/// A UDP datagram: ports and payload (bounded by its length field).
pub struct Udp<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

/// The pseudo-header's partial sum for a UDP checksum.
fn pseudo_sum(src: Ip, dst: Ip, len: usize) -> u32 {
    let w = |ip: Ip| {
        u32::from(u16::from_be_bytes([ip[0], ip[1]]))
            + u32::from(u16::from_be_bytes([ip[2], ip[3]]))
    };
    w(src) + w(dst) + u32::from(PROTO_UDP) + len as u32
}

/// A UDP datagram in `ip`: length within the payload, checksum right (or 0: none).
pub fn parse_udp<'a>(ip: &Ipv4<'a>) -> Option<Udp<'a>> {
    let p = ip.payload;
    if p.len() < 8 {
        return None;
    }
    let len = usize::from(be16(p, 4));
    if len < 8 || len > p.len() {
        return None;
    }
    if be16(p, 6) != 0 && checksum_with(pseudo_sum(ip.src, ip.dst, len), &p[..len]) != 0 {
        return None;
    }
    Some(Udp {
        src_port: be16(p, 0),
        dst_port: be16(p, 2),
        payload: &p[8..len],
    })
}

/// Writes Ethernet, IPv4 and UDP headers (checksum filled in) around the `payload_len`
/// bytes already at `ETH_HLEN + IP_HLEN + 8`; the frame's length.
#[allow(clippy::too_many_arguments)]
pub fn wrap_udp(
    buf: &mut [u8],
    dst_mac: Mac,
    src_mac: Mac,
    src: Ip,
    dst: Ip,
    ports: (u16, u16),
    payload_len: usize,
) -> usize {
    let len = 8 + payload_len;
    put_eth(buf, dst_mac, src_mac, ETHERTYPE_IPV4);
    put_ipv4(&mut buf[ETH_HLEN..], src, dst, PROTO_UDP, 0, len);
    let u = &mut buf[ETH_HLEN + IP_HLEN..ETH_HLEN + IP_HLEN + len];
    put16(u, 0, ports.0);
    put16(u, 2, ports.1);
    put16(u, 4, len as u16);
    put16(u, 6, 0);
    let sum = match checksum_with(pseudo_sum(src, dst, len), u) {
        0 => 0xffff, // 0 would mean "no checksum"
        s => s,
    };
    put16(u, 6, sum);
    pad(buf, ETH_HLEN + IP_HLEN + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame vmctl's restored VMM sends (its own code, less the virtio net header)
    /// is an announcement; any field changed, or another EtherType, is not.
    #[test]
    fn the_vmms_announcement_is_a_rarp_of_its_mac() {
        use vmctl_runtime::vmm::devices::virtio::net::{announce, VNET_HDR_LEN};
        let mac = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
        let frame = announce::rarp_frame(mac);
        let good = &frame[VNET_HDR_LEN..];
        assert_eq!(parse_rarp(good), Some(Rarp::Announce(mac)));
        for at in [0, 6, 14, 16, 18, 19, 21, 22, 28, 32, 38] {
            let mut bad = good.to_vec();
            bad[at] ^= 1;
            assert_eq!(parse_rarp(&bad), Some(Rarp::Other), "byte {at} changed");
        }
        assert_eq!(parse_rarp(&good[..41]), Some(Rarp::Other), "cut short");
        let mut arp = good.to_vec();
        put16(&mut arp, 12, ETHERTYPE_ARP);
        assert_eq!(parse_rarp(&arp), None);
        assert_eq!(parse_rarp(&good[..13]), None);
    }

    /// A ping from Linux (`ping -c1 10.0.0.2` from 10.0.0.1), IPv4 header and ICMP
    /// message as captured.
    fn sample_ip() -> [u8; 28] {
        let mut p = [0u8; 28];
        p[..20].copy_from_slice(&[
            0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 10, 0, 0, 1,
            10, 0, 0, 2,
        ]);
        let sum = checksum(&p[..20]);
        put16(&mut p, 10, sum);
        p[20..28].copy_from_slice(&[8, 0, 0, 0, 0xab, 0xcd, 0, 1]);
        let sum = checksum(&p[20..]);
        put16(&mut p, 22, sum);
        p
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2, checksum 220d.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        // An odd length pads with a zero byte.
        assert_eq!(checksum(&[0x01]), !0x0100);
    }

    #[test]
    fn a_linux_header_checksum_is_verified_and_a_flipped_bit_drops_the_packet() {
        // The header of a real packet (from Wikipedia's IPv4 checksum example).
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0);
        let mut p = sample_ip();
        let ip = parse_ipv4(&p).expect("valid");
        assert_eq!(
            (ip.src, ip.dst, ip.proto, ip.payload.len()),
            ([10, 0, 0, 1], [10, 0, 0, 2], 1, 8)
        );
        p[15] ^= 1;
        assert!(parse_ipv4(&p).is_none());
    }

    #[test]
    fn malformed_ipv4_is_dropped() {
        let good = sample_ip();
        for (what, edit) in [
            (
                "version 6",
                &(|p: &mut [u8; 28]| p[0] = 0x65) as &dyn Fn(&mut [u8; 28]),
            ),
            ("ihl 4", &|p| p[0] = 0x44),
            ("ihl beyond the packet", &|p| p[0] = 0x4f),
            ("total length beyond", &|p| put16(p, 2, 29)),
            ("total length below the header", &|p| put16(p, 2, 19)),
            ("a fragment", &|p| put16(p, 6, 0x2000)),
        ] {
            let mut p = good;
            edit(&mut p);
            // Fix the checksum so only the edit is wrong.
            put16(&mut p, 10, 0);
            let hl = (usize::from(p[0] & 15) * 4).clamp(20, 28);
            let sum = checksum(&p[..hl]);
            put16(&mut p, 10, sum);
            assert!(parse_ipv4(&p).is_none(), "{what}");
        }
        assert!(parse_ipv4(&good[..19]).is_none());
        // Ethernet padding after the total length is cut off.
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&good);
        assert_eq!(parse_ipv4(&padded).expect("padded").payload.len(), 8);
    }

    #[test]
    fn echo_reply_is_built_with_right_checksums_and_identifiers() {
        let p = sample_ip();
        let ip = parse_ipv4(&p).unwrap();
        let req = parse_echo(ip.payload).expect("echo request");
        assert_eq!((req.kind, req.id, req.seq), (ICMP_ECHO_REQUEST, 0xabcd, 1));
        let mut buf = [0u8; 128];
        let reply = Echo {
            kind: ICMP_ECHO_REPLY,
            ..req
        };
        let n = build_echo(&mut buf, [2; 6], [4; 6], ip.dst, ip.src, 7, &reply);
        assert_eq!(n, MIN_FRAME);
        let eth = parse_eth(&buf[..n]).unwrap();
        assert_eq!(
            (eth.dst, eth.src, eth.ethertype),
            ([2; 6], [4; 6], ETHERTYPE_IPV4)
        );
        let back = parse_ipv4(eth.payload).expect("valid IPv4");
        assert_eq!(
            (back.src, back.dst, back.proto),
            ([10, 0, 0, 2], [10, 0, 0, 1], PROTO_ICMP)
        );
        assert_eq!(eth.payload[8], TTL);
        let e = parse_echo(back.payload).expect("valid ICMP");
        assert_eq!(
            (e.kind, e.id, e.seq, e.data),
            (ICMP_ECHO_REPLY, 0xabcd, 1, &[][..])
        );
        let mut bad = [0u8; 8];
        bad.copy_from_slice(ip.payload);
        bad[7] ^= 1;
        assert!(parse_echo(&bad).is_none(), "bad ICMP checksum");
    }

    #[test]
    fn arp_round_trips_and_rejects_other_protocols() {
        let req = Arp {
            op: ARP_REQUEST,
            sha: [1; 6],
            spa: [10, 0, 0, 1],
            tha: [0; 6],
            tpa: [10, 0, 0, 2],
        };
        let mut buf = [0u8; 64];
        let n = build_arp(&mut buf, &req);
        assert_eq!(n, MIN_FRAME);
        let eth = parse_eth(&buf[..n]).unwrap();
        assert_eq!((eth.dst, eth.ethertype), (BROADCAST_MAC, ETHERTYPE_ARP));
        assert_eq!(parse_arp(eth.payload), Some(req));
        buf[ETH_HLEN + 3] = 0xdd; // protocol 0x08dd
        assert!(parse_arp(&buf[ETH_HLEN..n]).is_none());
        assert!(parse_arp(&buf[ETH_HLEN..ETH_HLEN + 27]).is_none());
    }

    #[test]
    fn udp_checksum_round_trips() {
        let mut buf = [0u8; 128];
        buf[ETH_HLEN + IP_HLEN + 8..ETH_HLEN + IP_HLEN + 11].copy_from_slice(b"abc");
        let n = wrap_udp(
            &mut buf,
            BROADCAST_MAC,
            [2; 6],
            [0; 4],
            [255; 4],
            (68, 67),
            3,
        );
        let ip = parse_ipv4(&buf[ETH_HLEN..n]).unwrap();
        let u = parse_udp(&ip).expect("valid UDP");
        assert_eq!((u.src_port, u.dst_port, u.payload), (68, 67, &b"abc"[..]));
        buf[ETH_HLEN + IP_HLEN + 9] ^= 1;
        let ip = parse_ipv4(&buf[ETH_HLEN..n]).unwrap();
        assert!(parse_udp(&ip).is_none());
    }

    #[test]
    fn masks_and_links() {
        assert_eq!(prefix_len([255, 255, 255, 0]), Some(24));
        assert_eq!(prefix_len([0; 4]), Some(0));
        assert_eq!(prefix_len([255; 4]), Some(32));
        assert_eq!(prefix_len([255, 0, 255, 0]), None);
        assert!(on_link(
            [10, 100, 0, 7],
            [10, 100, 0, 1],
            [255, 255, 255, 0]
        ));
        assert!(!on_link(
            [10, 100, 0, 7],
            [10, 200, 0, 1],
            [255, 255, 255, 0]
        ));
    }
}
