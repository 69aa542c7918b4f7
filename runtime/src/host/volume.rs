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

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsutil::{list_dir, remove_if_exists};
use super::image::{self, CopyMethod};
use super::mark::is_safe_file_name;
use super::pool;
use super::records::{read_record, version, write_record, BadRecord};

const RAW_SUFFIX: &str = ".raw";
const MARKER_SUFFIX: &str = ".vmctl.json";
const PARTIAL_SUFFIX: &str = ".raw.vmctl-partial";

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
    pub from: Option<&'a Path>,
    pub prevent_destroy: bool,
}

/// A volume found in a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveVolume {
    pub name: String,
    /// The raw file.
    pub path: PathBuf,
    /// Apparent size in bytes (`stat`'s `st_size`): what the guest sees.
    pub size: u64,
    /// Bytes actually allocated on disk.
    pub allocated: u64,
    pub from: Option<PathBuf>,
    pub from_digest: Option<String>,
    pub prevent_destroy: bool,
}

/// The raw file of volume `name` in the pool at `pool_path`.
pub fn volume_path(pool_path: &Path, name: &str) -> PathBuf {
    pool_path.join(format!("{name}{RAW_SUFFIX}"))
}

fn marker_path(pool_path: &Path, name: &str) -> PathBuf {
    pool_path.join(format!("{name}{MARKER_SUFFIX}"))
}

fn partial_path(pool_path: &Path, name: &str) -> PathBuf {
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
    match pool::read_marker(pool_path).map_err(VolumeError::ReadPool)? {
        Some(marker) if marker.project == project => Ok(()),
        _ => Err(VolumeError::ForeignPool {
            path: pool_path.into(),
            project: project.into(),
        }),
    }
}

fn read_marker(pool_path: &Path, name: &str) -> Result<Option<VolumeMarker>, VolumeError> {
    let path = marker_path(pool_path, name);
    read_record(&path, version::VOLUME_MARKER)
        .map_err(|source| VolumeError::ReadVolume { path, source })
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
        None if volume_path(pool_path, name).exists() => Err(VolumeError::ForeignVolume {
            path: volume_path(pool_path, name),
            project: project.into(),
        }),
        None => Ok(None),
    }
}

/// Creates volume `spec.name` of `spec.size` bytes in the pool of `project` at
/// `pool_path`: a sparse file, or a copy of `spec.from` (reflink, else sparse) grown to
/// the size. Returns the volume and how the image was copied.
pub fn create_volume(
    project: &str,
    pool_path: &Path,
    spec: &VolumeSpec<'_>,
) -> Result<(LiveVolume, Option<CopyMethod>), VolumeError> {
    let VolumeSpec {
        name,
        size,
        from,
        prevent_destroy,
    } = *spec;
    check_name(name)?;
    check_pool(project, pool_path)?;
    let path = volume_path(pool_path, name);
    if our_marker(project, pool_path, name)?.is_some() && path.exists() {
        return Err(VolumeError::VolumeExists { path });
    }
    let from_digest = from
        .map(|image| {
            image::image_digest(image).map_err(|source| VolumeError::HashImage {
                path: image.into(),
                source,
            })
        })
        .transpose()?;
    let marker = VolumeMarker {
        project: project.into(),
        name: name.into(),
        from: from.map(Path::to_path_buf),
        from_digest,
        prevent_destroy,
    };
    let marker_file = marker_path(pool_path, name);
    write_record(&marker_file, version::VOLUME_MARKER, &marker).map_err(|source| {
        VolumeError::WriteMarker {
            path: marker_file,
            source,
        }
    })?;

    let partial = partial_path(pool_path, name);
    let method = build_file(&partial, name, size, from);
    let method = match method {
        Ok(method) => method,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    fs::rename(&partial, &path).map_err(|source| VolumeError::CreateVolume {
        path: path.clone(),
        source,
    })?;
    let live = live_volume(pool_path, marker)?.ok_or(VolumeError::MissingVolume { path })?;
    Ok((live, method))
}

/// Builds the volume file at `partial` (replacing a stale one).
fn build_file(
    partial: &Path,
    name: &str,
    size: u64,
    from: Option<&Path>,
) -> Result<Option<CopyMethod>, VolumeError> {
    let create_err = |source| VolumeError::CreateVolume {
        path: partial.into(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(partial)
        .map_err(create_err)?;
    let mut method = None;
    if let Some(image) = from {
        let copy_err = |source| VolumeError::CopyImage {
            image: image.into(),
            path: partial.into(),
            source,
        };
        let src = File::open(image).map_err(copy_err)?;
        let image_size = src.metadata().map_err(copy_err)?.len();
        if image_size > size {
            return Err(VolumeError::ImageTooLarge {
                name: name.into(),
                image: image.into(),
                image_size,
                size,
            });
        }
        method = Some(image::copy_image(&src, &file).map_err(copy_err)?);
    }
    file.set_len(size).map_err(create_err)?;
    file.sync_all().map_err(create_err)?;
    Ok(method)
}

/// Grows volume `name` in place to `size` bytes; never shrinks.
pub fn grow_volume(
    project: &str,
    pool_path: &Path,
    name: &str,
    size: u64,
) -> Result<LiveVolume, VolumeError> {
    check_name(name)?;
    let path = volume_path(pool_path, name);
    let marker = our_marker(project, pool_path, name)?
        .ok_or(VolumeError::MissingVolume { path: path.clone() })?;
    let grow_err = |source| VolumeError::GrowVolume {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(grow_err)?;
    let current = file.metadata().map_err(grow_err)?.len();
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
    live_volume(pool_path, marker)?.ok_or(VolumeError::MissingVolume { path })
}

/// Records a new `prevent-destroy` for volume `name` in its marker (an in-place update).
pub fn set_prevent_destroy(
    project: &str,
    pool_path: &Path,
    name: &str,
    prevent_destroy: bool,
) -> Result<LiveVolume, VolumeError> {
    check_name(name)?;
    let path = volume_path(pool_path, name);
    let mut marker = our_marker(project, pool_path, name)?
        .ok_or(VolumeError::MissingVolume { path: path.clone() })?;
    if marker.prevent_destroy != prevent_destroy {
        marker.prevent_destroy = prevent_destroy;
        let marker_file = marker_path(pool_path, name);
        write_record(&marker_file, version::VOLUME_MARKER, &marker).map_err(|source| {
            VolumeError::WriteMarker {
                path: marker_file,
                source,
            }
        })?;
    }
    live_volume(pool_path, marker)?.ok_or(VolumeError::MissingVolume { path })
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
pub fn observe_volumes(project: &str, pool_path: &Path) -> Result<Vec<LiveVolume>, VolumeError> {
    let (volumes, bad) = scan_volumes(project, pool_path)?;
    first_bad(bad).map(|()| volumes)
}

/// Like [`observe_volumes`], with the volumes whose marker or file cannot be read
/// reported beside the others, each that volume's problem. Fails only when the pool
/// directory cannot be listed.
pub fn scan_volumes(
    project: &str,
    pool_path: &Path,
) -> Result<(Vec<LiveVolume>, Vec<BadRecord>), VolumeError> {
    let (markers, mut bad) = scan_markers(project, pool_path)?;
    let mut out = Vec::new();
    for marker in markers {
        let name = marker.name.clone();
        match live_volume(pool_path, marker) {
            Ok(volume) => out.extend(volume),
            Err(VolumeError::ReadVolume { path, source }) => {
                bad.push(BadRecord::new(&name, &path, &source));
            }
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

/// Removes markers and partial files of `project`'s volumes whose raw file is missing.
pub(crate) fn remove_leftovers(project: &str, pool_path: &Path) -> Result<(), VolumeError> {
    for marker in our_markers(project, pool_path)? {
        if !volume_path(pool_path, &marker.name).exists() {
            delete_volume(project, pool_path, &marker.name)?;
        }
    }
    Ok(())
}

/// Every volume marker of `project` in the pool directory.
fn our_markers(project: &str, pool_path: &Path) -> Result<Vec<VolumeMarker>, VolumeError> {
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

fn live_volume(pool_path: &Path, marker: VolumeMarker) -> Result<Option<LiveVolume>, VolumeError> {
    let path = volume_path(pool_path, &marker.name);
    let meta = match fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(VolumeError::ReadVolume { path, source }),
    };
    Ok(Some(LiveVolume {
        name: marker.name,
        path,
        size: meta.len(),
        allocated: meta.blocks() * 512,
        from: marker.from,
        from_digest: marker.from_digest,
        prevent_destroy: marker.prevent_destroy,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    const MIB: u64 = 1 << 20;

    fn spec<'a>(name: &'a str, size: u64, from: Option<&'a Path>) -> VolumeSpec<'a> {
        VolumeSpec {
            name,
            size,
            from,
            prevent_destroy: false,
        }
    }

    fn pool(project: &str) -> (tempfile::TempDir, tempfile::TempDir, PathBuf) {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("pool");
        pool::create_pool(state.path(), project, "fast", &path).unwrap();
        (state, root, path)
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
        let (live, method) = create_volume("lab", &pool, &spec("data", 4 << 30, None)).unwrap();
        assert_eq!(method, None);
        assert_eq!(live.size, 4 << 30);
        assert!(live.allocated < MIB, "{} bytes allocated", live.allocated);
        assert_eq!(observe_volumes("lab", &pool).unwrap(), [live]);
        assert!(matches!(
            create_volume("lab", &pool, &spec("data", 4096, None)),
            Err(VolumeError::VolumeExists { .. })
        ));
    }

    #[test]
    fn from_copies_the_image_and_records_its_digest() {
        let (_state, root, pool) = pool("lab");
        let image = root.path().join("rootfs.img");
        fs::write(&image, b"image bytes").unwrap();
        let (live, method) =
            create_volume("lab", &pool, &spec("root", 8 * MIB, Some(&image))).unwrap();
        assert!(method.is_some());
        assert_eq!(live.size, 8 * MIB);
        assert_eq!(live.from.as_deref(), Some(image.as_path()));
        assert_eq!(live.from_digest, Some(image::image_digest(&image).unwrap()));
        let mut head = [0u8; 11];
        File::open(&live.path)
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
        assert!(observe_volumes("lab", &pool).unwrap().is_empty());
        // The leftover marker does not block a retry.
        create_volume("lab", &pool, &spec("root", 4 * MIB, Some(&image))).unwrap();
    }

    #[test]
    fn grow_in_place_never_shrink() {
        let (_state, _root, pool) = pool("lab");
        let (live, _) = create_volume("lab", &pool, &spec("data", MIB, None)).unwrap();
        File::options()
            .write(true)
            .open(&live.path)
            .unwrap()
            .write_all_at(b"keep", 10)
            .unwrap();
        let grown = grow_volume("lab", &pool, "data", 3 * MIB).unwrap();
        assert_eq!(grown.size, 3 * MIB);
        let mut kept = [0u8; 4];
        File::open(&live.path)
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
        let (live, _) = create_volume("lab", &pool, &protected).unwrap();
        assert!(live.prevent_destroy);
        assert!(observe_volumes("lab", &pool).unwrap()[0].prevent_destroy);
        assert!(
            !set_prevent_destroy("lab", &pool, "db", false)
                .unwrap()
                .prevent_destroy
        );
        assert!(!observe_volumes("lab", &pool).unwrap()[0].prevent_destroy);
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
        let names: Vec<_> = observe_volumes("lab", &pool)
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
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
        let (live, _) = create_volume("lab", &pool, &spec("data", MIB, None)).unwrap();
        fs::remove_file(&live.path).unwrap();
        assert!(observe_volumes("lab", &pool).unwrap().is_empty());
        create_volume("lab", &pool, &spec("data", MIB, None)).unwrap();
        assert_eq!(observe_volumes("lab", &pool).unwrap().len(), 1);
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
