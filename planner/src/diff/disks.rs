//! A running VM whose disk is made anew must restart to use it.
//!
//! A VM's process holds its disks' files open. When a volume under a running VM is
//! re-created — its file was deleted by hand (drift) and the plan creates it again — the
//! VM keeps reading and writing the deleted file through its open descriptor until it
//! restarts: the repair is not real until then. So a VM that runs, stays running and
//! exists on the host, with a disk whose volume the plan creates, is replaced (restarted,
//! its volumes kept) with reason [`Reason::DiskRecreated`]. The graph puts the VM's
//! create after the volume's, as for any create of what a VM needs.
//!
//! What this rule leaves to others:
//! - a VM on a *replaced* volume is replaced by [`super::cascade`];
//! - a VM that is stopped, or is being started or stopped, takes the new file when it
//!   next starts: no restart, just the volume;
//! - a VM that does not exist yet is a plain create;
//! - a VM whose NIC's VLAN is created (deleted by hand) is not restarted: the VLAN's
//!   create step re-attaches the existing taps of its VMs to the bridge and VLAN
//!   (runtime `apply::steps`, `reattach_taps`). The VM's tap devices survive the VLAN's
//!   removal and its process keeps their descriptors, so re-attaching them makes the VM
//!   whole. A VLAN whose id changes is replaced, and the cascade restarts its VMs.
//!
//! Restarting a VM never destroys its volumes, so `prevent-destroy` has nothing to say.

use std::collections::HashSet;

use crate::action::{Action, Reason, ResourceId, ResourceKind};
use crate::live::VmStatus;
use crate::plan::{Change, Resource};

/// Turns into restarts the VMs that would otherwise keep running on a deleted disk.
pub fn restart_on_new_disks(changes: &mut [Change]) {
    let created: HashSet<(&str, &str)> = changes
        .iter()
        .filter(|c| c.id.kind == ResourceKind::Volume && c.action == Action::Create)
        .map(|c| (c.host.as_str(), c.id.name.as_str()))
        .collect();
    if created.is_empty() {
        return;
    }
    let decided: Vec<(usize, ResourceId)> = changes
        .iter()
        .enumerate()
        .filter(|(_, c)| keeps_running(c))
        .filter_map(|(i, c)| {
            let Some(Resource::Vm(vm)) = &c.after else {
                return None;
            };
            let disk = vm
                .disks
                .iter()
                .find(|d| created.contains(&(c.host.as_str(), d.as_str())))?;
            Some((i, ResourceId::new(ResourceKind::Volume, disk.as_str())))
        })
        .collect();
    for (i, of) in decided {
        changes[i].action = Action::Replace;
        changes[i].reason = Some(Reason::DiskRecreated { of });
    }
}

/// A VM that exists on its host, runs, and is planned to go on running as it is (or with
/// in-place changes). Its live status is running and its action no-op or update: a VM
/// that should stop is a `stop`, one that is not running a `start`.
pub(super) fn keeps_running(change: &Change) -> bool {
    change.id.kind == ResourceKind::Vm
        && change.before.is_some()
        && change.status == Some(VmStatus::Running)
        && matches!(change.action, Action::NoOp | Action::Update)
}

#[cfg(test)]
mod tests;
