//! What a host says of one project, with no config: [`gather`] answers a
//! `FactsRequest` with `HostFacts` (both `vmctl_planner::facts`: the wire format, and
//! the types the planner matches to the config) — pools, volumes, networks, VLANs,
//! taps, tunnels, VMs and their processes, the netns, the host's capacity, and every
//! record that cannot be read with what to do about it. A request of another format is
//! refused ([`FactsError::Format`]), and so are facts of another format a remote host
//! answers with ([`check_answer`]).
//!
//! A record that cannot be read is named here (a pool by the request's pools when its
//! index entry does not name it) and gets its repair hint here, because only the host
//! knows who runs vmctl there and which VMM holds a VM's lock.

use std::path::Path;

use vmctl_planner::facts::{FactsRequest, HostFacts, FACTS_FORMAT};
use vmctl_planner::live::Unreadable;
use vmctl_planner::ResourceKind;

use super::net::netns::{self, NetnsError};
use super::observe::{observe_host, HostSpec, ObserveError};
use super::records::{BadRecord, Cause};
use super::volume;
use crate::vms::{self, VmError, VmPaths};

/// Errors of gathering a host's facts.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error("cannot observe the VMs")]
    ObserveVms(#[source] VmError),
    #[error("cannot observe the network namespace")]
    Netns(#[source] NetnsError),
    #[error("cannot observe the project's nftables table or the default route")]
    Firewall(#[source] super::firewall::FirewallError),
    #[error("the request is of format {found}; this vmctl speaks format {FACTS_FORMAT}")]
    Format { found: u32 },
    #[error(
        "the host answered with facts of format {found}; this vmctl reads format {FACTS_FORMAT}"
    )]
    AnswerFormat { found: u32 },
    #[error("cannot observe the DHCP servers")]
    Dhcp(#[source] super::dhcp::DhcpError),
    /// A remote host's agent could not say (its words).
    #[error("{message}")]
    Remote { message: String },
}

/// Observes `request.project` on this machine: disk, netlink and the VMs in parallel.
pub fn gather(request: &FactsRequest) -> Result<HostFacts, FactsError> {
    if request.format_version != FACTS_FORMAT {
        return Err(FactsError::Format {
            found: request.format_version,
        });
    }
    let project = request.project.as_str();
    let state_dir = request.state_dir.as_path();
    let pool_paths: Vec<&Path> = request.pools.iter().map(|p| p.path.as_path()).collect();
    let spec = HostSpec {
        project,
        state_dir,
        netns: request.netns.as_deref(),
        pool_paths: &pool_paths,
    };
    let (observed, found) = std::thread::scope(|scope| {
        let found = scope.spawn(|| vms::observe_vms(state_dir, project));
        let observed = observe_host(&spec);
        let found = found
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (observed, found)
    });
    let (mut facts, mut bad) = observed?;
    let (vms, bad_vms) = found.map_err(FactsError::ObserveVms)?;
    bad.extend(bad_vms.into_iter().map(|b| (ResourceKind::Vm, b)));
    let euid = euid();
    facts.vms = vms;
    facts.unreadable = bad
        .iter()
        .map(|(kind, record)| unreadable(request, *kind, record, euid))
        .collect();
    facts.netns = match request.netns.as_deref() {
        Some(name) => netns::observe(state_dir, project, name).map_err(FactsError::Netns)?,
        None => None,
    };
    facts.dhcp = super::dhcp::observe(state_dir, project).map_err(FactsError::Dhcp)?;
    // The project's table and the default route live in the netns: none before it
    // exists.
    if request.netns.is_none() || facts.netns.is_some() {
        let netns = request.netns.as_deref();
        facts.firewall =
            super::firewall::observe(state_dir, project, netns).map_err(FactsError::Firewall)?;
        facts.default_route =
            super::firewall::default_route(netns).map_err(FactsError::Firewall)?;
    }
    facts.reported = super::proc::host_report();
    facts.cpu_features = super::proc::cpu_features();
    if let Some(origin) = &request.origin {
        facts.orphans = super::origin::orphans(state_dir, project, origin);
    }
    Ok(facts)
}

/// `facts` as a host answered them, when they are of this build's format.
pub fn check_answer(facts: HostFacts) -> Result<HostFacts, FactsError> {
    if facts.format_version == FACTS_FORMAT {
        Ok(facts)
    } else {
        Err(FactsError::AnswerFormat {
            found: facts.format_version,
        })
    }
}

/// The effective uid vmctl runs as: a hint says "run it as root" only when it is not.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// A bad record as the planner shows it: named (a pool by the request, from its
/// directory, when the index did not name it), with what to do.
fn unreadable(
    request: &FactsRequest,
    kind: ResourceKind,
    bad: &BadRecord,
    euid: u32,
) -> Unreadable {
    let mut name = bad.name.clone();
    if name.is_empty() {
        let dir = bad.path.parent().unwrap_or(&bad.path);
        name = request
            .pools
            .iter()
            .find(|p| p.path == dir)
            .map_or_else(|| dir.display().to_string(), |p| p.name.clone());
    }
    Unreadable {
        kind,
        help: repair_help(request, kind, &name, bad, euid),
        name,
        project: request.project.clone(),
        path: bad.path.clone(),
        error: bad.error.clone(),
    }
}

/// What the user running vmctl (as `euid`) can do about `bad`, the record of `kind`
/// `name`.
fn repair_help(
    request: &FactsRequest,
    kind: ResourceKind,
    name: &str,
    bad: &BadRecord,
    euid: u32,
) -> String {
    let path = bad.path.display();
    let what = format!("{kind} {name:?}");
    let project = &request.project;
    match bad.cause {
        Cause::Denied if euid == 0 => format!(
            "vmctl runs as root and still cannot read {path}: check what denies it (`ls -l {path}`, a read-only or network mount, an LSM policy); until then vmctl leaves {what} alone"
        ),
        Cause::Denied => format!(
            "vmctl reads the host's state dir and pools as root: run it as root (now it runs as uid {euid})"
        ),
        Cause::Newer => format!(
            "{path} was written by a newer vmctl: manage this host with that vmctl (or a newer one); this one leaves {what} alone"
        ),
        Cause::NotRegular => format!(
            "vmctl never follows or changes a symlink or other non-regular file in a pool: remove {path} (or move it away) and apply again to create {what}; until then vmctl leaves it alone"
        ),
        Cause::Stray => format!(
            "{path} is not a VM state dir vmctl made: move it away or remove it; vmctl leaves {what} alone until then"
        ),
        Cause::Corrupt | Cause::Io => match kind {
            ResourceKind::Vm => {
                let paths = VmPaths::new(&request.state_dir, project, name);
                format!(
                    "restore {path} from a backup, or make vmctl forget the VM: {}; the next apply creates it anew. Until then vmctl leaves {what} alone",
                    forget_vm(&paths, vms::vmm_pid(&paths))
                )
            }
            ResourceKind::Volume => {
                let pool = bad.path.parent().unwrap_or(&bad.path);
                format!(
                    "restore the marker {path} (JSON: {{\"project\": {project:?}, \"name\": {name:?}}}), or make vmctl forget the volume: move {} and the marker out of the pool; the next apply then makes a new volume in its place. Until then vmctl leaves {what} alone",
                    volume::volume_path(pool, name).display()
                )
            }
            ResourceKind::Pool => format!(
                "restore the marker {path} (JSON: {{\"project\": {project:?}, \"name\": {name:?}, \"kind\": \"dir\"}}) or remove it and apply again (vmctl then adopts the directory); until then vmctl leaves {what} and its volumes alone"
            ),
            ResourceKind::Netns
            | ResourceKind::Network
            | ResourceKind::Vlan
            | ResourceKind::Dhcp
            | ResourceKind::Firewall => {
                format!("check {path}; until then vmctl leaves {what} alone")
            }
        },
    }
}

/// How to make vmctl forget the VM at `paths` whose VMM is `vmm` (the holder of its
/// lock, never the pid file's word: that may name any process).
fn forget_vm(paths: &VmPaths, vmm: Option<u32>) -> String {
    let dir = paths.dir.display();
    match vmm {
        Some(pid) => format!(
            "its VMM still runs (pid {pid}, the holder of {}): stop it (`kill {pid}`), then remove {dir}",
            paths.lock.display()
        ),
        None => format!(
            "no VMM runs for it (none holds {}): remove {dir}",
            paths.lock.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmctl_planner::facts::PoolProbe;

    fn request() -> FactsRequest {
        // Never a real state dir: the hints ask the host who holds a VM's lock, and a
        // lab running on this machine must not change what a test sees.
        let mut request =
            FactsRequest::new("lab", Path::new("/nonexistent/vmctl-test/state"), None);
        request.pools.push(PoolProbe {
            name: "fast".into(),
            path: "/nonexistent/vmctl-test/fast".into(),
        });
        request
    }

    #[test]
    fn repair_hints_fit_the_cause_and_the_user() {
        let request = request();
        let bad = |cause| BadRecord {
            name: "web-1".into(),
            path: "/nonexistent/vmctl-test/state/lab/vms/web-1/spec.json".into(),
            error: "boom".into(),
            cause,
        };
        let help = |kind, cause, euid| repair_help(&request, kind, "web-1", &bad(cause), euid);
        let vm = ResourceKind::Vm;
        // Root is never told to run as root.
        assert!(!help(vm, Cause::Denied, 0).contains("run it as root"));
        assert!(help(vm, Cause::Denied, 0).contains("runs as root and still cannot read"));
        assert!(help(vm, Cause::Denied, 1000).contains("run it as root (now it runs as uid 1000)"));
        let corrupt = help(vm, Cause::Corrupt, 0);
        assert!(
            corrupt.contains("no VMM runs for it (none holds /nonexistent/vmctl-test/state/lab/vms/web-1/vmm.lock): remove /nonexistent/vmctl-test/state/lab/vms/web-1;"),
            "{corrupt}"
        );
        assert!(!corrupt.contains("vmm.pid"), "{corrupt}");
        assert!(help(vm, Cause::Newer, 0).contains("written by a newer vmctl"));
        assert!(help(vm, Cause::Stray, 0).contains("not a VM state dir vmctl made"));
        let volume = help(ResourceKind::Volume, Cause::Corrupt, 0);
        assert!(volume.contains("restore the marker"), "{volume}");
        assert!(
            volume.contains("/nonexistent/vmctl-test/state/lab/vms/web-1/web-1.raw"),
            "{volume}"
        );
        let pool = help(ResourceKind::Pool, Cause::Corrupt, 0);
        assert!(pool.contains("\"kind\": \"dir\""), "{pool}");
    }

    #[test]
    fn a_pool_the_index_does_not_name_is_named_by_the_request() {
        let bad = BadRecord {
            name: String::new(),
            path: "/nonexistent/vmctl-test/fast/.vmctl.json".into(),
            error: "boom".into(),
            cause: Cause::Corrupt,
        };
        let named = unreadable(&request(), ResourceKind::Pool, &bad, 0);
        assert_eq!(named.name, "fast");
        assert!(named.help.contains("pool \"fast\""), "{}", named.help);
        let elsewhere = BadRecord {
            path: "/nonexistent/vmctl-test/slow/.vmctl.json".into(),
            ..bad
        };
        let named = unreadable(&request(), ResourceKind::Pool, &elsewhere, 0);
        assert_eq!(named.name, "/nonexistent/vmctl-test/slow");
    }

    #[test]
    fn forgetting_a_vm_names_its_lock_holder_never_the_pid_file() {
        let paths = VmPaths::new(Path::new("/s"), "lab", "web-1");
        let running = forget_vm(&paths, Some(4242));
        assert!(
            running.contains("its VMM still runs (pid 4242, the holder of /s/lab/vms/web-1/vmm.lock): stop it (`kill 4242`), then remove /s/lab/vms/web-1"),
            "{running}"
        );
        let gone = forget_vm(&paths, None);
        assert!(gone.starts_with("no VMM runs for it"), "{gone}");
        assert!(!gone.contains("kill"), "{gone}");
    }

    #[test]
    fn a_request_of_another_format_is_refused() {
        let mut request = request();
        request.format_version = FACTS_FORMAT + 1;
        let err = gather(&request).unwrap_err();
        let found = format!("the request is of format {}", FACTS_FORMAT + 1);
        assert!(err.to_string().contains(&found), "{err}");
    }

    #[test]
    fn a_format_4_request_or_answer_is_refused_it_knows_no_dhcp_servers() {
        assert_eq!(FACTS_FORMAT, 5);
        let mut request = request();
        request.format_version = 4;
        assert!(matches!(
            gather(&request),
            Err(FactsError::Format { found: 4 })
        ));
        let old = HostFacts {
            format_version: 4,
            ..HostFacts::default()
        };
        assert!(matches!(
            check_answer(old),
            Err(FactsError::AnswerFormat { found: 4 })
        ));
    }

    #[test]
    fn facts_of_another_format_are_refused() {
        let ours = HostFacts::default();
        assert!(check_answer(ours).is_ok());
        let theirs = HostFacts {
            format_version: FACTS_FORMAT + 1,
            ..HostFacts::default()
        };
        let err = check_answer(theirs).unwrap_err();
        let found = format!("facts of format {}", FACTS_FORMAT + 1);
        assert!(err.to_string().contains(&found), "{err}");
        // An older agent (format 4: no firewall, no default route) is refused too: its
        // silence about the table would read as "no table".
        let older = HostFacts {
            format_version: 4,
            ..HostFacts::default()
        };
        let err = check_answer(older).unwrap_err();
        assert!(err.to_string().contains("facts of format 4"), "{err}");
    }
}
