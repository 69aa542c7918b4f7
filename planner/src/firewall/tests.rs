use serde_json::{json, Value};

use super::*;
use crate::action::Action;
use crate::facts::{FirewallFact, FirewallRecord, HostFacts};
use crate::live::LiveFile;
use crate::testdata::{change, plan_of, quickstart};
use crate::{plan, PlanOptions};

/// The quickstart with a gateway on `back` too, `front` NATed and routing to `back`.
fn config() -> Config {
    let mut config = quickstart();
    for volume in &mut config.volumes {
        volume.prevent_destroy = false;
    }
    let back = config.vlans.iter_mut().find(|v| v.name == "back").unwrap();
    back.gateway = Some("10.200.0.1/24".into());
    back.subnet = Some("10.200.0.0/24".into());
    let front = config.vlans.iter_mut().find(|v| v.name == "front").unwrap();
    front.nat = true;
    front.route_to = vec!["back".into()];
    config
}

/// The rules of one chain, each as its expressions.
fn chain(firewall: &Firewall, name: &str) -> Vec<Value> {
    firewall.ruleset["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.get("add")?.get("rule"))
        .filter(|r| r["chain"] == name)
        .map(|r| r["expr"].clone())
        .collect()
}

#[test]
fn the_ruleset_separates_routes_and_masquerades() {
    let config = config();
    let network = &config.networks[0];
    let fw = desired(&config, "local", Some("eth0")).unwrap().unwrap();
    assert_eq!(fw.table, "vmctl-lab");
    assert_eq!(fw.vlans, ["back", "front"]);
    assert_eq!(fw.uplinks, ["eth0"]);
    let front = [
        vlan_bridge_name(&network.bridge, 100),
        gateway_link_name(&network.bridge, 100),
    ];
    let back = [
        vlan_bridge_name(&network.bridge, 200),
        gateway_link_name(&network.bridge, 200),
    ];
    // Forwarding on both ends of the route, front's for NAT, and the uplink.
    let mut forwarding: Vec<String> = front.iter().chain(&back).cloned().collect();
    forwarding.push("eth0".into());
    forwarding.sort();
    assert_eq!(fw.forwarding, forwarding);
    let forward = chain(&fw, "forward");
    let set = |names: &[String]| json!({"set": names});
    assert_eq!(
        forward[0][0]["match"]["right"],
        json!(["established", "related"])
    );
    // front → back accepted, not back → front.
    assert_eq!(forward[1][0]["match"]["right"], set(&front));
    assert_eq!(forward[1][1]["match"]["right"], set(&back));
    assert_eq!(forward[1][2], json!({"accept": null}));
    // front → uplink accepted.
    assert_eq!(forward[2][1]["match"]["right"], "eth0");
    // Each VLAN's own (bridged) traffic accepted.
    for (i, vlan) in [(3, &back), (4, &front)] {
        assert_eq!(forward[i][0]["match"]["right"], set(vlan));
        assert_eq!(forward[i][1]["match"]["right"], set(vlan));
        assert_eq!(forward[i][2], json!({"accept": null}));
    }
    // Everything else from or to a gateway interface dropped.
    let all: Vec<String> = back.iter().chain(&front).cloned().collect();
    assert_eq!(forward[5][0]["match"]["left"]["meta"]["key"], "iifname");
    assert_eq!(forward[5][0]["match"]["right"], set(&all));
    assert_eq!(forward[6][0]["match"]["left"]["meta"]["key"], "oifname");
    assert_eq!(forward[6][1], json!({"drop": null}));
    assert_eq!(forward.len(), 7);
    // back cannot reach front's gateway address; front may reach back's.
    let input = chain(&fw, "input");
    assert_eq!(input.len(), 1);
    assert_eq!(input[0][0]["match"]["right"], set(&back));
    assert_eq!(
        input[0][1]["match"]["right"],
        json!({"set": ["10.100.0.1"]})
    );
    let postrouting = chain(&fw, "postrouting");
    assert_eq!(
        postrouting,
        [json!([
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.100.0.0", "len": 24}}}},
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth0"}},
            {"masquerade": null}
        ])]
    );
    // Every rule carries the mark; the hash is of the ruleset, and stable.
    let rules: Vec<Value> = fw.ruleset["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.get("add")?.get("rule").cloned())
        .collect();
    assert!(rules.iter().all(|r| r["comment"] == "vmctl:lab"));
    assert_eq!(fw.hash, hash_of(&fw.ruleset));
    let again = desired(&config, "local", Some("eth0")).unwrap().unwrap();
    assert_eq!(again, fw);
}

#[test]
fn nat_via_wins_over_the_default_route_and_one_is_needed() {
    let mut config = config();
    let fw = desired(&config, "local", None);
    assert_eq!(
        fw,
        Err(FirewallError::NoUplink {
            host: "local".into(),
            vlan: "front".into()
        })
    );
    let plan = plan_of(&config, &LiveFile::default());
    let text = format!("{plan:?}");
    assert!(text.contains("NoUplink"), "{text}");
    config
        .vlans
        .iter_mut()
        .find(|v| v.name == "front")
        .unwrap()
        .nat_via = Some("wan0".into());
    let fw = desired(&config, "local", Some("eth0")).unwrap().unwrap();
    assert_eq!(fw.uplinks, ["wan0"]);
}

#[test]
fn without_nat_or_routes_nothing_forwards_and_vlans_are_closed() {
    let mut config = config();
    for vlan in &mut config.vlans {
        vlan.nat = false;
        vlan.route_to.clear();
    }
    let fw = desired(&config, "local", None).unwrap().unwrap();
    assert!(fw.forwarding.is_empty());
    assert!(fw.uplinks.is_empty());
    // Each VLAN's guests are kept off the other's gateway address.
    assert_eq!(chain(&fw, "input").len(), 2);
    assert!(chain(&fw, "postrouting").is_empty());
    // No gateway at all: no firewall.
    for vlan in &mut config.vlans {
        vlan.gateway = None;
    }
    assert_eq!(desired(&config, "local", None), Ok(None));
}

/// What the host reports for `config` applied, with `listing` as the table's rules.
fn facts_of(config: &Config, listing: Vec<Value>, marked: bool) -> HostFacts {
    let applied = desired(config, "local", Some("eth0")).unwrap().unwrap();
    HostFacts {
        firewall: Some(FirewallFact {
            table: applied.table.clone(),
            marked,
            rules: vec![json!({"rule": {"comment": "vmctl:lab"}})],
            record: Some(FirewallRecord {
                listing: hash_of(&Value::Array(listing)),
                applied: Firewall {
                    ruleset: Value::Null,
                    ..applied
                },
                enabled: Vec::new(),
            }),
            forwarding_off: Vec::new(),
        }),
        default_route: Some("eth0".into()),
        ..HostFacts::default()
    }
}

fn live_of(config: &Config, facts: &HostFacts) -> LiveFile {
    let mut live = LiveFile::applied(config);
    let state = crate::matching::to_live_state(config, "local", facts);
    let host = live.hosts.get_mut("local").unwrap();
    host.firewalls = state.firewalls;
    host.problems = state.problems;
    host.default_route = state.default_route;
    live
}

#[test]
fn a_table_as_applied_is_no_change_and_a_rule_changed_by_hand_is_drift() {
    let config = config();
    let as_listed = vec![json!({"rule": {"comment": "vmctl:lab"}})];
    let live = live_of(&config, &facts_of(&config, as_listed, true));
    let plan = plan_of(&config, &live).unwrap();
    assert_eq!(change(&plan, "firewall.local").action, Action::NoOp);
    assert!(
        !plan.has_changes(),
        "{:?}",
        plan.actionable().collect::<Vec<_>>()
    );
    // The listing recorded after the apply had one more rule: one was deleted by hand.
    let longer = vec![
        json!({"rule": {"comment": "vmctl:lab"}}),
        json!({"rule": {}}),
    ];
    let live = live_of(&config, &facts_of(&config, longer, true));
    let plan = plan_of(&config, &live).unwrap();
    let fw = change(&plan, "firewall.local");
    assert_eq!(fw.action, Action::Update);
    assert_eq!(fw.attributes.len(), 1, "{:?}", fw.attributes);
    assert_eq!(fw.attributes[0].name, "hash");
    assert!(fw.attributes[0]
        .before
        .as_str()
        .unwrap()
        .starts_with("modified:"));
}

#[test]
fn forwarding_turned_off_by_hand_is_drift() {
    let config = config();
    let as_listed = vec![json!({"rule": {"comment": "vmctl:lab"}})];
    let mut facts = facts_of(&config, as_listed, true);
    let off = config.networks[0].bridge.clone() + "v100";
    if let Some(fact) = facts.firewall.as_mut() {
        fact.forwarding_off = vec![off.clone()];
    }
    let live = live_of(&config, &facts);
    let plan = plan_of(&config, &live).unwrap();
    let fw = change(&plan, "firewall.local");
    assert_eq!(fw.action, Action::Update);
    assert_eq!(fw.attributes.len(), 1, "{:?}", fw.attributes);
    assert_eq!(fw.attributes[0].name, "forwarding");
    assert!(!fw.attributes[0].before.to_string().contains(&off));
    assert!(fw.attributes[0].after.to_string().contains(&off));
}

#[test]
fn a_table_vmctl_did_not_make_is_a_problem_not_adopted() {
    let config = config();
    let live = live_of(&config, &facts_of(&config, Vec::new(), false));
    let host = live.host("local");
    assert!(host.firewalls.is_empty());
    assert_eq!(host.problems.len(), 1);
    assert_eq!(host.problems[0].resource, "firewall.local");
    assert!(host.problems[0].message.contains("not vmctl's"));
    // The plan shows the create that `plan` reports as impossible (and the runtime
    // refuses: the table is not taken over).
    let plan = plan_of(&config, &live).unwrap();
    assert_eq!(change(&plan, "firewall.local").action, Action::Create);
}

#[test]
fn the_table_goes_with_the_last_gateway_and_with_destroy() {
    let mut config = config();
    let live = LiveFile::applied(&config);
    let destroy = PlanOptions {
        destroy: true,
        ..PlanOptions::default()
    };
    let planned = plan(&config, &live, &destroy).unwrap();
    assert_eq!(change(&planned, "firewall.local").action, Action::Delete);
    for vlan in &mut config.vlans {
        vlan.gateway = None;
        vlan.subnet = None;
        vlan.nat = false;
        vlan.route_to.clear();
    }
    for vm in &mut config.vms {
        vm.ip_cmdline = false;
        for nic in &mut vm.nics {
            nic.ip = None;
        }
    }
    let planned = plan_of(&config, &live).unwrap();
    assert_eq!(change(&planned, "firewall.local").action, Action::Delete);
}

#[test]
fn listings_normalize_without_handles_and_metainfo() {
    let listing = json!({"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"table": {"family": "inet", "name": "vmctl-lab", "handle": 3}},
        {"rule": {"chain": "forward", "handle": 9, "comment": "vmctl:lab", "expr": []}}
    ]});
    let normalized = normalize_listing(&listing);
    assert_eq!(
        normalized,
        [
            json!({"table": {"family": "inet", "name": "vmctl-lab"}}),
            json!({"rule": {"chain": "forward", "comment": "vmctl:lab", "expr": []}})
        ]
    );
    assert!(is_marked(&normalized, "lab"));
    assert!(!is_marked(&normalized, "other"));
}

#[test]
fn a_marked_table_without_vmctls_record_is_replaced() {
    // vmctl's mark on its rules, but no record of what was applied (moved away): the
    // table is vmctl's, and its ruleset unknown, so the plan replaces it.
    let config = config();
    let mut facts = facts_of(&config, Vec::new(), true);
    if let Some(fact) = facts.firewall.as_mut() {
        fact.record = None;
    }
    let live = live_of(&config, &facts);
    assert!(live.host("local").problems.is_empty());
    let plan = plan_of(&config, &live).unwrap();
    let fw = change(&plan, "firewall.local");
    assert_eq!(fw.action, Action::Update);
    assert!(fw.attributes.iter().any(|a| a.name == "hash"));
}

#[test]
fn a_vlans_own_bridged_traffic_is_accepted_before_the_drops() {
    let fw = desired(&config(), "local", Some("eth0")).unwrap().unwrap();
    let forward = chain(&fw, "forward");
    let own = |expr: &Value| {
        expr[0]["match"]["left"]["meta"]["key"] == "iifname"
            && expr
                .get(1)
                .is_some_and(|m| m["match"]["left"]["meta"]["key"] == "oifname")
            && expr[0]["match"]["right"] == expr[1]["match"]["right"]
            && expr.get(2).is_some_and(|v| v.get("accept").is_some())
    };
    let first_drop = forward
        .iter()
        .position(|e| {
            e.as_array()
                .is_some_and(|a| a.iter().any(|x| x.get("drop").is_some()))
        })
        .unwrap();
    // One per gateway VLAN (front and back), all before the first drop.
    let accepted: Vec<usize> = (0..forward.len()).filter(|&i| own(&forward[i])).collect();
    assert_eq!(accepted.len(), 2, "{forward:#?}");
    assert!(accepted.iter().all(|&i| i < first_drop), "{forward:#?}");
}

#[test]
fn the_uplink_guard_drops_new_connections_from_the_uplink_and_is_marked() {
    let guard = uplink_guard("lab", "eth0");
    let rule = &guard["add"]["rule"];
    assert_eq!(rule["table"], "vmctl-lab");
    assert_eq!(rule["chain"], "forward");
    assert_eq!(rule["comment"], mark("lab"));
    let expr = rule["expr"].as_array().unwrap();
    assert_eq!(expr[0]["match"]["right"], "eth0");
    assert_eq!(expr[1]["match"]["right"], json!(["new"]));
    assert!(expr[2].get("drop").is_some());
}
