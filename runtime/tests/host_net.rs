//! Networking tests of `host::net`: bridges, VLANs, gateways, taps and uplinks, made,
//! observed, changed and deleted inside a network namespace each test creates
//! (`vmctl-test-<pid>-<n>`) and removes on drop, failure included.
//!
//! They need root (CAP_NET_ADMIN, /dev/net/tun, `ip netns`). Without it they skip with a
//! message — except when `CI` is set, where skipping is a failure. Nothing here touches
//! the machine's own network namespace beyond reading it, and no traffic is sent.
//!
//! The kernel decides the VLAN mode (`VlanMode`): with `CONFIG_BRIDGE_VLAN_FILTERING` the
//! tests check VLAN tables, without it (vmctl's CI machines) one bridge per VLAN. Each
//! test says on stderr which mode it ran.

use serde_json::Value;
use vmctl_planner::facts::VlanFact;
use vmctl_planner::live::LiveNetwork;
use vmctl_runtime::host::net::bridge::{self, BridgeError};
use vmctl_runtime::host::net::tap::{self, TapError, TapPort};
use vmctl_runtime::host::net::vlan::{self, VlanError};
use vmctl_runtime::host::net::{observe_net, Link, Netlink, VlanMode};

mod support;

use support::netns::{can_run, TestNetns};

#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    #[error(transparent)]
    Vlan(#[from] VlanError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error(transparent)]
    Netlink(#[from] vmctl_runtime::host::net::NetlinkError),
}

/// Where a tap of network "lan" on `bridge` goes.
fn port(bridge: &str, vlan_id: u16) -> TapPort<'_> {
    TapPort {
        network: "lan",
        bridge,
        vlan_id,
    }
}

/// The VLAN mode of the network bridge `bridge` of "lab"/"lan", announced on stderr.
fn mode_of(ns: &TestNetns, bridge: &str) -> VlanMode {
    let live = in_ns(ns, |nl| Ok(observe_net(nl, "lab")?));
    let net = live.networks.iter().find(|n| n.bridge == bridge).unwrap();
    let mode = net.mode.expect("a host reports its networks' VLAN mode");
    eprintln!("VLAN mode of this kernel: {mode:?}");
    mode
}

/// VLAN `id` of network "lan" of "lab", as a host reports it.
fn lan_vlan(id: u16, gateway: Option<&str>) -> VlanFact {
    VlanFact {
        project: "lab".into(),
        network: "lan".into(),
        id,
        gateway: gateway.map(str::to_owned),
    }
}

/// The link `name` in the namespace, read over netlink.
fn link(ns: &TestNetns, name: &str) -> Link {
    in_ns(ns, |nl| Ok(nl.link_by_name(name)?)).expect("the link")
}

/// The carrier of VLAN `id`'s gateway: the VLAN link or the VLAN's bridge.
fn gateway_dev(mode: VlanMode, bridge: &str, id: u16) -> String {
    match mode {
        VlanMode::Filtering => format!("{bridge}.{id}"),
        VlanMode::BridgePerVlan => format!("{bridge}v{id}"),
    }
}

fn in_ns<T: Send>(ns: &TestNetns, f: impl FnOnce(&Netlink) -> Result<T, TestError> + Send) -> T {
    Netlink::run(ns.name(), f).unwrap()
}

#[test]
fn bridge_vlans_gateway_and_tap_lifecycle() {
    if !can_run() {
        return;
    }
    let ns = TestNetns::new();
    let br = "vmbr-t0";

    // Create: a bridge, VLANs 10 and 20, a gateway on 10, a tap of web NIC 0 on 10.
    in_ns(&ns, |nl| Ok(bridge::create_bridge(nl, "lab", "lan", br)?));
    let mode = mode_of(&ns, br);
    let tap_name = in_ns(&ns, |nl| {
        vlan::add_vlan(nl, "lab", "lan", br, 10)?;
        vlan::add_vlan(nl, "lab", "lan", br, 20)?;
        vlan::set_gateway(nl, "lab", "lan", br, 10, Some("10.10.0.1/24"))?;
        Ok(tap::create_tap(nl, "lab", "web", 0, port(br, 10))?)
    });
    assert_eq!(tap_name, tap::tap_ifname("lab", "web", 0));

    let live = in_ns(&ns, |nl| Ok(observe_net(nl, "lab")?));
    assert_eq!(
        live.networks,
        [LiveNetwork {
            name: "lan".into(),
            project: "lab".into(),
            bridge: br.into(),
            uplink: None,
            mode: Some(mode),
            bridge_drift: Vec::new(),
        }]
    );
    assert_eq!(
        live.vlans,
        [lan_vlan(10, Some("10.10.0.1/24")), lan_vlan(20, None)]
    );
    assert_eq!(live.taps.len(), 1);
    let tap = &live.taps[0];
    assert_eq!(
        (tap.vm.as_str(), tap.nic, tap.ifname.as_str()),
        ("web", 0, tap_name.as_str())
    );
    assert_eq!((tap.network.as_deref(), tap.vlan), (Some("lan"), Some(10)));
    assert!(tap.up);

    // Checked independently with iproute2.
    let gw_dev = gateway_dev(mode, br, 10);
    let gw_addrs = ns.cmd("ip", &["-j", "addr", "show", "dev", &gw_dev]);
    assert!(gw_addrs.contains("\"10.10.0.1\""), "{gw_addrs}");
    let details = ns.cmd("ip", &["-d", "-j", "link", "show", "dev", br]);
    assert!(
        details.contains("\"ifalias\":\"vmctl:lab:lan\""),
        "{details}"
    );
    let tap_details = ns.cmd("ip", &["-d", "-j", "link", "show", "dev", &tap_name]);
    assert!(tap_details.contains("\"vnet_hdr\":true"), "{tap_details}");
    assert!(tap_details.contains("\"persist\":true"), "{tap_details}");
    match mode {
        VlanMode::Filtering => {
            // An access port of VLAN 10 only (no default VLAN 1); the bridge carries both.
            assert_eq!(ns.vlans_of(&tap_name), [(10, true, true)]);
            assert_eq!(ns.vlans_of(br), [(10, false, false), (20, false, false)]);
            assert!(details.contains("\"vlan_filtering\":1"), "{details}");
        }
        VlanMode::BridgePerVlan => {
            let ports = ns.cmd("ip", &["-j", "link", "show", "master", "vmbr-t0v10"]);
            assert!(ports.contains(&tap_name), "{ports}");
        }
    }

    // Other projects see nothing of it.
    let other = in_ns(&ns, |nl| Ok(observe_net(nl, "other")?));
    assert!(other.networks.is_empty() && other.taps.is_empty());

    // Change: move the gateway, move the tap to VLAN 20, then drop the gateway.
    let live = in_ns(&ns, |nl| {
        // Creating again is idempotent.
        bridge::create_bridge(nl, "lab", "lan", br)?;
        vlan::add_vlan(nl, "lab", "lan", br, 10)?;
        vlan::set_gateway(nl, "lab", "lan", br, 10, Some("10.10.0.2/24"))?;
        tap::create_tap(nl, "lab", "web", 0, port(br, 20))?;
        Ok(observe_net(nl, "lab")?)
    });
    assert_eq!(live.vlans[0].gateway.as_deref(), Some("10.10.0.2/24"));
    assert_eq!(live.taps[0].vlan, Some(20));
    if mode == VlanMode::Filtering {
        assert_eq!(ns.vlans_of(&tap_name), [(20, true, true)]);
    }

    let live = in_ns(&ns, |nl| {
        vlan::set_gateway(nl, "lab", "lan", br, 10, None)?;
        Ok(observe_net(nl, "lab")?)
    });
    assert_eq!(live.vlans[0], lan_vlan(10, None));
    if mode == VlanMode::Filtering {
        assert!(!ns.ifnames().contains(&gw_dev));
    }

    // Delete: tap, VLANs, bridge; nothing is left but loopback.
    in_ns(&ns, |nl| {
        assert!(tap::delete_tap(nl, "lab", "web", 0)?);
        assert!(!tap::delete_tap(nl, "lab", "web", 0)?);
        vlan::set_gateway(nl, "lab", "lan", br, 20, Some("10.20.0.1/24"))?;
        assert!(vlan::delete_vlan(nl, "lab", "lan", br, 20)?);
        assert!(!vlan::delete_vlan(nl, "lab", "lan", br, 20)?);
        assert!(vlan::delete_vlan(nl, "lab", "lan", br, 10)?);
        let live = observe_net(nl, "lab")?;
        assert!(live.vlans.is_empty());
        assert!(bridge::delete_bridge(nl, "lab", "lan", br)?);
        assert!(!bridge::delete_bridge(nl, "lab", "lan", br)?);
        let left = observe_net(nl, "lab")?;
        assert!(left.networks.is_empty() && left.taps.is_empty(), "{left:?}");
        Ok(())
    });
    assert_eq!(ns.ifnames(), ["lo"]);
}

#[test]
fn deleting_a_bridge_takes_its_vlans_and_gateways_but_not_taps() {
    if !can_run() {
        return;
    }
    let ns = TestNetns::new();
    let br = "vmbr-t4";
    let tap_name = in_ns(&ns, |nl| {
        bridge::create_bridge(nl, "lab", "lan", br)?;
        vlan::add_vlan(nl, "lab", "lan", br, 7)?;
        vlan::set_gateway(nl, "lab", "lan", br, 7, Some("fd00:7::1/64"))?;
        let tap = tap::create_tap(nl, "lab", "web", 0, port(br, 7))?;
        assert_eq!(
            observe_net(nl, "lab")?.vlans[0].gateway.as_deref(),
            Some("fd00:7::1/64")
        );
        assert!(bridge::delete_bridge(nl, "lab", "lan", br)?);
        let live = observe_net(nl, "lab")?;
        assert!(live.networks.is_empty());
        // The tap is the VM's: left, detached, for its own delete.
        assert_eq!(
            (live.taps[0].network.as_deref(), live.taps[0].vlan),
            (None, None)
        );
        Ok(tap)
    });
    assert_eq!(link(&ns, &tap_name).controller, None);
    assert_eq!(ns.ifnames(), ["lo".to_owned(), tap_name]);
    in_ns(&ns, |nl| Ok(tap::delete_tap(nl, "lab", "web", 0)?));
    assert_eq!(ns.ifnames(), ["lo"]);
}

/// Reads frames from a non-blocking tap fd until `payload` shows up or `wait` passes.
fn sees(tap: &mut std::fs::File, payload: &[u8], wait: std::time::Duration) -> bool {
    use std::io::Read;
    let deadline = std::time::Instant::now() + wait;
    let mut buf = [0u8; 2048];
    while std::time::Instant::now() < deadline {
        match tap.read(&mut buf) {
            Ok(n) => {
                if buf[..n].windows(payload.len()).any(|w| w == payload) {
                    return true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("reading a tap: {e}"),
        }
    }
    false
}

#[test]
fn frames_stay_inside_their_vlan() {
    if !can_run() {
        return;
    }
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    let ns = TestNetns::new();
    let br = "vmbr-t5";
    // web and db on VLAN 10, cache on VLAN 20; the fds are what a VMM would hold.
    let mut fds = in_ns(&ns, |nl| {
        bridge::create_bridge(nl, "lab", "lan", br)?;
        vlan::add_vlan(nl, "lab", "lan", br, 10)?;
        vlan::add_vlan(nl, "lab", "lan", br, 20)?;
        let mut fds = Vec::new();
        for (vm, id) in [("web", 10), ("db", 10), ("cache", 20)] {
            let name = tap::create_tap(nl, "lab", vm, 0, port(br, id))?;
            fds.push(tap::open_tap(nl, &name)?);
        }
        Ok(fds)
    });
    for fd in &fds {
        // SAFETY: fcntl on an fd this test owns.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    }
    // Let the ports come up before sending.
    std::thread::sleep(Duration::from_millis(100));

    // A broadcast frame of a local experimental ethertype, after a zero virtio_net_hdr.
    let payload = b"vmctl-vlan-isolation-test";
    let mut frame = vec![0u8; 10];
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&[0x52, 0x54, 0x00, 0x00, 0x00, 0x0a]);
    frame.extend_from_slice(&[0x88, 0xb5]);
    frame.extend_from_slice(payload);
    frame.resize(10 + 60, 0);
    fds[0].write_all(&frame).unwrap();

    assert!(
        sees(&mut fds[1], payload, Duration::from_secs(2)),
        "db (same VLAN) did not see web's frame"
    );
    assert!(
        !sees(&mut fds[2], payload, Duration::from_millis(300)),
        "cache (other VLAN) saw web's frame"
    );
    drop(fds);
    in_ns(&ns, |nl| Ok(bridge::delete_bridge(nl, "lab", "lan", br)?));
}

#[test]
fn interfaces_of_others_are_never_touched() {
    if !can_run() {
        return;
    }
    let ns = TestNetns::new();
    ns.cmd("ip", &["link", "add", "plain0", "type", "bridge"]);
    ns.cmd(
        "ip",
        &[
            "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ],
    );
    ns.cmd("ip", &["link", "set", "veth0", "master", "plain0"]);
    in_ns(&ns, |nl| {
        bridge::create_bridge(nl, "theirs", "lan", "theirbr")?;
        // Another project's bridge, an unmarked bridge with a port, a non-bridge.
        for name in ["theirbr", "plain0", "veth0"] {
            assert!(matches!(
                bridge::create_bridge(nl, "lab", "lan", name),
                Err(BridgeError::ForeignBridge { .. })
            ));
            assert!(matches!(
                bridge::delete_bridge(nl, "lab", "lan", name),
                Err(BridgeError::ForeignBridge { .. })
            ));
        }
        // Same project, other network name: not ours either.
        assert!(matches!(
            bridge::create_bridge(nl, "theirs", "wan", "theirbr"),
            Err(BridgeError::ForeignBridge { .. })
        ));
        assert!(matches!(
            vlan::add_vlan(nl, "lab", "lan", "theirbr", 10),
            Err(VlanError::Bridge(BridgeError::ForeignBridge { .. }))
        ));
        assert!(matches!(
            tap::create_tap(nl, "lab", "web", 0, port("theirbr", 10)),
            Err(TapError::ForeignBridge { .. })
        ));
        let left = observe_net(nl, "lab")?;
        assert!(left.networks.is_empty() && left.taps.is_empty(), "{left:?}");
        assert_eq!(observe_net(nl, "theirs")?.networks.len(), 1);
        assert!(bridge::delete_bridge(nl, "theirs", "lan", "theirbr")?);
        Ok(())
    });
    assert_eq!(ns.ifnames(), ["lo", "plain0", "veth0", "veth1"]);
}

#[test]
fn uplink_is_a_trunk_of_the_bridge_vlans() {
    if !can_run() {
        return;
    }
    let ns = TestNetns::new();
    ns.cmd(
        "ip",
        &["link", "add", "up0", "type", "veth", "peer", "name", "up0p"],
    );
    let br = "vmbr-t1";
    in_ns(&ns, |nl| {
        bridge::create_bridge(nl, "lab", "lan", br)?;
        vlan::add_vlan(nl, "lab", "lan", br, 10)?;
        Ok(vlan::add_vlan(nl, "lab", "lan", br, 20)?)
    });
    if mode_of(&ns, br) == VlanMode::BridgePerVlan {
        // No 802.1Q on this kernel: a trunk is refused, and the uplink is left alone.
        in_ns(&ns, |nl| {
            assert!(matches!(
                bridge::set_uplink(nl, "lab", "lan", br, Some("up0")),
                Err(BridgeError::UplinkNeedsVlanFiltering { .. })
            ));
            assert_eq!(observe_net(nl, "lab")?.networks[0].uplink, None);
            bridge::set_uplink(nl, "lab", "lan", br, None)?;
            Ok(bridge::delete_bridge(nl, "lab", "lan", br)?)
        });
        assert_eq!(ns.ifnames(), ["lo", "up0", "up0p"]);
        return;
    }
    let live = in_ns(&ns, |nl| {
        bridge::set_uplink(nl, "lab", "lan", br, Some("up0"))?;
        // A VLAN added later reaches the uplink too.
        vlan::add_vlan(nl, "lab", "lan", br, 30)?;
        tap::create_tap(nl, "lab", "db", 1, port(br, 30))?;
        Ok(observe_net(nl, "lab")?)
    });
    assert_eq!(live.networks[0].uplink.as_deref(), Some("up0"));
    assert_eq!(live.taps.len(), 1, "the tap is not taken for an uplink");
    assert_eq!(
        ns.vlans_of("up0"),
        [(10, false, false), (20, false, false), (30, false, false)]
    );

    let live = in_ns(&ns, |nl| {
        vlan::delete_vlan(nl, "lab", "lan", br, 20)?;
        Ok(observe_net(nl, "lab")?)
    });
    assert_eq!(ns.vlans_of("up0"), [(10, false, false), (30, false, false)]);
    assert_eq!(live.vlans.len(), 2);

    in_ns(&ns, |nl| {
        assert!(matches!(
            bridge::set_uplink(nl, "lab", "lan", br, Some("nope0")),
            Err(BridgeError::MissingUplink { .. })
        ));
        bridge::set_uplink(nl, "lab", "lan", br, None)?;
        assert_eq!(observe_net(nl, "lab")?.networks[0].uplink, None);
        tap::delete_tap(nl, "lab", "db", 1)?;
        bridge::delete_bridge(nl, "lab", "lan", br)?;
        Ok(())
    });
    // The uplink is the user's: released, never deleted.
    assert_eq!(ns.ifnames(), ["lo", "up0", "up0p"]);
}

#[test]
fn observing_finds_and_repairs_drift() {
    if !can_run() {
        return;
    }
    let ns = TestNetns::new();
    let br = "vmbr-t2";
    in_ns(&ns, |nl| {
        bridge::create_bridge(nl, "lab", "lan", br)?;
        vlan::add_vlan(nl, "lab", "lan", br, 100)?;
        vlan::add_vlan(nl, "lab", "lan", br, 200)?;
        Ok(())
    });
    // By hand: a VLAN deleted, the bridge down (and VLAN filtering turned off).
    let mode = mode_of(&ns, br);
    match mode {
        VlanMode::Filtering => {
            ns.cmd("bridge", &["vlan", "del", "dev", br, "vid", "200", "self"]);
            ns.cmd(
                "ip",
                &[
                    "link",
                    "set",
                    br,
                    "down",
                    "type",
                    "bridge",
                    "vlan_filtering",
                    "0",
                ],
            );
        }
        VlanMode::BridgePerVlan => {
            ns.cmd("ip", &["link", "del", "vmbr-t2v200"]);
            ns.cmd("ip", &["link", "set", br, "down"]);
        }
    }
    let live = in_ns(&ns, |nl| Ok(observe_net(nl, "lab")?));
    assert_eq!(live.vlans.iter().map(|v| v.id).collect::<Vec<_>>(), [100]);
    let bridge = link(&ns, br);
    assert!(bridge.vlan_filtering != Some(true) && !bridge.up);

    let live = in_ns(&ns, |nl| {
        bridge::create_bridge(nl, "lab", "lan", br)?;
        vlan::add_vlan(nl, "lab", "lan", br, 200)?;
        Ok(observe_net(nl, "lab")?)
    });
    assert_eq!(
        live.vlans.iter().map(|v| v.id).collect::<Vec<_>>(),
        [100, 200]
    );
    let bridge = link(&ns, br);
    assert!(bridge.up);
    assert_eq!(
        bridge.vlan_filtering == Some(true),
        mode == VlanMode::Filtering
    );
}

#[test]
fn netns_switch_is_thread_scoped() {
    if !can_run() {
        return;
    }
    let own = || std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let before = own();
    let ns = TestNetns::new();
    let inside = in_ns(&ns, |nl| {
        bridge::create_bridge(nl, "lab", "lan", "vmbr-t3")?;
        Ok((
            std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
            nl.links()?,
        ))
    });
    assert_ne!(inside.0, before);
    assert_eq!(own(), before, "the calling thread changed namespace");
    let names: Vec<_> = inside.1.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["lo", "vmbr-t3"]);
    // The bridge is not in this process's own namespace.
    let here = Netlink::run(None, |nl| nl.link_by_name("vmbr-t3")).unwrap();
    assert_eq!(here, None);
    assert!(matches!(
        Netlink::run(Some("vmctl-test-does-not-exist"), |nl| nl.links()),
        Err(vmctl_runtime::host::net::NetlinkError::EnterNetns { .. })
    ));
}

#[test]
fn observe_host_assembles_storage_and_network() {
    if !can_run() {
        return;
    }
    use vmctl_runtime::host::observe::{observe_host, HostSpec};
    use vmctl_runtime::host::{pool, volume};

    let ns = TestNetns::new();
    let state = tempfile::tempdir().unwrap();
    let pool_path = state.path().join("pools/fast");
    pool::create_pool(state.path(), "lab", "fast", &pool_path).unwrap();
    let root = volume::VolumeSpec {
        name: "web-root",
        size: 1 << 20,
        from: None,
        source: None,
        prevent_destroy: false,
        cancel: None,
    };
    volume::create_volume("lab", &pool_path, &root).unwrap();
    in_ns(&ns, |nl| {
        bridge::create_bridge(nl, "lab", "lan", "vmbr-t6")?;
        vlan::add_vlan(nl, "lab", "lan", "vmbr-t6", 100)?;
        vlan::set_gateway(nl, "lab", "lan", "vmbr-t6", 100, Some("10.100.0.1/24"))?;
        Ok(tap::create_tap(nl, "lab", "web", 0, port("vmbr-t6", 100))?)
    });

    let (observed, unreadable) = observe_host(&HostSpec {
        project: "lab",
        state_dir: state.path(),
        netns: ns.name(),
        pool_paths: &[],
    })
    .unwrap();
    assert!(unreadable.is_empty(), "{unreadable:?}");
    assert_eq!(observed.pools.len(), 1);
    assert_eq!(
        (
            observed.volumes[0].pool.as_str(),
            observed.volumes[0].name.as_str()
        ),
        ("fast", "web-root")
    );
    assert_eq!(observed.networks[0].bridge, "vmbr-t6");
    assert_eq!(
        observed.vlans,
        [VlanFact {
            project: "lab".into(),
            network: "lan".into(),
            id: 100,
            gateway: Some("10.100.0.1/24".into()),
        }]
    );
    assert_eq!(
        (observed.taps[0].vm.as_str(), observed.taps[0].vlan),
        ("web", Some(100))
    );
}

/// Writes vmctl's creation record for `ifname` in the session's namespace, as a crash
/// between creating an interface and marking it leaves it.
fn leave_creation_record(nl: &Netlink, ifname: &str, alias: &str) -> std::path::PathBuf {
    use vmctl_runtime::host::net::created::RECORD_DIR;
    let dir = std::path::Path::new(RECORD_DIR).join(nl.netns_cookie());
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{ifname}.json"));
    std::fs::write(&path, format!(r#"{{"format": 1, "alias": "{alias}"}}"#)).unwrap();
    path
}

/// Removes what `leave_creation_record` wrote, also when a test fails.
struct RecordGuard(Vec<std::path::PathBuf>);

impl Drop for RecordGuard {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

#[test]
fn unmarked_interfaces_are_never_adopted_unless_vmctl_recorded_making_them() {
    if !can_run() {
        return;
    }
    let ns = TestNetns::new();
    let tap_name = tap::tap_ifname("lab", "web", 0);
    // A bare bridge and a tap with exactly the names vmctl would use, made by someone
    // else: no alias, no ports, down — what a crash used to be assumed to leave.
    ns.cmd("ip", &["link", "add", "br0", "type", "bridge"]);
    ns.cmd("ip", &["tuntap", "add", &tap_name, "mode", "tap"]);
    let before = ns.cmd("ip", &["-d", "-j", "link", "show"]);
    let mut guard = RecordGuard(Vec::new());
    in_ns(&ns, |nl| {
        assert!(matches!(
            bridge::create_bridge(nl, "lab", "lan", "br0"),
            Err(BridgeError::ForeignBridge { .. })
        ));
        assert!(matches!(
            bridge::delete_bridge(nl, "lab", "lan", "br0"),
            Err(BridgeError::ForeignBridge { .. })
        ));
        bridge::create_bridge(nl, "lab", "lan", "vmbr0")?;
        vlan::add_vlan(nl, "lab", "lan", "vmbr0", 10)?;
        assert!(matches!(
            tap::create_tap(nl, "lab", "web", 0, port("vmbr0", 10)),
            Err(TapError::ForeignTap { .. })
        ));
        assert!(!tap::delete_tap(nl, "lab", "web", 1)?);
        assert!(matches!(
            tap::delete_tap(nl, "lab", "web", 0),
            Err(TapError::ForeignTap { .. })
        ));
        Ok(())
    });
    // br0 and the tap are exactly as they were (vmbr0 and its VLAN are new).
    let after = ns.cmd("ip", &["-d", "-j", "link", "show"]);
    let pick = |json: &str, name: &str| -> Value {
        let links: Value = serde_json::from_str(json).unwrap();
        let mut link = links
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ifname"] == name)
            .unwrap_or_else(|| panic!("{name} is gone"))
            .clone();
        link.as_object_mut().unwrap().remove("stats64");
        link
    };
    for name in ["br0", tap_name.as_str()] {
        assert_eq!(
            pick(&before, name),
            pick(&after, name),
            "{name} was changed"
        );
    }

    // A crash leftover vmctl recorded is taken back; with the record but touched since
    // (an address), it is not.
    ns.cmd("ip", &["link", "add", "br1", "type", "bridge"]);
    ns.cmd("ip", &["link", "add", "br2", "type", "bridge"]);
    ns.cmd("ip", &["addr", "add", "10.9.9.1/24", "dev", "br2"]);
    in_ns(&ns, |nl| {
        guard
            .0
            .push(leave_creation_record(nl, "br1", "vmctl:lab:one"));
        guard
            .0
            .push(leave_creation_record(nl, "br2", "vmctl:lab:two"));
        bridge::create_bridge(nl, "lab", "one", "br1")?;
        assert!(matches!(
            bridge::create_bridge(nl, "lab", "two", "br2"),
            Err(BridgeError::ForeignBridge { .. })
        ));
        // The record of another mark does not make br0 ours either.
        guard
            .0
            .push(leave_creation_record(nl, "br0", "vmctl:lab:other"));
        assert!(matches!(
            bridge::create_bridge(nl, "lab", "lan", "br0"),
            Err(BridgeError::ForeignBridge { .. })
        ));
        Ok(())
    });
    assert!(
        !guard.0[0].exists(),
        "the record of br1 is dropped once it is marked"
    );
    let details = ns.cmd("ip", &["-d", "-j", "link", "show", "br1"]);
    assert!(
        details.contains("\"ifalias\":\"vmctl:lab:one\""),
        "{details}"
    );
    let details = ns.cmd("ip", &["-d", "-j", "link", "show", "br2"]);
    assert!(!details.contains("ifalias"), "{details}");
}
