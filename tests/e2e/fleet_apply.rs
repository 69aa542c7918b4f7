//! Issue 10: plan, apply, status, console and destroy on remote hosts, through the
//! binary, on the fleet harness ([`crate::fleet`]): vmctl runs in the controller
//! namespace and reaches each host's sshd with the harness's ssh config, ships itself
//! and the test guest's kernel, and runs each host's steps through its agent.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::fleet::{self, Fleet};
use crate::lab::text;
use crate::vm::guest;

/// A two-host project: on each host a network, a VLAN, a pool, a volume and a VM.
struct FleetLab {
    fleet: Fleet,
    config: PathBuf,
}

impl FleetLab {
    fn new() -> FleetLab {
        let fleet = Fleet::with_hosts(2);
        let config = fleet.dir.path().join("config");
        std::fs::create_dir_all(&config).expect("config dir");
        let mut kdl = String::from("project \"fleet\"\n");
        for (host, vm, ssh) in [("a", "web-1", "host-a"), ("b", "web-2", "root@host-b")] {
            let state = &fleet.host(&format!("host-{host}")).state_dir;
            let pool = fleet.dir.path().join(format!("pool-{host}"));
            kdl.push_str(&format!(
                r#"
host "{host}" {{
    ssh "{ssh}"
    state-dir "{state}"
    cpus 2
    memory "1GiB"
}}
network "lan-{host}" host="{host}"
vlan "front-{host}" network="lan-{host}" id=100
pool "pool-{host}" host="{host}" type="dir" path="{pool}"
volume "{vm}-root" pool="pool-{host}" size="16MiB"
vm "{vm}" host="{host}" {{
    cpus 1
    memory "64MiB"
    kernel "{kernel}"
    cmdline "console=ttyS0 testguest.name={vm} testguest.halt"
    disk "{vm}-root"
    nic vlan="front-{host}"
}}
"#,
                state = state.display(),
                pool = pool.display(),
                kernel = guest().display(),
            ));
        }
        std::fs::write(config.join("fleet.kdl"), kdl).expect("write config");
        FleetLab { fleet, config }
    }

    /// `vmctl ARGS… <config>` from the controller namespace.
    fn vmctl(&self, args: &[&str]) -> Output {
        self.fleet
            .controller_command(env!("CARGO_BIN_EXE_vmctl"))
            .args(["--color", "never"])
            .args(args)
            .arg(&self.config)
            .output()
            .expect("vmctl runs")
    }

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

    /// The plan's actionable changes as `action kind.name@host`, sorted.
    fn planned(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["plan", "--json"];
        args.extend(extra);
        let out = self.vmctl(&args);
        assert_eq!(out.status.code(), Some(0), "plan:\n{}", text(&out));
        let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
        let mut changes: Vec<String> = plan["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .filter(|c| c["action"] != "no-op")
            .map(|c| {
                format!(
                    "{} {}@{}",
                    c["action"].as_str().unwrap_or(""),
                    c["address"].as_str().unwrap_or(""),
                    c["host"].as_str().unwrap_or("")
                )
            })
            .collect();
        changes.sort();
        changes
    }

    fn state(&self, host: &str) -> &Path {
        &self.fleet.host(host).state_dir
    }

    /// The VMM of `vm` on `host`, by the pid file its lock holder wrote.
    fn vmm_pid(&self, host: &str, vm: &str) -> Option<i32> {
        let dir = self.state(host).join("fleet/vms").join(vm);
        let pid: i32 = std::fs::read_to_string(dir.join("vmm.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        crate::vm::alive(pid).then_some(pid)
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_project_on_two_remote_hosts_is_applied_observed_repaired_and_destroyed() {
    if fleet::skip() {
        return;
    }
    let mut lab = FleetLab::new();

    // Apply from empty: vmctl and the kernel are shipped to each host once.
    let applied = lab.ok(&["apply", "--auto-approve"]);
    assert!(applied.contains("Apply complete"), "{applied}");
    for host in ["host-a", "host-b"] {
        let bins = files_in(&lab.state(host).join("bin"));
        assert_eq!(bins.len(), 1, "{host}: {bins:?}");
        assert!(bins[0].starts_with("vmctl-"), "{bins:?}");
        let images = files_in(&lab.state(host).join("images"));
        assert_eq!(images.len(), 1, "{host}: the kernel, once: {images:?}");
        assert!(images[0].starts_with("sha256-"), "{images:?}");
    }
    assert!(
        lab.vmm_pid("host-a", "web-1").is_some(),
        "web-1 runs on host a"
    );
    assert!(
        lab.vmm_pid("host-b", "web-2").is_some(),
        "web-2 runs on host b"
    );

    // Nothing left to do; status sees both VMs running where they are.
    assert_eq!(lab.planned(&[]), Vec::<String>::new());
    let out = lab.vmctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = lab.ok(&["status"]);
    for (vm, host) in [("web-1", "a"), ("web-2", "b")] {
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("vm.{vm} ")))
            .unwrap_or_else(|| panic!("{vm} in status:\n{status}"));
        assert!(line.contains("running") && line.contains(host), "{line}");
    }

    // The remote console, through host b's agent.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = lab
            .fleet
            .controller_command(env!("CARGO_BIN_EXE_vmctl"))
            .args(["console", "web-2"])
            .arg(&lab.config)
            .args(["--lines", "20"])
            .output()
            .expect("console runs");
        let shown = text(&out);
        if out.status.success() && shown.contains("testguest: ok") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "web-2's console:\n{shown}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // Drift on one remote host: its VM's VMM is killed; exactly that is repaired.
    let pid = lab.vmm_pid("host-a", "web-1").expect("web-1's VMM");
    // SAFETY: kill has no memory-safety preconditions; the pid is the VMM this test's
    // apply started (its lock holder wrote it), alive a moment ago.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(
        crate::vm::wait_gone(pid, std::time::Duration::from_secs(10)),
        "web-1 died"
    );
    assert_eq!(lab.planned(&[]), ["start vm.web-1@a"]);
    lab.ok(&["apply", "--auto-approve"]);
    assert_eq!(lab.planned(&[]), Vec::<String>::new());
    // Shipped nothing the second time: still one vmctl and one kernel per host.
    for host in ["host-a", "host-b"] {
        assert_eq!(files_in(&lab.state(host).join("bin")).len(), 1);
        assert_eq!(files_in(&lab.state(host).join("images")).len(), 1);
    }

    // Host b unreachable: plan fails naming it, and nothing changes on host a.
    lab.fleet.host_mut("host-b").stop_sshd();
    let out = lab.vmctl(&["plan"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("\"b\"") && said.contains("vmctl::host::unreachable"),
        "{said}"
    );
    assert!(!said.contains("\"a\":"), "{said}");
    // Narrowed to the hosts that answer, the run goes on.
    assert_eq!(lab.planned(&["--exclude-host", "b"]), Vec::<String>::new());
    lab.fleet.host_mut("host-b").start_sshd();

    // Destroy: nothing of the project left on either host.
    lab.ok(&["destroy", "--auto-approve"]);
    assert_eq!(lab.vmm_pid("host-a", "web-1"), None);
    assert_eq!(lab.vmm_pid("host-b", "web-2"), None);
    for host in ["host-a", "host-b"] {
        let project = lab.state(host).join("fleet");
        let left = files_in(&project);
        assert!(left.iter().all(|f| f == "lock"), "{host}: {left:?}");
    }
    let planned = lab.planned(&[]);
    assert!(
        planned.iter().all(|c| c.starts_with("create")),
        "{planned:?}"
    );
}
