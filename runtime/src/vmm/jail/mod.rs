//! The VMM's jail (issue 12), the process-wide half of its sandbox; the per-thread
//! half is [`super::seccomp`]. In the order a VMM applies it (Firecracker's jailer
//! order):
//!
//! 1. [`supervise`]: a cgroup with memory and pids limits ([`cgroup`]), then a new PID
//!    namespace: the VMM is the init (pid 1) of its own, a fork of the supervisor, which
//!    waits for it as root outside every namespace, removes its sockets and pid file
//!    and its cgroup when it ends, and exits as it did.
//! 2. The VMM opens everything the VM needs while it still sees the host as root:
//!    its lock, the console log, `/dev/kvm`, the kernel and initrd, the disks, the taps
//!    (`TUNSETIFF`), the control and console sockets (bound on the host's paths).
//! 3. [`enter`]: a new mount and IPC namespace whose root is an empty read-only tmpfs
//!    ([`mount`]), then no privileges ([`creds`]): its own uid and gid, no capability
//!    (the bounding set too), `no_new_privs`, no environment, rlimits. Only then is
//!    the first thread started and the first filter installed.
//!
//! After that the VMM holds file descriptors and nothing else: no path of the host
//! resolves in its root, and its uid owns no file. `docs/sandbox.md` says the same
//! for users.

pub mod cgroup;
pub mod cgroupfs;
pub mod creds;
pub mod mount;
pub mod supervise;

use std::sync::atomic::{AtomicU32, Ordering};

pub use supervise::supervise;

/// Why the jail could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// The cgroup could not be made.
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    /// The PID namespace or the supervisor could not be set up.
    #[error(transparent)]
    Supervise(#[from] supervise::SuperviseError),
    /// The mount namespace could not be set up.
    #[error(transparent)]
    Mount(#[from] mount::MountError),
    /// Privileges could not be dropped.
    #[error(transparent)]
    Creds(#[from] creds::CredsError),
}

/// This process's pid in the host's PID namespace, once [`supervise`] made it the init
/// of its own (where its pid is 1); 0 until then.
static HOST_PID: AtomicU32 = AtomicU32::new(0);

/// This process's pid as the host sees it: what the launcher, the pid file and the
/// control socket's `status` report. Outside a jail, the pid.
pub fn host_pid() -> u32 {
    match HOST_PID.load(Ordering::Relaxed) {
        0 => std::process::id(),
        pid => pid,
    }
}

/// Jails this process (see the module's step 3). Call after the VM is built and
/// before any thread is started: a change of namespace or uid reaches only the
/// calling thread. Closes no fd: everything open now is the VM's.
pub fn enter() -> Result<(), JailError> {
    let nofile = creds::nofile_limit(creds::highest_fd());
    creds::clear_environment()?;
    mount::enter()?;
    creds::drop_all(host_pid(), nofile)?;
    Ok(())
}
