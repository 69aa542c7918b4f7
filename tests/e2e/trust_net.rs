//! Networking that vmctl must get right on a shared host (issue 9): interfaces it did not
//! make are never adopted, changed or deleted; a VM whose tap is gone is drift that
//! apply repairs; a netns shared by two projects is removed by the last one's destroy.
//! Needs root and iproute2 (and /dev/kvm for the VMs); everything runs in network
//! namespaces the tests make and remove.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::lab::text;
use crate::netns::{skip, NetnsGuard};
use crate::support::vmctl;

/// A config of project `project` in a temp dir, on one host in network namespace
/// `netns` with a temp state dir and pool.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    /// `body` is the config after the `project` and `host` nodes; `{pool}` in it is the
    /// temp pool path.
    fn new(project: &str, netns: &str, state_dir: Option<&std::path::Path>, body: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Project { dir };
        std::fs::create_dir_all(p.config_dir()).unwrap();
        let state = state_dir.map_or_else(|| p.dir.path().join("state"), |s| s.to_path_buf());
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
        None,
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
