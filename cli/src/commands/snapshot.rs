//! `vmctl snapshot create|list|restore|delete`: snapshots of a running VM, kept in its
//! state dir on its host (`<state-dir>/<project>/vms/<vm>/snapshots/<name>/`: the
//! engine's state and memory files and a copy of each of its disks;
//! `vmctl_runtime::vms::snapshots`), on any host of the config: a local host does the
//! work in this process, a host reached over ssh through its agent
//! (`vmctl_runtime::vms::snapshot_call`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use miette::{miette, Diagnostic};
use vmctl_runtime::host::lock;
use vmctl_runtime::hosts::{Fleet, HeldLock, Host};
use vmctl_runtime::vms::snapshot_call::{
    FailureKind, SnapshotAnswer, SnapshotCall, SnapshotFailure,
};
use vmctl_runtime::vms::snapshots::SnapshotRecord;

use crate::error::CommandError;
use crate::runtime::chain;

/// The version of `vmctl snapshot list --json`.
pub const LIST_FORMAT_VERSION: &str = "1.0";

/// Save a running VM and restore it later: memory, vCPUs, devices and disks.
///
/// A snapshot pauses the VM while its state, memory and disks are saved, then resumes
/// it. Restoring stops the VM (its current state is lost), puts the snapshot's disks
/// back into its volumes and starts it from the snapshot: the guest carries on from the
/// moment the snapshot was taken, without booting.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  vmctl snapshot create web-1 before-upgrade\n  vmctl snapshot list\n  vmctl snapshot restore web-1 before-upgrade --auto-approve\n  vmctl snapshot delete web-1 before-upgrade\n\nSnapshots live in the VM's state dir on its host (local, or reached over ssh).\nExit codes: 0 success, 1 error."
)]
pub struct Args {
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot of a running VM.
    Create(Named),
    /// List snapshots (of one VM, or of every VM of the config).
    List(ListArgs),
    /// Stop a VM and start it again from a snapshot (after a `yes`).
    Restore(RestoreArgs),
    /// Delete a snapshot (only the files vmctl made for it).
    Delete(Named),
}

/// A VM and one of its snapshots.
#[derive(Debug, clap::Args)]
pub struct Named {
    /// The VM, by name.
    pub vm: String,
    /// The snapshot's name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// A .kdl file, or a folder whose *.kdl files form one config.
    #[arg(default_value = ".", env = "VMCTL_CONFIG")]
    pub path: PathBuf,
    /// How long to wait for another vmctl holding the host's lock: 0, 500ms, 1m30s.
    #[arg(long, value_name = "DUR", default_value = "0", value_parser = crate::runtime::parse_duration)]
    pub lock_timeout: std::time::Duration,
    #[command(flatten)]
    pub reach: SnapshotReach,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this VM's snapshots (a single argument that names an existing file or
    /// folder is taken as PATH).
    pub vm: Option<String>,
    /// A .kdl file, or a folder whose *.kdl files form one config.
    #[arg(env = "VMCTL_CONFIG")]
    pub path: Option<PathBuf>,
    /// Print JSON: {"format_version", "project", "snapshots": [the record of each, as
    /// in its snapshot.json]}; versioned as `vmctl list --json` ("MAJOR.MINOR").
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub reach: SnapshotReach,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub named: Named,
    /// Restore without asking (the VM's current state and disks are replaced).
    #[arg(long, visible_alias = "yes")]
    pub auto_approve: bool,
}

/// Why a snapshot command cannot run.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum SnapshotCliError {
    /// The config has no such VM.
    #[error("no VM `{vm}` in the config")]
    #[diagnostic(code(vmctl::snapshot::unknown_vm))]
    UnknownVm {
        vm: String,
        #[help]
        help: String,
    },
}

/// How the VMs' hosts are reached (as for `console`).
#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotReach {
    /// An ssh config file for reaching a remote VM's host (`ssh -F`).
    #[arg(long, value_name = "FILE", env = "VMCTL_SSH_CONFIG")]
    pub ssh_config: Option<PathBuf>,
    /// Where each host's ssh connection is kept (as for `plan`; `none`: this command's
    /// own connection, closed when it returns).
    #[arg(long, value_name = "DIR|none", env = "VMCTL_SSH_CONTROL_DIR", value_parser = crate::runtime::parse_control)]
    pub ssh_control_dir: Option<vmctl_runtime::remote::ssh::Control>,
}

/// The hosts of the VMs a command names, reached: local ones in process, remote ones
/// through their agents (`vmctl_runtime::vms::snapshot_call`).
struct Hosts {
    project: String,
    fleet: Fleet,
}

impl Hosts {
    /// Reaches the hosts of `vms` (VM names of the config; unknown ones are refused).
    fn reach(
        config: &vmctl_schema::Config,
        vms: &[&str],
        reach: &SnapshotReach,
        path: &std::path::Path,
    ) -> Result<Hosts, CommandError> {
        let mut wanted = Vec::new();
        for vm in vms {
            let (found, _) = super::console::vm_and_host(config, vm).map_err(|help| {
                report(SnapshotCliError::UnknownVm {
                    vm: vm.to_string(),
                    help,
                })
            })?;
            wanted.push(found.host.clone());
        }
        let reach = crate::runtime::Reach {
            host_parallelism: 16,
            exclude_hosts: config
                .hosts
                .iter()
                .filter(|h| !wanted.contains(&h.name))
                .map(|h| h.name.clone())
                .collect(),
            ssh_config: reach.ssh_config.clone(),
            ssh_control_dir: reach.ssh_control_dir.clone(),
        };
        Ok(Hosts {
            project: config.project.clone(),
            fleet: crate::runtime::connect(config, &reach, path)?,
        })
    }

    /// VM `vm`'s host.
    fn host_of(&self, config: &vmctl_schema::Config, vm: &str) -> Result<&dyn Host, CommandError> {
        let name = config
            .vms
            .iter()
            .find(|v| v.name == vm)
            .map(|v| v.host.as_str())
            .unwrap_or_default();
        self.fleet.get(name).ok_or_else(|| {
            CommandError::failed(format!("host {name:?} of VM {vm} was not reached"))
        })
    }

    /// Carries out `call` on VM `vm`'s host.
    fn call(
        &self,
        config: &vmctl_schema::Config,
        vm: &str,
        call: &SnapshotCall,
    ) -> Result<SnapshotAnswer, CommandError> {
        let host = self.host_of(config, vm)?;
        match host.snapshot(&self.project, call) {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(failure)) => Err(store_error(failure)),
            Err(e) => Err(CommandError::Report(miette!(
                code = "vmctl::snapshot::host",
                help =
                    "check that the host is reachable (`vmctl status`), then run the command again",
                "cannot ask host {:?} about VM {vm}: {}",
                host.name(),
                chain(&e)
            ))),
        }
    }

    /// VM `vm`'s host's lock, as apply takes it: no apply, destroy or other snapshot
    /// command of the project changes the VM meanwhile.
    fn lock(
        &self,
        config: &vmctl_schema::Config,
        vm: &str,
        timeout: std::time::Duration,
    ) -> Result<HeldLock, CommandError> {
        let host = self.host_of(config, vm)?;
        host.lock(&self.project, self.fleet.origin(), timeout)
            .map_err(|e| {
                let help = match &e {
                    lock::LockError::Held { .. } => {
                        "wait for the other vmctl to finish, or pass --lock-timeout 1m to wait for it"
                    }
                    _ => "vmctl needs to write the project's state dir (run it as root)",
                };
                CommandError::Report(miette!(
                    code = "vmctl::snapshot::locked",
                    help = help,
                    "cannot take the lock of host {:?} for VM `{vm}`: {}",
                    host.name(),
                    chain(&e)
                ))
            })
    }
}

fn report(e: impl Diagnostic + Send + Sync + 'static) -> CommandError {
    CommandError::Report(miette::Report::new(e))
}

/// The diagnostic of a host-side snapshot failure: what, where, and what to do.
fn store_error(e: SnapshotFailure) -> CommandError {
    let vm = &e.vm;
    let (code, help): (&str, String) = match e.kind {
        FailureKind::InvalidName => (
            "vmctl::snapshot::invalid_name",
            "use letters, digits, `-`, `_` and `.` (not first)".into(),
        ),
        FailureKind::Exists => (
            "vmctl::snapshot::exists",
            format!("choose another name, or `vmctl snapshot delete {vm} NAME` first"),
        ),
        FailureKind::NotFound => (
            "vmctl::snapshot::not_found",
            format!("`vmctl snapshot list {vm}` shows its snapshots"),
        ),
        FailureKind::Incomplete => (
            "vmctl::snapshot::incomplete",
            format!("delete it (`vmctl snapshot delete {vm} NAME`) and take it again"),
        ),
        FailureKind::NotRunning => (
            "vmctl::snapshot::not_running",
            "a snapshot is taken of a running VM: start it with `vmctl apply`".into(),
        ),
        FailureKind::Engine => (
            "vmctl::snapshot::engine",
            "the VM keeps running as it was; its console log may say more".into(),
        ),
        FailureKind::Disks => (
            "vmctl::snapshot::disks_changed",
            "a snapshot restores only onto the disks it was taken with; take a new snapshot".into(),
        ),
        FailureKind::Refused => (
            "vmctl::snapshot::refused",
            "the VM was left as it is; a snapshot restores only on a host whose CPU offers what its guest saw (and without a `cpuid-mask` hiding it), into the same vCPUs, memory and devices".into(),
        ),
        FailureKind::Io => (
            "vmctl::snapshot::io",
            "check the file's permissions and the free space of the VM's state dir".into(),
        ),
        FailureKind::Vm => (
            "vmctl::snapshot::vm",
            "`vmctl console VM --lines 50` shows what the VM's console printed last".into(),
        ),
    };
    CommandError::Report(miette!(code = code, help = help, "{}", e.message))
}

fn human_bytes(n: u64) -> String {
    vmctl_schema::capacity::human(n)
}

fn confirm(auto_approve: bool, vm: &str, name: &str) -> Result<(), CommandError> {
    if auto_approve {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CommandError::Report(miette!(
            code = "vmctl::snapshot::not_confirmed",
            help = "pass --auto-approve to restore without asking",
            "refusing to restore without confirmation: stdin is not a terminal to ask on"
        )));
    }
    print!(
        "\nRestore VM {vm} from snapshot {name}?\n  vmctl will stop {vm} (its current state is lost) and replace its disks with the snapshot's. Only 'yes' will be accepted.\n\n  Enter a value: "
    );
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if answer.trim() == "yes" {
        Ok(())
    } else {
        eprintln!("\nRestore cancelled.");
        Err(CommandError::Silent { code: 1 })
    }
}

/// One line of `list`.
fn line(r: &SnapshotRecord) -> String {
    let disks = r.disks.len();
    format!(
        "{:<16} {:<20} {:>10} {:>6} disk{} {:>8} ms{}",
        r.vm,
        r.name,
        human_bytes(r.memory),
        disks,
        if disks == 1 { " " } else { "s" },
        r.paused_ms,
        if r.complete { "" } else { "  (incomplete)" }
    )
}

/// The record a call about one snapshot answered.
fn record_of(answer: SnapshotAnswer) -> Result<SnapshotRecord, CommandError> {
    match answer {
        SnapshotAnswer::Taken { record } | SnapshotAnswer::Deleted { record } => Ok(record),
        other => Err(CommandError::failed(format!("the host answered {other:?}"))),
    }
}

pub fn run(args: &Args) -> Result<(), CommandError> {
    match &args.command {
        SnapshotCommand::Create(n) => {
            let config = vmctl_schema::load(&n.path)?.config;
            let hosts = Hosts::reach(&config, &[&n.vm], &n.reach, &n.path)?;
            let _lock = hosts.lock(&config, &n.vm, n.lock_timeout)?;
            let call = SnapshotCall::Create {
                vm: n.vm.clone(),
                name: n.name.clone(),
            };
            let r = record_of(hosts.call(&config, &n.vm, &call)?)?;
            println!(
                "Snapshot {} of VM {} taken: {} of memory ({} written), {} disk{}, guest paused {} ms.",
                r.name,
                r.vm,
                human_bytes(r.memory),
                human_bytes(r.memory_written),
                r.disks.len(),
                if r.disks.len() == 1 { "" } else { "s" },
                r.paused_ms
            );
            Ok(())
        }
        SnapshotCommand::List(l) => {
            let (only, path) = match (&l.vm, &l.path) {
                (Some(one), None) if std::path::Path::new(one).exists() => {
                    (None, PathBuf::from(one))
                }
                (vm, path) => (vm.clone(), path.clone().unwrap_or_else(|| ".".into())),
            };
            let config = vmctl_schema::load(&path)?.config;
            let vms: Vec<String> = match &only {
                Some(vm) => vec![vm.clone()],
                None => config.vms.iter().map(|v| v.name.clone()).collect(),
            };
            let names: Vec<&str> = vms.iter().map(String::as_str).collect();
            let hosts = Hosts::reach(&config, &names, &l.reach, &path)?;
            let mut records = Vec::new();
            for vm in &vms {
                let call = SnapshotCall::List { vm: vm.clone() };
                match hosts.call(&config, vm, &call)? {
                    SnapshotAnswer::Listed { records: listed } => {
                        for r in listed {
                            records.push(r.map_err(store_error)?);
                        }
                    }
                    other => {
                        return Err(CommandError::failed(format!(
                            "the host of VM {vm} answered {other:?}"
                        )))
                    }
                }
            }
            if l.json {
                let out = serde_json::json!({
                    "format_version": LIST_FORMAT_VERSION,
                    "project": config.project,
                    "snapshots": records,
                });
                let text = serde_json::to_string_pretty(&out)
                    .map_err(|e| CommandError::failed(e.to_string()))?;
                println!("{text}");
            } else if records.is_empty() {
                println!("No snapshots.");
            } else {
                println!(
                    "{:<16} {:<20} {:>10} {:>11} {:>11}",
                    "VM", "SNAPSHOT", "MEMORY", "DISKS", "PAUSED"
                );
                for r in &records {
                    println!("{}", line(r));
                }
            }
            Ok(())
        }
        SnapshotCommand::Restore(r) => {
            let n = &r.named;
            let config = vmctl_schema::load(&n.path)?.config;
            let hosts = Hosts::reach(&config, &[&n.vm], &n.reach, &n.path)?;
            let find = SnapshotCall::Find {
                vm: n.vm.clone(),
                name: n.name.clone(),
            };
            if hosts.call(&config, &n.vm, &find)? == (SnapshotAnswer::Found { record: None }) {
                return Err(store_error(SnapshotFailure {
                    kind: FailureKind::NotFound,
                    vm: n.vm.clone(),
                    message: format!("VM {} has no snapshot {:?}", n.vm, n.name),
                }));
            }
            confirm(r.auto_approve, &n.vm, &n.name)?;
            let _lock = hosts.lock(&config, &n.vm, n.lock_timeout)?;
            let cpuid_mask = config
                .vms
                .iter()
                .find(|v| v.name == n.vm)
                .and_then(|v| config.hosts.iter().find(|h| h.name == v.host))
                .map(|h| h.cpuid_mask.clone())
                .unwrap_or_default();
            let call = SnapshotCall::Restore {
                vm: n.vm.clone(),
                name: n.name.clone(),
                cpuid_mask,
            };
            match hosts.call(&config, &n.vm, &call)? {
                SnapshotAnswer::Restored { pid } => {
                    println!(
                        "VM {} restored from snapshot {} (VMM pid {pid}).",
                        n.vm, n.name
                    );
                    Ok(())
                }
                other => Err(CommandError::failed(format!("the host answered {other:?}"))),
            }
        }
        SnapshotCommand::Delete(n) => {
            let config = vmctl_schema::load(&n.path)?.config;
            let hosts = Hosts::reach(&config, &[&n.vm], &n.reach, &n.path)?;
            let _lock = hosts.lock(&config, &n.vm, n.lock_timeout)?;
            let call = SnapshotCall::Delete {
                vm: n.vm.clone(),
                name: n.name.clone(),
            };
            let r = record_of(hosts.call(&config, &n.vm, &call)?)?;
            println!("Snapshot {} of VM {} deleted.", r.name, r.vm);
            Ok(())
        }
    }
}
