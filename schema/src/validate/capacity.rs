//! Capacity of hosts that declare `cpus` or `memory`: the running VMs' memory must fit
//! in `memory × (1 − reserve-memory)`, their vCPUs in `cpus × cpu-overcommit`. The
//! same rules ([`excesses`]) apply at plan time to what a host reports where it
//! declares neither (the planner's `capacity`).

use super::{Index, Report};
use crate::diagnostics::SchemaError;
use crate::model::{Config, Host, Vm, VmState};
use crate::spans::Spans;

/// Bytes as `58.9GiB`: one decimal, largest unit ≥ 1.
pub fn human(bytes: u64) -> String {
    let units = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in units {
        let scale = (1u64 << shift) as f64;
        if bytes as f64 >= scale {
            let value = bytes as f64 / scale;
            return if value.fract() == 0.0 {
                format!("{value}{unit}")
            } else {
                format!("{value:.1}{unit}")
            };
        }
    }
    format!("{bytes}B")
}

fn names(vms: &[&str]) -> String {
    const SHOWN: usize = 8;
    let mut out = vms
        .iter()
        .take(SHOWN)
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if vms.len() > SHOWN {
        out.push_str(&format!(" and {} more", vms.len() - SHOWN));
    }
    out
}

/// What the running VMs of one host need.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage<'a> {
    /// Bytes of memory.
    pub memory: u128,
    pub cpus: u128,
    /// Their names, in config order.
    pub running: Vec<&'a str>,
}

impl<'a> Usage<'a> {
    fn add(&mut self, vm: &'a Vm) {
        self.memory += u128::from(vm.memory);
        self.cpus += u128::from(vm.cpus);
        self.running.push(&vm.name);
    }

    /// What the VMs with `state "running"` on host `host` of `config` need.
    pub fn of_host(config: &'a Config, host: &str) -> Usage<'a> {
        let mut usage = Usage::default();
        let running = config.vms.iter().filter(|vm| vm.state == VmState::Running);
        for vm in running.filter(|vm| vm.host == host) {
            usage.add(vm);
        }
        usage
    }
}

/// One capacity rule a host breaks.
#[derive(Debug, Clone, PartialEq)]
pub struct Excess {
    /// The host setting the rule is about: `memory` or `cpus`.
    pub field: &'static str,
    pub what: String,
    pub label: String,
    pub help: String,
}

/// The capacity rules (REFERENCE.md, "Capacity") for `host` with `cpus` and `memory`
/// (declared, or what the host reports), against `usage`: every rule broken.
pub fn excesses(
    host: &Host,
    cpus: Option<u32>,
    memory: Option<u64>,
    usage: &Usage<'_>,
) -> Vec<Excess> {
    let mut out = Vec::new();
    if let Some(total) = memory {
        let available = (total as f64 * (1.0 - host.reserve_memory)) as u128;
        if usage.memory > available {
            let need = u64::try_from(usage.memory).unwrap_or(u64::MAX);
            out.push(Excess {
                field: "memory",
                what: format!(
                    "its running VMs need {} of memory, it gives {} ({} less {}% reserved)",
                    human(need),
                    human(available as u64),
                    human(total),
                    host.reserve_memory * 100.0
                ),
                label: format!("{} available to VMs", human(available as u64)),
                help: format!(
                    "running VMs on `{}`: {}; give them less memory, stop or move some, or raise `memory`",
                    host.name,
                    names(&usage.running)
                ),
            });
        }
    }
    if let Some(host_cpus) = cpus {
        let allowed = f64::from(host_cpus) * host.cpu_overcommit;
        if usage.cpus as f64 > allowed {
            out.push(Excess {
                field: "cpus",
                what: format!(
                    "its running VMs have {} vCPUs, it allows {allowed} ({host_cpus} CPUs × cpu-overcommit {})",
                    usage.cpus, host.cpu_overcommit
                ),
                label: format!("{allowed} vCPUs allowed"),
                help: format!(
                    "running VMs on `{}`: {}; give them fewer cpus, stop or move some, or raise `cpu-overcommit`",
                    host.name,
                    names(&usage.running)
                ),
            });
        }
    }
    out
}

pub fn check(config: &Config, spans: &Spans, index: &Index<'_>, report: &mut Report<'_>) {
    let mut usage = vec![Usage::default(); config.hosts.len()];
    for vm in &config.vms {
        if vm.state != VmState::Running {
            continue;
        }
        let Some(&h) = index.hosts.get(vm.host.as_str()) else {
            continue;
        };
        usage[h].add(vm);
    }
    for (h, host) in config.hosts.iter().enumerate() {
        let Some(s) = spans.hosts.get(h) else {
            continue;
        };
        if index.hosts.get(host.name.as_str()) != Some(&h) {
            continue; // a doubled host, already reported
        }
        for excess in excesses(host, host.cpus, host.memory, &usage[h]) {
            let here = s.field_or_name(excess.field, 0);
            let error = SchemaError::OverCapacity {
                host: host.name.clone(),
                what: excess.what,
                span: here.span,
                label: excess.label,
                help: excess.help,
            };
            report.push_in(&host.name, s, here, error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(64 << 30), "64GiB");
        assert_eq!(human((64u64 << 30) / 100 * 92), "58.9GiB");
        assert_eq!(human(512), "512B");
    }
}
