//! Networking that vmctl must get right on a shared host (issue 9): interfaces it did not
//! make are never adopted, changed or deleted; a VM whose tap is gone is drift that
//! apply repairs; a netns shared by two projects is removed by the last one's destroy.
//! Needs root and iproute2 (and /dev/kvm for the VMs); everything runs in network
//! namespaces the tests make and remove.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::lab::{text, Lab, VMS};
use crate::netns::{skip, NetnsGuard};
use crate::support::vmctl;
use crate::vm::wait_gone;

/// A config of project `project` in a temp dir, on one host in network namespace
/// `netns` with a temp state dir and pool.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    /// `body` is the config after the `project` and `host` nodes; `{pool}` in it is the
    /// temp pool path.
    fn new(project: &str, netns: &str, body: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Project { dir };
        std::fs::create_dir_all(p.config_dir()).unwrap();
        let state = p.dir.path().join("state");
        let kdl = format!(
            "project \"{project}\"\n\nhost \"local\" {{\n    state-dir \"{}\"\n    netns \"{netns}\"\n}}\n\n{}",
            state.display(),
            body.replace("{pool}", &p.pool_dir().display().to_string()),
        );
        std::fs::write(p.config_dir().join("main.kdl"), kdl).unwrap();
        p
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn pool_dir(&self) -> PathBuf {
        self.dir.path().join("pool")
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
}

/// `ip -d -j link show DEV` and its addresses, without the counters: what must not change.
fn link_state(netns: &NetnsGuard, dev: &str) -> (Value, Value) {
    let mut link: Value = serde_json::from_str(&netns.ip(&["-d", "-j", "link", "show", dev]))
        .expect("ip -j link is JSON");
    if let Some(l) = link.get_mut(0).and_then(Value::as_object_mut) {
        l.remove("stats64");
    }
    let addr: Value =
        serde_json::from_str(&netns.ip(&["-j", "addr", "show", dev])).expect("ip -j addr is JSON");
    (link, addr)
}

fn has_link(netns: &NetnsGuard, dev: &str) -> bool {
    Command::new("ip")
        .args(["-n", &netns.name, "link", "show", dev])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_bridge_vmctl_did_not_make_is_never_adopted_changed_or_deleted() {
    if skip() {
        return;
    }
    let netns = NetnsGuard::made();
    // Someone's own br0, with an address: exactly the name network "lan" asks for.
    netns.ip(&["link", "add", "br0", "type", "bridge"]);
    netns.ip(&["addr", "add", "10.9.9.1/24", "dev", "br0"]);
    let before = link_state(&netns, "br0");

    let project = Project::new(
        "trust",
        &netns.name,
        r#"network "lan" host="local" bridge="br0"
vlan "front" network="lan" id=100 {
    gateway "10.100.0.1/24"
}
network "ok" host="local" bridge="trustok0"
vlan "back" network="ok" id=200 {
    gateway "10.200.0.1/24"
}
pool "fast" host="local" type="dir" {
    path "{pool}"
}
"#,
    );

    // plan: an error for network lan, said before anything is applied; nothing made.
    let out = project.vmctl(&["plan"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    // The diagnostic's lines are wrapped: compare with the wrapping taken out.
    let flat = all.replace("\n  | ", " ");
    assert!(
        flat.contains("network.lan on host \"local\": bridge br0 exists and is not vmctl's; pick another `bridge` name or remove it"),
        "{all}"
    );
    assert!(all.contains("vmctl::plan::not_vmctls"), "{all}");
    assert_eq!(link_state(&netns, "br0"), before);
    assert!(!has_link(&netns, "trustok0"), "plan made nothing");

    // apply: fails for lan and what needs it; network ok, its VLAN and the pool are made.
    let out = project.vmctl(&["apply", "--auto-approve"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("bridge br0 exists and is not vmctl's"),
        "{all}"
    );
    assert!(
        all.contains("vlan.front"),
        "the VLAN of lan is skipped: {all}"
    );
    assert_eq!(
        link_state(&netns, "br0"),
        before,
        "br0 was touched by apply"
    );
    assert!(!has_link(&netns, "br0v100"), "{all}");
    let ok = netns.ip(&["-d", "link", "show", "trustok0"]);
    assert!(ok.contains("alias vmctl:trust:ok"), "{ok}");
    let back = netns.ip(&["addr", "show", "trustok0v200"]);
    assert!(back.contains("10.200.0.1/24"), "{back}");
    assert!(project.pool_dir().is_dir(), "{all}");

    // plan again: still the error for lan, and lan still to create.
    let out = project.vmctl(&["plan"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("network.lan on host"), "{all}");

    // destroy: everything of the project goes, br0 stays exactly as it was.
    let out = project.vmctl(&["destroy", "--auto-approve"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!has_link(&netns, "trustok0"), "{all}");
    assert!(!has_link(&netns, "trustok0v200"), "{all}");
    assert_eq!(
        link_state(&netns, "br0"),
        before,
        "br0 was touched by destroy"
    );
}

/// The status line of `name`.
fn status_line(lab: &Lab, name: &str) -> String {
    let out = lab.vmctl(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = text(&out);
    all.lines()
        .find(|l| l.split_whitespace().any(|w| w == name))
        .unwrap_or_else(|| panic!("no status line for {name}:\n{all}"))
        .to_owned()
}

/// The bridge `ifname` is a port of (empty when none).
fn controller_of(lab: &Lab, ifname: &str) -> String {
    lab.links()
        .into_iter()
        .find(|(name, ..)| name == ifname)
        .map(|(.., master)| master)
        .unwrap_or_else(|| panic!("{ifname} is gone: {:?}", lab.links()))
}

#[test]
fn a_running_vms_detached_down_or_deleted_tap_is_drift_that_apply_repairs() {
    if crate::vm::skip() || skip() {
        return;
    }
    let lab = Lab::new(|vm| format!("console=ttyS0 testguest.name={vm} testguest.halt"));
    lab.apply();
    lab.wait_console("web-1", "testguest: ok");
    let tap = lab
        .link_with_alias("vmctl:lab:web-1#0")
        .expect("web-1 has a tap");
    let bridge = controller_of(&lab, &tap);
    assert!(!bridge.is_empty(), "{:?}", lab.links());
    let pid = lab.pid("web-1").expect("web-1 runs");

    // Detached by hand: drift, repaired in place (the VM keeps running).
    lab.ip(&["link", "set", &tap, "nomaster"]);
    let line = status_line(&lab, "vm.web-1");
    assert!(
        line.contains("drifted") && line.contains("nic[0].tap"),
        "{line}"
    );
    assert_eq!(lab.planned(), ["update vm.web-1"]);
    let out = lab.vmctl(&["plan"]);
    assert!(text(&out).contains("nic[0].tap"), "{}", text(&out));
    lab.apply();
    assert_eq!(
        controller_of(&lab, &tap),
        bridge,
        "the tap is back on its VLAN"
    );
    assert_eq!(lab.pid("web-1"), Some(pid), "web-1 was restarted");
    assert_eq!(lab.planned(), Vec::<String>::new());

    // Set down by hand: the VM is cut off as surely; repaired in place, brought up.
    lab.ip(&["link", "set", &tap, "down"]);
    assert_eq!(lab.planned(), ["update vm.web-1"]);
    lab.apply();
    let flags = lab.ip(&["-j", "link", "show", "dev", &tap]);
    assert!(flags.contains("\"UP\""), "the tap is up again: {flags}");
    assert_eq!(lab.pid("web-1"), Some(pid), "web-1 was restarted");
    assert_eq!(lab.planned(), Vec::<String>::new());

    // Deleted by hand: drift that only a restart repairs (the VMM holds the old device).
    lab.ip(&["link", "del", &tap]);
    let line = status_line(&lab, "vm.web-1");
    assert!(
        line.contains("drifted") && line.contains("nic[0].tap"),
        "{line}"
    );
    assert_eq!(lab.planned(), ["replace vm.web-1"]);
    let out = lab.vmctl(&["plan"]);
    assert!(text(&out).contains("forces restart"), "{}", text(&out));
    lab.apply();
    let restarted = lab.pid("web-1").expect("web-1 runs again");
    assert_ne!(restarted, pid, "web-1 was not restarted");
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "the old VMM is gone"
    );
    assert_eq!(controller_of(&lab, &tap), bridge, "a new tap on its VLAN");
    lab.wait_console("web-1", "testguest: ok");
    assert_eq!(lab.planned(), Vec::<String>::new());
    // The other VMs were left alone.
    for vm in VMS.iter().filter(|v| **v != "web-1") {
        assert!(lab.pid(vm).is_some(), "{vm} does not run");
    }
}

#[test]
fn a_bridge_set_down_is_drift_that_apply_repairs_in_place() {
    if crate::vm::skip() || skip() {
        return;
    }
    let lab = Lab::new(|vm| format!("console=ttyS0 testguest.name={vm} testguest.halt"));
    lab.apply();
    let bridge = lab
        .link_with_alias("vmctl:lab:lan")
        .expect("network lan has its bridge");
    let pids: Vec<_> = VMS.iter().map(|vm| lab.pid(vm)).collect();
    assert!(pids.iter().all(Option::is_some), "{pids:?}");

    lab.ip(&["link", "set", &bridge, "down"]);
    let line = status_line(&lab, "network.lan");
    assert!(line.contains("drifted"), "{line}");
    assert_eq!(lab.planned(), ["update network.lan"]);
    let out = lab.vmctl(&["plan"]);
    assert!(text(&out).contains("bridge.up"), "{}", text(&out));
    lab.apply();
    let flags = lab.ip(&["-j", "link", "show", "dev", &bridge]);
    assert!(flags.contains("\"UP\""), "the bridge is up again: {flags}");
    assert_eq!(lab.planned(), Vec::<String>::new());
    let after: Vec<_> = VMS.iter().map(|vm| lab.pid(vm)).collect();
    assert_eq!(after, pids, "a VM was restarted");
}

/// The projects the marker of `netns` lists, or `None` without a marker.
fn netns_users(netns: &NetnsGuard) -> Option<Vec<String>> {
    let path = std::path::Path::new("/run/vmctl/netns").join(format!("{}.json", netns.name));
    let text = std::fs::read_to_string(path).ok()?;
    let marker: Value = serde_json::from_str(&text).expect("the marker is JSON");
    let projects = marker["projects"].as_array().expect("projects");
    Some(
        projects
            .iter()
            .map(|p| p.as_str().unwrap_or_default().to_owned())
            .collect(),
    )
}

#[test]
fn a_netns_shared_by_two_projects_is_removed_by_the_last_ones_destroy() {
    if skip() {
        return;
    }
    let netns = NetnsGuard::new();
    assert!(!netns.exists());
    // Two projects, each with its own state dir, in one namespace neither has yet.
    let network = |bridge: &str, id: u16| {
        format!(
            "network \"lan\" host=\"local\" bridge=\"{bridge}\"\nvlan \"front\" network=\"lan\" id={id} {{\n    gateway \"10.{id}.0.1/24\"\n}}\n"
        )
    };
    let alpha = Project::new("alpha", &netns.name, &network("alpha0", 71));
    let beta = Project::new("beta", &netns.name, &network("beta0", 72));
    let ok = |p: &Project, args: &[&str]| {
        let out = p.vmctl(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}:\n{}", text(&out));
        text(&out)
    };

    ok(&alpha, &["apply", "--auto-approve"]);
    assert!(netns.exists(), "alpha's apply makes the namespace");
    assert_eq!(netns_users(&netns), Some(vec!["alpha".to_owned()]));
    // beta finds the namespace alpha's apply made: its plan joins it.
    let out = ok(&beta, &["plan"]);
    assert!(
        out.contains(&format!(
            "netns.{} on host \"local\" will be created",
            netns.name
        )) && out.contains("this one joins"),
        "{out}"
    );
    ok(&beta, &["apply", "--auto-approve"]);
    assert_eq!(
        netns_users(&netns),
        Some(vec!["alpha".to_owned(), "beta".to_owned()])
    );

    // alpha's destroy takes its bridge and leaves the namespace to beta.
    let out = ok(&alpha, &["destroy", "--auto-approve"]);
    assert!(netns.exists(), "{out}");
    assert!(out.contains("still use it"), "{out}");
    assert!(!has_link(&netns, "alpha0"), "{out}");
    assert!(has_link(&netns, "beta0"), "{out}");
    assert_eq!(netns_users(&netns), Some(vec!["beta".to_owned()]));

    // beta is the last: its destroy removes the namespace vmctl made, and the marker.
    let out = ok(&beta, &["destroy", "--auto-approve"]);
    assert!(out.contains("Removed network namespace"), "{out}");
    assert!(!netns.exists(), "{out}");
    assert_eq!(netns_users(&netns), None);
}
