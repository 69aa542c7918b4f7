//! The CLI's side of the runtime: observing the config's hosts and taking their locks,
//! with every failure turned into a diagnostic (what, where, what to do).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use miette::{miette, MietteDiagnostic, Severity};
use vmctl_planner::facts::OrphanProject;
use vmctl_planner::{LiveFile, LiveState};
use vmctl_runtime::apply::StepError;
use vmctl_runtime::apply::{self, ApplyError, HostSeen, LiveError};
use vmctl_runtime::host::lock::LockError;
use vmctl_runtime::host::net::netns::{self, NetnsError};
use vmctl_runtime::hosts::{ConnectError, ConnectOptions, Fleet, HeldLock};
use vmctl_runtime::remote::ssh::{Control, SshOptions};
use vmctl_schema::Config;

use crate::error::CommandError;
use crate::render::Style;

/// `error` and its causes, one clause each: `cannot observe …: cannot read …: denied`.
pub use vmctl_runtime::hosts::wire::chain;

/// How vmctl reaches the hosts: what `plan`, `apply`, `destroy` and `status` share.
#[derive(Debug, Clone, clap::Args)]
pub struct Reach {
    /// Hosts observed and applied at once (the steps on one host: `--parallelism`).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub host_parallelism: u16,

    /// Leave this host out: it is not reached, observed or changed, and nothing is
    /// planned on it (e.g. while it is down). Repeatable.
    #[arg(long = "exclude-host", value_name = "HOST")]
    pub exclude_hosts: Vec<String>,

    /// An ssh config file for every ssh vmctl runs to reach remote hosts (`ssh -F`):
    /// their keys, known_hosts, ProxyJump. Without it, the user's own ssh config.
    #[arg(long, value_name = "FILE", env = "VMCTL_SSH_CONFIG")]
    pub ssh_config: Option<PathBuf>,

    /// Where each remote host's ssh connection is kept between runs, with a vmctl
    /// agent behind it on the host, so that the next run reuses both instead of
    /// connecting anew. By default `$XDG_RUNTIME_DIR/vmctl/ssh`, else
    /// `/run/vmctl/ssh` for root, else `$TMPDIR/vmctl-ssh-uid<UID>`; it must be a
    /// directory of yours that no one else may enter (made 0700 when missing). After
    /// a command returns, each host's agent ends 60 s after its last use and its
    /// connection 60 s after that (ssh's ControlPersist), or both at once with
    /// `ssh -O exit -S DIR/<socket> HOST`. `none`: one connection and one agent per
    /// host per run, both gone when the command returns.
    #[arg(long, value_name = "DIR|none", env = "VMCTL_SSH_CONTROL_DIR", value_parser = parse_control)]
    pub ssh_control_dir: Option<Control>,
}

/// `--ssh-control-dir`: `none`, or a directory.
pub fn parse_control(text: &str) -> Result<Control, String> {
    match text {
        "" => Err("give a directory, or `none` to keep no connection".to_owned()),
        "none" => Ok(Control::PerRun),
        dir => Ok(Control::Kept(PathBuf::from(dir))),
    }
}

/// How long a kept connection (and its agent, idle) outlives its last use: ssh's
/// ControlPersist.
pub const KEPT_FOR: Duration = Duration::from_secs(60);

impl Reach {
    /// Where this run's ssh connections live: `--ssh-control-dir`, else the default
    /// kept directory ([`vmctl_runtime::remote::ssh::default_kept_dir`]).
    pub fn control(&self) -> Control {
        self.ssh_control_dir
            .clone()
            .unwrap_or_else(|| Control::Kept(vmctl_runtime::remote::ssh::default_kept_dir()))
    }
}

/// Where the config at `path` is, absolute: its folder, or its file when it is one
/// file (two one-file configs in one folder are two configs). Each host records it as
/// where the project comes from (`vmctl_runtime::host::origin`).
pub fn config_origin(path: &Path) -> Option<PathBuf> {
    std::path::absolute(path).ok()
}

/// Reaches every host of `config`, loaded from `path`, for this run (the first host
/// that cannot be reached is the diagnostic).
pub fn connect(config: &Config, reach: &Reach, path: &Path) -> Result<Fleet, CommandError> {
    // A mistyped `--exclude-host` must not reach the host it meant to leave out.
    let unknown = vmctl_planner::target::check_hosts(config, &reach.exclude_hosts);
    if !unknown.is_empty() {
        let count = unknown.len();
        return Err(CommandError::Reports {
            reports: unknown.into_iter().map(miette::Report::new).collect(),
            summary: format!(
                "{count} --exclude-host name{} no host: nothing was reached",
                if count == 1 { " names" } else { "s name" }
            ),
        });
    }
    let vmctl = std::env::current_exe().map_err(|e| {
        CommandError::failed(format!("cannot find the vmctl binary to run VMs with: {e}"))
    })?;
    let control = reach.control();
    let options = ConnectOptions {
        vmctl,
        excluded: reach.exclude_hosts.clone(),
        ssh: SshOptions {
            config: reach.ssh_config.clone(),
            control_persist: match control {
                Control::Kept(_) => KEPT_FOR,
                Control::PerRun => SshOptions::default().control_persist,
            },
            ..SshOptions::default()
        },
        control,
        parallelism: usize::from(reach.host_parallelism),
        origin: config_origin(path),
    };
    let fleet = Fleet::connect(config, &options).map_err(connect_error)?;
    for s in fleet.shipped() {
        eprintln!(
            "Shipped vmctl ({}) to host {:?} in {:.1}s: {}",
            vmctl_schema::capacity::human(s.shipped.bytes),
            s.host,
            s.shipped.elapsed.as_secs_f64(),
            s.shipped.path.display()
        );
    }
    Ok(fleet)
}

/// One diagnostic per host that cannot be reached, naming it.
fn connect_error(errors: Vec<ConnectError>) -> CommandError {
    if let [ConnectError::ControlDir(e)] = errors.as_slice() {
        return CommandError::Reports {
            reports: vec![miette!(
                code = "vmctl::ssh::control_dir",
                help = control_help(e),
                "{e}"
            )],
            summary: "no remote host was reached: nothing was planned or changed".to_owned(),
        };
    }
    let count = errors.len();
    let reports: Vec<miette::Report> = errors
        .into_iter()
        .map(|e| {
            miette!(
                code = "vmctl::host::unreachable",
                help = reach_help(&e),
                "{}",
                chain(&e)
            )
        })
        .collect();
    let summary = match count {
        1 => "one host cannot be reached: nothing was planned or changed; leave it out with `--exclude-host NAME` to go on without it".to_owned(),
        n => format!("{n} hosts cannot be reached: nothing was planned or changed; leave them out with `--exclude-host NAME` to go on without them"),
    };
    CommandError::Reports { reports, summary }
}

/// What to do when the directory for the ssh connections cannot be used.
fn control_help(error: &vmctl_runtime::remote::ssh::ControlDirError) -> String {
    use vmctl_runtime::remote::ssh::ControlDirError;
    match error {
        ControlDirError::Kept { path, .. } => format!(
            "whoever can open the sockets in {path} can run commands on the hosts, so vmctl uses it only when it is a directory of yours that no one else may enter: remove it (vmctl makes it anew, mode 0700) or `chmod 700` it if it is yours; or name another with --ssh-control-dir DIR (VMCTL_SSH_CONTROL_DIR), or keep no connection with `--ssh-control-dir none`",
            path = path.display()
        ),
        ControlDirError::PerRun { .. } => "set TMPDIR to a directory this user may write in".to_owned(),
    }
}

/// What to do when a host cannot be reached over ssh.
fn reach_help(error: &ConnectError) -> String {
    let text = chain(error);
    if text.contains("Host key verification failed") || text.contains("host key") {
        "vmctl runs ssh with BatchMode and never accepts an unknown host key: add the host's key to known_hosts (`ssh HOST` once, or `ssh-keyscan`) or give an ssh config with `--ssh-config`".into()
    } else if text.contains("Permission denied") {
        "the host refused the key: authorize this user's key on the host (or the key named in the ssh config given with `--ssh-config`)".into()
    } else {
        "check that the host is up and `ssh HOST true` works from here with the same ssh config (`--ssh-config`, VMCTL_SSH_CONFIG); vmctl needs nothing on the host but sshd".into()
    }
}

/// Observes every host of `config` (in parallel), and warns about each resource whose
/// record cannot be read (the plan leaves it alone; the warning says how to repair it).
pub fn observe(config: &Config, fleet: &Fleet) -> Result<LiveFile, CommandError> {
    observe_detailed(config, fleet).map(apply::observe::into_live_file)
}

/// Like [`observe`], with each host's details (for `status`).
pub fn observe_detailed(
    config: &Config,
    fleet: &Fleet,
) -> Result<BTreeMap<String, HostSeen>, CommandError> {
    let hosts = apply::observe_detailed(config, fleet).map_err(observe_error)?;
    for (host, seen) in &hosts {
        warn_unreadable(config, host, &seen.live);
        warn_orphans(config, host, &seen.orphans);
    }
    Ok(hosts)
}

/// Warns about the other projects on `host` that came from this config's folder (a
/// renamed project's leftovers), naming what they still have. They are left alone.
fn warn_orphans(config: &Config, host: &str, orphans: &[OrphanProject]) {
    let style = Style::plain();
    for orphan in orphans {
        let mut what = Vec::new();
        if !orphan.vms.is_empty() {
            what.push(format!("vm {}", orphan.vms.join(", ")));
        }
        if !orphan.pools.is_empty() {
            what.push(format!("pool {}", orphan.pools.join(", ")));
        }
        let diagnostic = MietteDiagnostic::new(format!(
            "host {host:?} has resources of project {:?}, applied from this config ({}): {}",
            orphan.project,
            orphan.origin.display(),
            what.join("; ")
        ))
        .with_code("vmctl::plan::orphaned_project")
        .with_severity(Severity::Warning)
        .with_help(format!(
            "if project {:?} was renamed to {:?}, these are left over and vmctl will never touch them as {:?}: destroy them as project {:?} (set `project {:?}` back, `vmctl destroy`, then rename again), or remove them by hand",
            orphan.project, config.project, config.project, orphan.project, orphan.project
        ));
        eprint!("{}", style.diagnostic(&diagnostic));
    }
}

/// After an apply: an error when resources of the project were left alone because their
/// records cannot be read (the rest was applied; each was warned about with its repair),
/// so a CI job does not take a run that did not converge for a success.
pub fn left_alone(config: &Config, live: &LiveFile) -> Result<(), CommandError> {
    let names: Vec<String> = live
        .hosts
        .iter()
        .flat_map(|(host, state)| {
            state
                .unreadable
                .iter()
                .filter(|u| u.project == config.project)
                .map(move |u| format!("{} {:?} on host {host:?}", u.kind, u.name))
        })
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    Err(CommandError::Report(miette!(
        code = "vmctl::apply::left_alone",
        help = "repair or remove each record as its warning above says; the next apply then handles it",
        "everything else was applied, but {} left alone because its record cannot be read: {}",
        if names.len() == 1 { "one resource was" } else { "these resources were" },
        names.join(", ")
    )))
}

/// Warns about each resource of the project on `host` whose record cannot be read.
fn warn_unreadable(config: &Config, host: &str, state: &LiveState) {
    let style = Style::plain();
    for u in state
        .unreadable
        .iter()
        .filter(|u| u.project == config.project)
    {
        let diagnostic = MietteDiagnostic::new(format!(
            "cannot read the record of {} {:?} on host {host:?} ({}): {}",
            u.kind,
            u.name,
            u.path.display(),
            u.error
        ))
        .with_code("vmctl::host::unreadable_record")
        .with_severity(Severity::Warning)
        .with_help(u.help.clone());
        eprint!("{}", style.diagnostic(&diagnostic));
    }
}

/// The diagnostics of hosts that cannot be observed at all: one per host, naming it.
fn observe_error(errors: Vec<LiveError>) -> CommandError {
    let count = errors.len();
    let reports: Vec<miette::Report> = errors
        .into_iter()
        .map(|e| {
            miette!(
                code = "vmctl::host::observe",
                help = observe_help(apply::observe::euid()),
                "{}",
                chain(&e)
            )
        })
        .collect();
    match count {
        0 => CommandError::failed("observing the hosts failed"),
        1 => CommandError::Reports {
            reports,
            summary: "one host cannot be observed: nothing was planned or changed".into(),
        },
        n => CommandError::Reports {
            reports,
            summary: format!("{n} hosts cannot be observed: nothing was planned or changed"),
        },
    }
}

/// What to do when a host cannot be observed at all, for the user vmctl runs as: "run
/// it as root" only when it is not root.
fn observe_help(euid: u32) -> String {
    if euid == 0 {
        "vmctl runs as root and still cannot read the host's state dir, pools or network interfaces: the cause is above; check that path (its permissions, the mount it is on), or the netns named by the host's `netns`".into()
    } else {
        format!("vmctl reads the host's state dir, pools and network interfaces: run it as root (it runs as uid {euid}); a host's `netns` that does not exist yet is fine: apply makes it")
    }
}

/// What to do when the host's lock cannot be taken (not held by another vmctl), for the
/// user vmctl runs as.
fn lock_help(euid: u32) -> String {
    if euid == 0 {
        "vmctl keeps its lock in the host's state dir: the cause is above; check that the state dir is a writable local directory".into()
    } else {
        format!(
            "vmctl keeps its lock in the host's state dir: run it as root (it runs as uid {euid})"
        )
    }
}

/// Takes the lock of every host of `config`, waiting up to `timeout`.
pub fn lock(
    config: &Config,
    fleet: &Fleet,
    timeout: Duration,
) -> Result<Vec<HeldLock>, CommandError> {
    let hosts: Vec<&str> = config
        .hosts
        .iter()
        .map(|h| h.name.as_str())
        .filter(|h| !fleet.excludes(h))
        .collect();
    apply::lock_hosts(config, fleet, &hosts, timeout).map_err(|e| match &e {
        ApplyError::Lock {
            host,
            source:
                LockError::Held {
                    pid,
                    path,
                    kept_agent,
                    ..
                },
        } => {
            let holder = match (pid, kept_agent) {
                (Some(pid), true) => format!(
                    "another vmctl command, through vmctl's kept agent for host {host:?} (pid {pid}),"
                ),
                (Some(pid), false) => format!("another vmctl (pid {pid})"),
                (None, _) => "another vmctl".to_owned(),
            };
            let whose = if *kept_agent {
                " (held by the kept agent, which serves every vmctl command that reaches the host over its kept ssh connection: killing it ends them all; the lock goes when that command ends or is killed)"
            } else {
                ""
            };
            CommandError::Report(miette!(
                code = "vmctl::apply::locked",
                help = format!(
                    "wait for it to finish, or wait for it with `--lock-timeout 5m`; the lock is {}{whose}",
                    path.display()
                ),
                "{holder} is applying project {:?} on host {host:?}",
                config.project
            ))
        }
        _ => CommandError::Report(miette!(
            code = "vmctl::apply::lock",
            help = lock_help(apply::observe::euid()),
            "{}",
            chain(&e)
        )),
    })
}

/// After an apply or destroy: what the steps that went well had to say — which deleted
/// pools' directories were kept and why (vmctl removes a pool's directory only when it
/// made it and nothing else is in it), and what became of each network namespace the
/// plan deleted (removed, or kept for the projects that still use it).
pub fn print_notes(report: &apply::ApplyReport) {
    use vmctl_runtime::apply::StepNote;
    for (step, note) in &report.notes {
        let host = &step.host;
        match note {
            StepNote::PoolDirKept { pool, path, files } => {
                let why = if files.is_empty() {
                    "vmctl did not make it (it existed when the pool was created)".to_owned()
                } else {
                    format!("it holds files vmctl did not make: {}", files.join(", "))
                };
                println!(
                    "Kept the directory {} of pool {pool:?} on host {host:?}: {why}.",
                    path.display()
                );
            }
            StepNote::NetnsRemoved { name } => {
                println!("Removed network namespace {name:?} of host {host:?} (vmctl made it).");
            }
            StepNote::NetnsShared { name, projects } => println!(
                "Kept network namespace {name:?} of host {host:?}: project(s) {} still use it; the last one's destroy removes it.",
                projects.join(", ")
            ),
            StepNote::VmMigrated {
                name,
                from,
                pause_ms,
                save_ms,
                total_ms,
                rounds,
                converged,
                budget_ms,
                memory_bytes,
                paused_bytes,
                disk_bytes,
                disk_paused_bytes,
            } => {
                let human = vmctl_schema::capacity::human;
                let converged = if *converged {
                    String::new()
                } else {
                    format!(" — it did not converge (the guest wrote as fast as the move sent), so it paused longer than its {budget_ms} ms budget")
                };
                println!(
                    "Migrated VM {name:?} from host {from:?} to host {host:?} while it ran: paused {pause_ms} ms (its save {save_ms} ms) after {rounds} pre-copy round(s), {total_ms} ms in all{converged}; sent {} of memory and state ({} of it paused), {} of disks ({} of it paused).",
                    human(*memory_bytes),
                    human(*paused_bytes),
                    human(*disk_bytes),
                    human(*disk_paused_bytes)
                )
            }
            StepNote::VolumeMoved { name, from, bytes } => println!(
                "Copied volume {name:?} from host {from:?} to host {host:?}: {} of data (holes are not sent).",
                vmctl_schema::capacity::human(*bytes)
            ),
        }
    }
}

/// What to do about a failed step, when vmctl knows more than the error says.
pub fn step_help(error: &StepError) -> Option<String> {
    match error {
        StepError::Netns(NetnsError::InvalidName { .. }) => None,
        StepError::Netns(e) => Some(format!(
            "vmctl makes a host's netns as `ip netns add` does (in /run/netns) and marks it in {}: run it as root, or make the namespace yourself with `ip netns add NAME` ({e})",
            netns::MARKER_DIR
        )),
        StepError::Dhcp(e) => e.help(),
        StepError::NetnsInUse { name, .. } => Some(format!(
            "move or remove what is in it; or remove it with `ip netns delete {name}` once it is unused"
        )),
        StepError::Firewall(e) => e.help(),
        _ => None,
    }
}

/// A duration as people write it (humantime): `0`, `500ms`, `30s`, `90s`, `1m30s`,
/// `1.5s`, `5m`, `1h`; a bare number is seconds, as before.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is not a duration ({e}): write it like 0, 500ms, 1.5s, 90s, 1m30s or 1h")
    })
}

/// Prints every resource the hosts cannot take as they are (an interface of its name
/// that vmctl did not make, see `vmctl_runtime::host::net::conflicts`) as an error
/// diagnostic of that resource. Returns how many there were.
pub fn report_problems(live: &LiveFile, style: &crate::render::Style) -> usize {
    let mut count = 0;
    for (host, state) in &live.hosts {
        for problem in &state.problems {
            let report = miette!(
                code = "vmctl::plan::not_vmctls",
                help = problem.help.clone(),
                "{} on host {host:?}: {}",
                problem.resource,
                problem.message
            );
            eprint!("{}", style.diagnostic(report.as_ref()));
            eprintln!();
            count += 1;
        }
    }
    count
}

/// Under a plan: the files it will ship to remote hosts (the kernels, initrds and base
/// images its VMs and volumes name that a host's image cache lacks), with their sizes.
pub fn print_shipping(plan: &vmctl_planner::Plan, fleet: &Fleet) {
    use vmctl_planner::{Action, Resource};
    let mut seen = std::collections::HashSet::new();
    let mut lines = Vec::new();
    for change in &plan.changes {
        if !matches!(
            change.action,
            Action::Create | Action::Replace | Action::Start
        ) {
            continue;
        }
        let Some(host) = fleet.get(&change.host) else {
            continue;
        };
        let files: Vec<(&str, &std::path::Path)> = match &change.after {
            Some(Resource::Vm(vm)) => std::iter::once(("kernel", vm.kernel.as_path()))
                .chain(vm.initrd.as_deref().map(|i| ("initrd", i)))
                .collect(),
            Some(Resource::Volume(v)) => v
                .from
                .as_deref()
                .map(|f| ("image", f))
                .into_iter()
                .collect(),
            _ => Vec::new(),
        };
        for (what, path) in files {
            if !seen.insert((change.host.clone(), path.to_owned())) {
                continue;
            }
            match host.lacks(path) {
                Ok(Some(size)) => lines.push(format!(
                    "  {what} {} ({}) to host {:?}",
                    path.display(),
                    vmctl_schema::capacity::human(size),
                    change.host
                )),
                Ok(None) => {}
                Err(e) => lines.push(format!(
                    "  {what} {} to host {:?}: cannot tell whether it is there ({})",
                    path.display(),
                    change.host,
                    chain(&e)
                )),
            }
        }
    }
    if !lines.is_empty() {
        println!("\nFiles to ship (once per content, into each host's image cache):");
        for line in lines {
            println!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_observe_hint_says_run_as_root_only_to_others() {
        assert!(observe_help(1000).contains("run it as root"));
        assert!(observe_help(1000).contains("uid 1000"));
        assert!(!observe_help(0).contains("run it as root"));
    }

    #[test]
    fn the_lock_hint_says_run_as_root_only_to_others() {
        assert!(lock_help(1000).contains("run it as root (it runs as uid 1000)"));
        assert!(!lock_help(0).contains("run it as root"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("-1s").is_err());
    }
}
