//! `dhcp #true` through the binary: vmctl runs dnsmasq for the quickstart's `front` in
//! the lab's namespace; a guest with `testguest.dhcp` gets exactly the address the plan
//! and `list` show, and `dig @<gateway> web-1.lab` answers it; a VM added to the VLAN
//! is a reload (the same dnsmasq pid) after which its name resolves; a killed dnsmasq
//! is planned as a repair and restarted by apply; `dhcp` turned off stops it and
//! removes its files (the guests stay), turned on again starts it; destroy leaves no
//! dnsmasq and none of its files. Needs root, /dev/kvm, iproute2, dnsmasq and dig (dnsutils).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lab::{text, Lab};
use crate::support::{skip_unless, which};
use crate::vm::{alive, wait_gone};

const GATEWAY: &str = "10.100.0.1";

fn skip() -> bool {
    crate::netns::skip()
        || crate::vm::skip()
        || skip_unless(which("dnsmasq").is_some(), "dnsmasq")
        || skip_unless(which("dig").is_some(), "dig (dnsutils)")
}

/// `dig +short @<gateway> <name>` from the lab's namespace: its answer lines.
fn dig(lab: &Lab, name: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns", "exec", &lab.netns, "dig", "+short", "+time=2", "+tries=2",
        ])
        .arg(format!("@{GATEWAY}"))
        .arg(name)
        .stdin(Stdio::null())
        .output()
        .expect("ip netns exec dig runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The server's directory and its dnsmasq's pid (from its pid file, when it runs).
fn server_dir(lab: &Lab) -> PathBuf {
    lab.state_dir().join("lab/dhcp/front")
}

fn dnsmasq_pid(lab: &Lab) -> Option<i32> {
    let text = std::fs::read_to_string(server_dir(lab).join("pid")).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

/// Each VM's addresses as `vmctl list --json` shows them.
fn listed(lab: &Lab) -> Vec<(String, String)> {
    let out = lab.vmctl(&["list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let list: Value = serde_json::from_slice(&out.stdout).expect("list JSON");
    list["vms"]
        .as_array()
        .expect("vms")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default().to_owned(),
                v["ips"][0].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn ip_of(lab: &Lab, vm: &str) -> String {
    listed(lab)
        .into_iter()
        .find(|(name, _)| name == vm)
        .map(|(_, ip)| ip)
        .unwrap_or_else(|| panic!("{vm} not listed: {:?}", listed(lab)))
}

/// Waits until `dig` answers `name` with `want` (a reload or a restart is dnsmasq's
/// to finish after apply returns).
fn wait_dig(lab: &Lab, name: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = dig(lab, name);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "dig {name}: {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_dhcp_vlan_leases_the_plan_addresses_names_them_reloads_repairs_and_goes() {
    if skip() {
        return;
    }
    // vmctl makes the namespace (with `lo` up, which `dig` to a local address needs).
    let lab = Lab::without_netns(|vm| match vm {
        "web-1" => "console=ttyS0 testguest.name=web-1 testguest.dhcp testguest.halt".into(),
        _ => format!("console=ttyS0 testguest.name={vm} testguest.halt"),
    });
    lab.edit("lab.kdl", |t| {
        t.replace(
            "gateway \"10.100.0.1/24\"\n",
            "gateway \"10.100.0.1/24\"\n    dhcp #true\n",
        )
    });
    lab.edit("vms.kdl", |t| {
        t.replace("prevent-destroy #true", "prevent-destroy #false")
    });
    let out = lab.vmctl(&["plan"]);
    let plan = text(&out);
    assert!(plan.contains("+ dhcp \"front\""), "{plan}");
    lab.apply();
    let pid = dnsmasq_pid(&lab).expect("dnsmasq runs after apply");
    let web1 = ip_of(&lab, "web-1");
    assert!(web1.starts_with("10.100.0."), "{web1}");
    lab.wait_console(
        "web-1",
        &format!("testguest: dhcp lease {web1}/24 gw {GATEWAY} dns {GATEWAY}"),
    );
    assert_eq!(dig(&lab, "web-1.lab"), web1);
    assert_eq!(dig(&lab, "web-1"), web1);
    assert_eq!(dig(&lab, "web-2.lab"), ip_of(&lab, "web-2"));
    // db-1 is on back, which has no DHCP: front's server does not name it.
    assert_eq!(dig(&lab, "db-1.lab"), "");
    let out = lab.vmctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = text(&lab.vmctl(&["status"]));
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("dhcp.front ") && l.contains(&format!("pid={pid}"))),
        "{status}"
    );

    let show = crate::support::vmctl()
        .args(["--color", "never", "show"])
        .arg(lab.config_dir())
        .arg("dhcp.front")
        .stdin(Stdio::null())
        .output()
        .expect("vmctl runs");
    let show = text(&show);
    assert!(
        show.contains(&format!("# dnsmasq: running, pid {pid}")),
        "{show}"
    );
    assert!(show.contains("dhcp \"front\" {"), "{show}");

    // A VM joins front: a reload, not a restart.
    lab.edit("vms.kdl", |mut t| {
        t.push_str(
            "\nvm \"web-3\" template=\"guest\" {\n    \
             cmdline \"console=ttyS0 testguest.name=web-3 testguest.halt\"\n    \
             nic vlan=\"front\"\n}\n",
        );
        t
    });
    let planned = lab.planned();
    assert_eq!(
        planned,
        ["create vm.web-3", "update dhcp.front"],
        "{planned:?}"
    );
    let plan = text(&lab.vmctl(&["plan"]));
    assert!(plan.contains("leases changed"), "{plan}");
    lab.apply();
    assert_eq!(dnsmasq_pid(&lab), Some(pid), "a reload keeps dnsmasq");
    // SIGHUP is taken in dnsmasq's own time (milliseconds).
    wait_dig(&lab, "web-3.lab", &ip_of(&lab, "web-3"));
    assert_eq!(dig(&lab, "web-1.lab"), web1);

    // Killed behind vmctl's back: planned as a repair, restarted by apply.
    // SAFETY: kill has no memory-safety preconditions; the pid is this lab's dnsmasq.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_gone(pid, Duration::from_secs(5));
    assert_eq!(lab.planned(), ["update dhcp.front"]);
    let plan = text(&lab.vmctl(&["plan"]));
    assert!(plan.contains("its process died"), "{plan}");
    lab.apply();
    let restarted = dnsmasq_pid(&lab).expect("dnsmasq runs again");
    assert_ne!(restarted, pid);
    wait_dig(&lab, "web-3.lab", &ip_of(&lab, "web-3"));
    assert!(lab.planned().is_empty(), "{:?}", lab.planned());

    // dhcp turned off: the server goes, its VLAN and the guests stay.
    lab.edit("lab.kdl", |t| t.replace("    dhcp #true\n", ""));
    assert_eq!(lab.planned(), ["delete dhcp.front"]);
    lab.apply();
    wait_gone(restarted, Duration::from_secs(5));
    assert!(!alive(restarted), "dhcp off stops dnsmasq");
    assert!(!server_dir(&lab).exists());
    assert!(lab.pid("web-1").is_some());
    lab.edit("lab.kdl", |t| {
        t.replace(
            "gateway \"10.100.0.1/24\"\n",
            "gateway \"10.100.0.1/24\"\n    dhcp #true\n",
        )
    });
    assert_eq!(lab.planned(), ["create dhcp.front"]);
    lab.apply();
    let again = dnsmasq_pid(&lab).expect("dnsmasq runs once more");
    wait_dig(&lab, "web-1.lab", &web1);

    let out = lab.vmctl(&["destroy", "--auto-approve", "--stop-timeout", "5s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    wait_gone(again, Duration::from_secs(5));
    assert!(!alive(again), "destroy stops dnsmasq");
    assert!(!server_dir(&lab).exists());
    assert_eq!(lab.files(), ["state/lab", "state/lab/lock"]);
}
