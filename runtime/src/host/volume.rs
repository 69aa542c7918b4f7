//! Volumes: sparse raw files in a dir pool, each with its own marker.
//!
//! Volume `name` of a pool at `P` is `P/<name>.raw`; its marker `P/<name>.vmctl.json`
//! records the project, the name, and the base image (`from`) with its digest. A raw file
//! without a marker of ours is not ours and is never touched.
//!
//! Creating is crash-safe: the marker is written first, the file is built as
//! `P/<name>.raw.vmctl-partial` and renamed into place last. So after a crash there is
//! either a complete volume, or a marker (and maybe a partial file) without `<name>.raw`,
//! which observing reports as absent and the next create or pool delete cleans up.
//!
//! Nothing here follows a symlink or opens a non-regular file in the pool: the partial
//! file is created new (`O_EXCL | O_NOFOLLOW`, mode 0600 whatever the umask) and renamed
//! into place without replacing anything; a volume is grown through `O_NOFOLLOW` after
//! `fstat` says it is a regular file; and a symlink, FIFO or device where a volume,
//! partial file or marker should be is refused naming the path, and left as it is.
//!
//! A base image (`from`) must be a regular file (a symlink to one is fine): hashing and
//! copying read at most its size, and both stop between chunks when the apply is
//! cancelled ([`VolumeSpec::cancel`]).

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use vmctl_planner::live::{LivePool, LiveVolume};

use super::fsutil::{self, kind_of, list_dir, lstat, remove_if_exists, FILE_MODE};
use super::image::{self, CopyMethod};
use super::mark::is_safe_file_name;
use super::pool;
use super::records::{read_record, version, write_record, BadRecord, Cause};

const RAW_SUFFIX: &str = ".raw";
pub(super) const MARKER_SUFFIX: &str = ".vmctl.json";
pub(super) const PARTIAL_SUFFIX: &str = ".raw.vmctl-partial";

/// Errors of creating, changing, observing and deleting volumes.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume name {name:?} cannot be a file name")]
    InvalidName { name: String },
    #[error("{path} is not a pool of project {project:?}")]
    ForeignPool { path: PathBuf, project: String },
    #[error("cannot read the pool marker")]
    ReadPool(#[source] pool::PoolError),
    #[error("volume {path} already exists")]
    VolumeExists { path: PathBuf },
    #[error("{path} exists and is not a volume of project {project:?}")]
    ForeignVolume { path: PathBuf, project: String },
    #[error("volume {path} does not exist")]
    MissingVolume { path: PathBuf },
    #[error(
        "base image {image} ({image_size} bytes) is larger than volume {name:?} ({size} bytes)"
    )]
    ImageTooLarge {
        name: String,
        image: PathBuf,
        image_size: u64,
        size: u64,
    },
    #[error("volume {name:?} cannot shrink from {size} to {requested} bytes")]
    ShrinkVolume {
        name: String,
        size: u64,
        requested: u64,
    },
    #[error("cannot hash base image {path}")]
    HashImage { path: PathBuf, source: io::Error },
    #[error("cannot copy base image {image} into {path}")]
    CopyImage {
        image: PathBuf,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot create volume file {path}")]
    CreateVolume { path: PathBuf, source: io::Error },
    #[error("cannot resize volume file {path}")]
    GrowVolume { path: PathBuf, source: io::Error },
    #[error("cannot read {path}")]
    ReadVolume { path: PathBuf, source: io::Error },
    #[error("cannot write {path}")]
    WriteMarker { path: PathBuf, source: io::Error },
    #[error("cannot delete {path}")]
    DeleteVolume { path: PathBuf, source: io::Error },
    #[error(
        "{path} is {kind}, not a regular file; vmctl never follows, truncates or grows one there"
    )]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("the pool directory {path} is unsafe")]
    UnsafePool {
        path: PathBuf,
        #[source]
        source: Box<pool::PoolError>,
    },
    #[error("{len} bytes at offset {offset} do not fit in {path} ({size} bytes)")]
    OutOfRange {
        path: PathBuf,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("cancelled (Ctrl-C) while reading base image {image}; nothing of the volume is left")]
    Cancelled { image: PathBuf },
}

/// The content of `<name>.vmctl.json` beside a volume file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMarker {
    pub project: String,
    pub name: String,
    /// The base image the volume was copied from, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<PathBuf>,
    /// Its digest at copy time, `sha256:<hex>` ([`image::image_digest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_digest: Option<String>,
    /// Whether the applied config protected it, so that removing a protected volume
    /// from the config still fails the plan.
    #[serde(default)]
    pub prevent_destroy: bool,
}

/// What to create: the volume's name, size in bytes, base image and protection.
#[derive(Debug, Clone, Copy)]
pub struct VolumeSpec<'a> {
    pub name: &'a str,
    pub size: u64,
    /// The base image as the config names it (what the marker records).
    pub from: Option<&'a Path>,
    /// Where this host has that image's bytes when not at `from` (a remote host's
    /// image cache).
    pub source: Option<&'a Path>,
    pub prevent_destroy: bool,
    /// When set (the first Ctrl-C of an apply), hashing and copying the base image stop
    /// at the next chunk and the create fails as cancelled, leaving no partial file.
    pub cancel: Option<&'a AtomicBool>,
}

/// The raw file of volume `name` in the pool at `pool_path`.
pub fn volume_path(pool_path: &Path, name: &str) -> PathBuf {
    pool_path.join(format!("{name}{RAW_SUFFIX}"))
}

pub(super) fn marker_path(pool_path: &Path, name: &str) -> PathBuf {
    pool_path.join(format!("{name}{MARKER_SUFFIX}"))
}

pub(super) fn partial_path(pool_path: &Path, name: &str) -> PathBuf {
    pool_path.join(format!("{name}{PARTIAL_SUFFIX}"))
}

fn check_name(name: &str) -> Result<(), VolumeError> {
    if is_safe_file_name(name) {
        Ok(())
    } else {
        Err(VolumeError::InvalidName { name: name.into() })
    }
}

fn check_pool(project: &str, pool_path: &Path) -> Result<(), VolumeError> {
    pool::check_pool_dir(pool_path).map_err(|source| VolumeError::UnsafePool {
        path: pool_path.into(),
        source: Box::new(source),
    })?;
    match pool::read_marker(pool_path).map_err(VolumeError::ReadPool)? {
        Some(marker) if marker.project == project => Ok(()),
        _ => Err(VolumeError::ForeignPool {
            path: pool_path.into(),
            project: project.into(),
        }),
    }
}

/// Whether a regular file is at `path`; an error naming the path when something else is.
fn regular_exists(path: &Path) -> Result<bool, VolumeError> {
    let meta = lstat(path).map_err(|source| VolumeError::ReadVolume {
        path: path.into(),
        source,
    })?;
    match meta {
        None => Ok(false),
        Some(m) if m.file_type().is_file() => Ok(true),
        Some(m) => Err(VolumeError::NotRegular {
            path: path.into(),
            kind: kind_of(&m),
        }),
    }
}

/// Turns an I/O error that says "not a regular file" into [`VolumeError::NotRegular`].
fn io_err(
    path: &Path,
    source: io::Error,
    wrap: impl FnOnce(PathBuf, io::Error) -> VolumeError,
) -> VolumeError {
    let not_regular = source
        .get_ref()
        .and_then(|e| e.downcast_ref::<fsutil::NotRegular>())
        .map(|e| (e.path.clone(), e.kind));
    match not_regular {
        Some((path, kind)) => VolumeError::NotRegular { path, kind },
        None => wrap(path.into(), source),
    }
}

/// An I/O error on a file in the pool: [`VolumeError::NotRegular`] when something other
/// than a regular file is at `path` (an `O_NOFOLLOW` open of a symlink fails with
/// `ELOOP`, `O_EXCL` with `EEXIST`), else `wrap`.
fn pool_file_err(
    path: &Path,
    source: io::Error,
    wrap: impl FnOnce(PathBuf, io::Error) -> VolumeError,
) -> VolumeError {
    match lstat(path) {
        Ok(Some(m)) if !m.file_type().is_file() => VolumeError::NotRegular {
            path: path.into(),
            kind: kind_of(&m),
        },
        _ => io_err(path, source, wrap),
    }
}

pub(crate) fn read_marker(
    pool_path: &Path,
    name: &str,
) -> Result<Option<VolumeMarker>, VolumeError> {
    let path = marker_path(pool_path, name);
    read_record(&path, version::VOLUME_MARKER).map_err(|source| {
        io_err(&path, source, |path, source| VolumeError::ReadVolume {
            path,
            source,
        })
    })
}

pub(crate) fn write_marker(pool_path: &Path, marker: &VolumeMarker) -> Result<(), VolumeError> {
    let path = marker_path(pool_path, &marker.name);
    write_record(&path, version::VOLUME_MARKER, marker).map_err(|source| {
        io_err(&path, source, |path, source| VolumeError::WriteMarker {
            path,
            source,
        })
    })
}

/// The marker of volume `name` of `project`, in a pool of `project`: an error when
/// either is another project's, or the volume has no marker.
pub(super) fn ours(
    project: &str,
    pool_path: &Path,
    name: &str,
) -> Result<VolumeMarker, VolumeError> {
    check_name(name)?;
    check_pool(project, pool_path)?;
    our_marker(project, pool_path, name)?.ok_or_else(|| VolumeError::MissingVolume {
        path: volume_path(pool_path, name),
    })
}

/// The marker of volume `name` when it is ours; an error when the file or marker is
/// another project's; `None` when neither is there.
fn our_marker(
    project: &str,
    pool_path: &Path,
    name: &str,
) -> Result<Option<VolumeMarker>, VolumeError> {
    let marker = read_marker(pool_path, name)?;
    match marker {
        Some(m) if m.project == project && m.name == name => Ok(Some(m)),
        Some(_) => Err(VolumeError::ForeignVolume {
            path: volume_path(pool_path, name),
            project: project.into(),
        }),
        None if lstat(&volume_path(pool_path, name)).is_ok_and(|m| m.is_some()) => {
            Err(VolumeError::ForeignVolume {
                path: volume_path(pool_path, name),
                project: project.into(),
            })
        }
        None => Ok(None),
    }
}

/// Creates volume `spec.name` of `spec.size` bytes in the pool of `project` at
/// `pool_path`: a sparse file, or a copy of `spec.from` (reflink, else sparse) grown to
/// the size. Returns how the image was copied.
pub fn create_volume(
    project: &str,
    pool_path: &Path,
    spec: &VolumeSpec<'_>,
) -> Result<Option<CopyMethod>, VolumeError> {
    let VolumeSpec {
        name,
        size,
        from,
        source,
        prevent_destroy,
        cancel,
    } = *spec;
    // The bytes come from here; the marker names `from`.
    let read_from = source.or(from);
    let partial = prepare_create(project, pool_path, name)?;
    let from_digest = read_from
        .map(|image| image::image_digest(image, cancel).map_err(|source| hash_err(image, source)))
        .transpose()?;
    let marker = VolumeMarker {
        project: project.into(),
        name: name.into(),
        from: from.map(Path::to_path_buf),
        from_digest,
        prevent_destroy,
    };
    write_marker(pool_path, &marker)?;

    let method = match build_file(&partial, name, size, read_from, cancel) {
        Ok(method) => method,
        Err(BuildError::Created(e)) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
        Err(BuildError::NotCreated(e)) => return Err(e),
    };
    finish_create(pool_path, name)?;
    Ok(method)
}

/// The checks before a create, the stale partial file of ours removed: where the new
/// volume's partial file goes. The caller writes the marker, then builds the file there
/// ([`fsutil::create_new`]) and [`finish_create`]s it.
pub(super) fn prepare_create(
    project: &str,
    pool_path: &Path,
    name: &str,
) -> Result<PathBuf, VolumeError> {
    check_name(name)?;
    check_pool(project, pool_path)?;
    let path = volume_path(pool_path, name);
    if our_marker(project, pool_path, name)?.is_some() && regular_exists(&path)? {
        return Err(VolumeError::VolumeExists { path });
    }
    let partial = partial_path(pool_path, name);
    // A stale partial file of ours goes; anything else there is refused, untouched.
    if regular_exists(&partial)? {
        fs::remove_file(&partial).map_err(|source| VolumeError::CreateVolume {
            path: partial.clone(),
            source,
        })?;
    }
    Ok(partial)
}

/// The last step of a create: the complete partial file renamed into place (never over
/// anything that appeared there meanwhile); the partial file goes when that fails.
pub(super) fn finish_create(pool_path: &Path, name: &str) -> Result<(), VolumeError> {
    let (partial, path) = (partial_path(pool_path, name), volume_path(pool_path, name));
    // RENAME_NOREPLACE: whatever appeared at the volume's path meanwhile is kept.
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &partial,
        nix::fcntl::AT_FDCWD,
        &path,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(|errno| {
        let _ = fs::remove_file(&partial);
        VolumeError::CreateVolume {
            path: path.clone(),
            source: errno.into(),
        }
    })
}

fn hash_err(image: &Path, source: io::Error) -> VolumeError {
    if image::is_cancelled(&source) {
        return VolumeError::Cancelled {
            image: image.into(),
        };
    }
    io_err(image, source, |path, source| VolumeError::HashImage {
        path,
        source,
    })
}

/// Why [`build_file`] failed: after it created the partial file (which the caller
/// removes), or before (whatever is at the path is not ours and stays).
enum BuildError {
    Created(VolumeError),
    NotCreated(VolumeError),
}

/// Builds the volume file as the new file `partial` (mode 0600).
fn build_file(
    partial: &Path,
    name: &str,
    size: u64,
    from: Option<&Path>,
    cancel: Option<&AtomicBool>,
) -> Result<Option<CopyMethod>, BuildError> {
    let create_err = |source| {
        pool_file_err(partial, source, |path, source| VolumeError::CreateVolume {
            path,
            source,
        })
    };
    let file = fsutil::create_new(partial, FILE_MODE)
        .map_err(|e| BuildError::NotCreated(create_err(e)))?;
    let created = |e| BuildError::Created(e);
    let mut method = None;
    if let Some(image) = from {
        let copy_err = |source: io::Error| {
            if image::is_cancelled(&source) {
                return VolumeError::Cancelled {
                    image: image.into(),
                };
            }
            io_err(image, source, |image, source| VolumeError::CopyImage {
                image,
                path: partial.into(),
                source,
            })
        };
        let (src, meta) = fsutil::open_regular(image, true).map_err(|e| created(copy_err(e)))?;
        let image_size = meta.len();
        if image_size > size {
            return Err(created(VolumeError::ImageTooLarge {
                name: name.into(),
                image: image.into(),
                image_size,
                size,
            }));
        }
        method = Some(image::copy_image(&src, &file, cancel).map_err(|e| created(copy_err(e)))?);
    }
    file.set_len(size).map_err(|e| created(create_err(e)))?;
    file.sync_all().map_err(|e| created(create_err(e)))?;
    Ok(method)
}

/// Grows volume `name` in place to `size` bytes; never shrinks.
pub fn grow_volume(
    project: &str,
    pool_path: &Path,
    name: &str,
    size: u64,
) -> Result<(), VolumeError> {
    check_name(name)?;
    let path = volume_path(pool_path, name);
    our_marker(project, pool_path, name)?
        .ok_or(VolumeError::MissingVolume { path: path.clone() })?;
    let grow_err = |source| VolumeError::GrowVolume {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| {
            pool_file_err(&path, e, |path, source| VolumeError::GrowVolume {
                path,
                source,
            })
        })?;
    let meta = file.metadata().map_err(grow_err)?;
    if !meta.file_type().is_file() {
        return Err(VolumeError::NotRegular {
            path: path.clone(),
            kind: kind_of(&meta),
        });
    }
    let current = meta.len();
    if size < current {
        return Err(VolumeError::ShrinkVolume {
            name: name.into(),
            size: current,
            requested: size,
        });
    }
    if size > current {
        file.set_len(size).map_err(grow_err)?;
        file.sync_all().map_err(grow_err)?;
    }
    Ok(())
}

/// Records a new `prevent-destroy` for volume `name` in its marker (an in-place update).
pub fn set_prevent_destroy(
    project: &str,
    pool_path: &Path,
    name: &str,
    prevent_destroy: bool,
) -> Result<(), VolumeError> {
    check_name(name)?;
    let path = volume_path(pool_path, name);
    let mut marker = our_marker(project, pool_path, name)?
        .ok_or(VolumeError::MissingVolume { path: path.clone() })?;
    if marker.prevent_destroy != prevent_destroy {
        marker.prevent_destroy = prevent_destroy;
        write_marker(pool_path, &marker)?;
    }
    Ok(())
}

/// Deletes volume `name` (file, partial copy, marker) when it is ours. Returns whether
/// there was anything to delete.
pub fn delete_volume(project: &str, pool_path: &Path, name: &str) -> Result<bool, VolumeError> {
    check_name(name)?;
    if our_marker(project, pool_path, name)?.is_none() {
        return Ok(false);
    }
    // The marker goes last, so an interrupted delete can be retried.
    for path in [
        volume_path(pool_path, name),
        partial_path(pool_path, name),
        marker_path(pool_path, name),
    ] {
        remove_if_exists(&path).map_err(|source| VolumeError::DeleteVolume { path, source })?;
    }
    Ok(true)
}

/// The volumes of `project` in the pool at `pool_path`, sorted by name. A marker whose
/// raw file is missing (a deleted file, an interrupted create) is not a volume. Fails on
/// the first marker it cannot read ([`scan_volumes`] reports those instead).
pub fn observe_volumes(pool: &LivePool) -> Result<Vec<LiveVolume>, VolumeError> {
    let (volumes, bad) = scan_volumes(pool)?;
    first_bad(bad).map(|()| volumes)
}

/// Like [`observe_volumes`], with the volumes whose marker or file cannot be read
/// reported beside the others, each that volume's problem. Fails only when the pool
/// directory cannot be listed.
pub fn scan_volumes(pool: &LivePool) -> Result<(Vec<LiveVolume>, Vec<BadRecord>), VolumeError> {
    let (markers, mut bad) = scan_markers(&pool.project, &pool.path)?;
    let mut out = Vec::new();
    for marker in markers {
        let name = marker.name.clone();
        match live_volume(pool, marker) {
            Ok(volume) => out.extend(volume),
            Err(VolumeError::ReadVolume { path, source }) => {
                bad.push(BadRecord::new(&name, &path, &source));
            }
            // A symlink or other non-regular file where the volume should be: that
            // volume's problem, never followed.
            Err(VolumeError::NotRegular { path, kind }) => bad.push(BadRecord {
                name,
                error: format!("{} is {kind}, not a regular file", path.display()),
                path,
                cause: Cause::NotRegular,
            }),
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    bad.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((out, bad))
}

fn first_bad(bad: Vec<BadRecord>) -> Result<(), VolumeError> {
    match bad.into_iter().next() {
        Some(b) => Err(VolumeError::ReadVolume {
            source: b.to_io_error(),
            path: b.path,
        }),
        None => Ok(()),
    }
}

/// Every volume marker of `project` in the pool directory.
pub(super) fn our_markers(
    project: &str,
    pool_path: &Path,
) -> Result<Vec<VolumeMarker>, VolumeError> {
    let (markers, bad) = scan_markers(project, pool_path)?;
    first_bad(bad).map(|()| markers)
}

/// Every volume marker of `project` in the pool directory, and those that cannot be read.
fn scan_markers(
    project: &str,
    pool_path: &Path,
) -> Result<(Vec<VolumeMarker>, Vec<BadRecord>), VolumeError> {
    let names = list_dir(pool_path).map_err(|source| VolumeError::ReadVolume {
        path: pool_path.into(),
        source,
    })?;
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for file_name in names {
        let Some(name) = file_name
            .to_str()
            .and_then(|n| n.strip_suffix(MARKER_SUFFIX))
        else {
            continue;
        };
        if !is_safe_file_name(name) {
            continue; // the pool's own `.vmctl.json`, or not ours
        }
        match read_marker(pool_path, name) {
            Ok(Some(marker)) if marker.project == project && marker.name == name => {
                out.push(marker);
            }
            Ok(_) => {}
            Err(VolumeError::ReadVolume { path, source }) => {
                bad.push(BadRecord::new(name, &path, &source));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((out, bad))
}

/// The volume of `marker` in `pool`, as the host reports it: `None` when its raw file
/// is missing.
fn live_volume(pool: &LivePool, marker: VolumeMarker) -> Result<Option<LiveVolume>, VolumeError> {
    let path = volume_path(&pool.path, &marker.name);
    let meta = match fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_file() => meta,
        Ok(meta) => {
            return Err(VolumeError::NotRegular {
                path,
                kind: kind_of(&meta),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(VolumeError::ReadVolume { path, source }),
    };
    Ok(Some(LiveVolume {
        name: marker.name,
        project: marker.project,
        pool: pool.name.clone(),
        size: meta.len(),
        from: marker.from,
        from_digest: marker.from_digest,
        prevent_destroy: marker.prevent_destroy,
        allocated: Some(meta.blocks() * 512),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    const MIB: u64 = 1 << 20;

    fn spec<'a>(name: &'a str, size: u64, from: Option<&'a Path>) -> VolumeSpec<'a> {
        VolumeSpec {
            name,
            size,
            from,
            source: None,
            prevent_destroy: false,
            cancel: None,
        }
    }

    fn pool(project: &str) -> (tempfile::TempDir, tempfile::TempDir, PathBuf) {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("pool");
        pool::create_pool(state.path(), project, "fast", &path).unwrap();
        (state, root, path)
    }

    /// The volumes of project "lab" in pool "fast" at `path`.
    fn observed(path: &Path) -> Vec<LiveVolume> {
        let fast = LivePool {
            name: "fast".into(),
            project: "lab".into(),
            kind: vmctl_schema::PoolKind::Dir,
            path: path.to_owned(),
        };
        observe_volumes(&fast).unwrap()
    }

    /// Volume `name` of project "lab" in pool "fast" at `path`.
    fn volume(path: &Path, name: &str) -> LiveVolume {
        let found = observed(path).into_iter().find(|v| v.name == name);
        found.expect("the volume is observed")
    }

    #[test]
    fn marker_format_is_stable() {
        let marker = VolumeMarker {
            project: "lab".into(),
            name: "root".into(),
            from: Some("/img/rootfs.ext4".into()),
            from_digest: Some("sha256:00".into()),
            prevent_destroy: true,
        };
        let json = serde_json::to_string(&marker).unwrap();
        assert_eq!(
            json,
            r#"{"project":"lab","name":"root","from":"/img/rootfs.ext4","from_digest":"sha256:00","prevent_destroy":true}"#
        );
        let bare: VolumeMarker =
            serde_json::from_str(r#"{"project":"lab","name":"root"}"#).unwrap();
        assert_eq!((bare.from, bare.prevent_destroy), (None, false));
    }

    #[test]
    fn empty_volume_is_sparse() {
        let (_state, _root, pool) = pool("lab");
        let method = create_volume("lab", &pool, &spec("data", 4 << 30, None)).unwrap();
        assert_eq!(method, None);
        let live = volume(&pool, "data");
        assert_eq!((live.project.as_str(), live.pool.as_str()), ("lab", "fast"));
        assert_eq!(live.size, 4 << 30);
        let allocated = live.allocated.expect("a host reports allocated bytes");
        assert!(allocated < MIB, "{allocated} bytes allocated");
        assert!(matches!(
            create_volume("lab", &pool, &spec("data", 4096, None)),
            Err(VolumeError::VolumeExists { .. })
        ));
    }

    #[test]
    fn a_cached_copy_is_read_and_the_configs_path_recorded() {
        let (_state, root, pool) = pool("lab");
        // The path the config names does not exist on this host; its cached copy does.
        let named = Path::new("/nonexistent/controller/rootfs.img");
        let cached = root.path().join("sha256-cached");
        fs::write(&cached, b"cached bytes").unwrap();
        let spec = VolumeSpec {
            source: Some(&cached),
            ..spec("root", MIB, Some(named))
        };
        create_volume("lab", &pool, &spec).unwrap();
        let live = volume(&pool, "root");
        assert_eq!(live.from.as_deref(), Some(named));
        assert_eq!(
            live.from_digest,
            Some(image::image_digest(&cached, None).unwrap())
        );
        let mut head = [0u8; 12];
        File::open(volume_path(&pool, "root"))
            .unwrap()
            .read_exact_at(&mut head, 0)
            .unwrap();
        assert_eq!(&head, b"cached bytes");
    }

    #[test]
    fn from_copies_the_image_and_records_its_digest() {
        let (_state, root, pool) = pool("lab");
        let image = root.path().join("rootfs.img");
        fs::write(&image, b"image bytes").unwrap();
        let method = create_volume("lab", &pool, &spec("root", 8 * MIB, Some(&image))).unwrap();
        assert!(method.is_some());
        let live = volume(&pool, "root");
        assert_eq!(live.size, 8 * MIB);
        assert_eq!(live.from.as_deref(), Some(image.as_path()));
        assert_eq!(
            live.from_digest,
            Some(image::image_digest(&image, None).unwrap())
        );
        let mut head = [0u8; 11];
        File::open(volume_path(&pool, "root"))
            .unwrap()
            .read_exact_at(&mut head, 0)
            .unwrap();
        assert_eq!(&head, b"image bytes");
        assert!(!partial_path(&pool, "root").exists());
    }

    #[test]
    fn image_larger_than_the_volume_is_refused_and_leaves_nothing() {
        let (_state, root, pool) = pool("lab");
        let image = root.path().join("big.img");
        File::create(&image).unwrap().set_len(2 * MIB).unwrap();
        let err = create_volume("lab", &pool, &spec("root", MIB, Some(&image))).unwrap_err();
        assert!(matches!(err, VolumeError::ImageTooLarge { .. }), "{err:?}");
        assert!(!partial_path(&pool, "root").exists());
        assert!(observed(&pool).is_empty());
        // The leftover marker does not block a retry.
        create_volume("lab", &pool, &spec("root", 4 * MIB, Some(&image))).unwrap();
    }

    #[test]
    fn grow_in_place_never_shrink() {
        let (_state, _root, pool) = pool("lab");
        create_volume("lab", &pool, &spec("data", MIB, None)).unwrap();
        let path = volume_path(&pool, "data");
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(b"keep", 10)
            .unwrap();
        grow_volume("lab", &pool, "data", 3 * MIB).unwrap();
        assert_eq!(volume(&pool, "data").size, 3 * MIB);
        let mut kept = [0u8; 4];
        File::open(&path)
            .unwrap()
            .read_exact_at(&mut kept, 10)
            .unwrap();
        assert_eq!(&kept, b"keep");
        assert!(matches!(
            grow_volume("lab", &pool, "data", MIB),
            Err(VolumeError::ShrinkVolume { size, .. }) if size == 3 * MIB
        ));
        assert!(matches!(
            grow_volume("lab", &pool, "nope", MIB),
            Err(VolumeError::MissingVolume { .. })
        ));
    }

    #[test]
    fn protection_is_kept_in_the_marker() {
        let (_state, _root, pool) = pool("lab");
        let protected = VolumeSpec {
            prevent_destroy: true,
            ..spec("db", MIB, None)
        };
        create_volume("lab", &pool, &protected).unwrap();
        assert!(volume(&pool, "db").prevent_destroy);
        set_prevent_destroy("lab", &pool, "db", false).unwrap();
        assert!(!volume(&pool, "db").prevent_destroy);
    }

    #[test]
    fn delete_only_ours() {
        let (_state, _root, pool) = pool("lab");
        create_volume("lab", &pool, &spec("data", MIB, None)).unwrap();
        // A file someone else put there, and another project's marked volume.
        fs::write(volume_path(&pool, "theirs"), b"x").unwrap();
        fs::write(volume_path(&pool, "other"), b"x").unwrap();
        let other = VolumeMarker {
            project: "other".into(),
            name: "other".into(),
            from: None,
            from_digest: None,
            prevent_destroy: false,
        };
        write_record(&marker_path(&pool, "other"), version::VOLUME_MARKER, &other).unwrap();

        assert!(matches!(
            delete_volume("lab", &pool, "theirs"),
            Err(VolumeError::ForeignVolume { .. })
        ));
        assert!(matches!(
            delete_volume("lab", &pool, "other"),
            Err(VolumeError::ForeignVolume { .. })
        ));
        assert!(matches!(
            create_volume("lab", &pool, &spec("theirs", MIB, None)),
            Err(VolumeError::ForeignVolume { .. })
        ));
        let names: Vec<_> = observed(&pool).into_iter().map(|v| v.name).collect();
        assert_eq!(names, ["data"]);

        assert!(delete_volume("lab", &pool, "data").unwrap());
        assert!(!delete_volume("lab", &pool, "data").unwrap());
        assert!(!volume_path(&pool, "data").exists());
        assert!(!marker_path(&pool, "data").exists());
        assert!(volume_path(&pool, "theirs").exists());
        assert!(volume_path(&pool, "other").exists());
    }

    #[test]
    fn deleted_file_is_observed_as_missing_and_recreated() {
        let (_state, _root, pool) = pool("lab");
        create_volume("lab", &pool, &spec("data", MIB, None)).unwrap();
        fs::remove_file(volume_path(&pool, "data")).unwrap();
        assert!(observed(&pool).is_empty());
        create_volume("lab", &pool, &spec("data", MIB, None)).unwrap();
        assert_eq!(observed(&pool).len(), 1);
    }

    /// A file outside the pool that a symlink in the pool points at.
    fn victim(root: &Path) -> PathBuf {
        let path = root.join("victim");
        fs::write(&path, b"keep").unwrap();
        path
    }

    fn assert_untouched(victim: &Path) {
        assert_eq!(fs::read(victim).unwrap(), b"keep");
    }

    #[test]
    fn a_volume_file_is_0600() {
        let (_state, _root, pool) = pool("lab");
        create_volume("lab", &pool, &spec("data", MIB, None)).unwrap();
        let path = volume_path(&pool, "data");
        assert_eq!(fs::metadata(path).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(
            fs::metadata(marker_path(&pool, "data")).unwrap().mode() & 0o7777,
            0o600
        );
    }

    #[test]
    fn a_symlink_where_the_partial_file_should_be_is_refused() {
        let (_state, root, pool) = pool("lab");
        let victim = victim(root.path());
        let partial = partial_path(&pool, "data");
        std::os::unix::fs::symlink(&victim, &partial).unwrap();
        let err = create_volume("lab", &pool, &spec("data", MIB, None)).unwrap_err();
        assert!(
            matches!(&err, VolumeError::NotRegular { path, kind: "a symbolic link" } if path == &partial),
            "{err:?}"
        );
        assert!(err.to_string().contains(&partial.display().to_string()));
        assert_untouched(&victim);
        assert!(fs::symlink_metadata(&partial)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(!volume_path(&pool, "data").exists());
    }

    #[test]
    fn a_symlink_where_a_volume_is_is_never_grown_or_observed() {
        let (state, root, pool) = pool("lab");
        let victim = victim(root.path());
        create_volume("lab", &pool, &spec("data", MIB, None)).unwrap();
        let path = volume_path(&pool, "data");
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        for err in [
            grow_volume("lab", &pool, "data", 2 * MIB).unwrap_err(),
            create_volume("lab", &pool, &spec("data", MIB, None)).unwrap_err(),
        ] {
            assert!(
                matches!(&err, VolumeError::NotRegular { path: p, .. } if p == &path),
                "{err:?}"
            );
        }
        // Observing it makes it that volume's problem, never followed.
        let fast = pool::observe_pools(state.path(), "lab", &[]).unwrap();
        let (volumes, bad) = scan_volumes(&fast[0]).unwrap();
        assert!(volumes.is_empty());
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(bad[0].path, path);
        assert!(bad[0].error.contains("symbolic link"), "{bad:?}");
        assert_untouched(&victim);
        // A FIFO there is refused the same way, without blocking.
        fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = grow_volume("lab", &pool, "data", 2 * MIB).unwrap_err();
        assert!(
            matches!(err, VolumeError::NotRegular { kind: "a FIFO", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_symlink_where_a_marker_should_be_is_refused() {
        let (_state, root, pool) = pool("lab");
        let victim = victim(root.path());
        let marker = marker_path(&pool, "data");
        std::os::unix::fs::symlink(&victim, &marker).unwrap();
        let err = create_volume("lab", &pool, &spec("data", MIB, None)).unwrap_err();
        assert!(
            matches!(&err, VolumeError::NotRegular { path, .. } if path == &marker),
            "{err:?}"
        );
        assert_untouched(&victim);
        assert!(!partial_path(&pool, "data").exists());
    }

    #[test]
    fn a_fifo_or_device_base_image_is_refused_without_blocking() {
        let (_state, root, pool) = pool("lab");
        let fifo = root.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for image in [fifo.as_path(), Path::new("/dev/zero")] {
            let err = create_volume("lab", &pool, &spec("data", MIB, Some(image))).unwrap_err();
            assert!(
                matches!(&err, VolumeError::NotRegular { path, .. } if path == image),
                "{err:?}"
            );
        }
        assert!(!partial_path(&pool, "data").exists());
    }

    #[test]
    fn a_cancelled_create_leaves_no_volume_and_no_partial_file() {
        let (_state, root, pool) = pool("lab");
        let image = root.path().join("img");
        fs::write(&image, vec![7u8; 3 * MIB as usize]).unwrap();
        let cancel = AtomicBool::new(true);
        let cancelled = VolumeSpec {
            cancel: Some(&cancel),
            ..spec("data", 4 * MIB, Some(&image))
        };
        let err = create_volume("lab", &pool, &cancelled).unwrap_err();
        assert!(matches!(err, VolumeError::Cancelled { .. }), "{err:?}");
        assert!(!partial_path(&pool, "data").exists());
        assert!(!volume_path(&pool, "data").exists());
    }

    #[test]
    fn volumes_need_a_pool_of_ours() {
        let (_state, _root, pool) = pool("other");
        assert!(matches!(
            create_volume("lab", &pool, &spec("data", MIB, None)),
            Err(VolumeError::ForeignPool { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            create_volume("lab", dir.path(), &spec("data", MIB, None)),
            Err(VolumeError::ForeignPool { .. })
        ));
    }
}
