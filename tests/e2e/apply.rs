//! `vmctl apply`, `plan`, `status` and `destroy` for real: the quickstart lab brought
//! up in a network namespace and a temp state dir per test, its VMs booting the test
//! guest, then changed, drifted by hand, shrunk, interrupted and destroyed. Needs root,
//! /dev/kvm and iproute2 (CI has them; elsewhere the tests say why they skip).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::lab::{text, Lab, VMS};
use crate::support;
use crate::vm::{alive, wait_gone};

fn skip() -> bool {
    crate::vm::skip()
        || support::skip_unless(
            Command::new("ip").args(["netns", "help"]).output().is_ok(),
            "the `ip` command (iproute2)",
        )
}

/// Guests that send their name on their NIC for 3 s, report, and stay up until vmctl
/// shuts them down.
fn listening(vm: &str) -> String {
    format!("console=ttyS0 testguest.name={vm} testguest.listen=3000 testguest.halt")
}

fn set_memory(lab: &Lab, vm: &str, memory: &str) {
    lab.set(vm, &format!("memory \"{memory}\""));
}

#[test]
fn quickstart_lifecycle_apply_change_drift_remove_destroy() {
    if skip() {
        return;
    }
    let lab = Lab::new(listening);

    // Without a terminal and without --auto-approve, apply refuses.
    let out = lab.vmctl(&["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--auto-approve"), "{}", text(&out));
    assert!(lab.pid("db-1").is_none());

    // Apply: three VMs run, their checks pass, web-1 and web-2 (VLAN front) hear each
    // other and db-1 (VLAN back) hears nobody.
    let out = lab.apply();
    assert!(
        out.contains("Apply complete: 11 done, 0 failed, 0 skipped"),
        "{out}"
    );
    for vm in VMS {
        assert!(lab.pid(vm).is_some(), "{vm} does not run");
        lab.wait_console(vm, "testguest: ok");
        assert!(!lab.console(vm).contains("FAIL"), "{}", lab.console(vm));
    }
    let rx = |vm: &str| -> Vec<String> {
        let console = lab.console(vm);
        let mut lines: Vec<String> = console
            .lines()
            .filter(|l| l.contains(" rx from="))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(rx("web-1"), ["testguest: nic0 rx from=web-2"]);
    assert_eq!(rx("web-2"), ["testguest: nic0 rx from=web-1"]);
    assert_eq!(rx("db-1"), Vec::<String>::new());

    // Nothing to do now.
    let out = lab.vmctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).starts_with("No changes."), "{}", text(&out));
    let out = lab.vmctl(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for r in status["resources"].as_array().unwrap() {
        let expected = if r["kind"] == "vm" { "running" } else { "ok" };
        assert_eq!(r["state"], expected, "{r}");
    }
    let saved = lab.dir.path().join("nothing.plan");
    let out = lab.vmctl(&["plan", "-o", saved.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // More memory for web-1: a restart of web-1 only. The saved plan is stale now.
    set_memory(&lab, "web-1", "96MiB");
    let out = lab.vmctl(&["plan"]);
    let shown = text(&out);
    assert!(
        shown.contains("~ memory = \"64MiB\" -> \"96MiB\" # forces restart"),
        "{shown}"
    );
    assert_eq!(lab.planned(), ["replace vm.web-1"]);
    let out = vmctl_saved(&lab, &saved);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("stale"), "{}", text(&out));
    let before: Vec<_> = VMS.iter().map(|vm| lab.pid(vm)).collect();
    lab.apply();
    let after: Vec<_> = VMS.iter().map(|vm| lab.pid(vm)).collect();
    assert_ne!(before[0], after[0], "web-1 was not restarted");
    assert_eq!(before[1..], after[1..], "web-2 or db-1 was restarted");
    lab.wait_console("web-1", "testguest: ok");
    let memory: u64 = lab
        .console("web-1")
        .lines()
        .find_map(|l| l.strip_prefix("testguest: memory="))
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(memory > 90 << 20, "web-1 has {memory} bytes of RAM");
    assert_eq!(lab.planned(), Vec::<String>::new());

    // Drift by hand: db-1's process killed, web-2's volume file deleted, VLAN front
    // removed from the bridge (its own bridge where the kernel cannot filter VLANs).
    // web-2 runs on, on the deleted file, until it restarts: the plan restarts it after
    // re-creating its volume. web-1 is not restarted: its tap is put back on the VLAN.
    let web2 = lab.pid("web-2").unwrap();
    let web1 = lab.pid("web-1").unwrap();
    let db = lab.pid("db-1").unwrap();
    // SAFETY: kill has no memory-safety preconditions; db-1's VMM is this test's.
    unsafe { libc::kill(db, libc::SIGKILL) };
    assert!(wait_gone(db, Duration::from_secs(10)));
    std::fs::remove_file(lab.pool_dir().join("web-2-root.raw")).unwrap();
    let front_bridge = remove_vlan_front(&lab);
    assert_eq!(
        lab.planned(),
        [
            "create vlan.front",
            "create volume.web-2-root",
            "replace vm.web-2",
            "start vm.db-1"
        ]
    );
    let out = lab.vmctl(&["plan"]);
    assert!(
        text(&out).contains("(forces restart: disk web-2-root re-created)"),
        "{}",
        text(&out)
    );
    let out = lab.vmctl(&["status"]);
    assert!(text(&out).contains("crashed"), "{}", text(&out));
    lab.apply();
    assert_eq!(lab.planned(), Vec::<String>::new());
    assert!(lab.pool_dir().join("web-2-root.raw").exists());
    lab.wait_console("db-1", "testguest: ok");
    // web-2 booted again, on the new (empty) file; web-1 kept running.
    let restarted = lab.pid("web-2").expect("web-2 runs");
    assert_ne!(restarted, web2, "web-2 was not restarted");
    assert!(!alive(web2), "web-2's old VMM still runs");
    assert_eq!(lab.pid("web-1"), Some(web1), "web-1 was restarted");
    lab.wait_console("web-2", "testguest: ok");
    // Its VMM holds the new file, not a deleted one.
    let disk = lab.pool_dir().join("web-2-root.raw");
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{restarted}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| target.contains("web-2-root.raw"))
        .collect();
    assert_eq!(
        fds,
        [disk.display().to_string()],
        "web-2's disk descriptors"
    );
    let console = lab.console("web-2");
    assert!(
        console
            .lines()
            .any(|l| l == format!("testguest: disk0 sector0={}", "0".repeat(32))),
        "{console}"
    );
    if let Some(bridge) = front_bridge {
        // The web VMs' taps are back on the VLAN's bridge.
        let ports = lab
            .links()
            .into_iter()
            .filter(|(_, _, master)| master == &bridge)
            .count();
        assert_eq!(ports, 2, "{:?}", lab.links());
    }

    // web-2 leaves the config; its volume stays declared, so it stays.
    lab.edit("vms.kdl", |text| {
        let start = text.find("vm \"web-2\"").unwrap();
        let end = start + text[start..].find("\n}\n").unwrap() + 3;
        format!("{}{}", &text[..start], &text[end..])
    });
    assert_eq!(lab.planned(), ["delete vm.web-2"]);
    let web2 = lab.pid("web-2").unwrap();
    // Through a saved plan this time, applied exactly as saved.
    let saved = lab.dir.path().join("remove-web-2.plan");
    let out = lab.vmctl(&["plan", "-o", saved.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = vmctl_saved(&lab, &saved);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("1 done, 0 failed, 0 skipped"),
        "{}",
        text(&out)
    );
    assert!(wait_gone(web2, Duration::from_secs(10)));
    assert!(!lab.vm_dir("web-2").exists());
    assert!(lab.pool_dir().join("web-2-root.raw").exists());
    let taps = lab
        .links()
        .iter()
        .filter(|(_, a, _)| a.contains("#"))
        .count();
    assert_eq!(taps, 2, "{:?}", lab.links());

    // Destroy: refused while db-1-data is protected, then everything goes.
    let out = lab.vmctl(&["destroy", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("prevent-destroy"), "{}", text(&out));
    assert!(lab.pid("db-1").is_some());
    lab.edit("vms.kdl", |t| {
        t.replace("prevent-destroy #true", "prevent-destroy #false")
    });
    lab.apply();
    let pids: Vec<i32> = ["web-1", "db-1"]
        .iter()
        .filter_map(|vm| lab.pid(vm))
        .collect();
    let out = lab.vmctl(&["destroy", "--auto-approve", "--stop-timeout", "5s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for pid in pids {
        assert!(!alive(pid), "VMM {pid} still runs");
    }
    assert_eq!(lab.processes(), Vec::<i32>::new());
    assert_eq!(lab.links(), Vec::new(), "interfaces left in the netns");
    // Only the (empty) lock file is left of the project.
    assert_eq!(lab.files(), ["state/lab", "state/lab/lock"]);
    assert_eq!(
        lab.planned().len(),
        10,
        "a new plan creates everything again (its firewall too)"
    );
}

/// Runs `vmctl apply PLANFILE --auto-approve`.
fn vmctl_saved(lab: &Lab, plan: &std::path::Path) -> std::process::Output {
    crate::support::vmctl()
        .args(["--color", "never", "apply", "--auto-approve"])
        .arg(plan)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("vmctl runs ({e}) for {}", lab.netns))
}

/// Removes VLAN 100 of network lan by hand: its bridge (bridge-per-VLAN mode, returned)
/// or its bridge VLAN table entry (filtering mode).
fn remove_vlan_front(lab: &Lab) -> Option<String> {
    if let Some(bridge) = lab.link_with_alias("vmctl:lab:lan/100") {
        lab.ip(&["link", "del", &bridge]);
        return Some(bridge);
    }
    let bridge = lab
        .link_with_alias("vmctl:lab:lan")
        .expect("the lan bridge");
    let ok = Command::new("bridge")
        .args([
            "-n", &lab.netns, "vlan", "del", "dev", &bridge, "vid", "100", "self",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "bridge vlan del failed");
    None
}

#[test]
fn concurrent_and_killed_applies() {
    if skip() {
        return;
    }
    // web-1 ignores the shutdown key (no testguest.halt, listening for 10 minutes), so
    // restarting it takes the whole stop timeout: time to look at a running apply.
    let lab = Lab::new(|vm| {
        if vm == "web-1" {
            "console=ttyS0 testguest.listen=600000".to_owned()
        } else {
            listening(vm)
        }
    });
    lab.apply();
    set_memory(&lab, "web-1", "96MiB");
    let log = lab.dir.path().join("first-apply.log");
    let mut first = crate::support::vmctl()
        .args([
            "--color",
            "never",
            "apply",
            "--auto-approve",
            "--stop-timeout",
            "4s",
        ])
        .arg(lab.config_dir())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first_pid = first.id() as i32;
    let mut guard = crate::vm::KillOnDrop { pid: first_pid };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("delete vm.web-1: started")
    {
        assert!(Instant::now() < deadline, "the first apply never started");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A second apply fails at once, naming the first.
    let out = lab.vmctl(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let message = text(&out);
    assert!(message.contains(&format!("pid {first_pid}")), "{message}");
    assert!(message.contains("is applying project \"lab\""), "{message}");

    // kill -9 of the first in mid-run, then apply again: no stuck lock, it converges.
    // SAFETY: kill has no memory-safety preconditions; the child is this test's.
    unsafe { libc::kill(first_pid, libc::SIGKILL) };
    let _ = first.wait();
    // Reaped: its pid may be another process's now, never to be signalled.
    guard.pid = 0;
    lab.vmctl(&["status"]);
    let applied = lab.apply();
    let planned = lab.planned();
    if !planned.is_empty() {
        let status = text(&lab.vmctl(&["status"]));
        let log =
            std::fs::read_to_string(lab.vm_dir("web-1").join("console.log")).unwrap_or_default();
        panic!("not converged: {planned:?}\napply:\n{applied}\nstatus:\n{status}\nweb-1 console.log:\n{log}");
    }
    for vm in VMS {
        assert!(lab.pid(vm).is_some(), "{vm} does not run");
    }
    lab.wait_console("web-2", "testguest: ok");
    // Nothing orphaned: one VMM and one tap per VM, nothing else of the project.
    let mut expected: Vec<i32> = VMS.iter().filter_map(|vm| lab.pid(vm)).collect();
    expected.sort();
    assert_eq!(lab.vmms(), expected);
    let mut taps: Vec<String> = lab
        .links()
        .into_iter()
        .filter(|(_, alias, _)| alias.contains('#'))
        .map(|(_, alias, _)| alias)
        .collect();
    taps.sort();
    assert_eq!(
        taps,
        ["vmctl:lab:db-1#0", "vmctl:lab:web-1#0", "vmctl:lab:web-2#0"]
    );
}
