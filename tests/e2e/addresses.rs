//! Addresses (IPAM) through the binary: the quickstart's web VMs get addresses allocated
//! from front's subnet and db-1 declares its own; the plan, `status`, `list` and `show`
//! show the same addresses, the records on the host keep them, each guest's kernel
//! command line has its `ip=` argument (`ip-cmdline`), and a VM added to the VLAN moves
//! no existing address. Needs root, /dev/kvm and iproute2.

use serde_json::Value;

use crate::lab::{text, Lab, VMS};

/// The `ip=` argument each quickstart guest gets.
const ARGUMENTS: [(&str, &str); 3] = [
    (
        "web-1",
        "ip=10.100.0.2::10.100.0.1:255.255.255.0:web-1:eth0:off",
    ),
    (
        "web-2",
        "ip=10.100.0.3::10.100.0.1:255.255.255.0:web-2:eth0:off",
    ),
    (
        "db-1",
        "ip=10.200.0.10::10.200.0.1:255.255.255.0:db-1:eth0:off",
    ),
];

/// Each VM's first NIC address in `vmctl plan --json`, with whether it was allocated.
fn planned_addresses(lab: &Lab) -> Vec<(String, String, bool)> {
    let out = lab.vmctl(&["plan", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    let mut found: Vec<(String, String, bool)> = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["kind"] == "vm")
        .map(|c| {
            let nic = &c["after"]["nics"][0];
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                nic["ip"].as_str().unwrap_or_default().to_owned(),
                nic["ip-allocated"] == true,
            )
        })
        .collect();
    found.sort();
    found
}

/// The `ip` of the first NIC in `vm`'s record on the host.
fn recorded(lab: &Lab, vm: &str) -> String {
    let text = std::fs::read_to_string(lab.vm_dir(vm).join("spec.json")).expect("spec.json");
    let record: Value = serde_json::from_str(&text).expect("record JSON");
    assert_eq!(record["format-version"], 2, "{text}");
    record["vm"]["nics"][0]["ip"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn addresses_are_planned_shown_recorded_and_reach_the_guests() {
    if crate::netns::skip() || crate::vm::skip() {
        return;
    }
    let lab = Lab::new(|vm| format!("console=ttyS0 testguest.name={vm} testguest.halt"));
    let expected = |extra: &[(&str, &str, bool)]| {
        let mut all: Vec<(String, String, bool)> = [
            ("db-1", "10.200.0.10", false),
            ("web-1", "10.100.0.2", true),
            ("web-2", "10.100.0.3", true),
        ]
        .iter()
        .chain(extra)
        .map(|(v, ip, allocated)| ((*v).to_owned(), (*ip).to_owned(), *allocated))
        .collect();
        all.sort();
        all
    };
    assert_eq!(planned_addresses(&lab), expected(&[]));
    let out = lab.vmctl(&["plan"]);
    let plan = text(&out);
    assert!(
        plan.contains("+ ip   = \"10.100.0.2\"  # allocated\n"),
        "{plan}"
    );
    assert!(plan.contains("+ ip   = \"10.200.0.10\"\n"), "{plan}");

    lab.apply();
    for (vm, argument) in ARGUMENTS {
        lab.wait_console(vm, &format!("testguest: name={vm}"));
        let console = lab.console(vm);
        let cmdline = console
            .lines()
            .find(|l| l.starts_with("testguest: cmdline="))
            .unwrap_or_default();
        assert!(
            cmdline.split(' ').any(|word| word == argument),
            "{vm}: no `{argument}` in {cmdline:?}"
        );
    }
    assert_eq!(recorded(&lab, "web-1"), "10.100.0.2");
    assert_eq!(recorded(&lab, "db-1"), "10.200.0.10");
    // The applied plan is stable: the same addresses, nothing to do.
    assert_eq!(planned_addresses(&lab), expected(&[]));
    assert!(lab.planned().is_empty(), "{:?}", lab.planned());

    // status and list show the addresses the plan showed; show the record's.
    let status = text(&lab.vmctl(&["status"]));
    let line = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(&format!("vm.{name} ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("web-1").contains("ips=10.100.0.2"), "{status}");
    assert!(line("db-1").contains("ips=10.200.0.10"), "{status}");
    let list = lab.vmctl(&["list", "--json"]);
    let list: Value = serde_json::from_slice(&list.stdout).expect("list JSON");
    let ips: Vec<(String, Value)> = list["vms"]
        .as_array()
        .expect("vms")
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_owned(), v["ips"].clone()))
        .collect();
    assert_eq!(
        ips,
        [
            ("db-1".to_owned(), serde_json::json!(["10.200.0.10"])),
            ("web-1".to_owned(), serde_json::json!(["10.100.0.2"])),
            ("web-2".to_owned(), serde_json::json!(["10.100.0.3"])),
        ]
    );
    let table = text(&lab.vmctl(&["list"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web-2 ") && l.contains(" 10.100.0.3 ")),
        "{table}"
    );
    let show = crate::support::vmctl()
        .args(["--color", "never", "show"])
        .arg(lab.config_dir())
        .arg("vm.web-1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("vmctl runs");
    let show = text(&show);
    assert!(
        show.contains("ip   = \"10.100.0.2\"  # allocated"),
        "{show}"
    );

    // A VM that sorts first joins front: it takes the next free address, and no
    // existing VM moves or restarts.
    let pids: Vec<Option<i32>> = VMS.iter().map(|vm| lab.pid(vm)).collect();
    lab.edit("vms.kdl", |mut text| {
        text.push_str(
            "\nvm \"a-new\" template=\"guest\" {\n    cmdline \"console=ttyS0 testguest.name=a-new testguest.halt\"\n    nic vlan=\"front\"\n}\n",
        );
        text
    });
    let new = expected(&[("a-new", "10.100.0.4", true)]);
    assert_eq!(planned_addresses(&lab), new);
    assert_eq!(lab.planned(), ["create vm.a-new"]);
    lab.apply();
    lab.wait_console("a-new", "testguest: name=a-new");
    assert!(lab
        .console("a-new")
        .contains(" ip=10.100.0.4::10.100.0.1:255.255.255.0:a-new:eth0:off"));
    assert_eq!(planned_addresses(&lab), new);
    assert_eq!(recorded(&lab, "web-1"), "10.100.0.2");
    assert_eq!(recorded(&lab, "web-2"), "10.100.0.3");
    let after: Vec<Option<i32>> = VMS.iter().map(|vm| lab.pid(vm)).collect();
    assert_eq!(after, pids, "no VM restarted");
    assert!(lab.planned().is_empty(), "{:?}", lab.planned());
}
