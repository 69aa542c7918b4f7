//! The kernel's `ip=` argument (Linux's Documentation/admin-guide/nfs/nfsroot.rst):
//! `ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>…`,
//! or `ip=dhcp` (also `on`, `any`, `both`, `bootp`, `rarp`: autoconfiguration, done
//! here with DHCP). Pure code: the host's tests include this file.

use super::wire::Ip;

#[derive(Debug, PartialEq, Eq)]
pub enum IpArg {
    /// A fixed address, its netmask and the gateway (if any).
    Static { addr: Ip, mask: Ip, gw: Option<Ip> },
    /// Ask a DHCP server.
    Dhcp,
    /// `ip=off` / `ip=none`: no configuration.
    Off,
}

/// A dotted quad (`10.100.0.7`), `None` otherwise.
pub fn parse_ip(s: &[u8]) -> Option<Ip> {
    let mut ip = [0u8; 4];
    let mut parts = s.split(|&c| c == b'.');
    for octet in ip.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = p.iter().fold(0u32, |n, &c| n * 10 + u32::from(c - b'0'));
        *octet = u8::try_from(n).ok()?;
    }
    parts.next().is_none().then_some(ip)
}

fn autoconf(s: &[u8]) -> bool {
    matches!(s, b"dhcp" | b"on" | b"any" | b"both" | b"bootp" | b"rarp")
}

/// The value of `ip=`; `None` when it cannot be parsed (a bad address or netmask).
pub fn parse(value: &[u8]) -> Option<IpArg> {
    if autoconf(value) {
        return Some(IpArg::Dhcp);
    }
    if value == b"off" || value == b"none" {
        return Some(IpArg::Off);
    }
    let mut f = value.split(|&c| c == b':');
    let client = f.next().unwrap_or(b"");
    let _server = f.next();
    let gw = f.next().unwrap_or(b"");
    let mask = f.next().unwrap_or(b"");
    let (_host, _dev) = (f.next(), f.next());
    let conf = f.next().unwrap_or(b"");
    if client.is_empty() {
        // Linux: without a client address, autoconfigure unless told `off`/`none`.
        return Some(if conf == b"off" || conf == b"none" {
            IpArg::Off
        } else {
            IpArg::Dhcp
        });
    }
    let addr = parse_ip(client)?;
    let gw = if gw.is_empty() {
        None
    } else {
        Some(parse_ip(gw)?)
    };
    let mask = if mask.is_empty() {
        class_mask(addr)
    } else {
        parse_ip(mask)?
    };
    super::wire::prefix_len(mask)?;
    Some(IpArg::Static { addr, mask, gw })
}

/// Linux's default netmask for an address without one: by its historical class.
fn class_mask(a: Ip) -> Ip {
    match a[0] {
        0..=127 => [255, 0, 0, 0],
        128..=191 => [255, 255, 0, 0],
        _ => [255, 255, 255, 0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_vmctl_appends() {
        assert_eq!(
            parse(b"10.100.0.7::10.100.0.1:255.255.255.0:web-1:eth0:off"),
            Some(IpArg::Static {
                addr: [10, 100, 0, 7],
                mask: [255, 255, 255, 0],
                gw: Some([10, 100, 0, 1])
            })
        );
    }

    #[test]
    fn short_forms_and_autoconf() {
        assert_eq!(parse(b"dhcp"), Some(IpArg::Dhcp));
        assert_eq!(parse(b"off"), Some(IpArg::Off));
        assert_eq!(parse(b":::::eth0:dhcp"), Some(IpArg::Dhcp));
        assert_eq!(parse(b":::::eth0:off"), Some(IpArg::Off));
        assert_eq!(
            parse(b"192.168.1.5"),
            Some(IpArg::Static {
                addr: [192, 168, 1, 5],
                mask: [255, 255, 255, 0],
                gw: None
            })
        );
        assert_eq!(
            parse(b"10.0.0.2:10.0.0.9::255.255.0.0"),
            Some(IpArg::Static {
                addr: [10, 0, 0, 2],
                mask: [255, 255, 0, 0],
                gw: None
            })
        );
    }

    #[test]
    fn bad_addresses_and_masks_are_refused() {
        for bad in [
            &b"10.0.0.256::::"[..],
            b"10.0.0",
            b"10.0.0.1.2",
            b"10..0.1",
            b"a.b.c.d",
            b"10.0.0.1::10.0.0:255.0.0.0",
            b"10.0.0.1:::255.0.255.0",
            b"10.0.0.1:::0255.0.0.0",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
