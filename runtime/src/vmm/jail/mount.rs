//! The VMM's root: a new mount namespace (and IPC namespace) whose root is an empty,
//! read-only tmpfs. The host's tree is detached from it, so no path of the host — no
//! `/etc`, `/proc`, `/dev`, no volume, no other VM's files — resolves inside; the VMM
//! works through the file descriptors it opened before.
//!
//! The new root is mounted on `/proc` of the new namespace (a directory every host
//! has, and the first thing to hide), then `pivot_root` makes it `/` and the old root
//! is lazily unmounted. Nothing is made on the host: every mount lives and dies with
//! the VMM's namespace.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::pivot_root;

/// Where the new root is mounted before it becomes `/`.
const NEW_ROOT: &str = "/proc";
/// The old root under the new one, until it is unmounted.
const OLD_ROOT: &str = "/proc/.old";

/// Why the mount namespace could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A system call failed.
    #[error("the VMM's jail: {step} failed: {source}")]
    Sys {
        /// What was being done.
        step: &'static str,
        /// The errno.
        source: nix::Error,
    },
}

fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> MountError {
    move |source| MountError::Sys { step, source }
}

/// Enters a new mount and IPC namespace whose root is an empty read-only tmpfs (see
/// the module). The calling process must be single-threaded and root.
pub fn enter() -> Result<(), MountError> {
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC)
        .map_err(sys("unshare(CLONE_NEWNS | CLONE_NEWIPC)"))?;
    // Nothing done here propagates back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("making / private"))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        NEW_ROOT,
        Some("tmpfs"),
        flags,
        Some("size=4k,nr_inodes=4,mode=0555"),
    )
    .map_err(sys("mounting the new root"))?;
    nix::unistd::mkdir(OLD_ROOT, nix::sys::stat::Mode::S_IRWXU)
        .map_err(sys("making the old root's mount point"))?;
    pivot_root(NEW_ROOT, OLD_ROOT).map_err(sys("pivot_root"))?;
    nix::unistd::chdir("/").map_err(sys("chdir /"))?;
    umount2("/.old", MntFlags::MNT_DETACH).map_err(sys("unmounting the old root"))?;
    std::fs::remove_dir("/.old").map_err(|e| MountError::Sys {
        step: "removing the old root's mount point",
        source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(sys("making the new root read-only"))?;
    Ok(())
}
