//! NAT and routing between VLANs: `nat` needs a gateway, `nat-via` needs `nat` and a
//! valid interface name, and each `route-to` names another VLAN of the project with a
//! gateway on the same host as this VLAN's (references themselves are checked with the
//! others, in `names`).

use super::network::interface_name_error;
use super::{Index, Report};
use crate::diagnostics::SchemaError;
use crate::model::{Config, Vlan};
use crate::spans::Spans;

/// The host that holds `vlan`'s gateway, when it has one and its network is known.
fn gateway_host<'c>(config: &'c Config, index: &Index<'_>, vlan: &'c Vlan) -> Option<&'c str> {
    vlan.gateway.as_ref()?;
    let network = index.vlan_network(config, &vlan.name)?;
    match (&vlan.gateway_host, network.on_hosts()) {
        (Some(host), _) => Some(host),
        (None, [host]) => Some(host),
        (None, _) => None,
    }
}

/// Reports every NAT and `route-to` setting the host could not carry out.
pub fn check(config: &Config, spans: &Spans, index: &Index<'_>, report: &mut Report<'_>) {
    for (vlan, s) in config.vlans.iter().zip(&spans.vlans) {
        if vlan.nat && vlan.gateway.is_none() {
            let here = s.field_or_name("nat", 0);
            let error = SchemaError::NatWithoutGateway {
                vlan: vlan.name.clone(),
                span: here.span,
            };
            report.push_in(&vlan.name, s, here, error);
        }
        if let Some(via) = &vlan.nat_via {
            let here = s.field_or_name("nat-via", 0);
            let error =
                if let Some(reason) = interface_name_error(via).or_else(|| nat_via_error(via)) {
                    Some(SchemaError::InvalidInterfaceName {
                        name: via.clone(),
                        reason,
                        span: here.span,
                    })
                } else if !vlan.nat {
                    Some(SchemaError::NatViaWithoutNat {
                        vlan: vlan.name.clone(),
                        span: here.span,
                    })
                } else {
                    None
                };
            if let Some(error) = error {
                report.push_in(&vlan.name, s, here, error);
            }
        }
        for (i, target) in vlan.route_to.iter().enumerate() {
            let Some(other) = index
                .vlans
                .get(target.as_str())
                .and_then(|&at| config.vlans.get(at))
            else {
                continue; // a dangling reference, reported with the others
            };
            let problem = route_problem(config, index, vlan, other);
            if let Some((problem, help)) = problem {
                let here = s.field_or_name("route-to", i as u32);
                let error = SchemaError::RouteTo {
                    vlan: vlan.name.clone(),
                    target: target.clone(),
                    problem,
                    span: here.span,
                    help,
                };
                report.push_in(&vlan.name, s, here, error);
            }
        }
    }
}

/// Why the host cannot route from `vlan` to `other`, and what to do, if it cannot.
fn route_problem(
    config: &Config,
    index: &Index<'_>,
    vlan: &Vlan,
    other: &Vlan,
) -> Option<(String, String)> {
    if vlan.name == other.name {
        return Some((
            "it is the VLAN itself".into(),
            "guests of one VLAN reach each other without routing; remove this `route-to`".into(),
        ));
    }
    let give = |name: &str| format!("give VLAN `{name}` a `gateway`: routing goes through it");
    let Some(here) = gateway_host(config, index, vlan) else {
        let problem = if vlan.gateway.is_none() {
            "it has no gateway".into()
        } else {
            "the host of its gateway is not known".into()
        };
        return Some((problem, give(&vlan.name)));
    };
    let Some(there) = gateway_host(config, index, other) else {
        let problem = format!("VLAN `{}` has no gateway", other.name);
        return Some((problem, give(&other.name)));
    };
    (here != there).then(|| {
        (
            format!("its gateway is on host `{here}`, the other's on host `{there}`"),
            "vmctl routes between VLANs whose gateways are on one host; move one gateway (`gateway-host`)".into(),
        )
    })
}

/// Why `via` cannot be a NAT uplink although it is an interface name: nft reads a
/// trailing `*` as a wildcard (the rule would match every interface, other VLANs'
/// gateways too), and `all`/`default` name the kernel's host-wide forwarding settings,
/// not an interface.
fn nat_via_error(via: &str) -> Option<&'static str> {
    if via.contains('*') || via.contains('\\') {
        Some("contains `*` or `\\`, which nft reads as a wildcard")
    } else if via == "all" || via == "default" {
        Some("names the kernel's settings for all interfaces, not an interface")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::codes_of;

    const BASE: &str = r#"
project "lab"
host "local"
network "lan" host="local"
"#;

    fn codes(vlans: &str) -> Vec<String> {
        codes_of(&format!("{BASE}{vlans}"))
    }

    #[test]
    fn nat_needs_a_gateway_and_nat_via_needs_nat() {
        assert!(codes(
            r#"vlan "front" network="lan" id=100 { gateway "10.100.0.1/24"; nat #true; nat-via "eth0"; }"#
        )
        .is_empty());
        assert_eq!(
            codes(r#"vlan "front" network="lan" id=100 { nat #true; }"#),
            ["vmctl::schema::nat_without_gateway"]
        );
        assert_eq!(
            codes(
                r#"vlan "front" network="lan" id=100 { gateway "10.100.0.1/24"; nat-via "eth0"; }"#
            ),
            ["vmctl::schema::nat_via_without_nat"]
        );
        assert_eq!(
            codes(
                r#"vlan "front" network="lan" id=100 { gateway "10.100.0.1/24"; nat #true; nat-via "a/b"; }"#
            ),
            ["vmctl::schema::invalid_interface_name"]
        );
        // nft reads `*` as a wildcard; `all` and `default` are the kernel's host-wide
        // forwarding settings.
        for via in ["*", "eth*", "all", "default"] {
            assert_eq!(
                codes(&format!(
                    r#"vlan "front" network="lan" id=100 {{ gateway "10.100.0.1/24"; nat #true; nat-via "{via}"; }}"#
                )),
                ["vmctl::schema::invalid_interface_name"],
                "{via}"
            );
        }
    }

    #[test]
    fn route_to_names_a_vlan_with_a_gateway_on_the_same_host() {
        let two = |front: &str, back_gateway: &str| {
            codes(&format!(
                r#"vlan "front" network="lan" id=100 {{ gateway "10.100.0.1/24"; {front} }}
vlan "back" network="lan" id=200 {{ {back_gateway} }}"#
            ))
        };
        assert!(two(r#"route-to "back""#, r#"gateway "10.200.0.1/24""#).is_empty());
        assert_eq!(
            two(r#"route-to "bakc""#, r#"gateway "10.200.0.1/24""#),
            ["vmctl::schema::dangling_reference"]
        );
        assert_eq!(two(r#"route-to "back""#, ""), ["vmctl::schema::route_to"]);
        assert_eq!(two(r#"route-to "front""#, ""), ["vmctl::schema::route_to"]);
        // Several at once, as arguments.
        assert!(codes(
            r#"vlan "a" network="lan" id=1 { gateway "10.1.0.1/24"; route-to "b" "c"; }
vlan "b" network="lan" id=2 { gateway "10.2.0.1/24"; }
vlan "c" network="lan" id=3 { gateway "10.3.0.1/24"; }"#
        )
        .is_empty());
    }

    #[test]
    fn a_dangling_route_says_did_you_mean() {
        let text = format!(
            "{BASE}vlan \"front\" network=\"lan\" id=100 {{ gateway \"10.100.0.1/24\"; route-to \"bakc\"; }}\nvlan \"back\" network=\"lan\" id=200 {{ gateway \"10.200.0.1/24\"; }}"
        );
        let Err(diagnostics) = crate::load_str("main.kdl", &text) else {
            panic!("a dangling route-to must be refused");
        };
        let help = diagnostics
            .0
            .iter()
            .find_map(|d| miette::Diagnostic::help(&d.error).map(|h| h.to_string()))
            .unwrap_or_default();
        assert!(help.contains("back"), "{help}");
    }
}
