//! Moves: which VM moves running, which is deleted and created, and why; the graph of a
//! migration; prevent-destroy and `--target` with a moving volume.

use std::path::PathBuf;

use vmctl_schema::{Config, Pool, PoolKind, VmState};

use crate::action::{Action, Reason};
use crate::graph::happens_before;
use crate::live::{LiveFile, VmStatus};
use crate::testdata::{change, fleet, graph_of, volume};
use crate::{plan, PlanError, PlanOptions};

/// The fleet with `web-1` on a volume of a pool on `kvm-01` (and a pool on `kvm-02`),
/// applied, every host reporting the same CPU.
fn applied() -> (Config, LiveFile) {
    let mut config = fleet();
    for (name, host) in [("p1", "kvm-01"), ("p2", "kvm-02")] {
        config.pools.push(Pool {
            name: name.into(),
            host: host.into(),
            kind: PoolKind::Dir,
            path: PathBuf::from(format!("/srv/{name}")),
        });
    }
    let mut root = volume("web-1-root", 1 << 30);
    root.pool = "p1".into();
    config.volumes.push(root);
    config.vms[0].disks = vec!["web-1-root".into()];
    let mut live = LiveFile::applied(&config);
    for state in live.hosts.values_mut() {
        state.cpu_features = Some(vec!["sse2".into(), "avx".into(), "avx2".into()]);
    }
    (config, live)
}

/// Options of a runtime that can move a running VM.
fn live_options() -> PlanOptions {
    PlanOptions {
        live_migration: true,
        ..PlanOptions::default()
    }
}

fn plan_of(config: &Config, live: &LiveFile) -> Result<crate::plan::Plan, crate::PlanErrors> {
    plan(config, live, &live_options())
}

/// `web-1` and its volume edited onto `kvm-02`.
fn moved(config: &mut Config) {
    config.vms[0].host = "kvm-02".into();
    config.volumes[0].pool = "p2".into();
}

fn not_migrated(plan: &crate::plan::Plan) -> String {
    let create = plan
        .changes
        .iter()
        .find(|c| c.id.to_string() == "vm.web-1" && c.action == Action::Create)
        .unwrap_or_else(|| panic!("no create of vm.web-1: {:#?}", plan.changes));
    let delete = plan
        .changes
        .iter()
        .find(|c| c.id.to_string() == "vm.web-1" && c.action == Action::Delete)
        .expect("a delete of vm.web-1");
    assert_eq!(
        (create.host.as_str(), delete.host.as_str()),
        ("kvm-02", "kvm-01")
    );
    assert_eq!(create.reason, delete.reason);
    match &create.reason {
        Some(Reason::NotMigrated { from, to, why }) => {
            assert_eq!((from.as_str(), to.as_str()), ("kvm-01", "kvm-02"));
            why.clone()
        }
        other => panic!("not a NotMigrated reason: {other:?}"),
    }
}

#[test]
fn a_running_vm_whose_host_changes_migrates_with_its_volume() {
    let (mut config, live) = applied();
    moved(&mut config);
    let (plan, graph) = graph_of(&config, &live, &live_options());
    let vm = change(&plan, "vm.web-1");
    assert_eq!(vm.action, Action::Migrate);
    assert_eq!(
        (vm.host.as_str(), vm.from.as_deref()),
        ("kvm-02", Some("kvm-01"))
    );
    assert_eq!(vm.status, Some(VmStatus::Running));
    assert_eq!(
        vm.reason,
        Some(Reason::Migrate {
            from: "kvm-01".into()
        })
    );
    let names: Vec<&str> = vm.attributes.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["host"]);
    let disk = change(&plan, "volume.web-1-root");
    assert_eq!(disk.action, Action::Migrate);
    assert_eq!(disk.from.as_deref(), Some("kvm-01"));
    let names: Vec<&str> = disk.attributes.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["host", "pool"]);
    // One change each: no delete or create of either is left.
    let web1 = plan
        .changes
        .iter()
        .filter(|c| c.id.name.starts_with("web-1"));
    assert_eq!(web1.count(), 2);
    let s = plan.summary();
    assert_eq!((s.add, s.change, s.destroy), (0, 2, 0));
    // Made there, moved, then removed here.
    assert!(happens_before(
        &graph,
        "create volume.web-1-root",
        "migrate vm.web-1"
    ));
    assert!(happens_before(
        &graph,
        "migrate vm.web-1",
        "delete volume.web-1-root"
    ));
    let delete = graph
        .find(crate::graph::Phase::Delete, "volume.web-1-root")
        .expect("delete step");
    assert_eq!(graph.graph[delete].host, "kvm-01");
    let create = graph
        .find(crate::graph::Phase::Create, "volume.web-1-root")
        .expect("create step");
    assert_eq!(graph.graph[create].host, "kvm-02");
}

#[test]
fn a_pool_left_empty_on_the_old_host_goes_after_the_move() {
    let (mut config, live) = applied();
    moved(&mut config);
    config.pools.retain(|p| p.name != "p1");
    let (plan, graph) = graph_of(&config, &live, &live_options());
    assert_eq!(change(&plan, "pool.p1").action, Action::Delete);
    assert!(happens_before(&graph, "migrate vm.web-1", "delete pool.p1"));
}

#[test]
fn without_live_migration_a_running_vm_is_stopped_its_disk_copied_then_started() {
    let (mut config, live) = applied();
    moved(&mut config);
    let (plan, graph) = graph_of(&config, &live, &PlanOptions::default());
    assert_eq!(not_migrated(&plan), "the runtime cannot move a running VM");
    let disk = change(&plan, "volume.web-1-root");
    assert_eq!(disk.action, Action::Migrate);
    assert_eq!(
        disk.reason,
        Some(Reason::MovesWith {
            vm: "web-1".into(),
            from: "kvm-01".into()
        })
    );
    // Stopped there, copied (a disk nothing writes), started here, removed there.
    assert!(happens_before(
        &graph,
        "delete vm.web-1",
        "create volume.web-1-root"
    ));
    assert!(happens_before(
        &graph,
        "create volume.web-1-root",
        "create vm.web-1"
    ));
    assert!(happens_before(
        &graph,
        "create volume.web-1-root",
        "delete volume.web-1-root"
    ));
    let s = plan.summary();
    assert_eq!((s.add, s.change, s.destroy), (1, 1, 1));
}

#[test]
fn migrate_false_moves_by_delete_and_create() {
    let (mut config, live) = applied();
    moved(&mut config);
    config.vms[0].migrate = false;
    assert_eq!(
        not_migrated(&plan_of(&config, &live).unwrap()),
        "`migrate #false`"
    );
}

#[test]
fn a_change_that_needs_a_restart_moves_by_delete_and_create() {
    let (mut config, live) = applied();
    moved(&mut config);
    config.vms[0].memory *= 2;
    let why = not_migrated(&plan_of(&config, &live).unwrap());
    assert!(why.contains("`memory` changes too"), "{why}");
}

#[test]
fn a_stopped_vm_moves_by_delete_and_create() {
    let (mut config, mut live) = applied();
    moved(&mut config);
    let state = live.hosts.get_mut("kvm-01").unwrap();
    state.vms[0].status = VmStatus::Stopped;
    let why = not_migrated(&plan_of(&config, &live).unwrap());
    assert_eq!(why, "it is not running");
    let (mut config, live) = applied();
    moved(&mut config);
    config.vms[0].state = VmState::Stopped;
    let why = not_migrated(&plan_of(&config, &live).unwrap());
    assert_eq!(why, "the config wants it stopped");
}

#[test]
fn a_target_that_hides_a_cpu_feature_the_guest_has_is_refused() {
    let (mut config, live) = applied();
    moved(&mut config);
    config.hosts[1].cpuid_mask = vec!["avx2".into()];
    let why = not_migrated(&plan_of(&config, &live).unwrap());
    assert!(
        why.contains("host \"kvm-02\" cannot give the guest CPU feature it has: avx2"),
        "{why}"
    );
    // A feature the guest never saw (masked on the old host too) is no obstacle.
    let (mut config, mut live) = applied();
    moved(&mut config);
    config.hosts[1].cpuid_mask = vec!["avx2".into()];
    let state = live.hosts.get_mut("kvm-01").unwrap();
    state.vms[0].spec.cpuid_mask = vec!["avx2".into()];
    let plan = plan_of(&config, &live).unwrap();
    assert_eq!(change(&plan, "vm.web-1").action, Action::Migrate);
}

#[test]
fn a_target_that_lacks_a_cpu_feature_or_does_not_say_is_refused() {
    let (mut config, mut live) = applied();
    moved(&mut config);
    live.hosts.get_mut("kvm-02").unwrap().cpu_features = Some(vec!["sse2".into()]);
    let why = not_migrated(&plan_of(&config, &live).unwrap());
    assert!(why.ends_with("CPU features it has: avx, avx2"), "{why}");
    live.hosts.get_mut("kvm-02").unwrap().cpu_features = None;
    let why = not_migrated(&plan_of(&config, &live).unwrap());
    assert!(
        why.contains("host \"kvm-02\" did not report its CPU features"),
        "{why}"
    );
}

#[test]
fn a_vm_whose_disk_does_not_move_is_not_migrated() {
    let (mut config, live) = applied();
    config.vms[0].host = "kvm-02".into();
    let why = not_migrated(&plan_of(&config, &live).unwrap());
    assert!(
        why.contains("its disk \"web-1-root\" does not move with it"),
        "{why}"
    );
}

#[test]
fn prevent_destroy_on_a_moving_volume_is_an_error() {
    let (mut config, mut live) = applied();
    moved(&mut config);
    let state = live.hosts.get_mut("kvm-01").unwrap();
    state.volumes[0].prevent_destroy = true;
    let errors = plan_of(&config, &live).unwrap_err().errors;
    assert!(
        errors.iter().any(|e| matches!(
            e,
            PlanError::Diff(crate::diff::DiffError::PreventDestroy { name, action: Action::Migrate, .. })
                if name == "web-1-root"
        )),
        "{errors:#?}"
    );
}

#[test]
fn a_targeted_moving_volume_keeps_its_vm() {
    let (mut config, live) = applied();
    moved(&mut config);
    let options = PlanOptions {
        targets: vec!["volume.web-1-root".into()],
        ..live_options()
    };
    let plan = plan(&config, &live, &options).unwrap();
    assert_eq!(change(&plan, "vm.web-1").action, Action::Migrate);
    assert_eq!(change(&plan, "volume.web-1-root").action, Action::Migrate);
}

#[test]
fn the_json_plan_says_migrate_and_from() {
    let (mut config, live) = applied();
    moved(&mut config);
    let (plan, graph) = graph_of(&config, &live, &live_options());
    let json: serde_json::Value =
        serde_json::from_str(&crate::render::json::render(&plan, &graph)).unwrap();
    let vm = json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "vm.web-1")
        .unwrap();
    assert_eq!(vm["action"], "migrate");
    assert_eq!(vm["from"], "kvm-01");
    assert_eq!(vm["host"], "kvm-02");
    let steps: Vec<(&str, &str)> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["address"] == "volume.web-1-root" || s["address"] == "vm.web-1")
        .map(|s| (s["phase"].as_str().unwrap(), s["host"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("create", "kvm-02"),
            ("migrate", "kvm-02"),
            ("delete", "kvm-01")
        ]
    );
}

#[test]
fn the_human_plan_shows_the_move() {
    let (mut config, live) = applied();
    moved(&mut config);
    let text = crate::render::human::render(&plan_of(&config, &live).unwrap(), false);
    assert!(
        text.contains("~> move to another host while running"),
        "{text}"
    );
    assert!(
        text.contains(
            "# vm.web-1 on host \"kvm-02\" will be migrated (from host \"kvm-01\"; it keeps running)"
        ),
        "{text}"
    );
    assert!(text.contains(" ~> vm \"web-1\" {"), "{text}");
    assert!(text.contains("~ host = \"kvm-01\" -> \"kvm-02\""), "{text}");
    assert!(
        text.contains("Plan: 0 to add, 2 to change, 0 to destroy."),
        "{text}"
    );
}

#[test]
fn a_moving_volume_that_would_shrink_is_an_error() {
    let (mut config, live) = applied();
    moved(&mut config);
    config.volumes[0].size /= 2;
    let errors = plan_of(&config, &live).unwrap_err().errors;
    assert!(
        errors.iter().any(|e| matches!(
            e,
            PlanError::Diff(crate::diff::DiffError::ShrinkVolume { name, .. }) if name == "web-1-root"
        )),
        "{errors:#?}"
    );
}

#[test]
fn a_vm_a_move_left_paused_is_resumed_where_it_is_unless_another_copy_exists() {
    let (config, mut live) = applied();
    live.hosts.get_mut("kvm-01").unwrap().vms[0].paused = true;
    let plan = plan_of(&config, &live).unwrap();
    let vm = change(&plan, "vm.web-1");
    assert_eq!(
        (vm.action, &vm.reason),
        (Action::Update, &Some(Reason::Paused))
    );
    let state = vm.attributes.iter().find(|a| a.name == "state").unwrap();
    assert_eq!(
        (state.before.as_str(), state.after.as_str()),
        (Some("paused"), Some("running"))
    );
    // Its copy on kvm-02 (a move killed after it started there) goes first; this one
    // is resumed by the next plan, never while the other runs.
    let copy = live.hosts["kvm-01"].vms[0].clone();
    live.hosts.get_mut("kvm-02").unwrap().vms.push(copy);
    let plan = plan_of(&config, &live).unwrap();
    let kept = plan
        .changes
        .iter()
        .find(|c| c.id.to_string() == "vm.web-1" && c.host == "kvm-01")
        .unwrap();
    assert_eq!(kept.action, Action::NoOp);
    let other = plan
        .changes
        .iter()
        .find(|c| c.id.to_string() == "vm.web-1" && c.host == "kvm-02")
        .unwrap();
    assert_eq!(other.action, Action::Delete);
}
