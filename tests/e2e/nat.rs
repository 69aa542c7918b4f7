//! NAT and routing between VLANs (issue 13): the project's nftables table in the lab's
//! namespace. An "outside" namespace made here, joined to the lab's by a veth, is the
//! lab's default route and has no route back to the VLANs: a guest on a `nat #true`
//! VLAN reaches it only masqueraded, and the outside counts the lab's uplink address as
//! the source; given a route to the VLAN, it still opens no connection to a guest (NAT
//! is one way). Between VLANs nothing is routed (even with forwarding on for NAT on
//! both) until `route-to`; a rule deleted by hand is drift that apply repairs; destroy
//! removes the table and turns forwarding back off. Needs root, /dev/kvm, iproute2 and
//! nft (nftables).

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::lab::{text, Lab};
use crate::support::skip_unless;
use crate::vm::assert_line;

/// The lab's uplink address and the outside's, on the veth between them.
const UPLINK_ADDR: &str = "198.51.100.1";
const OUTSIDE_ADDR: &str = "198.51.100.2";
const DB1: &str = "10.200.0.10";
const BACK_GATEWAY: &str = "10.200.0.1";

fn skip() -> bool {
    crate::netns::skip()
        || crate::vm::skip()
        || skip_unless(
            Command::new("nft")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "nft (nftables)",
        )
}

/// A namespace joined to the lab's by a veth (`up0` in the lab, `out0` here), which
/// the lab's namespace routes everything to. Deleted when dropped (its veth with it).
struct Outside {
    name: String,
}

impl Outside {
    fn new(lab: &Lab) -> Outside {
        let outside = Outside {
            name: format!("{}-out", lab.netns),
        };
        run("ip", &["netns", "add", &outside.name]);
        lab.ip(&[
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "out0",
            "netns",
            &outside.name,
        ]);
        lab.ip(&["addr", "add", &format!("{UPLINK_ADDR}/24"), "dev", "up0"]);
        lab.ip(&["link", "set", "up0", "up"]);
        outside.ip(&["addr", "add", &format!("{OUTSIDE_ADDR}/24"), "dev", "out0"]);
        outside.ip(&["link", "set", "out0", "up"]);
        outside.ip(&["link", "set", "lo", "up"]);
        lab.ip(&["route", "add", "default", "via", OUTSIDE_ADDR, "dev", "up0"]);
        // Echo requests arriving here, counted by source: the lab's uplink, or a VLAN.
        outside.nft(
            "add table inet watch; \
             add chain inet watch in { type filter hook input priority 0; }; \
             add rule inet watch in ip saddr 198.51.100.1 icmp type echo-request counter; \
             add rule inet watch in ip saddr 10.0.0.0/8 icmp type echo-request counter",
        );
        outside
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    fn nft(&self, script: &str) -> String {
        run("ip", &["netns", "exec", &self.name, "nft", script])
    }

    /// The packets of the `watch` counters: (from the uplink, from a VLAN).
    fn seen(&self) -> (u64, u64) {
        let counters = counters(&self.name, "watch");
        assert_eq!(counters.len(), 2, "{counters:?}");
        (counters[0], counters[1])
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// Runs a command that must succeed; its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{program} {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nft ARGS` in the lab's namespace: whether it succeeded, and its stdout.
fn lab_nft(lab: &Lab, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.netns, "nft"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("nft runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The packet counts of the counters of `table inet <table>` in `netns`, in rule order.
fn counters(netns: &str, table: &str) -> Vec<u64> {
    let listing = run(
        "ip",
        &[
            "netns", "exec", netns, "nft", "-j", "list", "table", "inet", table,
        ],
    );
    let listing: Value = serde_json::from_str(&listing).expect("nft JSON");
    listing["nftables"]
        .as_array()
        .expect("nftables")
        .iter()
        .filter_map(|item| {
            let expr = item.get("rule")?.get("expr")?.as_array()?;
            expr.iter()
                .find_map(|e| e.get("counter")?.get("packets")?.as_u64())
        })
        .collect()
}

/// IPv4 forwarding of `ifname` in the lab's namespace.
fn forwarding(lab: &Lab, ifname: &str) -> String {
    run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.netns,
            "cat",
            &format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding"),
        ],
    )
    .trim()
    .to_owned()
}

/// `nat #true` on the VLANs of these gateways; the volumes unprotected, so that destroy
/// at the end takes them too.
fn nat_on(lab: &Lab, gateways: &[&str]) {
    lab.edit("vms.kdl", |t| {
        t.replace("prevent-destroy #true", "prevent-destroy #false")
    });
    lab.edit("lab.kdl", |mut t| {
        for gateway in gateways {
            let line = format!("gateway \"{gateway}\"\n");
            t = t.replace(&line, &format!("{line}    nat #true\n"));
        }
        t
    });
}

/// `vmctl plan --detailed-exitcode`'s exit code.
fn plan_code(lab: &Lab) -> Option<i32> {
    lab.vmctl(&["plan", "--detailed-exitcode"]).status.code()
}

#[test]
fn nat_reaches_the_outside_vlans_stay_apart_until_routed_and_destroy_cleans_up() {
    if skip() {
        return;
    }
    let lab = Lab::new(|vm| match vm {
        "web-1" => format!(
            "console=ttyS0 testguest.name=web-1 testguest.ping={OUTSIDE_ADDR} testguest.halt"
        ),
        "web-2" => format!(
            "console=ttyS0 testguest.name=web-2 testguest.ping={BACK_GATEWAY},{DB1} testguest.halt"
        ),
        _ => format!("console=ttyS0 testguest.name={vm} testguest.halt"),
    });
    let outside = Outside::new(&lab);
    // NAT on both VLANs: forwarding is on for both gateways, so only the table keeps
    // them apart.
    nat_on(&lab, &["10.100.0.1/24", "10.200.0.1/24"]);
    let applied = lab.apply();
    assert!(applied.contains("firewall.local"), "{applied}");
    let front = lab
        .link_with_alias("vmctl:lab:lan/100")
        .expect("front's gateway interface");
    let back = lab
        .link_with_alias("vmctl:lab:lan/200")
        .expect("back's gateway interface");
    assert_eq!(forwarding(&lab, &front), "1");
    assert_eq!(forwarding(&lab, &back), "1");
    assert_eq!(forwarding(&lab, "up0"), "1");

    // (a) NAT: web-1's echo reaches the outside, which has no route to the VLAN, from
    // the lab's uplink address, and is answered.
    lab.wait_console("web-1", "testguest: ok");
    assert_line(
        &lab.console("web-1"),
        &format!("testguest: ping {OUTSIDE_ADDR} ok"),
    );
    let (from_uplink, from_vlan) = outside.seen();
    assert!(
        from_uplink >= 1,
        "the outside saw no echo from {UPLINK_ADDR}"
    );
    assert_eq!(from_vlan, 0, "an echo reached the outside unmasqueraded");

    // (b) Between VLANs: neither back's gateway nor a back guest answers front.
    lab.wait_console("web-2", "testguest: ok");
    let console = lab.console("web-2");
    assert_line(&console, &format!("testguest: ping {BACK_GATEWAY} timeout"));
    assert_line(&console, &format!("testguest: ping {DB1} timeout"));

    // `status` shows the table and its uplink (the default route's interface).
    let status = text(&lab.vmctl(&["status"]));
    let row = status
        .lines()
        .find(|l| l.contains("firewall.local"))
        .unwrap_or_else(|| panic!("no firewall in status:\n{status}"));
    assert!(
        row.contains("table=inet vmctl-lab") && row.contains("uplinks=up0"),
        "{row}"
    );

    // (d) Applied exactly: no changes.
    assert_eq!(plan_code(&lab), Some(0), "{}", text(&lab.vmctl(&["plan"])));

    // (c) A rule deleted by hand is drift, repaired by apply.
    let (ok, listing) = lab_nft(
        &lab,
        &["-j", "-a", "list", "chain", "inet", "vmctl-lab", "forward"],
    );
    assert!(ok, "vmctl's table is there");
    let listing: Value = serde_json::from_str(&listing).expect("nft JSON");
    let handle = listing["nftables"]
        .as_array()
        .expect("nftables")
        .iter()
        .filter_map(|item| item.get("rule"))
        .find(|rule| rule["expr"].to_string().contains("\"drop\""))
        .and_then(|rule| rule["handle"].as_u64())
        .expect("a drop rule");
    let handle = handle.to_string();
    let (ok, _) = lab_nft(
        &lab,
        &[
            "delete",
            "rule",
            "inet",
            "vmctl-lab",
            "forward",
            "handle",
            &handle,
        ],
    );
    assert!(ok, "the rule was deleted");
    assert_eq!(lab.planned(), ["update firewall.local"]);
    lab.apply();
    assert_eq!(plan_code(&lab), Some(0));
    // So is forwarding turned off by hand.
    run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.netns,
            "sh",
            "-c",
            &format!("echo 0 > /proc/sys/net/ipv4/conf/{front}/forwarding"),
        ],
    );
    assert_eq!(lab.planned(), ["update firewall.local"]);
    lab.apply();
    assert_eq!(forwarding(&lab, &front), "1");
    assert_eq!(plan_code(&lab), Some(0));

    // (b) With `route-to "back"` on front, web-2 (restarted by its new cmdline) reaches
    // both; the reverse stays closed.
    lab.edit("lab.kdl", |t| {
        t.replacen(
            "    nat #true\n",
            "    nat #true\n    route-to \"back\"\n",
            1,
        )
    });
    lab.set(
        "web-2",
        &format!(
            "cmdline \"console=ttyS0 testguest.name=web-2b testguest.ping={BACK_GATEWAY},{DB1} testguest.halt\""
        ),
    );
    let planned = lab.planned();
    assert!(
        planned.contains(&"update firewall.local".to_owned()),
        "{planned:?}"
    );
    lab.apply();
    lab.wait_console("web-2", "testguest: ok");
    let console = lab.console("web-2");
    let rebooted = &console[console
        .rfind("testguest.name=web-2b")
        .expect("web-2 restarted")..];
    assert_line(rebooted, &format!("testguest: ping {BACK_GATEWAY} ok"));
    assert_line(rebooted, &format!("testguest: ping {DB1} ok"));
    assert_eq!(plan_code(&lab), Some(0));

    // (e) destroy removes the table, the record, and the forwarding vmctl turned on.
    let out = lab.vmctl(&["destroy", "--auto-approve", "--stop-timeout", "5s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (exists, _) = lab_nft(&lab, &["list", "table", "inet", "vmctl-lab"]);
    assert!(!exists, "the table is left after destroy");
    assert!(!lab.state_dir().join("lab/firewall.json").exists());
    assert_eq!(forwarding(&lab, "up0"), "0");
}

#[test]
fn a_table_of_the_projects_name_that_vmctl_did_not_make_is_refused() {
    if skip() {
        return;
    }
    let lab = Lab::new(|vm| format!("console=ttyS0 testguest.name={vm} testguest.halt"));
    let (ok, _) = lab_nft(
        &lab,
        &[
            "add table inet vmctl-lab; add chain inet vmctl-lab mine; add rule inet vmctl-lab mine counter",
        ],
    );
    assert!(ok, "the test's own table");
    let plan = text(&lab.vmctl(&["plan"]));
    assert!(plan.contains("not vmctl's"), "{plan}");
    let out = lab.vmctl(&["apply", "--auto-approve", "--stop-timeout", "5s"]);
    let output = text(&out);
    assert_ne!(out.status.code(), Some(0), "{output}");
    assert!(
        output.contains("nft delete table inet vmctl-lab"),
        "{output}"
    );
    // The table is still the test's, untouched.
    let (ok, listing) = lab_nft(&lab, &["list", "table", "inet", "vmctl-lab"]);
    assert!(ok && listing.contains("chain mine"), "{listing}");
}

#[test]
fn without_nft_apply_says_to_install_nftables_and_starts_no_guest() {
    if skip() {
        return;
    }
    let lab = Lab::new(|vm| format!("console=ttyS0 testguest.name={vm} testguest.halt"));
    // A PATH without `nft` (vmctl itself needs nothing from PATH to apply).
    let out = lab
        .command(&["apply", "--auto-approve", "--stop-timeout", "5s"])
        .env("PATH", lab.dir.path())
        .output()
        .expect("vmctl runs");
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(output.contains("install nftables"), "{output}");
    assert!(
        output.contains("firewall.local on host \"local\""),
        "{output}"
    );
    // The guests wait for their firewall: none runs without the VLANs' separation.
    for vm in crate::lab::VMS {
        assert!(lab.pid(vm).is_none(), "{vm} runs:\n{output}");
    }
}

/// Two projects on one host NAT out of one uplink: forwarding on it is the host's,
/// shared ([`vmctl_runtime::host::forwarding`]): the first project's destroy leaves it
/// on for the second (whose plan sees no drift), the second's turns it off.
#[test]
fn an_uplink_two_projects_nat_out_of_forwards_until_both_are_gone() {
    if skip() {
        return;
    }
    let lab = Lab::new(|vm| format!("console=ttyS0 testguest.name={vm} testguest.halt"));
    let _outside = Outside::new(&lab);
    nat_on(&lab, &["10.100.0.1/24"]);
    lab.apply();
    assert_eq!(forwarding(&lab, "up0"), "1");

    // Another project in the same netns and state dir: one NAT VLAN, no VM.
    let other = lab.dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("main.kdl"),
        format!(
            "project \"other\"\n\
             host \"local\" {{\n    state-dir \"{state}\"\n    netns \"{netns}\"\n}}\n\
             network \"wan\" host=\"local\"\n\
             vlan \"edge\" network=\"wan\" id=300 {{\n    gateway \"10.210.0.1/24\"\n    nat #true\n}}\n",
            state = lab.state_dir().display(),
            netns = lab.netns,
        ),
    )
    .unwrap();
    let on_other = |args: &[&str]| crate::support::vmctl_on(&other, args);
    let out = on_other(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(forwarding(&lab, "up0"), "1");
    let record = std::fs::read_to_string(lab.state_dir().join("forwarding.json")).unwrap();
    let record: Value = serde_json::from_str(&record).unwrap();
    let up0 = record["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["ifname"] == "up0")
        .unwrap_or_else(|| panic!("up0 held: {record}"));
    assert_eq!(up0["projects"], serde_json::json!(["lab", "other"]));

    // The first project goes; the uplink still forwards for the second.
    let out = lab.vmctl(&["destroy", "--auto-approve", "--stop-timeout", "5s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(forwarding(&lab, "up0"), "1");
    let out = on_other(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The second goes: nothing needs it, vmctl turned it on, it is off.
    let out = on_other(&["destroy", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(forwarding(&lab, "up0"), "0");
    // vmctl holds no interface any more: no record is left.
    assert!(!lab.state_dir().join("forwarding.json").exists());
}

/// NAT is one way: the uplink's side, even with a route to the VLAN through the lab's
/// uplink address, opens nothing to a guest (ICMP echo, TCP SYN, UDP), while the
/// guest's own ping out is masqueraded and answered. The proof that the probes were
/// routed to the guest and stopped by vmctl's `forward` chain (priority 0), not lost on
/// the way: a test table in the lab's namespace counts them in the forward hook just
/// before that chain (priority -10) and just after it (10); the guest, which answers
/// the lab's own ping, answers none from the outside.
#[test]
fn nat_is_one_way_a_new_connection_from_the_uplink_never_reaches_the_guest() {
    if skip() {
        return;
    }
    let lab = Lab::new(|vm| match vm {
        "web-1" => format!(
            "console=ttyS0 testguest.name=web-1 testguest.ping={OUTSIDE_ADDR} testguest.halt"
        ),
        _ => format!("console=ttyS0 testguest.name={vm} testguest.halt"),
    });
    let outside = Outside::new(&lab);
    // The outside knows the way to front: only the firewall stands between them.
    outside.ip(&["route", "add", "10.100.0.0/24", "via", UPLINK_ADDR]);
    nat_on(&lab, &["10.100.0.1/24"]);
    lab.apply();
    assert_eq!(forwarding(&lab, "up0"), "1");

    // The guest's own connection out: masqueraded (even though the outside could now
    // answer the VLAN's address directly) and answered.
    lab.wait_console("web-1", "testguest: ok");
    let console = lab.console("web-1");
    assert_line(&console, &format!("testguest: ping {OUTSIDE_ADDR} ok"));
    let (from_uplink, from_vlan) = outside.seen();
    assert!(
        from_uplink >= 1,
        "the outside saw no echo from {UPLINK_ADDR}"
    );
    assert_eq!(from_vlan, 0, "an echo reached the outside unmasqueraded");
    let guest = console
        .lines()
        .find_map(|l| l.strip_prefix("testguest: ip "))
        .and_then(|l| l.split('/').next())
        .unwrap_or_else(|| panic!("no address on web-1's console:\n{console}"))
        .to_owned();
    // The guest answers a ping that is not forwarded (the lab's own, on-link).
    let (answered, out) = ping_from(&lab.netns, &guest, 1);
    assert!(answered, "web-1 does not answer the lab's ping:\n{out}");

    // Counted in the lab's forward hook, from the outside to the guest, per protocol:
    // before vmctl's chain, then after it.
    let probe = format!("ip saddr {OUTSIDE_ADDR} ip daddr {guest}");
    let mut script = String::from("add table inet probe; ");
    for (chain, prio) in [("before", -10), ("after", 10)] {
        script.push_str(&format!(
            "add chain inet probe {chain} {{ type filter hook forward priority {prio}; }}; "
        ));
        for what in [
            "icmp type echo-request",
            "tcp flags syn",
            "meta l4proto udp",
        ] {
            script.push_str(&format!(
                "add rule inet probe {chain} {probe} {what} counter; "
            ));
        }
    }
    run("ip", &["netns", "exec", &lab.netns, "nft", &script]);

    // New connections from the outside: an echo request, a TCP SYN, a UDP datagram.
    let (answered, out) = ping_from(&outside.name, &guest, 3);
    assert!(!answered, "the outside's ping reached web-1:\n{out}");
    let in_outside = |script: &str| {
        Command::new("ip")
            .args(["netns", "exec", &outside.name, "timeout", "3", "bash", "-c"])
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .expect("bash runs")
    };
    let tcp = in_outside(&format!("exec 3<>/dev/tcp/{guest}/80"));
    assert!(!tcp.status.success(), "a TCP connection to web-1 opened");
    let udp = in_outside(&format!("echo probe > /dev/udp/{guest}/9"));
    assert!(
        udp.status.success(),
        "the UDP datagram was not sent: {}",
        text(&udp)
    );

    let counted = counters(&lab.netns, "probe");
    assert_eq!(counted.len(), 6, "{counted:?}");
    let (before, after) = counted.split_at(3);
    assert!(
        before.iter().all(|&n| n >= 1),
        "a probe never reached the forward hook (icmp, tcp, udp): {before:?}"
    );
    assert_eq!(
        after,
        [0, 0, 0],
        "vmctl's forward chain let a new connection from the uplink through (icmp, tcp, udp)"
    );
    // The guest is still there, and still answers its host.
    let (answered, out) = ping_from(&lab.netns, &guest, 1);
    assert!(answered, "web-1 stopped answering the lab's ping:\n{out}");
}

/// `ip netns exec <netns> ping -c<count> -W1 <addr>`: whether a reply came, and the
/// output.
fn ping_from(netns: &str, addr: &str, count: u32) -> (bool, String) {
    let count = format!("-c{count}");
    let out = Command::new("ip")
        .args([
            "netns", "exec", netns, "ping", "-n", &count, "-i", "0.2", "-W1", addr,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("ip netns exec ping runs");
    (out.status.success(), text(&out))
}
