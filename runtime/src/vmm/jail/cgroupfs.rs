//! The cgroup hierarchies, mounted by the supervisor itself when its mount namespace
//! shows none: `ip netns exec` (how the tests, and some users, run vmctl in a network
//! namespace) remounts `/sys` and with it hides `/sys/fs/cgroup`.
//!
//! The supervisor then takes a mount namespace of its own (so nothing changes for the
//! processes it shares its namespace with), mounts a tmpfs on `/sys/fs/cgroup` and
//! under it the host's hierarchies again, as `/proc/cgroups` describes them: the v1
//! hierarchy of `memory` and that of `pids`, each with the controllers it holds on the
//! host (mounting the same set attaches the host's existing hierarchy), or cgroup v2
//! when both controllers are on it. The groups made there are the host's.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

use super::cgroup::Layout;

/// Where the hierarchies are mounted.
const BASE: &str = "/sys/fs/cgroup";

/// The v1 hierarchy id of `controller` in a `/proc/cgroups` text (0: on cgroup v2),
/// with every controller of that hierarchy.
pub fn hierarchy(proc_cgroups: &str, controller: &str) -> Option<(u32, Vec<String>)> {
    let rows: Vec<(&str, u32)> = proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?.parse().ok()?))
        })
        .collect();
    let id = rows.iter().find(|(name, _)| *name == controller)?.1;
    let together = rows
        .iter()
        .filter(|(_, h)| *h == id)
        .map(|(name, _)| (*name).to_owned())
        .collect();
    Some((id, together))
}

fn sys(step: &str) -> impl FnOnce(nix::Error) -> String + '_ {
    move |e| format!("{step} failed: {e}")
}

/// Mounts the memory and pids hierarchies in a new mount namespace of this process
/// (see the module) and returns where they are.
pub fn mount_own() -> Result<Layout, String> {
    let text = std::fs::read_to_string("/proc/cgroups")
        .map_err(|e| format!("cannot read /proc/cgroups: {e}"))?;
    let (Some(memory), Some(pids)) = (hierarchy(&text, "memory"), hierarchy(&text, "pids")) else {
        return Err("the kernel has no memory or no pids controller".into());
    };
    if (memory.0 == 0) != (pids.0 == 0) {
        return Err("the memory and pids controllers are split between cgroup v1 and v2".into());
    }
    if !Path::new(BASE).is_dir() {
        return Err(format!("{BASE} is missing"));
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(sys("unshare(CLONE_NEWNS)"))?;
    let none = None::<&str>;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(sys("making / private"))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if memory.0 == 0 {
        mount(Some("cgroup2"), BASE, Some("cgroup2"), flags, none)
            .map_err(sys("mounting cgroup2"))?;
        return Ok(Layout::V2(BASE.into()));
    }
    mount(Some("tmpfs"), BASE, Some("tmpfs"), flags, Some("mode=0755"))
        .map_err(sys("mounting a tmpfs on /sys/fs/cgroup"))?;
    let attach = |controllers: &[String]| -> Result<PathBuf, String> {
        let dir = Path::new(BASE).join(controllers.join(","));
        if !dir.exists() {
            std::fs::create_dir(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
            mount(
                Some("cgroup"),
                &dir,
                Some("cgroup"),
                flags,
                Some(controllers.join(",").as_str()),
            )
            .map_err(sys("mounting a cgroup v1 hierarchy"))?;
        }
        Ok(dir)
    };
    Ok(Layout::V1 {
        memory: attach(&memory.1)?,
        pids: attach(&pids.1)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CGROUPS: &str = "\
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpu\t1\t1\t1
cpuacct\t1\t1\t1
memory\t4\t16\t1
pids\t8\t1\t1
net_cls\t0\t1\t1
";

    #[test]
    fn hierarchies_are_read_with_their_companions() {
        assert_eq!(
            hierarchy(CGROUPS, "memory"),
            Some((4, vec!["memory".into()]))
        );
        assert_eq!(
            hierarchy(CGROUPS, "cpuacct"),
            Some((1, vec!["cpu".into(), "cpuacct".into()]))
        );
        assert_eq!(hierarchy(CGROUPS, "net_cls").map(|h| h.0), Some(0));
        assert_eq!(hierarchy(CGROUPS, "rdma"), None);
    }
}
