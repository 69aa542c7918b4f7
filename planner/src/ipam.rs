//! Addresses at plan time: every NIC on a VLAN with a subnet gets its address here,
//! before the diff, so the plan shows it and the apply starts the VM with it.
//!
//! 1. A declared `ip` is the NIC's address (the schema checked it against its subnet).
//! 2. Else the address the NIC already has on its host (its VM's record, by VM name and
//!    NIC index, on the same VLAN), while it is still usable in the VLAN's subnet: an
//!    address stays with its NIC for the NIC's life.
//! 3. Else the lowest free address of the subnet (not the network, broadcast or gateway
//!    address, not declared, not kept by another NIC), NICs taken by VM name, then NIC
//!    index, so adding, removing or renumbering other VMs never moves one.
//!
//! Addresses held by VMs the config no longer has are free: the plan deletes those VMs,
//! and a VM created with such an address waits for that delete (the address is one of
//! the VM's claims, [`crate::plan::Resource::claims`]). A declared address that another
//! NIC keeps (rule 2) is an error naming both. A VLAN whose network spans hosts has one
//! subnet: the live addresses of every host of the config count.
//!
//! A VM with `ip-cmdline` gets its kernel argument (`ip=…`) from its first NIC here.
//!
//! A host left out with `--exclude-host` is not observed: what its VMs hold is unknown,
//! so a NIC that needs a new address on a VLAN that host is on is an error
//! ([`IpamError::HostExcluded`]); kept and declared addresses elsewhere are planned.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use miette::Diagnostic;
use thiserror::Error;
use vmctl_schema::addresses::{to_number, Subnet};
use vmctl_schema::{Config, Vm};

use crate::live::LiveFile;

/// Why the NICs of the config cannot all have an address.
#[derive(Debug, Error, Diagnostic, PartialEq)]
pub enum IpamError {
    /// A declared address that another NIC holds and keeps.
    #[error("address {address} declared for NIC {nic} of VM {vm:?} is held by NIC {holder_nic} of VM {holder:?} on host {host:?}, which keeps it")]
    #[diagnostic(
        code(vmctl::plan::address_taken),
        help("declare another address for VM {vm:?}, or give VM {holder:?} a declared address of its own (or remove it) and apply that first")
    )]
    AddressTaken {
        address: IpAddr,
        vm: String,
        nic: usize,
        holder: String,
        holder_nic: usize,
        host: String,
    },

    /// A new address is needed on a VLAN that a host left out of the plan is on.
    #[error("NIC {nic} of VM {vm:?} needs an address on VLAN {vlan:?}, but host {host:?}, which is on that VLAN, is excluded from the plan: the addresses it holds are not known")]
    #[diagnostic(
        code(vmctl::plan::address_unknown),
        help("plan without `--exclude-host {host}`, or declare the NIC's address (`ip=\"…\"`) if you know it is free")
    )]
    HostExcluded {
        vlan: String,
        vm: String,
        nic: usize,
        host: String,
    },

    /// No free address left (the schema counts NICs against the subnet; this is what
    /// addresses kept on the hosts leave).
    #[error("no free address in subnet {subnet} of VLAN {vlan:?} for NIC {nic} of VM {vm:?}")]
    #[diagnostic(
        code(vmctl::plan::subnet_exhausted),
        help("give VLAN {vlan:?} a wider subnet, or declare addresses that the hosts do not hold")
    )]
    Exhausted {
        subnet: String,
        vlan: String,
        vm: String,
        nic: usize,
    },
}

/// Where a live NIC is: its VLAN, address and host.
struct Held<'a> {
    vlan: &'a str,
    ip: IpAddr,
    host: &'a str,
}

/// Every NIC's address (with whether it was allocated) and each `ip-cmdline` VM's
/// kernel argument, by the VM's index in the config: what [`Addresses::fill`] writes
/// into a copy of a VM. Kept apart from the config so that the diff fills each VM as
/// it copies it anyway, and no second copy of a large config is made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Addresses {
    /// Where each VM's NICs start in `nics`; empty when no VLAN has a subnet.
    start: Vec<usize>,
    nics: Vec<Option<(IpAddr, bool)>>,
    arguments: HashMap<usize, String>,
}

impl Addresses {
    fn new(config: &Config) -> Addresses {
        let mut start = Vec::with_capacity(config.vms.len());
        let mut total = 0;
        for vm in &config.vms {
            start.push(total);
            total += vm.nics.len();
        }
        Addresses {
            start,
            nics: vec![None; total],
            arguments: HashMap::new(),
        }
    }

    fn set(&mut self, vm: usize, nic: usize, ip: IpAddr, allocated: bool) {
        if let Some(slot) = self.start.get(vm).and_then(|s| self.nics.get_mut(s + nic)) {
            *slot = Some((ip, allocated));
        }
    }

    fn get(&self, vm: usize, nic: usize) -> Option<(IpAddr, bool)> {
        let s = self.start.get(vm)?;
        *self.nics.get(s + nic)?
    }

    /// Writes the addresses of the config's VM number `index` into `vm` (a copy of it).
    pub fn fill(&self, index: usize, vm: &mut Vm) {
        for (j, nic) in vm.nics.iter_mut().enumerate() {
            if let Some((ip, allocated)) = self.get(index, j) {
                nic.ip = Some(ip);
                nic.ip_allocated = allocated;
            }
        }
        if let Some(argument) = self.arguments.get(&index) {
            vm.ip_argument = Some(argument.clone());
        }
    }
}

/// `config` with every NIC's address filled in (`ip`, `ip_allocated`) and each
/// `ip-cmdline` VM's `ip_argument`, against what the hosts in `live` hold.
pub fn assign(config: &Config, live: &LiveFile) -> Result<Config, Vec<IpamError>> {
    let addresses = allocate(config, live)?;
    let mut out = config.clone();
    for (i, vm) in out.vms.iter_mut().enumerate() {
        addresses.fill(i, vm);
    }
    Ok(out)
}

/// The addresses of every NIC of `config`, against what the hosts in `live` hold.
pub fn allocate(config: &Config, live: &LiveFile) -> Result<Addresses, Vec<IpamError>> {
    allocate_excluding(config, live, &[])
}

/// [`allocate`] while the hosts `excluded` (`--exclude-host`) are not observed: their
/// VMs get no address here (nothing is planned for them), and a NIC that needs a new
/// address on a VLAN whose network is on an excluded host is an error, since that host
/// may hold any address of it.
pub fn allocate_excluding(
    config: &Config,
    live: &LiveFile,
    excluded: &[String],
) -> Result<Addresses, Vec<IpamError>> {
    // The VLANs an excluded host may hold addresses on, with that host.
    let mut unseen: HashMap<&str, &str> = HashMap::new();
    if !excluded.is_empty() {
        for vlan in &config.vlans {
            let network = config.networks.iter().find(|n| n.name == vlan.network);
            let host = network
                .into_iter()
                .flat_map(|n| n.on_hosts())
                .find(|h| excluded.contains(h));
            if let Some(host) = host {
                unseen.insert(&vlan.name, host);
            }
        }
    }
    let subnets: HashMap<&str, Subnet> = config
        .vlans
        .iter()
        .filter_map(|v| {
            let subnet = Subnet::of(v.subnet.as_deref(), v.gateway.as_deref())?;
            Some((v.name.as_str(), subnet))
        })
        .collect();
    if subnets.is_empty() {
        return Ok(Addresses::default());
    }
    let mut out = Addresses::new(config);
    let wanted: HashSet<&str> = config.vms.iter().map(|v| v.name.as_str()).collect();
    let mut held: HashMap<(&str, usize), Held<'_>> = HashMap::new();
    for host in &config.hosts {
        let vms = live.host(&host.name).vms.iter();
        for vm in vms.filter(|v| v.project == config.project && wanted.contains(v.name.as_str())) {
            for (j, nic) in vm.spec.nics.iter().enumerate() {
                if let Some(ip) = nic.ip {
                    let at = Held {
                        vlan: &nic.vlan,
                        ip,
                        host: &host.name,
                    };
                    held.insert((vm.name.as_str(), j), at);
                }
            }
        }
    }
    // Rule 1: declared addresses, by VLAN and number, with their NIC.
    let mut declared: HashMap<(&str, u128), (&str, usize)> = HashMap::new();
    let mut taken: HashMap<&str, HashSet<u128>> = HashMap::new();
    for (v, vm) in config.vms.iter().enumerate() {
        for (j, nic) in vm.nics.iter().enumerate() {
            if let (Some(ip), true) = (nic.ip, subnets.contains_key(nic.vlan.as_str())) {
                out.set(v, j, ip, false);
                let n = to_number(ip);
                declared.insert((&nic.vlan, n), (&vm.name, j));
                taken.entry(&nic.vlan).or_default().insert(n);
            }
        }
    }
    // Rule 2: live addresses kept; the rest wait for rule 3.
    let mut errors = Vec::new();
    let mut pending: Vec<(usize, usize)> = Vec::new();
    for (v, vm) in config.vms.iter().enumerate() {
        if excluded.contains(&vm.host) {
            continue;
        }
        for (j, nic) in vm.nics.iter().enumerate() {
            let Some(subnet) = subnets.get(nic.vlan.as_str()) else {
                continue;
            };
            if nic.ip.is_some() {
                continue;
            }
            let kept = held
                .get(&(vm.name.as_str(), j))
                .filter(|h| h.vlan == nic.vlan && subnet.check(h.ip).is_ok());
            let Some(h) = kept else {
                pending.push((v, j));
                continue;
            };
            let n = to_number(h.ip);
            if let Some(&(other, other_nic)) = declared.get(&(nic.vlan.as_str(), n)) {
                errors.push(IpamError::AddressTaken {
                    address: h.ip,
                    vm: other.to_owned(),
                    nic: other_nic,
                    holder: vm.name.clone(),
                    holder_nic: j,
                    host: h.host.to_owned(),
                });
                continue;
            }
            // A second NIC recorded with one address (a record edited by hand) gets
            // a new one.
            if !taken.entry(&nic.vlan).or_default().insert(n) {
                pending.push((v, j));
                continue;
            }
            out.set(v, j, h.ip, true);
        }
    }
    // Rule 3: the lowest free address, in (VM name, NIC index) order.
    pending.sort_by(|a, b| {
        (config.vms[a.0].name.as_str(), a.1).cmp(&(config.vms[b.0].name.as_str(), b.1))
    });
    let mut cursor: HashMap<&str, u128> = HashMap::new();
    for (v, j) in pending {
        let vlan = config.vms[v].nics[j].vlan.as_str();
        let Some(subnet) = subnets.get(vlan) else {
            continue;
        };
        if let Some(host) = unseen.get(vlan) {
            errors.push(IpamError::HostExcluded {
                vlan: vlan.to_owned(),
                vm: config.vms[v].name.clone(),
                nic: j,
                host: (*host).to_owned(),
            });
            continue;
        }
        let (first, last) = subnet.usable_range();
        let from = cursor.entry(vlan).or_insert(first);
        let taken = taken.entry(vlan).or_default();
        let free = (*from..=last)
            .find(|&n| !taken.contains(&n) && subnet.check(subnet.address(n)).is_ok());
        let Some(n) = free else {
            errors.push(IpamError::Exhausted {
                subnet: subnet.net.to_string(),
                vlan: vlan.to_owned(),
                vm: config.vms[v].name.clone(),
                nic: j,
            });
            *from = last.saturating_add(1);
            continue;
        };
        taken.insert(n);
        *from = n.saturating_add(1);
        out.set(v, j, subnet.address(n), true);
    }
    for (v, vm) in config
        .vms
        .iter()
        .enumerate()
        .filter(|(_, vm)| vm.ip_cmdline)
    {
        let argument = vm.nics.first().and_then(|nic| {
            let subnet = subnets.get(nic.vlan.as_str())?;
            let (ip, _) = out.get(v, 0)?;
            subnet.kernel_argument(ip, &vm.name)
        });
        if let Some(argument) = argument {
            out.arguments.insert(v, argument);
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests;
