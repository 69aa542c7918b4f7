//! Capacity of hosts that declare `cpus` or `memory`: the running VMs' memory must fit
//! in `memory × (1 − reserve-memory)`, their vCPUs in `cpus × cpu-overcommit`.

use super::{Index, Report};
use crate::diagnostics::SchemaError;
use crate::model::{Config, VmState};
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

pub fn check(config: &Config, spans: &Spans, index: &Index<'_>, report: &mut Report<'_>) {
    let mut memory = vec![0u128; config.hosts.len()];
    let mut cpus = vec![0u128; config.hosts.len()];
    let mut running: Vec<Vec<&str>> = vec![Vec::new(); config.hosts.len()];
    for vm in &config.vms {
        if vm.state != VmState::Running {
            continue;
        }
        let Some(&h) = index.hosts.get(vm.host.as_str()) else {
            continue;
        };
        memory[h] += u128::from(vm.memory);
        cpus[h] += u128::from(vm.cpus);
        running[h].push(&vm.name);
    }
    for (h, host) in config.hosts.iter().enumerate() {
        let Some(s) = spans.hosts.get(h) else {
            continue;
        };
        if index.hosts.get(host.name.as_str()) != Some(&h) {
            continue; // a doubled host, already reported
        }
        if let Some(total) = host.memory {
            let available = (total as f64 * (1.0 - host.reserve_memory)) as u128;
            if memory[h] > available {
                let need = u64::try_from(memory[h]).unwrap_or(u64::MAX);
                report.push(
                    s.file,
                    SchemaError::OverCapacity {
                        host: host.name.clone(),
                        what: format!(
                            "its running VMs need {} of memory, it gives {} ({} less {}% reserved)",
                            human(need),
                            human(available as u64),
                            human(total),
                            host.reserve_memory * 100.0
                        ),
                        span: s.field_or_name("memory", 0),
                        label: format!("{} available to VMs", human(available as u64)),
                        help: format!(
                            "running VMs on `{}`: {}; give them less memory, stop or move some, or raise `memory`",
                            host.name,
                            names(&running[h])
                        ),
                    },
                );
            }
        }
        if let Some(host_cpus) = host.cpus {
            let allowed = f64::from(host_cpus) * host.cpu_overcommit;
            if cpus[h] as f64 > allowed {
                report.push(
                    s.file,
                    SchemaError::OverCapacity {
                        host: host.name.clone(),
                        what: format!(
                            "its running VMs have {} vCPUs, it allows {allowed} ({host_cpus} CPUs × cpu-overcommit {})",
                            cpus[h], host.cpu_overcommit
                        ),
                        span: s.field_or_name("cpus", 0),
                        label: format!("{allowed} vCPUs allowed"),
                        help: format!(
                            "running VMs on `{}`: {}; give them fewer cpus, stop or move some, or raise `cpu-overcommit`",
                            host.name,
                            names(&running[h])
                        ),
                    },
                );
            }
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
