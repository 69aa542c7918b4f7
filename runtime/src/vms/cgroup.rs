//! A VM's `cpuset`: a cgroup `vmctl-<project>-<vm>` holding the VMM's process (every
//! thread of it), with `cpuset.cpus` set to the VM's cpu list.
//!
//! The hierarchy is found in `/proc/self/mountinfo`, in this order of preference:
//!
//! 1. a cgroup v2 mount whose `cgroup.controllers` has `cpuset`: the group gets
//!    `cpuset.cpus` (after `+cpuset` in the root's `cgroup.subtree_control`);
//! 2. a cgroup v1 hierarchy with the `cpuset` controller (hybrid and v1 hosts): the
//!    group gets the root's `cpuset.mems` and then `cpuset.cpus`;
//!
//! and then the VMM's pid goes into the group's `cgroup.procs`, which moves the whole
//! process (all its threads, and the threads it makes later).
//!
//! On cgroup v2 a process is in one group of the one hierarchy, and a jailed VMM is
//! already in its own, `vmctl-vmm-<supervisor pid>`, which holds its memory and pids
//! limits ([`crate::vmm::jail::cgroup`]). Moving it out would lift them, so there its
//! cpu list is written on that group instead (and cleared, `cpuset.cpus` empty, to
//! inherit the root's again); no `vmctl-<project>-<vm>` group is made. On v1 the
//! cpuset hierarchy is separate from the memory and pids ones, and the VMM joins
//! `vmctl-<project>-<vm>` there. A host with neither gets
//! a clear error, never a silently unpinned VM. The cpu list is checked against the
//! host's online CPUs (`/sys/devices/system/cpu/online`) before anything is started.
//!
//! When the VM stops or is deleted its group is removed (`rmdir`, once the kernel has
//! emptied it); only a group named `vmctl-<project>-<vm>` is ever removed.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the kernel lists the mounts this process sees.
const MOUNTINFO: &str = "/proc/self/mountinfo";
/// The host's online CPUs, as a cpu list.
const ONLINE: &str = "/sys/devices/system/cpu/online";
/// How long a removal waits for the kernel to empty a group of a process that just
/// exited.
const REMOVE_WAIT: Duration = Duration::from_secs(2);

/// Errors of placing a VM in its cpuset and of removing its group.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cpuset {cpuset:?} needs a cgroup cpuset controller (cgroup v2 with `cpuset`, or a cgroup v1 cpuset hierarchy), and this host has none: {why}")]
    Unavailable { cpuset: String, why: String },
    #[error("cpuset {cpuset:?} is not a cpu list: {why}")]
    InvalidList { cpuset: String, why: String },
    #[error("cpuset {cpuset:?} names CPU(s) {offline} that this host does not have online (online: {online})")]
    Offline {
        cpuset: String,
        offline: String,
        online: String,
    },
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a cpu list: {why}")]
    InvalidHostList { path: PathBuf, why: String },
    #[error("cannot set cpuset {cpuset:?} in {path}")]
    Write {
        cpuset: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot remove cgroup {path}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("{name:?} cannot be a cgroup name")]
    InvalidName { name: String },
}

/// A cgroup hierarchy that has the cpuset controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// A cgroup v2 mount whose `cgroup.controllers` has `cpuset`.
    V2(PathBuf),
    /// A cgroup v1 hierarchy mounted with the `cpuset` controller.
    V1(PathBuf),
}

impl Hierarchy {
    /// Its mount point.
    pub fn root(&self) -> &Path {
        match self {
            Hierarchy::V2(root) | Hierarchy::V1(root) => root,
        }
    }
}

/// One cgroup mount of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    /// `cgroup2` or `cgroup`.
    pub fstype: String,
    /// The super options (for v1, the controllers: `rw,cpuset`).
    pub options: Vec<String>,
}

/// The cgroup (v1 and v2) mounts of a mountinfo text; other lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mount_point = before.split(' ').nth(4)?;
            let mut after = after.split(' ');
            let fstype = after.next()?;
            let _source = after.next()?;
            let options = after.next().unwrap_or_default();
            (fstype == "cgroup" || fstype == "cgroup2").then(|| CgroupMount {
                mount_point: PathBuf::from(unescape(mount_point)),
                fstype: fstype.to_owned(),
                options: options.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The preferred cpuset hierarchy of `mounts`: a v2 mount with the cpuset controller
/// (`controllers` reads a mount's `cgroup.controllers`), else a v1 cpuset hierarchy.
/// The error says what was found instead.
pub fn choose(
    mounts: &[CgroupMount],
    controllers: impl Fn(&Path) -> io::Result<String>,
) -> Result<Hierarchy, String> {
    let mut seen = Vec::new();
    for m in mounts.iter().filter(|m| m.fstype == "cgroup2") {
        match controllers(&m.mount_point.join("cgroup.controllers")) {
            Ok(list) if list.split_whitespace().any(|c| c == "cpuset") => {
                return Ok(Hierarchy::V2(m.mount_point.clone()));
            }
            Ok(list) if list.trim().is_empty() => seen.push(format!(
                "cgroup v2 at {} has no controllers",
                m.mount_point.display()
            )),
            Ok(list) => seen.push(format!(
                "cgroup v2 at {} has controllers {} but not cpuset",
                m.mount_point.display(),
                list.trim()
            )),
            Err(e) => seen.push(format!(
                "cgroup v2 at {} is unreadable ({e})",
                m.mount_point.display()
            )),
        }
    }
    if let Some(m) = mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == "cpuset"))
    {
        return Ok(Hierarchy::V1(m.mount_point.clone()));
    }
    seen.push("no cgroup v1 hierarchy has the cpuset controller".into());
    Err(seen.join("; "))
}

/// The CPUs of a cpu list (`2-3`, `0,4-5`); the error says which part is wrong.
pub fn parse_cpu_list(text: &str) -> Result<BTreeSet<u32>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("it is empty".into());
    }
    let mut cpus = BTreeSet::new();
    for part in text.split(',') {
        let (low, high) = part.split_once('-').unwrap_or((part, part));
        let number = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| s.parse::<u32>().ok())
                .flatten()
        };
        match (number(low), number(high)) {
            (Some(l), Some(h)) if l <= h => cpus.extend(l..=h),
            (Some(_), Some(_)) => return Err(format!("range `{part}` runs backwards")),
            _ => return Err(format!("`{part}` is not a CPU number or range")),
        }
    }
    Ok(cpus)
}

/// A set of CPUs as a cpu list: runs of consecutive CPUs as ranges (`0,2-3`).
pub fn format_cpu_list(cpus: &BTreeSet<u32>) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &cpu in cpus {
        match runs.last_mut() {
            Some((_, high)) if high.checked_add(1) == Some(cpu) => *high = cpu,
            _ => runs.push((cpu, cpu)),
        }
    }
    runs.iter()
        .map(|&(l, h)| {
            if l == h {
                l.to_string()
            } else {
                format!("{l}-{h}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks the cpu list `cpuset` against the `online` one: every CPU it names must be
/// online.
pub fn check_online(cpuset: &str, online: &str) -> Result<(), CgroupError> {
    let wanted = parse_cpu_list(cpuset).map_err(|why| CgroupError::InvalidList {
        cpuset: cpuset.into(),
        why,
    })?;
    let host = parse_cpu_list(online).map_err(|why| CgroupError::InvalidHostList {
        path: ONLINE.into(),
        why,
    })?;
    let offline: BTreeSet<u32> = wanted.difference(&host).copied().collect();
    if offline.is_empty() {
        Ok(())
    } else {
        Err(CgroupError::Offline {
            cpuset: cpuset.into(),
            offline: format_cpu_list(&offline),
            online: format_cpu_list(&host),
        })
    }
}

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.into(),
        source,
    })
}

/// This host's cgroup mounts.
fn mounts() -> Result<Vec<CgroupMount>, CgroupError> {
    Ok(parse_mountinfo(&read(Path::new(MOUNTINFO))?))
}

/// Fails unless `cpuset` names only online CPUs and this host has a cpuset hierarchy;
/// returns the hierarchy.
pub fn check_available(cpuset: &str) -> Result<Hierarchy, CgroupError> {
    check_online(cpuset, &read(Path::new(ONLINE))?)?;
    choose(&mounts()?, |p| fs::read_to_string(p)).map_err(|why| CgroupError::Unavailable {
        cpuset: cpuset.into(),
        why,
    })
}

/// The name of a VM's group: `vmctl-<project>-<vm>`, one path component.
fn group_name(project: &str, vm: &str) -> Result<String, CgroupError> {
    let name = format!("vmctl-{project}-{vm}");
    if name.contains(['/', '\0']) {
        return Err(CgroupError::InvalidName { name });
    }
    Ok(name)
}

/// Puts `pid` (the whole process) into the VM's group with `cpuset.cpus = cpuset`;
/// on a VM already in it, this rewrites its CPUs in place. A jailed VMM on cgroup v2
/// keeps its own group, which gets the CPUs (see the module).
pub fn place(project: &str, vm: &str, cpuset: &str, pid: u32) -> Result<(), CgroupError> {
    let hierarchy = check_available(cpuset)?;
    place_in(&hierarchy, &proc_cgroup(pid), project, vm, cpuset, pid)
}

/// The `/proc/PID/cgroup` text of `pid`, empty when it cannot be read (the process
/// ended: placing it fails later on `cgroup.procs`).
fn proc_cgroup(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
}

/// The group directory of a jailed VMM on the v2 hierarchy at `root`, from its
/// `/proc/PID/cgroup` text: the path of the `0::` line, when its last component is a
/// VMM group's name and the directory exists under `root`.
fn jail_group(root: &Path, proc_cgroup: &str) -> Option<PathBuf> {
    let path = proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim()
        .trim_start_matches('/');
    let name = Path::new(path).file_name()?.to_str()?;
    let dir = root.join(path);
    (name.starts_with(crate::vmm::jail::cgroup::PREFIX)
        && !path.split('/').any(|c| c == "..")
        && dir.is_dir())
    .then_some(dir)
}

/// [`place`] in `hierarchy`, for a process whose `/proc/PID/cgroup` reads `proc_cgroup`.
fn place_in(
    hierarchy: &Hierarchy,
    proc_cgroup: &str,
    project: &str,
    vm: &str,
    cpuset: &str,
    pid: u32,
) -> Result<(), CgroupError> {
    let root = hierarchy.root();
    let write = |path: PathBuf, value: &str| {
        fs::write(&path, value).map_err(|source| CgroupError::Write {
            cpuset: cpuset.into(),
            path,
            source,
        })
    };
    if let Hierarchy::V2(_) = hierarchy {
        write(root.join("cgroup.subtree_control"), "+cpuset")?;
        if let Some(own) = jail_group(root, proc_cgroup) {
            return write(own.join("cpuset.cpus"), cpuset);
        }
    }
    let dir = root.join(group_name(project, vm)?);
    match fs::create_dir(&dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(CgroupError::Write {
                cpuset: cpuset.into(),
                path: dir,
                source: e,
            })
        }
        _ => {}
    }
    if let Hierarchy::V1(_) = hierarchy {
        // A new v1 cpuset has no memory nodes, and takes no task until it has some.
        let mems = read(&root.join("cpuset.mems"))?;
        write(dir.join("cpuset.mems"), mems.trim())?;
    }
    write(dir.join("cpuset.cpus"), cpuset)?;
    write(dir.join("cgroup.procs"), &pid.to_string())
}

/// Takes `pid` out of the VM's group (back to the hierarchy's root) and removes the
/// group: the VM has no cpuset any more. A jailed VMM on cgroup v2 stays in its own
/// group, whose cpu list is cleared.
pub fn unplace(project: &str, vm: &str, pid: u32) -> Result<(), CgroupError> {
    unplace_in(&hierarchies()?, &proc_cgroup(pid), project, vm, pid)
}

/// [`unplace`] over `hierarchies`, for a process whose `/proc/PID/cgroup` reads
/// `proc_cgroup`.
fn unplace_in(
    hierarchies: &[Hierarchy],
    proc_cgroup: &str,
    project: &str,
    vm: &str,
    pid: u32,
) -> Result<(), CgroupError> {
    let name = group_name(project, vm)?;
    let write = |path: PathBuf, value: &str| {
        fs::write(&path, value).map_err(|source| CgroupError::Write {
            cpuset: "(none)".into(),
            path,
            source,
        })
    };
    for hierarchy in hierarchies {
        let root = hierarchy.root();
        if let Hierarchy::V2(_) = hierarchy {
            if let Some(own) = jail_group(root, proc_cgroup) {
                // An empty list inherits the parent's CPUs again.
                write(own.join("cpuset.cpus"), "\n")?;
                continue;
            }
        }
        if root.join(&name).is_dir() {
            write(root.join("cgroup.procs"), &pid.to_string())?;
        }
    }
    remove_in(hierarchies, project, vm)
}

/// Every cgroup mount a VM's group may be in (each cgroup v2 mount and each v1 cpuset
/// hierarchy), whether or not it is the preferred one now.
fn hierarchies() -> Result<Vec<Hierarchy>, CgroupError> {
    Ok(mounts()?
        .into_iter()
        .filter_map(|m| match m.fstype.as_str() {
            "cgroup2" => Some(Hierarchy::V2(m.mount_point)),
            _ if m.options.iter().any(|o| o == "cpuset") => Some(Hierarchy::V1(m.mount_point)),
            _ => None,
        })
        .collect())
}

/// Removes the VM's group wherever there is one (call after the VMM stopped: a group
/// still holding a process is an error). No group is fine.
pub fn remove(project: &str, vm: &str) -> Result<(), CgroupError> {
    remove_in(&hierarchies()?, project, vm)
}

/// [`remove`] over `hierarchies`.
fn remove_in(hierarchies: &[Hierarchy], project: &str, vm: &str) -> Result<(), CgroupError> {
    let name = group_name(project, vm)?;
    for hierarchy in hierarchies {
        let dir = hierarchy.root().join(&name);
        let deadline = Instant::now() + REMOVE_WAIT;
        loop {
            match fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                // The kernel empties the group of an exited process a moment later.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(source) => return Err(CgroupError::Remove { path: dir, source }),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's hybrid layout: v1 hierarchies under a tmpfs, an empty cgroup2.
    const HYBRID: &str = "\
23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime shared:9 - cgroup cgroup rw,cpuset
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const V2: &str =
        "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";

    fn set(cpus: &[u32]) -> BTreeSet<u32> {
        cpus.iter().copied().collect()
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0"), Ok(set(&[0])));
        assert_eq!(parse_cpu_list("2-3"), Ok(set(&[2, 3])));
        assert_eq!(parse_cpu_list("0,4-5"), Ok(set(&[0, 4, 5])));
        assert_eq!(parse_cpu_list("0-1\n"), Ok(set(&[0, 1])));
        for bad in ["", "3-2", "a", "1,", "-1", "+1", "1-", "1--2"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpu_lists_format_as_ranges() {
        assert_eq!(format_cpu_list(&set(&[0])), "0");
        assert_eq!(format_cpu_list(&set(&[0, 2, 3, 4, 7])), "0,2-4,7");
        assert_eq!(format_cpu_list(&set(&[])), "");
    }

    #[test]
    fn cpusets_must_name_online_cpus() {
        assert!(check_online("0", "0-1\n").is_ok());
        assert!(check_online("0-1", "0-1").is_ok());
        let err = check_online("1-3,5", "0-1\n").unwrap_err();
        assert!(matches!(&err, CgroupError::Offline { offline, online, .. }
            if offline == "2-3,5" && online == "0-1"));
        assert!(err.to_string().contains("CPU(s) 2-3,5"), "{err}");
        assert!(matches!(
            check_online("x", "0-1"),
            Err(CgroupError::InvalidList { .. })
        ));
    }

    #[test]
    fn mountinfo_gives_the_cgroup_mounts() {
        let mounts = parse_mountinfo(HYBRID);
        let points: Vec<_> = mounts.iter().map(|m| m.mount_point.clone()).collect();
        assert_eq!(
            points,
            [
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/cpuset",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(mounts[1].fstype, "cgroup");
        assert_eq!(mounts[1].options, ["rw", "cpuset"]);
        assert_eq!(mounts[3].fstype, "cgroup2");
        let spaced = parse_mountinfo("1 2 0:1 / /a\\040b rw - cgroup2 none rw\n");
        assert_eq!(spaced[0].mount_point, PathBuf::from("/a b"));
        assert!(parse_mountinfo("garbage\n\n").is_empty());
    }

    #[test]
    fn v2_with_cpuset_is_preferred_then_v1() {
        let with = |list: &'static str| move |_: &Path| Ok(list.to_owned());
        let v2 = parse_mountinfo(V2);
        assert_eq!(
            choose(&v2, with("cpu io memory cpuset pids\n")),
            Ok(Hierarchy::V2("/sys/fs/cgroup".into()))
        );
        let why = choose(&v2, with("cpu memory\n")).unwrap_err();
        assert!(why.contains("not cpuset"), "{why}");

        let hybrid = parse_mountinfo(HYBRID);
        assert_eq!(
            choose(&hybrid, with("\n")),
            Ok(Hierarchy::V1("/sys/fs/cgroup/cpuset".into()))
        );
        let mut both = hybrid.clone();
        both.extend(v2);
        assert_eq!(
            choose(&both, |p: &Path| Ok(
                if p.starts_with("/sys/fs/cgroup/unified") {
                    String::new()
                } else {
                    "cpuset".into()
                }
            )),
            Ok(Hierarchy::V2("/sys/fs/cgroup".into()))
        );

        let none: Vec<_> = hybrid
            .into_iter()
            .filter(|m| m.options.iter().all(|o| o != "cpuset"))
            .collect();
        let why = choose(&none, with("")).unwrap_err();
        assert!(
            why.contains("/sys/fs/cgroup/unified has no controllers"),
            "{why}"
        );
        assert!(why.contains("no cgroup v1 hierarchy"), "{why}");
    }

    /// A directory standing for a cgroup hierarchy's root, with one jailed VMM's group
    /// `vmctl-vmm-7` (a plain file system: the writes are what the kernel would get).
    fn fake_root() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        fs::create_dir(root.join("vmctl-vmm-7")).unwrap();
        fs::write(root.join("cpuset.mems"), "0\n").unwrap();
        (dir, root)
    }

    #[test]
    fn a_jailed_vmm_on_v2_keeps_its_limits_group_and_gets_the_cpus_there() {
        let (_dir, root) = fake_root();
        let v2 = Hierarchy::V2(root.clone());
        let jailed = "0::/vmctl-vmm-7\n";
        place_in(&v2, jailed, "lab", "web-1", "0-1", 9).unwrap();
        let own = root.join("vmctl-vmm-7");
        assert_eq!(fs::read_to_string(own.join("cpuset.cpus")).unwrap(), "0-1");
        assert_eq!(
            fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
            "+cpuset"
        );
        // Not moved: no group of the VM's name, nothing written to a cgroup.procs.
        assert!(!root.join("vmctl-lab-web-1").exists());
        assert!(!own.join("cgroup.procs").exists());

        unplace_in(&[v2], jailed, "lab", "web-1", 9).unwrap();
        assert_eq!(fs::read_to_string(own.join("cpuset.cpus")).unwrap(), "\n");
        assert!(!root.join("cgroup.procs").exists());
    }

    #[test]
    fn an_unjailed_vmm_or_v1_joins_the_vms_group() {
        for (hierarchy, proc_cgroup) in [
            // An unjailed VMM (an older build's) on v2.
            (
                Hierarchy::V2 as fn(PathBuf) -> Hierarchy,
                "0::/user.slice\n",
            ),
            // A group name that only looks like a VMM's, or climbs out of the root.
            (Hierarchy::V2, "0::/vmctl-vmm-8\n"),
            (Hierarchy::V2, "0::/../vmctl-vmm-7\n"),
            // v1: the cpuset hierarchy is not the limits' one.
            (
                Hierarchy::V1,
                "5:cpuset:/\n4:memory:/vmctl-vmm-7\n0::/vmctl-vmm-7\n",
            ),
        ] {
            let (_dir, root) = fake_root();
            let hierarchy = hierarchy(root.clone());
            place_in(&hierarchy, proc_cgroup, "lab", "web-1", "1", 9).unwrap();
            let group = root.join("vmctl-lab-web-1");
            assert_eq!(fs::read_to_string(group.join("cpuset.cpus")).unwrap(), "1");
            assert_eq!(fs::read_to_string(group.join("cgroup.procs")).unwrap(), "9");
            assert!(
                !root.join("vmctl-vmm-7/cpuset.cpus").exists(),
                "{proc_cgroup}"
            );
            if let Hierarchy::V1(_) = hierarchy {
                assert_eq!(fs::read_to_string(group.join("cpuset.mems")).unwrap(), "0");
            }
        }
    }

    #[test]
    fn group_names_are_one_component() {
        assert_eq!(group_name("lab", "web-1").unwrap(), "vmctl-lab-web-1");
        assert!(group_name("lab", "../x").is_err());
    }
}
