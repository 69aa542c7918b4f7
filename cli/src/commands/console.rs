//! `vmctl console VM [PATH]`: a VM's serial console. Attached by default (the VMM's
//! console socket, `vmctl_runtime::vmm::console`), or its console log with `--lines` /
//! `--follow`. The VM's files are found from the config: the VM's host's state dir,
//! `<state-dir>/<project>/vms/<name>/` (DESIGN.md, "Live state"). A VM on a remote host
//! is shown by that host's agent (`vmctl agent console`, [`run_on_host`]) over the ssh
//! vmctl reaches the host with, a terminal carried when attached at one.

mod attach;
mod log;

use std::path::PathBuf;

use miette::Diagnostic;
use vmctl_schema::diagnostics::suggest;

use crate::error::CommandError;

/// Attach to a VM's serial console, or print its console log.
///
/// Attached, what you type goes to the guest's serial port and its output is printed
/// as it comes. Detach with Ctrl-] (the byte 0x1d, as in virsh and telnet); the VM
/// keeps running. Ctrl-C and every other key go to the guest. One client can be
/// attached at a time.
///
/// When stdin is not a terminal (a pipe or a file), its bytes are sent as they are
/// (Ctrl-] included) until it ends; then the output keeps printing until the VM stops
/// or vmctl is interrupted (Ctrl-C).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  vmctl console web-1                  # attach; Ctrl-] detaches\n  vmctl console web-1 --lines 50       # the last 50 lines of its console log\n  vmctl console web-1 infra/ -f        # follow the log until the VM stops\n  printf 'reboot\\n' | vmctl console web-1\n\nExit codes: 0 detached, VM stopped, or log printed; 1 error; 128+N after signal N."
)]
pub struct Args {
    /// The VM, by name.
    pub vm: String,
    /// A .kdl file, or a folder whose *.kdl files form one config.
    #[arg(default_value = ".", env = "VMCTL_CONFIG")]
    pub path: PathBuf,
    /// Print the last N lines of the console log and exit (with --follow: then follow).
    #[arg(long, short = 'n', value_name = "N")]
    pub lines: Option<u64>,
    /// Print the console log and follow it as it grows (like `tail -f`), until the VM's
    /// process ends or Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// An ssh config file for reaching a remote VM's host (`ssh -F`).
    #[arg(long, value_name = "FILE", env = "VMCTL_SSH_CONFIG")]
    pub ssh_config: Option<PathBuf>,
    /// Where the host's ssh connection is kept (as for `plan`; `none`: this command's
    /// own connection, closed when it returns).
    #[arg(long, value_name = "DIR|none", env = "VMCTL_SSH_CONTROL_DIR", value_parser = crate::runtime::parse_control)]
    pub ssh_control_dir: Option<vmctl_runtime::remote::ssh::Control>,
}

/// Why the console cannot be shown.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum ConsoleError {
    /// The config has no such VM.
    #[error("no VM `{vm}` in the config")]
    #[diagnostic(code(vmctl::console::unknown_vm))]
    UnknownVm {
        vm: String,
        #[help]
        help: String,
    },
    /// No VMM serves the VM's console socket.
    #[error("VM `{vm}` is not running (no console at {socket})")]
    #[diagnostic(
        code(vmctl::console::not_running),
        help("start it with `vmctl apply`; `vmctl console {vm} --lines 50` shows what its console printed last")
    )]
    NotRunning { vm: String, socket: PathBuf },
    /// The VM has no console log on this host.
    #[error("VM `{vm}` has no console log ({log} does not exist)")]
    #[diagnostic(
        code(vmctl::console::no_log),
        help("the VM was never started on this host: `vmctl apply` first")
    )]
    NoLog { vm: String, log: PathBuf },
    /// Another client is attached.
    #[error("the console of VM `{vm}` is busy: {why}")]
    #[diagnostic(
        code(vmctl::console::busy),
        help("detach the other client (Ctrl-]), or read the log with `--follow`")
    )]
    Busy { vm: String, why: String },
    /// The console socket answered something else than the console protocol.
    #[error("{socket} does not speak the console protocol (it said {said:?})")]
    #[diagnostic(code(vmctl::console::protocol))]
    Protocol { socket: PathBuf, said: String },
    /// An I/O error on the terminal, the socket or the log.
    #[error("{what}: {source}")]
    #[diagnostic(code(vmctl::console::io))]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl ConsoleError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| ConsoleError::Io { what, source }
    }
}

impl From<ConsoleError> for CommandError {
    fn from(e: ConsoleError) -> Self {
        CommandError::Report(miette::Report::new(e))
    }
}

/// Where one VM's files are: `<state-dir>/<project>/vms/<name>/`.
#[derive(Debug, Clone)]
pub struct VmDir {
    pub name: String,
    pub dir: PathBuf,
}

impl VmDir {
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn console_socket(&self) -> PathBuf {
        self.dir.join("console.sock")
    }
}

/// The VM's host, when it is reached over ssh.
fn remote_host_of(config: &vmctl_schema::Config, vm: &str) -> Option<String> {
    let found = config.vms.iter().find(|v| v.name == vm)?;
    let host = config.hosts.iter().find(|h| h.name == found.host)?;
    host.ssh.as_ref().map(|_| host.name.clone())
}

/// Shows the console of a VM on a remote host: through that host's agent
/// (`vmctl agent console`), over the ssh vmctl reaches the host with.
fn run_remote(args: &Args, config: &vmctl_schema::Config, host: &str) -> Result<(), CommandError> {
    use std::io::IsTerminal;
    let reach = crate::runtime::Reach {
        host_parallelism: 1,
        exclude_hosts: config
            .hosts
            .iter()
            .filter(|h| h.name != host)
            .map(|h| h.name.clone())
            .collect(),
        ssh_config: args.ssh_config.clone(),
        ssh_control_dir: args.ssh_control_dir.clone(),
    };
    let fleet = crate::runtime::connect(config, &reach, &args.path)?;
    let view = vmctl_runtime::hosts::ConsoleView {
        lines: args.lines,
        follow: args.follow,
    };
    let attach = args.lines.is_none() && !args.follow;
    let tty = attach && std::io::stdin().is_terminal();
    let command = fleet
        .get(host)
        .and_then(|h| h.console_command(&config.project, &args.vm, &view, tty));
    let Some(mut command) = command else {
        return Err(CommandError::failed(format!(
            "host {host:?} gives no console command"
        )));
    };
    let status = command.status().map_err(|e| {
        CommandError::failed(format!(
            "cannot run ssh to show the console on {host:?}: {e}"
        ))
    })?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(CommandError::Silent {
            code: u8::try_from(code).unwrap_or(1),
        }),
        None => Err(CommandError::Silent { code: 1 }),
    }
}

/// VM `vm` of the config and its host (`None` for an undeclared host, which a valid
/// config has not); `Err` is the help line naming the VMs there are.
pub(crate) fn vm_and_host<'a>(
    config: &'a vmctl_schema::Config,
    vm: &str,
) -> Result<(&'a vmctl_schema::Vm, Option<&'a vmctl_schema::Host>), String> {
    let Some(found) = config.vms.iter().find(|v| v.name == vm) else {
        return Err(format!(
            "{} (the VMs of project `{}`)",
            suggest(vm, config.vms.iter().map(|v| v.name.as_str())),
            config.project
        ));
    };
    Ok((found, config.hosts.iter().find(|h| h.name == found.host)))
}

/// Finds the VM's state dir on its (local) host.
fn locate(config: &vmctl_schema::Config, vm: &str) -> Result<VmDir, ConsoleError> {
    let (found, host) = vm_and_host(config, vm).map_err(|help| ConsoleError::UnknownVm {
        vm: vm.to_string(),
        help,
    })?;
    // A valid config names a declared host; default to the default state dir otherwise.
    let state_dir = host.map_or_else(|| PathBuf::from("/var/lib/vmctl"), |h| h.state_dir.clone());
    Ok(VmDir {
        name: found.name.clone(),
        dir: state_dir
            .join(&config.project)
            .join("vms")
            .join(&found.name),
    })
}

/// The console of VM `vm` of `project` on this machine, its files under `state_dir`
/// (what `vmctl agent console` runs on a remote host).
pub fn run_on_host(
    state_dir: &std::path::Path,
    project: &str,
    vm: &str,
    lines: Option<u64>,
    follow: bool,
) -> Result<(), CommandError> {
    if !vmctl_runtime::host::mark::is_safe_file_name(vm)
        || !vmctl_runtime::host::mark::is_safe_file_name(project)
    {
        return Err(CommandError::failed(format!(
            "{project:?}/{vm:?} cannot name a VM's state dir"
        )));
    }
    let dir = VmDir {
        name: vm.to_owned(),
        dir: state_dir.join(project).join("vms").join(vm),
    };
    show(&dir, lines, follow)
}

fn show(vm: &VmDir, lines: Option<u64>, follow: bool) -> Result<(), CommandError> {
    let code = if lines.is_some() || follow {
        log::run(vm, lines, follow)?
    } else {
        attach::run(vm)?
    };
    match code {
        0 => Ok(()),
        code => Err(CommandError::Silent { code }),
    }
}

pub fn run(args: &Args) -> Result<(), CommandError> {
    let loaded = vmctl_schema::load(&args.path)?;
    if let Some(host) = remote_host_of(&loaded.config, &args.vm) {
        return run_remote(args, &loaded.config, &host);
    }
    let vm = locate(&loaded.config, &args.vm)?;
    let code = if args.lines.is_some() || args.follow {
        log::run(&vm, args.lines, args.follow)?
    } else {
        attach::run(&vm)?
    };
    match code {
        0 => Ok(()),
        code => Err(CommandError::Silent { code }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
project "lab"
host "local" { state-dir "/srv/vmctl"; }
host "far" { ssh "admin@far.example"; }
vm "web-1" host="local" { cpus 1; memory "64MiB"; kernel "/k"; }
vm "db-1" host="far" { cpus 1; memory "64MiB"; kernel "/k"; }
"#;

    fn config() -> vmctl_schema::Config {
        match vmctl_schema::load_str("/lab.kdl", CONFIG) {
            Ok(l) => l.config,
            Err(d) => panic!("{d:?}"),
        }
    }

    #[test]
    fn finds_the_state_dir_of_a_local_vm() {
        let vm = locate(&config(), "web-1").unwrap();
        assert_eq!(vm.dir, PathBuf::from("/srv/vmctl/lab/vms/web-1"));
        assert_eq!(
            vm.console_socket(),
            PathBuf::from("/srv/vmctl/lab/vms/web-1/console.sock")
        );
    }

    #[test]
    fn unknown_vms_are_clear_errors_and_remote_ones_go_to_their_host() {
        let e = locate(&config(), "web1").unwrap_err();
        assert!(
            matches!(&e, ConsoleError::UnknownVm { help, .. } if help.contains("did you mean `web-1`?")),
            "{e:?}"
        );
        assert_eq!(remote_host_of(&config(), "db-1").as_deref(), Some("far"));
        assert_eq!(remote_host_of(&config(), "web-1"), None);
    }
}
