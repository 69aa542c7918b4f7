//! Where a project comes from: `<state-dir>/<project>/project.json` records the config
//! (its absolute path on the machine vmctl ran on: the folder, or the file of a
//! one-file config) that last applied, destroyed or imported into the project on this
//! host, written when its lock is taken. It lets a host say which *other* projects
//! came from the same config — what a project renamed in its config leaves behind
//! ([`orphans`]) — so that `plan` and `status` can warn about them. Nothing here
//! changes or deletes another project's resources.
//!
//! Projects applied before this record existed have none, and are not reported.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vmctl_planner::facts::OrphanProject;

use super::fsutil::list_dir;
use super::mark::is_safe_file_name;
use super::records::{read_record, version, write_record};

/// The record's file name in `<state-dir>/<project>/`.
pub const RECORD: &str = "project.json";

/// The content of `project.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ProjectRecord {
    pub project: String,
    /// The config's folder (or file), absolute, as the machine vmctl ran on names it.
    pub origin: PathBuf,
}

/// Records that `project` on this host was applied from `origin` (the caller holds the
/// project's lock, so `<state-dir>/<project>/` exists).
pub fn write(state_dir: &Path, project: &str, origin: &Path) -> std::io::Result<()> {
    let record = ProjectRecord {
        project: project.to_owned(),
        origin: origin.to_owned(),
    };
    let path = state_dir.join(project).join(RECORD);
    // The same content is not rewritten (no churn on every run).
    if read_record::<ProjectRecord>(&path, version::PROJECT_RECORD)
        .is_ok_and(|r| r == Some(record.clone()))
    {
        return Ok(());
    }
    write_record(&path, version::PROJECT_RECORD, &record)
}

/// After a complete destroy: the project has nothing left here to come from anywhere.
pub fn remove(state_dir: &Path, project: &str) {
    let _ = std::fs::remove_file(state_dir.join(project).join(RECORD));
}

/// The other projects on this host whose record names `origin`, with the VMs and pools
/// they still have; those with nothing left are not listed. Best effort: a state dir
/// or record that cannot be read is no orphan.
pub fn orphans(state_dir: &Path, project: &str, origin: &Path) -> Vec<OrphanProject> {
    let Ok(projects) = list_dir(state_dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for name in projects {
        let Some(name) = name.to_str() else { continue };
        if name == project || !is_safe_file_name(name) {
            continue;
        }
        let dir = state_dir.join(name);
        let record = read_record::<ProjectRecord>(&dir.join(RECORD), version::PROJECT_RECORD);
        let Ok(Some(record)) = record else { continue };
        if record.origin != origin || record.project != name {
            continue;
        }
        let vms = names(&dir.join("vms"), "");
        let pools = names(&dir.join("pools"), ".json");
        if vms.is_empty() && pools.is_empty() {
            continue;
        }
        found.push(OrphanProject {
            project: record.project,
            origin: record.origin,
            vms,
            pools,
        });
    }
    found.sort_by(|a, b| a.project.cmp(&b.project));
    found
}

/// The names in `dir` ending in `suffix` (stripped), sorted; none when it cannot be read.
fn names(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = list_dir(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.to_str()?.strip_suffix(suffix).map(str::to_owned))
        .filter(|n| is_safe_file_name(n))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_project_of_the_same_folder_is_an_orphan_until_it_is_empty() {
        let state = tempfile::tempdir().unwrap();
        let here = Path::new("/home/me/infra");
        for (project, origin) in [("new", here), ("old", here), ("elsewhere", Path::new("/x"))] {
            std::fs::create_dir_all(state.path().join(project).join("vms/web-1")).unwrap();
            write(state.path(), project, origin).unwrap();
        }
        std::fs::create_dir_all(state.path().join("old/pools")).unwrap();
        std::fs::write(state.path().join("old/pools/fast.json"), "{}").unwrap();
        // A project with no record (applied before records existed) is never listed.
        std::fs::create_dir_all(state.path().join("unrecorded/vms/db")).unwrap();
        let found = orphans(state.path(), "new", here);
        assert_eq!(
            found,
            [OrphanProject {
                project: "old".into(),
                origin: here.into(),
                vms: vec!["web-1".into()],
                pools: vec!["fast".into()],
            }]
        );
        std::fs::remove_dir_all(state.path().join("old/vms")).unwrap();
        std::fs::remove_dir_all(state.path().join("old/pools")).unwrap();
        assert!(orphans(state.path(), "new", here).is_empty());
        assert!(orphans(Path::new("/nonexistent/state"), "new", here).is_empty());
    }

    #[test]
    fn the_record_is_versioned() {
        let state = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(state.path().join("lab")).unwrap();
        write(state.path(), "lab", Path::new("/srv/infra")).unwrap();
        let text = std::fs::read_to_string(state.path().join("lab").join(RECORD)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["format-version"], 1);
        assert_eq!(value["origin"], "/srv/infra");
        remove(state.path(), "lab");
        assert!(!state.path().join("lab").join(RECORD).exists());
    }
}
