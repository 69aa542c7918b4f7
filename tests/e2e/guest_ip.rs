//! The test guest on a VLAN with a gateway (issue 13's test-guest part): an address
//! from `ip=` answers the host's ping and pings the gateway; a lease from dnsmasq (run
//! here, test-only, on the gateway's interface with a static lease for the guest's MAC)
//! is exactly the one printed and answers pings too. Needs root, /dev/kvm, iproute2,
//! `ping` (iputils-ping) and dnsmasq; everything runs in the lab's own namespace.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::lab::{text, Lab};
use crate::support::{skip_unless, which};
use crate::vm::{assert_line, wait_gone};

const WEB1_IP: &str = "10.100.0.7";
const GATEWAY: &str = "10.100.0.1";
/// web-2's address, allocated: the lowest free of front's subnet.
const WEB2_IP: &str = "10.100.0.2";
/// TEST-NET-1, outside every VLAN of the lab.
const OFF_LINK: &str = "192.0.2.1";
/// The static lease dnsmasq gives web-1's MAC.
const LEASE_IP: &str = "10.100.0.42";

fn skip() -> bool {
    crate::netns::skip()
        || crate::vm::skip()
        || skip_unless(which("ping").is_some(), "ping (iputils-ping)")
        || skip_unless(which("dnsmasq").is_some(), "dnsmasq")
}

/// The quickstart, web-1 with `switches` and `testguest.halt` (web-2 and db-1 as
/// usual), not applied yet.
fn lab_with_web1(switches: &str) -> Lab {
    let switches = switches.to_string();
    Lab::new(move |vm| match vm {
        "web-1" => format!("console=ttyS0 testguest.name=web-1 {switches} testguest.halt"),
        _ => format!("console=ttyS0 testguest.name={vm} testguest.halt"),
    })
}

/// `ip netns exec <lab> ping -c1 -W2 <addr>`: whether a reply came.
fn ping(lab: &Lab, addr: &str) -> (bool, String) {
    ping_sized(lab, addr, 56)
}

/// `ping` with `size` bytes of data (`-s`).
fn ping_sized(lab: &Lab, addr: &str, size: u32) -> (bool, String) {
    let size = size.to_string();
    let out = Command::new("ip")
        .args([
            "netns", "exec", &lab.netns, "ping", "-c1", "-W2", "-s", &size, addr,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("ip netns exec ping runs");
    (out.status.success(), text(&out))
}

#[test]
fn a_guest_with_ip_answers_the_hosts_ping_and_pings_its_gateway() {
    if skip() {
        return;
    }
    // The quickstart's VMs have `ip-cmdline`: vmctl appends each one's `ip=` (web-1's
    // declared here, web-2's allocated, db-1's declared in the quickstart) after the
    // VM's own cmdline, and the last ip= counts, as in Linux.
    let lab = lab_with_web1(&format!(
        "ip=10.100.0.250::{GATEWAY}:255.255.255.0 testguest.ping={GATEWAY},10.100.0.99,{OFF_LINK},{WEB2_IP}"
    ));
    lab.edit("vms.kdl", |t| {
        t.replacen(
            "nic vlan=\"front\"\n",
            &format!("nic vlan=\"front\" ip=\"{WEB1_IP}\"\n"),
            1,
        )
    });
    // An address off web-1's subnet that the lab's namespace has (on its loopback, so
    // the answer is the host's own, nothing forwarded): reached through the gateway.
    lab.ip(&["link", "set", "lo", "up"]);
    lab.ip(&["addr", "add", &format!("{OFF_LINK}/32"), "dev", "lo"]);
    lab.apply();
    lab.wait_console("web-1", "testguest: ok");
    let console = lab.console("web-1");
    assert_line(&console, "testguest: ip 10.100.0.7/24 gw 10.100.0.1");
    assert_line(&console, "testguest: ping 10.100.0.1 ok");
    // Nobody has 10.100.0.99: its ARP goes unanswered.
    assert_line(&console, "testguest: ping 10.100.0.99 timeout");
    assert_line(&console, "testguest: ping 192.0.2.1 ok");
    // Guest to guest on one VLAN, through the bridge: the project's firewall (front
    // and back have gateways) drops nothing of a VLAN's own traffic, also where the
    // bridge's frames pass the inet hooks (br_netfilter, as on these machines).
    assert_line(&console, &format!("testguest: ping {WEB2_IP} ok"));
    assert!(!console.contains("FAIL"), "{console}");
    // The guest keeps answering after its verdict, more than once.
    for _ in 0..2 {
        let (ok, out) = ping(&lab, WEB1_IP);
        assert!(
            ok,
            "no reply from the guest:\n{out}\n{}",
            lab.console("web-1")
        );
    }
    // Every guest answers at the address the plan gave it: web-2's allocated (the
    // lowest free of front's subnet), db-1's declared on back.
    for (vm, addr, gw) in [
        ("web-2", WEB2_IP, GATEWAY),
        ("db-1", "10.200.0.10", "10.200.0.1"),
    ] {
        lab.wait_console(vm, "testguest: ok");
        assert_line(
            &lab.console(vm),
            &format!("testguest: ip {addr}/24 gw {gw}"),
        );
        let (ok, out) = ping(&lab, addr);
        assert!(
            ok,
            "no reply from {vm} at {addr}:\n{out}\n{}",
            lab.console(vm)
        );
    }
    // A large echo is answered with all its data; one larger than the MTU arrives as
    // three IPv4 fragments (1480 + 1480 + 48 bytes), which the guest does not
    // reassemble: each is dropped and counted (`net dropped=3` at shutdown).
    let (ok, out) = ping_sized(&lab, WEB1_IP, 1400);
    assert!(ok, "no reply to 1400 bytes:\n{out}");
    let (ok, out) = ping_sized(&lab, WEB1_IP, 3000);
    assert!(!ok, "a fragmented ping was answered:\n{out}");
    // An address nobody has on the VLAN does not answer (the ping can fail).
    let (ok, out) = ping(&lab, "10.100.0.8");
    assert!(!ok, "10.100.0.8 answered:\n{out}");
    // A graceful stop still ends the guest (its serving loop watches the i8042).
    lab.set("web-1", "state \"stopped\"");
    lab.apply();
    assert_line(&lab.console("web-1"), "testguest: net dropped=3");
    assert!(
        lab.console("web-1")
            .lines()
            .any(|l| l == "testguest: shutdown requested"),
        "{}",
        lab.console("web-1")
    );
}

/// dnsmasq in the lab's namespace, in the foreground, killed (by pid) and waited for
/// when dropped; its pid file and lease file in its own temp dir.
struct Dnsmasq {
    child: Child,
    dir: tempfile::TempDir,
}

impl Dnsmasq {
    fn start(netns: &str, interface: &str, host: &str) -> Dnsmasq {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
            ])
            .arg("--port=0") // no DNS: only DHCP
            .arg("--bind-interfaces")
            .arg(format!("--interface={interface}"))
            .arg("--except-interface=lo")
            .arg("--user=root")
            .arg(format!("--dhcp-range={GATEWAY},static,255.255.255.0"))
            .arg(format!("--dhcp-host={host}"))
            .arg(format!("--dhcp-option=option:dns-server,{GATEWAY}"))
            .arg(format!(
                "--dhcp-leasefile={}",
                dir.path().join("leases").display()
            ))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dnsmasq starts");
        Dnsmasq { child, dir }
    }

    fn leases(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("leases")).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        // `ip netns exec` execs dnsmasq: the child's pid is dnsmasq's.
        let _ = self.child.kill();
        let _ = self.child.wait();
        wait_gone(self.child.id() as i32, Duration::from_secs(5));
    }
}

/// The interface in the lab's namespace that holds `addr`.
fn interface_with(lab: &Lab, addr: &str) -> String {
    let addrs: serde_json::Value =
        serde_json::from_str(&lab.ip(&["-j", "-4", "addr", "show"])).expect("ip -j addr");
    addrs
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| {
            l["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["local"] == addr)
        })
        .and_then(|l| l["ifname"].as_str())
        .unwrap_or_else(|| panic!("no interface with {addr}: {addrs}"))
        .to_string()
}

/// web-1's MAC from its console (`testguest: nic0 mac=…`).
fn wait_mac(lab: &Lab, vm: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let console = lab.console(vm);
        if let Some(mac) = console
            .lines()
            .find_map(|l| l.strip_prefix("testguest: nic0 mac="))
        {
            return mac.to_string();
        }
        assert!(Instant::now() < deadline, "no nic0 mac= line:\n{console}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_dhcp_guest_gets_exactly_its_static_lease_and_answers_on_it() {
    if skip() {
        return;
    }
    // The guest listens 3 s before asking, and asks for 15 s: dnsmasq starts meanwhile.
    let lab = lab_with_web1(&format!(
        "testguest.listen=3000 testguest.dhcp testguest.ping={GATEWAY}"
    ));
    lab.apply();
    let mac = wait_mac(&lab, "web-1");
    let interface = interface_with(&lab, GATEWAY);
    let mut dnsmasq = Dnsmasq::start(&lab.netns, &interface, &format!("{mac},{LEASE_IP}"));
    lab.wait_console("web-1", "testguest: ok");
    let console = lab.console("web-1");
    let mut stderr = || {
        let _ = dnsmasq.child.kill();
        let mut s = String::new();
        if let Some(mut e) = dnsmasq.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    };
    if !console
        .lines()
        .any(|l| l == "testguest: dhcp lease 10.100.0.42/24 gw 10.100.0.1 dns 10.100.0.1")
    {
        panic!("no lease line:\n{console}\ndnsmasq:\n{}", stderr());
    }
    assert_eq!(
        console
            .lines()
            .filter(|l| l.starts_with("testguest: dhcp"))
            .count(),
        1,
        "{console}"
    );
    assert_line(&console, "testguest: ping 10.100.0.1 ok");
    assert!(!console.contains("FAIL"), "{console}");
    assert!(
        dnsmasq.leases().contains(&format!("{mac} {LEASE_IP}")),
        "{}",
        dnsmasq.leases()
    );
    let (ok, out) = ping(&lab, LEASE_IP);
    assert!(ok, "no reply from the leased address:\n{out}");
}
