//! A VLAN's dnsmasq (`host::dhcp`) in a network namespace this test makes: started in
//! the namespace with only its four capabilities and `no_new_privs`, observed running
//! with the hashes of its files, reloaded (same pid) when only its leases change,
//! restarted when its configuration does, refused with dnsmasq's words when it cannot
//! start, never signalled through a pid file that names another process, and gone
//! with its files after delete. Needs root, iproute2 and dnsmasq; under `CI` a skip is
//! a failure.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use vmctl_planner::dhcp::{self as plan, DhcpFiles, Lease};
use vmctl_runtime::host::dhcp::{self, DhcpError};
use vmctl_schema::Vlan;

mod support;

use support::netns::{can_run, TestNetns};

fn skip() -> bool {
    if !can_run() {
        return true;
    }
    if dhcp::find_dnsmasq().is_some() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "dnsmasq is missing; CI must run these tests"
    );
    eprintln!("SKIPPED dhcp test: needs dnsmasq");
    true
}

fn vlan(gateway: &str) -> Vlan {
    Vlan {
        name: "front".into(),
        network: "lan".into(),
        id: 100,
        vni: None,
        gateway: Some(gateway.into()),
        subnet: None,
        gateway_host: None,
        dhcp: true,
        nat: false,
        nat_via: None,
        route_to: Vec::new(),
    }
}

fn files(state: &Path, gateway: &str, leases: &[Lease<'_>]) -> DhcpFiles {
    let dir = plan::dir(state, "lab", "front");
    plan::render("lab", &vlan(gateway), &dir, leases).expect("an IPv4 gateway")
}

fn lease(vm: &str, last: u8) -> Lease<'_> {
    Lease {
        vm,
        mac: format!("52:54:00:00:00:{last:02x}"),
        ip: std::net::Ipv4Addr::new(10, 77, 0, last).into(),
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Kills (by its pid file, when it names a dnsmasq) whatever the test left running.
struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let pid_file = plan::dir(self.0, "lab", "front").join(plan::PID_FILE);
        let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        else {
            return;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "dnsmasq" {
            // SAFETY: kill has no memory preconditions; this test's dnsmasq.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn dnsmasq_runs_in_the_netns_confined_reloads_restarts_and_goes() {
    if skip() {
        return;
    }
    let netns = TestNetns::new();
    netns.cmd("ip", &["link", "set", "lo", "up"]);
    netns.cmd("ip", &["link", "add", "br0", "type", "bridge"]);
    netns.cmd("ip", &["addr", "add", "10.77.0.1/24", "dev", "br0"]);
    netns.cmd("ip", &["link", "set", "br0", "up"]);
    let state = tempfile::tempdir().expect("state dir");
    let _cleanup = Cleanup(state.path());
    let ns = Some(netns.name.as_str());

    let one = files(state.path(), "10.77.0.1/24", &[lease("web-1", 2)]);
    dhcp::ensure(state.path(), "lab", ns, "front", &one).expect("started");
    let seen = dhcp::observe(state.path(), "lab").expect("observe");
    assert_eq!(seen.len(), 1);
    let pid = seen[0].pid.expect("running");
    assert!(seen[0].running);
    assert_eq!(
        (seen[0].config.as_str(), seen[0].leases.as_str()),
        (one.config_hash().as_str(), one.leases_hash().as_str())
    );
    // In the namespace, confined.
    let ns_of = |path: &str| std::fs::metadata(path).expect("ns").ino();
    assert_eq!(
        ns_of(&format!("/proc/{pid}/ns/net")),
        ns_of(&format!("/run/netns/{}", netns.name))
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(
        status.lines().any(|l| l == "CapBnd:\t0000000000003440"),
        "{status}"
    );
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    let dig = |name: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", &netns.name, "dig", "+short", "+time=2"])
            .args(["@10.77.0.1", name])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let has_dig = Command::new("dig").arg("-v").output().is_ok();
    if has_dig {
        assert_eq!(dig("web-1.lab"), "10.77.0.2");
    }

    // Only the leases change: the same dnsmasq re-reads them.
    let two = files(
        state.path(),
        "10.77.0.1/24",
        &[lease("web-1", 2), lease("web-2", 3)],
    );
    dhcp::ensure(state.path(), "lab", ns, "front", &two).expect("reloaded");
    let seen = dhcp::observe(state.path(), "lab").expect("observe");
    assert_eq!(seen[0].pid, Some(pid), "a reload keeps the process");
    assert_eq!(seen[0].leases, two.leases_hash());
    if has_dig {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while dig("web-2.lab") != "10.77.0.3" {
            assert!(std::time::Instant::now() < deadline, "web-2 is not named");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    // The configuration changes (another gateway): a new dnsmasq.
    netns.cmd("ip", &["addr", "add", "10.77.0.254/24", "dev", "br0"]);
    let moved = files(state.path(), "10.77.0.254/24", &[lease("web-1", 2)]);
    dhcp::ensure(state.path(), "lab", ns, "front", &moved).expect("restarted");
    let restarted = dhcp::observe(state.path(), "lab").expect("observe")[0]
        .pid
        .expect("running");
    assert_ne!(restarted, pid);
    assert!(!alive(pid), "the old dnsmasq is gone");

    // It cannot start: no interface holds the address. dnsmasq's words say why.
    let nowhere = files(state.path(), "10.88.0.1/24", &[]);
    let err = dhcp::ensure(state.path(), "lab", ns, "front", &nowhere).unwrap_err();
    assert!(matches!(err, DhcpError::Start { .. }), "{err}");
    assert!(err.to_string().contains("10.88.0.1"), "{err}");
    assert!(!alive(restarted));
    let seen = dhcp::observe(state.path(), "lab").expect("observe");
    assert!(!seen[0].running);

    // A pid file naming a process that is not its dnsmasq: never signalled.
    let mut sleeper = Command::new("sleep").arg("30").spawn().expect("sleep");
    let dir = plan::dir(state.path(), "lab", "front");
    std::fs::write(dir.join(plan::PID_FILE), format!("{}\n", sleeper.id())).expect("pid");
    dhcp::delete(state.path(), "lab", "front").expect("deleted");
    assert!(sleeper.try_wait().expect("wait").is_none(), "not signalled");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(!dir.exists());
    assert!(dhcp::observe(state.path(), "lab")
        .expect("observe")
        .is_empty());
}
