//! `--target` and `--replace`: name resolution, suggestions, and what a target keeps.

use crate::action::{Action, Reason};
use crate::live::LiveFile;
use crate::testdata::{change, quickstart};
use crate::{plan, PlanError, PlanOptions};

fn errors_of(
    config: &vmctl_schema::Config,
    live: &LiveFile,
    options: &PlanOptions,
) -> Vec<PlanError> {
    plan(config, live, options)
        .expect_err("plan must fail")
        .errors
}

#[test]
fn replace_forces_a_replace() {
    let config = quickstart();
    let live = LiveFile::applied(&config);
    let options = PlanOptions {
        replace: vec!["web-1".into()],
        ..PlanOptions::default()
    };
    let plan = plan(&config, &live, &options).unwrap();
    let vm = change(&plan, "vm.web-1");
    assert_eq!(
        (vm.action, vm.reason.clone()),
        (Action::Replace, Some(Reason::Requested))
    );
    assert_eq!(
        plan.summary(),
        crate::Summary {
            add: 1,
            change: 0,
            destroy: 1
        }
    );
}

#[test]
fn unknown_names_are_errors_with_a_suggestion() {
    let config = quickstart();
    let live = LiveFile::applied(&config);
    let options = PlanOptions {
        targets: vec!["web1".into()],
        replace: vec!["vm.nothing-like-it".into()],
        ..PlanOptions::default()
    };
    let errors = errors_of(&config, &live, &options);
    assert_eq!(errors.len(), 2, "{errors:?}");
    let text: Vec<String> = errors
        .iter()
        .map(|e| {
            miette::Diagnostic::help(e)
                .map(|h| h.to_string())
                .unwrap_or_default()
        })
        .collect();
    assert!(text.iter().any(|h| h.contains("did you mean")), "{text:?}");
}

#[test]
fn target_keeps_a_resource_and_what_it_needs() {
    let config = quickstart();
    let options = PlanOptions {
        targets: vec!["vm.web-1".into()],
        ..PlanOptions::default()
    };
    let plan = plan(&config, &LiveFile::default(), &options).unwrap();
    let mut kept: Vec<String> = plan.changes.iter().map(|c| c.id.to_string()).collect();
    kept.sort();
    assert_eq!(
        kept,
        [
            "network.lan",
            "pool.fast",
            "vlan.back",
            "vlan.front",
            "vm.db-1",
            "vm.web-1",
            "volume.db-1-root",
            "volume.web-1-root",
        ]
    );
}

#[test]
fn target_of_a_replaced_pool_takes_what_lives_on_it() {
    let mut config = quickstart();
    let live = LiveFile::applied(&config);
    config.pools[0].path = "/srv/fast".into();
    config.volumes[2].prevent_destroy = false; // db-1-root
    let options = PlanOptions {
        targets: vec!["pool.fast".into()],
        ..PlanOptions::default()
    };
    let plan = plan(&config, &live, &options).unwrap();
    for address in ["pool.fast", "volume.web-1-root", "vm.web-1", "vm.db-1"] {
        assert_eq!(change(&plan, address).action, Action::Replace, "{address}");
    }
    // What the replaced VMs need comes along, unchanged.
    assert_eq!(change(&plan, "network.lan").action, Action::NoOp);
}

#[test]
fn a_target_in_a_netns_keeps_its_making_and_a_netns_delete_what_is_in_it() {
    let mut config = quickstart();
    config.hosts[0].netns = Some("vmctl-lab".into());
    let options = PlanOptions {
        targets: vec!["vlan.front".into()],
        ..PlanOptions::default()
    };
    let planned = plan(&config, &LiveFile::default(), &options).unwrap();
    let addresses: Vec<String> = planned.changes.iter().map(|c| c.id.to_string()).collect();
    assert!(
        addresses.contains(&"netns.vmctl-lab".to_owned()),
        "{addresses:?}"
    );
    let pool = vec!["pool.fast".to_owned()];
    let planned = plan(
        &config,
        &LiveFile::default(),
        &PlanOptions {
            targets: pool.clone(),
            ..PlanOptions::default()
        },
    )
    .unwrap();
    let addresses: Vec<String> = planned.changes.iter().map(|c| c.id.to_string()).collect();
    assert_eq!(addresses, pool, "a pool does not live in the netns");

    for volume in &mut config.volumes {
        volume.prevent_destroy = false;
    }
    let live = LiveFile::applied(&config);
    let options = PlanOptions {
        targets: vec!["netns.vmctl-lab".into()],
        destroy: true,
        ..PlanOptions::default()
    };
    let planned = plan(&config, &live, &options).unwrap();
    for address in ["netns.vmctl-lab", "network.lan", "vlan.back", "vm.web-1"] {
        assert_eq!(
            change(&planned, address).action,
            Action::Delete,
            "{address}"
        );
    }
}

#[test]
fn an_excluded_host_gets_no_changes_and_the_others_do() {
    let mut config = quickstart();
    let mut far = crate::testdata::host("far");
    far.ssh = Some("root@far".into());
    config.hosts.push(far);
    let mut pool = config.pools[0].clone();
    pool.name = "far-pool".into();
    pool.host = "far".into();
    config.pools.push(pool);
    let live = LiveFile::default();
    let all = plan(&config, &live, &PlanOptions::default()).unwrap();
    assert!(all.changes.iter().any(|c| c.host == "far"));
    let options = PlanOptions {
        exclude_hosts: vec!["far".into()],
        ..PlanOptions::default()
    };
    let left_out = plan(&config, &live, &options).unwrap();
    assert!(left_out.changes.iter().all(|c| c.host == "local"));
    assert_eq!(
        left_out.changes.len(),
        all.changes.iter().filter(|c| c.host == "local").count()
    );
}

#[test]
fn an_unknown_excluded_host_is_an_error_with_a_suggestion() {
    let config = quickstart();
    let options = PlanOptions {
        exclude_hosts: vec!["locl".into()],
        ..PlanOptions::default()
    };
    let errors = errors_of(&config, &LiveFile::default(), &options);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = format!("{:?}", errors[0]);
    assert!(
        text.contains("UnknownHost") && text.contains("local"),
        "{text}"
    );
}
