//! One step of the apply graph, carried out on its host: what each phase means for each
//! kind of resource. Everything a step needs beyond its own change (a volume's pool
//! path, a VLAN's bridge, a VM's taps and disk files) comes from the plan itself
//! ([`Inventory`]), so a saved plan applies exactly as it was shown.
//!
//! | kind | create | update | delete | start / stop |
//! | --- | --- | --- | --- | --- |
//! | netns | made, or joined (its marker) | — | left; removed when vmctl made it, no other project uses it and only `lo` is in it (else the step fails) | |
//! | pool | directory, marker, index entry | — | when empty | |
//! | network | marked bridge, uplink | uplink | bridge | |
//! | volume | sparse file or copy of `from` | grow, `prevent-destroy` | file and marker | |
//! | vlan | VLAN (or its bridge), gateway; re-attaches existing taps of its VMs | gateway | VLAN | |
//! | vm | record; taps and process when it should run | record, cpuset; re-attaches the taps of a running VM | process, taps, state dir | taps and process / process and taps |

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use vmctl_planner::{Phase, Plan, Resource, Step};
use vmctl_schema::{Host, Vm, VmState};

use crate::host::net::bridge::{self, BridgeError};
use crate::host::net::netns::{self, NetnsError, Released};
use crate::host::net::tap::{self, TapError, TapPort};
use crate::host::net::vlan::{self, VlanError};
use crate::host::net::{observe_net, Netlink, NetlinkError};
use crate::host::pool::{self, PoolError};
use crate::host::volume::{self, VolumeError, VolumeSpec};
use crate::vms::{self, VmDevices, VmError, VmHost};

/// Errors of one step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    #[error(transparent)]
    Vlan(#[from] VlanError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("network namespace {name:?} was made by vmctl but still holds {}: it is kept", interfaces.join(", "))]
    NetnsInUse {
        name: String,
        interfaces: Vec<String>,
    },
    #[error("the plan does not say where {what} {name:?} is (it names no such {what})")]
    Unknown { what: &'static str, name: String },
    #[error("the plan's change for {step} has no resource to work from")]
    Empty { step: String },
    #[error("the plan asks to {step}, which only a VM can do")]
    NotAVm { step: String },
}

/// What the executor knows of a host.
#[derive(Debug, Clone, Copy)]
pub struct HostContext<'a> {
    pub host: &'a Host,
    pub project: &'a str,
    /// The `vmctl` binary that runs VMs (`vmctl vmm`).
    pub vmctl: &'a Path,
    /// How long a VM gets to shut down before it is killed.
    pub stop_timeout: Duration,
    /// The apply's cancel flag: long work inside a step (copying or hashing a base
    /// image) stops when it is set.
    pub cancel: &'a AtomicBool,
}

impl HostContext<'_> {
    fn netns(&self) -> Option<&str> {
        self.host.netns.as_deref()
    }

    fn vm_host(&self) -> VmHost<'_> {
        VmHost {
            project: self.project,
            state_dir: &self.host.state_dir,
            netns: self.netns(),
            vmctl: self.vmctl,
        }
    }
}

/// Where things are, by name, as the plan says: what it will be (`after`) and what it
/// was (`before`). Bringing-up steps prefer `after`, taking-down steps `before`.
#[derive(Debug, Default)]
pub struct Inventory {
    after: Names,
    before: Names,
}

#[derive(Debug, Default)]
struct Names {
    pools: HashMap<(String, String), PathBuf>,
    bridges: HashMap<(String, String), String>,
    vlans: HashMap<(String, String), (String, u16)>,
    volumes: HashMap<(String, String), String>,
}

impl Names {
    fn add(&mut self, host: &str, resource: &Resource) {
        let key = |name: &str| (host.to_owned(), name.to_owned());
        match resource {
            Resource::Pool(p) => {
                self.pools.insert(key(&p.name), p.path.clone());
            }
            Resource::Network(n) => {
                self.bridges.insert(key(&n.name), n.bridge.clone());
            }
            Resource::Vlan(v) => {
                self.vlans.insert(key(&v.name), (v.network.clone(), v.id));
            }
            Resource::Volume(v) => {
                self.volumes.insert(key(&v.name), v.pool.clone());
            }
            Resource::Vm(_) | Resource::Netns(_) => {}
        }
    }
}

impl Inventory {
    pub fn of(plan: &Plan) -> Inventory {
        let mut inventory = Inventory::default();
        for change in &plan.changes {
            if let Some(after) = &change.after {
                inventory.after.add(&change.host, after);
            }
            if let Some(before) = &change.before {
                inventory.before.add(&change.host, before);
            }
        }
        inventory
    }

    fn lookup<'a, T>(
        &'a self,
        teardown: bool,
        pick: impl Fn(&'a Names) -> &'a HashMap<(String, String), T>,
        host: &str,
        name: &str,
        what: &'static str,
    ) -> Result<&'a T, StepError> {
        let (first, second) = if teardown {
            (&self.before, &self.after)
        } else {
            (&self.after, &self.before)
        };
        let key = (host.to_owned(), name.to_owned());
        pick(first)
            .get(&key)
            .or_else(|| pick(second).get(&key))
            .ok_or_else(|| StepError::Unknown {
                what,
                name: name.into(),
            })
    }

    /// Every pool the plan names, as (host, path).
    pub fn pool_paths(&self) -> Vec<(&str, &Path)> {
        let mut out: Vec<(&str, &Path)> = [&self.after, &self.before]
            .into_iter()
            .flat_map(|n| n.pools.iter())
            .map(|((host, _), path)| (host.as_str(), path.as_path()))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn pool_path(&self, teardown: bool, host: &str, pool: &str) -> Result<&Path, StepError> {
        self.lookup(teardown, |n| &n.pools, host, pool, "pool")
            .map(PathBuf::as_path)
    }

    fn bridge(&self, teardown: bool, host: &str, network: &str) -> Result<&str, StepError> {
        self.lookup(teardown, |n| &n.bridges, host, network, "network")
            .map(String::as_str)
    }

    fn vlan(&self, teardown: bool, host: &str, vlan: &str) -> Result<(&str, u16), StepError> {
        self.lookup(teardown, |n| &n.vlans, host, vlan, "vlan")
            .map(|(network, id)| (network.as_str(), *id))
    }

    fn volume_path(&self, host: &str, volume: &str) -> Result<PathBuf, StepError> {
        let pool = self.lookup(false, |n| &n.volumes, host, volume, "volume")?;
        Ok(volume::volume_path(
            self.pool_path(false, host, pool)?,
            volume,
        ))
    }
}

/// Carries out `step` of `plan` on its host.
pub fn run_step(
    ctx: &HostContext<'_>,
    inventory: &Inventory,
    plan: &Plan,
    step: &Step,
) -> Result<(), StepError> {
    let change = &plan.changes[step.change];
    let teardown = step.phase.is_teardown();
    let resource = if teardown {
        change.before.as_ref().or(change.after.as_ref())
    } else {
        change.after.as_ref()
    };
    let resource = resource.ok_or_else(|| StepError::Empty {
        step: step.to_string(),
    })?;
    let project = ctx.project;
    let state_dir = ctx.host.state_dir.as_path();
    let host = step.host.as_str();
    match (resource, step.phase) {
        (Resource::Netns(n), Phase::Create) => {
            netns::ensure(state_dir, project, &n.name)?;
        }
        (Resource::Netns(n), Phase::Delete) => match netns::release(state_dir, project, &n.name)? {
            Released::InUse { interfaces } => {
                return Err(StepError::NetnsInUse {
                    name: n.name.clone(),
                    interfaces,
                })
            }
            Released::Removed | Released::NotOurs | Released::Shared { .. } | Released::Gone => {}
        },
        // A namespace has nothing to change in place: its name is what it is.
        (Resource::Netns(_), Phase::Update) => {}
        (Resource::Pool(p), Phase::Create) => {
            pool::create_pool(state_dir, project, &p.name, &p.path)?;
        }
        (Resource::Pool(p), Phase::Delete) => {
            pool::delete_pool(state_dir, project, &p.name, &p.path)?;
        }
        (Resource::Network(n), Phase::Create | Phase::Update) => {
            Netlink::run(ctx.netns(), |nl| {
                bridge::create_bridge(nl, project, &n.name, &n.bridge)?;
                bridge::set_uplink(nl, project, &n.name, &n.bridge, n.uplink.as_deref())?;
                Ok::<_, StepError>(())
            })?;
        }
        (Resource::Network(n), Phase::Delete) => {
            Netlink::run(ctx.netns(), |nl| {
                bridge::delete_bridge(nl, project, &n.name, &n.bridge)
            })?;
        }
        (Resource::Volume(v), Phase::Create) => {
            let pool_path = inventory.pool_path(false, host, &v.pool)?;
            let spec = VolumeSpec {
                name: &v.name,
                size: v.size,
                from: v.from.as_deref(),
                prevent_destroy: v.prevent_destroy,
                cancel: Some(ctx.cancel),
            };
            volume::create_volume(project, pool_path, &spec)?;
        }
        (Resource::Volume(v), Phase::Update) => {
            let pool_path = inventory.pool_path(false, host, &v.pool)?;
            volume::grow_volume(project, pool_path, &v.name, v.size)?;
            volume::set_prevent_destroy(project, pool_path, &v.name, v.prevent_destroy)?;
        }
        (Resource::Volume(v), Phase::Delete) => {
            let pool_path = inventory.pool_path(true, host, &v.pool)?;
            volume::delete_volume(project, pool_path, &v.name)?;
        }
        (Resource::Vlan(v), Phase::Create | Phase::Update) => {
            let bridge = inventory.bridge(false, host, &v.network)?;
            Netlink::run(ctx.netns(), |nl| {
                if step.phase == Phase::Create {
                    vlan::add_vlan(nl, project, &v.network, bridge, v.id)?;
                }
                vlan::set_gateway(nl, project, &v.network, bridge, v.id, v.gateway.as_deref())?;
                if step.phase == Phase::Create {
                    reattach_taps(ctx, nl, &v.name, &v.network, bridge, v.id)?;
                }
                Ok::<_, StepError>(())
            })?;
        }
        (Resource::Vlan(v), Phase::Delete) => {
            let bridge = inventory.bridge(true, host, &v.network)?;
            Netlink::run(ctx.netns(), |nl| {
                vlan::delete_vlan(nl, project, &v.network, bridge, v.id)
            })?;
        }
        (Resource::Vm(vm), Phase::Create) if vm.state == VmState::Running => {
            start_vm(ctx, inventory, host, vm)?;
        }
        (Resource::Vm(vm), Phase::Create) => {
            vms::write_record(&ctx.vm_host(), vm, false)?;
        }
        (Resource::Vm(vm), Phase::Start) => start_vm(ctx, inventory, host, vm)?,
        (Resource::Vm(vm), Phase::Update) => {
            vms::update_vm(&ctx.vm_host(), vm)?;
            if vm.state == VmState::Running {
                reattach_vm_taps(ctx, inventory, host, vm)?;
            }
        }
        (Resource::Vm(vm), Phase::Stop) => {
            vms::stop_vm(&ctx.vm_host(), &vm.name, ctx.stop_timeout)?;
            delete_taps(ctx, &vm.name)?;
            // The record keeps what the config says now (the in-place attributes).
            if let Some(Resource::Vm(after)) = &change.after {
                vms::write_record(&ctx.vm_host(), after, false)?;
            }
        }
        (Resource::Vm(vm), Phase::Delete) => {
            vms::delete_vm(&ctx.vm_host(), &vm.name, ctx.stop_timeout)?;
            delete_taps(ctx, &vm.name)?;
        }
        // A pool has nothing to change in place: its path and type force a replace.
        (Resource::Pool(_), Phase::Update) => {}
        // Only VMs start and stop; a plan that says otherwise was not made by the planner.
        (
            Resource::Netns(_)
            | Resource::Pool(_)
            | Resource::Network(_)
            | Resource::Volume(_)
            | Resource::Vlan(_),
            Phase::Start | Phase::Stop,
        ) => {
            return Err(StepError::NotAVm {
                step: step.to_string(),
            })
        }
    }
    Ok(())
}

/// Makes the taps of `vm` and starts its process.
fn start_vm(
    ctx: &HostContext<'_>,
    inventory: &Inventory,
    host: &str,
    vm: &Vm,
) -> Result<(), StepError> {
    let mut devices = VmDevices::default();
    for disk in &vm.disks {
        devices.disks.push(inventory.volume_path(host, disk)?);
    }
    let mut ports = Vec::new();
    for nic in &vm.nics {
        let (network, id) = inventory.vlan(false, host, &nic.vlan)?;
        let bridge = inventory.bridge(false, host, network)?;
        ports.push((network, bridge, id, nic.mac.clone()));
    }
    if !ports.is_empty() {
        let taps = Netlink::run(ctx.netns(), |nl| {
            let mut taps = Vec::new();
            for (i, (network, bridge, vlan_id, _)) in ports.iter().enumerate() {
                let port = TapPort {
                    network,
                    bridge,
                    vlan_id: *vlan_id,
                };
                taps.push(tap::create_tap(nl, ctx.project, &vm.name, i, port)?);
            }
            Ok::<_, StepError>(taps)
        })?;
        devices.nics = taps
            .into_iter()
            .zip(ports.iter().map(|p| p.3.clone()))
            .collect();
    }
    vms::start_vm(&ctx.vm_host(), vm, &devices)?;
    Ok(())
}

/// Puts the running `vm`'s existing taps back on their VLANs (tap drift repaired in
/// place; a deleted tap restarts the VM instead, see `vmctl_planner::diff`).
fn reattach_vm_taps(
    ctx: &HostContext<'_>,
    inventory: &Inventory,
    host: &str,
    vm: &Vm,
) -> Result<(), StepError> {
    let mut ports = Vec::new();
    for nic in &vm.nics {
        let (network, id) = inventory.vlan(false, host, &nic.vlan)?;
        ports.push((network, inventory.bridge(false, host, network)?, id));
    }
    if ports.is_empty() {
        return Ok(());
    }
    Netlink::run(ctx.netns(), |nl| {
        for (i, (network, bridge, vlan_id)) in ports.iter().enumerate() {
            let port = TapPort {
                network,
                bridge,
                vlan_id: *vlan_id,
            };
            tap::reattach_tap(nl, ctx.project, &vm.name, i, port)?;
        }
        Ok::<_, StepError>(())
    })
}

/// Deletes every tap of `vm` (of this project) on the host.
fn delete_taps(ctx: &HostContext<'_>, vm: &str) -> Result<(), StepError> {
    Netlink::run(ctx.netns(), |nl| {
        for t in observe_net(nl, ctx.project)?.taps {
            if t.vm == vm {
                tap::delete_tap(nl, ctx.project, vm, t.nic)?;
            }
        }
        Ok::<_, StepError>(())
    })
}

/// After a VLAN is (re)made, puts back the existing taps of the VMs with a NIC on it
/// (a VLAN deleted by hand took its ports with it). The taps themselves survived and
/// their VMs keep their descriptors, so this makes those VMs whole: the planner restarts
/// none of them for a re-created VLAN (unlike a re-created disk: `vmctl_planner::diff`).
fn reattach_taps(
    ctx: &HostContext<'_>,
    nl: &Netlink,
    vlan_name: &str,
    network: &str,
    bridge: &str,
    id: u16,
) -> Result<(), StepError> {
    let taps = observe_net(nl, ctx.project)?.taps;
    for t in taps {
        // A VM whose record cannot be read is left alone (observe reported it).
        let Ok(Some(record)) = vms::read_record(&ctx.host.state_dir, ctx.project, &t.vm) else {
            continue;
        };
        let on_vlan = record
            .vm
            .nics
            .get(t.nic)
            .is_some_and(|n| n.vlan == vlan_name);
        if on_vlan {
            let port = TapPort {
                network,
                bridge,
                vlan_id: id,
            };
            tap::create_tap(nl, ctx.project, &t.vm, t.nic, port)?;
        }
    }
    Ok(())
}

/// Deletes the project's taps whose VM has no state dir, or was stopped by vmctl and
/// has no process (what an apply killed between a VM's taps and its record or its stop
/// leaves). Returns the taps deleted.
pub fn sweep_orphan_taps(ctx: &HostContext<'_>) -> Result<Vec<String>, StepError> {
    Netlink::run(ctx.netns(), |nl| {
        let mut deleted = Vec::new();
        for t in observe_net(nl, ctx.project)?.taps {
            let observed = vms::observe_vm(&ctx.host.state_dir, ctx.project, &t.vm)?;
            let orphan = observed.is_none_or(|vm| {
                !vm.record.running && vm.status != vmctl_planner::VmStatus::Running
            });
            if orphan {
                tap::delete_tap(nl, ctx.project, &t.vm, t.nic)?;
                deleted.push(t.ifname);
            }
        }
        Ok::<_, StepError>(deleted)
    })
}
