//! A host's `netns` that does not exist yet: `plan` shows everything to create, `apply`
//! makes the namespace (and says so in a marker), `destroy` removes it again — but
//! never a namespace vmctl did not make. Needs root and iproute2 (and /dev/kvm for the
//! quickstart's VMs in a namespace vmctl made).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::lab::{text, Lab, VMS};
use crate::support::{self, vmctl};

pub(crate) fn skip() -> bool {
    support::skip_unless(support::is_root(), "root")
        || support::skip_unless(
            Command::new("ip").args(["netns", "help"]).output().is_ok(),
            "the `ip` command (iproute2)",
        )
}

/// A network namespace name for one test, deleted (`ip netns delete`) when dropped,
/// also when the test fails; deleting one that is already gone is fine.
pub(crate) struct NetnsGuard {
    pub(crate) name: String,
}

impl NetnsGuard {
    pub(crate) fn new() -> Self {
        NetnsGuard {
            name: support::netns_name(),
        }
    }

    /// A new one, made now (`ip netns add`), as a namespace vmctl did not make.
    pub(crate) fn made() -> Self {
        let netns = NetnsGuard::new();
        let ok = Command::new("ip")
            .args(["netns", "add", &netns.name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {} failed", netns.name);
        netns
    }

    pub(crate) fn exists(&self) -> bool {
        Path::new("/run/netns").join(&self.name).exists()
    }

    /// `ip -n <netns> ARGS`, which must succeed; its stdout.
    pub(crate) fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("ip runs");
        assert!(out.status.success(), "ip {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if self.exists() {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.name])
                .status();
        }
    }
}

/// A config in a temp dir: one host with `netns`, one network (bridge `bridge`) with a
/// VLAN and its gateway.
struct Project {
    dir: tempfile::TempDir,
    netns: String,
}

impl Project {
    fn new(netns: &str, bridge: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let project = Project {
            dir,
            netns: netns.to_owned(),
        };
        std::fs::create_dir_all(project.config_dir()).unwrap();
        let kdl = format!(
            r#"project "nslab"

host "local" {{
    state-dir "{state}"
    netns "{netns}"
}}

network "lan" host="local" bridge="{bridge}"

vlan "front" network="lan" id=100 {{
    gateway "10.250.0.1/24"
}}
"#,
            state = project.state_dir().display(),
        );
        std::fs::write(project.config_dir().join("lab.kdl"), kdl).unwrap();
        project
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The namespace's marker (beside the namespace, shared by every project).
    fn marker(&self) -> PathBuf {
        Path::new("/run/vmctl/netns").join(format!("{}.json", self.netns))
    }

    fn vmctl(&self, args: &[&str]) -> Output {
        vmctl()
            .args(["--color", "never"])
            .args(args)
            .arg(self.config_dir())
            .stdin(Stdio::null())
            .output()
            .expect("vmctl runs")
    }

    /// Runs `vmctl ARGS`, which must exit 0; its output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.vmctl(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "vmctl {args:?}:\n{}",
            text(&out)
        );
        text(&out)
    }
}

#[test]
fn a_missing_netns_is_planned_empty_made_by_apply_and_removed_by_destroy() {
    if skip() {
        return;
    }
    let netns = NetnsGuard::new();
    let project = Project::new(&netns.name, "vmbrns0");
    assert!(!netns.exists());

    // Observed as an empty network side: the namespace and everything in it to
    // create, nothing made yet.
    let out = project.ok(&["plan"]);
    assert!(
        out.contains("Plan: 4 to add, 0 to change, 0 to destroy."),
        "{out}"
    );
    assert!(out.contains(&format!("netns.{}", netns.name)), "{out}");
    assert!(!netns.exists(), "plan must not make the namespace");

    let out = project.ok(&["apply", "--auto-approve"]);
    assert!(out.contains("Apply complete: 4 done"), "{out}");
    assert!(netns.exists(), "apply makes the namespace");
    let marker = std::fs::read_to_string(project.marker()).expect("netns marker");
    assert!(
        marker.contains(&netns.name) && marker.contains("nslab"),
        "{marker}"
    );
    let links = netns.ip(&["-br", "link", "show"]);
    assert!(
        links.contains("vmbrns0"),
        "the bridge is in the namespace:\n{links}"
    );
    assert!(
        netns.ip(&["-br", "link", "show", "lo"]).contains("UNKNOWN"),
        "lo is up"
    );
    let addrs = netns.ip(&["-br", "addr", "show"]);
    assert!(addrs.contains("10.250.0.1/24"), "{addrs}");
    let own = Command::new("ip")
        .args(["-br", "link", "show"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&own.stdout).contains("vmbrns0"),
        "the bridge must not be in the machine's own namespace"
    );

    let out = project.ok(&["plan", "--detailed-exitcode"]);
    assert!(out.contains("No changes."), "{out}");

    let out = project.ok(&["destroy", "--auto-approve"]);
    assert!(out.contains("Removed network namespace"), "{out}");
    assert!(!netns.exists(), "destroy removes the namespace vmctl made");
    assert!(!project.marker().exists(), "the marker goes with it");
}

#[test]
fn a_netns_vmctl_did_not_make_is_kept_by_destroy() {
    if skip() {
        return;
    }
    let netns = NetnsGuard::new();
    let ok = Command::new("ip")
        .args(["netns", "add", &netns.name])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip netns add {} failed", netns.name);
    let project = Project::new(&netns.name, "vmbrns1");

    // It is there: the plan has nothing to make of it.
    let out = project.ok(&["plan"]);
    assert!(
        out.contains("Plan: 3 to add, 0 to change, 0 to destroy."),
        "{out}"
    );
    let out = project.ok(&["apply", "--auto-approve"]);
    assert!(out.contains("Apply complete: 3 done"), "{out}");
    assert!(
        !project.marker().exists(),
        "vmctl did not make it: no marker"
    );
    assert!(netns.ip(&["-br", "link", "show"]).contains("vmbrns1"));

    let out = project.ok(&["destroy", "--auto-approve"]);
    assert!(!out.contains("Removed network namespace"), "{out}");
    assert!(!out.contains(&format!("netns.{}", netns.name)), "{out}");
    assert!(
        netns.exists(),
        "a namespace vmctl did not make is never removed"
    );
    let links = netns.ip(&["-br", "link", "show"]);
    assert!(
        !links.contains("vmbrns1"),
        "the project's bridge is gone:\n{links}"
    );
}

#[test]
fn the_quickstart_runs_in_a_netns_vmctl_makes_and_destroy_removes_it() {
    if skip() || crate::vm::skip() {
        return;
    }
    let lab = Lab::without_netns(|vm| format!("console=ttyS0 testguest.name={vm} testguest.halt"));
    assert!(!lab.netns_exists());
    lab.edit("vms.kdl", |t| {
        t.replace("prevent-destroy #true", "prevent-destroy #false")
    });
    let out = lab.apply();
    assert!(out.contains("Apply complete: 12 done"), "{out}");
    assert!(lab.netns_exists(), "apply makes the namespace");
    for vm in VMS {
        assert!(lab.pid(vm).is_some(), "{vm} does not run");
        lab.wait_console(vm, "testguest: ok");
    }
    let taps = lab
        .links()
        .iter()
        .filter(|(_, a, _)| a.contains('#'))
        .count();
    assert_eq!(taps, 3, "the taps are in the namespace: {:?}", lab.links());
    assert!(lab.planned().is_empty(), "{:?}", lab.planned());

    let out = lab.vmctl(&["destroy", "--auto-approve", "--stop-timeout", "5s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(lab.processes(), Vec::<i32>::new());
    assert!(
        !lab.netns_exists(),
        "destroy removes the namespace vmctl made"
    );
    assert_eq!(lab.files(), ["state/lab", "state/lab/lock"]);
}

#[test]
fn an_apply_that_leaves_no_network_removes_the_netns_vmctl_made() {
    if skip() {
        return;
    }
    let netns = NetnsGuard::new();
    let project = Project::new(&netns.name, "vmbrns2");
    project.ok(&["apply", "--auto-approve"]);
    assert!(netns.exists());

    // The config keeps the host (and gets a pool) but drops its network: nothing of the
    // project is left in the namespace, so it goes.
    let path = project.config_dir().join("lab.kdl");
    let kdl = std::fs::read_to_string(&path).unwrap();
    let host_only = &kdl[..kdl.find("network \"lan\"").expect("network node")];
    let pool = project.dir.path().join("pool");
    let kdl = format!(
        "{host_only}pool \"p\" host=\"local\" type=\"dir\" {{\n    path \"{}\"\n}}\n",
        pool.display()
    );
    std::fs::write(&path, kdl).unwrap();
    let out = project.ok(&["apply", "--auto-approve"]);
    assert!(out.contains("Removed network namespace"), "{out}");
    assert!(!netns.exists(), "an apply that leaves nothing removes it");
    assert!(!project.marker().exists());
}

#[test]
fn a_netns_vmctl_made_that_holds_something_else_is_kept_and_destroy_says_so() {
    if skip() {
        return;
    }
    let netns = NetnsGuard::new();
    let project = Project::new(&netns.name, "vmbrns3");
    // The namespace outlives a failed destroy here: its marker goes with the test.
    struct Marker(PathBuf);
    impl Drop for Marker {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _marker = Marker(project.marker());
    project.ok(&["apply", "--auto-approve"]);
    assert!(netns.exists());
    netns.ip(&["link", "add", "stray0", "type", "bridge"]);

    // The bridge goes; the namespace is kept with its marker, and the step says why.
    let out = project.vmctl(&["destroy", "--auto-approve"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("still holds stray0"), "{all}");
    assert!(all.contains("ip netns delete"), "{all}");
    assert!(netns.exists(), "{all}");
    assert!(project.marker().exists(), "{all}");
    assert!(!netns.ip(&["-br", "link", "show"]).contains("vmbrns3"));

    // What is left is the namespace's delete, which goes through once it is empty.
    // (`destroy` without `--auto-approve` shows its plan, then refuses: no terminal.)
    let out = text(&project.vmctl(&["destroy"]));
    assert!(
        out.contains("Plan: 0 to add, 0 to change, 1 to destroy.")
            && out.contains(&format!("netns.{}", netns.name)),
        "{out}"
    );
    netns.ip(&["link", "delete", "stray0"]);
    let out = project.ok(&["destroy", "--auto-approve"]);
    assert!(out.contains("Removed network namespace"), "{out}");
    assert!(!netns.exists());
    assert!(!project.marker().exists());
}
