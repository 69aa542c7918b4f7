//! `vmctl import`: adopting, on the user's explicit ask, a pool directory or a volume
//! file that vmctl did not make, by writing the project's marker on it — the one way
//! anything vmctl did not make becomes the project's.
//!
//! Nothing is moved, renamed, resized or converted: the resource must already be where,
//! and as, the config declares it (a pool at its `path`; a volume at
//! `<pool>/<name>.raw`, of exactly its `size`, raw, in a pool that is already the
//! project's), and nothing may own it: no marker of another project, none of this one
//! (then it is already imported), and for a volume no process holding a lock on it (a
//! running VMM locks its disks). The caller holds the host's lock, as apply does.
//!
//! The order and the error are plain serde data, so a remote host's agent answers an
//! import as this machine does, and the error crosses the wire whole.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsutil::{kind_of, lstat};
use super::mark::is_safe_file_name;
use super::pool::{self, PoolError};
use super::volume::{self, VolumeError, VolumeMarker};

/// What to adopt, as the config declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum ImportOrder {
    /// The directory at `path` becomes pool `name`.
    Pool { name: String, path: PathBuf },
    /// `<pool>/<name>.raw` becomes volume `name`, recorded with the config's `from` and
    /// `prevent-destroy` (its base image is taken on trust: nothing is hashed).
    Volume {
        name: String,
        pool: PathBuf,
        size: u64,
        #[serde(default)]
        from: Option<PathBuf>,
        #[serde(default)]
        prevent_destroy: bool,
    },
}

/// Why a resource cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(
    tag = "error",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum ImportError {
    #[error("name {name:?} cannot be a file name")]
    InvalidName { name: String },
    #[error("{path} does not exist")]
    NotFound { path: PathBuf },
    #[error("{path} is {kind}, not {expected}; vmctl never follows a symlink there")]
    WrongKind {
        path: PathBuf,
        kind: String,
        expected: String,
    },
    #[error("{path} belongs to project {project:?} ({what} {name:?}): vmctl never takes another project's resources")]
    OtherProject {
        path: PathBuf,
        project: String,
        what: String,
        name: String,
    },
    #[error("{path} is already {what} {name:?} of this project")]
    AlreadyOurs {
        path: PathBuf,
        what: String,
        name: String,
    },
    #[error("the pool directory {path} is not a pool of this project")]
    PoolNotOurs { path: PathBuf },
    #[error("{path} is {size} bytes; the config declares {declared} bytes")]
    SizeMismatch {
        path: PathBuf,
        size: u64,
        declared: u64,
    },
    #[error("{path} is a {format} image; a volume is a raw file")]
    NotRaw { path: PathBuf, format: String },
    #[error("{path} is in use: a process holds a lock on it")]
    InUse { path: PathBuf },
    #[error("{message}")]
    Host { message: String },
}

impl ImportError {
    fn host(error: &dyn std::error::Error) -> ImportError {
        ImportError::Host {
            message: crate::hosts::wire::chain(error),
        }
    }
}

/// Carries out `order` for `project` on this host (the caller holds its lock); the
/// path it adopted.
pub fn import(
    state_dir: &Path,
    project: &str,
    order: &ImportOrder,
) -> Result<PathBuf, ImportError> {
    match order {
        ImportOrder::Pool { name, path } => import_pool(state_dir, project, name, path),
        ImportOrder::Volume {
            name,
            pool,
            size,
            from,
            prevent_destroy,
        } => {
            let marker = VolumeMarker {
                project: project.to_owned(),
                name: name.clone(),
                from: from.clone(),
                from_digest: None,
                prevent_destroy: *prevent_destroy,
            };
            import_volume(pool, &marker, *size)
        }
    }
}

fn import_pool(
    state_dir: &Path,
    project: &str,
    name: &str,
    path: &Path,
) -> Result<PathBuf, ImportError> {
    if !is_safe_file_name(name) {
        return Err(ImportError::InvalidName { name: name.into() });
    }
    match pool::check_pool_dir(path) {
        Ok(true) => {}
        Ok(false) => return Err(ImportError::NotFound { path: path.into() }),
        Err(PoolError::NotADirectory { kind, .. }) => {
            return Err(ImportError::WrongKind {
                path: path.into(),
                kind: kind.into(),
                expected: "a directory".into(),
            })
        }
        Err(e) => return Err(ImportError::host(&e)),
    }
    if let Some(marker) = pool::read_marker(path).map_err(|e| ImportError::host(&e))? {
        return Err(owned(path, project, "pool", marker.project, marker.name));
    }
    // The directory exists and has no marker: creating the pool there adopts it, as a
    // directory vmctl did not make (deleting the pool keeps it).
    pool::create_pool(state_dir, project, name, path).map_err(|e| ImportError::host(&e))?;
    Ok(path.to_owned())
}

/// The error for a resource that has a marker already.
fn owned(path: &Path, project: &str, what: &str, owner: String, name: String) -> ImportError {
    if owner == project {
        ImportError::AlreadyOurs {
            path: path.into(),
            what: what.into(),
            name,
        }
    } else {
        ImportError::OtherProject {
            path: path.into(),
            project: owner,
            what: what.into(),
            name,
        }
    }
}

fn import_volume(
    pool_path: &Path,
    marker: &VolumeMarker,
    size: u64,
) -> Result<PathBuf, ImportError> {
    let name = &marker.name;
    if !is_safe_file_name(name) {
        return Err(ImportError::InvalidName { name: name.clone() });
    }
    match pool::read_marker(pool_path) {
        Ok(Some(m)) if m.project == marker.project => {}
        Ok(_) => {
            return Err(ImportError::PoolNotOurs {
                path: pool_path.into(),
            })
        }
        Err(e) => return Err(ImportError::host(&e)),
    }
    pool::check_pool_dir(pool_path).map_err(|e| ImportError::host(&e))?;
    let path = volume::volume_path(pool_path, name);
    let meta = lstat(&path)
        .map_err(|e| ImportError::host(&e))?
        .ok_or_else(|| ImportError::NotFound { path: path.clone() })?;
    if !meta.file_type().is_file() {
        return Err(ImportError::WrongKind {
            path,
            kind: kind_of(&meta).into(),
            expected: "a regular file".into(),
        });
    }
    if let Some(m) = volume::read_marker(pool_path, name).map_err(|e| ImportError::host(&e))? {
        return Err(owned(&path, &marker.project, "volume", m.project, m.name));
    }
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| ImportError::host(&io_error(&path, e)))?;
    // The file opened is the file checked (no swap in between).
    let opened = file
        .metadata()
        .map_err(|e| ImportError::host(&io_error(&path, e)))?;
    if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) || !opened.file_type().is_file() {
        return Err(ImportError::Host {
            message: format!("{} changed while it was checked; try again", path.display()),
        });
    }
    if opened.len() != size {
        return Err(ImportError::SizeMismatch {
            path,
            size: opened.len(),
            declared: size,
        });
    }
    let mut magic = [0u8; 4];
    let read = file
        .read(&mut magic)
        .map_err(|e| ImportError::host(&io_error(&path, e)))?;
    if let Some(format) = image_format(&magic[..read]) {
        return Err(ImportError::NotRaw {
            path,
            format: format.into(),
        });
    }
    // Held while the marker is written: no VMM can start on it in between.
    let _lock = lock_unused(&file, &path)?;
    volume::write_marker(pool_path, marker).map_err(|e: VolumeError| ImportError::host(&e))?;
    Ok(path)
}

fn io_error(path: &Path, source: std::io::Error) -> VolumeError {
    VolumeError::ReadVolume {
        path: path.into(),
        source,
    }
}

/// The format of an image that is not raw, by its magic bytes.
fn image_format(magic: &[u8]) -> Option<&'static str> {
    match magic {
        [b'Q', b'F', b'I', 0xfb] => Some("qcow2"),
        [b'K', b'D', b'M', b'V'] => Some("VMDK"),
        [b'v', b'h', b'd', b'x'] => Some("VHDX"),
        _ => None,
    }
}

/// An exclusive `flock` on `file`, refused when another process holds one (vmctl's VMM
/// locks its read-write disks so) or a POSIX/OFD lock (other VMMs lock theirs so).
fn lock_unused<'a>(file: &'a std::fs::File, path: &Path) -> Result<Flocked<'a>, ImportError> {
    let fd = file.as_raw_fd();
    // SAFETY: flock on a descriptor this function borrows; no memory is passed.
    let rc = unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        return Err(if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            ImportError::InUse { path: path.into() }
        } else {
            ImportError::host(&io_error(path, error))
        });
    }
    // SAFETY: an all-zero flock is a valid value (whole file from offset 0).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: F_OFD_GETLK reads and writes the flock struct passed by pointer, which
    // lives for the call.
    let rc = unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut fl) };
    if rc == 0 && fl.l_type != libc::F_UNLCK as libc::c_short {
        return Err(ImportError::InUse { path: path.into() });
    }
    Ok(Flocked { _file: file })
}

/// A held `flock`, released when the file is closed (by its owner, after this).
struct Flocked<'a> {
    _file: &'a std::fs::File,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume_order(pool: &Path, size: u64) -> ImportOrder {
        ImportOrder::Volume {
            name: "db".into(),
            pool: pool.into(),
            size,
            from: None,
            prevent_destroy: true,
        }
    }

    /// A state dir and a pool of project `lab` with a raw file `db.raw` of 1 MiB.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("fast");
        pool::create_pool(&dir.path().join("state"), "lab", "fast", &pool).unwrap();
        let file = pool.join("db.raw");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        (dir, pool, file)
    }

    #[test]
    fn a_matching_volume_is_marked_and_then_observed() {
        let (dir, pool, file) = setup();
        let state = dir.path().join("state");
        let adopted = import(&state, "lab", &volume_order(&pool, 1 << 20)).unwrap();
        assert_eq!(adopted, file);
        let live = pool::observe_pools(&state, "lab", &[&pool]).unwrap();
        let volumes = volume::observe_volumes(&live[0]).unwrap();
        assert_eq!(volumes.len(), 1);
        assert_eq!((volumes[0].name.as_str(), volumes[0].size), ("db", 1 << 20));
        assert!(volumes[0].prevent_destroy);
        // A second import is refused: it is the project's already.
        let again = import(&state, "lab", &volume_order(&pool, 1 << 20)).unwrap_err();
        assert!(matches!(again, ImportError::AlreadyOurs { .. }), "{again}");
    }

    #[test]
    fn refusals_leave_no_marker() {
        let (dir, pool, file) = setup();
        let state = dir.path().join("state");
        let marker = pool.join("db.vmctl.json");
        let err = import(&state, "lab", &volume_order(&pool, 2 << 20)).unwrap_err();
        assert_eq!(
            err,
            ImportError::SizeMismatch {
                path: file.clone(),
                size: 1 << 20,
                declared: 2 << 20
            }
        );
        assert!(!marker.exists());
        // Another project's pool: not ours to fill.
        let err = import(&state, "other", &volume_order(&pool, 1 << 20)).unwrap_err();
        assert!(matches!(err, ImportError::PoolNotOurs { .. }), "{err}");
        // A qcow2 image is no raw volume.
        let mut bytes = vec![0u8; 1 << 20];
        bytes[..4].copy_from_slice(b"QFI\xfb");
        std::fs::write(&file, &bytes).unwrap();
        let err = import(&state, "lab", &volume_order(&pool, 1 << 20)).unwrap_err();
        assert!(matches!(err, ImportError::NotRaw { .. }), "{err}");
        std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
        // In use: another open file description holds a flock on it.
        let holder = std::fs::File::open(&file).unwrap();
        // SAFETY: flock on a descriptor this test owns.
        assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
        let err = import(&state, "lab", &volume_order(&pool, 1 << 20)).unwrap_err();
        assert!(matches!(err, ImportError::InUse { .. }), "{err}");
        drop(holder);
        assert!(!marker.exists());
        // Missing file, symlink.
        std::fs::remove_file(&file).unwrap();
        let err = import(&state, "lab", &volume_order(&pool, 1 << 20)).unwrap_err();
        assert!(matches!(err, ImportError::NotFound { .. }), "{err}");
        std::os::unix::fs::symlink("/etc/passwd", &file).unwrap();
        let err = import(&state, "lab", &volume_order(&pool, 1 << 20)).unwrap_err();
        assert!(matches!(err, ImportError::WrongKind { .. }), "{err}");
        assert!(!marker.exists());
    }

    #[test]
    fn another_projects_volume_is_refused() {
        let (dir, pool, _file) = setup();
        let state = dir.path().join("state");
        std::fs::write(
            pool.join("db.vmctl.json"),
            r#"{"format-version": 1, "project": "theirs", "name": "db"}"#,
        )
        .unwrap();
        let err = import(&state, "lab", &volume_order(&pool, 1 << 20)).unwrap_err();
        assert!(
            matches!(&err, ImportError::OtherProject { project, .. } if project == "theirs"),
            "{err}"
        );
    }

    #[test]
    fn a_pool_directory_is_adopted_once_and_kept_on_delete() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let path = dir.path().join("slow");
        let order = ImportOrder::Pool {
            name: "slow".into(),
            path: path.clone(),
        };
        let err = import(&state, "lab", &order).unwrap_err();
        assert!(matches!(err, ImportError::NotFound { .. }), "{err}");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        import(&state, "lab", &order).unwrap();
        let marker = pool::read_marker(&path).unwrap().unwrap();
        assert!(!marker.made_dir, "vmctl did not make it");
        let err = import(&state, "lab", &order).unwrap_err();
        assert!(matches!(err, ImportError::AlreadyOurs { .. }), "{err}");
        let err = import(&state, "other", &order).unwrap_err();
        assert!(matches!(err, ImportError::OtherProject { .. }), "{err}");
    }

    #[test]
    fn orders_and_errors_cross_the_wire_whole() {
        let order = volume_order(Path::new("/p"), 5);
        let text = serde_json::to_string(&order).unwrap();
        assert_eq!(serde_json::from_str::<ImportOrder>(&text).unwrap(), order);
        let err = ImportError::SizeMismatch {
            path: "/p/db.raw".into(),
            size: 1,
            declared: 2,
        };
        let text = serde_json::to_string(&err).unwrap();
        assert_eq!(serde_json::from_str::<ImportError>(&text).unwrap(), err);
    }
}
