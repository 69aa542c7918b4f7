//! A host's firewall: the one nftables table of a project on a host
//! (`table inet vmctl-<project>`, in the host's netns), planned as `firewall.<host>`.
//!
//! It exists while the project has a VLAN with a gateway on the host, so that VLANs
//! stay apart at L3 even when forwarding is on. Its ruleset is rendered here, purely
//! and deterministically, as the `nft -j` commands that add it (the runtime replaces
//! the table with them in one transaction). Every rule carries the comment
//! `vmctl:<project>`, the table's mark: a table of that name without it is not
//! vmctl's, and never taken over.
//!
//! A VLAN's gateway interface is `<bridge>v<id>` or `<bridge>.<id>` by the kernel's
//! VLAN mode, which only the host knows once the bridge is made, so each rule names
//! both. The rules:
//!
//! - chain `forward` (hook forward, priority filter, policy accept): established and
//!   related traffic is accepted; from VLAN A to VLAN B when A has `route-to "B"`; from
//!   a NAT VLAN out of its uplink; everything else forwarded from or to a gateway
//!   interface of the project is dropped;
//! - chain `input` (hook input, priority filter, policy accept): a guest cannot reach
//!   the gateway address of another VLAN (the host would answer it itself, forwarding
//!   or not) unless its VLAN routes to that VLAN;
//! - chain `postrouting` (hook postrouting, priority srcnat): each NAT VLAN's subnet is
//!   masqueraded out of its uplink: `nat-via`, else the interface of the host netns's
//!   default route, which the host reports.
//!
//! Forwarding is turned on for exactly what needs it (`forwarding`): the gateway
//! interfaces of NAT VLANs and of both ends of each route, and the uplinks.

use std::collections::BTreeSet;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vmctl_schema::derive::{gateway_link_name, vlan_bridge_name};
use vmctl_schema::{Config, Network, Vlan};

/// The comment on every rule of a project's table: its mark.
pub fn mark(project: &str) -> String {
    format!("vmctl:{project}")
}

/// The name of a project's table (at most 69 bytes: nftables takes 255).
pub fn table_name(project: &str) -> String {
    format!("vmctl-{project}")
}

/// The firewall of a project on one host, as planned (`firewall.<host>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Firewall {
    /// The host's name.
    pub name: String,
    /// `vmctl-<project>`, of family `inet`.
    pub table: String,
    /// The VLANs with a gateway on the host, sorted: their interfaces are the table's.
    pub vlans: Vec<String>,
    /// The NAT VLANs' uplinks, sorted, each once.
    pub uplinks: Vec<String>,
    /// The interfaces whose IPv4 forwarding is turned on, sorted (both names of each
    /// gateway, see the module doc; the runtime turns on those that exist).
    pub forwarding: Vec<String>,
    /// `sha256:<hex>` of `ruleset` as JSON: what the plan compares.
    pub hash: String,
    /// The `nft -j` commands that add the table, its chains and rules.
    #[serde(skip_serializing_if = "Value::is_null")]
    pub ruleset: Value,
}

/// Why a host's firewall cannot be planned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FirewallError {
    #[error("VLAN {vlan:?} has `nat #true`, but host {host:?} reports no default route and the VLAN names no `nat-via`")]
    NoUplink { host: String, vlan: String },
}

/// `sha256:<hex>` of a JSON value (serde_json writes object keys sorted).
pub fn hash_of(value: &Value) -> String {
    let digest = Sha256::digest(value.to_string().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A VLAN with a gateway on the host, with what the rules need of it.
struct Gateway<'c> {
    vlan: &'c Vlan,
    /// Both possible names of its gateway interface.
    ifnames: [String; 2],
    address: Option<IpNet>,
    /// A NAT VLAN's uplink.
    uplink: Option<String>,
}

/// Whether `vlan` (of `network`) has its gateway on `host`.
fn gateway_here(network: &Network, vlan: &Vlan, host: &str) -> bool {
    vlan.gateway.is_some()
        && network.on_hosts().iter().any(|h| h == host)
        && match &vlan.gateway_host {
            Some(gateway_host) => gateway_host == host,
            None => !network.spans_hosts(),
        }
}

/// The project's firewall on `host`, or `None` when no VLAN has a gateway there.
/// `default_route` is the interface of the host netns's default route, as reported.
pub fn desired(
    config: &Config,
    host: &str,
    default_route: Option<&str>,
) -> Result<Option<Firewall>, FirewallError> {
    // The networks on this host, looked up for every VLAN of the config.
    let here: Vec<&Network> = config
        .networks
        .iter()
        .filter(|n| n.on_hosts().iter().any(|h| h == host))
        .collect();
    let mut gateways: Vec<Gateway<'_>> = config
        .vlans
        .iter()
        .filter_map(|vlan| {
            let network = here.iter().find(|n| n.name == vlan.network)?;
            gateway_here(network, vlan, host).then(|| Gateway {
                vlan,
                ifnames: [
                    vlan_bridge_name(&network.bridge, vlan.id),
                    gateway_link_name(&network.bridge, vlan.id),
                ],
                address: vlan.gateway.as_deref().and_then(|g| g.parse().ok()),
                uplink: None,
            })
        })
        .collect();
    if gateways.is_empty() {
        return Ok(None);
    }
    gateways.sort_by(|a, b| a.vlan.name.cmp(&b.vlan.name));
    let uplink_of = |vlan: &Vlan| -> Result<Option<String>, FirewallError> {
        if !vlan.nat {
            return Ok(None);
        }
        match vlan.nat_via.as_deref().or(default_route) {
            Some(uplink) => Ok(Some(uplink.to_owned())),
            None => Err(FirewallError::NoUplink {
                host: host.to_owned(),
                vlan: vlan.name.clone(),
            }),
        }
    };
    for g in &mut gateways {
        g.uplink = uplink_of(g.vlan)?;
    }
    let rules = Rules {
        project: &config.project,
        table: table_name(&config.project),
    };
    let mut forwarding = BTreeSet::new();
    let mut commands = vec![
        json!({"metainfo": {"json_schema_version": 1}}),
        json!({"add": {"table": {"family": "inet", "name": rules.table}}}),
        rules.chain("forward", "filter", "forward", 0),
        rules.chain("input", "filter", "input", 0),
        rules.chain("postrouting", "nat", "postrouting", 100),
    ];
    commands.extend(forward_rules(&rules, &gateways, &mut forwarding));
    commands.extend(input_rules(&rules, &gateways));
    commands.extend(nat_rules(&rules, &gateways));
    let ruleset = json!({ "nftables": commands });
    let mut uplinks: Vec<String> = gateways.iter().filter_map(|g| g.uplink.clone()).collect();
    uplinks.sort_unstable();
    uplinks.dedup();
    Ok(Some(Firewall {
        name: host.to_owned(),
        table: rules.table.clone(),
        vlans: gateways.iter().map(|g| g.vlan.name.clone()).collect(),
        uplinks,
        forwarding: forwarding.into_iter().collect(),
        hash: hash_of(&ruleset),
        ruleset,
    }))
}

/// Chain `forward`: replies; each route, one way; each NAT VLAN out of its uplink;
/// then nothing else from or to a gateway interface. Adds to `forwarding` the
/// interfaces a route or NAT needs.
fn forward_rules(
    rules: &Rules<'_>,
    gateways: &[Gateway<'_>],
    forwarding: &mut BTreeSet<String>,
) -> Vec<Value> {
    let by_name = |name: &str| gateways.iter().find(|g| g.vlan.name == name);
    let mut out = vec![rules.rule(
        "forward",
        vec![
            json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}),
            json!({"accept": null}),
        ],
    )];
    for g in gateways {
        let mut targets: Vec<&str> = g.vlan.route_to.iter().map(String::as_str).collect();
        targets.sort_unstable();
        targets.dedup();
        for target in targets {
            let Some(other) = by_name(target).filter(|o| o.vlan.name != g.vlan.name) else {
                continue; // not a gateway VLAN of this host: the schema refuses it
            };
            forwarding.extend(g.ifnames.iter().cloned());
            forwarding.extend(other.ifnames.iter().cloned());
            out.push(rules.rule(
                "forward",
                vec![
                    interfaces("iifname", &g.ifnames),
                    interfaces("oifname", &other.ifnames),
                    json!({"accept": null}),
                ],
            ));
        }
    }
    for g in gateways {
        let Some(uplink) = &g.uplink else { continue };
        forwarding.extend(g.ifnames.iter().cloned());
        forwarding.insert(uplink.clone());
        out.push(rules.rule(
            "forward",
            vec![
                interfaces("iifname", &g.ifnames),
                json!({"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": uplink}}),
                json!({"accept": null}),
            ],
        ));
    }
    // Within one VLAN nothing is routed, but where the bridge's frames pass the inet
    // hooks (`br_netfilter`, as Docker and Kubernetes hosts load it) a frame bridged
    // between two guests of a VLAN shows here with the VLAN's bridge as both its in
    // and out interface (bridge-per-VLAN mode): it is the VLAN's own traffic.
    for g in gateways {
        out.push(rules.rule(
            "forward",
            vec![
                interfaces("iifname", &g.ifnames),
                interfaces("oifname", &g.ifnames),
                json!({"accept": null}),
            ],
        ));
    }
    let all: Vec<String> = gateways
        .iter()
        .flat_map(|g| g.ifnames.iter().cloned())
        .collect();
    for key in ["iifname", "oifname"] {
        out.push(rules.rule(
            "forward",
            vec![interfaces(key, &all), json!({"drop": null})],
        ));
    }
    out
}

/// Chain `input`: from each gateway interface, the other VLANs' gateway addresses it
/// does not route to are dropped (by family).
fn input_rules(rules: &Rules<'_>, gateways: &[Gateway<'_>]) -> Vec<Value> {
    let mut out = Vec::new();
    for g in gateways {
        let mut closed: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        for other in gateways {
            let routed = g.vlan.route_to.contains(&other.vlan.name);
            let Some(address) = other.address.filter(|_| other.vlan.name != g.vlan.name) else {
                continue;
            };
            if !routed {
                let family = usize::from(matches!(address, IpNet::V6(_)));
                closed[family].push(address.addr().to_string());
            }
        }
        for (protocol, addresses) in ["ip", "ip6"].into_iter().zip(closed) {
            if addresses.is_empty() {
                continue;
            }
            out.push(rules.rule(
                "input",
                vec![
                    interfaces("iifname", &g.ifnames),
                    json!({"match": {"op": "==", "left": {"payload": {"protocol": protocol, "field": "daddr"}}, "right": {"set": addresses}}}),
                    json!({"drop": null}),
                ],
            ));
        }
    }
    out
}

/// Chain `postrouting`: each NAT VLAN's subnet masqueraded out of its uplink.
fn nat_rules(rules: &Rules<'_>, gateways: &[Gateway<'_>]) -> Vec<Value> {
    let mut out = Vec::new();
    for g in gateways {
        let (Some(uplink), Some(subnet)) = (&g.uplink, subnet_of(g.vlan)) else {
            continue;
        };
        let protocol = if matches!(subnet, IpNet::V6(_)) {
            "ip6"
        } else {
            "ip"
        };
        out.push(rules.rule(
            "postrouting",
            vec![
                json!({"match": {"op": "==", "left": {"payload": {"protocol": protocol, "field": "saddr"}}, "right": {"prefix": {"addr": subnet.network().to_string(), "len": subnet.prefix_len()}}}}),
                json!({"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": uplink}}),
                json!({"masquerade": null}),
            ],
        ));
    }
    out
}

/// A VLAN's subnet: given (`subnet`), else its gateway's.
fn subnet_of(vlan: &Vlan) -> Option<IpNet> {
    let text = vlan.subnet.as_deref().or(vlan.gateway.as_deref())?;
    text.parse::<IpNet>().ok().map(|n| n.trunc())
}

/// `meta <key> { names }`.
fn interfaces(key: &str, names: &[String]) -> Value {
    json!({"match": {"op": "==", "left": {"meta": {"key": key}}, "right": {"set": names}}})
}

/// The rule the host adds to the table's `forward` chain for an uplink whose IPv4
/// forwarding vmctl turns on for NAT: nothing new comes in through it (replies to the
/// NAT VLANs' connections are `established`), so turning forwarding on for NAT does
/// not make the host a router for the uplink's network. Not planned: only the host
/// knows whether the uplink forwarded before vmctl (then it is left as it was).
pub fn uplink_guard(project: &str, uplink: &str) -> Value {
    Rules {
        project,
        table: table_name(project),
    }
    .rule(
        "forward",
        vec![
            json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": uplink}}),
            json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["new"]}}),
            json!({"drop": null}),
        ],
    )
}

/// What every chain and rule of the table says of itself.
struct Rules<'a> {
    project: &'a str,
    table: String,
}

impl Rules<'_> {
    fn chain(&self, name: &str, kind: &str, hook: &str, prio: i32) -> Value {
        json!({"add": {"chain": {
            "family": "inet", "table": self.table, "name": name,
            "type": kind, "hook": hook, "prio": prio, "policy": "accept",
        }}})
    }

    fn rule(&self, chain: &str, expr: Vec<Value>) -> Value {
        json!({"add": {"rule": {
            "family": "inet", "table": self.table, "chain": chain,
            "comment": mark(self.project), "expr": expr,
        }}})
    }
}

/// What an `nft -j list table` answer holds, without what changes by itself: the
/// `metainfo` (nft's version) and every object's `handle`. Two listings of one
/// ruleset normalize the same; a rule deleted or added by hand does not.
pub fn normalize_listing(listing: &Value) -> Vec<Value> {
    let Some(items) = listing.get("nftables").and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter(|item| item.get("metainfo").is_none())
        .map(|item| {
            let mut item = item.clone();
            if let Some(object) = item.as_object_mut() {
                for inner in object.values_mut() {
                    if let Some(inner) = inner.as_object_mut() {
                        inner.remove("handle");
                    }
                }
            }
            item
        })
        .collect()
}

/// Whether a normalized listing carries `project`'s mark on one of its rules.
pub fn is_marked(rules: &[Value], project: &str) -> bool {
    let mark = mark(project);
    rules.iter().any(|item| {
        item.get("rule")
            .and_then(|r| r.get("comment"))
            .and_then(Value::as_str)
            == Some(mark.as_str())
    })
}

#[cfg(test)]
mod tests;
