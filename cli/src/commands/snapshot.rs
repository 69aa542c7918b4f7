//! `vmctl snapshot create|list|restore|delete`: snapshots of a running VM, kept in its
//! state dir on its host (`<state-dir>/<project>/vms/<vm>/snapshots/<name>/`: the
//! engine's state and memory files and a copy of each of its disks;
//! `vmctl_runtime::vms::snapshots`). Local hosts only for now: a VM on a host reached
//! over ssh is refused with a diagnostic saying so.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use miette::{miette, Diagnostic};
use vmctl_runtime::host::lock;
use vmctl_runtime::vms::snapshots::{self, SnapshotRecord, SnapshotStoreError};
use vmctl_runtime::vms::{VmHost, VmPaths};

use crate::error::CommandError;

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
    after_help = "Examples:\n  vmctl snapshot create web-1 before-upgrade\n  vmctl snapshot list\n  vmctl snapshot restore web-1 before-upgrade --auto-approve\n  vmctl snapshot delete web-1 before-upgrade\n\nSnapshots live in the VM's state dir on its host (local hosts only for now).\nExit codes: 0 success, 1 error."
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
    /// The VM's host is reached over ssh.
    #[error(
        "VM `{vm}` runs on host `{host}`, reached over ssh: snapshots are local-host only for now"
    )]
    #[diagnostic(
        code(vmctl::snapshot::remote_host),
        help("run vmctl on host `{host}` itself (`ssh` there, then `vmctl snapshot …` with the config), or move the VM to a local host")
    )]
    Remote { vm: String, host: String },
}

/// One VM's place on its (local) host.
struct Located {
    project: String,
    state_dir: PathBuf,
    netns: Option<String>,
    vm: String,
    /// The host's `cpuid-mask`, as the config says it now.
    cpuid_mask: Vec<String>,
}

impl Located {
    fn paths(&self) -> VmPaths {
        VmPaths::new(&self.state_dir, &self.project, &self.vm)
    }

    /// The host's lock, as apply takes it: no apply, destroy or other snapshot command
    /// of the project changes the VM meanwhile.
    fn lock(&self, timeout: std::time::Duration) -> Result<lock::HostLock, CommandError> {
        lock::acquire(&self.state_dir, &self.project, timeout).map_err(|e| {
            let help = match &e {
                lock::LockError::Held { .. } => {
                    "wait for the other vmctl to finish, or pass --lock-timeout 1m to wait for it"
                }
                _ => "vmctl needs to write the project's state dir (run it as root)",
            };
            CommandError::Report(miette!(
                code = "vmctl::snapshot::locked",
                help = help,
                "cannot take the host's lock for VM `{}`: {e}",
                self.vm
            ))
        })
    }
}

fn locate(config: &vmctl_schema::Config, vm: &str) -> Result<Located, CommandError> {
    let (found, host) = super::console::vm_and_host(config, vm).map_err(|help| {
        report(SnapshotCliError::UnknownVm {
            vm: vm.to_string(),
            help,
        })
    })?;
    if let Some(h) = host.filter(|h| h.ssh.is_some()) {
        return Err(report(SnapshotCliError::Remote {
            vm: vm.into(),
            host: h.name.clone(),
        }));
    }
    Ok(Located {
        project: config.project.clone(),
        state_dir: host.map_or_else(|| PathBuf::from("/var/lib/vmctl"), |h| h.state_dir.clone()),
        netns: host.and_then(|h| h.netns.clone()),
        vm: found.name.clone(),
        cpuid_mask: host.map(|h| h.cpuid_mask.clone()).unwrap_or_default(),
    })
}

/// The names of VM `vm`'s snapshots, for `status` and `show`: read from its state dir
/// when its host is this machine; empty for a VM on a remote host (not reported there
/// yet) or one without snapshots.
pub fn local_snapshot_names(config: &vmctl_schema::Config, vm: &str) -> Vec<String> {
    match locate(config, vm) {
        Ok(at) => snapshots::list(&at.paths())
            .into_iter()
            .flatten()
            .map(|r| r.name)
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn report(e: impl Diagnostic + Send + Sync + 'static) -> CommandError {
    CommandError::Report(miette::Report::new(e))
}

/// The diagnostic of a host-side snapshot error: what, where, and what to do.
fn store_error(e: SnapshotStoreError) -> CommandError {
    let (code, help): (&str, String) = match &e {
        SnapshotStoreError::InvalidName { .. } => (
            "vmctl::snapshot::invalid_name",
            "use letters, digits, `-`, `_` and `.` (not first)".into(),
        ),
        SnapshotStoreError::Exists { vm, name, .. } => (
            "vmctl::snapshot::exists",
            format!("choose another name, or `vmctl snapshot delete {vm} {name}` first"),
        ),
        SnapshotStoreError::NotFound { vm, .. } => (
            "vmctl::snapshot::not_found",
            format!("`vmctl snapshot list {vm}` shows its snapshots"),
        ),
        SnapshotStoreError::Incomplete { vm, name } => (
            "vmctl::snapshot::incomplete",
            format!("delete it (`vmctl snapshot delete {vm} {name}`) and take it again"),
        ),
        SnapshotStoreError::NotRunning { .. } => (
            "vmctl::snapshot::not_running",
            "a snapshot is taken of a running VM: start it with `vmctl apply`".into(),
        ),
        SnapshotStoreError::Engine { .. } => (
            "vmctl::snapshot::engine",
            "the VM keeps running as it was; its console log may say more".into(),
        ),
        SnapshotStoreError::Disks { .. } => (
            "vmctl::snapshot::disks_changed",
            "a snapshot restores only onto the disks it was taken with; take a new snapshot".into(),
        ),
        SnapshotStoreError::Refused { .. } => (
            "vmctl::snapshot::refused",
            "the VM was left as it is; a snapshot restores only on a host whose CPU offers what its guest saw (and without a `cpuid-mask` hiding it), into the same vCPUs, memory and devices".into(),
        ),
        SnapshotStoreError::Io { .. } => (
            "vmctl::snapshot::io",
            "check the file's permissions and the free space of the VM's state dir".into(),
        ),
        SnapshotStoreError::Vm(_) => (
            "vmctl::snapshot::vm",
            "`vmctl console VM --lines 50` shows what the VM's console printed last".into(),
        ),
    };
    CommandError::Report(miette!(code = code, help = help, "{e}"))
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

fn vmctl_binary() -> Result<PathBuf, CommandError> {
    std::env::current_exe().map_err(|e| {
        CommandError::failed(format!("cannot find the vmctl binary to run VMs with: {e}"))
    })
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

pub fn run(args: &Args) -> Result<(), CommandError> {
    match &args.command {
        SnapshotCommand::Create(n) => {
            let loaded = vmctl_schema::load(&n.path)?;
            let at = locate(&loaded.config, &n.vm)?;
            let _lock = at.lock(n.lock_timeout)?;
            let vmctl = vmctl_binary()?;
            let host = VmHost {
                project: &at.project,
                state_dir: &at.state_dir,
                netns: at.netns.as_deref(),
                vmctl: &vmctl,
            };
            let r = snapshots::create(&host, &at.vm, &n.name).map_err(store_error)?;
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
            let loaded = vmctl_schema::load(&path)?;
            let vms: Vec<String> = match &only {
                Some(vm) => vec![vm.clone()],
                None => loaded.config.vms.iter().map(|v| v.name.clone()).collect(),
            };
            let mut records = Vec::new();
            for vm in &vms {
                let at = match locate(&loaded.config, vm) {
                    Ok(at) => at,
                    // Listing every VM skips those on remote hosts.
                    Err(_) if only.is_none() => continue,
                    Err(e) => return Err(e),
                };
                for r in snapshots::list(&at.paths()) {
                    records.push(r.map_err(store_error)?);
                }
            }
            if l.json {
                let out = serde_json::json!({
                    "format_version": LIST_FORMAT_VERSION,
                    "project": loaded.config.project,
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
            let loaded = vmctl_schema::load(&n.path)?;
            let at = locate(&loaded.config, &n.vm)?;
            let paths = at.paths();
            if snapshots::read_snapshot(&paths, &n.name)
                .map_err(store_error)?
                .is_none()
            {
                return Err(store_error(SnapshotStoreError::NotFound {
                    vm: n.vm.clone(),
                    name: n.name.clone(),
                    path: snapshots::snapshots_dir(&paths).join(&n.name),
                }));
            }
            confirm(r.auto_approve, &n.vm, &n.name)?;
            let _lock = at.lock(n.lock_timeout)?;
            let vmctl = vmctl_binary()?;
            let host = VmHost {
                project: &at.project,
                state_dir: &at.state_dir,
                netns: at.netns.as_deref(),
                vmctl: &vmctl,
            };
            let pid = snapshots::restore(&host, &at.vm, &n.name, Some(&at.cpuid_mask))
                .map_err(store_error)?;
            println!(
                "VM {} restored from snapshot {} (VMM pid {pid}).",
                n.vm, n.name
            );
            Ok(())
        }
        SnapshotCommand::Delete(n) => {
            let loaded = vmctl_schema::load(&n.path)?;
            let at = locate(&loaded.config, &n.vm)?;
            let _lock = at.lock(n.lock_timeout)?;
            let r = snapshots::delete(&at.paths(), &at.vm, &n.name).map_err(store_error)?;
            println!("Snapshot {} of VM {} deleted.", r.name, r.vm);
            Ok(())
        }
    }
}
