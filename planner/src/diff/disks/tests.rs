//! The disk-restart rule, case by case: an edit of "applied exactly", the actions the
//! plan must show, and the steps that must come in order.

use vmctl_schema::{Config, VmState};

use crate::action::{Action, Reason, ResourceId, ResourceKind};
use crate::graph::happens_before;
use crate::live::{LiveFile, LiveState, LiveVm, VmStatus};
use crate::testdata::{change, graph_of, quickstart};
use crate::PlanOptions;

fn live_host(live: &mut LiveFile) -> &mut LiveState {
    live.hosts.get_mut("local").expect("host local")
}

fn live_vm<'a>(live: &'a mut LiveFile, name: &str) -> &'a mut LiveVm {
    live_host(live)
        .vms
        .iter_mut()
        .find(|v| v.name == name)
        .expect("live vm")
}

fn drop_volume(live: &mut LiveFile, name: &str) {
    live_host(live).volumes.retain(|v| v.name != name);
}

fn drop_vlan(live: &mut LiveFile, name: &str) {
    live_host(live).vlans.retain(|v| v.name != name);
}

fn disk(name: &str) -> Option<Reason> {
    Some(Reason::DiskRecreated {
        of: ResourceId::new(ResourceKind::Volume, name),
    })
}

struct Case {
    name: &'static str,
    edit: fn(&mut Config, &mut LiveFile),
    /// `(address, action, reason)` for each change the plan must show.
    expect: Vec<(&'static str, Action, Option<Reason>)>,
    /// Steps `a` that must finish before `b` starts.
    before: &'static [(&'static str, &'static str)],
    /// Every actionable change of the plan, in apply order.
    planned: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    use Action::*;
    vec![
        Case {
            name: "volume missing under a running vm: the vm restarts after its create",
            edit: |_, live| drop_volume(live, "web-2-root"),
            expect: vec![
                ("volume.web-2-root", Create, None),
                ("vm.web-2", Replace, disk("web-2-root")),
                ("vm.web-1", NoOp, None),
            ],
            before: &[
                ("create volume.web-2-root", "create vm.web-2"),
                ("delete vm.web-2", "create vm.web-2"),
            ],
            planned: &["replace vm.web-2", "create volume.web-2-root"],
        },
        Case {
            name: "volume missing under a running vm with in-place changes: restart",
            edit: |config, live| {
                drop_volume(live, "web-2-root");
                config.vms[1].cpuset = Some("1".into());
            },
            expect: vec![("vm.web-2", Replace, disk("web-2-root"))],
            before: &[("create volume.web-2-root", "create vm.web-2")],
            planned: &["replace vm.web-2", "create volume.web-2-root"],
        },
        Case {
            name: "volume replaced under a running vm: the vm restarts",
            edit: |config, _| config.volumes[1].from = None,
            expect: vec![
                ("volume.web-2-root", Replace, Some(Reason::Attributes)),
                (
                    "vm.web-2",
                    Replace,
                    Some(Reason::DependencyReplaced {
                        of: ResourceId::new(ResourceKind::Volume, "web-2-root"),
                    }),
                ),
            ],
            before: &[
                ("delete vm.web-2", "delete volume.web-2-root"),
                ("create volume.web-2-root", "create vm.web-2"),
            ],
            planned: &["replace vm.web-2", "replace volume.web-2-root"],
        },
        Case {
            name: "volume missing under a stopped vm: just the volume",
            edit: |config, live| {
                config.vms[1].state = VmState::Stopped;
                let vm = live_vm(live, "web-2");
                vm.spec.state = crate::record::RunState::Stopped;
                vm.status = VmStatus::Stopped;
                drop_volume(live, "web-2-root");
            },
            expect: vec![
                ("volume.web-2-root", Create, None),
                ("vm.web-2", NoOp, None),
            ],
            before: &[],
            planned: &["create volume.web-2-root"],
        },
        Case {
            name: "volume missing under a crashed vm: started after the create",
            edit: |_, live| {
                live_vm(live, "web-2").status = VmStatus::Crashed;
                drop_volume(live, "web-2-root");
            },
            expect: vec![("vm.web-2", Start, Some(Reason::Crashed))],
            before: &[("create volume.web-2-root", "start vm.web-2")],
            planned: &["create volume.web-2-root", "start vm.web-2"],
        },
        Case {
            name: "volume missing under a running vm to be stopped: just the stop",
            edit: |config, live| {
                config.vms[1].state = VmState::Stopped;
                drop_volume(live, "web-2-root");
            },
            expect: vec![("vm.web-2", Stop, None)],
            before: &[],
            planned: &["stop vm.web-2", "create volume.web-2-root"],
        },
        Case {
            name: "vm and its volume not yet existing: plain creates",
            edit: |_, live| {
                drop_volume(live, "web-2-root");
                live_host(live).vms.retain(|v| v.name != "web-2");
            },
            expect: vec![
                ("volume.web-2-root", Create, None),
                ("vm.web-2", Create, None),
            ],
            before: &[("create volume.web-2-root", "create vm.web-2")],
            planned: &["create volume.web-2-root", "create vm.web-2"],
        },
        Case {
            name: "vlan missing under running vms: re-created, taps re-attached, no restart",
            edit: |_, live| drop_vlan(live, "front"),
            expect: vec![
                ("vlan.front", Create, None),
                ("vm.web-1", NoOp, None),
                ("vm.web-2", NoOp, None),
            ],
            before: &[],
            planned: &["create vlan.front"],
        },
    ]
}

#[test]
fn a_running_vm_restarts_on_a_re_created_disk() {
    for case in cases() {
        let mut config = quickstart();
        let mut live = LiveFile::applied(&config);
        (case.edit)(&mut config, &mut live);
        let (plan, graph) = graph_of(&config, &live, &PlanOptions::default());
        for (address, action, reason) in &case.expect {
            let change = change(&plan, address);
            assert_eq!(change.action, *action, "{}: {address}", case.name);
            assert_eq!(&change.reason, reason, "{}: {address}", case.name);
        }
        for (a, b) in case.before {
            assert!(
                happens_before(&graph, a, b),
                "{}: {a} before {b}",
                case.name
            );
        }
        let planned: Vec<String> = plan
            .actionable()
            .map(|c| format!("{} {}", c.action, c.id))
            .collect();
        assert_eq!(planned, case.planned, "{}", case.name);
    }
}

#[test]
fn the_reason_says_which_disk() {
    let reason = disk("web-2-root").expect("a reason");
    assert_eq!(
        reason.to_string(),
        "forces restart: disk web-2-root re-created"
    );
    let json = serde_json::to_value(&reason).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"kind": "disk-recreated", "of": {"kind": "volume", "name": "web-2-root"}})
    );
}

#[test]
fn a_target_on_the_volume_takes_the_restart_with_it() {
    let config = quickstart();
    let mut live = LiveFile::applied(&config);
    drop_volume(&mut live, "web-2-root");
    for target in ["volume.web-2-root", "vm.web-2"] {
        let options = PlanOptions {
            targets: vec![target.into()],
            ..PlanOptions::default()
        };
        let (plan, graph) = graph_of(&config, &live, &options);
        let planned: Vec<String> = plan
            .actionable()
            .map(|c| format!("{} {}", c.action, c.id))
            .collect();
        assert_eq!(
            planned,
            ["replace vm.web-2", "create volume.web-2-root"],
            "--target {target}"
        );
        assert!(happens_before(
            &graph,
            "create volume.web-2-root",
            "create vm.web-2"
        ));
    }
}

#[test]
fn a_protected_volume_re_created_under_its_vm_is_no_error() {
    // db-1-root is protected: re-creating it and restarting db-1 destroys nothing.
    let config = quickstart();
    let mut live = LiveFile::applied(&config);
    drop_volume(&mut live, "db-1-root");
    let (plan, _) = graph_of(&config, &live, &PlanOptions::default());
    assert_eq!(change(&plan, "vm.db-1").reason, disk("db-1-root"));
}
