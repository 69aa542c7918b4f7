//! A VM's `cpuset` for real: a one-VM project applied with `cpuset "0"` runs its VMM,
//! every thread of it, on CPU 0 only (through the host's cgroup cpuset controller, v2
//! or v1); a changed cpuset moves it in place; destroy removes its cgroup. Needs root
//! and /dev/kvm (CI has them; elsewhere the test says why it skips).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::lab::{text, Lab};
use crate::vm::guest;

/// Where the VM's group may be: a cgroup v2 root, or the v1 cpuset hierarchy.
const ROOTS: [&str; 3] = [
    "/sys/fs/cgroup",
    "/sys/fs/cgroup/cpuset",
    "/sys/fs/cgroup/unified",
];

/// Removes what a failed test leaves of the VM's group (the lab kills the VMM first).
struct GroupGuard(String);

impl GroupGuard {
    fn dirs(&self) -> Vec<PathBuf> {
        ROOTS
            .iter()
            .map(|r| PathBuf::from(r).join(&self.0))
            .collect()
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        for dir in self.dirs() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while dir.exists() && std::fs::remove_dir(&dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// `Cpus_allowed_list` of the process `pid` and of each of its threads.
fn cpus_allowed(pid: i32) -> Vec<String> {
    let field = |status: PathBuf| {
        std::fs::read_to_string(&status)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_owned())
    };
    let mut out: Vec<String> = field(PathBuf::from(format!("/proc/{pid}/status")))
        .into_iter()
        .collect();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        out.extend(field(task.path().join("status")));
    }
    out
}

/// Checks where the cpu list `cpus` of VMM `vmm` is held: on a v1 cpuset hierarchy,
/// the VM's group `guard.0`, which holds the VMM; on cgroup v2 (one group per
/// process), the VMM's own `vmctl-vmm-…` group, which also holds its memory limit, and
/// no VM group is made.
fn assert_group(vmm: i32, guard: &GroupGuard, cpus: &str) {
    let cgroups = std::fs::read_to_string(format!("/proc/{vmm}/cgroup")).unwrap();
    let v1_cpuset = cgroups.lines().any(|l| {
        l.split(':')
            .nth(1)
            .is_some_and(|c| c.split(',').any(|c| c == "cpuset"))
    });
    if v1_cpuset {
        assert!(cgroups.contains(&format!("/{}\n", guard.0)), "{cgroups}");
        assert!(guard.dirs().iter().any(|d| d.is_dir()), "no group dir");
        return;
    }
    let own = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line")
        .trim()
        .trim_start_matches('/');
    assert!(own.starts_with("vmctl-vmm-"), "{cgroups}");
    let dir = PathBuf::from("/sys/fs/cgroup").join(own);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    assert_eq!(read("cpuset.cpus").trim(), cpus, "{}", dir.display());
    assert!(read("memory.max").trim() != "max", "its limits hold");
    assert!(guard.dirs().iter().all(|d| !d.exists()), "a VM group on v2");
}

#[test]
fn a_cpuset_pins_every_vmm_thread_changes_in_place_and_goes_with_destroy() {
    if crate::vm::skip() {
        return;
    }
    let vm = "web-1";
    let lab = Lab::new(|_| String::new());
    // A project name of this test only: cgroups are host-wide, not per state dir.
    let project = format!("cpuset{}", std::process::id());
    let guard = GroupGuard(format!("vmctl-{project}-{vm}"));
    lab.edit("lab.kdl", |kdl| {
        let host_only = &kdl[..kdl.find("network \"lan\"").expect("network node")];
        host_only.replace("project \"lab\"", &format!("project \"{project}\""))
    });
    lab.edit("vms.kdl", |_| {
        format!(
            "vm \"{vm}\" host=\"local\" {{\n    cpus 2\n    memory \"64MiB\"\n    kernel \"{}\"\n    \
             cmdline \"console=ttyS0 testguest.name={vm} testguest.halt\"\n    cpuset \"0\"\n}}\n",
            guest().display()
        )
    });
    let vm_dir = lab.state_dir().join(&project).join("vms").join(vm);
    let pid = || -> i32 {
        let text = std::fs::read_to_string(vm_dir.join("vmm.pid")).expect("vmm.pid");
        text.trim().parse().expect("a pid")
    };

    lab.apply();
    let vmm = pid();
    let allowed = cpus_allowed(vmm);
    assert!(allowed.len() > 1, "the VMM and its threads: {allowed:?}");
    assert!(allowed.iter().all(|a| a == "0"), "{allowed:?}");
    assert_group(vmm, &guard, "0");

    // Another CPU: the same process, moved in place.
    lab.edit("vms.kdl", |t| t.replace("cpuset \"0\"", "cpuset \"1\""));
    let out = lab.apply();
    assert!(out.contains("cpuset"), "{out}");
    assert_eq!(pid(), vmm, "a cpuset change is made in place:\n{out}");
    let allowed = cpus_allowed(vmm);
    assert!(allowed.iter().all(|a| a == "1"), "{allowed:?}");
    assert_group(vmm, &guard, "1");

    // A CPU the host does not have is refused before anything runs.
    lab.edit("vms.kdl", |t| {
        t.replace("cpuset \"1\"", "cpuset \"1,4095\"")
    });
    let out = lab.vmctl(&["apply", "--auto-approve", "--stop-timeout", "5s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("4095"), "{}", text(&out));
    assert!(cpus_allowed(vmm).iter().all(|a| a == "1"));

    let out = lab.vmctl(&["destroy", "--auto-approve", "--stop-timeout", "5s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!crate::vm::alive(vmm), "the VMM is gone");
    for dir in guard.dirs() {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}
