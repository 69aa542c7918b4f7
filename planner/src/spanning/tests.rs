//! Networks that span hosts, planned: a tunnel per VLAN per host, and every change of
//! the fleet's shape or of a tunnel on a host an in-place update of that host's VLAN.

use std::net::IpAddr;

use vmctl_schema::Vlan;

use super::*;
use crate::action::{Action, Effect, ResourceKind};
use crate::live::{LiveFile, LiveVlan};
use crate::plan::{Change, Plan, Resource, Tunnel};
use crate::testdata::{fleet, plan_of};
use crate::ApplyGraph;

#[test]
fn a_spanning_vlan_on_each_host_tunnels_to_the_others() {
    let config = fleet();
    let underlays = Underlays::of(&config);
    let lan = &config.networks[0];
    let front = &config.vlans[0];
    let on = |host| vlan_on(lan, front, host, &underlays);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let a = on("kvm-01");
    assert_eq!(
        a.vxlan,
        Some(Tunnel {
            vni: front.vni.unwrap(),
            local: ip("192.0.2.11"),
            peers: vec![ip("192.0.2.12"), ip("192.0.2.13")],
        })
    );
    // The gateway is on its gateway host only; the host sees no `vni` or
    // `gateway-host` of the config, only the tunnel.
    assert_eq!(a.gateway.as_deref(), Some("10.100.0.1/24"));
    assert_eq!(on("kvm-02").gateway, None);
    assert_eq!((a.vni, a.gateway_host.as_deref()), (None, None));
    assert_eq!(
        on("kvm-03").vxlan.unwrap().peers,
        [ip("192.0.2.11"), ip("192.0.2.12")]
    );
    let bridge = network_on(lan, "kvm-02");
    assert_eq!((bridge.host.as_str(), bridge.hosts.len()), ("kvm-02", 0));
    // A VLAN of a network on one host has no tunnel and keeps its gateway.
    let mut one = lan.clone();
    one.hosts = Vec::new();
    one.host = "kvm-01".into();
    let plain = vlan_on(
        &one,
        &Vlan {
            vni: None,
            gateway_host: None,
            dhcp: false,
            ..front.clone()
        },
        "kvm-01",
        &underlays,
    );
    assert_eq!(plain.vxlan, None);
    assert_eq!(plain.gateway.as_deref(), Some("10.100.0.1/24"));
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

/// The change of `address` on `host`.
fn on<'a>(plan: &'a Plan, host: &str, address: &str) -> &'a Change {
    plan.changes
        .iter()
        .find(|c| c.host == host && c.id.to_string() == address)
        .unwrap_or_else(|| panic!("no change of {address} on {host}"))
}

/// The action of every change of the plan that is not a no-op, as `host address action`.
fn actions(plan: &Plan) -> Vec<String> {
    let mut out: Vec<String> = plan
        .actionable()
        .map(|c| format!("{} {} {}", c.host, c.id, c.action))
        .collect();
    out.sort();
    out
}

fn live_vlan<'a>(live: &'a mut LiveFile, host: &str, vlan: &str) -> &'a mut LiveVlan {
    let state = live.hosts.get_mut(host).expect("host");
    state
        .vlans
        .iter_mut()
        .find(|v| v.name == vlan)
        .expect("vlan")
}

#[test]
fn a_spanning_network_is_planned_on_each_host_and_ordered_host_by_host() {
    let config = fleet();
    let plan = plan_of(&config, &LiveFile::default()).expect("plan");
    for host in ["kvm-01", "kvm-02", "kvm-03"] {
        for address in ["network.lan", "vlan.front", "vlan.back"] {
            assert_eq!(
                on(&plan, host, address).action,
                Action::Create,
                "{host} {address}"
            );
        }
    }
    let Some(Resource::Vlan(front)) = &on(&plan, "kvm-02", "vlan.front").after else {
        panic!("no VLAN");
    };
    let tunnel = front.vxlan.as_ref().expect("a tunnel");
    assert_eq!(tunnel.local, ip("192.0.2.12"));
    assert_eq!(tunnel.peers, [ip("192.0.2.11"), ip("192.0.2.13")]);
    // A host's VLAN waits for that host's network only, and a VM for its own host's VLAN:
    // no network or VLAN step waits for another host.
    let graph = ApplyGraph::build(&plan).expect("graph");
    for edge in graph.graph.raw_edges() {
        let (a, b) = (&graph.graph[edge.source()], &graph.graph[edge.target()]);
        if a.id.kind != ResourceKind::Vm || b.id.kind != ResourceKind::Vm {
            assert_eq!(a.host, b.host, "{a} on {} before {b} on {}", a.host, b.host);
        }
    }
    // web-1 (on kvm-01) still follows db-1 (on kvm-03): `depends-on` crosses hosts.
    let mut config = config;
    config.vms[0].depends_on = vec!["db-1".into()];
    let plan = plan_of(&config, &LiveFile::default()).expect("plan");
    let graph = ApplyGraph::build(&plan).expect("graph");
    let find = |host: &str, name: &str| {
        graph
            .graph
            .node_indices()
            .find(|&n| graph.graph[n].host == host && graph.graph[n].id.to_string() == name)
            .expect("step")
    };
    assert!(petgraph::algo::has_path_connecting(
        &graph.graph,
        find("kvm-03", "vm.db-1"),
        find("kvm-01", "vm.web-1"),
        None
    ));
}

#[test]
fn applied_exactly_is_no_change() {
    let config = fleet();
    let plan = plan_of(&config, &LiveFile::applied(&config)).expect("plan");
    assert!(!plan.has_changes(), "{:?}", actions(&plan));
}

#[test]
fn a_host_joining_updates_the_others_tunnels_in_place() {
    let mut config = fleet();
    let live = LiveFile::applied(&config);
    let mut kvm04 = config.hosts[0].clone();
    kvm04.name = "kvm-04".into();
    kvm04.underlay = Some(ip("192.0.2.14"));
    config.hosts.push(kvm04);
    config.networks[0].hosts.push("kvm-04".into());
    let plan = plan_of(&config, &live).expect("plan");
    let mut expected = vec![
        "kvm-04 network.lan create".to_owned(),
        "kvm-04 vlan.back create".to_owned(),
        "kvm-04 vlan.front create".to_owned(),
    ];
    for host in ["kvm-01", "kvm-02", "kvm-03"] {
        expected.push(format!("{host} vlan.back update"));
        expected.push(format!("{host} vlan.front update"));
    }
    expected.sort();
    assert_eq!(actions(&plan), expected);
    let change = on(&plan, "kvm-02", "vlan.front");
    let attributes: Vec<_> = change
        .attributes
        .iter()
        .map(|a| (a.name.as_str(), a.effect))
        .collect();
    assert_eq!(attributes, [("vxlan", Effect::InPlace)]);
    assert_eq!(
        change.attributes[0].after["peers"],
        serde_json::json!(["192.0.2.11", "192.0.2.13", "192.0.2.14"])
    );
    // And leaving (the host stays in the config): the host's network and VLANs go, the
    // others lose a peer in place.
    let mut left = config.clone();
    left.networks[0].hosts.pop();
    let plan = plan_of(&left, &LiveFile::applied(&config)).expect("plan");
    let deletes: Vec<String> = actions(&plan)
        .into_iter()
        .filter(|a| a.starts_with("kvm-04"))
        .collect();
    assert_eq!(
        deletes,
        [
            "kvm-04 network.lan delete",
            "kvm-04 vlan.back delete",
            "kvm-04 vlan.front delete"
        ]
    );
    assert_eq!(on(&plan, "kvm-01", "vlan.back").action, Action::Update);
}

#[test]
fn a_tunnel_that_drifted_is_repaired_in_place_on_its_host_only() {
    let config = fleet();
    type Drift = fn(&mut LiveVlan);
    let drifts: [(&str, Drift); 3] = [
        ("link deleted", |v| v.vxlan = None),
        ("entry missing", |v| {
            if let Some(t) = &mut v.vxlan {
                t.peers.pop();
            }
        }),
        ("entry extra", |v| {
            if let Some(t) = &mut v.vxlan {
                t.peers.push(ip("198.51.100.7"));
            }
        }),
    ];
    for (what, drift) in drifts {
        let mut live = LiveFile::applied(&config);
        drift(live_vlan(&mut live, "kvm-02", "front"));
        let plan = plan_of(&config, &live).expect("plan");
        assert_eq!(actions(&plan), ["kvm-02 vlan.front update"], "{what}");
        let change = on(&plan, "kvm-02", "vlan.front");
        assert_eq!(change.attributes.len(), 1, "{what}");
        assert_eq!(change.attributes[0].effect, Effect::InPlace, "{what}");
    }
}

#[test]
fn a_network_that_starts_to_span_keeps_its_first_host_as_it_is() {
    let spanning = fleet();
    let mut single = spanning.clone();
    single.networks[0].hosts = Vec::new();
    single.networks[0].host = "kvm-01".into();
    for vlan in &mut single.vlans {
        vlan.vni = None;
        vlan.gateway_host = None;
    }
    for vm in &mut single.vms {
        vm.host = "kvm-01".into();
    }
    let live = LiveFile::applied(&single);
    let plan = plan_of(&spanning, &live).expect("plan");
    assert_eq!(on(&plan, "kvm-01", "network.lan").action, Action::NoOp);
    for vlan in ["vlan.front", "vlan.back"] {
        assert_eq!(on(&plan, "kvm-01", vlan).action, Action::Update, "{vlan}");
        assert_eq!(on(&plan, "kvm-02", vlan).action, Action::Create, "{vlan}");
    }
}

#[test]
fn moving_the_gateway_updates_both_hosts_in_place() {
    let config = fleet();
    let live = LiveFile::applied(&config);
    let mut moved = config.clone();
    moved.vlans[0].gateway_host = Some("kvm-02".into());
    let plan = plan_of(&moved, &live).expect("plan");
    assert_eq!(
        actions(&plan),
        [
            "kvm-01 firewall.kvm-01 delete",
            "kvm-01 vlan.front update",
            "kvm-02 firewall.kvm-02 create",
            "kvm-02 vlan.front update",
        ]
    );
    let change = on(&plan, "kvm-02", "vlan.front");
    assert_eq!(change.attributes[0].name, "gateway");
    assert_eq!(change.attributes[0].after, "10.100.0.1/24");
}

#[test]
fn a_host_vlan_reads_and_writes_as_the_vlan_with_its_tunnel() {
    let vlan = HostVlan {
        vlan: crate::testdata::vlan("front", 100, None),
        vxlan: Some(Tunnel {
            vni: 7,
            local: ip("192.0.2.11"),
            peers: vec![ip("192.0.2.12")],
        }),
    };
    let json = serde_json::to_value(Resource::Vlan(vlan.clone())).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"kind": "vlan", "name": "front", "network": "lan", "id": 100,
            "gateway": null, "vxlan": {"vni": 7, "local": "192.0.2.11", "peers": ["192.0.2.12"]}})
    );
    let back: Resource = serde_json::from_value(json).expect("read back");
    assert_eq!(back, Resource::Vlan(vlan.clone()));
    let plain = serde_json::to_value(Resource::Vlan(HostVlan::from(vlan.vlan))).expect("json");
    assert!(plain.get("vxlan").is_none(), "{plain}");
}
