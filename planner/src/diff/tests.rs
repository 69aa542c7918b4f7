//! Every diff rule, each a row: an edit of the config or of the live state from "applied
//! exactly", and the action, reason and attribute effects the plan must show.

use vmctl_schema::{Config, Nic, VmState};

use crate::action::{Action, Effect, Reason, ResourceId, ResourceKind};
use crate::live::{LiveFile, LiveState, LiveVm, VmStatus};
use crate::testdata::{change, plan_of, quickstart};
use crate::{plan, PlanError, PlanOptions};

use super::DiffError;

fn live_host(live: &mut LiveFile) -> &mut LiveState {
    live.hosts.get_mut("local").expect("host local")
}

fn live_vm<'a>(live: &'a mut LiveFile, name: &str) -> &'a mut LiveVm {
    let host = live_host(live);
    host.vms
        .iter_mut()
        .find(|v| v.name == name)
        .expect("live vm")
}

fn config_vm<'a>(config: &'a mut Config, name: &str) -> &'a mut vmctl_schema::Vm {
    config.vms.iter_mut().find(|v| v.name == name).expect("vm")
}

fn config_volume<'a>(config: &'a mut Config, name: &str) -> &'a mut vmctl_schema::Volume {
    config
        .volumes
        .iter_mut()
        .find(|v| v.name == name)
        .expect("volume")
}

struct Case {
    name: &'static str,
    edit: fn(&mut Config, &mut LiveFile),
    address: &'static str,
    action: Action,
    reason: Option<Reason>,
    attributes: &'static [(&'static str, Effect)],
}

fn dependency(kind: ResourceKind, name: &str) -> Option<Reason> {
    Some(Reason::DependencyReplaced {
        of: ResourceId::new(kind, name),
    })
}

fn cases() -> Vec<Case> {
    use Action::*;
    use Effect::{InPlace, Restart};
    vec![
        Case {
            name: "identical is a no-op",
            edit: |_, _| {},
            address: "vm.web-1",
            action: NoOp,
            reason: None,
            attributes: &[],
        },
        Case {
            name: "missing on the host: create",
            edit: |_, live| live_host(live).pools.clear(),
            address: "pool.fast",
            action: Create,
            reason: None,
            attributes: &[],
        },
        Case {
            name: "gone from the config: delete",
            edit: |config, _| config.vms.retain(|v| v.name != "web-2"),
            address: "vm.web-2",
            action: Delete,
            reason: Some(Reason::Removed),
            attributes: &[],
        },
        Case {
            name: "vm memory forces a restart",
            edit: |config, _| config_vm(config, "web-1").memory = 512 << 20,
            address: "vm.web-1",
            action: Replace,
            reason: Some(Reason::Restart),
            attributes: &[("memory", Restart)],
        },
        Case {
            name: "vm cpus force a restart",
            edit: |config, _| config_vm(config, "web-1").cpus = 2,
            address: "vm.web-1",
            action: Replace,
            reason: Some(Reason::Restart),
            attributes: &[("cpus", Restart)],
        },
        Case {
            name: "vm kernel forces a restart",
            edit: |config, _| config_vm(config, "web-1").kernel = "/lab/other".into(),
            address: "vm.web-1",
            action: Replace,
            reason: Some(Reason::Restart),
            attributes: &[("kernel", Restart)],
        },
        Case {
            name: "vm initrd forces a restart",
            edit: |config, _| config_vm(config, "web-1").initrd = Some("/lab/initrd".into()),
            address: "vm.web-1",
            action: Replace,
            reason: Some(Reason::Restart),
            attributes: &[("initrd", Restart)],
        },
        Case {
            name: "vm cmdline forces a restart",
            edit: |config, _| config_vm(config, "web-1").cmdline.push_str(" quiet"),
            address: "vm.web-1",
            action: Replace,
            reason: Some(Reason::Restart),
            attributes: &[("cmdline", Restart)],
        },
        Case {
            name: "vm disks force a restart",
            edit: |config, _| config_vm(config, "web-1").disks.push("web-2-root".into()),
            address: "vm.web-1",
            action: Replace,
            reason: Some(Reason::Restart),
            attributes: &[("disks", Restart)],
        },
        Case {
            name: "vm nics force a restart",
            edit: |config, _| {
                config_vm(config, "web-1").nics.push(Nic {
                    vlan: "back".into(),
                    mac: "52:54:00:00:00:09".into(),
                    ip: None,
                    ip_allocated: false,
                })
            },
            address: "vm.web-1",
            action: Replace,
            reason: Some(Reason::Restart),
            attributes: &[("nics", Restart)],
        },
        Case {
            name: "vm cpuset changes in place",
            edit: |config, _| config_vm(config, "web-1").cpuset = Some("2-3".into()),
            address: "vm.web-1",
            action: Update,
            reason: None,
            attributes: &[("cpuset", InPlace)],
        },
        Case {
            name: "vm depends-on changes in place",
            edit: |config, _| config_vm(config, "web-1").depends_on.clear(),
            address: "vm.web-1",
            action: Update,
            reason: None,
            attributes: &[("depends-on", InPlace)],
        },
        Case {
            name: "vm running -> stopped: stop",
            edit: |config, _| config_vm(config, "web-1").state = VmState::Stopped,
            address: "vm.web-1",
            action: Stop,
            reason: None,
            attributes: &[("state", InPlace)],
        },
        Case {
            name: "vm stopped -> running: start",
            edit: |_, live| live_vm(live, "web-1").status = VmStatus::Stopped,
            address: "vm.web-1",
            action: Start,
            reason: None,
            attributes: &[("state", InPlace)],
        },
        Case {
            name: "vm crashed: start",
            edit: |_, live| live_vm(live, "web-1").status = VmStatus::Crashed,
            address: "vm.web-1",
            action: Start,
            reason: Some(Reason::Crashed),
            attributes: &[("state", InPlace)],
        },
        Case {
            name: "vm crashed but should be stopped: nothing to do",
            edit: |config, live| {
                config_vm(config, "web-1").state = VmState::Stopped;
                let vm = live_vm(live, "web-1");
                vm.spec.state = crate::record::RunState::Stopped;
                vm.status = VmStatus::Crashed;
            },
            address: "vm.web-1",
            action: NoOp,
            reason: None,
            attributes: &[],
        },
        Case {
            name: "stopped vm that stays stopped takes memory in place",
            edit: |config, live| {
                let vm = config_vm(config, "web-1");
                vm.state = VmState::Stopped;
                vm.memory = 512 << 20;
                let vm = live_vm(live, "web-1");
                vm.spec.state = crate::record::RunState::Stopped;
                vm.status = VmStatus::Stopped;
            },
            address: "vm.web-1",
            action: Update,
            reason: None,
            attributes: &[("memory", InPlace)],
        },
        Case {
            name: "stopped vm with new memory starts with it",
            edit: |config, live| {
                config_vm(config, "web-1").memory = 512 << 20;
                live_vm(live, "web-1").status = VmStatus::Stopped;
            },
            address: "vm.web-1",
            action: Start,
            reason: None,
            attributes: &[("memory", InPlace), ("state", InPlace)],
        },
        Case {
            name: "running vm to be stopped takes memory with the stop",
            edit: |config, _| {
                let vm = config_vm(config, "web-1");
                vm.state = VmState::Stopped;
                vm.memory = 512 << 20;
            },
            address: "vm.web-1",
            action: Stop,
            reason: None,
            attributes: &[("memory", InPlace), ("state", InPlace)],
        },
        Case {
            name: "volume grows in place",
            edit: |config, _| config_volume(config, "web-1-root").size = 2 << 30,
            address: "volume.web-1-root",
            action: Update,
            reason: None,
            attributes: &[("size", InPlace)],
        },
        Case {
            name: "volume prevent-destroy changes in place",
            edit: |config, _| config_volume(config, "web-1-root").prevent_destroy = true,
            address: "volume.web-1-root",
            action: Update,
            reason: None,
            attributes: &[("prevent-destroy", InPlace)],
        },
        Case {
            name: "volume from forces replacement",
            edit: |config, _| config_volume(config, "web-1-root").from = None,
            address: "volume.web-1-root",
            action: Replace,
            reason: Some(Reason::Attributes),
            attributes: &[("from", Effect::Replace)],
        },
        Case {
            name: "a replaced volume replaces the vm using it",
            edit: |config, _| config_volume(config, "web-1-root").from = None,
            address: "vm.web-1",
            action: Replace,
            reason: dependency(ResourceKind::Volume, "web-1-root"),
            attributes: &[],
        },
        Case {
            name: "volume pool forces replacement",
            edit: |config, live| {
                let mut pool = config.pools[0].clone();
                pool.name = "slow".into();
                pool.path = "/var/lib/vmctl/pools/slow".into();
                config.pools.push(pool);
                config_volume(config, "web-1-root").pool = "slow".into();
                let _ = live;
            },
            address: "volume.web-1-root",
            action: Replace,
            reason: Some(Reason::Attributes),
            attributes: &[("pool", Effect::Replace)],
        },
        Case {
            name: "pool path forces replacement",
            edit: |config, _| {
                config.pools[0].path = "/srv/fast".into();
                config_volume(config, "db-1-root").prevent_destroy = false;
            },
            address: "pool.fast",
            action: Replace,
            reason: Some(Reason::Attributes),
            attributes: &[("path", Effect::Replace)],
        },
        Case {
            name: "a replaced pool replaces its volumes",
            edit: |config, _| {
                config.pools[0].path = "/srv/fast".into();
                config_volume(config, "db-1-root").prevent_destroy = false;
            },
            address: "volume.web-2-root",
            action: Replace,
            reason: dependency(ResourceKind::Pool, "fast"),
            attributes: &[],
        },
        Case {
            name: "network bridge forces replacement",
            edit: |config, _| config.networks[0].bridge = "br-other".into(),
            address: "network.lan",
            action: Replace,
            reason: Some(Reason::Attributes),
            attributes: &[("bridge", Effect::Replace)],
        },
        Case {
            name: "a replaced network replaces its vlans",
            edit: |config, _| config.networks[0].bridge = "br-other".into(),
            address: "vlan.back",
            action: Replace,
            reason: dependency(ResourceKind::Network, "lan"),
            attributes: &[],
        },
        Case {
            name: "network uplink changes in place",
            edit: |config, _| config.networks[0].uplink = Some("eth1".into()),
            address: "network.lan",
            action: Update,
            reason: None,
            attributes: &[("uplink", InPlace)],
        },
        Case {
            name: "vlan id forces replacement",
            edit: |config, _| config.vlans[1].id = 300,
            address: "vlan.back",
            action: Replace,
            reason: Some(Reason::Attributes),
            attributes: &[("id", Effect::Replace)],
        },
        Case {
            name: "a replaced vlan replaces the vms on it",
            edit: |config, _| config.vlans[1].id = 300,
            address: "vm.db-1",
            action: Replace,
            reason: dependency(ResourceKind::Vlan, "back"),
            attributes: &[],
        },
        Case {
            name: "vlan gateway changes in place",
            edit: |config, _| config.vlans[1].gateway = Some("10.200.0.1/24".into()),
            address: "vlan.back",
            action: Update,
            reason: None,
            attributes: &[("gateway", InPlace)],
        },
        Case {
            name: "a host missing from the live file has nothing",
            edit: |_, live| live.hosts.clear(),
            address: "vm.db-1",
            action: Create,
            reason: None,
            attributes: &[],
        },
    ]
}

#[test]
fn every_rule() {
    for case in cases() {
        let mut config = quickstart();
        let mut live = LiveFile::applied(&config);
        (case.edit)(&mut config, &mut live);
        let plan = plan_of(&config, &live).unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
        let change = change(&plan, case.address);
        assert_eq!(change.action, case.action, "{}", case.name);
        assert_eq!(change.reason, case.reason, "{}", case.name);
        let attributes: Vec<(&str, Effect)> = change
            .attributes
            .iter()
            .map(|a| (a.name.as_str(), a.effect))
            .collect();
        assert_eq!(attributes, case.attributes, "{}", case.name);
    }
}

#[test]
fn identical_live_state_has_no_changes() {
    let config = quickstart();
    let plan = plan_of(&config, &LiveFile::applied(&config)).unwrap();
    assert!(!plan.has_changes());
    assert_eq!(
        plan.changes.len(),
        11,
        "one no-op per resource, the firewall too"
    );
    assert!(plan.summary().is_empty());
}

#[test]
fn empty_live_state_creates_everything() {
    let config = quickstart();
    let plan = plan_of(&config, &LiveFile::default()).unwrap();
    assert!(plan.changes.iter().all(|c| c.action == Action::Create));
    // 3 VMs, 3 volumes, 1 pool, 1 network, 2 VLANs, and the firewall of front's gateway.
    assert_eq!(plan.summary().add, 11);
}

#[test]
fn other_projects_are_invisible() {
    let config = quickstart();
    let mut live = LiveFile::applied(&config);
    let theirs = LiveFile::applied(&Config {
        project: "other".into(),
        ..quickstart()
    });
    let mut extra = theirs.hosts["local"].vms[0].clone();
    extra.name = "theirs".into();
    let host = live_host(&mut live);
    host.vms.push(extra);
    // Same names as ours, another project: neither deleted nor mistaken for ours.
    let mut ours_removed = LiveFile {
        hosts: theirs.hosts.clone(),
        ..LiveFile::default()
    };
    let plan = plan_of(&config, &live).unwrap();
    assert!(!plan.has_changes(), "{plan:#?}");
    assert!(plan.changes.iter().all(|c| c.id.name != "theirs"));
    live_host(&mut ours_removed).pools.clear();
    let plan = plan_of(&config, &ours_removed).unwrap();
    assert!(plan.changes.iter().all(|c| c.action == Action::Create));
}

#[test]
fn hosts_not_in_the_config_are_not_planned() {
    let config = quickstart();
    let mut live = LiveFile::applied(&config);
    let elsewhere = live.hosts["local"].clone();
    live.hosts.insert("elsewhere".into(), elsewhere);
    let plan = plan_of(&config, &live).unwrap();
    assert!(plan.changes.iter().all(|c| c.host == "local"));
    assert!(!plan.has_changes());
}

fn errors_of(config: &Config, live: &LiveFile, options: &PlanOptions) -> Vec<PlanError> {
    plan(config, live, options)
        .expect_err("plan must fail")
        .errors
}

#[test]
fn shrinking_a_volume_is_an_error_unless_replaced() {
    let mut config = quickstart();
    let live = LiveFile::applied(&config);
    config_volume(&mut config, "web-1-root").size = 512 << 20;
    let errors = errors_of(&config, &live, &PlanOptions::default());
    assert_eq!(
        errors,
        [PlanError::Diff(DiffError::ShrinkVolume {
            host: "local".into(),
            name: "web-1-root".into(),
            live: 1 << 30,
            config: 512 << 20,
        })]
    );
    let options = PlanOptions {
        replace: vec!["volume.web-1-root".into()],
        ..PlanOptions::default()
    };
    let plan = plan(&config, &live, &options).unwrap();
    let volume = change(&plan, "volume.web-1-root");
    assert_eq!(volume.action, Action::Replace);
    assert_eq!(volume.reason, Some(Reason::Requested));
    assert_eq!(change(&plan, "vm.web-1").action, Action::Replace);
}

#[test]
fn prevent_destroy_refuses_a_replace_and_a_delete() {
    // Replace: the config protects it.
    let mut config = quickstart();
    let live = LiveFile::applied(&config);
    config_volume(&mut config, "db-1-root").from = None;
    let errors = errors_of(&config, &live, &PlanOptions::default());
    assert!(matches!(
        &errors[..],
        [PlanError::Diff(DiffError::PreventDestroy { name, action: Action::Replace, .. })]
            if name == "db-1-root"
    ));
    // Delete: the live marker protects it even though the config forgot it.
    let mut config = quickstart();
    config.volumes.retain(|v| v.name != "db-1-root");
    config.vms.retain(|v| v.name != "db-1");
    for vm in &mut config.vms {
        vm.depends_on.clear();
    }
    let errors = errors_of(&config, &live, &PlanOptions::default());
    assert!(matches!(
        &errors[..],
        [PlanError::Diff(DiffError::PreventDestroy { name, action: Action::Delete, .. })]
            if name == "db-1-root"
    ));
    let code = miette::Diagnostic::code(&errors[0]).map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("vmctl::plan::prevent_destroy"));
}

#[test]
fn an_empty_config_does_not_delete_everything_unless_destroy() {
    let full = quickstart();
    let live = LiveFile::applied(&full);
    let empty = Config {
        networks: vec![],
        vlans: vec![],
        pools: vec![],
        volumes: vec![],
        vms: vec![],
        ..full.clone()
    };
    let errors = errors_of(&empty, &live, &PlanOptions::default());
    assert!(matches!(
        &errors[..],
        [PlanError::Diff(DiffError::EmptyConfig { count: 10, .. })]
    ));
    // destroy: everything goes, except that the protected volume fails the plan.
    let destroy = PlanOptions {
        destroy: true,
        ..PlanOptions::default()
    };
    let errors = errors_of(&full, &live, &destroy);
    assert!(matches!(
        &errors[..],
        [PlanError::Diff(DiffError::PreventDestroy { .. })]
    ));
    let mut unprotected = live.clone();
    for volume in &mut live_host(&mut unprotected).volumes {
        volume.prevent_destroy = false;
    }
    let plan = plan(&full, &unprotected, &destroy).unwrap();
    assert!(plan.changes.iter().all(|c| c.action == Action::Delete));
    assert!(plan
        .changes
        .iter()
        .all(|c| c.reason == Some(Reason::Destroy)));
    assert_eq!(plan.summary().destroy, 11);
}

#[test]
fn a_vm_moved_to_another_host_is_deleted_there_and_created_here() {
    let mut config = quickstart();
    config.hosts.push(crate::testdata::host("other"));
    let live = LiveFile::applied(&config);
    config_vm(&mut config, "db-1").host = "other".into();
    let plan = plan_of(&config, &live).unwrap();
    let db: Vec<(&str, Action)> = plan
        .changes
        .iter()
        .filter(|c| c.id.name == "db-1")
        .map(|c| (c.host.as_str(), c.action))
        .collect();
    assert_eq!(db.len(), 2, "{db:?}");
    assert!(db.contains(&("local", Action::Delete)));
    assert!(db.contains(&("other", Action::Create)));
}

#[test]
fn a_resource_with_an_unreadable_record_is_left_alone_and_the_rest_planned() {
    use crate::live::Unreadable;
    let config = quickstart();
    let mut live = LiveFile::applied(&config);
    let host = live_host(&mut live);
    // web-1's spec.json and the pool's marker cannot be read: the host shows neither.
    host.vms.retain(|v| v.name != "web-1" && v.name != "web-2");
    host.pools.clear();
    host.volumes.clear();
    let unreadable = |kind, name: &str| Unreadable {
        kind,
        name: name.into(),
        project: "lab".into(),
        ..Unreadable::default()
    };
    host.unreadable.push(unreadable(ResourceKind::Vm, "web-1"));
    host.unreadable.push(unreadable(ResourceKind::Pool, "fast"));
    // Another project's problem holds nothing of ours.
    let mut theirs = unreadable(ResourceKind::Vm, "web-2");
    theirs.project = "other".into();
    host.unreadable.push(theirs);
    let plan = plan_of(&config, &live).unwrap();
    let addresses: Vec<String> = plan.changes.iter().map(|c| c.id.to_string()).collect();
    for held in [
        "vm.web-1",
        "pool.fast",
        "volume.web-1-root",
        "volume.db-1-root",
    ] {
        assert!(
            !addresses.contains(&held.to_owned()),
            "{held} in {addresses:?}"
        );
    }
    assert_eq!(change(&plan, "vm.web-2").action, Action::Create);
    assert_eq!(change(&plan, "vm.db-1").action, Action::NoOp);
}
