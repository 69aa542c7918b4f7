//! Dir pools: a directory holding one raw file per volume, marked by `.vmctl.json`.
//!
//! Finding a pool that was deleted from the config needs more than the config's paths,
//! so creating a pool also writes an index entry `<state-dir>/<project>/pools/<name>.json`
//! (`{"name", "path"}`), one file per pool so that parallel creates never race on a shared
//! file. [`observe_pools`] looks at the index entries and the configured paths, and
//! believes only the marker in each directory: an index entry whose directory has no
//! marker of ours is stale and ignored. A marker of another project is never touched.
//!
//! Deleting a pool removes its marker, its index entry, vmctl's own leftovers (markers
//! and partial files of volumes that are gone, temp files of killed writes) and the
//! directory when vmctl made it and nothing else is left in it; files vmctl did not make
//! are kept, and so is a directory vmctl did not make (the marker says which):
//! [`PoolDeleted`] says what was kept and why.
//!
//! The pool path must be a real directory: a symlink there, or a directory that group or
//! others may write to (who could swap a volume for a symlink), is refused. A directory
//! vmctl makes is 0700 whatever the umask; parents it makes are 0755.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use vmctl_planner::live::LivePool;

use super::fsutil::{kind_of, list_dir, lstat, remove_if_exists};
use super::leftovers;
use super::mark::is_safe_file_name;
use super::records::{read_record, version, write_record, BadRecord};
use super::volume;

/// The marker file in a pool directory.
pub const MARKER: &str = ".vmctl.json";

/// Errors of creating, observing and deleting pools.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("pool name {name:?} cannot be a file name")]
    InvalidName { name: String },
    #[error("pool path {path} is not absolute")]
    RelativePath { path: PathBuf },
    #[error("{path} is pool {name:?} of project {project:?}, not ours")]
    ForeignPool {
        path: PathBuf,
        project: String,
        name: String,
    },
    #[error("cannot create the pool directory {path}")]
    CreatePool { path: PathBuf, source: io::Error },
    #[error("pool path {path} is {kind}, not a directory; vmctl never follows a symlink there")]
    NotADirectory { path: PathBuf, kind: &'static str },
    #[error(
        "pool directory {path} is writable by {who} (mode {mode:04o}), who could swap a volume for a symlink"
    )]
    WritableByOthers {
        path: PathBuf,
        who: &'static str,
        mode: u32,
    },
    #[error("cannot read the pool directory {path}")]
    StatPool { path: PathBuf, source: io::Error },
    #[error("cannot write {path}")]
    WriteMarker { path: PathBuf, source: io::Error },
    #[error("cannot read {path}")]
    ReadMarker { path: PathBuf, source: io::Error },
    #[error("cannot read the pool index {path}")]
    ReadIndex { path: PathBuf, source: io::Error },
    #[error("pool {name:?} still holds volumes: {}", volumes.join(", "))]
    PoolNotEmpty { name: String, volumes: Vec<String> },
    #[error("cannot list the volumes of pool {name:?}")]
    ListVolumes {
        name: String,
        source: Box<volume::VolumeError>,
    },
    #[error("cannot delete {path}")]
    DeletePool { path: PathBuf, source: io::Error },
}

/// The kinds of pool this module makes, as a marker records them (the marker's own
/// serde type, never the config model's `PoolKind`, which it maps to one for one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolKind {
    Dir,
}

impl From<PoolKind> for vmctl_schema::PoolKind {
    fn from(kind: PoolKind) -> Self {
        match kind {
            PoolKind::Dir => vmctl_schema::PoolKind::Dir,
        }
    }
}

/// The content of `.vmctl.json` in a pool directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolMarker {
    pub project: String,
    pub name: String,
    pub kind: PoolKind,
    /// Whether vmctl made the directory (only then may deleting the pool remove it). A
    /// marker written before this field existed says no: such a directory is kept.
    #[serde(default)]
    pub made_dir: bool,
}

impl PoolMarker {
    /// The pool this marker at `path` makes, as the host reports it.
    pub fn live(&self, path: &Path) -> LivePool {
        LivePool {
            name: self.name.clone(),
            project: self.project.clone(),
            kind: self.kind.into(),
            path: path.to_owned(),
        }
    }
}

/// An index entry `<state-dir>/<project>/pools/<name>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IndexEntry {
    name: String,
    path: PathBuf,
}

/// What [`delete_pool`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolDeleted {
    /// Marker and directory removed.
    Removed,
    /// Marker and vmctl's files removed; the directory is kept because it holds files
    /// vmctl did not make (their names, sorted).
    KeptForeignFiles { files: Vec<String> },
    /// Marker and vmctl's files removed; the directory is kept because vmctl did not make
    /// it (it existed when the pool was created).
    KeptNotOurs,
    /// There was no pool of ours there (its stale index entry, if any, is gone).
    Absent,
}

fn index_dir(state_dir: &Path, project: &str) -> PathBuf {
    state_dir.join(project).join("pools")
}

/// Checks that `path`, when it exists, is a directory (not a symlink to one) that only its
/// owner may write to. Returns whether it exists.
pub fn check_pool_dir(path: &Path) -> Result<bool, PoolError> {
    let meta = lstat(path).map_err(|source| PoolError::StatPool {
        path: path.into(),
        source,
    })?;
    let Some(meta) = meta else {
        return Ok(false);
    };
    if !meta.file_type().is_dir() {
        return Err(PoolError::NotADirectory {
            path: path.into(),
            kind: kind_of(&meta),
        });
    }
    let mode = meta.mode() & 0o7777;
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => Some("group and others"),
        (true, false) => Some("its group"),
        (false, true) => Some("others"),
        (false, false) => None,
    };
    if let Some(who) = who {
        return Err(PoolError::WritableByOthers {
            path: path.into(),
            who,
            mode,
        });
    }
    Ok(true)
}

/// Reads the marker of the pool directory at `path`; `None` when there is none.
pub fn read_marker(path: &Path) -> Result<Option<PoolMarker>, PoolError> {
    let marker = path.join(MARKER);
    read_record(&marker, version::POOL_MARKER).map_err(|source| PoolError::ReadMarker {
        path: marker,
        source,
    })
}

/// Creates pool `name` of `project` at `path` (and its parents), or confirms it is there.
/// An existing directory is adopted; one marked by another project or pool is refused.
pub fn create_pool(
    state_dir: &Path,
    project: &str,
    name: &str,
    path: &Path,
) -> Result<LivePool, PoolError> {
    if !is_safe_file_name(name) {
        return Err(PoolError::InvalidName { name: name.into() });
    }
    if !path.is_absolute() {
        return Err(PoolError::RelativePath { path: path.into() });
    }
    let existed = check_pool_dir(path)?;
    let mut made_dir = !existed;
    if existed {
        if let Some(marker) = read_marker(path)? {
            if marker.project != project || marker.name != name {
                return Err(PoolError::ForeignPool {
                    path: path.into(),
                    project: marker.project,
                    name: marker.name,
                });
            }
            made_dir = marker.made_dir;
        }
    } else {
        make_dir(path).map_err(|source| PoolError::CreatePool {
            path: path.into(),
            source,
        })?;
    }
    // Index entry first: a crash before the marker leaves only a stale entry, which
    // observing ignores and the next create overwrites.
    let index = index_dir(state_dir, project);
    let entry_path = index.join(format!("{name}.json"));
    let entry = IndexEntry {
        name: name.into(),
        path: path.into(),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&index)
        .and_then(|()| write_record(&entry_path, version::POOL_INDEX, &entry))
        .map_err(|source| PoolError::WriteMarker {
            path: entry_path,
            source,
        })?;
    let marker = PoolMarker {
        project: project.into(),
        name: name.into(),
        kind: PoolKind::Dir,
        made_dir,
    };
    let marker_path = path.join(MARKER);
    write_record(&marker_path, version::POOL_MARKER, &marker).map_err(|source| {
        PoolError::WriteMarker {
            path: marker_path,
            source,
        }
    })?;
    Ok(marker.live(path))
}

/// Makes the pool directory `path` (mode 0700) and its missing parents (0755), whatever
/// the umask.
fn make_dir(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    DirBuilder::new().mode(0o700).create(path)?;
    // Set the mode through a descriptor of the directory just made, never a symlink.
    let dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    dir.set_permissions(fs::Permissions::from_mode(0o700))
}

/// The pools of `project` on this host: every directory named by the project's index or
/// by `configured` whose marker is ours. Sorted by name. Fails on the first marker it
/// cannot read ([`scan_pools`] reports those instead).
pub fn observe_pools(
    state_dir: &Path,
    project: &str,
    configured: &[&Path],
) -> Result<Vec<LivePool>, PoolError> {
    let (pools, bad) = scan_pools(state_dir, project, configured)?;
    match bad.first() {
        Some(b) => Err(PoolError::ReadMarker {
            path: b.path.clone(),
            source: b.to_io_error(),
        }),
        None => Ok(pools),
    }
}

/// Like [`observe_pools`], with the markers (and index entries of pools not found
/// otherwise) that cannot be read reported beside the pools, each that pool's problem:
/// its name is the index entry's, or empty for a configured path. Fails only when the
/// index cannot be listed.
pub fn scan_pools(
    state_dir: &Path,
    project: &str,
    configured: &[&Path],
) -> Result<(Vec<LivePool>, Vec<BadRecord>), PoolError> {
    let mut candidates: Vec<(PathBuf, String)> = configured
        .iter()
        .map(|p| (p.to_path_buf(), String::new()))
        .collect();
    let (entries, bad_entries) = read_index(state_dir, project)?;
    for entry in entries {
        candidates.push((entry.path, entry.name));
    }
    candidates.sort();
    // One per path, named when an index entry names it.
    candidates.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same && kept.1.is_empty() {
            kept.1 = std::mem::take(&mut later.1);
        }
        same
    });
    let mut pools = Vec::new();
    let mut bad = Vec::new();
    for (path, name) in candidates {
        // A symlink at a pool path is no pool of ours (creating one there is refused).
        let is_dir = lstat(&path).is_ok_and(|m| m.is_some_and(|m| m.file_type().is_dir()));
        if !is_dir {
            continue;
        }
        match read_marker(&path) {
            Ok(Some(marker)) if marker.project == project => pools.push(marker.live(&path)),
            Ok(_) => {}
            Err(PoolError::ReadMarker { path, source }) => {
                bad.push(BadRecord::new(&name, &path, &source));
            }
            Err(e) => return Err(e),
        }
    }
    // A bad index entry matters only when nothing else found its pool.
    for entry in bad_entries {
        let known = |n: &str| n == entry.name;
        if !pools.iter().any(|p| known(&p.name)) && !bad.iter().any(|b| known(&b.name)) {
            bad.push(entry);
        }
    }
    pools.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.path.cmp(&b.path)));
    Ok((pools, bad))
}

/// The project's index entries, and those that cannot be read.
fn read_index(
    state_dir: &Path,
    project: &str,
) -> Result<(Vec<IndexEntry>, Vec<BadRecord>), PoolError> {
    let dir = index_dir(state_dir, project);
    let names = list_dir(&dir).map_err(|source| PoolError::ReadIndex {
        path: dir.clone(),
        source,
    })?;
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for name in names {
        let path = dir.join(name);
        if path.extension().is_some_and(|e| e == "json") {
            match read_record::<IndexEntry>(&path, version::POOL_INDEX) {
                Ok(entry) => out.extend(entry),
                Err(e) => {
                    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                    bad.push(BadRecord::new(&stem, &path, &e));
                }
            }
        }
    }
    Ok((out, bad))
}

/// Deletes pool `name` of `project` at `path`. Refused when the marker is another's or
/// when volumes of the project are still in it (delete them first).
pub fn delete_pool(
    state_dir: &Path,
    project: &str,
    name: &str,
    path: &Path,
) -> Result<PoolDeleted, PoolError> {
    if !is_safe_file_name(name) {
        return Err(PoolError::InvalidName { name: name.into() });
    }
    let entry_path = index_dir(state_dir, project).join(format!("{name}.json"));
    let remove_entry = || {
        remove_if_exists(&entry_path).map_err(|source| PoolError::DeletePool {
            path: entry_path.clone(),
            source,
        })
    };
    let is_dir = lstat(path).is_ok_and(|m| m.is_some_and(|m| m.file_type().is_dir()));
    let marker = if is_dir { read_marker(path)? } else { None };
    let Some(marker) = marker else {
        remove_entry()?;
        return Ok(PoolDeleted::Absent);
    };
    if marker.project != project || marker.name != name {
        return Err(PoolError::ForeignPool {
            path: path.into(),
            project: marker.project,
            name: marker.name,
        });
    }
    let volumes =
        volume::observe_volumes(&marker.live(path)).map_err(|e| PoolError::ListVolumes {
            name: name.into(),
            source: Box::new(e),
        })?;
    if !volumes.is_empty() {
        return Err(PoolError::PoolNotEmpty {
            name: name.into(),
            volumes: volumes.into_iter().map(|v| v.name).collect(),
        });
    }
    // Leftovers of volumes whose file is gone (a marker, a partial copy) and temp files
    // of killed writes are ours too.
    leftovers::remove(project, path).map_err(|e| PoolError::ListVolumes {
        name: name.into(),
        source: Box::new(e),
    })?;
    let marker_path = path.join(MARKER);
    remove_if_exists(&marker_path).map_err(|source| PoolError::DeletePool {
        path: marker_path,
        source,
    })?;
    remove_entry()?;
    let list_err = |source| PoolError::DeletePool {
        path: path.into(),
        source,
    };
    let mut files: Vec<String> = list_dir(path)
        .map_err(list_err)?
        .into_iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    files.sort();
    if !files.is_empty() {
        return Ok(PoolDeleted::KeptForeignFiles { files });
    }
    if !marker.made_dir {
        return Ok(PoolDeleted::KeptNotOurs);
    }
    match fs::remove_dir(path) {
        Ok(()) => Ok(PoolDeleted::Removed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PoolDeleted::Removed),
        Err(source) => Err(PoolError::DeletePool {
            path: path.into(),
            source,
        }),
    }
}

/// Removes vmctl's own temp files of killed writes (`<x>.json.tmp-<pid>`) and partial
/// volume files in the pool of `project` at `path` (see [`leftovers::remove`]).
/// The caller holds the host's lock, so no other vmctl of the project is writing there.
pub fn sweep_leftovers(project: &str, path: &Path) -> Result<Vec<PathBuf>, PoolError> {
    if !check_pool_dir(path)? {
        return Ok(Vec::new());
    }
    match read_marker(path)? {
        Some(marker) if marker.project == project => {}
        _ => return Ok(Vec::new()),
    }
    leftovers::remove(project, path).map_err(|e| PoolError::ListVolumes {
        name: path.display().to_string(),
        source: Box::new(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_format_is_stable() {
        let marker = PoolMarker {
            project: "lab".into(),
            name: "fast".into(),
            kind: PoolKind::Dir,
            made_dir: true,
        };
        let json = serde_json::to_string(&marker).unwrap();
        assert_eq!(
            json,
            r#"{"project":"lab","name":"fast","kind":"dir","made_dir":true}"#
        );
        assert_eq!(serde_json::from_str::<PoolMarker>(&json).unwrap(), marker);
        // A marker from before `made_dir` says vmctl did not make the directory.
        let old: PoolMarker =
            serde_json::from_str(r#"{"project":"lab","name":"fast","kind":"dir"}"#).unwrap();
        assert!(!old.made_dir);
    }

    #[test]
    fn create_observe_delete() {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let fast = root.path().join("a/fast");
        let slow = root.path().join("slow");

        let created = create_pool(state.path(), "lab", "fast", &fast).unwrap();
        assert_eq!(created.path, fast);
        // Creating again is a no-op.
        create_pool(state.path(), "lab", "fast", &fast).unwrap();
        create_pool(state.path(), "lab", "slow", &slow).unwrap();
        assert!(fast.join(MARKER).is_file());

        // Found through the index even when the config names none of them.
        let names: Vec<_> = observe_pools(state.path(), "lab", &[])
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["fast", "slow"]);
        // Another project sees none of them, even when pointed at their paths.
        assert!(observe_pools(state.path(), "other", &[&fast])
            .unwrap()
            .is_empty());

        assert_eq!(
            delete_pool(state.path(), "lab", "fast", &fast).unwrap(),
            PoolDeleted::Removed
        );
        assert!(!fast.exists());
        assert_eq!(
            delete_pool(state.path(), "lab", "fast", &fast).unwrap(),
            PoolDeleted::Absent
        );
        let names: Vec<_> = observe_pools(state.path(), "lab", &[&fast])
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["slow"]);
    }

    #[test]
    fn configured_path_is_found_without_an_index_entry() {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        create_pool(state.path(), "lab", "fast", root.path()).unwrap();
        let other_state = tempfile::tempdir().unwrap();
        let pools = observe_pools(other_state.path(), "lab", &[root.path()]).unwrap();
        assert_eq!(pools.len(), 1);
    }

    #[test]
    fn foreign_pools_are_never_touched() {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        create_pool(state.path(), "theirs", "fast", root.path()).unwrap();
        let err = create_pool(state.path(), "lab", "fast", root.path()).unwrap_err();
        assert!(matches!(err, PoolError::ForeignPool { ref project, .. } if project == "theirs"));
        let err = delete_pool(state.path(), "lab", "fast", root.path()).unwrap_err();
        assert!(matches!(err, PoolError::ForeignPool { .. }));
        assert!(root.path().join(MARKER).is_file());
        // Same project, another pool name: refused too.
        let err = create_pool(state.path(), "theirs", "slow", root.path()).unwrap_err();
        assert!(matches!(err, PoolError::ForeignPool { .. }));
    }

    #[test]
    fn delete_keeps_foreign_files_and_refuses_while_volumes_remain() {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("pool");
        create_pool(state.path(), "lab", "fast", &path).unwrap();
        let disk = volume::VolumeSpec {
            name: "disk",
            size: 4096,
            from: None,
            source: None,
            prevent_destroy: false,
            cancel: None,
        };
        volume::create_volume("lab", &path, &disk).unwrap();
        fs::write(path.join("notes.txt"), "mine").unwrap();

        let err = delete_pool(state.path(), "lab", "fast", &path).unwrap_err();
        assert!(matches!(err, PoolError::PoolNotEmpty { ref volumes, .. } if volumes == &["disk"]));

        volume::delete_volume("lab", &path, "disk").unwrap();
        assert_eq!(
            delete_pool(state.path(), "lab", "fast", &path).unwrap(),
            PoolDeleted::KeptForeignFiles {
                files: vec!["notes.txt".into()]
            }
        );
        let left: Vec<_> = fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["notes.txt"]);
        assert!(observe_pools(state.path(), "lab", &[&path])
            .unwrap()
            .is_empty());
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_made_pool_dir_is_0700_and_its_marker_0600() {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("a/b/pool");
        create_pool(state.path(), "lab", "fast", &path).unwrap();
        assert_eq!(mode_of(&path), 0o700);
        assert_eq!(mode_of(&root.path().join("a/b")) & 0o022, 0);
        assert_eq!(mode_of(&path.join(MARKER)), 0o600);
        assert!(read_marker(&path).unwrap().unwrap().made_dir);
    }

    #[test]
    fn a_symlinked_pool_path_is_refused_and_its_target_untouched() {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let victim = root.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(victim.join("data"), b"keep").unwrap();
        let path = root.path().join("pool");
        std::os::unix::fs::symlink(&victim, &path).unwrap();

        let err = create_pool(state.path(), "lab", "fast", &path).unwrap_err();
        assert!(
            matches!(
                err,
                PoolError::NotADirectory {
                    kind: "a symbolic link",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert!(!victim.join(MARKER).exists());
        // Even with a marker of ours behind it, the symlink is no pool: never observed,
        // and deleting leaves the target alone.
        create_pool(state.path(), "lab", "fast", &victim).unwrap();
        assert_eq!(
            observe_pools(state.path(), "other-state", &[&path]).unwrap(),
            []
        );
        let seen: Vec<_> =
            observe_pools(tempfile::tempdir().unwrap().path(), "lab", &[&path]).unwrap();
        assert!(seen.is_empty(), "{seen:?}");
        assert_eq!(
            delete_pool(state.path(), "lab", "fast", &path).unwrap(),
            PoolDeleted::Absent
        );
        assert!(victim.join(MARKER).is_file());
        assert_eq!(fs::read(victim.join("data")).unwrap(), b"keep");
    }

    #[test]
    fn a_pool_dir_writable_by_group_or_others_is_refused() {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("pool");
        fs::create_dir(&path).unwrap();
        for (mode, who) in [
            (0o777, "group and others"),
            (0o775, "its group"),
            (0o757, "others"),
        ] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = create_pool(state.path(), "lab", "fast", &path).unwrap_err();
            assert!(
                matches!(err, PoolError::WritableByOthers { who: w, .. } if w == who),
                "{mode:o}: {err:?}"
            );
            assert!(!path.join(MARKER).exists());
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        create_pool(state.path(), "lab", "fast", &path).unwrap();
    }

    #[test]
    fn a_dir_vmctl_did_not_make_is_kept_and_said_so() {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("pool");
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o750)).unwrap();
        create_pool(state.path(), "lab", "fast", &path).unwrap();
        assert!(!read_marker(&path).unwrap().unwrap().made_dir);
        // Creating again keeps what the marker says.
        create_pool(state.path(), "lab", "fast", &path).unwrap();
        assert!(!read_marker(&path).unwrap().unwrap().made_dir);
        assert_eq!(
            delete_pool(state.path(), "lab", "fast", &path).unwrap(),
            PoolDeleted::KeptNotOurs
        );
        assert!(path.is_dir());
        assert_eq!(
            fs::read_dir(&path).unwrap().count(),
            0,
            "the marker is gone"
        );
    }

    #[test]
    fn leftovers_of_killed_writes_are_swept_and_others_kept() {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("pool");
        create_pool(state.path(), "lab", "fast", &path).unwrap();
        let theirs = r#"{"project":"other","name":"x"}"#;
        for (name, text) in [
            (".vmctl.json.tmp-4242", "{\"proj"),
            (
                "gone.vmctl.json.tmp-77",
                r#"{"project":"lab","name":"gone"}"#,
            ),
            ("gone.raw.vmctl-partial", "half"),
            ("x.vmctl.json.tmp-5", theirs),
            ("x.vmctl.json", theirs),
            ("x.raw.vmctl-partial", "theirs"),
            ("notes.tmp-1", "mine"),
        ] {
            fs::write(path.join(name), text).unwrap();
        }
        let victim = root.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, path.join("y.raw.vmctl-partial")).unwrap();

        let removed: Vec<String> = sweep_leftovers("lab", &path)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            removed,
            [
                ".vmctl.json.tmp-4242",
                "gone.raw.vmctl-partial",
                "gone.vmctl.json.tmp-77"
            ]
        );
        let mut left: Vec<String> = fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".vmctl.json",
                "notes.tmp-1",
                "x.raw.vmctl-partial",
                "x.vmctl.json",
                "x.vmctl.json.tmp-5",
                "y.raw.vmctl-partial"
            ]
        );
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        // Another project's pool is never swept.
        fs::write(path.join(".vmctl.json.tmp-1"), "x").unwrap();
        assert!(sweep_leftovers("other", &path).unwrap().is_empty());
        assert!(path.join(".vmctl.json.tmp-1").exists());
    }

    #[test]
    fn bad_names_and_paths_are_refused() {
        let state = tempfile::tempdir().unwrap();
        assert!(matches!(
            create_pool(state.path(), "lab", "../x", Path::new("/tmp/x")),
            Err(PoolError::InvalidName { .. })
        ));
        assert!(matches!(
            create_pool(state.path(), "lab", "x", Path::new("rel/x")),
            Err(PoolError::RelativePath { .. })
        ));
    }
}
