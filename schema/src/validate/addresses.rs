//! Addresses (IPAM) as far as the config alone can tell: each VLAN's subnet (its
//! `subnet`, else its gateway's, which `derive_subnets` writes into the model), the
//! addresses NICs declare (in their VLAN's subnet, not reserved, not twice), `ip-cmdline`
//! on a VM whose first NIC gets an IPv4 address, and no more NICs on a VLAN than its
//! subnet has addresses. Which address each other NIC gets is the planner's: it needs
//! the live state (`vmctl_planner::ipam`).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::network::report_pair;
use super::Report;
use crate::addresses::{Subnet, Unusable};
use crate::diagnostics::SchemaError;
use crate::model::Config;
use crate::spans::{Site, Spans};

/// Writes each VLAN's subnet (given, or its gateway's) into the model, and reports a
/// given subnet that does not hold the gateway or has another prefix length.
pub fn derive_subnets(config: &mut Config, spans: &Spans, report: &mut Report<'_>) {
    for (vlan, s) in config.vlans.iter_mut().zip(&spans.vlans) {
        let gateway = vlan
            .gateway
            .as_deref()
            .and_then(|g| g.parse::<IpNet>().ok());
        let given = vlan.subnet.as_deref().map(|t| t.parse::<IpNet>());
        match (given, gateway) {
            (Some(Ok(subnet)), Some(gateway)) => {
                let problem = if !subnet.contains(&gateway.addr()) {
                    Some("is not in")
                } else if subnet.prefix_len() != gateway.prefix_len() {
                    Some("has another prefix length than")
                } else {
                    None
                };
                if let Some(problem) = problem {
                    let here = s.field_or_name("gateway", 0);
                    let there = s.field("subnet", 0);
                    let other = there.filter(|t| t.file == here.file).map(|t| t.span);
                    let error = SchemaError::GatewayOutsideSubnet {
                        gateway: gateway.to_string(),
                        vlan: vlan.name.clone(),
                        problem,
                        subnet: subnet.to_string(),
                        span: here.span,
                        other,
                        help: format!(
                            "the gateway is the host's address in the subnet, with its prefix: \
                             e.g. `gateway \"{}/{}\"`, or leave `subnet` out to take the gateway's",
                            subnet.hosts().next().unwrap_or(subnet.addr()),
                            subnet.prefix_len()
                        ),
                    };
                    report.push_in(&vlan.name, s, here, error);
                }
                vlan.subnet = Some(subnet.trunc().to_string());
            }
            (Some(Ok(subnet)), None) => vlan.subnet = Some(subnet.trunc().to_string()),
            // An invalid subnet is reported where it is read.
            (Some(Err(_)), _) => vlan.subnet = None,
            (None, Some(gateway)) => vlan.subnet = Some(gateway.trunc().to_string()),
            (None, None) => {}
        }
    }
}

/// The subnet of each VLAN that has one, by name.
pub fn subnets(config: &Config) -> HashMap<&str, Subnet> {
    config
        .vlans
        .iter()
        .filter_map(|v| {
            let subnet = Subnet::of(v.subnet.as_deref(), v.gateway.as_deref())?;
            Some((v.name.as_str(), subnet))
        })
        .collect()
}

/// Every check of declared addresses, `ip-cmdline` and subnet sizes.
pub fn check(config: &Config, spans: &Spans, report: &mut Report<'_>) {
    let subnets = subnets(config);
    let known: HashMap<&str, usize> = config
        .vlans
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.as_str(), i))
        .collect();
    let mut declared: HashMap<(&str, IpAddr), Site> = HashMap::new();
    let mut nics: HashMap<&str, usize> = HashMap::new();
    for (vm, s) in config.vms.iter().zip(&spans.vms) {
        for (i, nic) in vm.nics.iter().enumerate() {
            let subnet = subnets.get(nic.vlan.as_str());
            if subnet.is_some() {
                *nics.entry(nic.vlan.as_str()).or_default() += 1;
            }
            let Some(address) = nic.ip else { continue };
            let here = s.field_or_name("nic.ip", i as u32);
            let Some(subnet) = subnet else {
                if known.contains_key(nic.vlan.as_str()) {
                    let error = SchemaError::NoSubnet {
                        vm: vm.name.clone(),
                        address: address.to_string(),
                        vlan: nic.vlan.clone(),
                        span: here.span,
                        help: format!(
                            "give VLAN `{}` a `gateway \"10.0.0.1/24\"` or a `subnet \"10.0.0.0/24\"`, or leave `ip` out",
                            nic.vlan
                        ),
                    };
                    report.push_in(&vm.name, s, here, error);
                }
                continue;
            };
            if let Err(why) = subnet.check(address) {
                let error = unusable(vm, nic, address, subnet, why, here);
                report.push_in(&vm.name, s, here, error);
                continue;
            }
            match declared.get(&(nic.vlan.as_str(), address)) {
                Some(&first) => {
                    let help = "give each NIC of a VLAN its own address, or leave `ip` out to have one allocated";
                    report_pair(report, here, first, help, |site, first, help| {
                        SchemaError::DuplicateAddress {
                            address: address.to_string(),
                            vlan: nic.vlan.clone(),
                            span: site.span,
                            first,
                            help,
                        }
                    });
                }
                None => {
                    declared.insert((nic.vlan.as_str(), address), here);
                }
            }
        }
        if vm.ip_cmdline {
            ip_cmdline(config, vm, s, &subnets, report);
        }
    }
    for (vlan, s) in config.vlans.iter().zip(&spans.vlans) {
        let (Some(subnet), Some(&count)) = (
            subnets.get(vlan.name.as_str()),
            nics.get(vlan.name.as_str()),
        ) else {
            continue;
        };
        let capacity = subnet.capacity();
        if count as u128 > capacity {
            let here = s
                .field("subnet", 0)
                .unwrap_or_else(|| s.field_or_name("gateway", 0));
            let error = SchemaError::SubnetExhausted {
                subnet: subnet.net.to_string(),
                vlan: vlan.name.clone(),
                capacity,
                nics: count,
                span: here.span,
                help: format!(
                    "give VLAN `{}` a wider subnet (a shorter prefix), or fewer NICs",
                    vlan.name
                ),
            };
            report.push_in(&vlan.name, s, here, error);
        }
    }
}

fn unusable(
    vm: &crate::model::Vm,
    nic: &crate::model::Nic,
    address: IpAddr,
    subnet: &Subnet,
    why: Unusable,
    here: Site,
) -> SchemaError {
    let (first, last) = subnet.usable_range();
    let range = format!("{} to {}", subnet.address(first), subnet.address(last));
    match why {
        Unusable::Outside => SchemaError::AddressOutsideSubnet {
            address: address.to_string(),
            vm: vm.name.clone(),
            subnet: subnet.net.to_string(),
            vlan: nic.vlan.clone(),
            span: here.span,
            help: format!("NICs on VLAN `{}` take addresses from {range}", nic.vlan),
        },
        _ => SchemaError::ReservedAddress {
            address: address.to_string(),
            vm: vm.name.clone(),
            what: why.what(),
            vlan: nic.vlan.clone(),
            span: here.span,
            help: format!(
                "NICs on VLAN `{}` take addresses from {range}, but the gateway's",
                nic.vlan
            ),
        },
    }
}

/// `ip-cmdline` needs a first NIC on a VLAN with an IPv4 subnet.
fn ip_cmdline(
    config: &Config,
    vm: &crate::model::Vm,
    s: &crate::spans::ResourceSpans,
    subnets: &HashMap<&str, Subnet>,
    report: &mut Report<'_>,
) {
    let problem = match vm.nics.first() {
        None => Some("it has no NIC".to_owned()),
        Some(nic) => match subnets.get(nic.vlan.as_str()) {
            None if config.vlans.iter().any(|v| v.name == nic.vlan) => {
                Some(format!("its first NIC's VLAN `{}` has no subnet", nic.vlan))
            }
            None => None, // a dangling reference, reported
            Some(subnet) if !matches!(subnet.net, IpNet::V4(_)) => Some(format!(
                "its first NIC's VLAN `{}` has an IPv6 subnet; the kernel's `ip=` is IPv4 only",
                nic.vlan
            )),
            Some(_) => None,
        },
    };
    if let Some(problem) = problem {
        let here = s.field_or_name("ip-cmdline", 0);
        let error = SchemaError::IpCmdlineWithoutAddress {
            vm: vm.name.clone(),
            problem,
            span: here.span,
            help: "put the VM's first NIC on a VLAN with an IPv4 `gateway` or `subnet`, or remove `ip-cmdline`".to_owned(),
        };
        report.push_in(&vm.name, s, here, error);
    }
}

#[cfg(test)]
mod tests {
    /// The diagnostic codes of `vlans` and `vms` after a project, host and network.
    fn codes(vlans: &str, vms: &str) -> Vec<String> {
        super::super::codes_of(&format!(
            "project \"lab\"\nhost \"a\"\nnetwork \"n\" host=\"a\"\n{vlans}\n{vms}"
        ))
        .into_iter()
        .map(|c| c.trim_start_matches("vmctl::schema::").to_owned())
        .collect()
    }

    fn vm(name: &str, body: &str) -> String {
        format!("vm \"{name}\" host=\"a\" cpus=1 memory=\"64MiB\" kernel=\"k\" {{\n{body}\n}}\n")
    }

    const FRONT: &str = "vlan \"front\" network=\"n\" id=1 {\n gateway \"10.0.0.1/29\"\n}";

    #[test]
    fn declared_addresses() {
        let one = |ip: &str| codes(FRONT, &vm("a", &format!("nic vlan=\"front\" ip=\"{ip}\"")));
        assert!(one("10.0.0.2").is_empty());
        assert_eq!(one("10.0.0.9"), ["address_outside_subnet"]);
        assert_eq!(one("fd00::2"), ["address_outside_subnet"]);
        assert_eq!(one("10.0.0.1"), ["reserved_address"]);
        assert_eq!(one("10.0.0.0"), ["reserved_address"]);
        assert_eq!(one("10.0.0.7"), ["reserved_address"]);
        assert_eq!(one("10.0.0.2/29"), ["invalid_value"]);
        let two = vm("a", "nic vlan=\"front\" ip=\"10.0.0.3\"")
            + &vm("b", "nic vlan=\"front\" ip=\"10.0.0.3\"");
        assert_eq!(codes(FRONT, &two), ["duplicate_address"]);
        let bare = "vlan \"front\" network=\"n\" id=1";
        assert_eq!(
            codes(bare, &vm("a", "nic vlan=\"front\" ip=\"10.0.0.3\"")),
            ["no_subnet"]
        );
    }

    #[test]
    fn subnets_given_or_from_the_gateway() {
        let vlan = |body: &str| format!("vlan \"front\" network=\"n\" id=1 {{\n{body}\n}}");
        let nic = vm("a", "nic vlan=\"front\" ip=\"10.0.0.20\"");
        assert!(codes(&vlan("subnet \"10.0.0.0/24\""), &nic).is_empty());
        assert!(codes(
            &vlan("subnet \"10.0.0.0/24\"\ngateway \"10.0.0.1/24\""),
            &nic
        )
        .is_empty());
        assert_eq!(
            codes(&vlan("subnet \"10.0.0.0/24\"\ngateway \"10.0.1.1/24\""), ""),
            ["gateway_outside_subnet"]
        );
        assert_eq!(
            codes(&vlan("subnet \"10.0.0.0/24\"\ngateway \"10.0.0.1/16\""), ""),
            ["gateway_outside_subnet"]
        );
        assert_eq!(
            codes(&vlan("subnet \"10.0.0.1/24\""), ""),
            ["invalid_value"]
        );
        let loaded = crate::load_str(
            "main.kdl",
            &format!("project \"lab\"\nhost \"a\"\nnetwork \"n\" host=\"a\"\n{FRONT}\n"),
        )
        .unwrap();
        assert_eq!(
            loaded.config.vlans[0].subnet.as_deref(),
            Some("10.0.0.0/29")
        );
    }

    #[test]
    fn ip_cmdline_needs_an_ipv4_first_nic() {
        let bare = "vlan \"back\" network=\"n\" id=2";
        let v6 = "vlan \"six\" network=\"n\" id=3 {\n gateway \"fd00::1/64\"\n}";
        let vlans = format!("{FRONT}\n{bare}\n{v6}");
        let with = |nics: &str| codes(&vlans, &vm("a", &format!("ip-cmdline #true\n{nics}")));
        assert!(with("nic vlan=\"front\"").is_empty());
        assert_eq!(with(""), ["ip_cmdline_without_address"]);
        assert_eq!(with("nic vlan=\"back\""), ["ip_cmdline_without_address"]);
        assert_eq!(with("nic vlan=\"six\""), ["ip_cmdline_without_address"]);
    }

    #[test]
    fn an_exhausted_subnet() {
        // A /29 with a gateway has 5 addresses for NICs.
        let nics = |n: usize| {
            (0..n)
                .map(|i| vm(&format!("v{i}"), "nic vlan=\"front\""))
                .collect::<String>()
        };
        assert!(codes(FRONT, &nics(5)).is_empty());
        assert_eq!(codes(FRONT, &nics(6)), ["subnet_exhausted"]);
    }
}

#[cfg(test)]
mod counted {
    #[test]
    fn a_counted_vm_numbers_its_address_like_any_string() {
        let text = "project \"lab\"\nhost \"a\"\nnetwork \"n\" host=\"a\"\n\
                    vlan \"front\" network=\"n\" id=1 { gateway \"10.0.0.1/24\"; }\n\
                    template \"t\" { host \"a\"; cpus 1; memory \"64MiB\"; kernel \"k\"; ip-cmdline #true; }\n\
                    vm \"web-{n}\" count=3 template=\"t\" { nic vlan=\"front\" ip=\"10.0.0.1{n}\"; }\n";
        let loaded = crate::load_str("main.kdl", text).expect("loads");
        let ips: Vec<String> = loaded
            .config
            .vms
            .iter()
            .map(|vm| vm.nics[0].ip.expect("declared").to_string())
            .collect();
        assert_eq!(ips, ["10.0.0.11", "10.0.0.12", "10.0.0.13"]);
        assert!(loaded.config.vms.iter().all(|vm| vm.ip_cmdline));
    }
}
