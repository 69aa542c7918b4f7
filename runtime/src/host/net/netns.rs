//! A host's named network namespace (`/run/netns/<name>`), made and removed the way
//! `ip netns add` / `ip netns delete` do, and the marker that says vmctl made it.
//!
//! - [`exists`]: whether `/run/netns/<name>` is there. A declared namespace that does
//!   not exist yet is observed as an empty network side.
//! - [`ensure`]: makes the namespace when it is missing: `/run/netns` as a shared mount
//!   point, an empty file `/run/netns/<name>`, and on a thread of its own
//!   `unshare(CLONE_NEWNET)` and a bind mount of `/proc/thread-self/ns/net` onto that
//!   file; then `lo` up inside it. The marker `<state-dir>/<project>/netns.json`
//!   (`{name, created-by}`) records that vmctl made it for this project.
//! - [`release`]: removes the namespace only when the marker says this project made
//!   it and nothing but `lo` is left in it (`umount2(MNT_DETACH)` and unlink).
//!
//! The calling thread never changes namespace: the unshare happens on a thread that
//! ends right after the bind mount, and everything inside the namespace goes through
//! [`Netlink::run`].

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use rtnetlink::LinkUnspec;
use serde::{Deserialize, Serialize};

use super::session::{Netlink, NetlinkError};
use crate::host::fsutil;
use crate::host::mark::is_safe_file_name;
use crate::host::records;

/// Where named network namespaces live (as iproute2 keeps them).
pub const NETNS_DIR: &str = "/run/netns";

/// The marker's file name under `<state-dir>/<project>/`.
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

/// What `<state-dir>/<project>/netns.json` says: vmctl made namespace `name` for
/// project `created_by`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NetnsMarker {
    pub name: String,
    pub created_by: String,
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
    /// Ours, but interfaces besides `lo` are still in it: kept, with the marker.
    InUse { interfaces: Vec<String> },
    /// Ours, and already gone: the marker was removed.
    Gone,
}

/// `/run/netns/<name>`.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// The marker's path for `project` under `state_dir`.
pub fn marker_path(state_dir: &Path, project: &str) -> PathBuf {
    state_dir.join(project).join(MARKER_FILE)
}

/// Reads the project's marker, if any.
pub fn read_marker(state_dir: &Path, project: &str) -> Result<Option<NetnsMarker>, NetnsError> {
    let path = marker_path(state_dir, project);
    records::read_record(&path, records::version::NETNS_MARKER)
        .map_err(|source| NetnsError::Marker { path, source })
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

/// Makes network namespace `name` unless it exists; when it makes it, records that in
/// `<state_dir>/<project>/netns.json`.
pub fn ensure(state_dir: &Path, project: &str, name: &str) -> Result<Ensured, NetnsError> {
    check_name(name)?;
    if exists(name) {
        return Ok(Ensured::Existed);
    }
    // The marker first: a crash after the namespace is made must not leave one vmctl
    // would never remove. It is taken back when vmctl did not make it after all.
    let marker = marker_path(state_dir, project);
    let write_marker = || -> io::Result<()> {
        fs::create_dir_all(state_dir.join(project))?;
        records::write_record(
            &marker,
            records::version::NETNS_MARKER,
            &NetnsMarker {
                name: name.into(),
                created_by: project.into(),
            },
        )
    };
    write_marker().map_err(|source| NetnsError::Marker {
        path: marker.clone(),
        source,
    })?;
    let made = create(name);
    match made {
        Ok(true) => {}
        Ok(false) => {
            // Someone else made it between the check and now: not ours.
            let _ = fsutil::remove_if_exists(&marker);
            return Ok(Ensured::Existed);
        }
        Err(e) => {
            let _ = fsutil::remove_if_exists(&marker);
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

/// Removes network namespace `name` if the project's marker says vmctl made it for
/// `project` and nothing but `lo` is left in it.
pub fn release(state_dir: &Path, project: &str, name: &str) -> Result<Released, NetnsError> {
    check_name(name)?;
    let ours =
        read_marker(state_dir, project)?.is_some_and(|m| m.name == name && m.created_by == project);
    if !ours {
        return Ok(Released::NotOurs);
    }
    let marker = marker_path(state_dir, project);
    let drop_marker = || {
        fsutil::remove_if_exists(&marker).map_err(|source| NetnsError::Marker {
            path: marker.clone(),
            source,
        })
    };
    if !exists(name) {
        drop_marker()?;
        return Ok(Released::Gone);
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
        return Ok(Released::InUse { interfaces });
    }
    remove(name)?;
    drop_marker()?;
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
    fn marker_round_trips_and_others_are_not_ours() {
        let state = tempfile::tempdir().unwrap();
        assert_eq!(read_marker(state.path(), "lab").unwrap(), None);
        std::fs::create_dir_all(state.path().join("lab")).unwrap();
        let marker = NetnsMarker {
            name: "vmctl-x".into(),
            created_by: "lab".into(),
        };
        fsutil::write_json_atomic(&marker_path(state.path(), "lab"), &marker).unwrap();
        let text = std::fs::read_to_string(marker_path(state.path(), "lab")).unwrap();
        assert!(text.contains("\"created-by\": \"lab\""), "{text}");
        assert_eq!(read_marker(state.path(), "lab").unwrap(), Some(marker));
        // Another name, or no marker at all: never removed.
        assert_eq!(
            release(state.path(), "lab", "someone-elses").unwrap(),
            Released::NotOurs
        );
        assert_eq!(
            release(state.path(), "other", "vmctl-x").unwrap(),
            Released::NotOurs
        );
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
}
