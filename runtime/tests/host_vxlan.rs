//! VLANs that span hosts, for real: two hosts as two network namespaces joined by an
//! underlay veth pair (`192.0.2.11` and `192.0.2.12`, addresses only inside those
//! namespaces), a network `lan` spanning both with VLANs `front` (10) and `back` (20),
//! planned by the planner and applied step by step through the runtime (`run_order`),
//! observed back through the host's facts. An endpoint on a VLAN is a veth into a
//! namespace of its own, so what it hears is what its VLAN carries: a datagram and its
//! answer cross the tunnel of its VLAN (ARP first: a ping without `ping`, which these
//! machines lack), and the other VLAN's endpoint hears nothing.
//!
//! Root only (see `support::netns`); every namespace is removed on drop, failure
//! included, which takes every interface of the test with it.

mod support;

use std::net::{IpAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use support::netns::{can_run, run, TestNetns};
use vmctl_planner::facts::{FactsRequest, TunnelFact};
use vmctl_planner::matching::{self, to_live_state};
use vmctl_planner::{planned, LiveFile, PlanOptions, Planned, Tunnel};
use vmctl_runtime::apply::{HostContext, Inventory, StepOrder};
use vmctl_runtime::host::facts;
use vmctl_runtime::host::net::vxlan::{self, VxlanError};
use vmctl_runtime::host::net::{observe_net, Netlink, VlanMode};
use vmctl_schema::Config;

const BRIDGE: &str = "vxbr0";

/// A host of the test: its namespace and state dir.
struct TestHost {
    name: &'static str,
    underlay: &'static str,
    ns: TestNetns,
    state: tempfile::TempDir,
}

/// A namespace that sends nothing by itself: loopback up, no IPv6 (no router
/// solicitations or duplicate address probes that an endpoint could hear).
fn quiet_netns() -> TestNetns {
    let ns = TestNetns::new();
    run(&[
        "ip",
        "netns",
        "exec",
        &ns.name,
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ]);
    ns.cmd("ip", &["link", "set", "lo", "up"]);
    ns
}

/// Two hosts joined by a veth pair on the underlay.
fn two_hosts() -> [TestHost; 2] {
    let host = |name, underlay| TestHost {
        name,
        underlay,
        ns: quiet_netns(),
        state: tempfile::tempdir().expect("state dir"),
    };
    let hosts = [host("a", "192.0.2.11"), host("b", "192.0.2.12")];
    let [a, b] = &hosts;
    a.ns.cmd(
        "ip",
        &[
            "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", &b.ns.name,
        ],
    );
    for h in &hosts {
        h.ns.cmd(
            "ip",
            &["addr", "add", &format!("{}/24", h.underlay), "dev", "ul0"],
        );
        h.ns.cmd("ip", &["link", "set", "ul0", "up"]);
    }
    hosts
}

/// The config of the two hosts: `lan` spans both; `back` has another VNI than derived
/// when `back_vni` says so.
fn config(hosts: &[TestHost; 2], back_vni: Option<u32>) -> Config {
    let mut text = String::from("project \"lab\"\n");
    for h in hosts {
        text.push_str(&format!(
            "host \"{}\" {{\n    state-dir \"{}\"\n    netns \"{}\"\n    underlay \"{}\"\n}}\n",
            h.name,
            h.state.path().display(),
            h.ns.name,
            h.underlay
        ));
    }
    text.push_str(&format!(
        "network \"lan\" {{\n    hosts \"a\" \"b\"\n    bridge \"{BRIDGE}\"\n}}\n\
         vlan \"front\" network=\"lan\" id=10\n"
    ));
    match back_vni {
        Some(vni) => text.push_str(&format!(
            "vlan \"back\" network=\"lan\" id=20 {{\n    vni {vni}\n}}\n"
        )),
        None => text.push_str("vlan \"back\" network=\"lan\" id=20\n"),
    }
    match vmctl_schema::load_str("lab.kdl", &text) {
        Ok(loaded) => loaded.config,
        Err(diagnostics) => panic!("{diagnostics:?}"),
    }
}

/// What the hosts report, matched to the config.
fn observe(config: &Config) -> LiveFile {
    let mut live = LiveFile::default();
    for host in &config.hosts {
        let facts = facts::gather(&FactsRequest::for_host(config, host)).expect("facts");
        live.hosts
            .insert(host.name.clone(), to_live_state(config, &host.name, &facts));
    }
    live
}

fn plan(config: &Config, live: &LiveFile, destroy: bool) -> Planned {
    let options = PlanOptions {
        destroy,
        ..PlanOptions::default()
    };
    planned(config, live, &options).expect("a plan")
}

/// The plan's changes that do something, as `host address action`, netns left out.
fn actions(planned: &Planned) -> Vec<String> {
    let mut out: Vec<String> = planned
        .plan
        .actionable()
        .filter(|c| c.id.kind != vmctl_planner::ResourceKind::Netns)
        .map(|c| format!("{} {} {}", c.host, c.id, c.action))
        .collect();
    out.sort();
    out
}

/// Runs every step of `planned` (but the netns ones: the test made the namespaces) on
/// its host, in the graph's order.
fn apply(config: &Config, planned: &Planned) {
    let cancel = AtomicBool::new(false);
    let inventory = Inventory::of(&planned.plan);
    for node in planned.graph.order() {
        let step = &planned.graph.graph[node];
        if step.id.kind == vmctl_planner::ResourceKind::Netns {
            continue;
        }
        let host = config
            .hosts
            .iter()
            .find(|h| h.name == step.host)
            .expect("host");
        let ctx = HostContext {
            state_dir: &host.state_dir,
            netns: host.netns.as_deref(),
            project: &config.project,
            vmctl: Path::new("/nonexistent/vmctl"),
            stop_timeout: Duration::from_secs(1),
            cancel: &cancel,
        };
        let order = StepOrder::of(&inventory, &planned.plan, step).expect("order");
        if let Err(e) = vmctl_runtime::apply::steps::run_order(&ctx, &order) {
            panic!("{step} on {}: {e}", step.host);
        }
    }
}

/// A namespace with one address on VLAN `id`: a veth whose other end is a port of the
/// VLAN on `host` (of its bridge, or an access port on a VLAN-filtering bridge).
fn endpoint(host: &TestHost, mode: VlanMode, id: u16, address: &str) -> TestNetns {
    let ns = quiet_netns();
    let port = format!("ep{id}");
    host.ns.cmd(
        "ip",
        &[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ],
    );
    let carrier = match mode {
        VlanMode::BridgePerVlan => vmctl_schema::derive::vlan_bridge_name(BRIDGE, id),
        VlanMode::Filtering => BRIDGE.to_owned(),
    };
    host.ns
        .cmd("ip", &["link", "set", &port, "master", &carrier, "up"]);
    if mode == VlanMode::Filtering {
        let vid = id.to_string();
        host.ns
            .cmd("bridge", &["vlan", "del", "dev", &port, "vid", "1"]);
        host.ns.cmd(
            "bridge",
            &["vlan", "add", "dev", &port, "vid", &vid, "pvid", "untagged"],
        );
    }
    ns.cmd(
        "ip",
        &["addr", "add", &format!("{address}/24"), "dev", "eth0"],
    );
    ns.cmd("ip", &["link", "set", "eth0", "up"]);
    ns
}

/// A UDP socket on port `port` made inside namespace `ns` (a socket stays in the
/// namespace it was made in, whichever thread uses it).
fn udp_socket(ns: &TestNetns, port: u16) -> UdpSocket {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let netns = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let socket = UdpSocket::bind(("0.0.0.0", port)).unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_secs(1)))
                    .unwrap();
                socket
            })
            .join()
            .unwrap()
    })
}

/// Whether a datagram from `from` reaches `to` (an endpoint at `address`) and its
/// answer comes back: the ping of this test (no `ping` binary needed).
fn answers(from: &TestNetns, to: &TestNetns, address: &str) -> bool {
    let client = udp_socket(from, 0);
    let server = udp_socket(to, 7777);
    let mut buf = [0u8; 64];
    (0..3).any(|_| {
        if client.send_to(b"vmctl?", (address, 7777)).is_err() {
            return false;
        }
        let Ok((n, peer)) = server.recv_from(&mut buf) else {
            return false;
        };
        server.send_to(&buf[..n], peer).is_ok() && client.recv(&mut buf).is_ok()
    })
}

fn tunnel_of(host: &TestHost, id: u16) -> Option<TunnelFact> {
    let net = Netlink::run(host.ns.name(), |nl| observe_net(nl, "lab")).expect("observe");
    net.tunnels
        .into_iter()
        .find(|t| t.network == "lan" && t.id == id)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_vlan_spans_two_hosts_through_its_tunnel_and_drift_is_repaired() {
    if !can_run() {
        return;
    }
    let hosts = two_hosts();
    let [a, b] = &hosts;
    let config = config(&hosts, None);
    let front_vni = config.vlans[0].vni.expect("a VNI");

    // Plan from nothing: the network and both VLANs on each host, with their tunnels.
    let first = plan(&config, &observe(&config), false);
    assert_eq!(
        actions(&first),
        [
            "a network.lan create",
            "a vlan.back create",
            "a vlan.front create",
            "b network.lan create",
            "b vlan.back create",
            "b vlan.front create",
        ]
    );
    apply(&config, &first);
    let applied = plan(&config, &observe(&config), false);
    assert!(actions(&applied).is_empty(), "{:?}", actions(&applied));

    let tunnel = tunnel_of(a, 10).expect("front's tunnel on a");
    assert_eq!(tunnel.vni, front_vni);
    // Its link is `vx<vni>`, marked as the VLAN's (checked below with iproute2).
    let ifname = vxlan::vxlan_ifname(front_vni);
    assert_eq!(
        matching::tunnel(&tunnel),
        Some(Tunnel {
            vni: front_vni,
            local: ip("192.0.2.11"),
            peers: vec![ip("192.0.2.12")],
        })
    );
    // Checked independently with iproute2: the link and its one flood entry.
    let details = a.ns.cmd("ip", &["-d", "-j", "link", "show", &ifname]);
    assert!(
        details.contains("\"ifalias\":\"vmctl:lab:lan/10\""),
        "{details}"
    );
    assert!(details.contains("\"port\":4789"), "{details}");
    assert!(details.contains("\"learning\":true"), "{details}");
    let fdb = a.ns.cmd("bridge", &["fdb", "show", "dev", &ifname]);
    assert!(fdb.contains("00:00:00:00:00:00 dst 192.0.2.12"), "{fdb}");

    // Frames cross: a's endpoint on front reaches b's; b's endpoint on back (an address
    // of front's subnet) hears nothing of it.
    let mode = Netlink::run(a.ns.name(), |nl| observe_net(nl, "lab"))
        .expect("observe")
        .networks[0]
        .mode
        .expect("a host reports its networks' VLAN mode");
    eprintln!("VLAN mode of this kernel: {mode:?}");
    let a_front = endpoint(a, mode, 10, "10.10.0.1");
    let b_front = endpoint(b, mode, 10, "10.10.0.2");
    let b_back = endpoint(b, mode, 20, "10.10.0.3");
    assert!(
        answers(&a_front, &b_front, "10.10.0.2"),
        "front does not cross the tunnel"
    );
    assert!(
        !answers(&a_front, &b_back, "10.10.0.3"),
        "back answered on front"
    );
    // Had back heard front's ARP request for its address, it would have answered and
    // learnt the asker. (Frame counters would not do: the bridges send IGMP reports of
    // their own.)
    let neighbours = b_back.cmd("ip", &["neigh", "show"]);
    assert!(!neighbours.contains("10.10.0.1"), "{neighbours}");
    let neighbours = b_front.cmd("ip", &["neigh", "show"]);
    assert!(neighbours.contains("10.10.0.1"), "{neighbours}");

    // Drift: front's VXLAN deleted by hand on b is that host's VLAN's update, and the
    // apply makes the link whole (a ping crosses again).
    b.ns.cmd("ip", &["link", "del", &format!("vx{front_vni}")]);
    assert_eq!(tunnel_of(b, 10), None);
    assert!(
        !answers(&a_front, &b_front, "10.10.0.2"),
        "front crosses without its tunnel"
    );
    let repair = plan(&config, &observe(&config), false);
    assert_eq!(actions(&repair), ["b vlan.front update"]);
    apply(&config, &repair);
    assert!(
        answers(&a_front, &b_front, "10.10.0.2"),
        "front does not cross after the repair"
    );

    // An extra flood entry on a is drift too, and goes; a missing one comes back.
    let vx = format!("vx{front_vni}");
    a.ns.cmd(
        "bridge",
        &[
            "fdb",
            "append",
            "00:00:00:00:00:00",
            "dev",
            &vx,
            "dst",
            "198.51.100.9",
        ],
    );
    a.ns.cmd(
        "bridge",
        &[
            "fdb",
            "del",
            "00:00:00:00:00:00",
            "dev",
            &vx,
            "dst",
            "192.0.2.12",
        ],
    );
    let repair = plan(&config, &observe(&config), false);
    assert_eq!(actions(&repair), ["a vlan.front update"]);
    apply(&config, &repair);
    let peers = tunnel_of(a, 10).expect("tunnel").peers;
    assert_eq!(peers, [ip("192.0.2.12")]);
    assert!(actions(&plan(&config, &observe(&config), false)).is_empty());

    // Destroy: nothing of the project is left on either host but the test's own links.
    let destroy = plan(&config, &observe(&config), true);
    apply(&config, &destroy);
    for h in &hosts {
        let left: Vec<String> =
            h.ns.ifnames()
                .into_iter()
                .filter(|n| !["lo", "ul0", "ep10", "ep20"].contains(&n.as_str()))
                .collect();
        assert!(left.is_empty(), "left on {}: {left:?}", h.name);
    }
}

#[test]
fn a_vxlan_vmctl_did_not_make_is_never_touched() {
    if !can_run() {
        return;
    }
    let hosts = two_hosts();
    let [a, _] = &hosts;
    // `back` asks for VNI 777, whose link name someone else's VXLAN has on a.
    let config = config(&hosts, Some(777));
    a.ns.cmd(
        "ip",
        &[
            "link",
            "add",
            "vx777",
            "type",
            "vxlan",
            "id",
            "777",
            "dstport",
            "4789",
            "local",
            "192.0.2.11",
        ],
    );
    let live = observe(&config);
    let problems = &live.hosts["a"].problems;
    assert!(
        problems
            .iter()
            .any(|p| p.resource == "vlan.back" && p.message.contains("vx777")),
        "{problems:?}"
    );
    assert!(live.hosts["b"].problems.is_empty());
    // Asked directly, the runtime refuses it and leaves it as it was.
    let result = Netlink::run(a.ns.name(), |nl| {
        vmctl_runtime::host::net::bridge::create_bridge(nl, "lab", "lan", BRIDGE)?;
        vmctl_runtime::host::net::vlan::add_vlan(nl, "lab", "lan", BRIDGE, 20)?;
        let tunnel = Tunnel {
            vni: 777,
            local: ip("192.0.2.11"),
            peers: vec![ip("192.0.2.12")],
        };
        vxlan::set_tunnel(nl, "lab", "lan", BRIDGE, 20, Some(&tunnel))
    });
    assert!(
        matches!(result, Err(VxlanError::ForeignVxlan { ref ifname, .. }) if ifname == "vx777"),
        "{result:?}"
    );
    let details = a.ns.cmd("ip", &["-d", "-j", "link", "show", "vx777"]);
    assert!(!details.contains("ifalias"), "{details}");
    assert!(!details.contains("\"master\""), "{details}");
    let fdb = a.ns.cmd("bridge", &["fdb", "show", "dev", "vx777"]);
    assert!(!fdb.contains("192.0.2.12"), "{fdb}");
    // Deleting the project's network leaves it too.
    Netlink::run(a.ns.name(), |nl| {
        vmctl_runtime::host::net::bridge::delete_bridge(nl, "lab", "lan", BRIDGE)
    })
    .expect("delete");
    assert!(a.ns.ifnames().contains(&"vx777".to_owned()));
}
