//! One step of the apply graph, carried out on its host: what each phase means for each
//! kind of resource. Everything a step needs beyond its own change (a volume's pool
//! path, a VLAN's bridge, a VM's taps and disk files) comes from the plan itself
//! ([`Inventory`]), so a saved plan applies exactly as it was shown.
//!
//! A step travels to its host as a [`StepOrder`]: the step's resource and phase with
//! every place it needs already looked up in the plan (plain serde data, so a remote
//! host's agent runs it the same way). The host needs nothing else of the plan.
//!
//! | kind | create | update | delete | start / stop |
//! | --- | --- | --- | --- | --- |
//! | netns | made, or joined (its marker) | — | left; removed when vmctl made it, no other project uses it and only `lo` is in it (else the step fails) | |
//! | pool | directory, marker, index entry | — | when empty | |
//! | network | marked bridge, uplink | uplink | bridge | |
//! | volume | sparse file or copy of `from` | grow, `prevent-destroy` | file and marker | |
//! | vlan | VLAN (or its bridge), gateway, VXLAN tunnel; re-attaches existing taps of its VMs | gateway, tunnel | VLAN, its tunnel | |
//! | dhcp | files written, dnsmasq started in the netns | files rewritten; SIGHUP when its config is the same and it runs, else restarted | dnsmasq stopped (SIGTERM, proven its own), its directory | |
//! | vm | record; taps and process when it should run | record, cpuset; re-attaches the taps of a running VM | process, taps, state dir | taps and process / process and taps |
//! | firewall | nftables table `inet vmctl-<project>`, forwarding, record | the table replaced in one transaction; forwarding turned on/off to match | table (only vmctl's), the forwarding vmctl turned on, record | |

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vmctl_planner::{Phase, Plan, Resource, Step};
use vmctl_schema::{Vm, VmState};

use crate::host::dhcp::{self, DhcpError};
use crate::host::firewall::{self, FirewallError};
use crate::host::net::bridge::{self, BridgeError};
use crate::host::net::netns::{self, NetnsError, Released};
use crate::host::net::tap::{self, TapError, TapPort};
use crate::host::net::vlan::{self, VlanError};
use crate::host::net::vxlan::{self, VxlanError};
use crate::host::net::{observe_net, Netlink, NetlinkError};
use crate::host::pool::{self, PoolDeleted, PoolError};
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
    Vxlan(#[from] VxlanError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Dhcp(#[from] DhcpError),
    #[error("the plan's DHCP server of VLAN {vlan:?} carries no files to write")]
    DhcpFiles { vlan: String },
    #[error(transparent)]
    Firewall(#[from] FirewallError),
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
    #[error("volume {name:?} would shrink from {size} to {requested} bytes as it moves")]
    MoveShrinks {
        name: String,
        size: u64,
        requested: u64,
    },
    #[error("cancelled (Ctrl-C) while copying volume {name:?}; it stays whole on its old host")]
    MoveCancelled { name: String },
    #[error("the step for VM {vm:?} does not say where each of its disks and NICs is")]
    Places { vm: String },
    #[error("the order to {step} does not say where its {what} is")]
    NoPlace { step: String, what: &'static str },
    /// A remote host's agent could not carry it out (its words).
    #[error("{message}")]
    Remote { message: String },
    #[error("cannot ship {path} to the host: {message}")]
    Ship { path: PathBuf, message: String },
}

/// What the executor knows of a host.
#[derive(Debug, Clone, Copy)]
pub struct HostContext<'a> {
    /// The host's state dir.
    pub state_dir: &'a Path,
    /// The host's network namespace, if it has one.
    pub netns: Option<&'a str>,
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
        self.netns
    }

    fn vm_host(&self) -> VmHost<'_> {
        VmHost {
            project: self.project,
            state_dir: self.state_dir,
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
            Resource::Vm(_) | Resource::Netns(_) | Resource::Dhcp(_) | Resource::Firewall(_) => {}
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
            // A migrating resource was on the host it moves from.
            if let Some(before) = &change.before {
                let host = change.from.as_deref().unwrap_or(&change.host);
                inventory.before.add(host, before);
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

    /// The path of `pool` on `host`: as the plan's live state has it for a teardown,
    /// else as the config has it (the other when the first does not name it).
    pub fn pool_path(&self, teardown: bool, host: &str, pool: &str) -> Result<&Path, StepError> {
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

/// One step as its host carries it out: the resource and phase, and every place the
/// step needs, looked up in the plan ([`StepOrder::of`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StepOrder {
    /// The step, as messages name it (`create vm.web-1`).
    pub step: String,
    pub phase: Phase,
    /// The resource as it will be (bringing-up steps) or as it was (teardown steps).
    pub resource: Resource,
    /// A VM's stop: the VM as the config says now, which its record keeps.
    #[serde(default)]
    pub keep: Option<Vm>,
    #[serde(default)]
    pub places: Places,
}

/// Where the things a step names are on its host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Places {
    /// A volume's pool directory.
    #[serde(default)]
    pub pool: Option<PathBuf>,
    /// A VLAN's network's bridge.
    #[serde(default)]
    pub bridge: Option<String>,
    /// A starting VM's disk files, in its order.
    #[serde(default)]
    pub disks: Vec<PathBuf>,
    /// A starting or updated VM's NICs, in its order.
    #[serde(default)]
    pub nics: Vec<NicPlace>,
    /// Where the host has the files the config names when not at the config's paths
    /// (a remote host's image cache, see `hosts::Host::ship`): a starting VM's kernel
    /// and initrd, a created volume's base image. The records keep the config's paths.
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    #[serde(default)]
    pub image: Option<PathBuf>,
}

/// Where one NIC of a VM goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NicPlace {
    pub network: String,
    pub bridge: String,
    pub vlan_id: u16,
    pub mac: String,
}

impl StepOrder {
    /// `step` of `plan`, with what it needs from `inventory` (of the same plan).
    pub fn of(inventory: &Inventory, plan: &Plan, step: &Step) -> Result<StepOrder, StepError> {
        let empty = || StepError::Empty {
            step: step.to_string(),
        };
        let change = plan.changes.get(step.change).ok_or_else(empty)?;
        let teardown = step.phase.is_teardown();
        let resource = if teardown {
            change.before.as_ref().or(change.after.as_ref())
        } else {
            change.after.as_ref()
        };
        let resource = resource.ok_or_else(empty)?.clone();
        let host = step.host.as_str();
        let mut places = Places::default();
        let mut keep = None;
        match (&resource, step.phase) {
            (Resource::Volume(v), Phase::Create | Phase::Update | Phase::Delete) => {
                places.pool = Some(inventory.pool_path(teardown, host, &v.pool)?.to_owned());
            }
            (Resource::Vlan(v), Phase::Create | Phase::Update | Phase::Delete) => {
                places.bridge = Some(inventory.bridge(teardown, host, &v.network)?.to_owned());
            }
            (Resource::Vm(vm), Phase::Create) if vm.state == VmState::Running => {
                places.disks = disk_places(inventory, host, vm)?;
                places.nics = nic_places(inventory, host, vm)?;
            }
            (Resource::Vm(vm), Phase::Start | Phase::Migrate) => {
                places.disks = disk_places(inventory, host, vm)?;
                places.nics = nic_places(inventory, host, vm)?;
            }
            (Resource::Vm(vm), Phase::Update) if vm.state == VmState::Running => {
                places.nics = nic_places(inventory, host, vm)?;
            }
            (Resource::Vm(_), Phase::Stop) => {
                if let Some(Resource::Vm(after)) = &change.after {
                    keep = Some(after.clone());
                }
            }
            // Nothing to look up: the resource says it all (or the phase is refused).
            (
                Resource::Vm(_)
                | Resource::Netns(_)
                | Resource::Pool(_)
                | Resource::Network(_)
                | Resource::Dhcp(_)
                | Resource::Firewall(_),
                _,
            )
            | (
                Resource::Volume(_) | Resource::Vlan(_),
                Phase::Start | Phase::Stop | Phase::Migrate,
            ) => {}
        }
        Ok(StepOrder {
            step: step.to_string(),
            phase: step.phase,
            resource,
            keep,
            places,
        })
    }

    fn pool(&self) -> Result<&Path, StepError> {
        self.places
            .pool
            .as_deref()
            .ok_or_else(|| self.missing("pool"))
    }

    fn bridge(&self) -> Result<&str, StepError> {
        self.places
            .bridge
            .as_deref()
            .ok_or_else(|| self.missing("network"))
    }

    fn missing(&self, what: &'static str) -> StepError {
        StepError::NoPlace {
            step: self.step.clone(),
            what,
        }
    }
}

fn disk_places(inventory: &Inventory, host: &str, vm: &Vm) -> Result<Vec<PathBuf>, StepError> {
    vm.disks
        .iter()
        .map(|disk| inventory.volume_path(host, disk))
        .collect()
}

fn nic_places(inventory: &Inventory, host: &str, vm: &Vm) -> Result<Vec<NicPlace>, StepError> {
    vm.nics
        .iter()
        .map(|nic| {
            let (network, vlan_id) = inventory.vlan(false, host, &nic.vlan)?;
            Ok(NicPlace {
                network: network.to_owned(),
                bridge: inventory.bridge(false, host, network)?.to_owned(),
                vlan_id,
                mac: nic.mac.clone(),
            })
        })
        .collect()
}

/// What a step that went well has to tell the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    tag = "note"
)]
pub enum StepNote {
    /// A deleted pool's directory is still there: vmctl did not make it (`files`
    /// empty), or it holds files vmctl did not make (their names, sorted).
    PoolDirKept {
        pool: String,
        path: PathBuf,
        files: Vec<String>,
    },
    /// The host's netns was removed: vmctl made it and nothing is left in it.
    NetnsRemoved { name: String },
    /// The host's netns was left to the projects that still use it.
    NetnsShared { name: String, projects: Vec<String> },
    /// A running VM moved here from host `from` in `total_ms`: `rounds` pre-copy
    /// rounds while it ran (`converged`: the expected pause came within `budget_ms`),
    /// then paused `pause_ms` (its save `save_ms` of it); `memory_bytes` of memory and
    /// state sent in all (`paused_bytes` of it during the pause) and `disk_bytes` of
    /// its disks (`disk_paused_bytes` of them, the blocks written during the copy,
    /// sent again in the pause; zero pages and holes are not sent).
    VmMigrated {
        name: String,
        from: String,
        pause_ms: u64,
        save_ms: u64,
        total_ms: u64,
        rounds: u32,
        converged: bool,
        budget_ms: u64,
        memory_bytes: u64,
        paused_bytes: u64,
        disk_bytes: u64,
        disk_paused_bytes: u64,
    },
    /// A volume was copied here from host `from` (its data, `bytes` of it; holes are
    /// not sent).
    VolumeMoved {
        name: String,
        from: String,
        bytes: u64,
    },
}

/// Carries out `step` of `plan` on its host.
pub fn run_step(
    ctx: &HostContext<'_>,
    inventory: &Inventory,
    plan: &Plan,
    step: &Step,
) -> Result<Option<StepNote>, StepError> {
    run_order(ctx, &StepOrder::of(inventory, plan, step)?)
}

/// Carries out `order` on this host; what it has to say.
pub fn run_order(ctx: &HostContext<'_>, order: &StepOrder) -> Result<Option<StepNote>, StepError> {
    let project = ctx.project;
    let state_dir = ctx.state_dir;
    let mut note = None;
    match (&order.resource, order.phase) {
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
            Released::Removed => {
                note = Some(StepNote::NetnsRemoved {
                    name: n.name.clone(),
                })
            }
            Released::Shared { projects } => {
                note = Some(StepNote::NetnsShared {
                    name: n.name.clone(),
                    projects,
                })
            }
            Released::NotOurs | Released::Gone => {}
        },
        // A namespace has nothing to change in place: its name is what it is.
        (Resource::Netns(_), Phase::Update) => {}
        (Resource::Pool(p), Phase::Create) => {
            pool::create_pool(state_dir, project, &p.name, &p.path)?;
        }
        (Resource::Pool(p), Phase::Delete) => {
            let files = match pool::delete_pool(state_dir, project, &p.name, &p.path)? {
                PoolDeleted::KeptForeignFiles { files } => Some(files),
                PoolDeleted::KeptNotOurs => Some(Vec::new()),
                PoolDeleted::Removed | PoolDeleted::Absent => None,
            };
            note = files.map(|files| StepNote::PoolDirKept {
                pool: p.name.clone(),
                path: p.path.clone(),
                files,
            });
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
            let spec = VolumeSpec {
                name: &v.name,
                size: v.size,
                from: v.from.as_deref(),
                source: order.places.image.as_deref(),
                prevent_destroy: v.prevent_destroy,
                cancel: Some(ctx.cancel),
            };
            volume::create_volume(project, order.pool()?, &spec)?;
        }
        (Resource::Volume(v), Phase::Update) => {
            let pool_path = order.pool()?;
            volume::grow_volume(project, pool_path, &v.name, v.size)?;
            volume::set_prevent_destroy(project, pool_path, &v.name, v.prevent_destroy)?;
        }
        (Resource::Volume(v), Phase::Delete) => {
            volume::delete_volume(project, order.pool()?, &v.name)?;
        }
        (Resource::Vlan(v), Phase::Create | Phase::Update) => {
            let bridge = order.bridge()?;
            let create = order.phase == Phase::Create;
            Netlink::run(ctx.netns(), |nl| {
                if create {
                    vlan::add_vlan(nl, project, &v.network, bridge, v.id)?;
                }
                vlan::set_gateway(nl, project, &v.network, bridge, v.id, v.gateway.as_deref())?;
                vxlan::set_tunnel(nl, project, &v.network, bridge, v.id, v.vxlan.as_ref())?;
                if create {
                    reattach_taps(ctx, nl, &v.name, &v.network, bridge, v.id)?;
                }
                Ok::<_, StepError>(())
            })?;
        }
        (Resource::Vlan(v), Phase::Delete) => {
            let bridge = order.bridge()?;
            Netlink::run(ctx.netns(), |nl| {
                vlan::delete_vlan(nl, project, &v.network, bridge, v.id)
            })?;
        }
        (Resource::Dhcp(d), Phase::Create | Phase::Update) => {
            let files = d.files.as_ref().ok_or_else(|| StepError::DhcpFiles {
                vlan: d.name.clone(),
            })?;
            dhcp::ensure(state_dir, project, ctx.netns(), &d.name, files)?;
        }
        (Resource::Dhcp(d), Phase::Delete) => dhcp::delete(state_dir, project, &d.name)?,
        (Resource::Vm(vm), Phase::Create) if vm.state == VmState::Running => {
            start_vm(ctx, &order.places, vm, None)?;
        }
        (Resource::Vm(vm), Phase::Create) => {
            vms::write_record(&ctx.vm_host(), vm, false)?;
        }
        (Resource::Vm(vm), Phase::Start) => start_vm(ctx, &order.places, vm, None)?,
        (Resource::Vm(vm), Phase::Update) => {
            vms::update_vm(&ctx.vm_host(), vm)?;
            if vm.state == VmState::Running {
                reattach_vm_taps(ctx, &order.places, vm)?;
                // A move that did not finish left it paused here: it runs on.
                vms::migrate::resume_if_paused(&ctx.vm_host(), &vm.name)?;
            }
        }
        (Resource::Vm(vm), Phase::Stop) => {
            vms::stop_vm(&ctx.vm_host(), &vm.name, ctx.stop_timeout)?;
            delete_taps(ctx, &vm.name)?;
            // The record keeps what the config says now (the in-place attributes).
            if let Some(after) = &order.keep {
                vms::write_record(&ctx.vm_host(), after, false)?;
            }
        }
        (Resource::Vm(vm), Phase::Delete) => {
            vms::delete_vm(&ctx.vm_host(), &vm.name, ctx.stop_timeout)?;
            delete_taps(ctx, &vm.name)?;
        }
        (Resource::Firewall(f), Phase::Create | Phase::Update) => {
            firewall::apply(state_dir, project, ctx.netns(), f)?;
        }
        (Resource::Firewall(_), Phase::Delete) => {
            firewall::delete(state_dir, project, ctx.netns())?;
        }
        // A pool has nothing to change in place: its path and type force a replace.
        (Resource::Pool(_), Phase::Update) => {}
        // Only VMs start and stop; a plan that says otherwise was not made by the planner.
        (
            Resource::Netns(_)
            | Resource::Pool(_)
            | Resource::Network(_)
            | Resource::Volume(_)
            | Resource::Vlan(_)
            | Resource::Dhcp(_)
            | Resource::Firewall(_),
            Phase::Start | Phase::Stop,
        ) => {
            return Err(StepError::NotAVm {
                step: order.step.clone(),
            })
        }
        // The target's half of a VM's move: started from what its old host saved
        // (the controller has put it in this host's `migrations/<vm>/in`).
        (Resource::Vm(vm), Phase::Migrate) => {
            let incoming = vms::migrate::incoming(&ctx.vm_host(), &vm.name);
            start_vm(ctx, &order.places, vm, Some(&incoming))?;
            vms::migrate::discard(&ctx.vm_host(), &vm.name)?;
        }
        (_, Phase::Migrate) => {
            return Err(StepError::NotAVm {
                step: order.step.clone(),
            })
        }
    }
    Ok(note)
}

/// Makes the taps of `vm` and starts its process.
fn start_vm(
    ctx: &HostContext<'_>,
    places: &Places,
    vm: &Vm,
    restore: Option<&Path>,
) -> Result<(), StepError> {
    if places.disks.len() != vm.disks.len() || places.nics.len() != vm.nics.len() {
        return Err(StepError::Places {
            vm: vm.name.clone(),
        });
    }
    let mut devices = VmDevices {
        disks: places.disks.clone(),
        kernel: places.kernel.clone(),
        initrd: places.initrd.clone(),
        ..VmDevices::default()
    };
    if !places.nics.is_empty() {
        let taps = Netlink::run(ctx.netns(), |nl| {
            let mut taps = Vec::new();
            for (i, nic) in places.nics.iter().enumerate() {
                let port = TapPort {
                    network: &nic.network,
                    bridge: &nic.bridge,
                    vlan_id: nic.vlan_id,
                };
                taps.push(tap::create_tap(nl, ctx.project, &vm.name, i, port)?);
            }
            Ok::<_, StepError>(taps)
        })?;
        devices.nics = taps
            .into_iter()
            .zip(places.nics.iter().map(|n| n.mac.clone()))
            .collect();
    }
    vms::start_vm_from(&ctx.vm_host(), vm, &devices, restore)?;
    Ok(())
}

/// Puts the running `vm`'s existing taps back on their VLANs (tap drift repaired in
/// place; a deleted tap restarts the VM instead, see `vmctl_planner::diff`).
fn reattach_vm_taps(ctx: &HostContext<'_>, places: &Places, vm: &Vm) -> Result<(), StepError> {
    if places.nics.len() != vm.nics.len() {
        return Err(StepError::Places {
            vm: vm.name.clone(),
        });
    }
    if places.nics.is_empty() {
        return Ok(());
    }
    Netlink::run(ctx.netns(), |nl| {
        for (i, nic) in places.nics.iter().enumerate() {
            let port = TapPort {
                network: &nic.network,
                bridge: &nic.bridge,
                vlan_id: nic.vlan_id,
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
        let Ok(Some(record)) = vms::read_record(ctx.state_dir, ctx.project, &t.vm) else {
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
            let observed = vms::observe_vm(ctx.state_dir, ctx.project, &t.vm)?;
            // Stopped: vmctl stopped it and no VMM runs (a VM vmctl left running whose
            // VMM is gone is crashed, and keeps its taps).
            let orphan = observed.is_none_or(|vm| vm.status == vmctl_planner::VmStatus::Stopped);
            if orphan {
                tap::delete_tap(nl, ctx.project, &t.vm, t.nic)?;
                deleted.push(t.ifname);
            }
        }
        Ok::<_, StepError>(deleted)
    })
}
