//! `--target NAME` and `--replace NAME`: resolving names to resources, and limiting a plan
//! to its targets and what they need.
//!
//! A name is either an address (`vm.web-1`) or a bare name (`web-1`), which means every
//! resource of that name, of whatever kind. The targets' closure holds:
//! - what each needs, transitively (a VM's volumes, their pools, its VLANs, their
//!   networks, the VMs it `depends-on`), by the config and by the live state;
//! - what a destroyed or replaced resource takes with it: the changes cascaded from it,
//!   and the deletes of what lived on it;
//! - what a created volume takes with it: the restart of the running VMs on it (a
//!   volume re-created without them would leave them on the deleted file, and the next
//!   plan could no longer see it);
//! - for what lives in a host's netns (networks, VLANs, VMs), the making of that netns;
//!   for a deleted netns, the deletes of what lives in it.

use std::collections::{HashMap, HashSet};

use miette::Diagnostic;
use thiserror::Error;

use crate::action::{Action, Reason, ResourceId, ResourceKind};
use crate::graph::lives_in_netns;
use crate::plan::Change;

/// A name given to `--target` or `--replace` that names nothing.
#[derive(Debug, Error, Diagnostic, PartialEq)]
pub enum TargetError {
    #[error("--target {name:?} names no resource of the config or of its hosts")]
    #[diagnostic(code(vmctl::plan::unknown_target), help("{help}"))]
    UnknownTarget { name: String, help: String },

    #[error("--replace {name:?} names no resource of the config or of its hosts")]
    #[diagnostic(code(vmctl::plan::unknown_replace), help("{help}"))]
    UnknownReplace { name: String, help: String },

    #[error("--exclude-host {name:?} names no host of the config")]
    #[diagnostic(code(vmctl::plan::unknown_host), help("{help}"))]
    UnknownHost { name: String, help: String },
}

/// Every name given to `--exclude-host` that is not a host of `config`.
pub fn check_hosts(config: &vmctl_schema::Config, names: &[String]) -> Vec<TargetError> {
    let hosts: Vec<&str> = config.hosts.iter().map(|h| h.name.as_str()).collect();
    names
        .iter()
        .filter(|name| !hosts.contains(&name.as_str()))
        .map(|name| TargetError::UnknownHost {
            name: name.clone(),
            help: format!(
                "{} (the hosts of project {:?})",
                vmctl_schema::diagnostics::suggest(name, hosts.iter().copied()),
                config.project
            ),
        })
        .collect()
}

/// Which flag a name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    Target,
    Replace,
}

/// Resolves each name against `known`; every unknown name is an error.
pub fn resolve(
    names: &[String],
    known: &HashSet<ResourceId>,
    flag: Flag,
) -> Result<HashSet<ResourceId>, Vec<TargetError>> {
    let mut found = HashSet::new();
    let mut errors = Vec::new();
    for name in names {
        let matches: Vec<&ResourceId> = match ResourceId::parse_address(name) {
            Some(id) if known.contains(&id) => vec![known.get(&id).expect("contained")],
            _ => known.iter().filter(|id| &id.name == name).collect(),
        };
        if matches.is_empty() {
            let help = suggestion(name, known);
            errors.push(match flag {
                Flag::Target => TargetError::UnknownTarget {
                    name: name.clone(),
                    help,
                },
                Flag::Replace => TargetError::UnknownReplace {
                    name: name.clone(),
                    help,
                },
            });
        }
        found.extend(matches.into_iter().cloned());
    }
    if errors.is_empty() {
        Ok(found)
    } else {
        Err(errors)
    }
}

fn suggestion(name: &str, known: &HashSet<ResourceId>) -> String {
    let best = known
        .iter()
        .flat_map(|id| [id.to_string(), id.name.clone()])
        .map(|candidate| (strsim::jaro_winkler(name, &candidate), candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
    match best {
        Some((_, candidate)) => format!("did you mean {candidate:?}?"),
        None => "give a resource name (`web-1`) or address (`vm.web-1`)".to_owned(),
    }
}

/// Keeps the changes of the targets' closure (see the module doc).
pub fn restrict(changes: Vec<Change>, targets: &HashSet<ResourceId>) -> Vec<Change> {
    let mut by_id: HashMap<&ResourceId, Vec<usize>> = HashMap::new();
    let mut forced_by: HashMap<&ResourceId, Vec<usize>> = HashMap::new();
    let mut deleted_under: HashMap<ResourceId, Vec<usize>> = HashMap::new();
    for (i, change) in changes.iter().enumerate() {
        by_id.entry(&change.id).or_default().push(i);
        if let Some(Reason::DependencyReplaced { of } | Reason::DiskRecreated { of }) =
            &change.reason
        {
            forced_by.entry(of).or_default().push(i);
        }
        if change.action == Action::Delete {
            for need in change.before.iter().flat_map(|b| b.needs()) {
                deleted_under.entry(need).or_default().push(i);
            }
        }
    }
    // A host's netns: made before what lives in it, so a target in it keeps its make;
    // deleted after what lives in it, so a targeted delete of it keeps their deletes.
    let mut netns_of: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut in_netns: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, change) in changes.iter().enumerate() {
        if change.id.kind == ResourceKind::Netns {
            netns_of.entry(&change.host).or_default().push(i);
        } else if lives_in_netns(change.id.kind) && change.action == Action::Delete {
            in_netns.entry(&change.host).or_default().push(i);
        }
    }
    let mut keep = vec![false; changes.len()];
    let mut work: Vec<usize> = targets
        .iter()
        .flat_map(|id| by_id.get(id).into_iter().flatten().copied())
        .collect();
    while let Some(i) = work.pop() {
        if std::mem::replace(&mut keep[i], true) {
            continue;
        }
        let change = &changes[i];
        let needs = change.after.iter().chain(&change.before);
        for need in needs.flat_map(|r| r.needs()) {
            work.extend(by_id.get(&need).into_iter().flatten().copied());
        }
        if matches!(
            change.action,
            Action::Create | Action::Delete | Action::Replace
        ) {
            work.extend(forced_by.get(&change.id).into_iter().flatten().copied());
        }
        if matches!(change.action, Action::Delete | Action::Replace) {
            work.extend(deleted_under.get(&change.id).into_iter().flatten().copied());
        }
        // A volume moves only with its VM, which fills it on the new host: alone, its
        // old copy would be deleted with nothing copied.
        if let Some(Reason::MovesWith { vm, .. }) = &change.reason {
            let vm = ResourceId::new(ResourceKind::Vm, vm.as_str());
            work.extend(by_id.get(&vm).into_iter().flatten().copied());
        }
        let host = change.host.as_str();
        if lives_in_netns(change.id.kind) {
            let netns = netns_of.get(host).into_iter().flatten().copied();
            work.extend(netns.filter(|&j| changes[j].action == Action::Create));
        }
        if change.id.kind == ResourceKind::Netns && change.action == Action::Delete {
            work.extend(in_netns.get(host).into_iter().flatten().copied());
        }
    }
    changes
        .into_iter()
        .zip(keep)
        .filter_map(|(change, keep)| keep.then_some(change))
        .collect()
}

#[cfg(test)]
mod tests;
