//! Moves: a VM whose `host` changed is, host by host, a delete on its old host and a
//! create on its new one. Its volumes that move with it (a delete there, a create here:
//! their pool is on the new host now) each become one `migrate` (on the new host, `from`
//! the old): made on the new host, filled with the old one's data, deleted on the old
//! host after. When the VM runs and may move running, its delete and create become one
//! `migrate` too, and its disks are copied while it runs. Otherwise the VM's delete and
//! create stay (it is stopped there, then its disks are copied, then it starts here),
//! and both say why it is not migrated.
//!
//! A VM migrates when all of these hold:
//! - it runs, and the config wants it running;
//! - the runtime can move a running VM ([`crate::PlanOptions::live_migration`]);
//! - `migrate` is not `#false`, in the config or in the record of the running VM;
//! - nothing else about it changes that would need a restart (`memory`, `cmdline`, …):
//!   a migration moves the VM as it runs;
//! - both hosts reported their CPU's features, and the new host gives the guest every
//!   feature it saw on the old one (the old host's features less the mask the VM
//!   started with) despite its own `cpuid-mask`;
//! - each of its disks moves with it.

use std::collections::HashMap;

use crate::action::{Action, Effect, Reason, ResourceKind};
use crate::live::{LiveFile, VmStatus};
use crate::plan::{AttrChange, Change, Resource};
use vmctl_schema::{Vm, VmState};

/// Turns each movable VM's delete and create (and its volumes') into migrations; gives
/// the others their reason.
pub fn plan_moves(changes: &mut Vec<Change>, live: &LiveFile, live_migration: bool) {
    let index = |changes: &[Change], kind: ResourceKind, action: Action| {
        let mut found: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in changes.iter().enumerate() {
            if c.id.kind == kind && c.action == action {
                found.entry(c.id.name.clone()).or_default().push(i);
            }
        }
        found
    };
    let vm_deletes = index(changes, ResourceKind::Vm, Action::Delete);
    let vm_creates = index(changes, ResourceKind::Vm, Action::Create);
    let volume_deletes = index(changes, ResourceKind::Volume, Action::Delete);
    let volume_creates = index(changes, ResourceKind::Volume, Action::Create);
    let one = |found: &HashMap<String, Vec<usize>>, name: &str| match found.get(name) {
        Some(v) if v.len() == 1 => Some(v[0]),
        _ => None,
    };
    let mut remove = Vec::new();
    for (name, creates) in &vm_creates {
        let [create] = creates[..] else { continue };
        let Some(delete) = one(&vm_deletes, name) else {
            continue;
        };
        let (from, to) = (changes[delete].host.clone(), changes[create].host.clone());
        if from == to {
            continue;
        }
        let (Some(Resource::Vm(live_vm)), Some(Resource::Vm(wanted))) =
            (&changes[delete].before, &changes[create].after)
        else {
            continue;
        };
        // Its disks that move with it, and the first that does not.
        let mut disks = Vec::new();
        let mut stays = None;
        for disk in &wanted.disks {
            match (one(&volume_deletes, disk), one(&volume_creates, disk)) {
                (Some(d), Some(c)) if changes[d].host == from && changes[c].host == to => {
                    disks.push((d, c));
                }
                _ => {
                    stays.get_or_insert(disk);
                }
            }
        }
        let verdict = movable(
            live_vm,
            wanted,
            changes[delete].status,
            live_migration,
            (&from, live.host(&from).cpu_features.as_deref()),
            (&to, live.host(&to).cpu_features.as_deref()),
        )
        .and_then(|()| match stays {
            Some(disk) => Err(format!(
                "its disk {disk:?} does not move with it (give the volume a pool on host {to:?})"
            )),
            None => Ok(()),
        });
        for &(d, c) in &disks {
            let reason = Reason::MovesWith {
                vm: name.clone(),
                from: from.clone(),
            };
            changes[c] = migration(&changes[d], &changes[c], reason);
            remove.push(d);
        }
        match verdict {
            Ok(()) => {
                let reason = Reason::Migrate { from: from.clone() };
                changes[create] = migration(&changes[delete], &changes[create], reason);
                remove.push(delete);
            }
            Err(why) => {
                let reason = Reason::NotMigrated {
                    from: from.clone(),
                    to: to.clone(),
                    why,
                };
                changes[delete].reason = Some(reason.clone());
                changes[create].reason = Some(reason);
            }
        }
    }
    if !remove.is_empty() {
        let remove: std::collections::HashSet<usize> = remove.into_iter().collect();
        let mut i = 0;
        changes.retain(|_| {
            i += 1;
            !remove.contains(&(i - 1))
        });
    }
}

/// A running VM its host reports paused — a move that did not finish (its controller
/// was killed) left it so — and that is to run where it is: resumed, by an in-place
/// update (`state`: `paused` → `running`). Not while another host of the config also
/// has a VM of its name: that copy is deleted by this plan first, and the next one
/// resumes this (two copies never run at once).
pub fn resume_paused(changes: &mut [Change], live: &LiveFile) {
    // Almost always none: nothing more is looked at then.
    let paused: Vec<(&str, &str)> = live
        .hosts
        .iter()
        .flat_map(|(host, state)| {
            state
                .vms
                .iter()
                .filter(|v| v.paused && v.status == VmStatus::Running)
                .map(move |v| (host.as_str(), v.name.as_str()))
        })
        .collect();
    if paused.is_empty() {
        return;
    }
    for change in changes.iter_mut() {
        if change.id.kind != ResourceKind::Vm
            || !matches!(change.action, Action::NoOp | Action::Update)
            || !paused.contains(&(change.host.as_str(), change.id.name.as_str()))
        {
            continue;
        }
        let Some(Resource::Vm(wanted)) = &change.after else {
            continue;
        };
        let name = &change.id.name;
        let elsewhere = live
            .hosts
            .iter()
            .filter(|(host, _)| **host != change.host)
            .any(|(_, state)| state.vms.iter().any(|v| &v.name == name));
        if elsewhere || wanted.state != VmState::Running {
            continue;
        }
        change.action = Action::Update;
        change.reason = Some(Reason::Paused);
        change.attributes.push(AttrChange {
            name: "state".into(),
            before: "paused".into(),
            after: "running".into(),
            effect: Effect::InPlace,
        });
    }
}

/// A moving volume only grows: a smaller size in the config is an error, as it is for a
/// volume that stays (`--replace` does not apply: the volume is copied, not remade).
pub fn check_moves(changes: &[Change]) -> Vec<crate::diff::DiffError> {
    changes
        .iter()
        .filter(|c| c.action == Action::Migrate)
        .filter_map(|c| match (&c.before, &c.after) {
            (Some(Resource::Volume(old)), Some(Resource::Volume(new))) if new.size < old.size => {
                Some(crate::diff::DiffError::ShrinkVolume {
                    host: c.host.clone(),
                    name: new.name.clone(),
                    live: old.size,
                    config: new.size,
                })
            }
            _ => None,
        })
        .collect()
}

/// Why the VM cannot move running, if it cannot.
fn movable(
    live: &Vm,
    wanted: &Vm,
    status: Option<VmStatus>,
    live_migration: bool,
    (from, from_cpu): (&str, Option<&[String]>),
    (to, to_cpu): (&str, Option<&[String]>),
) -> Result<(), String> {
    if status != Some(VmStatus::Running) {
        return Err("it is not running".into());
    }
    if wanted.state != VmState::Running {
        return Err("the config wants it stopped".into());
    }
    if !live_migration {
        return Err("the runtime cannot move a running VM".into());
    }
    if !wanted.migrate || !live.migrate {
        return Err("`migrate #false`".into());
    }
    let restart: Vec<String> = crate::diff::attrs::changed_attributes(
        &Resource::Vm(live.clone()),
        &Resource::Vm(wanted.clone()),
    )
    .into_iter()
    .filter(|a| a.effect != Effect::InPlace)
    .map(|a| format!("`{}`", a.name))
    .collect();
    if !restart.is_empty() {
        return Err(format!(
            "{} change{} too, which needs a restart",
            restart.join(", "),
            if restart.len() == 1 { "s" } else { "" }
        ));
    }
    let (Some(from_cpu), Some(to_cpu)) = (from_cpu, to_cpu) else {
        let unknown = if from_cpu.is_none() { from } else { to };
        return Err(format!(
            "host {unknown:?} did not report its CPU features (no /dev/kvm?)"
        ));
    };
    let lacking: Vec<&str> = from_cpu
        .iter()
        .filter(|f| !live.cpuid_mask.contains(f))
        .filter(|f| !to_cpu.contains(f) || wanted.cpuid_mask.contains(f))
        .map(String::as_str)
        .collect();
    if !lacking.is_empty() {
        return Err(format!(
            "host {to:?} cannot give the guest CPU feature{} it has: {}",
            if lacking.len() == 1 { "" } else { "s" },
            lacking.join(", ")
        ));
    }
    Ok(())
}

/// The one change that moves a resource: `host` and `after` from the create, `before`
/// and `status` from the delete, and the attributes that differ (its `host` among them).
fn migration(delete: &Change, create: &Change, reason: Reason) -> Change {
    let mut attributes = Vec::new();
    if let (Some(before), Some(after)) = (&delete.before, &create.after) {
        attributes.push(AttrChange {
            name: "host".into(),
            before: delete.host.clone().into(),
            after: create.host.clone().into(),
            effect: Effect::InPlace,
        });
        let mut others = crate::diff::attrs::changed_attributes(before, after);
        for attribute in &mut others {
            // What moves with it changes with it (a volume's pool).
            attribute.effect = Effect::InPlace;
        }
        attributes.extend(others);
    }
    Change {
        host: create.host.clone(),
        from: Some(delete.host.clone()),
        id: create.id.clone(),
        action: Action::Migrate,
        reason: Some(reason),
        before: delete.before.clone(),
        after: create.after.clone(),
        status: delete.status,
        attributes,
    }
}

#[cfg(test)]
mod tests;
