//! The VMM's supervisor: the process that makes the VMM's cgroup, forks the VMM as the
//! init of a new PID namespace, and waits for it.
//!
//! The supervisor stays root, outside every namespace and outside the VMM's cgroup
//! (the VMM moves itself in, first thing), and does nothing but wait:
//! when the VMM ends it removes what the jailed VMM can no longer reach — its control
//! and console sockets and its pid file, only while no other VMM holds the VM's lock —
//! and the cgroup, then exits as the VMM did (same code, or killed by the same
//! signal, without a core dump). SIGTERM, SIGINT and SIGHUP sent to it are passed on
//! to the VMM. The VMM gets SIGKILL if the supervisor dies first.
//!
//! The runtime never deals with the supervisor: the VMM (the holder of the VM's lock)
//! is what it asks and signals, by its host pid.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::cgroup::{Group, Limits};
use super::{JailError, HOST_PID};
use crate::vmm::lock::VmmLock;

/// The supervisor's thread name (`comm`).
pub const SUPERVISOR_NAME: &std::ffi::CStr = c"vmm-supervisor";

/// The VMM, for the supervisor's signal handler.
static VMM: AtomicI32 = AtomicI32::new(0);

/// Why the VMM could not be forked into its PID namespace.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// A system call failed.
    #[error("the VMM's jail: {step} failed: {source}")]
    Sys {
        /// What was being done.
        step: &'static str,
        /// The errno.
        source: nix::Error,
    },
    /// The VMM's pid on the host cannot be read.
    #[error("the VMM's jail: cannot read the VMM's host pid from /proc/self: {0}")]
    HostPid(std::io::Error),
}

/// What the supervisor removes once the VMM has ended.
#[derive(Debug, Default)]
pub struct Leftovers {
    /// The VM's lock: the files are only removed while the supervisor can take it.
    pub lock: Option<PathBuf>,
    /// The sockets and the pid file.
    pub files: Vec<PathBuf>,
}

/// Makes the VMM's cgroup with `limits` and forks the VMM into it, as the init of a
/// new PID namespace. Returns in the VMM; the supervisor never returns (see the
/// module). Call while the process is single-threaded.
pub fn supervise(limits: Limits, leftovers: Leftovers) -> Result<(), JailError> {
    let name = format!("{}{}", super::cgroup::PREFIX, std::process::id());
    let group = Group::create(&name, limits)?;
    let forked = unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|source| SuperviseError::Sys {
            step: "unshare(CLONE_NEWPID)",
            source,
        })
        .and_then(|()| {
            // SAFETY: the process is single-threaded (documented precondition).
            unsafe { fork() }.map_err(|source| SuperviseError::Sys {
                step: "fork",
                source,
            })
        });
    match forked {
        Err(e) => {
            group.remove();
            Err(e.into())
        }
        Ok(ForkResult::Child) => {
            // Into the cgroup first, before the VMM allocates anything.
            group.enter_self()?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|source| {
                SuperviseError::Sys {
                    step: "prctl(PR_SET_PDEATHSIG)",
                    source,
                }
            })?;
            // /proc is still the host's: it names this process by its host pid.
            let pid = std::fs::read_link("/proc/self")
                .map_err(SuperviseError::HostPid)?
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| SuperviseError::HostPid(std::io::Error::other("not a pid")))?;
            HOST_PID.store(pid, Ordering::Relaxed);
            Ok(())
        }
        Ok(ForkResult::Parent { child }) => wait(child, group, limits, &leftovers),
    }
}

extern "C" fn forward(sig: libc::c_int) {
    let pid = VMM.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; `pid` is the supervisor's own child.
        unsafe { libc::kill(pid, sig) };
    }
}

/// The supervisor: waits for the VMM, cleans up, exits as it did.
fn wait(vmm: Pid, group: Group, limits: Limits, leftovers: &Leftovers) -> ! {
    VMM.store(vmm.as_raw(), Ordering::Relaxed);
    // Named apart from its VMM (`ps`, /proc/PID/comm): both have the same command line.
    let _ = nix::sys::prctl::set_name(SUPERVISOR_NAME);
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: `forward` only calls kill, which is async-signal-safe.
        let _ = unsafe { signal::signal(sig, SigHandler::Handler(forward)) };
    }
    close_fds_above_stderr();
    let status = loop {
        match waitpid(vmm, None) {
            Err(nix::Error::EINTR) => continue,
            other => break other,
        }
    };
    clean_up(leftovers);
    if let Ok(WaitStatus::Signaled(_, sig, _)) = status {
        say_how_it_was_killed(vmm, sig, &group, limits);
    }
    group.remove();
    match status {
        Ok(WaitStatus::Signaled(_, sig, _)) => die_by(sig),
        Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
        _ => std::process::exit(1),
    }
}

/// Says on stderr (a detached VMM's console log) that the VMM was killed, and whether
/// for its memory limit: the VMM cannot say it itself.
fn say_how_it_was_killed(vmm: Pid, sig: Signal, group: &Group, limits: Limits) {
    let why = if group.oom_killed() {
        format!(
            " by the kernel: it went past its memory limit ({} MiB: guest memory + {} MiB)",
            limits.memory >> 20,
            super::cgroup::MEMORY_OVERHEAD >> 20
        )
    } else {
        String::new()
    };
    eprintln!("vmctl vmm: the VMM (pid {vmm}) was killed by {sig}{why}");
}

/// Removes the sockets and pid file, unless another VMM holds the VM's lock (it has
/// started since and they are its) or the lock file is gone (the runtime removed the
/// VM's files already; a lock file made now would be left behind).
fn clean_up(leftovers: &Leftovers) {
    let lock = match &leftovers.lock {
        Some(path) => match VmmLock::acquire_existing(path) {
            Ok(lock) => Some(lock),
            Err(_) => return,
        },
        None => None,
    };
    for file in &leftovers.files {
        let _ = std::fs::remove_file(file);
    }
    drop(lock);
}

/// Closes every fd above stderr: the supervisor holds nothing of the VM (the start-up
/// pipe in particular: the launcher must see it close when the VMM ends).
fn close_fds_above_stderr() {
    let fds: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in fds.into_iter().filter(|&fd| fd > 2) {
        // SAFETY: the supervisor only waits and exits from here on; no object that
        // owns one of these fds is used again (the directory listing's own fd is
        // already closed: EBADF, ignored).
        unsafe { libc::close(fd) };
    }
}

/// Ends this process by `sig`, as the VMM ended, without a core dump.
fn die_by(sig: Signal) -> ! {
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    // SAFETY: restoring the default action of a signal.
    let _ = unsafe { signal::signal(sig, SigHandler::SigDfl) };
    let mut set = signal::SigSet::empty();
    set.add(sig);
    let _ = set.thread_unblock();
    let _ = signal::raise(sig);
    std::process::exit(128 + sig as i32)
}
