//! The project mark that vmctl puts on network interfaces it creates, in the interface
//! alias (`IFLA_IFALIAS`): `vmctl:<project>:<name>`.
//!
//! The name part says what the interface is for: a network name on a network's bridge,
//! `<network>/<vlan-id>` on what carries one VLAN of it (the gateway VLAN link on a
//! VLAN-filtering bridge, or the VLAN's own bridge where the kernel cannot filter), and
//! `<vm>#<nic-index>` on a tap. An alias without the `vmctl:` prefix, or of another
//! project, is never touched.

/// The prefix of every alias vmctl writes.
pub const PREFIX: &str = "vmctl:";

/// Longest Linux interface name (`IFNAMSIZ` - 1).
pub const IFNAME_MAX: usize = 15;

/// A parsed `vmctl:<project>:<name>` alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub project: String,
    pub name: String,
}

impl Mark {
    pub fn new(project: &str, name: &str) -> Self {
        Mark {
            project: project.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The alias text for this mark.
    pub fn alias(&self) -> String {
        format!("{PREFIX}{}:{}", self.project, self.name)
    }

    /// Parses an alias; `None` when it is not a vmctl mark.
    pub fn parse(alias: &str) -> Option<Mark> {
        let rest = alias.strip_prefix(PREFIX)?;
        let (project, name) = rest.split_once(':')?;
        if project.is_empty() || name.is_empty() {
            return None;
        }
        Some(Mark::new(project, name))
    }

    /// The mark of what carries VLAN `vlan_id` of `network`: `<network>/<id>`.
    pub fn vlan(project: &str, network: &str, vlan_id: u16) -> Self {
        Mark::new(project, &format!("{network}/{vlan_id}"))
    }

    /// Splits a VLAN mark's name into network name and VLAN id.
    pub fn vlan_parts(&self) -> Option<(&str, u16)> {
        let (network, id) = self.name.rsplit_once('/')?;
        if network.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((network, id.parse().ok()?))
    }

    /// The mark of a VM NIC's tap: `<vm>#<index>`.
    pub fn tap(project: &str, vm: &str, nic_index: usize) -> Self {
        Mark::new(project, &format!("{vm}#{nic_index}"))
    }

    /// Splits a tap mark's name into VM name and NIC index.
    pub fn tap_parts(&self) -> Option<(&str, usize)> {
        let (vm, index) = self.name.rsplit_once('#')?;
        Some((vm, index.parse().ok()?))
    }
}

/// The name of the gateway VLAN link of `bridge` for VLAN `id`: `<bridge>.<id>`, with the
/// bridge part shortened so the whole fits in 15 bytes.
pub use vmctl_schema::derive::gateway_link_name as gateway_ifname;

/// The name of the bridge of VLAN `id` of `bridge`'s network where the kernel has no
/// VLAN filtering: `<bridge>v<id>`, shortened like [`gateway_ifname`]. The same function
/// `validate` checks the names for collisions with.
pub use vmctl_schema::derive::vlan_bridge_name as vlan_bridge_ifname;

/// A stable tap name for NIC `nic_index` of `vm` in `project`: `vt` and 12 hex digits
/// of a hash of the three. The same function the planner checks for names taken.
pub use vmctl_schema::derive::tap_name as tap_ifname;

/// Whether `name` is safe as a file name component: not empty, no `/`, no NUL, not
/// starting with `.`.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_round_trips() {
        let mark = Mark::new("lab", "lan");
        assert_eq!(mark.alias(), "vmctl:lab:lan");
        assert_eq!(Mark::parse("vmctl:lab:lan"), Some(mark));
    }

    #[test]
    fn foreign_aliases_are_not_marks() {
        for alias in [
            "",
            "lan",
            "vmctl:",
            "vmctl:lab",
            "vmctl::lan",
            "vmctl:lab:",
            "xvmctl:a:b",
        ] {
            assert_eq!(Mark::parse(alias), None, "{alias:?}");
        }
    }

    #[test]
    fn tap_mark_splits_into_vm_and_index() {
        let mark = Mark::tap("lab", "web#1", 3);
        assert_eq!(mark.alias(), "vmctl:lab:web#1#3");
        assert_eq!(mark.tap_parts(), Some(("web#1", 3)));
        assert_eq!(Mark::new("lab", "lan").tap_parts(), None);
    }

    #[test]
    fn vlan_mark_splits_into_network_and_id() {
        let mark = Mark::vlan("lab", "lan", 100);
        assert_eq!(mark.alias(), "vmctl:lab:lan/100");
        assert_eq!(mark.vlan_parts(), Some(("lan", 100)));
        assert_eq!(Mark::new("lab", "lan").vlan_parts(), None);
        assert_eq!(Mark::new("lab", "/100").vlan_parts(), None);
        assert_eq!(Mark::new("lab", "lan/x").vlan_parts(), None);
    }

    #[test]
    fn gateway_ifname_fits_ifnamsiz() {
        assert_eq!(vlan_bridge_ifname("vmbr0", 100), "vmbr0v100");
        assert_eq!(
            vlan_bridge_ifname("abcdefghijklmno", 4094),
            "abcdefghijv4094"
        );
        assert_eq!(gateway_ifname("vmbr0", 100), "vmbr0.100");
        let long = gateway_ifname("abcdefghijklmno", 4094);
        assert_eq!(long, "abcdefghij.4094");
        assert!(long.len() <= IFNAME_MAX);
    }

    #[test]
    fn safe_file_names() {
        assert!(is_safe_file_name("web-1-root"));
        for bad in ["", ".", "..", ".hidden", "a/b", "a\0b"] {
            assert!(!is_safe_file_name(bad), "{bad:?}");
        }
    }
}
