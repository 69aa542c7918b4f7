//! Ordering of the apply graph, checked step pair by step pair with `happens_before`.

use vmctl_schema::Config;

use crate::action::Action;
use crate::graph::{happens_before, ApplyGraph, GraphError};
use crate::live::LiveFile;
use crate::testdata::{graph_of, quickstart};
use crate::{plan, PlanError, PlanOptions};

fn destroy() -> PlanOptions {
    PlanOptions {
        destroy: true,
        ..PlanOptions::default()
    }
}

fn unprotected(config: &Config) -> Config {
    let mut config = config.clone();
    for volume in &mut config.volumes {
        volume.prevent_destroy = false;
    }
    config
}

#[test]
fn creates_follow_dependencies() {
    let config = quickstart();
    let (_, g) = graph_of(&config, &LiveFile::default(), &PlanOptions::default());
    let before = [
        ("create pool.fast", "create volume.web-1-root"),
        ("create volume.web-1-root", "create vm.web-1"),
        ("create network.lan", "create vlan.front"),
        ("create vlan.front", "create vm.web-1"),
        ("create vlan.back", "create vm.db-1"),
        ("create vm.db-1", "create vm.web-1"),
        ("create vm.db-1", "create vm.web-2"),
        ("create pool.fast", "create vm.db-1"),
    ];
    for (a, b) in before {
        assert!(happens_before(&g, a, b), "{a} before {b}");
        assert!(!happens_before(&g, b, a), "not {b} before {a}");
    }
    let independent = [
        ("create pool.fast", "create network.lan"),
        ("create vm.web-1", "create vm.web-2"),
        ("create volume.web-1-root", "create vlan.front"),
    ];
    for (a, b) in independent {
        assert!(
            !happens_before(&g, a, b) && !happens_before(&g, b, a),
            "{a} ∥ {b}"
        );
    }
}

#[test]
fn deletes_run_in_reverse() {
    let config = unprotected(&quickstart());
    let live = LiveFile::applied(&config);
    let (_, g) = graph_of(&config, &live, &destroy());
    let before = [
        ("delete vm.web-1", "delete volume.web-1-root"),
        ("delete volume.web-1-root", "delete pool.fast"),
        ("delete vm.web-1", "delete vlan.front"),
        ("delete vlan.front", "delete network.lan"),
        ("delete vm.web-1", "delete vm.db-1"),
        ("delete vm.db-1", "delete vlan.back"),
    ];
    for (a, b) in before {
        assert!(happens_before(&g, a, b), "{a} before {b}");
        assert!(!happens_before(&g, b, a), "not {b} before {a}");
    }
}

#[test]
fn a_replace_is_delete_then_create_in_place_in_the_order() {
    let mut config = unprotected(&quickstart());
    let live = LiveFile::applied(&config);
    config.pools[0].path = "/srv/fast".into();
    let (plan, g) = graph_of(&config, &live, &PlanOptions::default());
    assert_eq!(plan.changes[0].action, Action::Replace);
    let chain = [
        "delete vm.web-1",
        "delete volume.web-1-root",
        "delete pool.fast",
        "create pool.fast",
        "create volume.web-1-root",
        "create vm.web-1",
    ];
    for pair in chain.windows(2) {
        assert!(
            happens_before(&g, pair[0], pair[1]),
            "{} before {}",
            pair[0],
            pair[1]
        );
    }
    // db-1 is replaced too (its volume is); web-1 waits for it on the way up and goes
    // first on the way down.
    assert!(happens_before(&g, "create vm.db-1", "create vm.web-1"));
    assert!(happens_before(&g, "delete vm.web-1", "delete vm.db-1"));
}

#[test]
fn restart_only_touches_the_vm() {
    let mut config = quickstart();
    let live = LiveFile::applied(&config);
    config.vms[0].memory *= 2;
    let (plan, g) = graph_of(&config, &live, &PlanOptions::default());
    assert_eq!(plan.actionable().count(), 1);
    assert!(happens_before(&g, "delete vm.web-1", "create vm.web-1"));
    assert_eq!(g.graph.node_count(), 2);
}

#[test]
fn stop_and_start_follow_depends_on() {
    let mut config = quickstart();
    let mut live = LiveFile::applied(&config);
    for vm in &mut live.hosts.get_mut("local").unwrap().vms {
        vm.status = crate::VmStatus::Stopped;
    }
    let (_, g) = graph_of(&config, &live, &PlanOptions::default());
    assert!(happens_before(&g, "start vm.db-1", "start vm.web-1"));
    for vm in &mut config.vms {
        vm.state = vmctl_schema::VmState::Stopped;
    }
    let (_, g) = graph_of(
        &config,
        &LiveFile::applied(&quickstart()),
        &PlanOptions::default(),
    );
    assert!(happens_before(&g, "stop vm.web-1", "stop vm.db-1"));
}

#[test]
fn a_cycle_is_an_error_naming_it() {
    let mut config = quickstart();
    config.vms[2].depends_on = vec!["web-2".into()]; // db-1 → web-2 → db-1
    let errors = plan(&config, &LiveFile::default(), &PlanOptions::default())
        .expect_err("cycle")
        .errors;
    let [PlanError::Graph(GraphError::Cycle { cycle })] = &errors[..] else {
        panic!("{errors:?}");
    };
    let steps: Vec<&str> = cycle.split(" -> ").collect();
    assert_eq!(steps.first(), steps.last(), "{cycle}");
    let mut members = steps[1..].to_vec();
    members.sort();
    assert_eq!(members, ["create vm.db-1", "create vm.web-2"], "{cycle}");
}

#[test]
fn plan_changes_come_in_apply_order_and_levels_respect_edges() {
    let config = quickstart();
    let (plan, g) = graph_of(&config, &LiveFile::default(), &PlanOptions::default());
    let order: Vec<String> = plan.changes.iter().map(|c| c.id.to_string()).collect();
    let position = |a: &str| order.iter().position(|x| x == a).unwrap();
    assert!(position("pool.fast") < position("volume.web-1-root"));
    assert!(position("vm.db-1") < position("vm.web-1"));
    // The firewall after its VLANs, and before the VMs, which boot with it in place.
    assert!(position("vlan.front") < position("firewall.local"));
    assert!(position("firewall.local") < position("vm.db-1"));
    let levels = g.levels();
    let mut level_of = vec![0; g.graph.node_count()];
    for (l, nodes) in levels.iter().enumerate() {
        for n in nodes {
            level_of[n.index()] = l;
        }
    }
    for edge in g.graph.edge_indices() {
        let (a, b) = g.graph.edge_endpoints(edge).unwrap();
        assert!(level_of[a.index()] < level_of[b.index()]);
    }
    assert_eq!(
        levels.len(),
        5,
        "pool|network, volume|vlan, firewall, db-1, web-*"
    );
    assert_eq!(levels.iter().map(Vec::len).sum::<usize>(), 11);
}

#[test]
fn no_changes_no_steps() {
    let config = quickstart();
    let (plan, g) = graph_of(
        &config,
        &LiveFile::applied(&config),
        &PlanOptions::default(),
    );
    assert!(!plan.has_changes());
    assert_eq!(g.graph.node_count(), 0);
    assert!(ApplyGraph::build(&plan).unwrap().levels().is_empty());
}

#[test]
fn a_create_waits_for_the_delete_that_frees_its_vlan_id() {
    let config = quickstart();
    let live = LiveFile::applied(&config);
    let mut renamed = config.clone();
    renamed.vlans[1].name = "back-2".into(); // same network, same id 200
    renamed.vms[2].nics[0].vlan = "back-2".into();
    let (plan, g) = graph_of(&renamed, &live, &PlanOptions::default());
    assert_eq!(
        crate::testdata::change(&plan, "vlan.back").action,
        Action::Delete
    );
    let chain = [
        "delete vm.db-1",
        "delete vlan.back",
        "create vlan.back-2",
        "create vm.db-1",
    ];
    for pair in chain.windows(2) {
        assert!(
            happens_before(&g, pair[0], pair[1]),
            "{} before {}",
            pair[0],
            pair[1]
        );
    }
}

/// Every subset of the quickstart's resources missing from the host (1,024 live states):
/// the plan creates exactly the missing ones, and lists each after the creates of what it
/// needs; the graph agrees. A VM still there whose disk is missing restarts, after the
/// disk's create; nothing else changes.
#[test]
fn every_partial_live_state_creates_what_is_missing_in_order() {
    let config = quickstart();
    let full = LiveFile::applied(&config);
    let ids: Vec<(crate::ResourceKind, String)> = {
        let host = &full.hosts["local"];
        use crate::ResourceKind::*;
        let names = |kind, names: Vec<&String>| {
            names
                .into_iter()
                .map(move |n| (kind, n.clone()))
                .collect::<Vec<_>>()
        };
        [
            names(Pool, host.pools.iter().map(|r| &r.name).collect()),
            names(Network, host.networks.iter().map(|r| &r.name).collect()),
            names(Volume, host.volumes.iter().map(|r| &r.name).collect()),
            names(Vlan, host.vlans.iter().map(|r| &r.name).collect()),
            names(Vm, host.vms.iter().map(|r| &r.name).collect()),
        ]
        .concat()
    };
    assert_eq!(ids.len(), 10);
    for mask in 0u32..(1 << ids.len()) {
        let missing = |kind, name: &str| {
            ids.iter()
                .position(|(k, n)| *k == kind && n == name)
                .is_some_and(|i| mask & (1 << i) != 0)
        };
        use crate::ResourceKind::*;
        let mut live = full.clone();
        let host = live.hosts.get_mut("local").unwrap();
        host.pools.retain(|r| !missing(Pool, &r.name));
        host.networks.retain(|r| !missing(Network, &r.name));
        host.volumes.retain(|r| !missing(Volume, &r.name));
        host.vlans.retain(|r| !missing(Vlan, &r.name));
        host.vms.retain(|r| !missing(Vm, &r.name));
        let (plan, g) = graph_of(&config, &live, &PlanOptions::default());
        // A VM still there whose disk is missing restarts after the disk's create.
        let restarts: Vec<_> = plan
            .actionable()
            .filter(|c| c.action == Action::Replace)
            .collect();
        for vm in &config.vms {
            let restarted = restarts.iter().any(|c| c.id.name == vm.name);
            let disk_missing = vm.disks.iter().any(|d| missing(Volume, d));
            assert_eq!(
                restarted,
                !missing(Vm, &vm.name) && disk_missing,
                "mask {mask:b}: vm.{}",
                vm.name
            );
            if restarted {
                for d in vm.disks.iter().filter(|d| missing(Volume, d)) {
                    let (a, b) = (
                        format!("create volume.{d}"),
                        format!("create vm.{}", vm.name),
                    );
                    assert!(happens_before(&g, &a, &b), "mask {mask:b}: {a} before {b}");
                }
            }
        }
        let creates: Vec<_> = plan
            .actionable()
            .filter(|c| c.action != Action::Replace)
            .collect();
        assert_eq!(creates.len(), mask.count_ones() as usize, "mask {mask:b}");
        assert!(creates.iter().all(|c| c.action == Action::Create));
        for (i, change) in creates.iter().enumerate() {
            for need in change.after.as_ref().unwrap().needs() {
                if let Some(j) = creates.iter().position(|c| c.id == need) {
                    assert!(j < i, "mask {mask:b}: {need} listed after {}", change.id);
                    let (a, b) = (format!("create {need}"), format!("create {}", change.id));
                    assert!(happens_before(&g, &a, &b), "mask {mask:b}: {a} before {b}");
                }
            }
        }
    }
}

/// The quickstart with `netns "vmctl-lab"` on its host, nothing protected.
fn in_netns() -> Config {
    let mut config = unprotected(&quickstart());
    config.hosts[0].netns = Some("vmctl-lab".into());
    config
}

#[test]
fn what_lives_in_the_netns_is_made_after_it() {
    let config = in_netns();
    let (_, g) = graph_of(&config, &LiveFile::default(), &PlanOptions::default());
    for b in [
        "create network.lan",
        "create vlan.front",
        "create vlan.back",
        "create vm.web-1",
        "create vm.db-1",
    ] {
        assert!(
            happens_before(&g, "create netns.vmctl-lab", b),
            "before {b}"
        );
    }
    for other in ["create pool.fast", "create volume.web-1-root"] {
        assert!(
            !happens_before(&g, "create netns.vmctl-lab", other)
                && !happens_before(&g, other, "create netns.vmctl-lab"),
            "netns ∥ {other}"
        );
    }
}

#[test]
fn the_netns_is_deleted_after_everything_in_it() {
    let config = in_netns();
    let live = LiveFile::applied(&config);
    let (_, g) = graph_of(&config, &live, &destroy());
    for a in [
        "delete network.lan",
        "delete vlan.front",
        "delete vm.web-1",
        "delete vm.web-2",
        "delete vm.db-1",
    ] {
        assert!(
            happens_before(&g, a, "delete netns.vmctl-lab"),
            "{a} before"
        );
    }
    assert!(!happens_before(
        &g,
        "delete pool.fast",
        "delete netns.vmctl-lab"
    ));
}

#[test]
fn a_started_vm_waits_for_the_netns_too() {
    let config = in_netns();
    let mut live = LiveFile::applied(&config);
    let host = live.hosts.get_mut("local").expect("host local");
    host.netns = None;
    for vm in &mut host.vms {
        vm.status = crate::live::VmStatus::Stopped;
    }
    let (_, g) = graph_of(&config, &live, &PlanOptions::default());
    assert!(happens_before(
        &g,
        "create netns.vmctl-lab",
        "start vm.web-1"
    ));
}
