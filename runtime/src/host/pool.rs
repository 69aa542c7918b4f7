//! Dir pools: a directory holding one raw file per volume, marked by `.vmctl.json`.
//!
//! Finding a pool that was deleted from the config needs more than the config's paths,
//! so creating a pool also writes an index entry `<state-dir>/<project>/pools/<name>.json`
//! (`{"name", "path"}`), one file per pool so that parallel creates never race on a shared
//! file. [`observe_pools`] looks at the index entries and the configured paths, and
//! believes only the marker in each directory: an index entry whose directory has no
//! marker of ours is stale and ignored. A marker of another project is never touched.
//!
//! Deleting a pool removes its marker, its index entry and the directory when nothing
//! else is left in it; files vmctl did not make are kept (and so is the directory).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsutil::{list_dir, remove_if_exists};
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

/// The kinds of pool this module makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolKind {
    Dir,
}

/// The content of `.vmctl.json` in a pool directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolMarker {
    pub project: String,
    pub name: String,
    pub kind: PoolKind,
}

/// A pool found on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivePool {
    pub name: String,
    pub kind: PoolKind,
    pub path: PathBuf,
}

/// An index entry `<state-dir>/<project>/pools/<name>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IndexEntry {
    name: String,
    path: PathBuf,
}

/// What [`delete_pool`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolDeleted {
    /// Marker and directory removed.
    Removed,
    /// Marker removed; the directory is kept because it holds files vmctl did not make.
    KeptForeignFiles,
    /// There was no pool of ours there (its stale index entry, if any, is gone).
    Absent,
}

fn index_dir(state_dir: &Path, project: &str) -> PathBuf {
    state_dir.join(project).join("pools")
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
    if let Some(marker) = read_marker(path)? {
        if marker.project != project || marker.name != name {
            return Err(PoolError::ForeignPool {
                path: path.into(),
                project: marker.project,
                name: marker.name,
            });
        }
    }
    fs::create_dir_all(path).map_err(|source| PoolError::CreatePool {
        path: path.into(),
        source,
    })?;
    // Index entry first: a crash before the marker leaves only a stale entry, which
    // observing ignores and the next create overwrites.
    let index = index_dir(state_dir, project);
    let entry_path = index.join(format!("{name}.json"));
    let entry = IndexEntry {
        name: name.into(),
        path: path.into(),
    };
    fs::create_dir_all(&index)
        .and_then(|()| write_record(&entry_path, version::POOL_INDEX, &entry))
        .map_err(|source| PoolError::WriteMarker {
            path: entry_path,
            source,
        })?;
    let marker = PoolMarker {
        project: project.into(),
        name: name.into(),
        kind: PoolKind::Dir,
    };
    let marker_path = path.join(MARKER);
    write_record(&marker_path, version::POOL_MARKER, &marker).map_err(|source| {
        PoolError::WriteMarker {
            path: marker_path,
            source,
        }
    })?;
    Ok(LivePool {
        name: name.into(),
        kind: PoolKind::Dir,
        path: path.into(),
    })
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
        match read_marker(&path) {
            Ok(Some(marker)) if marker.project == project => pools.push(LivePool {
                name: marker.name,
                kind: marker.kind,
                path,
            }),
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
    let Some(marker) = read_marker(path)? else {
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
    let volumes = volume::observe_volumes(project, path).map_err(|e| PoolError::ListVolumes {
        name: name.into(),
        source: Box::new(e),
    })?;
    if !volumes.is_empty() {
        return Err(PoolError::PoolNotEmpty {
            name: name.into(),
            volumes: volumes.into_iter().map(|v| v.name).collect(),
        });
    }
    // Leftovers of volumes whose file is gone (a marker, a partial copy) are ours too.
    volume::remove_leftovers(project, path).map_err(|e| PoolError::ListVolumes {
        name: name.into(),
        source: Box::new(e),
    })?;
    let marker_path = path.join(MARKER);
    remove_if_exists(&marker_path).map_err(|source| PoolError::DeletePool {
        path: marker_path,
        source,
    })?;
    remove_entry()?;
    match fs::remove_dir(path) {
        Ok(()) => Ok(PoolDeleted::Removed),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(PoolDeleted::KeptForeignFiles),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PoolDeleted::Removed),
        Err(source) => Err(PoolError::DeletePool {
            path: path.into(),
            source,
        }),
    }
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
        };
        let json = serde_json::to_string(&marker).unwrap();
        assert_eq!(json, r#"{"project":"lab","name":"fast","kind":"dir"}"#);
        assert_eq!(serde_json::from_str::<PoolMarker>(&json).unwrap(), marker);
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
            prevent_destroy: false,
        };
        volume::create_volume("lab", &path, &disk).unwrap();
        fs::write(path.join("notes.txt"), "mine").unwrap();

        let err = delete_pool(state.path(), "lab", "fast", &path).unwrap_err();
        assert!(matches!(err, PoolError::PoolNotEmpty { ref volumes, .. } if volumes == &["disk"]));

        volume::delete_volume("lab", &path, "disk").unwrap();
        assert_eq!(
            delete_pool(state.path(), "lab", "fast", &path).unwrap(),
            PoolDeleted::KeptForeignFiles
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
