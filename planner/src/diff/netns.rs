//! A host's declared network namespace as a planned resource (`netns.<name>`).
//!
//! It is wanted while the host declares `netns` and something of the config lives in
//! it (a network, so its VLANs, or a VM, so its taps); `destroy` wants none. Against
//! what the host has ([`LiveNetns`]):
//!
//! - wanted and missing → `create`; wanted, made by vmctl for other projects only →
//!   `create` with reason `join` (the project joins its marker's users);
//! - wanted and there (vmctl's with this project among its users, or not vmctl's at
//!   all) → `no-op`;
//! - not wanted, made by vmctl and used by this project → `delete`; when other projects
//!   use it too, with reason `shared` (the project leaves; the namespace is kept);
//! - a namespace vmctl did not make, or one this project does not use, is never
//!   deleted.

use vmctl_schema::{Config, Host};

use crate::action::{Action, Reason, ResourceId, ResourceKind};
use crate::live::LiveState;
use crate::plan::{Change, Netns, Resource};

/// Whether something of `config` lives in the network namespace of `host`: a network
/// (its bridge and VLANs) or a VM (its taps).
pub fn lives_in_netns(config: &Config, host: &str) -> bool {
    let on_host = |n: &vmctl_schema::Network| n.on_hosts().iter().any(|h| h == host);
    config.networks.iter().any(on_host) || config.vms.iter().any(|v| v.host == host)
}

/// The change of `host`'s network namespace, if any.
pub fn diff_netns(config: &Config, host: &Host, live: &LiveState, destroy: bool) -> Option<Change> {
    let project = &config.project;
    let wanted = host
        .netns
        .as_deref()
        .filter(|_| !destroy && lives_in_netns(config, &host.name));
    let found = live.netns.as_ref();
    let ours = |n: &crate::live::LiveNetns| {
        n.created_by.is_some() && n.projects.iter().any(|p| p == project)
    };
    let change = |name: &str, action, reason, before: bool, after: bool| {
        let netns = Resource::Netns(Netns { name: name.into() });
        Change {
            host: host.name.clone(),
            from: None,
            id: ResourceId::new(ResourceKind::Netns, name),
            action,
            reason,
            before: before.then(|| netns.clone()),
            after: after.then_some(netns),
            status: None,
            attributes: Vec::new(),
        }
    };
    match (wanted, found) {
        (Some(name), Some(f)) if f.name == name => {
            if f.created_by.is_none() || ours(f) {
                Some(change(name, Action::NoOp, None, true, true))
            } else {
                Some(change(
                    name,
                    Action::Create,
                    Some(Reason::Join),
                    false,
                    true,
                ))
            }
        }
        (Some(name), _) => Some(change(name, Action::Create, None, false, true)),
        (None, Some(f)) if ours(f) => {
            let others: Vec<String> = f
                .projects
                .iter()
                .filter(|p| *p != project)
                .cloned()
                .collect();
            let reason = if !others.is_empty() {
                Reason::Shared { projects: others }
            } else if destroy {
                Reason::Destroy
            } else {
                Reason::Removed
            };
            Some(change(&f.name, Action::Delete, Some(reason), true, false))
        }
        (None, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::action::{Action, Reason};
    use crate::live::{LiveFile, LiveNetns};
    use crate::testdata::{change, plan_of, quickstart};
    use crate::{plan, PlanOptions};

    /// The quickstart with `netns "vmctl-lab"` on its host.
    fn config() -> vmctl_schema::Config {
        let mut config = quickstart();
        config.hosts[0].netns = Some("vmctl-lab".into());
        for volume in &mut config.volumes {
            volume.prevent_destroy = false;
        }
        config
    }

    fn with_netns(live: &mut LiveFile, netns: Option<LiveNetns>) {
        live.hosts.get_mut("local").expect("host local").netns = netns;
    }

    fn made_for(projects: &[&str]) -> Option<LiveNetns> {
        Some(LiveNetns {
            name: "vmctl-lab".into(),
            created_by: projects.first().map(|p| (*p).to_owned()),
            projects: projects.iter().map(|p| (*p).to_owned()).collect(),
        })
    }

    #[test]
    fn a_missing_netns_is_created_and_counted() {
        let config = config();
        let plan = plan_of(&config, &LiveFile::default()).expect("plan");
        let netns = change(&plan, "netns.vmctl-lab");
        assert_eq!((netns.action, &netns.reason), (Action::Create, &None));
        assert_eq!(netns.host, "local");
        // 3 VMs, 3 volumes, 1 pool, 1 network, 2 VLANs, the firewall and the netns.
        assert_eq!(plan.summary().add, 12);
    }

    #[test]
    fn an_existing_netns_is_a_no_op_whoever_made_it() {
        let config = config();
        for netns in [
            made_for(&["lab"]),
            made_for(&["other", "lab"]),
            made_for(&[]),
        ] {
            let mut live = LiveFile::applied(&config);
            with_netns(&mut live, netns.clone());
            let plan = plan_of(&config, &live).expect("plan");
            assert_eq!(
                change(&plan, "netns.vmctl-lab").action,
                Action::NoOp,
                "{netns:?}"
            );
            assert!(!plan.has_changes(), "{netns:?}");
        }
    }

    #[test]
    fn a_netns_vmctl_made_for_another_project_is_joined() {
        let config = config();
        let mut live = LiveFile::applied(&config);
        with_netns(&mut live, made_for(&["other"]));
        let plan = plan_of(&config, &live).expect("plan");
        let netns = change(&plan, "netns.vmctl-lab");
        assert_eq!(
            (netns.action, &netns.reason),
            (Action::Create, &Some(Reason::Join))
        );
    }

    #[test]
    fn destroy_deletes_it_or_leaves_it_to_the_other_users() {
        let config = config();
        let destroy = PlanOptions {
            destroy: true,
            ..PlanOptions::default()
        };
        let live = LiveFile::applied(&config);
        let planned = plan(&config, &live, &destroy).expect("plan");
        let netns = change(&planned, "netns.vmctl-lab");
        assert_eq!(
            (netns.action, &netns.reason),
            (Action::Delete, &Some(Reason::Destroy))
        );
        let mut shared = live.clone();
        with_netns(&mut shared, made_for(&["lab", "zeta"]));
        let planned = plan(&config, &shared, &destroy).expect("plan");
        let netns = change(&planned, "netns.vmctl-lab");
        let others = Reason::Shared {
            projects: vec!["zeta".into()],
        };
        assert_eq!(
            (netns.action, &netns.reason),
            (Action::Delete, &Some(others))
        );
    }

    #[test]
    fn a_netns_not_made_by_vmctl_or_not_used_is_never_deleted() {
        let config = config();
        let destroy = PlanOptions {
            destroy: true,
            ..PlanOptions::default()
        };
        for netns in [made_for(&[]), made_for(&["other"])] {
            let mut live = LiveFile::applied(&config);
            with_netns(&mut live, netns.clone());
            let planned = plan(&config, &live, &destroy).expect("plan");
            let found = planned.changes.iter().any(|c| c.id.name == "vmctl-lab");
            assert!(!found, "{netns:?}: {:?}", planned.changes);
        }
    }

    #[test]
    fn a_host_with_nothing_in_its_netns_deletes_it_and_plans_none() {
        let mut config = config();
        let live = LiveFile::applied(&config);
        config.vms.clear();
        config.vlans.clear();
        config.networks.clear();
        let plan = plan_of(&config, &live).expect("plan");
        let netns = change(&plan, "netns.vmctl-lab");
        assert_eq!(
            (netns.action, &netns.reason),
            (Action::Delete, &Some(Reason::Removed))
        );
        let nothing = plan_of(&config, &LiveFile::default()).expect("plan");
        assert!(!nothing.changes.iter().any(|c| c.id.name == "vmctl-lab"));
    }
}
