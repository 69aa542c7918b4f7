//! DHCP (RFC 2131/2132) messages of a client: DISCOVER and REQUEST built, OFFER, ACK
//! and NAK parsed and checked against the transaction. Pure code: the host's tests
//! include this file.

use super::wire::{ip_at, put16, Ip, Mac};

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;

pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;

const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// op … file: the fixed BOOTP part; the magic cookie and options follow.
const FIXED: usize = 236;
const OPT_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_MSG_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMS: u8 = 55;
const OPT_END: u8 = 255;
const OPT_PAD: u8 = 0;
/// The BOOTP minimum message (300 bytes); servers may ignore shorter ones.
pub const MIN_LEN: usize = 300;

/// Builds a DISCOVER (`offer` None) or a REQUEST for an offer (address, server) into
/// `buf` (at least MIN_LEN bytes); its length. The broadcast flag asks the server to
/// broadcast its reply: the client has no address yet.
pub fn build(buf: &mut [u8], mac: Mac, xid: u32, offer: Option<(Ip, Ip)>) -> usize {
    buf[..MIN_LEN].fill(0);
    buf[0] = 1; // BOOTREQUEST
    buf[1] = 1; // Ethernet
    buf[2] = 6;
    buf[4..8].copy_from_slice(&xid.to_be_bytes());
    put16(buf, 10, 0x8000);
    buf[28..34].copy_from_slice(&mac);
    buf[FIXED..FIXED + 4].copy_from_slice(&MAGIC);
    let mut o = FIXED + 4;
    let mut opt = |code: u8, data: &[u8]| {
        buf[o] = code;
        buf[o + 1] = data.len() as u8;
        buf[o + 2..o + 2 + data.len()].copy_from_slice(data);
        o += 2 + data.len();
    };
    match offer {
        None => opt(OPT_MSG_TYPE, &[DISCOVER]),
        Some((addr, server)) => {
            opt(OPT_MSG_TYPE, &[REQUEST]);
            opt(OPT_REQUESTED_IP, &addr);
            opt(OPT_SERVER_ID, &server);
        }
    }
    opt(OPT_PARAMS, &[OPT_MASK, OPT_ROUTER, OPT_DNS]);
    buf[o] = OPT_END;
    MIN_LEN.max(o + 1)
}

/// A server's reply: its type and what it offers.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub kind: u8,
    pub addr: Ip,
    pub server: Option<Ip>,
    pub mask: Option<Ip>,
    pub router: Option<Ip>,
    pub dns: Option<Ip>,
}

/// A BOOTREPLY for transaction `xid` and hardware address `mac` with a message type;
/// `None` for anything else or anything malformed (options running past the end).
pub fn parse(p: &[u8], mac: Mac, xid: u32) -> Option<Reply> {
    if p.len() < FIXED + 4 || p[0] != 2 || p[1] != 1 || p[2] != 6 || p[4..8] != xid.to_be_bytes() {
        return None;
    }
    if p[28..34] != mac || p[FIXED..FIXED + 4] != MAGIC {
        return None;
    }
    let mut r = Reply {
        kind: 0,
        addr: ip_at(p, 16),
        server: None,
        mask: None,
        router: None,
        dns: None,
    };
    let mut o = FIXED + 4;
    while o < p.len() {
        let code = p[o];
        if code == OPT_END {
            break;
        }
        if code == OPT_PAD {
            o += 1;
            continue;
        }
        let len = usize::from(*p.get(o + 1)?);
        let data = p.get(o + 2..o + 2 + len)?;
        let ip = (len >= 4).then(|| ip_at(data, 0));
        match code {
            OPT_MSG_TYPE if len == 1 => r.kind = data[0],
            OPT_SERVER_ID => r.server = ip,
            OPT_MASK => r.mask = ip,
            OPT_ROUTER => r.router = ip,
            OPT_DNS => r.dns = ip,
            _ => {}
        }
        o += 2 + len;
    }
    (r.kind != 0).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x52, 0x54, 0, 0, 2, 1];

    /// A server's reply to `req` (as dnsmasq answers: type, server id, mask, router,
    /// dns, end).
    fn reply(req: &[u8], kind: u8, addr: Ip) -> [u8; 300] {
        let mut p = [0u8; 300];
        p[..FIXED + 4].copy_from_slice(&req[..FIXED + 4]);
        p[0] = 2;
        p[16..20].copy_from_slice(&addr);
        let opts: &[u8] = &[
            53, 1, kind, 54, 4, 10, 0, 0, 1, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 0, 1, 6, 4, 10,
            0, 0, 53, 255,
        ];
        p[FIXED + 4..FIXED + 4 + opts.len()].copy_from_slice(opts);
        p
    }

    #[test]
    fn discover_then_request_and_the_replies() {
        let mut buf = [0u8; 400];
        let n = build(&mut buf, MAC, 0x1234_5678, None);
        assert_eq!(n, MIN_LEN);
        assert_eq!(&buf[..4], &[1, 1, 6, 0]);
        assert_eq!(buf[10], 0x80, "broadcast flag");
        assert_eq!(&buf[28..34], &MAC);
        assert_eq!(&buf[FIXED + 4..FIXED + 7], &[53, 1, DISCOVER]);
        let offer = parse(&reply(&buf, OFFER, [10, 0, 0, 7]), MAC, 0x1234_5678).expect("offer");
        assert_eq!(
            offer,
            Reply {
                kind: OFFER,
                addr: [10, 0, 0, 7],
                server: Some([10, 0, 0, 1]),
                mask: Some([255, 255, 255, 0]),
                router: Some([10, 0, 0, 1]),
                dns: Some([10, 0, 0, 53]),
            }
        );
        let n = build(
            &mut buf,
            MAC,
            0x1234_5678,
            Some(([10, 0, 0, 7], [10, 0, 0, 1])),
        );
        assert_eq!(n, MIN_LEN);
        assert_eq!(
            &buf[FIXED + 4..FIXED + 19],
            &[53, 1, REQUEST, 50, 4, 10, 0, 0, 7, 54, 4, 10, 0, 0, 1]
        );
    }

    #[test]
    fn replies_for_others_or_malformed_are_ignored() {
        let mut buf = [0u8; 400];
        build(&mut buf, MAC, 7, None);
        let good = reply(&buf, ACK, [10, 0, 0, 7]);
        assert!(parse(&good, MAC, 8).is_none(), "another transaction");
        assert!(parse(&good, [0; 6], 7).is_none(), "another client");
        let mut p = good;
        p[FIXED] = 0;
        assert!(parse(&p, MAC, 7).is_none(), "no magic cookie");
        let mut p = good;
        p[FIXED + 5] = 200; // the type option's length runs past the end
        assert!(parse(&p, MAC, 7).is_none());
        assert!(parse(&good[..FIXED], MAC, 7).is_none());
        let mut p = good;
        p[FIXED + 4] = 0xfe; // no message type left
        p[FIXED + 5] = 1;
        assert!(parse(&p, MAC, 7).is_none());
    }
}
