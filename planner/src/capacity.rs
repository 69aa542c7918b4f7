//! The capacity rules at plan time, for a host that declares no `cpus` or no `memory`:
//! the schema checks declared numbers when the config is loaded; here the same rules
//! (`vmctl_schema::capacity::excesses`) apply to what the host reports (its online
//! CPUs, its `MemTotal`), as REFERENCE.md ("Capacity") documents.

use miette::Diagnostic;
use thiserror::Error;
use vmctl_schema::capacity::{excesses, Usage};
use vmctl_schema::Config;

use crate::live::LiveFile;

/// A host whose running VMs need more than it reports.
#[derive(Debug, Error, Diagnostic, PartialEq)]
#[error("host {host:?} is over capacity: {what} (as the host reports: {reported})")]
#[diagnostic(code(vmctl::plan::over_capacity), help("{help}"))]
pub struct CapacityError {
    pub host: String,
    pub what: String,
    pub reported: String,
    pub help: String,
}

/// Every capacity rule broken on a host of `config` that leaves `cpus` or `memory` to
/// what it reports in `live`.
pub fn check(config: &Config, live: &LiveFile) -> Vec<CapacityError> {
    let mut errors = Vec::new();
    for host in &config.hosts {
        if host.cpus.is_some() && host.memory.is_some() {
            continue;
        }
        let Some(reported) = live.host(&host.name).reported else {
            continue;
        };
        // Declared numbers were checked when the config was loaded.
        let cpus = host.cpus.is_none().then_some(reported.cpus);
        let memory = host.memory.is_none().then_some(reported.memory);
        let usage = Usage::of_host(config, &host.name);
        for excess in excesses(host, cpus, memory, &usage) {
            errors.push(CapacityError {
                host: host.name.clone(),
                what: excess.what,
                reported: format!(
                    "{} CPUs online, {} of memory",
                    reported.cpus,
                    vmctl_schema::capacity::human(reported.memory)
                ),
                help: format!(
                    "{}; or declare the host's `{}` if vmctl should plan with another number",
                    excess.help, excess.field
                ),
            });
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{HostReport, LiveState};
    use crate::testdata::quickstart;

    fn reporting(cpus: u32, memory: u64) -> LiveFile {
        let mut live = LiveFile::default();
        let state = LiveState {
            reported: Some(HostReport { cpus, memory }),
            ..LiveState::default()
        };
        live.hosts.insert("local".into(), state);
        live
    }

    #[test]
    fn a_host_without_cpus_or_memory_is_checked_against_what_it_reports() {
        // quickstart: three running VMs, 1 vCPU and 256 MiB each; its host declares
        // neither cpus nor memory.
        let config = quickstart();
        assert_eq!(config.hosts[0].cpus, None);
        assert!(check(&config, &reporting(2, 1 << 30)).is_empty());
        assert!(check(&config, &LiveFile::default()).is_empty());

        // One CPU allows 1.5 vCPUs; 512 MiB less 8% holds fewer than three VMs.
        let errors = check(&config, &reporting(1, 512 << 20));
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[0].what.contains("need 768MiB of memory"),
            "{errors:#?}"
        );
        assert!(
            errors[1].what.contains("3 vCPUs, it allows 1.5"),
            "{errors:#?}"
        );
        assert!(errors[1].reported.contains("1 CPUs online"), "{errors:#?}");

        // A declared number is the config's (checked at load), not the host's.
        let mut declared = config.clone();
        declared.hosts[0].cpus = Some(8);
        let errors = check(&declared, &reporting(1, 512 << 20));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].what.contains("memory"), "{errors:#?}");

        // Stopped VMs need nothing.
        let mut stopped = config;
        for vm in &mut stopped.vms {
            vm.state = vmctl_schema::VmState::Stopped;
        }
        assert!(check(&stopped, &reporting(1, 64 << 20)).is_empty());
    }

    #[test]
    fn plan_fails_on_it() {
        let config = quickstart();
        let mut live = LiveFile::applied(&config);
        live.hosts.get_mut("local").unwrap().reported = Some(HostReport {
            cpus: 1,
            memory: 64 << 30,
        });
        let errors = crate::plan(&config, &live, &crate::PlanOptions::default()).unwrap_err();
        assert!(
            matches!(&errors.errors[..], [crate::PlanError::Capacity(_)]),
            "{errors:#?}"
        );
    }
}
