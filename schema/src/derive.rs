//! Stable derived names and addresses: bridge names (≤ 15 bytes), NIC MACs, tap names,
//! and the VNI and VXLAN link name of a VLAN whose network spans hosts. (The MAC the VMM
//! derives from a tap name is the runtime's; it hashes with [`fnv1a_32`] here.) The
//! runtime makes interfaces under these names, and the planner checks them against the
//! names a host reports as taken, so both use these very functions.
//!
//! Everything here hashes with FNV-1a, fixed across runs, versions and machines (std's
//! hasher is randomly seeded), so a derived value never changes while its inputs don't.
//! These two functions are vmctl's only FNV: every derived name and MAC uses them.

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a_64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// 32-bit FNV-1a of `bytes`.
pub fn fnv1a_32(bytes: impl IntoIterator<Item = u8>) -> u32 {
    bytes.into_iter().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// 64-bit FNV-1a over the parts, each followed by a `/` separator.
pub fn fnv1a(parts: &[&str]) -> u64 {
    fnv1a_64(
        parts
            .iter()
            .flat_map(|part| part.bytes().chain(std::iter::once(b'/'))),
    )
}

/// A short readable prefix of a name: its first `max` characters of `[a-z0-9]`.
fn prefix(name: &str, max: usize) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(max)
        .collect()
}

/// The bridge name of a network that does not name one: `vm-<net>-<hash>`, at most 15
/// bytes, different per project so two projects on one host never share a bridge.
pub fn bridge_name(project: &str, network: &str) -> String {
    let hash = fnv1a(&[project, "network", network]) & 0xf_ffff;
    format!("vm-{}-{hash:05x}", prefix(network, 6))
}

/// The longest Linux interface name (`IFNAMSIZ` - 1).
pub const IFNAME_MAX: usize = 15;

/// The bridge of VLAN `id` of the network whose bridge is `bridge`, where the kernel has
/// no VLAN filtering: `<bridge>v<id>`, the bridge part shortened so the whole fits in
/// [`IFNAME_MAX`] bytes. (The runtime names the interface with this very function.)
pub fn vlan_bridge_name(bridge: &str, id: u16) -> String {
    suffixed_ifname(bridge, &format!("v{id}"))
}

/// The gateway VLAN link of `bridge` for VLAN `id` on a VLAN-filtering bridge:
/// `<bridge>.<id>`, shortened like [`vlan_bridge_name`].
pub fn gateway_link_name(bridge: &str, id: u16) -> String {
    suffixed_ifname(bridge, &format!(".{id}"))
}

fn suffixed_ifname(bridge: &str, suffix: &str) -> String {
    let keep = IFNAME_MAX.saturating_sub(suffix.len());
    let mut end = bridge.len().min(keep);
    while !bridge.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &bridge[..end])
}

/// The largest VXLAN network identifier: VNIs are 24 bits.
pub const MAX_VNI: u32 = 0xff_ffff;

/// The VNI of VLAN `id` of `network` (a network that spans hosts) when its `vlan` node
/// gives none: `1 + fnv1a_64("<project>/vxlan/<network>/<id>/") mod 16777215`, so 1 to
/// 16777215, the same on every host and in every run, different per project.
pub fn vni(project: &str, network: &str, id: u16) -> u32 {
    let id = id.to_string();
    let hash = fnv1a(&[project, "vxlan", network, &id]);
    // The remainder is below MAX_VNI, so the conversion cannot fail.
    1 + u32::try_from(hash % u64::from(MAX_VNI)).unwrap_or(0)
}

/// The VXLAN link of the VLAN with VNI `vni` on each of its hosts: `vx<vni>` in
/// decimal, at most 10 bytes. A host has one VXLAN per VNI (the kernel refuses two with
/// one VNI, local address and port), so the name is unique on it.
pub fn vxlan_name(vni: u32) -> String {
    format!("vx{vni}")
}

/// A stable tap name for NIC `nic_index` of `vm` in `project`: `vt` and 12 hex digits of
/// a hash of the three (FNV-1a, 64 bit), 14 bytes. Stable across runs and machines, so an
/// apply after a crash finds the tap it made before.
pub fn tap_name(project: &str, vm: &str, nic_index: usize) -> String {
    let key = format!("{project}\0{vm}\0{nic_index}");
    let hash = fnv1a_64(key.bytes());
    format!("vt{:012x}", hash >> 16)
}

/// The MAC of a VM's NIC that does not name one: QEMU/KVM's locally administered
/// `52:54:00` prefix and three bytes of the hash of project, VM and NIC index. `salt`
/// is 0 unless that address is already taken.
pub fn mac_address(project: &str, vm: &str, index: usize, salt: u32) -> String {
    let salt = salt.to_string();
    let mut parts = vec![project, vm];
    let index = index.to_string();
    parts.push(&index);
    if salt != "0" {
        parts.push(&salt);
    }
    let h = fnv1a(&parts).to_be_bytes();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", h[5], h[6], h[7])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_name_is_stable_short_and_distinct() {
        let a = tap_name("lab", "web-1", 0);
        assert_eq!(a, tap_name("lab", "web-1", 0));
        assert_eq!(a.len(), 14);
        assert_ne!(a, tap_name("lab", "web-1", 1));
        assert_ne!(a, tap_name("lab2", "web-1", 0));
        assert_ne!(tap_name("a", "bc", 0), tap_name("ab", "c", 0));
    }

    /// Tap names are on hosts: they never change. These are the names vmctl derived
    /// before its hash helpers were made one.
    #[test]
    fn tap_names_are_pinned() {
        for (project, vm, nic, tap) in [
            ("lab", "web-1", 0, "vtc4311ed82036"),
            ("lab", "web-1", 1, "vtc4311fd82036"),
            ("prod", "db-1", 3, "vtef74fc7c5c58"),
            ("a", "bc", 0, "vtdc95a915ea40"),
        ] {
            assert_eq!(tap_name(project, vm, nic), tap, "{project} {vm} {nic}");
        }
    }

    #[test]
    fn fnv_is_the_reference_function() {
        // FNV-1a 64 of "a/" computed by hand from the reference algorithm.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in b"a/" {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        assert_eq!(fnv1a(&["a"]), h);
        // The published test vectors of FNV-1a.
        assert_eq!(fnv1a_64(*b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a_64(*b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a_32(*b""), 0x811c9dc5);
        assert_eq!(fnv1a_32(*b"a"), 0xe40c292c);
        assert_eq!(fnv1a_32(*b"foobar"), 0xbf9cf968);
    }

    /// Derived names and MACs are on hosts and in guests: they never change. These are
    /// the values vmctl derived before its hash helpers were made one.
    #[test]
    fn derived_values_are_pinned() {
        for (project, network, bridge) in [
            ("lab", "lan", "vm-lan-dae5e"),
            ("prod", "lan", "vm-lan-3a03e"),
            ("lab", "a-very-long-network-name", "vm-averyl-59a33"),
            ("x", "Storage_Net.2", "vm-storag-9e475"),
        ] {
            assert_eq!(bridge_name(project, network), bridge, "{project} {network}");
        }
        for (project, vm, index, salt, mac) in [
            ("lab", "web-1", 0, 0, "52:54:00:a1:13:a1"),
            ("lab", "web-1", 1, 0, "52:54:00:a3:ec:98"),
            ("lab", "web-1", 0, 1, "52:54:00:44:b5:2d"),
            ("prod", "db", 3, 7, "52:54:00:57:b8:48"),
        ] {
            assert_eq!(mac_address(project, vm, index, salt), mac, "{project} {vm}");
        }
    }

    #[test]
    fn derived_names_are_short_stable_and_distinct() {
        let a = bridge_name("lab", "a-very-long-network-name");
        assert!(a.len() <= 15, "{a}");
        assert_eq!(a, bridge_name("lab", "a-very-long-network-name"));
        assert_ne!(bridge_name("lab", "lan"), bridge_name("prod", "lan"));
        assert!(bridge_name("lab", "lan").starts_with("vm-lan-"));
    }

    #[test]
    fn vlan_bridge_names_are_pinned_and_fit() {
        assert_eq!(vlan_bridge_name("vmbr0", 100), "vmbr0v100");
        assert_eq!(vlan_bridge_name("vm-lan-0a1b2", 100), "vm-lan-0a1bv100");
        assert_eq!(vlan_bridge_name("labbridge-01", 4094), "labbridge-v4094");
        assert_eq!(gateway_link_name("vmbr0", 100), "vmbr0.100");
        assert_eq!(gateway_link_name("a-fifteen-bytes", 7), "a-fifteen-byt.7");
        for id in [1, 10, 100, 4094] {
            assert!(vlan_bridge_name("a-fifteen-bytes", id).len() <= IFNAME_MAX);
        }
    }

    /// VNIs are on every host of a network and in other systems' configs: they never
    /// change.
    #[test]
    fn vnis_are_pinned_in_range_and_distinct() {
        for (project, network, id, pinned) in [
            ("lab", "lan", 100, 222_400),
            ("lab", "lan", 200, 12_262_546),
        ] {
            assert_eq!(
                vni(project, network, id),
                pinned,
                "{project} {network} {id}"
            );
        }
        let h = fnv1a(&["lab", "vxlan", "lan", "100"]);
        assert_eq!(u64::from(vni("lab", "lan", 100)), 1 + h % 0xff_ffff);
        assert_ne!(vni("lab", "lan", 100), vni("lab", "lan", 200));
        assert_ne!(vni("lab", "lan", 100), vni("prod", "lan", 100));
        assert_eq!(vxlan_name(MAX_VNI), "vx16777215");
        assert!(vxlan_name(MAX_VNI).len() <= IFNAME_MAX);
    }

    #[test]
    fn derived_macs_are_stable_unicast_and_salted() {
        let m = mac_address("lab", "web-1", 0, 0);
        assert_eq!(m, mac_address("lab", "web-1", 0, 0));
        assert!(m.starts_with("52:54:00:"));
        assert_eq!(m.len(), 17);
        assert_ne!(m, mac_address("lab", "web-1", 1, 0));
        assert_ne!(m, mac_address("lab", "web-1", 0, 1));
    }
}
