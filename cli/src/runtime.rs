//! The CLI's side of the runtime: observing the config's hosts and taking their locks,
//! with every failure turned into a diagnostic (what, where, what to do).

use std::error::Error;
use std::time::Duration;

use miette::miette;
use vmctl_planner::LiveFile;
use vmctl_runtime::apply::{self, ApplyError, LiveError};
use vmctl_runtime::host::lock::{HostLock, LockError};
use vmctl_runtime::host::net::netns::Released;
use vmctl_schema::Config;

use crate::error::CommandError;

/// `error` and its causes, one clause each: `cannot observe …: cannot read …: denied`.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Observes every host of `config` (in parallel).
pub fn observe(config: &Config) -> Result<LiveFile, CommandError> {
    apply::observe(config).map_err(|errors| {
        let first = errors.into_iter().next();
        match first {
            Some(e @ LiveError::RemoteHost { .. }) => CommandError::Report(miette!(
                code = "vmctl::host::remote",
                help = "manage that host with a vmctl run on it, or use `vmctl plan --live FILE` to plan offline",
                "{e}"
            )),
            Some(e) => CommandError::Report(miette!(
                code = "vmctl::host::observe",
                help = "vmctl reads the host's state dir, pools and network interfaces: run it as root (a host's `netns` that does not exist yet is fine: apply makes it)",
                "{}",
                chain(&e)
            )),
            None => CommandError::failed("observing the hosts failed"),
        }
    })
}

/// Takes the lock of every host of `config`, waiting up to `timeout`.
pub fn lock(config: &Config, timeout: Duration) -> Result<Vec<HostLock>, CommandError> {
    let hosts: Vec<&str> = config.hosts.iter().map(|h| h.name.as_str()).collect();
    apply::lock_hosts(config, &hosts, timeout).map_err(|e| match &e {
        ApplyError::Lock {
            host,
            source: LockError::Held { pid, path, .. },
        } => {
            let holder = match pid {
                Some(pid) => format!("another vmctl (pid {pid})"),
                None => "another vmctl".to_owned(),
            };
            CommandError::Report(miette!(
                code = "vmctl::apply::locked",
                help = format!(
                    "wait for it to finish, or wait for it with `--lock-timeout 5m`; the lock is {}",
                    path.display()
                ),
                "{holder} is applying project {:?} on host {host:?}",
                config.project
            ))
        }
        ApplyError::Live(e @ LiveError::RemoteHost { .. }) => CommandError::Report(miette!(
            code = "vmctl::host::remote",
            help = "only hosts without `ssh` (this machine) can be applied so far",
            "{e}"
        )),
        _ => CommandError::Report(miette!(
            code = "vmctl::apply::lock",
            help = "vmctl keeps its lock in the host's state dir: run it as root",
            "{}",
            chain(&e)
        )),
    })
}

/// Under a plan: the hosts whose declared netns apply will make first (it does not
/// exist yet; observing found an empty network side there).
pub fn print_netns_to_make(config: &Config, plan: &vmctl_planner::Plan) {
    for (host, netns) in apply::netns_to_make(config, plan) {
        println!(
            "\n+ netns {netns:?} on host {host:?}: it does not exist yet; apply creates it first (destroy removes it again)."
        );
    }
}

/// After a complete apply (`destroyed` false) or destroy: removes the network
/// namespaces vmctl made for the project that nothing of it uses any more, and says so.
/// A namespace that cannot be removed is a warning: everything else is done.
pub fn release_netns(config: &Config, destroyed: bool) {
    for release in apply::release_netns(config, destroyed) {
        let (host, netns) = (&release.host, &release.netns);
        match release.result {
            Ok(Released::Removed) => {
                println!("Removed network namespace {netns:?} of host {host:?} (vmctl made it).")
            }
            Ok(Released::InUse { interfaces }) if destroyed => eprintln!(
                "warning: network namespace {netns:?} of host {host:?} was made by vmctl but still holds {}: it is kept; remove it with `ip netns delete {netns}` once it is unused",
                interfaces.join(", ")
            ),
            Ok(Released::Shared { projects }) if destroyed => println!(
                "Kept network namespace {netns:?} of host {host:?}: project(s) {} still use it; the last one's destroy removes it.",
                projects.join(", ")
            ),
            Ok(_) => {}
            Err(e) => eprintln!(
                "warning: network namespace {netns:?} of host {host:?} is kept: {}; remove it with `ip netns delete {netns}` once it is unused",
                chain(&e)
            ),
        }
    }
}

/// Parses `--lock-timeout`: `0`, `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 0, 500ms, 30s, 5m or 1h"))?;
    let unit_ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_millis(n.saturating_mul(unit_ms)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
