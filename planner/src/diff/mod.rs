//! Desired against live: one [`Change`] per resource of the project on each host of the
//! config.
//!
//! Rules, per resource (attributes: see [`attrs`]):
//!
//! - a network is a resource on each of its hosts, and so is each of its VLANs, with
//!   the VLAN's VXLAN tunnel there when the network spans hosts ([`spanning`]);
//! - in the config, not on its host → `create`; on the host, not in the config → `delete`
//!   (an empty config plans no deletes unless `destroy` was asked: that is almost always
//!   a wrong path, not a wish to delete everything);
//! - an attribute that forces replacement, or `--replace` → `replace`;
//! - a running VM that stays running with an attribute that forces a restart → `replace`
//!   with reason `restart` (its volumes are kept); a VM that is not running takes those
//!   attributes in place;
//! - a VM that should run but is stopped or crashed → `start`; one that should be stopped
//!   but runs → `stop`;
//! - only in-place attributes → `update`; nothing → `no-op`;
//! - a volume that would shrink is an error unless `--replace` names it;
//! - a replaced pool, network, volume or VLAN replaces what lives on it or uses it
//!   ([`cascade`]): a VM's disk or tap cannot outlive what it points at;
//! - a running VM whose disk's volume is created (its file was deleted by hand) is
//!   restarted after that create, or it would keep using the deleted file
//!   ([`restart_on_new_disks`]); a re-created VLAN re-attaches its VMs' taps instead;
//! - a host's declared `netns` is a resource of its own (module `netns`): made while
//!   something lives in it, left or removed when nothing does;
//! - so is the project's nftables table on a host (module `firewall`): wanted while a
//!   VLAN has a gateway there, compared by its ruleset's hash;
//! - a running VM whose tap is detached is updated (re-attached), one whose tap is gone
//!   restarted (module `taps`);
//! - NIC addresses (filled in by [`crate::ipam`] before the diff) are part of `nics`;
//!   who chose an address is not a change, and a VM recorded without addresses gets
//!   them in place (module `addresses`).
//!
//! Resources of other projects are invisible here. Live state of hosts that are not in
//! the config is not looked at: vmctl reaches hosts through the config.

mod addresses;
pub mod attrs;
mod bridges;
mod disks;
mod errors;
mod firewall;
mod moves;
pub mod netns;
mod taps;

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use vmctl_schema::{Config, Network, VmState};

pub use disks::restart_on_new_disks;
pub use errors::DiffError;
pub use moves::{check_moves, plan_moves, resume_paused};

use crate::action::{Action, Effect, Reason, ResourceId, ResourceKind};
use crate::ipam::Addresses;
use crate::live::{LiveFile, LiveState, VmStatus};
use crate::plan::{AttrChange, Change, Resource};
use crate::spanning;

/// Diffs every host of the config, its VMs' NICs with their `addresses`
/// ([`crate::ipam::allocate`]). `forced` are the resources `--replace` named; `destroy`
/// plans the deletion of everything of the project.
pub fn diff(
    config: &Config,
    addresses: &Addresses,
    live: &LiveFile,
    forced: &HashSet<ResourceId>,
    destroy: bool,
) -> Result<Vec<Change>, Vec<DiffError>> {
    let desired = if destroy {
        HashMap::new()
    } else {
        desired_by_host(config, addresses)
    };
    // Hosts are independent: diff them in parallel, then concatenate in config order.
    let per_host: Vec<(Vec<Change>, Vec<DiffError>)> = config
        .hosts
        .par_iter()
        .map(|host| {
            let wanted = desired
                .get(host.name.as_str())
                .map_or(&[][..], Vec::as_slice);
            let state = live.host(&host.name);
            let held = held(state, &config.project, wanted);
            let wanted = &without(wanted, &held)[..];
            let found = live_resources(state, &config.project, &host.name);
            let (mut changes, mut errors) = (Vec::new(), Vec::new());
            changes.extend(netns::diff_netns(config, host, state, destroy));
            match firewall::diff_firewall(config, &host.name, state, destroy) {
                Ok(change) => changes.extend(change),
                Err(error) => errors.push(error),
            }
            diff_host(
                &host.name,
                wanted,
                found,
                forced,
                destroy,
                &mut changes,
                &mut errors,
            );
            (changes, errors)
        })
        .collect();
    let mut changes = Vec::new();
    let mut errors = Vec::new();
    for (host_changes, host_errors) in per_host {
        changes.extend(host_changes);
        errors.extend(host_errors);
    }
    let empty = config.pools.is_empty()
        && config.volumes.is_empty()
        && config.networks.is_empty()
        && config.vlans.is_empty()
        && config.vms.is_empty();
    let deletes = changes
        .iter()
        .filter(|c| c.action == Action::Delete && c.id.kind != ResourceKind::Netns)
        .filter(|c| c.id.kind != ResourceKind::Firewall)
        .count();
    if empty && !destroy && deletes > 0 {
        errors.push(DiffError::EmptyConfig {
            project: config.project.clone(),
            count: deletes,
        });
    }
    taps::repair_taps(&mut changes, live, &config.project);
    bridges::repair_bridges(&mut changes, live, &config.project);
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(errors)
    }
}

/// The resources the plan leaves alone on a host: those whose record cannot be read
/// (the host has something there; creating it anew could overwrite it), and the
/// volumes of such a pool (vmctl cannot tell which of its files are whose).
fn held(state: &LiveState, project: &str, wanted: &[Resource]) -> HashSet<ResourceId> {
    let mut held: HashSet<ResourceId> = state.held(project).into_iter().collect();
    if held.is_empty() {
        return held;
    }
    for resource in wanted {
        if let Resource::Volume(v) = resource {
            if held.contains(&ResourceId::new(ResourceKind::Pool, &v.pool)) {
                held.insert(resource.id());
            }
        }
    }
    held
}

/// `wanted` without the `held` resources (borrowed when nothing is held).
fn without<'a>(
    wanted: &'a [Resource],
    held: &HashSet<ResourceId>,
) -> std::borrow::Cow<'a, [Resource]> {
    if held.is_empty() {
        return std::borrow::Cow::Borrowed(wanted);
    }
    let kept = wanted.iter().filter(|r| !held.contains(&r.id()));
    std::borrow::Cow::Owned(kept.cloned().collect())
}

/// The config's resources by host, dependencies first. A volume lives on its pool's host,
/// a network on each of its hosts and so does each of its VLANs (see [`spanning`]); one
/// whose parent is unknown (the schema refuses such configs) is on no host and so never
/// planned.
fn desired_by_host<'a>(
    config: &'a Config,
    addresses: &Addresses,
) -> HashMap<&'a str, Vec<Resource>> {
    let pool_host: HashMap<&str, &str> = config
        .pools
        .iter()
        .map(|p| (p.name.as_str(), p.host.as_str()))
        .collect();
    let networks: HashMap<&str, &Network> = config
        .networks
        .iter()
        .map(|n| (n.name.as_str(), n))
        .collect();
    let underlays = spanning::Underlays::of(config);
    let mut by_host: HashMap<&'a str, Vec<Resource>> = HashMap::new();
    let mut put = |host: Option<&'a str>, resource: Resource| {
        if let Some(host) = host {
            by_host.entry(host).or_default().push(resource);
        }
    };
    for pool in &config.pools {
        put(Some(&pool.host), Resource::Pool(pool.clone()));
    }
    for network in &config.networks {
        for host in network.on_hosts() {
            put(
                Some(host),
                Resource::Network(spanning::network_on(network, host)),
            );
        }
    }
    for volume in &config.volumes {
        let host = pool_host.get(volume.pool.as_str()).copied();
        put(host, Resource::Volume(volume.clone()));
    }
    for vlan in &config.vlans {
        let Some(network) = networks.get(vlan.network.as_str()) else {
            continue;
        };
        for host in network.on_hosts() {
            let on_host = spanning::vlan_on(network, vlan, host, &underlays);
            put(Some(host), Resource::Vlan(on_host));
        }
    }
    for (host, server) in crate::dhcp::servers(config, addresses) {
        let host = config
            .hosts
            .iter()
            .find(|h| h.name == host)
            .map(|h| h.name.as_str());
        put(host, Resource::Dhcp(server));
    }
    for (i, vm) in config.vms.iter().enumerate() {
        let mut vm = vm.clone();
        addresses.fill(i, &mut vm);
        // What its host says for every VM it runs.
        if let Some(host) = config.hosts.iter().find(|h| h.name == vm.host) {
            vm.cpuid_mask = host.cpuid_mask.clone();
            vm.migration_downtime = vm.migration_downtime.or(host.migration_downtime);
        }
        put(Some(&config.vms[i].host), Resource::Vm(vm));
    }
    by_host
}

/// The project's live resources on one host in the model's shape, with VM statuses.
fn live_resources(
    live: &LiveState,
    project: &str,
    host: &str,
) -> Vec<(Resource, Option<VmStatus>)> {
    let mut found = Vec::new();
    let pools = live.pools.iter().filter(|r| r.project == project);
    found.extend(pools.map(|r| (Resource::Pool(r.to_model(host)), None)));
    let networks = live.networks.iter().filter(|r| r.project == project);
    found.extend(networks.map(|r| (Resource::Network(r.to_model(host)), None)));
    let volumes = live.volumes.iter().filter(|r| r.project == project);
    found.extend(volumes.map(|r| (Resource::Volume(r.to_model()), None)));
    let vlans = live.vlans.iter().filter(|r| r.project == project);
    found.extend(vlans.map(|r| (Resource::Vlan(r.to_model()), None)));
    let servers = live.dhcp.iter().filter(|r| r.project == project);
    found.extend(servers.map(|r| (Resource::Dhcp(r.to_model()), None)));
    for vm in live.vms.iter().filter(|r| r.project == project) {
        let mut spec = vm.spec.to_model();
        spec.name.clone_from(&vm.name);
        spec.host = host.to_owned();
        found.push((Resource::Vm(spec), Some(vm.status)));
    }
    found
}

fn diff_host(
    host: &str,
    wanted: &[Resource],
    found: Vec<(Resource, Option<VmStatus>)>,
    forced: &HashSet<ResourceId>,
    destroy: bool,
    changes: &mut Vec<Change>,
    errors: &mut Vec<DiffError>,
) {
    let mut found: HashMap<ResourceId, (Resource, Option<VmStatus>)> = found
        .into_iter()
        .map(|(resource, status)| (resource.id(), (resource, status)))
        .collect();
    for after in wanted {
        let id = after.id();
        let change = match found.remove(&id) {
            None => Change {
                host: host.to_owned(),
                from: None,
                id,
                action: Action::Create,
                reason: None,
                before: None,
                after: Some(after.clone()),
                status: None,
                attributes: Vec::new(),
            },
            Some((before, status)) => {
                let is_forced = forced.contains(&id);
                match compare(host, before, after.clone(), status, is_forced) {
                    Ok(change) => change,
                    Err(error) => {
                        errors.push(error);
                        continue;
                    }
                }
            }
        };
        changes.push(change);
    }
    let mut gone: Vec<_> = found.into_iter().collect();
    gone.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, (before, status)) in gone {
        changes.push(Change {
            host: host.to_owned(),
            from: None,
            id,
            action: Action::Delete,
            reason: Some(if destroy {
                Reason::Destroy
            } else {
                Reason::Removed
            }),
            before: Some(before),
            after: None,
            status,
            attributes: Vec::new(),
        });
    }
}

/// One resource that is both in the config and on its host.
fn compare(
    host: &str,
    before: Resource,
    after: Resource,
    status: Option<VmStatus>,
    forced: bool,
) -> Result<Change, DiffError> {
    let before = match (before, &after) {
        (Resource::Vm(mut live), Resource::Vm(wanted)) => {
            addresses::align(&mut live, wanted);
            Resource::Vm(live)
        }
        (before, _) => before,
    };
    let mut attributes = if before == after {
        Vec::new()
    } else {
        attrs::changed_attributes(&before, &after)
    };
    if let (Resource::Vm(live), Resource::Vm(wanted)) = (&before, &after) {
        addresses::first_record(&mut attributes, live, wanted);
    }
    let (action, reason) = match (&before, &after) {
        (Resource::Vm(_), Resource::Vm(vm)) => {
            let status = status.unwrap_or_default();
            vm_action(&mut attributes, status, vm.state, forced)
        }
        (Resource::Volume(old), Resource::Volume(new)) if new.size < old.size && !forced => {
            return Err(DiffError::ShrinkVolume {
                host: host.to_owned(),
                name: new.name.clone(),
                live: old.size,
                config: new.size,
            });
        }
        (Resource::Dhcp(_), Resource::Dhcp(_)) if !forced => dhcp_action(&attributes),
        _ => resource_action(&attributes, forced),
    };
    Ok(Change {
        host: host.to_owned(),
        from: None,
        id: after.id(),
        action,
        reason,
        before: Some(before),
        after: Some(after),
        status,
        attributes,
    })
}

fn resource_action(attributes: &[AttrChange], forced: bool) -> (Action, Option<Reason>) {
    let strongest = attributes.iter().map(|a| a.effect).max();
    if forced {
        (Action::Replace, Some(Reason::Requested))
    } else {
        match strongest {
            Some(Effect::Replace) => (Action::Replace, Some(Reason::Attributes)),
            Some(Effect::Restart) => (Action::Replace, Some(Reason::Restart)),
            Some(Effect::InPlace) => (Action::Update, None),
            None => (Action::NoOp, None),
        }
    }
}

/// A DHCP server's action: always in place. Not running → started (`crashed`); its
/// configuration changed → restarted (`reconfigure`); only its leases → re-read on
/// SIGHUP (`reload`). The runtime decides restart or reload from what it finds, not
/// from this reason.
fn dhcp_action(attributes: &[AttrChange]) -> (Action, Option<Reason>) {
    let changed = |name: &str| attributes.iter().any(|a| a.name == name);
    if attributes.is_empty() {
        (Action::NoOp, None)
    } else if changed("running") {
        (Action::Update, Some(Reason::Crashed))
    } else if changed("config") {
        (Action::Update, Some(Reason::Reconfigure))
    } else {
        (Action::Update, Some(Reason::Reload))
    }
}

/// A VM's action from its changed attributes, its live status and its desired state.
fn vm_action(
    attributes: &mut Vec<AttrChange>,
    status: VmStatus,
    desired: VmState,
    forced: bool,
) -> (Action, Option<Reason>) {
    let running = status == VmStatus::Running;
    let should_run = desired == VmState::Running;
    if !(running && should_run) {
        // Nothing to restart: the new spec is written before the next start.
        for attribute in attributes.iter_mut() {
            if attribute.effect == Effect::Restart {
                attribute.effect = Effect::InPlace;
            }
        }
    }
    let by_attributes = resource_action(attributes, forced);
    if by_attributes.0 == Action::Replace {
        return by_attributes;
    }
    let state_change = |attributes: &mut Vec<AttrChange>| {
        attributes.push(AttrChange {
            name: "state".into(),
            before: serde_json::to_value(status).unwrap_or_default(),
            after: serde_json::to_value(desired).unwrap_or_default(),
            effect: Effect::InPlace,
        });
    };
    if should_run && !running {
        state_change(attributes);
        let reason = (status == VmStatus::Crashed).then_some(Reason::Crashed);
        (Action::Start, reason)
    } else if !should_run && running {
        state_change(attributes);
        (Action::Stop, None)
    } else {
        by_attributes
    }
}

/// Replaces what lives on or uses a replaced resource: a pool's volumes, a network's
/// VLANs, the VMs whose disks or NICs point at a replaced volume or VLAN. (A VM's
/// `depends-on`, and its VLAN's DHCP server, order; they do not cascade.) Goes kind by kind, dependencies first, so a
/// replaced pool reaches the VMs on its volumes.
pub fn cascade(changes: &mut [Change]) {
    for kind in ResourceKind::ALL {
        let decided: Vec<(usize, ResourceId)> = {
            let replaced: HashSet<(&str, ResourceKind, &str)> = changes
                .iter()
                .filter(|c| c.action == Action::Replace && c.id.kind < kind)
                .map(|c| (c.host.as_str(), c.id.kind, c.id.name.as_str()))
                .collect();
            if replaced.is_empty() {
                continue;
            }
            changes
                .iter()
                .enumerate()
                .filter(|(_, c)| c.id.kind == kind)
                .filter(|(_, c)| {
                    matches!(
                        c.action,
                        Action::NoOp | Action::Update | Action::Start | Action::Stop
                    )
                })
                .filter_map(|(i, c)| {
                    let mut of = None;
                    c.after.as_ref()?.each_need(|need, name| {
                        // A VM orders after its DHCP server; it does not live on it.
                        let hit = !matches!(need, ResourceKind::Vm | ResourceKind::Dhcp)
                            && replaced.contains(&(c.host.as_str(), need, name));
                        if hit && of.is_none() {
                            of = Some(ResourceId::new(need, name));
                        }
                    });
                    Some((i, of?))
                })
                .collect()
        };
        for (i, of) in decided {
            changes[i].action = Action::Replace;
            changes[i].reason = Some(Reason::DependencyReplaced { of });
        }
    }
}

/// `prevent-destroy`: a planned delete of a volume whose live marker protects it, or a
/// planned replace of one the config protects, is an error naming it.
pub fn check_prevent_destroy(changes: &[Change]) -> Vec<DiffError> {
    let mut errors = Vec::new();
    for change in changes {
        let protected = match (change.action, &change.before, &change.after) {
            (Action::Delete, Some(Resource::Volume(live)), _) => live.prevent_destroy,
            // A volume that moves is deleted on its old host once the VM runs on the new.
            (Action::Migrate, Some(Resource::Volume(live)), _) => live.prevent_destroy,
            (Action::Replace, _, Some(Resource::Volume(wanted))) => wanted.prevent_destroy,
            _ => false,
        };
        if protected {
            errors.push(DiffError::PreventDestroy {
                // A moving volume is protected where it is, on the host it leaves.
                host: change.from.clone().unwrap_or_else(|| change.host.clone()),
                name: change.id.name.clone(),
                action: change.action,
                why: change
                    .reason
                    .as_ref()
                    .map_or_else(String::new, |r| format!(" ({r})")),
            });
        }
    }
    errors
}

#[cfg(test)]
mod tests;
