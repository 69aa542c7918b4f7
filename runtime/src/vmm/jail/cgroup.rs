//! The VMM's cgroup: memory and pids limits, made by its supervisor before the VMM is
//! forked, entered by the VMM first thing (so every page and thread of the VMM is
//! counted from its first), and removed by the supervisor when the VMM has ended.
//!
//! The group is `vmctl-vmm-<supervisor's pid>` at the root of a cgroup v2 mount whose
//! `cgroup.controllers` has `memory` and `pids`, else of the v1 `memory` and `pids`
//! hierarchies (this machine's kind). The mounts are this process's, or where it sees
//! none (`ip netns exec` remounts `/sys`), its own ([`super::cgroupfs`]). Limits:
//!
//! - memory: guest memory + [`MEMORY_OVERHEAD`] (64 MiB: the VMM's own few MiB, its
//!   threads' stacks, the kernel's KVM structures charged to it). A VMM past it is
//!   killed by the kernel's OOM killer; the runtime then sees the VM as not running.
//! - pids: the vCPUs + [`PIDS_OVERHEAD`] (the main, device and control threads, and
//!   room): a VMM never forks.
//!
//! A group is removed by the supervisor that made it. One whose supervisor was killed
//! (SIGKILL leaves it no time) is removed by the next supervisor to make a group in
//! the same hierarchy: a `vmctl-vmm-<pid>` group that holds no process and whose pid
//! is no live process. Nothing else is ever removed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::vms::cgroup::parse_mountinfo;

/// Memory a VMM may use beyond its guest's.
pub const MEMORY_OVERHEAD: u64 = 64 << 20;
/// Tasks a VMM may have beyond its vCPU threads.
pub const PIDS_OVERHEAD: u64 = 16;
/// How long removal waits for the kernel to empty the group of a process that ended.
const REMOVE_WAIT: Duration = Duration::from_secs(2);

/// Why the group could not be made or filled.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Neither a cgroup v2 mount with both controllers nor v1 hierarchies of both.
    #[error("the VMM's cgroup needs the memory and pids controllers (cgroup v2, or v1 hierarchies), and this host has not: {why}")]
    Unavailable {
        /// What was found instead.
        why: String,
    },
    /// A cgroup file could not be read or written, or a group made.
    #[error("the VMM's cgroup: cannot write {path}: {source}")]
    Write {
        /// The file or group.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// The limits of one VMM's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes.
    pub memory: u64,
    /// Tasks (threads included).
    pub pids: u64,
}

impl Limits {
    /// The limits of a VMM with `memory` bytes of guest memory and `cpus` vCPUs.
    pub fn for_vm(memory: u64, cpus: u32) -> Self {
        Self {
            memory: memory.saturating_add(MEMORY_OVERHEAD),
            pids: u64::from(cpus) + PIDS_OVERHEAD,
        }
    }
}

/// Where the limits go: one v2 group, or a v1 memory group and a v1 pids group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// The root of a cgroup v2 mount with both controllers.
    V2(PathBuf),
    /// The roots of the v1 memory and pids hierarchies.
    V1 {
        /// The memory hierarchy.
        memory: PathBuf,
        /// The pids hierarchy.
        pids: PathBuf,
    },
}

/// The layout of a host whose mountinfo is `mountinfo`; `controllers` reads a v2
/// mount's `cgroup.controllers`.
pub fn layout(
    mountinfo: &str,
    controllers: impl Fn(&Path) -> io::Result<String>,
) -> Result<Layout, String> {
    let mounts = parse_mountinfo(mountinfo);
    let mut seen = Vec::new();
    for m in mounts.iter().filter(|m| m.fstype == "cgroup2") {
        let list = controllers(&m.mount_point.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| list.split_whitespace().any(|l| l == c);
        if has("memory") && has("pids") {
            return Ok(Layout::V2(m.mount_point.clone()));
        }
        seen.push(format!(
            "cgroup v2 at {} has controllers [{}]",
            m.mount_point.display(),
            list.trim()
        ));
    }
    let v1 = |c: &str| {
        mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == c))
            .map(|m| m.mount_point.clone())
    };
    match (v1("memory"), v1("pids")) {
        (Some(memory), Some(pids)) => Ok(Layout::V1 { memory, pids }),
        (memory, _) => {
            seen.push(format!(
                "no cgroup v1 hierarchy has the {} controller",
                if memory.is_none() { "memory" } else { "pids" }
            ));
            Err(seen.join("; "))
        }
    }
}

/// The layout of this host's cgroups: as this process's mounts show them, else — in a
/// mount namespace that shows none — as [`super::cgroupfs::mount_own`] mounts them.
fn host_layout() -> Result<Layout, String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let why = match layout(&mountinfo, |p| fs::read_to_string(p)) {
        Ok(layout) => return Ok(layout),
        Err(why) => why,
    };
    super::cgroupfs::mount_own().map_err(|own| format!("{why}; mounting them: {own}"))
}

/// The prefix of every VMM group's name; the supervisor's pid follows.
pub const PREFIX: &str = "vmctl-vmm-";

/// Removes the groups under `root` left by supervisors that were killed (see the
/// module). Best effort.
fn sweep(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let empty = fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty());
        if empty && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir(&dir);
        }
    }
}

/// A VMM's group, made with its limits.
#[derive(Debug)]
pub struct Group {
    /// Each group directory (one per hierarchy).
    dirs: Vec<PathBuf>,
}

fn write(path: PathBuf, value: &str) -> Result<(), CgroupError> {
    fs::write(&path, value).map_err(|source| CgroupError::Write { path, source })
}

impl Group {
    /// Makes group `name` with `limits` (see the module).
    pub fn create(name: &str, limits: Limits) -> Result<Self, CgroupError> {
        let layout = host_layout().map_err(|why| CgroupError::Unavailable { why })?;
        let mut group = Group { dirs: Vec::new() };
        let mut make = |root: &Path| -> Result<PathBuf, CgroupError> {
            sweep(root);
            let dir = root.join(name);
            fs::create_dir(&dir).map_err(|source| CgroupError::Write {
                path: dir.clone(),
                source,
            })?;
            group.dirs.push(dir.clone());
            Ok(dir)
        };
        let made = match &layout {
            Layout::V2(root) => write(root.join("cgroup.subtree_control"), "+memory +pids")
                .and_then(|()| make(root))
                .and_then(|dir| {
                    write(dir.join("memory.max"), &limits.memory.to_string())?;
                    // No swap where the host has it; a host without swap has no such file.
                    let _ = write(dir.join("memory.swap.max"), "0");
                    write(dir.join("pids.max"), &limits.pids.to_string())
                }),
            Layout::V1 { memory, pids } => make(memory)
                .and_then(|dir| {
                    write(
                        dir.join("memory.limit_in_bytes"),
                        &limits.memory.to_string(),
                    )
                })
                .and_then(|()| make(pids))
                .and_then(|dir| write(dir.join("pids.max"), &limits.pids.to_string())),
        };
        match made {
            Ok(()) => Ok(group),
            Err(e) => {
                group.remove();
                Err(e)
            }
        }
    }

    /// Moves the calling process, which must be single-threaded, into the group (and
    /// what it starts later with it). On cgroup v1 it writes `0` to each group's
    /// `tasks`: a thread moving itself needs no lock of every thread group of the host
    /// (moving another process by pid waits ~10 ms here for an RCU grace period).
    pub fn enter_self(&self) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            let tasks = dir.join("tasks");
            let file = if tasks.exists() {
                tasks
            } else {
                dir.join("cgroup.procs")
            };
            write(file, "0")?;
        }
        Ok(())
    }

    /// Whether the kernel's OOM killer killed a process of the group for its memory
    /// limit (`oom_kill` of v1 `memory.oom_control` or v2 `memory.events`).
    pub fn oom_killed(&self) -> bool {
        self.dirs
            .iter()
            .flat_map(|d| [d.join("memory.oom_control"), d.join("memory.events")])
            .filter_map(|f| fs::read_to_string(f).ok())
            .any(|text| {
                text.lines().any(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
    }

    /// The group's directories (one per hierarchy).
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(PathBuf::as_path)
    }

    /// Removes the group, once the kernel has emptied it (the VMM has ended). Best
    /// effort: what cannot be removed stays (and is swept later).
    pub fn remove(self) {
        for dir in self.dirs.iter().rev() {
            let deadline = Instant::now() + REMOVE_WAIT;
            while fs::remove_dir(dir).is_err_and(|e| e.raw_os_error() == Some(libc::EBUSY))
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 31 0:30 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const V2: &str = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn v2_with_both_controllers_then_v1() {
        let with = |list: &'static str| move |_: &Path| Ok(list.to_owned());
        assert_eq!(
            layout(V2, with("cpuset cpu io memory pids\n")),
            Ok(Layout::V2("/sys/fs/cgroup".into()))
        );
        let why = layout(V2, with("cpu memory\n")).unwrap_err();
        assert!(why.contains("[cpu memory]"), "{why}");
        assert!(
            why.contains("no cgroup v1 hierarchy has the memory"),
            "{why}"
        );
        assert_eq!(
            layout(HYBRID, with("")),
            Ok(Layout::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                pids: "/sys/fs/cgroup/pids".into()
            })
        );
        let no_pids: String = HYBRID
            .lines()
            .filter(|l| !l.contains("pids"))
            .map(|l| format!("{l}\n"))
            .collect();
        let why = layout(&no_pids, with("")).unwrap_err();
        assert!(why.contains("the pids controller"), "{why}");
    }

    #[test]
    fn limits_add_the_overheads() {
        let l = Limits::for_vm(128 << 20, 2);
        assert_eq!(l.memory, (128 << 20) + MEMORY_OVERHEAD);
        assert_eq!(l.pids, 2 + PIDS_OVERHEAD);
    }
}
