//! What a killed apply leaves in a pool, and removing it: vmctl's own temp files of
//! marker writes (`<x>.json.tmp-<pid>`), partial volume files (`<name>.raw.vmctl-partial`)
//! and markers of volumes whose file never appeared. The next apply on the pool and
//! deleting the pool call [`remove`]; only regular files with vmctl's names that are not
//! another project's are touched.

use std::path::{Path, PathBuf};

use super::fsutil::{is_json_tmp, list_dir, lstat, read_json, remove_if_exists};
use super::mark::is_safe_file_name;
use super::volume::{
    delete_volume, marker_path, our_markers, partial_path, read_marker, volume_path, VolumeError,
    VolumeMarker, PARTIAL_SUFFIX,
};

/// Removes what killed creates and writes of `project` left in the pool at `pool_path`,
/// and returns what it removed:
///
/// - the marker (and partial file) of a volume whose raw file is missing;
/// - a partial file `<name>.raw.vmctl-partial` whose volume has no marker, or ours;
/// - a temp file `<x>.json.tmp-<pid>` of a marker write that is not another project's.
///
/// Only regular files are removed; the caller holds the host's lock.
pub(crate) fn remove(project: &str, pool_path: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    let mut removed = Vec::new();
    for marker in our_markers(project, pool_path)? {
        let raw = volume_path(pool_path, &marker.name);
        if lstat(&raw).is_ok_and(|m| m.is_none()) {
            let partial = partial_path(pool_path, &marker.name);
            let had_partial = lstat(&partial).is_ok_and(|m| m.is_some());
            delete_volume(project, pool_path, &marker.name)?;
            removed.push(marker_path(pool_path, &marker.name));
            if had_partial {
                removed.push(partial);
            }
        }
    }
    let names = list_dir(pool_path).map_err(|source| VolumeError::ReadVolume {
        path: pool_path.into(),
        source,
    })?;
    for file_name in names {
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let path = pool_path.join(file_name);
        if !lstat(&path).is_ok_and(|m| m.is_some_and(|m| m.file_type().is_file())) {
            continue;
        }
        let ours = if let Some(name) = file_name.strip_suffix(PARTIAL_SUFFIX) {
            is_safe_file_name(name)
                && read_marker(pool_path, name)
                    .ok()
                    .flatten()
                    .is_none_or(|m| m.project == project)
        } else if is_json_tmp(file_name) {
            // A half-written temp file does not parse; a whole one says whose it is.
            read_json::<VolumeMarker>(&path)
                .ok()
                .flatten()
                .is_none_or(|m| m.project == project)
        } else {
            false
        };
        if ours {
            remove_if_exists(&path).map_err(|source| VolumeError::DeleteVolume {
                path: path.clone(),
                source,
            })?;
            removed.push(path);
        }
    }
    removed.sort();
    Ok(removed)
}
