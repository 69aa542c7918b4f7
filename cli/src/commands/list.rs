//! `vmctl list`: one row per VM of the project across every host of the config, live,
//! like `virsh list --all` or `incus list`: its host, state, vCPUs, memory, IP
//! addresses where known, MACs, the VMM's pid and uptime. Observed the way `status`
//! and `plan` observe ([`crate::seen`]); read-only.
//!
//! IP addresses: each NIC's address, as the VM's record on its host holds it (or, for a
//! VM not applied yet, as the plan gives it: declared or allocated); a VM whose NICs
//! have none shows an address its kernel command line declares (`ip=10.0.0.5::…`),
//! otherwise `-`. `--json` is versioned (`format_version`, "MAJOR.MINOR" as the plan's).

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;
use vmctl_planner::{Action, Change, Resource, ResourceKind, VmStatus};
use vmctl_runtime::host::proc;
use vmctl_schema::units::format_size as human;

use crate::error::CommandError;
use crate::render::Style;
use crate::runtime;

/// The version of `list --json`.
pub const LIST_FORMAT_VERSION: &str = "1.0";

/// List the project's VMs on every host, live: state, vCPUs, memory, IPs, MACs, pid and
/// uptime.
///
/// STATE is `running`, `stopped` or `crashed` as the VM's VMM answers; `missing` for a
/// VM of the config that is not on its host (yet); `not-in-config` for one of the
/// project's VMs the config no longer has; `unreadable` when its record cannot be read.
/// IP shows each NIC's address (declared, or allocated by vmctl from its VLAN's subnet);
/// for a VM whose NICs have none, an address its kernel command line declares with
/// `ip=`, else `-`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  vmctl list examples/quickstart\n  vmctl list --state running\n  vmctl list --host kvm-01 --state stopped --state crashed\n  vmctl list --json | jq '.vms[] | select(.state == \"running\") | .name'\n\nExit codes: 0 success, 1 error."
)]
pub struct Args {
    /// A .kdl file, or a folder whose *.kdl files form one config.
    #[arg(default_value = ".", env = "VMCTL_CONFIG")]
    pub path: PathBuf,

    /// Only the VMs of this host. Repeatable.
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,

    /// Only the VMs in this state. Repeatable.
    #[arg(long = "state", value_name = "STATE", value_enum)]
    pub states: Vec<State>,

    /// Print JSON: {"format_version", "project", "vms": [{name, host, state, cpus,
    /// memory, ips, macs, pid, uptime_seconds}]}, bytes and seconds as numbers, null
    /// where unknown.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub reach: runtime::Reach,
}

/// A VM's state in the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Running,
    Stopped,
    Crashed,
    /// In the config, not on its host.
    Missing,
    /// On its host, no longer in the config.
    NotInConfig,
    /// Its record on the host cannot be read.
    Unreadable,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Stopped => "stopped",
            State::Crashed => "crashed",
            State::Missing => "missing",
            State::NotInConfig => "not-in-config",
            State::Unreadable => "unreadable",
        }
    }
}

/// One VM's row (and its `--json` object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmRow {
    pub name: String,
    pub host: String,
    pub state: State,
    pub cpus: Option<u32>,
    /// Bytes.
    pub memory: Option<u64>,
    pub ips: Vec<String>,
    pub macs: Vec<String>,
    pub pid: Option<u32>,
    pub uptime_seconds: Option<u64>,
}

/// The whole `--json` document.
#[derive(Debug, Serialize)]
struct ListJson<'a> {
    format_version: &'static str,
    project: &'a str,
    vms: &'a [VmRow],
}

/// The addresses a kernel command line declares with `ip=<client-ip>:…` (the kernel's
/// own syntax, `Documentation/admin-guide/nfs/nfsroot.rst`); `ip=dhcp` and the like
/// declare none.
pub fn cmdline_ips(cmdline: &str) -> Vec<String> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|word| word.strip_prefix("ip="))
        .filter_map(|value| value.split(':').next())
        .filter(|ip| ip.parse::<IpAddr>().is_ok())
        .map(str::to_owned)
        .collect()
}

/// The row of a VM's change in the plan, with what its host reports of it.
fn row(change: &Change, seen: &crate::seen::Seen) -> VmRow {
    let live = seen
        .hosts
        .get(&change.host)
        .and_then(|h| h.live.vms.iter().find(|v| v.name == change.id.name));
    let state = match (change.action, change.status) {
        (Action::Create, _) => State::Missing,
        (Action::Delete, _) => State::NotInConfig,
        (_, Some(VmStatus::Running)) => State::Running,
        (_, Some(VmStatus::Crashed)) => State::Crashed,
        (_, Some(VmStatus::Stopped) | None) => State::Stopped,
    };
    let config = match &change.after {
        Some(Resource::Vm(vm)) => Some(vm),
        _ => None,
    };
    let (cpus, memory, cmdline, macs, nic_ips) = match (live, config) {
        (Some(vm), _) => (
            Some(vm.spec.cpus),
            Some(vm.spec.memory),
            vm.spec.cmdline.as_str(),
            vm.spec.nics.iter().map(|n| n.mac.clone()).collect(),
            vm.spec.nics.iter().filter_map(|n| n.ip).collect(),
        ),
        (None, Some(vm)) => (
            Some(vm.cpus),
            Some(vm.memory),
            vm.cmdline.as_str(),
            vm.nics.iter().map(|n| n.mac.clone()).collect(),
            vm.nics.iter().filter_map(|n| n.ip).collect(),
        ),
        (None, None) => (None, None, "", Vec::new(), Vec::<IpAddr>::new()),
    };
    let ips = if nic_ips.is_empty() {
        cmdline_ips(cmdline)
    } else {
        nic_ips.iter().map(IpAddr::to_string).collect()
    };
    VmRow {
        name: change.id.name.clone(),
        host: change.host.clone(),
        state,
        cpus,
        memory,
        ips,
        macs,
        pid: live.and_then(|v| v.pid),
        uptime_seconds: live.and_then(|v| v.uptime_seconds),
    }
}

/// Every VM of the project, as `seen`, sorted by name and host.
pub fn rows(seen: &crate::seen::Seen) -> Vec<VmRow> {
    let mut rows: Vec<VmRow> = seen
        .plan
        .changes
        .iter()
        .filter(|c| c.id.kind == ResourceKind::Vm)
        .map(|c| row(c, seen))
        .collect();
    for (host, state) in &seen.live.hosts {
        let project = &seen.loaded.config.project;
        for u in state
            .unreadable
            .iter()
            .filter(|u| u.kind == ResourceKind::Vm && &u.project == project)
        {
            rows.push(VmRow {
                name: u.name.clone(),
                host: host.clone(),
                state: State::Unreadable,
                cpus: None,
                memory: None,
                ips: Vec::new(),
                macs: Vec::new(),
                pid: None,
                uptime_seconds: None,
            });
        }
    }
    rows.sort_by(|a, b| (&a.name, &a.host).cmp(&(&b.name, &b.host)));
    rows
}

/// A `--host` that names no host of the config: a diagnostic with a did-you-mean.
fn check_hosts(config: &vmctl_schema::Config, hosts: &[String]) -> Result<(), CommandError> {
    let known: Vec<&str> = config.hosts.iter().map(|h| h.name.as_str()).collect();
    let reports: Vec<miette::Report> = hosts
        .iter()
        .filter(|h| !known.contains(&h.as_str()))
        .map(|h| {
            miette::miette!(
                code = "vmctl::list::unknown_host",
                help = format!(
                    "{} (the hosts of project {:?})",
                    vmctl_schema::diagnostics::suggest(h, known.iter().copied()),
                    config.project
                ),
                "--host {h:?} names no host of the config"
            )
        })
        .collect();
    if reports.is_empty() {
        return Ok(());
    }
    Err(CommandError::Reports {
        summary: format!(
            "{} --host name(s) name no host of the config",
            reports.len()
        ),
        reports,
    })
}

pub fn run(args: &Args, style: &Style) -> Result<(), CommandError> {
    let loaded = crate::config::load(&args.path, style)?;
    check_hosts(&loaded.config, &args.hosts)?;
    let seen = crate::seen::observe_loaded(loaded, &args.path, &args.reach, style)?;
    let rows: Vec<VmRow> = rows(&seen)
        .into_iter()
        .filter(|r| args.hosts.is_empty() || args.hosts.contains(&r.host))
        .filter(|r| args.states.is_empty() || args.states.contains(&r.state))
        .collect();
    if args.json {
        let doc = ListJson {
            format_version: LIST_FORMAT_VERSION,
            project: &seen.loaded.config.project,
            vms: &rows,
        };
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| CommandError::failed(format!("cannot write the list as JSON: {e}")))?;
        return super::write_stdout(format!("{text}\n").as_bytes());
    }
    super::write_stdout(table(&rows).as_bytes())
}

/// The rows as an aligned table with a header.
fn table(rows: &[VmRow]) -> String {
    let dash = || "-".to_owned();
    let join = |items: &[String]| {
        if items.is_empty() {
            dash()
        } else {
            items.join(",")
        }
    };
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.host.clone(),
                r.state.as_str().to_owned(),
                r.cpus.map_or_else(dash, |c| c.to_string()),
                r.memory.map_or_else(dash, human),
                join(&r.ips),
                join(&r.macs),
                r.pid.map_or_else(dash, |p| p.to_string()),
                r.uptime_seconds.map_or_else(dash, |s| {
                    proc::human_duration(std::time::Duration::from_secs(s))
                }),
            ]
        })
        .collect();
    let header = [
        "NAME", "HOST", "STATE", "CPUS", "MEMORY", "IP", "MAC", "PID", "UPTIME",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", parts.join("  ").trim_end())
    };
    let mut out = line(&mut header.iter().copied());
    for row in &cells {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_come_from_the_kernels_ip_parameter() {
        assert_eq!(
            cmdline_ips("console=ttyS0 ip=10.0.0.5::10.0.0.1:255.255.255.0:web:eth0:off"),
            ["10.0.0.5"]
        );
        assert_eq!(
            cmdline_ips("ip=fd00::5 root=/dev/vda"),
            Vec::<String>::new()
        );
        assert_eq!(cmdline_ips("ip=dhcp"), Vec::<String>::new());
        assert_eq!(cmdline_ips("noip=10.0.0.1 ip=192.0.2.7"), ["192.0.2.7"]);
        assert!(cmdline_ips("").is_empty());
    }

    #[test]
    fn the_table_aligns_and_dashes_what_is_unknown() {
        let row = VmRow {
            name: "web-1".into(),
            host: "local".into(),
            state: State::Missing,
            cpus: Some(2),
            memory: Some(64 << 20),
            ips: Vec::new(),
            macs: vec!["52:54:00:00:00:01".into()],
            pid: None,
            uptime_seconds: None,
        };
        let text = table(&[row]);
        assert_eq!(
            text,
            "NAME   HOST   STATE    CPUS  MEMORY  IP  MAC                PID  UPTIME\n\
             web-1  local  missing  2     64MiB   -   52:54:00:00:00:01  -    -\n"
        );
    }
}
