//! Networking checks: VLAN ids unique per network, interface names valid and unique
//! per host (also the VLAN bridges `<bridge>v<id>` of kernels without VLAN filtering),
//! VLAN gateways of a host in disjoint subnets, MACs valid, unicast and unique; and the
//! derived bridge names and MACs.

use std::collections::{HashMap, HashSet};

use ipnet::IpNet;

use super::Report;
use crate::derive::{bridge_name, mac_address, vlan_bridge_name};
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
        let here = s.field_or_name("id", 0);
        match seen.get(&(vlan.network.as_str(), vlan.id)) {
            Some(&first) => {
                let (first_label, help) =
                    report.first(here, first, "give each VLAN of a network its own id");
                report.push_in(
                    &vlan.name,
                    s,
                    here,
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
            let here = s.field_or_name(field, 0);
            if let Some(reason) = interface_name_error(name) {
                report.push_in(
                    &network.name,
                    s,
                    here,
                    SchemaError::InvalidInterfaceName {
                        name: name.to_owned(),
                        reason,
                        span: here.span,
                    },
                );
                continue;
            }
            let hosts = network.on_hosts();
            let taken = hosts
                .iter()
                .find_map(|h| Some((h, *seen.get(&(h.as_str(), name))?)));
            match taken {
                Some((host, first)) => {
                    let (first_label, help) = report.first(
                        here,
                        first,
                        "each bridge and uplink of a host needs its own interface",
                    );
                    report.push_in(
                        &network.name,
                        s,
                        here,
                        SchemaError::DuplicateInterface {
                            name: name.to_owned(),
                            host: host.clone(),
                            span: here.span,
                            first: first_label,
                            help,
                        },
                    );
                }
                None => {
                    for host in hosts {
                        seen.insert((host.as_str(), name), here);
                    }
                }
            }
        }
    }
}

/// Pushes a "these two collide" diagnostic: once with both spans labelled when the two
/// are in one file, else once in each file, each pointing at the other.
pub(super) fn report_pair(
    report: &mut Report<'_>,
    here: Site,
    there: Site,
    help: &str,
    make: impl Fn(Site, Option<miette::SourceSpan>, String) -> SchemaError,
) {
    let (label, help_here) = report.first(here, there, help);
    report.push(here.file, make(here, label, help_here));
    if here.file != there.file {
        let (label, help_there) = report.first(there, here, help);
        report.push(there.file, make(there, label, help_there));
    }
}

/// Reports a VLAN whose own bridge (`<bridge>v<id>`, shortened to 15 bytes: what the
/// runtime makes where the kernel has no VLAN filtering) has the name of another VLAN's
/// bridge, of a network's bridge or of an uplink on the same host.
pub fn check_vlan_bridges(config: &Config, spans: &Spans, report: &mut Report<'_>) {
    // (host, interface) -> where it is declared and what it is.
    let mut taken: HashMap<(&str, String), (Site, String)> = HashMap::new();
    for (network, s) in config.networks.iter().zip(&spans.networks) {
        let given = [
            ("bridge", Some(&network.bridge)),
            ("uplink", network.uplink.as_ref()),
        ];
        for (field, name) in given {
            let Some(name) = name else { continue };
            for host in network.on_hosts() {
                let what = format!("the {field} of network `{}`", network.name);
                taken
                    .entry((host.as_str(), name.clone()))
                    .or_insert((s.field_or_name(field, 0), what));
            }
        }
    }
    let mut ids: HashSet<(&str, u16)> = HashSet::new();
    for (vlan, s) in config.vlans.iter().zip(&spans.vlans) {
        let Some(network) = config.networks.iter().find(|n| n.name == vlan.network) else {
            continue; // a dangling reference, already reported
        };
        let invalid = vlan.id == 0 || interface_name_error(&network.bridge).is_some();
        if invalid || !ids.insert((&vlan.network, vlan.id)) {
            continue; // already reported (a bad id or bridge, or an id used twice)
        }
        let name = vlan_bridge_name(&network.bridge, vlan.id);
        let here = s.field_or_name("id", 0);
        let what = format!("the VLAN bridge of VLAN `{}`", vlan.name);
        let hosts = network.on_hosts();
        let collision = hosts
            .iter()
            .find_map(|h| Some((h, taken.get(&(h.as_str(), name.clone()))?)));
        match collision {
            Some((host, (there, other))) => {
                let help = format!(
                    "without bridge VLAN filtering each VLAN gets a bridge `<bridge>v<id>`, \
                     the bridge part shortened to fit 15 bytes; give the networks bridge \
                     names that differ within their first {} bytes",
                    crate::derive::IFNAME_MAX - 1 - vlan.id.to_string().len()
                );
                let (there, other) = (*there, other.clone());
                report_pair(report, here, there, &help, |site, first, help| {
                    let (what, other) = if site == here {
                        (what.clone(), other.clone())
                    } else {
                        (other.clone(), what.clone())
                    };
                    SchemaError::VlanBridgeCollision {
                        name: name.clone(),
                        what,
                        other,
                        host: host.clone(),
                        span: site.span,
                        first,
                        help,
                    }
                });
            }
            None => {
                for host in hosts {
                    taken.insert((host.as_str(), name.clone()), (here, what.clone()));
                }
            }
        }
    }
}

/// Reports two VLAN gateways of one host whose subnets overlap (one contains the
/// other), or the same gateway address twice.
pub fn check_gateways(config: &Config, spans: &Spans, report: &mut Report<'_>) {
    struct Gateway<'c> {
        net: IpNet,
        text: &'c str,
        vlan: &'c str,
        site: Site,
    }
    let mut by_host: HashMap<&str, Vec<Gateway<'_>>> = HashMap::new();
    for (vlan, s) in config.vlans.iter().zip(&spans.vlans) {
        let Some(text) = vlan.gateway.as_deref() else {
            continue;
        };
        let Some(network) = config.networks.iter().find(|n| n.name == vlan.network) else {
            continue;
        };
        let Ok(net) = text.parse::<IpNet>() else {
            continue; // an invalid gateway, already reported
        };
        // The gateway lives on one host (see `spanning::check_gateway_hosts`).
        let host = match (&vlan.gateway_host, network.on_hosts()) {
            (Some(host), _) => host,
            (None, [host]) => host,
            (None, _) => continue, // a spanning VLAN without `gateway-host`, reported
        };
        by_host.entry(host).or_default().push(Gateway {
            net,
            text,
            vlan: &vlan.name,
            site: s.field_or_name("gateway", 0),
        });
    }
    let mut hosts: Vec<_> = by_host.into_iter().collect();
    hosts.sort_by_key(|(host, _)| *host);
    for (host, mut gateways) in hosts {
        // Sorted by subnet (wider first at one start), a subnet overlaps an earlier one
        // exactly when one of the subnets still open around it contains it. One that
        // overlaps is reported and not kept open, so each is reported once.
        gateways.sort_by_key(|g| (g.net.trunc(), g.site.span.offset()));
        let mut open: Vec<usize> = Vec::new();
        for i in 0..gateways.len() {
            let subnet = gateways[i].net.trunc();
            while open
                .last()
                .is_some_and(|&o| !gateways[o].net.trunc().contains(&subnet))
            {
                open.pop();
            }
            if let Some(&o) = open.last() {
                let (a, b) = (&gateways[i], &gateways[o]);
                let relation = if a.net.addr() == b.net.addr() {
                    "is the same address as the gateway"
                } else {
                    "overlaps the subnet of gateway"
                };
                let help = "give each VLAN of a host a subnet of its own";
                let (later, earlier) =
                    if a.site.span.offset() >= b.site.span.offset() || a.site.file != b.site.file {
                        (a, b)
                    } else {
                        (b, a)
                    };
                report_pair(
                    report,
                    later.site,
                    earlier.site,
                    help,
                    |site, first, help| {
                        let (me, other) = if site == later.site {
                            (later, earlier)
                        } else {
                            (earlier, later)
                        };
                        SchemaError::OverlappingGateways {
                            gateway: me.text.to_owned(),
                            vlan: me.vlan.to_owned(),
                            relation,
                            other: other.text.to_owned(),
                            other_vlan: other.vlan.to_owned(),
                            host: host.to_owned(),
                            span: site.span,
                            first,
                            help,
                        }
                    },
                );
                continue;
            }
            open.push(i);
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
            let here = s.field_or_name("nic.mac", i as u32);
            let Some(bytes) = parse_mac(&nic.mac) else {
                report.push_in(
                    &vm.name,
                    s,
                    here,
                    SchemaError::InvalidMac {
                        mac: nic.mac.clone(),
                        span: here.span,
                    },
                );
                continue;
            };
            if bytes[0] & 1 == 1 {
                report.push_in(
                    &vm.name,
                    s,
                    here,
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
                    report.push_in(
                        &vm.name,
                        s,
                        here,
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

    /// The diagnostic codes of loading `body` after a project and two hosts.
    fn codes(body: &str) -> Vec<String> {
        super::super::codes_of(&format!("project \"lab\"\nhost \"a\"\nhost \"b\"\n{body}"))
    }

    #[test]
    fn gateways_overlap_only_on_one_host() {
        let two = |host2: &str, gw1: &str, gw2: &str| {
            codes(&format!(
                "network \"n1\" host=\"a\" bridge=\"br1\"\nnetwork \"n2\" host=\"{host2}\" bridge=\"br2\"\n\
                 vlan \"v1\" network=\"n1\" id=1 {{\n gateway \"{gw1}\"\n}}\n\
                 vlan \"v2\" network=\"n2\" id=2 {{\n gateway \"{gw2}\"\n}}\n"
            ))
        };
        let overlap = ["vmctl::schema::overlapping_gateways"];
        assert_eq!(two("a", "10.0.0.1/24", "10.0.0.1/24"), overlap);
        assert_eq!(two("a", "10.0.0.1/16", "10.0.200.1/24"), overlap);
        assert_eq!(two("a", "fd00::1/64", "fd00::2/120"), overlap);
        assert!(two("a", "10.0.0.1/25", "10.0.0.129/25").is_empty());
        assert!(two("a", "10.0.0.1/24", "fd00::1/64").is_empty());
        assert!(two("b", "10.0.0.1/24", "10.0.0.1/24").is_empty());
    }

    #[test]
    fn vlan_bridges_collide_only_on_one_host() {
        let two = |host2: &str, bridge2: &str| {
            codes(&format!(
                "network \"n1\" host=\"a\" bridge=\"labbridge-01\"\n\
                 network \"n2\" host=\"{host2}\" bridge=\"{bridge2}\"\n\
                 vlan \"v1\" network=\"n1\" id=100\nvlan \"v2\" network=\"n2\" id=100\n"
            ))
        };
        let collision = ["vmctl::schema::vlan_bridge_collision"];
        assert_eq!(two("a", "labbridge-02"), collision);
        // n2's own bridge has v1's VLAN bridge name, which is also v2's (shortened).
        assert_eq!(two("a", "labbridge-0v100"), [collision[0], collision[0]]);
        assert!(two("a", "labbridgeX01").is_empty());
        assert!(two("b", "labbridge-02").is_empty());
    }

    #[test]
    fn interface_names() {
        assert_eq!(interface_name_error("vmbr0"), None);
        assert!(interface_name_error("a-very-long-bridge").is_some());
        assert!(interface_name_error("a/b").is_some());
        assert!(interface_name_error("").is_some());
    }
}
