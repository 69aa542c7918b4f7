//! A VM's snapshots on its host: `<vm state dir>/snapshots/<name>/` holding the
//! engine's `state` and `memory` files (`crate::vmm::snapshot`), a copy of each of the
//! VM's writable disks (`disk-<n>.raw`, a reflink where the filesystem can, else a
//! sparse copy) and the record `snapshot.json` (versioned, written first as
//! incomplete and rewritten complete at the end). They live as long as the VM's state
//! dir: a restart of vmctl finds them; deleting the VM deletes them.
//!
//! - **create**: the VMM pauses the VM and saves it into files opened here (it opens
//!   none itself) and stays paused while the disks are copied, then it is resumed.
//! - **restore**: the running VMM is stopped, each disk copy is copied back into its
//!   volume file (same file, its contents replaced), and a VMM is started from the
//!   snapshot (`vmctl vmm --spec vmm.json --restore DIR`).
//! - **delete**: only the files the record names, then the directory if empty.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{cgroup, process, read_record, write_record, VmError, VmHost, VmPaths};
use crate::host::fsutil::{remove_if_exists, write_json_atomic};
use crate::host::image::{copy_image, CopyMethod};
use crate::host::mark::is_safe_file_name;
use crate::host::records::{self, version};
use crate::vmm::entry::Restore;
use crate::vmm::lifecycle::RunState;
use crate::vmm::protocol::{Reply, Request, Response};
use crate::vmm::snapshot::format;
use crate::vmm::snapshot::restore::check;
use crate::vmm::spec::VmmSpec;

/// The folder of a VM's snapshots, in its state dir.
pub const SNAPSHOTS_DIR: &str = "snapshots";
const RECORD: &str = "snapshot.json";
/// How long a snapshot's save may take in the VMM (1 GiB of memory written).
const SAVE_TIMEOUT: Duration = Duration::from_secs(120);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A snapshot, as its record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotRecord {
    /// Its name.
    pub name: String,
    /// The VM.
    pub vm: String,
    /// The project.
    pub project: String,
    /// When it was taken (seconds since the epoch).
    pub created: u64,
    /// Whether every file was written (an interrupted create leaves `false`).
    pub complete: bool,
    /// The guest's memory in bytes.
    pub memory: u64,
    /// Memory bytes written (the rest are holes).
    pub memory_written: u64,
    /// Milliseconds the guest was paused (save and disk copies).
    pub paused_ms: u64,
    /// The disk copies.
    pub disks: Vec<SnapshotDisk>,
}

/// One disk copied into a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotDisk {
    /// The volume file it is a copy of.
    pub volume: PathBuf,
    /// The copy's file name in the snapshot's dir.
    pub file: String,
    /// `reflink` or `sparse`.
    pub method: String,
}

/// Errors of snapshot operations on a host.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotStoreError {
    /// The name cannot be a directory name.
    #[error(
        "{name:?} cannot name a snapshot (up to 64 letters, digits, `-`, `_` and `.`, not first)"
    )]
    InvalidName { name: String },
    /// A snapshot of that name exists.
    #[error("VM {vm} already has a snapshot {name:?} ({path})")]
    Exists {
        vm: String,
        name: String,
        path: PathBuf,
    },
    /// No snapshot of that name (made by vmctl).
    #[error("VM {vm} has no snapshot {name:?} (no {path})")]
    NotFound {
        vm: String,
        name: String,
        path: PathBuf,
    },
    /// The snapshot's create did not finish.
    #[error("snapshot {name:?} of VM {vm} is incomplete (its create was interrupted)")]
    Incomplete { vm: String, name: String },
    /// No VMM runs the VM.
    #[error("VM {vm} is not running (no VMM answers on {socket})")]
    NotRunning { vm: String, socket: PathBuf },
    /// The VMM refused or failed the save.
    #[error("the VMM of VM {vm} could not save it: {reason}")]
    Engine { vm: String, reason: String },
    /// The snapshot's disks are not the VM's disks any more.
    #[error("snapshot {name:?} of VM {vm} has disks {saved:?}, the VM now has {now:?}")]
    Disks {
        vm: String,
        name: String,
        saved: Vec<PathBuf>,
        now: Vec<PathBuf>,
    },
    /// This host or the VM as it is now cannot take the snapshot back (CPU features,
    /// vCPUs, memory, devices); nothing was stopped.
    #[error("snapshot {name:?} of VM {vm} cannot be restored here: {why}")]
    Refused {
        vm: String,
        name: String,
        why: String,
    },
    /// A file could not be read, written or removed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The VM could not be stopped, started or recorded.
    #[error(transparent)]
    Vm(#[from] VmError),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotStoreError {
    let path = path.to_path_buf();
    move |source| SnapshotStoreError::Io { what, path, source }
}

/// `<vm dir>/snapshots`.
pub fn snapshots_dir(paths: &VmPaths) -> PathBuf {
    paths.dir.join(SNAPSHOTS_DIR)
}

fn check_names(vm: &str, name: &str) -> Result<(), SnapshotStoreError> {
    if !is_safe_file_name(vm) {
        return Err(VmError::InvalidName { name: vm.into() }.into());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !is_safe_file_name(name) || !name.chars().all(allowed) || name.len() > 64 {
        return Err(SnapshotStoreError::InvalidName { name: name.into() });
    }
    Ok(())
}

/// The VM's writable disks, from its VMM spec.
fn writable_disks(vm: &str, paths: &VmPaths) -> Result<Vec<PathBuf>, SnapshotStoreError> {
    let spec = VmmSpec::from_file(&paths.vmm_spec).map_err(|e| SnapshotStoreError::Io {
        what: "reading the VMM spec",
        path: paths.vmm_spec.clone(),
        source: io::Error::other(format!("VM {vm}: {e}")),
    })?;
    Ok(spec
        .devices
        .disks
        .iter()
        .filter(|d| !d.read_only)
        .map(|d| d.path.clone())
        .collect())
}

fn new_file(path: &Path) -> Result<File, SnapshotStoreError> {
    super::new_private_file(path).map_err(io_err("cannot create", path))
}

fn write_snapshot_record(dir: &Path, record: &SnapshotRecord) -> Result<(), SnapshotStoreError> {
    let path = dir.join(RECORD);
    records::write_record(&path, version::SNAPSHOT_RECORD, record)
        .map_err(io_err("cannot write", &path))
}

/// Reads snapshot `name`'s record; `None` when vmctl made no snapshot of that name.
pub fn read_snapshot(
    paths: &VmPaths,
    name: &str,
) -> Result<Option<SnapshotRecord>, SnapshotStoreError> {
    let path = snapshots_dir(paths).join(name).join(RECORD);
    records::read_record(&path, version::SNAPSHOT_RECORD).map_err(io_err("cannot read", &path))
}

/// The VM's snapshots (those vmctl made: with a record), by name; one whose record
/// cannot be read is returned as its error.
/// The names of the VM's snapshots (the directories of its snapshots dir), sorted;
/// none when it has no snapshots dir or it cannot be read.
pub fn names(paths: &VmPaths) -> Vec<String> {
    let Ok(entries) = fs::read_dir(snapshots_dir(paths)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

pub fn list(paths: &VmPaths) -> Vec<Result<SnapshotRecord, SnapshotStoreError>> {
    let dir = snapshots_dir(paths);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_safe_file_name(n) && dir.join(n).join(RECORD).exists())
        .collect();
    names.sort();
    names
        .iter()
        .filter_map(|n| read_snapshot(paths, n).transpose())
        .collect()
}

fn seconds_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Takes snapshot `name` of the running VM `vm`: saved by its VMM, its disks copied
/// while it is paused, then resumed (unless it was paused before). A failure leaves the
/// VM running as it was and removes what was made.
pub fn create(
    host: &VmHost<'_>,
    vm: &str,
    name: &str,
) -> Result<SnapshotRecord, SnapshotStoreError> {
    check_names(vm, name)?;
    let paths = VmPaths::new(host.state_dir, host.project, vm);
    let not_running = || SnapshotStoreError::NotRunning {
        vm: vm.into(),
        socket: paths.control.clone(),
    };
    let was_paused = match process::ask(&paths, &Request::Status, REQUEST_TIMEOUT) {
        Some(Reply::Current(Response::Status(s))) if s.state != RunState::Stopped => {
            s.state == RunState::Paused
        }
        _ => return Err(not_running()),
    };
    let disks = writable_disks(vm, &paths)?;
    let all = snapshots_dir(&paths);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&all)
        .map_err(io_err("cannot create", &all))?;
    let dir = all.join(name);
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(SnapshotStoreError::Exists {
                vm: vm.into(),
                name: name.into(),
                path: dir,
            })
        }
        Err(e) => return Err(io_err("cannot create", &dir)(e)),
    }
    let mut record = SnapshotRecord {
        name: name.into(),
        vm: vm.into(),
        project: host.project.into(),
        created: seconds_now(),
        complete: false,
        memory: 0,
        memory_written: 0,
        paused_ms: 0,
        disks: disks
            .iter()
            .enumerate()
            .map(|(i, volume)| SnapshotDisk {
                volume: volume.clone(),
                file: format!("disk-{i}.raw"),
                method: String::new(),
            })
            .collect(),
    };
    let result = save(&paths, &dir, &mut record, was_paused);
    if result.is_err() {
        let _ = remove_files(&dir, &record);
        let _ = fs::remove_dir(&dir);
        return result.map(|()| record);
    }
    Ok(record)
}

/// Asks the VMM of `paths` to save its VM into `state` and `memory` (passed to it
/// with the request), resuming it after when `resume`, its memory as the pages written
/// since the last pre-copy round when `dirty`; its reply (`None`: no VMM answered).
pub fn request_snapshot(
    paths: &VmPaths,
    state: &File,
    memory: &File,
    resume: bool,
    dirty: bool,
) -> Option<Reply> {
    let request = Request::Snapshot { resume, dirty };
    process::request_with_files(paths, &request, &[state, memory], SAVE_TIMEOUT)
}

/// The part of [`create`] after the record's first version: save, copy, resume.
fn save(
    paths: &VmPaths,
    dir: &Path,
    record: &mut SnapshotRecord,
    was_paused: bool,
) -> Result<(), SnapshotStoreError> {
    write_snapshot_record(dir, record)?;
    let state = new_file(&dir.join(Restore::STATE))?;
    let memory = new_file(&dir.join(Restore::MEMORY))?;
    let started = Instant::now();
    let reply = request_snapshot(paths, &state, &memory, false, false);
    let resume = || {
        if !was_paused {
            let _ = process::ask(paths, &Request::Resume, REQUEST_TIMEOUT);
        }
    };
    let saved = match reply {
        Some(Reply::Current(Response::Snapshot {
            memory_bytes,
            written_bytes,
            ..
        })) => (memory_bytes, written_bytes),
        Some(Reply::Current(Response::Error(e))) => {
            resume();
            return Err(SnapshotStoreError::Engine {
                vm: record.vm.clone(),
                reason: e.to_string(),
            });
        }
        other => {
            resume();
            return Err(SnapshotStoreError::Engine {
                vm: record.vm.clone(),
                reason: format!("no answer to the snapshot request ({other:?})"),
            });
        }
    };
    (record.memory, record.memory_written) = saved;
    let copied = copy_disks(dir, record);
    resume();
    record.paused_ms = started.elapsed().as_millis() as u64;
    copied?;
    record.complete = true;
    write_snapshot_record(dir, record)
}

fn copy_disks(dir: &Path, record: &mut SnapshotRecord) -> Result<(), SnapshotStoreError> {
    for disk in &mut record.disks {
        let src = File::open(&disk.volume).map_err(io_err("cannot open", &disk.volume))?;
        let path = dir.join(&disk.file);
        let dst = new_file(&path)?;
        let method = copy_image(&src, &dst, None).map_err(io_err("cannot copy into", &path))?;
        disk.method = method_name(method).into();
    }
    Ok(())
}

fn method_name(m: CopyMethod) -> &'static str {
    match m {
        CopyMethod::Reflink => "reflink",
        CopyMethod::Sparse => "sparse",
    }
}

/// Removes the files a snapshot's record names (and the record), not the directory.
fn remove_files(dir: &Path, record: &SnapshotRecord) -> Result<(), SnapshotStoreError> {
    let names = [Restore::STATE, Restore::MEMORY]
        .into_iter()
        .map(str::to_owned)
        .chain(record.disks.iter().map(|d| d.file.clone()))
        .chain([RECORD.to_owned()]);
    for name in names {
        if !is_safe_file_name(&name) {
            continue;
        }
        let path = dir.join(&name);
        remove_if_exists(&path).map_err(io_err("cannot remove", &path))?;
    }
    Ok(())
}

/// Deletes snapshot `name` of `vm`: the files vmctl made, then its directory when
/// nothing else is in it.
pub fn delete(paths: &VmPaths, vm: &str, name: &str) -> Result<SnapshotRecord, SnapshotStoreError> {
    check_names(vm, name)?;
    let dir = snapshots_dir(paths).join(name);
    let Some(record) = read_snapshot(paths, name)? else {
        return Err(SnapshotStoreError::NotFound {
            vm: vm.into(),
            name: name.into(),
            path: dir.join(RECORD),
        });
    };
    remove_files(&dir, &record)?;
    fs::remove_dir(&dir).map_err(io_err(
        "cannot remove (files vmctl did not make are left in it)",
        &dir,
    ))?;
    Ok(record)
}

/// Restores snapshot `name` of `vm`: stops its VMM (the guest is not asked: its state
/// is discarded), copies the snapshot's disks back into the volumes, and starts a VMM
/// from the snapshot. A restore is a start: `cpuid_mask`, the host's mask as the config
/// says it now, replaces the one in the VM's VMM spec (checked against the snapshot
/// first, written only once the restore goes ahead). Returns the new VMM's pid.
pub fn restore(
    host: &VmHost<'_>,
    vm: &str,
    name: &str,
    cpuid_mask: Option<&[String]>,
) -> Result<u32, SnapshotStoreError> {
    check_names(vm, name)?;
    let paths = VmPaths::new(host.state_dir, host.project, vm);
    let dir = snapshots_dir(&paths).join(name);
    let Some(record) = read_snapshot(&paths, name)? else {
        return Err(SnapshotStoreError::NotFound {
            vm: vm.into(),
            name: name.into(),
            path: dir.join(RECORD),
        });
    };
    if !record.complete {
        return Err(SnapshotStoreError::Incomplete {
            vm: vm.into(),
            name: name.into(),
        });
    }
    let now = writable_disks(vm, &paths)?;
    let saved: Vec<PathBuf> = record.disks.iter().map(|d| d.volume.clone()).collect();
    if saved != now {
        return Err(SnapshotStoreError::Disks {
            vm: vm.into(),
            name: name.into(),
            saved,
            now,
        });
    }
    let mut spec = VmmSpec::from_file(&paths.vmm_spec).map_err(|e| SnapshotStoreError::Io {
        what: "reading the VMM spec",
        path: paths.vmm_spec.clone(),
        source: io::Error::other(e.to_string()),
    })?;
    let state_path = dir.join(Restore::STATE);
    let bytes = fs::read(&state_path).map_err(io_err("cannot read", &state_path))?;
    let refused = |why: String| SnapshotStoreError::Refused {
        vm: vm.into(),
        name: name.into(),
        why,
    };
    let snap = format::decode(&bytes).map_err(|e| refused(e.to_string()))?;
    let mask_changed = cpuid_mask.is_some_and(|m| m != spec.cpuid_mask.as_slice());
    if let Some(mask) = cpuid_mask {
        spec.cpuid_mask = mask.to_vec();
    }
    check(&spec, &snap).map_err(|e| refused(e.to_string()))?;
    process::stop(vm, &paths, Duration::ZERO)?;
    if mask_changed {
        write_json_atomic(&paths.vmm_spec, &spec)
            .map_err(io_err("cannot write", &paths.vmm_spec))?;
    }
    for disk in &record.disks {
        let src_path = dir.join(&disk.file);
        let src = File::open(&src_path).map_err(io_err("cannot open", &src_path))?;
        let dst = OpenOptions::new()
            .write(true)
            .open(&disk.volume)
            .map_err(io_err("cannot open", &disk.volume))?;
        dst.set_len(0)
            .map_err(io_err("cannot empty", &disk.volume))?;
        copy_image(&src, &dst, None).map_err(io_err("cannot copy into", &disk.volume))?;
    }
    let pid = process::spawn_restored(host, vm, &paths, &dir)?;
    if let Some(applied) = read_record(host.state_dir, host.project, vm)? {
        let model = applied.vm.to_model();
        write_record(host, &model, true)?;
        if let Some(cpuset) = &model.cpuset {
            cgroup::place(host.project, vm, cpuset, pid).map_err(VmError::from)?;
        }
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_no_directory_are_refused() {
        for bad in ["", "..", ".hidden", "a/b", "a b"] {
            assert!(check_names("web-1", bad).is_err(), "{bad:?}");
        }
        assert!(check_names("web-1", "before-upgrade.1").is_ok());
    }

    #[test]
    fn delete_removes_only_what_the_record_names_and_keeps_a_dir_with_other_files() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = VmPaths::in_dir(tmp.path().join("web-1"));
        let dir = snapshots_dir(&paths).join("s1");
        fs::create_dir_all(&dir).unwrap();
        let record = SnapshotRecord {
            name: "s1".into(),
            vm: "web-1".into(),
            project: "lab".into(),
            created: 1,
            complete: true,
            memory: 4096,
            memory_written: 0,
            paused_ms: 1,
            disks: vec![SnapshotDisk {
                volume: "/pool/web-1-root.raw".into(),
                file: "disk-0.raw".into(),
                method: "sparse".into(),
            }],
        };
        write_snapshot_record(&dir, &record).unwrap();
        for f in ["state", "memory", "disk-0.raw", "mine.txt"] {
            fs::write(dir.join(f), b"x").unwrap();
        }
        assert_eq!(list(&paths).len(), 1);
        assert!(matches!(
            delete(&paths, "web-1", "s1"),
            Err(SnapshotStoreError::Io { .. })
        ));
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, vec!["mine.txt".to_string()]);
        fs::remove_file(dir.join("mine.txt")).unwrap();
        assert!(matches!(
            delete(&paths, "web-1", "s1"),
            Err(SnapshotStoreError::NotFound { .. })
        ));
        assert!(list(&paths).is_empty());
        // A dir vmctl did not make (no record) is not a snapshot.
        fs::create_dir_all(snapshots_dir(&paths).join("other")).unwrap();
        assert!(list(&paths).is_empty());
        assert!(matches!(
            delete(&paths, "web-1", "other"),
            Err(SnapshotStoreError::NotFound { .. })
        ));
    }
}
