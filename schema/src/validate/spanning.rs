//! Networks that span hosts (`hosts …`): every host of one has an underlay address of
//! its own, all of one address family; each of its VLANs gets a VNI (given, or derived:
//! [`crate::derive::vni`]) that no other VLAN uses on a host they share; and a VLAN's
//! `gateway` lives on one host, named by `gateway-host` when the network spans hosts.

use std::collections::HashMap;
use std::net::IpAddr;

use super::network::report_pair;
use super::{Index, Report};
use crate::derive;
use crate::diagnostics::SchemaError;
use crate::model::{Config, Network, Vlan};
use crate::spans::{Site, Spans};

/// Gives every VLAN of a network that spans hosts its VNI when it names none, and
/// reports a `vni` given on a VLAN of a network on one host (there is no tunnel).
pub fn derive_vnis(config: &mut Config, spans: &Spans, report: &mut Report<'_>) {
    let spanning: HashMap<&str, bool> = config
        .networks
        .iter()
        .map(|n| (n.name.as_str(), n.spans_hosts()))
        .collect();
    for (vlan, s) in config.vlans.iter_mut().zip(&spans.vlans) {
        let Some(&spans_hosts) = spanning.get(vlan.network.as_str()) else {
            continue; // a dangling reference, reported
        };
        match (spans_hosts, vlan.vni) {
            (true, None) if vlan.id != 0 => {
                vlan.vni = Some(derive::vni(&config.project, &vlan.network, vlan.id));
            }
            (false, Some(vni)) => {
                let here = s.field_or_name("vni", 0);
                report.push_in(
                    &vlan.name,
                    s,
                    here,
                    SchemaError::InvalidValue {
                        field: "vni",
                        found: vni.to_string(),
                        span: here.span,
                        reason: format!(
                            "network `{}` is on one host: no tunnel carries this VLAN",
                            vlan.network
                        ),
                        help: "a VNI is for a VLAN of a network with `hosts`; remove `vni`",
                    },
                );
                vlan.vni = None;
            }
            _ => {}
        }
    }
}

/// Reports a host of a spanning network without an underlay address, two of its hosts
/// with one address, and addresses of both families in one network.
pub fn check_underlays(config: &Config, spans: &Spans, index: &Index<'_>, report: &mut Report<'_>) {
    for (network, s) in config.networks.iter().zip(&spans.networks) {
        if !network.spans_hosts() {
            continue;
        }
        // (address, host, site) of the hosts seen so far.
        let mut seen: Vec<(IpAddr, &str, Site)> = Vec::new();
        for (i, name) in network.hosts.iter().enumerate() {
            let Some(&h) = index.hosts.get(name.as_str()) else {
                continue; // a dangling reference, reported
            };
            let host = &config.hosts[h];
            let here = s.field_or_name("hosts", i as u32);
            let given = spans.hosts.get(h).and_then(|s| s.field("underlay", 0));
            let Some(address) = host.underlay else {
                if given.is_some() {
                    continue; // an invalid `underlay`, reported
                }
                let help = format!(
                    "add `underlay \"<address>\"` to host `{name}`: the address the other \
                     hosts of the network reach it at (an `ssh` that names an IP address \
                     gives it by default)"
                );
                report.push_in(
                    &network.name,
                    s,
                    here,
                    SchemaError::MissingUnderlay {
                        network: network.name.clone(),
                        host: name.clone(),
                        span: here.span,
                        help,
                    },
                );
                continue;
            };
            if seen.iter().any(|(_, h, _)| h == name) {
                continue; // listed twice, reported
            }
            if let Some(&(_, other, first)) = seen.iter().find(|(a, _, _)| *a == address) {
                report.push_in(
                    &network.name,
                    s,
                    here,
                    SchemaError::DuplicateUnderlay {
                        network: network.name.clone(),
                        host: name.clone(),
                        other: other.to_owned(),
                        address: address.to_string(),
                        span: here.span,
                        first: first.span,
                    },
                );
            } else if let Some(&(other_address, other, first)) = seen
                .iter()
                .find(|(a, _, _)| a.is_ipv4() != address.is_ipv4())
            {
                report.push_in(
                    &network.name,
                    s,
                    here,
                    SchemaError::MixedUnderlay {
                        network: network.name.clone(),
                        host: name.clone(),
                        address: address.to_string(),
                        other: other.to_owned(),
                        other_address: other_address.to_string(),
                        span: here.span,
                        first: first.span,
                    },
                );
            }
            seen.push((address, name, here));
        }
    }
}

/// Reports two VLANs with one VNI on a host that both their networks are on (the kernel
/// has one VXLAN per VNI on a host, and their frames would mix).
pub fn check_vnis(config: &Config, spans: &Spans, index: &Index<'_>, report: &mut Report<'_>) {
    // (host, vni) -> (vlan, network, site) of the first VLAN with it there.
    let mut seen: HashMap<(&str, u32), (&str, &str, Site)> = HashMap::new();
    for (vlan, s) in config.vlans.iter().zip(&spans.vlans) {
        let (Some(vni), Some(network)) = (vlan.vni, network_of(config, index, vlan)) else {
            continue;
        };
        let here = s
            .field("vni", 0)
            .unwrap_or_else(|| s.field_or_name("id", 0));
        let clash = network
            .on_hosts()
            .iter()
            .find_map(|h| Some((h, *seen.get(&(h.as_str(), vni))?)));
        match clash {
            Some((host, (other_vlan, other_network, there))) => {
                let help = format!(
                    "give one of the two VLANs another `vni` (1 to {}); a VNI left out is \
                     derived from the project, network and VLAN id",
                    derive::MAX_VNI
                );
                report_pair(report, here, there, &help, |site, first, help| {
                    let (me, other) = if site == here {
                        (
                            (&vlan.name[..], &vlan.network[..]),
                            (other_vlan, other_network),
                        )
                    } else {
                        (
                            (other_vlan, other_network),
                            (&vlan.name[..], &vlan.network[..]),
                        )
                    };
                    SchemaError::VniCollision {
                        vlan: me.0.to_owned(),
                        network: me.1.to_owned(),
                        other_vlan: other.0.to_owned(),
                        other_network: other.1.to_owned(),
                        vni,
                        host: host.clone(),
                        span: site.span,
                        first,
                        help,
                    }
                });
            }
            None => {
                for host in network.on_hosts() {
                    seen.insert((host, vni), (&vlan.name, &vlan.network, here));
                }
            }
        }
    }
}

/// The gateway rule: a VLAN's `gateway` is on one host. On a network that spans hosts it
/// needs `gateway-host`, one of the network's hosts; `gateway-host` needs a `gateway`.
pub fn check_gateway_hosts(
    config: &Config,
    spans: &Spans,
    index: &Index<'_>,
    report: &mut Report<'_>,
) {
    for (vlan, s) in config.vlans.iter().zip(&spans.vlans) {
        let Some(network) = network_of(config, index, vlan) else {
            continue;
        };
        let problem = match (&vlan.gateway, &vlan.gateway_host) {
            (Some(gateway), None) if network.spans_hosts() => Some((
                "gateway",
                format!(
                    "gateway `{gateway}` of VLAN `{}` needs `gateway-host`: network `{}` spans hosts",
                    vlan.name, network.name
                ),
                "on which host?",
                format!(
                    "a VLAN's gateway address is on one host: add `gateway-host` naming one \
                     of {}",
                    list(network.on_hosts())
                ),
            )),
            (None, Some(host)) => Some((
                "gateway-host",
                format!("VLAN `{}` has `gateway-host` `{host}` but no `gateway`", vlan.name),
                "no gateway to place",
                "add `gateway \"<address>/<prefix>\"`, or remove `gateway-host`".to_owned(),
            )),
            (Some(_), Some(host))
                if index.hosts.contains_key(host.as_str())
                    && !network.on_hosts().contains(host) =>
            {
                Some((
                    "gateway-host",
                    format!(
                        "`gateway-host` `{host}` of VLAN `{}` is not a host of network `{}`",
                        vlan.name, network.name
                    ),
                    "not a host of the network",
                    format!("name one of {}", list(network.on_hosts())),
                ))
            }
            _ => None,
        };
        if let Some((field, problem, label, help)) = problem {
            let here = s.field_or_name(field, 0);
            report.push_in(
                &vlan.name,
                s,
                here,
                SchemaError::GatewayHost {
                    problem,
                    span: here.span,
                    label,
                    help,
                },
            );
        }
    }
}

/// The network `vlan` is on, when it exists.
fn network_of<'c>(config: &'c Config, index: &Index<'_>, vlan: &Vlan) -> Option<&'c Network> {
    config
        .networks
        .get(*index.networks.get(vlan.network.as_str())?)
}

fn list(hosts: &[String]) -> String {
    let names: Vec<String> = hosts.iter().map(|h| format!("`{h}`")).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    /// The diagnostic codes of loading `body` after a project and three hosts (`c` has no
    /// underlay address).
    fn codes(body: &str) -> Vec<String> {
        let text = format!(
            "project \"lab\"\nhost \"a\" {{\n underlay \"192.0.2.1\"\n}}\n\
             host \"b\" {{\n ssh \"root@192.0.2.2\"\n}}\nhost \"c\"\n{body}"
        );
        let codes = super::super::codes_of(&text);
        codes
            .into_iter()
            .map(|c| c.replace("vmctl::schema::", ""))
            .collect()
    }

    fn config(body: &str) -> crate::Config {
        let text = format!(
            "project \"lab\"\nhost \"a\" {{\n underlay \"192.0.2.1\"\n}}\n\
             host \"b\" {{\n ssh \"root@192.0.2.2\"\n}}\nhost \"c\"\n{body}"
        );
        match crate::load_str("main.kdl", &text) {
            Ok(loaded) => loaded.config,
            Err(d) => panic!("{d:?}"),
        }
    }

    #[test]
    fn a_network_is_on_host_or_hosts() {
        assert!(codes("network \"n\" host=\"a\"\n").is_empty());
        assert!(codes("network \"n\" {\n hosts \"a\" \"b\"\n}\n").is_empty());
        assert_eq!(codes("network \"n\"\n"), ["missing_value"]);
        assert_eq!(
            codes("network \"n\" host=\"a\" {\n hosts \"a\" \"b\"\n}\n"),
            ["conflicting_settings"]
        );
        assert_eq!(
            codes("network \"n\" {\n hosts \"a\" \"b\" \"a\"\n}\n"),
            ["duplicate_host"]
        );
        assert_eq!(
            codes("network \"n\" {\n hosts \"a\" \"x\"\n}\n"),
            ["dangling_reference"]
        );
    }

    #[test]
    fn every_host_of_a_spanning_network_has_an_underlay_of_its_own() {
        assert_eq!(
            codes("network \"n\" {\n hosts \"a\" \"b\" \"c\"\n}\n"),
            ["missing_underlay"]
        );
        // One host listed in `hosts` is a network on one host: no tunnel, no underlay.
        assert!(codes("network \"n\" {\n hosts \"c\"\n}\n").is_empty());
        let two = |b: &str| {
            codes(&format!(
                "host \"d\" {{\n underlay \"{b}\"\n}}\nnetwork \"n\" {{\n hosts \"a\" \"d\"\n}}\n"
            ))
        };
        assert_eq!(two("192.0.2.1"), ["duplicate_underlay"]);
        assert_eq!(two("2001:db8::4"), ["mixed_underlay"]);
        assert_eq!(two("192.0.2.0/24"), ["invalid_value"]);
        assert!(two("192.0.2.4").is_empty());
        let config = config("network \"n\" {\n hosts \"a\" \"b\"\n}\n");
        let underlays: Vec<_> = config.hosts.iter().map(|h| h.underlay).collect();
        let ip = |s: &str| Some(s.parse().unwrap());
        assert_eq!(underlays, [ip("192.0.2.1"), ip("192.0.2.2"), None]);
    }

    #[test]
    fn spanning_vlans_get_stable_vnis_that_must_not_collide_on_a_host() {
        let config = config(
            "network \"n\" {\n hosts \"a\" \"b\"\n}\nnetwork \"m\" host=\"a\"\n\
             vlan \"v\" network=\"n\" id=100\nvlan \"w\" network=\"n\" id=200 {\n vni 7\n}\n\
             vlan \"x\" network=\"m\" id=100\n",
        );
        let vnis: Vec<_> = config.vlans.iter().map(|v| v.vni).collect();
        assert_eq!(
            vnis,
            [Some(crate::derive::vni("lab", "n", 100)), Some(7), None]
        );
        let nets =
            "network \"n\" {\n hosts \"a\" \"b\"\n}\nnetwork \"m\" {\n hosts \"b\" \"c\"\n}\n\
                    network \"o\" {\n hosts \"a\" \"c\"\n}\n";
        let vlans = |m: &str| {
            codes(&format!(
                "{nets}host \"d\" {{\n underlay \"192.0.2.4\"\n}}\nhost \"e\" {{\n underlay \"192.0.2.5\"\n}}\n\
                 network \"p\" {{\n hosts \"d\" \"e\"\n}}\n\
                 vlan \"v\" network=\"n\" id=1 {{\n vni 9\n}}\nvlan \"w\" network=\"{m}\" id=2 {{\n vni 9\n}}\n"
            ))
        };
        // `m` and `o` have the host `c` the `missing_underlay` of which is reported too.
        assert_eq!(
            vlans("m"),
            ["missing_underlay", "missing_underlay", "vni_collision"]
        );
        assert_eq!(vlans("p"), ["missing_underlay", "missing_underlay"]);
        assert_eq!(
            vlans("n"),
            ["missing_underlay", "missing_underlay", "vni_collision"]
        );
        assert_eq!(
            codes("network \"m\" host=\"a\"\nvlan \"x\" network=\"m\" id=1 {\n vni 5\n}\n"),
            ["invalid_value"]
        );
        assert_eq!(
            codes("network \"n\" {\n hosts \"a\" \"b\"\n}\nvlan \"x\" network=\"n\" id=1 {\n vni 16777216\n}\n"),
            ["number_too_large"]
        );
    }

    #[test]
    fn a_gateway_is_on_one_host() {
        let vlan = |network: &str, settings: &str| {
            codes(&format!(
                "network \"n\" {{\n hosts \"a\" \"b\"\n}}\nnetwork \"m\" host=\"a\"\n\
                 vlan \"v\" network=\"{network}\" id=1 {{\n{settings}\n}}\n"
            ))
        };
        let gw = "gateway \"10.0.0.1/24\"";
        assert!(vlan("n", &format!("{gw}\n gateway-host \"b\"")).is_empty());
        assert!(vlan("m", gw).is_empty());
        assert!(vlan("m", &format!("{gw}\n gateway-host \"a\"")).is_empty());
        assert_eq!(vlan("n", gw), ["gateway_host"]);
        assert_eq!(vlan("n", "gateway-host \"a\""), ["gateway_host"]);
        assert_eq!(
            vlan("m", &format!("{gw}\n gateway-host \"b\"")),
            ["gateway_host"]
        );
        assert_eq!(
            vlan("n", &format!("{gw}\n gateway-host \"zz\"")),
            ["dangling_reference"]
        );
    }

    #[test]
    fn a_vm_may_use_a_vlan_of_any_host_of_its_network() {
        let vm = |host: &str| {
            codes(&format!(
                "network \"n\" {{\n hosts \"a\" \"b\"\n}}\nvlan \"v\" network=\"n\" id=1\n\
                 vm \"x\" host=\"{host}\" {{\n cpus 1\n memory \"64MiB\"\n kernel \"k\"\n nic vlan=\"v\"\n}}\n"
            ))
        };
        assert!(vm("a").is_empty());
        assert!(vm("b").is_empty());
        assert_eq!(vm("c"), ["other_host"]);
    }
}
