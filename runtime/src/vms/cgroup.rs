//! A VM's `cpuset`: a cgroup v2 `vmctl-<project>-<vm>` under `/sys/fs/cgroup` with
//! `cpuset.cpus`, holding the VMM's process. Hosts without cgroup v2 or without its
//! cpuset controller get a clear error, never a silently unpinned VM.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The cgroup v2 mount.
const ROOT: &str = "/sys/fs/cgroup";

/// Errors of placing a VM in its cpuset.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cpuset {cpuset:?} needs the cgroup v2 cpuset controller, which this host does not have at {ROOT} ({why})")]
    Unavailable { cpuset: String, why: String },
    #[error("cannot set cpuset {cpuset:?} in {path}")]
    Write {
        cpuset: String,
        path: PathBuf,
        source: io::Error,
    },
}

/// The cgroup of a VM.
pub fn cgroup_path(project: &str, vm: &str) -> PathBuf {
    Path::new(ROOT).join(format!("vmctl-{project}-{vm}"))
}

/// Fails unless this host has cgroup v2 with the cpuset controller.
pub fn check_available(cpuset: &str) -> Result<(), CgroupError> {
    let unavailable = |why: String| CgroupError::Unavailable {
        cpuset: cpuset.into(),
        why,
    };
    let controllers = fs::read_to_string(Path::new(ROOT).join("cgroup.controllers"))
        .map_err(|e| unavailable(format!("no cgroup v2 there: {e}")))?;
    if controllers.split_whitespace().any(|c| c == "cpuset") {
        Ok(())
    } else {
        Err(unavailable(
            "cgroup v2 without the cpuset controller".into(),
        ))
    }
}

/// Puts `pid` into the VM's cgroup with `cpuset.cpus = cpuset`.
pub fn place(project: &str, vm: &str, cpuset: &str, pid: u32) -> Result<(), CgroupError> {
    check_available(cpuset)?;
    let dir = cgroup_path(project, vm);
    let write = |path: PathBuf, value: &str| {
        fs::write(&path, value).map_err(|source| CgroupError::Write {
            cpuset: cpuset.into(),
            path,
            source,
        })
    };
    write(Path::new(ROOT).join("cgroup.subtree_control"), "+cpuset")?;
    fs::create_dir_all(&dir).map_err(|source| CgroupError::Write {
        cpuset: cpuset.into(),
        path: dir.clone(),
        source,
    })?;
    write(dir.join("cpuset.cpus"), cpuset)?;
    write(dir.join("cgroup.procs"), &pid.to_string())
}

/// Removes the VM's cgroup, if there is one (it must be empty: call after the stop).
pub fn remove(project: &str, vm: &str) {
    let _ = fs::remove_dir(cgroup_path(project, vm));
}
