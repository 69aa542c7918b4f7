//! The `dhcp` rule: vmctl's DHCP and DNS server of a VLAN listens on the VLAN's gateway
//! address on the host that holds it (`gateway-host` on a network that spans hosts), so
//! a VLAN with `dhcp #true` needs an IPv4 `gateway` (dnsmasq's static leases here are
//! DHCPv4).

use super::Report;
use crate::diagnostics::SchemaError;
use crate::model::Config;

/// Reports each VLAN with `dhcp #true` and no gateway, or an IPv6 one.
pub fn check_dhcp(config: &Config, spans: &crate::spans::Spans, report: &mut Report<'_>) {
    for (vlan, s) in config.vlans.iter().zip(&spans.vlans) {
        if !vlan.dhcp {
            continue;
        }
        let problem = match vlan.gateway.as_deref() {
            None => Some((
                format!("VLAN `{}` has `dhcp #true` but no `gateway`", vlan.name),
                "no address to serve from",
                "the DHCP and DNS server listens on the VLAN's gateway address: add \
                 `gateway \"<address>/<prefix>\"`, or remove `dhcp`",
            )),
            Some(gateway) if gateway.contains(':') => Some((
                format!(
                    "VLAN `{}` has `dhcp #true` and an IPv6 gateway `{gateway}`",
                    vlan.name
                ),
                "IPv4 only",
                "vmctl's DHCP serves IPv4 subnets: give the VLAN an IPv4 gateway, or \
                 remove `dhcp` and use `ip-cmdline` or addresses in the image",
            )),
            Some(_) => None,
        };
        if let Some((problem, label, help)) = problem {
            let here = s.field_or_name("dhcp", 0);
            report.push_in(
                &vlan.name,
                s,
                here,
                SchemaError::Dhcp {
                    problem,
                    span: here.span,
                    label,
                    help: help.to_owned(),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    fn codes(vlan_body: &str) -> Vec<String> {
        let text = format!(
            "project \"lab\"\nhost \"a\"\nnetwork \"n\" host=\"a\"\n\
             vlan \"v\" network=\"n\" id=1 {{\n{vlan_body}\n}}\n"
        );
        super::super::codes_of(&text)
            .into_iter()
            .map(|c| c.replace("vmctl::schema::", ""))
            .collect()
    }

    #[test]
    fn dhcp_needs_an_ipv4_gateway() {
        assert!(codes(" gateway \"10.0.0.1/24\"\n dhcp #true").is_empty());
        assert!(codes(" dhcp #false").is_empty());
        assert_eq!(codes(" dhcp #true"), ["dhcp"]);
        assert_eq!(codes(" subnet \"10.0.0.0/24\"\n dhcp #true"), ["dhcp"]);
        assert_eq!(codes(" gateway \"fd00::1/64\"\n dhcp #true"), ["dhcp"]);
    }

    #[test]
    fn the_diagnostic_points_at_dhcp() {
        let text = "project \"lab\"\nhost \"a\"\nnetwork \"n\" host=\"a\"\n\
                    vlan \"v\" network=\"n\" id=1 {\n dhcp #true\n}\n";
        let Err(diagnostics) = crate::load_str("main.kdl", text) else {
            panic!("a dhcp VLAN without a gateway must be refused");
        };
        let rendered = format!("{diagnostics:?}");
        assert!(rendered.contains("no `gateway`"), "{rendered}");
        // The span is the value `#true` of the `dhcp` node.
        let at = text.find("#true").expect("dhcp in the text");
        assert!(
            rendered.contains(&format!("offset: SourceOffset({at})")),
            "{rendered}"
        );
    }
}
