//! A host's named network namespace (`/run/netns/<name>`), made and removed the way
//! `ip netns add` / `ip netns delete` do, and the marker that says vmctl made it.
//!
//! - [`exists`]: whether `/run/netns/<name>` is there. A declared namespace that does
//!   not exist yet is observed as an empty network side.
//! - [`observe`]: the namespace as the plan sees it (exists, who made it, who uses it);
//!   the plan's `netns` steps call [`ensure`] and [`release`].
//! - [`ensure`]: makes the namespace when it is missing: `/run/netns` as a shared mount
//!   point, an empty file `/run/netns/<name>`, and on a thread of its own
//!   `unshare(CLONE_NEWNET)` and a bind mount of `/proc/thread-self/ns/net` onto that
//!   file; then `lo` up inside it. The marker `/run/vmctl/netns/<name>.json`
//!   (`{format, name, created-by, projects}`) records that vmctl made it, for which
//!   project, and every project that uses it since: a project that finds a namespace
//!   vmctl made joins its `projects`.
//! - [`release`]: takes the project out of `projects`; the last project out removes the
//!   namespace, when nothing but `lo` is left in it (`umount2(MNT_DETACH)` and unlink).
//!   A namespace without a marker was not made by vmctl and is never removed.
//!
//! The marker lives beside the namespace, not in a state dir: two projects with
//! different state dirs can share a namespace, and both must see one list of users.
//! Like `/run/netns/<name>`, it is gone after a reboot. Changes to it are made under an
//! `flock` of `/run/vmctl/netns`, so two projects applying at once do not lose each
//! other. A marker of the previous format (`<state-dir>/<project>/netns.json`, one
//! project) is still read, and moved to the new place on the next change.
//!
//! The calling thread never changes namespace: the unshare happens on a thread that
//! ends right after the bind mount, and everything inside the namespace goes through
//! [`Netlink::run`].

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use rtnetlink::LinkUnspec;
use serde::{Deserialize, Serialize};
use vmctl_planner::live::LiveNetns;

use super::session::{Netlink, NetlinkError};
use crate::host::fsutil;
use crate::host::mark::is_safe_file_name;
use crate::host::records;

/// Where named network namespaces live (as iproute2 keeps them).
pub const NETNS_DIR: &str = "/run/netns";

/// The previous format's marker file name under `<state-dir>/<project>/`.
pub const MARKER_FILE: &str = "netns.json";

/// Errors of making or removing a named network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace name {name:?} is not valid (it must be a plain file name)")]
    InvalidName { name: String },
    #[error("cannot make {dir} a shared mount point for network namespaces")]
    RunDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create network namespace {name:?}")]
    Create {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot start a thread to create network namespace {name:?}")]
    Thread {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot bring up the loopback interface of network namespace {name:?}")]
    Loopback {
        name: String,
        #[source]
        source: NetlinkError,
    },
    #[error("cannot list the interfaces of network namespace {name:?}")]
    Inspect {
        name: String,
        #[source]
        source: NetlinkError,
    },
    #[error("cannot remove network namespace {name:?}")]
    Remove {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write or read the netns marker {path}")]
    Marker {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where the markers of the namespaces vmctl made are kept.
pub const MARKER_DIR: &str = "/run/vmctl/netns";

/// What `/run/vmctl/netns/<name>.json` says: vmctl made namespace `name` (for project
/// `created_by`), and `projects` use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NetnsMarker {
    /// The marker's format (`format-version`, as every record of vmctl's); a marker
    /// without one is of format 1.
    #[serde(rename = "format-version", default = "marker_format")]
    pub format: u32,
    pub name: String,
    pub created_by: String,
    /// Every project that uses the namespace (a marker of format 1: `created_by` only).
    #[serde(default)]
    pub projects: BTreeSet<String>,
}

fn marker_format() -> u32 {
    1
}

impl NetnsMarker {
    /// The marker of a namespace `project` just made.
    fn made(name: &str, project: &str) -> Self {
        NetnsMarker {
            format: records::version::NETNS_MARKER,
            name: name.into(),
            created_by: project.into(),
            projects: BTreeSet::from([project.to_owned()]),
        }
    }

    /// Adds `project` to the users; whether it was new.
    pub fn join(&mut self, project: &str) -> bool {
        self.format = records::version::NETNS_MARKER;
        self.projects.insert(project.to_owned())
    }

    /// Takes `project` out of the users; the ones left.
    pub fn leave(&mut self, project: &str) -> Vec<String> {
        self.format = records::version::NETNS_MARKER;
        self.projects.remove(project);
        self.projects.iter().cloned().collect()
    }
}

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// The namespace was there already (vmctl leaves it alone on destroy unless its
    /// marker says this project made it).
    Existed,
    /// vmctl made it now, and wrote the marker.
    Created,
}

/// What [`release`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// Removed, with the marker.
    Removed,
    /// Not made by vmctl for this project (no marker, or another name or project): kept.
    NotOurs,
    /// Ours, but interfaces besides `lo` are still in it: kept, with the marker (and the
    /// project still among its users).
    InUse { interfaces: Vec<String> },
    /// Ours, and other projects still use it: kept, without this project.
    Shared { projects: Vec<String> },
    /// Ours, and already gone: the marker was removed.
    Gone,
}

/// `/run/netns/<name>`.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Has `command`'s child enter the network namespace `ns` (an open
/// `/run/netns/<name>`) between fork and exec, before any other `pre_exec` added after
/// this. `ns` must stay open until the command is spawned: the child uses its
/// descriptor.
pub fn enter_in_child(command: &mut std::process::Command, ns: &File) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = ns.as_raw_fd();
    // SAFETY: setns is async-signal-safe; between fork and exec the child touches
    // nothing but this descriptor, which the caller keeps open until the spawn.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The marker's path for namespace `name`.
pub fn marker_path(name: &str) -> PathBuf {
    Path::new(MARKER_DIR).join(format!("{name}.json"))
}

/// A netns marker of any format up to this build's ([`records::version::NETNS_MARKER`]).
fn read_record(path: &Path) -> io::Result<Option<NetnsMarker>> {
    records::read_record(path, records::version::NETNS_MARKER)
}

/// Where the previous format kept `project`'s marker under `state_dir`.
pub fn legacy_marker_path(state_dir: &Path, project: &str) -> PathBuf {
    state_dir.join(project).join(MARKER_FILE)
}

/// Reads the marker of namespace `name`, if vmctl made it: the shared one, or else the
/// previous format's marker of `project` (when it names `name`).
pub fn read_marker(
    state_dir: &Path,
    project: &str,
    name: &str,
) -> Result<Option<NetnsMarker>, NetnsError> {
    let path = marker_path(name);
    let marker_err = |path: PathBuf| move |source| NetnsError::Marker { path, source };
    if let Some(marker) = read_record(&path).map_err(marker_err(path))? {
        return Ok(Some(marker));
    }
    let legacy = legacy_marker_path(state_dir, project);
    let old: Option<NetnsMarker> = read_record(&legacy).map_err(marker_err(legacy))?;
    Ok(old
        .filter(|m| m.name == name && m.created_by == project)
        .map(|mut m| {
            m.join(project);
            m
        }))
}

/// Writes the marker (`None`: removes it) and drops the previous format's marker of
/// `project`.
fn write_marker(
    state_dir: &Path,
    project: &str,
    name: &str,
    marker: Option<&NetnsMarker>,
) -> Result<(), NetnsError> {
    let path = marker_path(name);
    let result = match marker {
        Some(marker) => fsutil::write_json_atomic(&path, marker),
        None => fsutil::remove_if_exists(&path),
    };
    result.map_err(|source| NetnsError::Marker {
        path: path.clone(),
        source,
    })?;
    let legacy = legacy_marker_path(state_dir, project);
    let stale = read_record(&legacy)
        .ok()
        .flatten()
        .is_some_and(|m| m.name == name);
    if stale {
        fsutil::remove_if_exists(&legacy).map_err(|source| NetnsError::Marker {
            path: legacy,
            source,
        })?;
    }
    Ok(())
}

/// Holds the `flock` of [`MARKER_DIR`] (made 0700 if missing) while markers change.
fn lock_markers() -> Result<Flock<File>, NetnsError> {
    let dir = Path::new(MARKER_DIR);
    let err = |source: io::Error| NetnsError::Marker {
        path: dir.to_owned(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let file = File::open(dir).map_err(err)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| err(e.into()))
}

fn check_name(name: &str) -> Result<(), NetnsError> {
    if is_safe_file_name(name) {
        Ok(())
    } else {
        Err(NetnsError::InvalidName { name: name.into() })
    }
}

/// Whether network namespace `name` exists. A name that is not a plain file name is
/// reported as existing, so that entering it fails with a clear error.
pub fn exists(name: &str) -> bool {
    if !is_safe_file_name(name) {
        return true;
    }
    match fs::symlink_metadata(path_of(name)) {
        Ok(_) => true,
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

/// What the host has of network namespace `name`, for the plan: `None` when it does
/// not exist; else who made it and who uses it, by its marker (none: vmctl did not make
/// it). A name that is not a plain file name is reported as a namespace vmctl did not
/// make, so that nothing is ever done to it.
pub fn observe(
    state_dir: &Path,
    project: &str,
    name: &str,
) -> Result<Option<LiveNetns>, NetnsError> {
    if !exists(name) {
        return Ok(None);
    }
    let marker = if is_safe_file_name(name) {
        read_marker(state_dir, project, name)?
    } else {
        None
    };
    Ok(Some(LiveNetns {
        name: name.into(),
        created_by: marker.as_ref().map(|m| m.created_by.clone()),
        projects: marker.map_or_else(Vec::new, |m| m.projects.into_iter().collect()),
    }))
}

/// Makes network namespace `name` unless it exists, and records in its marker that
/// vmctl made it for `project`. When it exists and vmctl made it (for any project),
/// `project` joins its users; one vmctl did not make is left alone.
pub fn ensure(state_dir: &Path, project: &str, name: &str) -> Result<Ensured, NetnsError> {
    check_name(name)?;
    let _lock = lock_markers()?;
    if exists(name) {
        if let Some(mut marker) = read_marker(state_dir, project, name)? {
            if marker.join(project) || marker.format < 2 {
                write_marker(state_dir, project, name, Some(&marker))?;
            }
        }
        return Ok(Ensured::Existed);
    }
    // The marker first: a crash after the namespace is made must not leave one vmctl
    // would never remove. It is taken back when vmctl did not make it after all.
    write_marker(
        state_dir,
        project,
        name,
        Some(&NetnsMarker::made(name, project)),
    )?;
    let made = create(name);
    match made {
        Ok(true) => {}
        Ok(false) => {
            // Someone else made it between the check and now: not ours.
            let _ = write_marker(state_dir, project, name, None);
            return Ok(Ensured::Existed);
        }
        Err(e) => {
            let _ = write_marker(state_dir, project, name, None);
            return Err(e);
        }
    }
    Netlink::run(Some(name), |nl| {
        let Some(lo) = nl.link_by_name("lo")? else {
            return Ok(());
        };
        if lo.up {
            return Ok(());
        }
        let message = LinkUnspec::new_with_index(lo.index).up().build();
        nl.change_link(lo.index, message)
    })
    .map_err(|source| NetnsError::Loopback {
        name: name.into(),
        source,
    })?;
    Ok(Ensured::Created)
}

/// Takes `project` out of the users of network namespace `name`, and removes the
/// namespace when vmctl made it, no other project uses it and nothing but `lo` is left
/// in it.
pub fn release(state_dir: &Path, project: &str, name: &str) -> Result<Released, NetnsError> {
    check_name(name)?;
    let _lock = lock_markers()?;
    let Some(mut marker) = read_marker(state_dir, project, name)? else {
        return Ok(Released::NotOurs);
    };
    let projects = marker.leave(project);
    if !exists(name) {
        write_marker(state_dir, project, name, None)?;
        return Ok(Released::Gone);
    }
    if !projects.is_empty() {
        write_marker(state_dir, project, name, Some(&marker))?;
        return Ok(Released::Shared { projects });
    }
    let links =
        Netlink::run(Some(name), |nl| nl.links()).map_err(|source| NetnsError::Inspect {
            name: name.into(),
            source,
        })?;
    let interfaces: Vec<String> = links
        .into_iter()
        .map(|l| l.name)
        .filter(|n| n != "lo")
        .collect();
    if !interfaces.is_empty() {
        // Not removed: the project stays among its users, so that its next plan still
        // deletes it once it is empty.
        marker.join(project);
        write_marker(state_dir, project, name, Some(&marker))?;
        return Ok(Released::InUse { interfaces });
    }
    remove(name)?;
    write_marker(state_dir, project, name, None)?;
    Ok(Released::Removed)
}

/// Creates `/run/netns/<name>` as `ip netns add` does. `Ok(false)` when the file
/// appeared meanwhile (someone else made the namespace).
fn create(name: &str) -> Result<bool, NetnsError> {
    let err = |source| NetnsError::Create {
        name: name.into(),
        source,
    };
    share_run_dir()?;
    let path = path_of(name);
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(err(e)),
    }
    // A thread of its own leaves the new namespace behind when it ends; this thread and
    // the machine's namespace are never changed.
    let bind = std::thread::Builder::new()
        .name("vmctl-netns".into())
        .spawn({
            let path = path.clone();
            move || -> io::Result<()> {
                unshare(CloneFlags::CLONE_NEWNET)?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )?;
                Ok(())
            }
        })
        .map_err(|source| NetnsError::Thread {
            name: name.into(),
            source,
        })?;
    let result = match bind.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    if let Err(e) = result {
        let _ = fs::remove_file(&path);
        return Err(err(e));
    }
    Ok(true)
}

/// Makes `/run/netns` a shared mount point (a bind mount of itself when it is not a
/// mount point yet), so a namespace mounted there shows in every mount namespace that
/// shares it, as iproute2 does.
fn share_run_dir() -> Result<(), NetnsError> {
    let dir = Path::new(NETNS_DIR);
    let err = |source: io::Error| NetnsError::RunDir {
        dir: dir.to_owned(),
        source,
    };
    fs::create_dir_all(dir).map_err(err)?;
    let shared = || {
        mount(
            None::<&str>,
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| err(e.into()))?;
            shared().map_err(|e| err(e.into()))
        }
        Err(e) => Err(err(e.into())),
    }
}

/// Unmounts and unlinks `/run/netns/<name>`, as `ip netns delete` does.
fn remove(name: &str) -> Result<(), NetnsError> {
    let path = path_of(name);
    let err = |source| NetnsError::Remove {
        name: name.into(),
        source,
    };
    match umount2(&path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a bare file left by a failed create).
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(err(e.into())),
    }
    fsutil::remove_if_exists(&path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_previous_format_marker_is_read_and_others_are_not_ours() {
        // The markers' lock is under /run/vmctl, which only root can make.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(std::env::var_os("CI").is_none(), "CI runs this as root");
            eprintln!("SKIPPED: needs root (it locks {MARKER_DIR})");
            return;
        }
        let state = tempfile::tempdir().unwrap();
        let name = format!("vmctl-unit-{}", std::process::id());
        assert_eq!(read_marker(state.path(), "lab", &name).unwrap(), None);
        std::fs::create_dir_all(state.path().join("lab")).unwrap();
        // What the previous release wrote: one project, no format, no list.
        let old = format!("{{\"name\": \"{name}\", \"created-by\": \"lab\"}}");
        std::fs::write(legacy_marker_path(state.path(), "lab"), old).unwrap();
        let marker = read_marker(state.path(), "lab", &name).unwrap().unwrap();
        assert_eq!(marker.created_by, "lab");
        assert_eq!(marker.projects, BTreeSet::from(["lab".to_owned()]));
        // It speaks for its own project and namespace only.
        assert_eq!(read_marker(state.path(), "other", &name).unwrap(), None);
        assert_eq!(
            read_marker(state.path(), "lab", "someone-elses").unwrap(),
            None
        );
        assert_eq!(
            release(state.path(), "lab", "someone-elses").unwrap(),
            Released::NotOurs
        );
        assert_eq!(
            release(state.path(), "other", &name).unwrap(),
            Released::NotOurs
        );
        // The namespace is gone: releasing drops the old marker (and writes none).
        assert_eq!(release(state.path(), "lab", &name).unwrap(), Released::Gone);
        assert!(!legacy_marker_path(state.path(), "lab").exists());
        assert!(!marker_path(&name).exists());
    }

    #[test]
    fn users_join_and_leave() {
        let mut marker = NetnsMarker::made("ns", "a");
        assert!(marker.join("b"));
        assert!(!marker.join("a"));
        assert_eq!(marker.leave("a"), ["b"]);
        assert_eq!(marker.leave("c"), ["b"]);
        assert!(marker.leave("b").is_empty());
        let text = serde_json::to_string(&NetnsMarker::made("ns", "a")).unwrap();
        assert!(text.contains("\"format-version\":2"), "{text}");
        assert!(text.contains("\"projects\":[\"a\"]"), "{text}");
    }

    #[test]
    fn bad_names_are_refused() {
        let state = tempfile::tempdir().unwrap();
        for name in ["", "../x", "a/b", ".hidden"] {
            assert!(matches!(
                ensure(state.path(), "lab", name),
                Err(NetnsError::InvalidName { .. })
            ));
            assert!(exists(name), "{name:?} must not look missing");
        }
        assert!(!exists("vmctl-surely-not-a-namespace-0"));
    }

    #[test]
    fn observing_a_missing_or_badly_named_netns() {
        let state = tempfile::tempdir().unwrap();
        let missing = observe(state.path(), "lab", "vmctl-surely-not-a-namespace-0");
        assert_eq!(missing.unwrap(), None);
        // A name that is not a file name is never vmctl's: nothing is ever done to it.
        let bad = observe(state.path(), "lab", "../x").unwrap().unwrap();
        assert_eq!((bad.created_by, bad.projects), (None, Vec::new()));
    }
}
