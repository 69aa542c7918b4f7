//! The VMM's process entry: what a `vmctl vmm` process does with the VM it is given,
//! whichever command hosts it (the CLI's hidden `vmctl vmm` today, the same binary
//! run as an agent on a remote host later). The caller parses its arguments and
//! renders the [`EntryError`]; everything else is here:
//!
//! - [`Start::Spec`]: the spec file is read, validated and checked against the host's
//!   memory, then the VM runs detached ([`process::detach`]) unless in the foreground.
//!   The original process of a detached VMM writes one line to its launcher once the
//!   VMM serves its control socket (its pid) or failed (`error: WHY`, the VMM's own
//!   message; `vms::process::spawn` reads it).
//! - The VMM takes the VM's lock ([`lock`]) before anything of the VM is opened and
//!   holds it until the process ends, writes serial output to the console log (stdout
//!   when the spec has none), stops cleanly on SIGTERM/SIGINT/SIGHUP, and keeps its
//!   pid file while it runs.
//! - With a restore source ([`Restore`]: `vmctl vmm --spec FILE --restore DIR`), the
//!   VM is built from the snapshot in `DIR` (its `state` and `memory` files, opened as
//!   root before the jail) instead of booting the spec's kernel ([`super::snapshot`]).
//! - [`Start::Inline`] (`vmctl vmm run`): a VM built from arguments, in the
//!   foreground, serial output on stdout, with no lock, pid file or signal handling.
//! - Jailed (the default; `jail: false` for `--no-sandbox`): the process forks the
//!   VMM into its cgroup and PID namespace and stays as its supervisor
//!   ([`jail::supervise`]); the VMM builds the VM, then enters the jail
//!   ([`jail::enter`]) before it starts a thread.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::console_log::ConsoleLog;
use super::jail::{self, cgroup::Limits, supervise::Leftovers, JailError};
use super::lock::{LockError, VmmLock};
use super::process::{self, Detached, PidFile, ProcessError, ReadyPipe};
use super::seccomp::Action;
use super::snapshot::{format, Snapshot, SnapshotError};
use super::spec::SpecError;
use super::threads::Threads;
use super::{memory, Exit, Vmm, VmmError, VmmSpec};

/// How the original process of a detached VMM that did not start begins its one line
/// to the launcher (the rest is the reason, on one line).
pub const LAUNCHER_ERROR: &str = "error: ";

/// Where a restored VM's state comes from: a snapshot directory.
#[derive(Debug, Clone)]
pub struct Restore {
    /// The directory holding `state` and `memory`.
    pub dir: PathBuf,
}

impl Restore {
    /// The state file's name in a snapshot directory.
    pub const STATE: &'static str = "state";
    /// The memory file's name in a snapshot directory.
    pub const MEMORY: &'static str = "memory";

    /// Opens and reads the snapshot: its state decoded, its memory file open.
    fn open(&self) -> Result<(Snapshot, File), SnapshotError> {
        let state = self.dir.join(Self::STATE);
        let bytes = std::fs::read(&state).map_err(|source| SnapshotError::Io {
            what: "reading the snapshot's state file",
            source,
        })?;
        let snapshot = format::decode(&bytes)?;
        let memory =
            File::open(self.dir.join(Self::MEMORY)).map_err(|source| SnapshotError::Io {
                what: "opening the snapshot's memory file",
                source,
            })?;
        Ok((snapshot, memory))
    }
}

/// What to run.
#[derive(Debug)]
pub enum Start {
    /// The VM a spec file describes: detached unless `foreground`; restored from a
    /// snapshot when `restore` says so.
    Spec {
        /// The spec (JSON).
        path: PathBuf,
        /// Stay in this process instead of detaching.
        foreground: bool,
        /// Restore this snapshot instead of booting.
        restore: Option<Restore>,
    },
    /// A VM built from arguments, in the foreground, serial output on stdout.
    Inline(Box<VmmSpec>),
}

/// How the entry ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This is the original process of a detached VMM, which started: its pid.
    Started(u32),
    /// The VM ran in this process and ended.
    Ended(Exit),
}

/// Why the VMM did not start, or how it failed.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The spec is invalid, or the VM could not be built or failed while it ran
    /// (including a guest fault).
    #[error(transparent)]
    Vmm(#[from] VmmError),
    /// Another VMM runs the VM, or its lock cannot be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Detaching, the console log or the pid file failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The jail could not be set up.
    #[error(transparent)]
    Jail(#[from] JailError),
    /// The detached VMM reported that it could not start (or died, or timed out).
    #[error("the VMM did not start: {why}")]
    NotStarted {
        /// The VMM's own message.
        why: String,
        /// The console log, which may say more.
        console_log: PathBuf,
    },
}

impl From<SpecError> for EntryError {
    fn from(e: SpecError) -> Self {
        EntryError::Vmm(e.into())
    }
}

/// Runs what `start` says. `launcher` receives the one line of a detached VMM's
/// original process (see the module); nothing else is written to it.
///
/// Detaching forks: call while the process has a single thread.
///
/// `seccomp` says what a system call outside a thread's filter gets; `None` runs
/// every thread unfiltered (`--no-seccomp`). `jail` runs the VMM in its jail
/// ([`jail`]); false runs it as this process, as root (`--no-sandbox`).
pub fn run(
    start: Start,
    seccomp: Option<Action>,
    jail: bool,
    launcher: &mut dyn Write,
) -> Result<Outcome, EntryError> {
    match start {
        Start::Spec {
            path,
            foreground,
            restore,
        } => {
            // Detaching leaves the working directory.
            let restore = restore.map(|r| Restore {
                dir: std::path::absolute(&r.dir).unwrap_or(r.dir),
            });
            let sandbox = Sandbox {
                seccomp,
                jail,
                restore,
            };
            run_spec(&path, foreground, sandbox, launcher)
        }
        Start::Inline(spec) => {
            if jail {
                supervise(&spec)?;
                super::process::close_inherited_fds(-1);
            }
            let vmm = Vmm::build(
                &spec,
                Box::new(std::io::stdout()),
                threads(&Sandbox {
                    seccomp,
                    jail,
                    restore: None,
                })?,
            )?;
            if jail {
                jail::enter()?;
                // As the init of its PID namespace, the VMM ignores a signal it has
                // no handler for: SIGTERM, SIGINT and SIGHUP stop it cleanly instead.
                vmm.stop_on_termination_signals()?;
            }
            Ok(Outcome::Ended(vmm.run()?))
        }
    }
}

/// What confines the VMM (and what it restores, if anything).
#[derive(Debug, Clone)]
struct Sandbox {
    seccomp: Option<Action>,
    jail: bool,
    restore: Option<Restore>,
}

/// Forks the VMM of `spec` into its cgroup and PID namespace; returns in the VMM (the
/// supervisor waits and exits: [`jail::supervise`]).
fn supervise(spec: &VmmSpec) -> Result<(), JailError> {
    let leftovers = Leftovers {
        lock: spec.lock_file_path(),
        files: [
            spec.control_socket.clone(),
            spec.console_socket_path(),
            spec.pid_file.clone(),
        ]
        .into_iter()
        .flatten()
        .collect(),
    };
    jail::supervise(Limits::for_vm(spec.memory.0, spec.cpus), leftovers)
}

/// The threads of a VMM: confined, their filters (a jailed VMM's, or not) compiled,
/// unless there are no filters.
fn threads(sandbox: &Sandbox) -> Result<Threads, VmmError> {
    match sandbox.seccomp {
        Some(action) => Ok(Threads::confined(action, sandbox.jail)?),
        None => Ok(Threads::unconfined()),
    }
}

fn run_spec(
    path: &Path,
    foreground: bool,
    sandbox: Sandbox,
    launcher: &mut dyn Write,
) -> Result<Outcome, EntryError> {
    let mut spec = VmmSpec::from_file(path)?;
    spec.validate()?;
    memory::check_size(spec.memory.0, memory::HostLimits::current()).map_err(VmmError::from)?;
    spec.absolutize();
    if foreground {
        return serve(&spec, sandbox, None);
    }
    let Some(log) = spec.console_log.clone() else {
        return Err(SpecError::NoConsoleLog.into());
    };
    match process::detach(&log, process::start_timeout())? {
        Detached::Parent(verdict) => {
            tell_launcher(launcher, &verdict);
            verdict
                .map(Outcome::Started)
                .map_err(|why| EntryError::NotStarted {
                    why,
                    console_log: log,
                })
        }
        Detached::Child(ready) => serve(&spec, sandbox, Some(ready)),
    }
}

/// The original process's one line to the launcher: the VMM's pid, or why it did not
/// start (on one line). The launcher may be gone; the VMM runs regardless.
fn tell_launcher(launcher: &mut dyn Write, verdict: &Result<u32, String>) {
    let _ = match verdict {
        Ok(pid) => writeln!(launcher, "{pid}"),
        Err(why) => writeln!(launcher, "{LAUNCHER_ERROR}{}", why.replace('\n', " ")),
    };
}

/// Fails when a process holds the VM's lock: another VMM runs it. (The VMM takes the
/// lock itself, and fails then too; this names the holder, which a jailed VMM cannot:
/// the kernel reports a holder outside its PID namespace as pid 0.)
fn refuse_a_second_vmm(spec: &VmmSpec) -> Result<(), LockError> {
    let Some(path) = spec.lock_file_path() else {
        return Ok(());
    };
    match super::lock::holder(&path) {
        Ok(Some(pid)) => Err(LockError::Held { path, pid }),
        _ => Ok(()),
    }
}

/// What a started VMM holds until it ends: the VM, its pid file, its lock.
type Held = (Vmm, Option<PidFile>, Option<VmmLock>);

/// Builds and runs the VM of a spec: the VM's lock first (held until the process
/// ends), serial output to the console log (stdout when there is none), pid file while
/// it runs, start-up reported through `ready`. Jailed, this is the VMM forked by its
/// supervisor.
fn serve(
    spec: &VmmSpec,
    sandbox: Sandbox,
    mut ready: Option<ReadyPipe>,
) -> Result<Outcome, EntryError> {
    if sandbox.jail {
        // Named from here: the VMM, in its own PID namespace, cannot see the holder.
        if let Err(e) = refuse_a_second_vmm(spec) {
            if let Some(ready) = ready {
                ready.report(Err(e.to_string()));
            }
            return Err(e.into());
        }
        if let Err(e) = supervise(spec) {
            if let Some(ready) = ready {
                ready.report(Err(e.to_string()));
            }
            return Err(e.into());
        }
        if ready.is_none() {
            super::process::close_inherited_fds(-1);
        }
    }
    if let Some(ready) = &mut ready {
        ready.announce();
    }
    let (vmm, pid_file, lock) = match start(spec, &sandbox, ready.is_some()) {
        Ok(held) => held,
        Err(e) => {
            if let Some(ready) = ready {
                ready.report(Err(e.to_string()));
            }
            return Err(e);
        }
    };
    if let Some(ready) = ready {
        ready.report(Ok(()));
    }
    let result = vmm.run();
    drop(pid_file);
    drop(lock);
    Ok(Outcome::Ended(result?))
}

/// Start-up of a spec's VM, up to serving its sockets; `detached` when stdout and
/// stderr are the console log. Jailed, everything is opened before the jail is
/// entered, and the first thread started after.
fn start(spec: &VmmSpec, sandbox: &Sandbox, detached: bool) -> Result<Held, EntryError> {
    let threads = threads(sandbox)?;
    let lock = spec
        .lock_file_path()
        .map(|path| VmmLock::acquire(&path))
        .transpose()?;
    let console: Box<dyn Write + Send> = match &spec.console_log {
        Some(path) if sandbox.jail => Box::new(ConsoleLog::open_for_jail(path, detached)?),
        Some(path) => Box::new(ConsoleLog::open(path, detached)?),
        None => Box::new(std::io::stdout()),
    };
    let vmm = match &sandbox.restore {
        None => Vmm::build(spec, console, threads)?,
        Some(restore) => {
            let (snapshot, memory) = restore.open().map_err(VmmError::from)?;
            let (vmm, refused) = Vmm::restore(spec, &snapshot, &memory, console, threads)?;
            if refused > 0 {
                eprintln!(
                    "vmctl vmm: restored from {}; KVM kept {refused} saved MSRs at their reset values",
                    restore.dir.display()
                );
            }
            vmm
        }
    };
    let pid_file = spec.pid_file.as_deref().map(PidFile::write).transpose()?;
    if sandbox.jail {
        jail::enter()?;
    }
    vmm.stop_on_termination_signals()?;
    Ok((vmm, pid_file, lock))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_file(dir: &Path, json: &str) -> PathBuf {
        let path = dir.join("vmm.json");
        std::fs::write(&path, json).unwrap();
        path
    }

    fn run_spec_file(path: PathBuf, foreground: bool) -> (Result<Outcome, EntryError>, Vec<u8>) {
        let mut launcher = Vec::new();
        let start = Start::Spec {
            path,
            foreground,
            restore: None,
        };
        let result = run(start, None, false, &mut launcher);
        (result, launcher)
    }

    /// Checks that fail before anything forks: nothing is written to the launcher, and
    /// the error is the engine's own.
    #[test]
    fn a_bad_spec_fails_before_detaching() {
        let dir = tempfile::tempdir().unwrap();
        let (result, launcher) = run_spec_file(dir.path().join("missing.json"), false);
        assert!(
            matches!(
                result,
                Err(EntryError::Vmm(VmmError::Spec(SpecError::Read { .. })))
            ),
            "{result:?}"
        );
        assert!(launcher.is_empty());

        let path = spec_file(dir.path(), r#"{"kernel": "/proc/self/exe", "cpus": 0}"#);
        let (result, launcher) = run_spec_file(path, false);
        let err = result.unwrap_err();
        assert!(
            err.to_string().contains("cpus must be between 1 and"),
            "{err}"
        );
        assert!(launcher.is_empty());

        let path = spec_file(
            dir.path(),
            r#"{"kernel": "/proc/self/exe", "memory": "100TiB"}"#,
        );
        let (result, _) = run_spec_file(path, true);
        assert!(
            matches!(result, Err(EntryError::Vmm(VmmError::Memory(_)))),
            "{result:?}"
        );
    }

    #[test]
    fn detaching_needs_a_console_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = spec_file(dir.path(), r#"{"kernel": "/proc/self/exe"}"#);
        let (result, launcher) = run_spec_file(path, false);
        assert!(
            matches!(
                result,
                Err(EntryError::Vmm(VmmError::Spec(SpecError::NoConsoleLog)))
            ),
            "{result:?}"
        );
        assert!(launcher.is_empty());
    }

    #[test]
    fn the_launcher_gets_one_line() {
        let mut launcher = Vec::new();
        tell_launcher(&mut launcher, &Ok(42));
        tell_launcher(&mut launcher, &Err("disk /d\nis in use".into()));
        assert_eq!(
            String::from_utf8(launcher).unwrap(),
            format!("42\n{LAUNCHER_ERROR}disk /d is in use\n")
        );
    }
}
