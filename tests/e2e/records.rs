//! Records and what status shows of them, for real: the quickstart lab applied in its
//! own network namespace and temp state dir. A corrupt `spec.json`, volume marker and a
//! stray file under `vms/` are each their resource's problem (status and plan show them
//! with a repair hint; everything else is planned and applied); `status` details every
//! healthy resource. Needs root, /dev/kvm and iproute2.

use std::process::Command;

use serde_json::Value;

use crate::lab::{text, Lab};
use crate::support;

fn skip() -> bool {
    crate::vm::skip()
        || support::skip_unless(
            Command::new("ip").args(["netns", "help"]).output().is_ok(),
            "the `ip` command (iproute2)",
        )
}

fn halting(vm: &str) -> String {
    format!("console=ttyS0 testguest.name={vm} testguest.halt")
}

fn status_json(lab: &Lab) -> Vec<Value> {
    let out = lab.vmctl(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    status["resources"].as_array().expect("resources").clone()
}

fn resource<'a>(resources: &'a [Value], kind: &str, name: &str) -> &'a Value {
    resources
        .iter()
        .find(|r| r["kind"] == kind && r["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}.{name} in {resources:#?}"))
}

#[test]
fn status_details_healthy_vms_volumes_and_vlans() {
    if skip() {
        return;
    }
    let lab = Lab::new(halting);
    lab.apply();
    let resources = status_json(&lab);

    let web1 = resource(&resources, "vm", "web-1");
    let detail = &web1["detail"];
    assert_eq!(web1["state"], "running", "{web1}");
    let pid = lab.pid("web-1").expect("web-1 runs");
    assert_eq!(detail["pid"], pid, "{web1}");
    assert!(detail["uptime-seconds"].as_u64().is_some(), "{web1}");
    assert_eq!(detail["cpus"], 1, "{web1}");
    assert_eq!(detail["memory"], 64u64 << 20, "{web1}");
    let taps = detail["taps"].as_array().expect("taps");
    assert_eq!(taps.len(), 1, "{web1}");
    let tap = taps[0].as_str().unwrap();
    assert!(lab.ip(&["-o", "link", "show", tap]).contains(tap), "{tap}");
    let macs = detail["macs"].as_array().expect("macs");
    assert_eq!(macs.len(), 1, "{web1}");
    assert!(macs[0].as_str().unwrap().starts_with("52:54:00:"), "{web1}");

    let volume = resource(&resources, "volume", "db-1-data");
    assert_eq!(volume["detail"]["size"], 128u64 << 20, "{volume}");
    let allocated = volume["detail"]["allocated"].as_u64().expect("allocated");
    let meta = std::fs::metadata(lab.pool_dir().join("db-1-data.raw")).unwrap();
    assert_eq!(
        allocated,
        std::os::unix::fs::MetadataExt::blocks(&meta) * 512
    );

    let front = resource(&resources, "vlan", "front");
    assert_eq!(front["detail"]["gateway"], "10.100.0.1/24", "{front}");
    assert_eq!(front["detail"]["id"], 100, "{front}");

    // The table says the same.
    let out = lab.vmctl(&["status"]);
    let table = text(&out);
    let line = table
        .lines()
        .find(|l| l.starts_with("vm.web-1 "))
        .unwrap_or_else(|| panic!("{table}"));
    for part in [
        format!("pid={pid}"),
        "uptime=".into(),
        "cpus=1".into(),
        "memory=64MiB".into(),
        format!("taps={tap}"),
        format!("macs={}", macs[0].as_str().unwrap()),
    ] {
        assert!(line.contains(&part), "{part} not in {line}");
    }
    let line = table
        .lines()
        .find(|l| l.starts_with("vlan.front "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("gateway=10.100.0.1/24"), "{line}");
    let line = table
        .lines()
        .find(|l| l.starts_with("volume.db-1-data "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("size=128MiB allocated="), "{line}");
}

#[test]
fn a_corrupt_record_is_that_resources_problem_and_the_rest_applies() {
    if skip() {
        return;
    }
    let lab = Lab::new(halting);
    lab.apply();
    let web2 = lab.pid("web-2").expect("web-2 runs");

    // web-2's spec.json and db-1-data's marker are corrupt, and a stray file sits
    // where a VM's state dir would be.
    let spec = lab.vm_dir("web-2").join("spec.json");
    std::fs::write(&spec, "{\"project\": \"lab\", \"vm\": {\"na").unwrap();
    let marker = lab.pool_dir().join("db-1-data.vmctl.json");
    std::fs::write(&marker, "not json").unwrap();
    let stray = lab.state_dir().join("lab/vms/notes.txt");
    std::fs::write(&stray, "someone's notes").unwrap();
    // And the config changes web-1: its restart must still be planned and applied.
    lab.set("web-1", "memory \"96MiB\"");

    // plan: the three problems, each with a hint for root (vmctl runs as root here),
    // and only web-1's change.
    let out = lab.vmctl(&["plan"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    for (what, hint) in [
        ("vm \"web-2\"", "remove"),
        ("volume \"db-1-data\"", "restore the marker"),
        ("vm \"notes.txt\"", "not a VM state dir vmctl made"),
    ] {
        let warning = format!("cannot read the record of {what}");
        assert!(shown.contains(&warning), "{warning} not in {shown}");
        assert!(shown.contains(hint), "{hint} not in {shown}");
    }
    assert!(shown.contains(&spec.display().to_string()), "{shown}");
    assert!(!shown.contains("run it as root"), "{shown}");
    assert_eq!(lab.planned(), ["replace vm.web-1"]);

    // apply: web-1 restarted with its new memory; web-2 and its process left alone.
    let web1 = lab.pid("web-1").expect("web-1 runs");
    // It exits 1 (the run did not converge) naming what it left alone.
    let out = lab.vmctl(&["apply", "--auto-approve", "--stop-timeout", "5s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = text(&out);
    assert!(out.contains(" done, 0 failed, 0 skipped"), "{out}");
    assert!(out.contains("vmctl::apply::left_alone"), "{out}");
    assert!(out.contains("vm \"web-2\" on host \"local\""), "{out}");
    assert_ne!(lab.pid("web-1"), Some(web1), "web-1 was not restarted");
    assert_eq!(lab.pid("web-2"), Some(web2), "web-2 was touched");
    assert_eq!(
        std::fs::read_to_string(&spec).unwrap(),
        "{\"project\": \"lab\", \"vm\": {\"na"
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "not json");

    // status: the three unreadable, with path, error and help; the rest as usual.
    let resources = status_json(&lab);
    for (kind, name) in [
        ("vm", "web-2"),
        ("volume", "db-1-data"),
        ("vm", "notes.txt"),
    ] {
        let r = resource(&resources, kind, name);
        assert_eq!(r["state"], "unreadable", "{r}");
        assert!(!r["detail"]["help"].as_str().unwrap().is_empty(), "{r}");
        assert!(!r["detail"]["error"].as_str().unwrap().is_empty(), "{r}");
    }
    assert_eq!(resource(&resources, "vm", "web-1")["state"], "running");
    assert_eq!(resource(&resources, "vm", "db-1")["state"], "running");
    let out = lab.vmctl(&["status"]);
    let table = text(&out);
    let line = table
        .lines()
        .find(|l| l.starts_with("vm.web-2 "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("unreadable"), "{line}");
    assert!(line.contains("cannot read its record"), "{line}");

    // Repaired as the hint says (the VM forgotten: its VMM stopped, its dir removed),
    // the next apply makes web-2 anew.
    // SAFETY: kill has no memory-safety preconditions; web-2's VMM is this test's.
    unsafe { libc::kill(web2, libc::SIGKILL) };
    assert!(crate::vm::wait_gone(
        web2,
        std::time::Duration::from_secs(10)
    ));
    std::fs::remove_dir_all(lab.vm_dir("web-2")).unwrap();
    std::fs::remove_file(&stray).unwrap();
    assert_eq!(lab.planned(), ["create vm.web-2"]);
}

#[test]
fn a_host_without_cpus_or_memory_is_planned_against_what_it_reports() {
    if skip() {
        return;
    }
    let lab = Lab::new(halting);
    // The lab's host declares neither: the plan checks what this machine reports.
    lab.edit("lab.kdl", |text| {
        text.replace("    cpus 4\n", "")
            .replace("    memory \"2GiB\"\n", "")
    });
    let out = lab.vmctl(&["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // More vCPUs than this machine's online CPUs × 1.5 allow.
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let too_many = online * 2;
    lab.set("web-1", &format!("cpus {too_many}"));
    // validate cannot know: the host declares nothing.
    let out = crate::support::vmctl()
        .arg("validate")
        .arg(lab.config_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = lab.vmctl(&["plan"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("vmctl::plan::over_capacity"), "{shown}");
    assert!(shown.contains(&format!("{online} CPUs online")), "{shown}");
    assert!(shown.contains("web-1"), "{shown}");
    // status still shows what is there.
    let out = lab.vmctl(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("vm.web-1"), "{}", text(&out));
    // Nothing was applied: apply refuses the same way.
    let out = lab.vmctl(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(lab.pid("web-1").is_none());
}
