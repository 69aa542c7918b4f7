//! Syntax of the string-valued settings that have one: names, paths, cpusets,
//! gateways, ssh destinations.

use std::path::{Component, Path, PathBuf};

/// Resource names: 1–63 of `[A-Za-z0-9._-]`, starting with a letter or digit. They
/// end up in paths, interface aliases and JSON, so nothing else is allowed.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `path` made absolute against `base` (the declaring file's folder, itself absolute),
/// with `.` and `..` removed lexically.
pub fn resolve(base: &Path, path: &str) -> PathBuf {
    let joined = base.join(path);
    let mut out = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The folder that relative paths of `file` resolve against, absolute.
pub fn base_dir(file: &Path) -> PathBuf {
    let dir = file.parent().unwrap_or(Path::new(""));
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Why a cpuset list (`2-3`, `0,4-5`) is invalid, if it is.
pub fn cpuset_error(text: &str) -> Option<String> {
    if text.is_empty() {
        return Some("empty".to_owned());
    }
    for part in text.split(',') {
        let (low, high) = part.split_once('-').unwrap_or((part, part));
        match (low.parse::<u32>(), high.parse::<u32>()) {
            (Ok(l), Ok(h)) if l <= h => {}
            (Ok(_), Ok(_)) => return Some(format!("range `{part}` runs backwards")),
            _ => return Some(format!("`{part}` is not a CPU number or range")),
        }
    }
    None
}

/// Why a gateway (`10.100.0.1/24`, `fd00::1/64`) is invalid, if it is.
pub fn gateway_error(text: &str) -> Option<String> {
    let Some((address, prefix)) = text.split_once('/') else {
        return Some("no prefix length (`/24`)".to_owned());
    };
    let max = match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => return Some(format!("`{address}` is not an IP address")),
    };
    match prefix.parse::<u8>() {
        Ok(p) if p <= max => None,
        _ => Some(format!("prefix length must be 0 to {max}")),
    }
}

/// Why a subnet (`10.100.0.0/24`, `fd00::/64`) is invalid, if it is: the gateway's
/// syntax, with no host bits set.
pub fn subnet_error(text: &str) -> Option<String> {
    if let Some(reason) = gateway_error(text) {
        return Some(reason);
    }
    let net: ipnet::IpNet = text.parse().ok()?;
    (net.trunc() != net).then(|| format!("host bits set: the subnet is `{}`", net.trunc()))
}

/// Why a NIC's address (an IPv4 or IPv6 address, no prefix) is invalid, if it is.
pub fn address_error(text: &str) -> Option<String> {
    match text.parse::<std::net::IpAddr>() {
        Ok(_) => None,
        Err(_) if text.contains('/') => Some(
            "an address without a prefix length (the VLAN's subnet gives the prefix)".to_owned(),
        ),
        Err(_) => Some("not an IP address".to_owned()),
    }
}

/// Why an ssh destination (`[user@]host[:port]`) is invalid, if it is.
pub fn ssh_error(text: &str) -> Option<String> {
    if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("empty or contains whitespace".to_owned());
    }
    if text.starts_with('-') {
        return Some("must not start with `-`".to_owned());
    }
    let host = text.rsplit_once('@').map_or(text, |(_, h)| h);
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') || h.starts_with('[') => {
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Some(format!("port `{port}` is not 1 to 65535"));
            }
            h
        }
        _ => host,
    };
    if host.is_empty() {
        return Some("no host name".to_owned());
    }
    None
}

/// The host part of an ssh destination (`[user@]host[:port]`, an IPv6 address bare or
/// in brackets) when it is an IP literal: the default underlay address of its host.
pub fn ssh_address(text: &str) -> Option<std::net::IpAddr> {
    let host = text.rsplit_once('@').map_or(text, |(_, h)| h);
    if let Ok(address) = host.parse() {
        return Some(address);
    }
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse().ok()
}

/// Why an underlay address (an IPv4 or IPv6 address, no prefix) is invalid, if it is.
pub fn underlay_error(text: &str) -> Option<String> {
    match text.parse::<std::net::IpAddr>() {
        Ok(address) if address.is_unspecified() => Some("the unspecified address".to_owned()),
        Ok(address) if address.is_multicast() => Some("a multicast address".to_owned()),
        Ok(_) => None,
        Err(_) if text.contains('/') => Some("an address without a prefix length".to_owned()),
        Err(_) => Some("not an IP address".to_owned()),
    }
}

/// Why a network namespace name is invalid, if it is.
pub fn netns_error(text: &str) -> Option<String> {
    if text.is_empty() || text.len() > 255 {
        return Some("must be 1 to 255 bytes".to_owned());
    }
    if text == "." || text == ".." || text.contains('/') || text.chars().any(char::is_whitespace) {
        return Some("must not contain `/` or whitespace".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("web-1"));
        assert!(valid_name("a.b_c"));
        assert!(!valid_name(""));
        assert!(!valid_name("-web"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"a".repeat(64)));
    }

    #[test]
    fn paths_resolve_against_the_declaring_folder() {
        let base = Path::new("/repo/examples/quickstart");
        assert_eq!(
            resolve(base, "../../tests/guest/kernel"),
            Path::new("/repo/tests/guest/kernel")
        );
        assert_eq!(resolve(base, "/var/lib/x"), Path::new("/var/lib/x"));
        assert_eq!(
            resolve(base, "./img"),
            Path::new("/repo/examples/quickstart/img")
        );
    }

    #[test]
    fn cpusets() {
        assert_eq!(cpuset_error("2-3"), None);
        assert_eq!(cpuset_error("0,4-5"), None);
        assert!(cpuset_error("3-2").is_some());
        assert!(cpuset_error("a").is_some());
        assert!(cpuset_error("").is_some());
        assert!(cpuset_error("1,").is_some());
    }

    #[test]
    fn gateways() {
        assert_eq!(gateway_error("10.100.0.1/24"), None);
        assert_eq!(gateway_error("fd00::1/64"), None);
        assert!(gateway_error("10.100.0.1").is_some());
        assert!(gateway_error("10.100.0.1/33").is_some());
        assert!(gateway_error("10.100.0/24").is_some());
    }

    #[test]
    fn subnets_and_addresses() {
        assert_eq!(subnet_error("10.100.0.0/24"), None);
        assert_eq!(subnet_error("fd00::/64"), None);
        assert!(subnet_error("10.100.0.1/24")
            .unwrap()
            .contains("10.100.0.0/24"));
        assert!(subnet_error("10.100.0.0").is_some());
        assert_eq!(address_error("10.100.0.20"), None);
        assert_eq!(address_error("fd00::20"), None);
        assert!(address_error("10.100.0.20/24").is_some());
        assert!(address_error("web").is_some());
    }

    #[test]
    fn underlays_and_the_address_in_ssh() {
        assert_eq!(underlay_error("192.0.2.11"), None);
        assert_eq!(underlay_error("2001:db8::11"), None);
        for bad in ["0.0.0.0", "::", "239.1.1.1", "10.0.0.1/24", "kvm-01", ""] {
            assert!(underlay_error(bad).is_some(), "{bad}");
        }
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        assert_eq!(ssh_address("root@192.0.2.12"), ip("192.0.2.12"));
        assert_eq!(ssh_address("root@192.0.2.12:2222"), ip("192.0.2.12"));
        assert_eq!(ssh_address("192.0.2.12"), ip("192.0.2.12"));
        assert_eq!(ssh_address("root@2001:db8::12"), ip("2001:db8::12"));
        assert_eq!(ssh_address("root@[2001:db8::12]:22"), ip("2001:db8::12"));
        assert_eq!(ssh_address("root@kvm-02"), None);
        assert_eq!(ssh_address("root@kvm-02:22"), None);
    }

    #[test]
    fn ssh_destinations() {
        assert_eq!(ssh_error("root@10.0.0.2"), None);
        assert_eq!(ssh_error("admin@box:2222"), None);
        assert_eq!(ssh_error("box"), None);
        assert!(ssh_error("box:0").is_some());
        assert!(ssh_error("a b").is_some());
        assert!(ssh_error("-oProxyCommand=x").is_some());
        assert!(ssh_error("root@").is_some());
    }
}
