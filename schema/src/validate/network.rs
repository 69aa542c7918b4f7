//! Networking checks: VLAN ids unique per network, interface names valid and unique
//! per host, MACs valid, unicast and unique; and the derived bridge names and MACs.

use std::collections::{HashMap, HashSet};

use super::Report;
use crate::derive::{bridge_name, mac_address};
use crate::diagnostics::SchemaError;
use crate::model::Config;
use crate::spans::{Site, Spans};

/// Gives every network without a `bridge` its derived name.
pub fn derive_bridges(config: &mut Config) {
    for network in &mut config.networks {
        if network.bridge.is_empty() {
            network.bridge = bridge_name(&config.project, &network.name);
        }
    }
}

/// Reports two VLANs with one id on one network.
pub fn check_vlan_ids(config: &Config, spans: &Spans, report: &mut Report<'_>) {
    let mut seen: HashMap<(&str, u16), Site> = HashMap::new();
    for (vlan, s) in config.vlans.iter().zip(&spans.vlans) {
        if vlan.id == 0 {
            continue; // out of range, already reported
        }
        let here = s.site(s.field_or_name("id", 0));
        match seen.get(&(vlan.network.as_str(), vlan.id)) {
            Some(&first) => {
                let (first_label, help) =
                    report.first(here, first, "give each VLAN of a network its own id");
                report.push(
                    here.file,
                    SchemaError::DuplicateVlanId {
                        id: vlan.id,
                        network: vlan.network.clone(),
                        span: here.span,
                        first: first_label,
                        help,
                    },
                );
            }
            None => {
                seen.insert((vlan.network.as_str(), vlan.id), here);
            }
        }
    }
}

/// Why `name` cannot be a Linux interface name, if it cannot.
pub fn interface_name_error(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty")
    } else if name.len() > 15 {
        Some("longer than 15 bytes")
    } else if name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        Some("contains `/`, `:`, whitespace or is `.`/`..`")
    } else {
        None
    }
}

/// Reports invalid interface names and names used twice on one host (bridges and
/// uplinks).
pub fn check_interfaces(config: &Config, spans: &Spans, report: &mut Report<'_>) {
    let mut seen: HashMap<(&str, &str), Site> = HashMap::new();
    for (network, s) in config.networks.iter().zip(&spans.networks) {
        let given = [
            ("bridge", Some(network.bridge.as_str())),
            ("uplink", network.uplink.as_deref()),
        ];
        for (field, name) in given {
            let Some(name) = name else { continue };
            let here = s.site(s.field_or_name(field, 0));
            if let Some(reason) = interface_name_error(name) {
                report.push(
                    here.file,
                    SchemaError::InvalidInterfaceName {
                        name: name.to_owned(),
                        reason,
                        span: here.span,
                    },
                );
                continue;
            }
            match seen.get(&(network.host.as_str(), name)) {
                Some(&first) => {
                    let (first_label, help) = report.first(
                        here,
                        first,
                        "each bridge and uplink of a host needs its own interface",
                    );
                    report.push(
                        here.file,
                        SchemaError::DuplicateInterface {
                            name: name.to_owned(),
                            host: network.host.clone(),
                            span: here.span,
                            first: first_label,
                            help,
                        },
                    );
                }
                None => {
                    seen.insert((network.host.as_str(), name), here);
                }
            }
        }
    }
}

pub use crate::units::parse_mac;

/// Checks the given MACs (syntax, unicast, unique), writes them in lower case, then
/// derives a MAC for every NIC without one. Derived MACs are assigned in (VM name, NIC
/// index) order and skip any address already taken, so they stay stable.
pub fn assign_macs(config: &mut Config, spans: &Spans, report: &mut Report<'_>) {
    let mut taken: HashMap<String, Site> = HashMap::new();
    for (vm, s) in config.vms.iter_mut().zip(&spans.vms) {
        for (i, nic) in vm.nics.iter_mut().enumerate() {
            if nic.mac.is_empty() {
                continue;
            }
            let here = s.site(s.field_or_name("nic.mac", i as u32));
            let Some(bytes) = parse_mac(&nic.mac) else {
                report.push(
                    here.file,
                    SchemaError::InvalidMac {
                        mac: nic.mac.clone(),
                        span: here.span,
                    },
                );
                continue;
            };
            if bytes[0] & 1 == 1 {
                report.push(
                    here.file,
                    SchemaError::MulticastMac {
                        mac: nic.mac.clone(),
                        span: here.span,
                    },
                );
                continue;
            }
            nic.mac = nic.mac.to_ascii_lowercase();
            match taken.get(&nic.mac) {
                Some(&first) => {
                    let (first_label, help) = report.first(
                        here,
                        first,
                        "give each NIC its own MAC, or leave `mac` out to derive one",
                    );
                    report.push(
                        here.file,
                        SchemaError::DuplicateMac {
                            mac: nic.mac.clone(),
                            span: here.span,
                            first: first_label,
                            help,
                        },
                    );
                }
                None => {
                    taken.insert(nic.mac.clone(), here);
                }
            }
        }
    }
    let mut taken: HashSet<String> = taken.into_keys().collect();
    let mut missing: Vec<(usize, usize)> = Vec::new();
    for (v, vm) in config.vms.iter().enumerate() {
        for (n, nic) in vm.nics.iter().enumerate() {
            if nic.mac.is_empty() {
                missing.push((v, n));
            }
        }
    }
    missing.sort_by(|a, b| {
        (config.vms[a.0].name.as_str(), a.1).cmp(&(config.vms[b.0].name.as_str(), b.1))
    });
    for (v, n) in missing {
        let vm = &config.vms[v];
        let mut salt = 0;
        let mac = loop {
            let mac = mac_address(&config.project, &vm.name, n, salt);
            if !taken.contains(&mac) {
                break mac;
            }
            salt += 1;
        };
        taken.insert(mac.clone());
        config.vms[v].nics[n].mac = mac;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert_eq!(interface_name_error("vmbr0"), None);
        assert!(interface_name_error("a-very-long-bridge").is_some());
        assert!(interface_name_error("a/b").is_some());
        assert!(interface_name_error("").is_some());
    }
}
