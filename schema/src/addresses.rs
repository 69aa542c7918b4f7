//! Addresses in a VLAN's subnet, shared by validation (which counts them) and the
//! planner (which allocates them), so both agree on which addresses a NIC may have.
//!
//! A subnet's **usable** addresses are all of it but, when it has four addresses or more
//! (IPv4 up to /30, IPv6 up to /126), its first (the network address) and its last (the
//! broadcast address; on IPv6 kept out the same way). A /31 or /32 (/127, /128) has no
//! network or broadcast address: every address is usable. The gateway's address, when
//! it is in the subnet, is never a NIC's. Addresses are numbered as `u128`, IPv4 or
//! IPv6 alike.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// One VLAN's subnet and gateway, as the allocator and the checks see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The subnet, its host bits zero.
    pub net: IpNet,
    /// The gateway's address, when the VLAN has a gateway.
    pub gateway: Option<IpAddr>,
}

/// Why an address cannot be a NIC's in its VLAN's subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// Not in the subnet (or of the other IP version).
    Outside,
    /// The subnet's network address.
    Network,
    /// The subnet's broadcast (last) address.
    Broadcast,
    /// The gateway's address.
    Gateway,
}

impl Unusable {
    /// What the address is, as a diagnostic says it.
    pub fn what(self) -> &'static str {
        match self {
            Unusable::Outside => "outside the subnet",
            Unusable::Network => "the subnet's network address",
            Unusable::Broadcast => "the subnet's broadcast address",
            Unusable::Gateway => "the gateway's address",
        }
    }
}

/// `address` as a number.
pub fn to_number(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Subnet {
    /// The subnet of a VLAN: `subnet` when given, else its gateway's; `None` when it has
    /// neither (or either is not valid, which is reported where it is read).
    pub fn of(subnet: Option<&str>, gateway: Option<&str>) -> Option<Subnet> {
        let gateway = gateway.and_then(|g| g.parse::<IpNet>().ok());
        let net = match subnet {
            Some(s) => s.parse::<IpNet>().ok()?.trunc(),
            None => gateway?.trunc(),
        };
        Some(Subnet {
            net,
            gateway: gateway.map(|g| g.addr()),
        })
    }

    fn is_v4(&self) -> bool {
        matches!(self.net, IpNet::V4(_))
    }

    /// The number of the subnet's first and last address.
    fn bounds(&self) -> (u128, u128) {
        (
            to_number(self.net.network()),
            to_number(self.net.broadcast()),
        )
    }

    /// Whether the subnet keeps its first and last address out (it has four or more).
    fn has_network_and_broadcast(&self) -> bool {
        self.net.max_prefix_len() - self.net.prefix_len() >= 2
    }

    /// The first and last usable address, by number.
    pub fn usable_range(&self) -> (u128, u128) {
        let (first, last) = self.bounds();
        if self.has_network_and_broadcast() {
            (first + 1, last - 1)
        } else {
            (first, last)
        }
    }

    /// How many addresses NICs may have: the usable ones but the gateway's (saturating
    /// at `u128::MAX`, which only an IPv6 /0 could reach).
    pub fn capacity(&self) -> u128 {
        let (first, last) = self.usable_range();
        let total = (last - first).saturating_add(1);
        let gateway_inside = self
            .gateway
            .is_some_and(|g| self.check(g) == Err(Unusable::Gateway));
        total - u128::from(gateway_inside)
    }

    /// Whether `address` may be a NIC's here, or why not.
    pub fn check(&self, address: IpAddr) -> Result<(), Unusable> {
        if !self.net.contains(&address) {
            return Err(Unusable::Outside);
        }
        let n = to_number(address);
        let (first, last) = self.bounds();
        if self.has_network_and_broadcast() && n == first {
            return Err(Unusable::Network);
        }
        if self.has_network_and_broadcast() && n == last {
            return Err(Unusable::Broadcast);
        }
        if self.gateway == Some(address) {
            return Err(Unusable::Gateway);
        }
        Ok(())
    }

    /// The address of number `n`, in the subnet's IP version.
    pub fn address(&self, n: u128) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
        } else {
            IpAddr::V6(Ipv6Addr::from(n))
        }
    }

    /// The kernel's `ip=` argument for a NIC with `address` in this subnet, for a guest
    /// called `hostname` (`Documentation/admin-guide/nfs/nfsroot.rst`):
    /// `ip=<addr>::<gw>:<mask>:<hostname>:eth0:off`, `<gw>` empty without a gateway.
    /// `None` for IPv6: the kernel's `ip=` is IPv4 only.
    pub fn kernel_argument(&self, address: IpAddr, hostname: &str) -> Option<String> {
        let (IpNet::V4(net), IpAddr::V4(address)) = (self.net, address) else {
            return None;
        };
        let gateway = match self.gateway {
            Some(IpAddr::V4(g)) => g.to_string(),
            _ => String::new(),
        };
        Some(format!(
            "ip={address}::{gateway}:{}:{hostname}:eth0:off",
            net.netmask()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_subnet_from_its_gateway_or_given() {
        let s = Subnet::of(None, Some("10.100.0.1/24")).unwrap();
        assert_eq!(s.net.to_string(), "10.100.0.0/24");
        assert_eq!(s.gateway, Some(ip("10.100.0.1")));
        let s = Subnet::of(Some("10.0.0.0/29"), None).unwrap();
        assert_eq!((s.net.to_string(), s.gateway), ("10.0.0.0/29".into(), None));
        assert_eq!(Subnet::of(None, None), None);
        assert_eq!(Subnet::of(Some("nonsense"), Some("10.0.0.1/24")), None);
    }

    #[test]
    fn usable_addresses_and_capacity() {
        let s = Subnet::of(None, Some("10.0.0.1/29")).unwrap();
        assert_eq!(s.check(ip("10.0.0.0")), Err(Unusable::Network));
        assert_eq!(s.check(ip("10.0.0.7")), Err(Unusable::Broadcast));
        assert_eq!(s.check(ip("10.0.0.1")), Err(Unusable::Gateway));
        assert_eq!(s.check(ip("10.0.0.8")), Err(Unusable::Outside));
        assert_eq!(s.check(ip("fd00::2")), Err(Unusable::Outside));
        assert_eq!(s.check(ip("10.0.0.2")), Ok(()));
        // 8 addresses, less network, broadcast and gateway.
        assert_eq!(s.capacity(), 5);
        // A gateway outside the given subnet takes nothing from it.
        let s = Subnet::of(Some("10.0.0.0/29"), None).unwrap();
        assert_eq!(s.capacity(), 6);
        // Point-to-point subnets have no network or broadcast address.
        let s = Subnet::of(Some("10.0.0.0/31"), None).unwrap();
        assert_eq!((s.check(ip("10.0.0.0")), s.capacity()), (Ok(()), 2));
        let s = Subnet::of(Some("10.0.0.5/32"), None).unwrap();
        assert_eq!(s.capacity(), 1);
        let s = Subnet::of(None, Some("fd00::1/64")).unwrap();
        assert_eq!(s.capacity(), (1u128 << 64) - 3);
        assert_eq!(s.address(to_number(ip("fd00::9"))), ip("fd00::9"));
    }

    #[test]
    fn the_kernels_ip_argument() {
        let s = Subnet::of(None, Some("10.100.0.1/24")).unwrap();
        assert_eq!(
            s.kernel_argument(ip("10.100.0.7"), "web-1").as_deref(),
            Some("ip=10.100.0.7::10.100.0.1:255.255.255.0:web-1:eth0:off")
        );
        let s = Subnet::of(Some("10.0.0.0/16"), None).unwrap();
        assert_eq!(
            s.kernel_argument(ip("10.0.3.4"), "db").as_deref(),
            Some("ip=10.0.3.4:::255.255.0.0:db:eth0:off")
        );
        let s = Subnet::of(None, Some("fd00::1/64")).unwrap();
        assert_eq!(s.kernel_argument(ip("fd00::2"), "v6"), None);
    }
}
