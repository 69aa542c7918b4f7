//! virtio disks and NICs end to end, with the test guest (tests/guest) as the driver:
//!
//! - a marker one boot writes to a disk is read back by the next boot of the same file;
//!   a read-only disk refuses the write and its file stays byte-for-byte the same;
//! - three guests on VLAN-isolated taps: A and B (VLAN 10) hear each other, C (VLAN 20)
//!   hears neither and is heard by neither;
//! - a guest that attacks its disk's queue (`testguest.hostile`): the VMM survives,
//!   serves the guest's well-formed requests afterwards, and `status` counts the bad
//!   ones.
//!
//! They need root and /dev/kvm; the network test also a network namespace, which it
//! makes and removes (nothing touches the machine's own namespace). Every process is
//! killed by pid, every namespace deleted, every file removed, also when a test fails.

use std::process::Command;

use serde_json::{json, Value};

use crate::support;
use crate::vm::{assert_guest_ok, assert_line, guest, skip, vmm_run, Detached, Run, Running};

/// The first 16 bytes of a 512-byte sector holding `text`, as the guest prints them.
fn sector_hex(text: &[u8]) -> String {
    let mut bytes = [0u8; 16];
    let n = text.len().min(16);
    bytes[..n].copy_from_slice(&text[..n]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A raw disk of `sectors` sectors whose sector 0 starts with `label`.
fn make_disk(path: &std::path::Path, label: &[u8], sectors: usize) {
    let mut data = vec![0u8; 512 * sectors];
    data[..label.len()].copy_from_slice(label);
    // Recognisable bytes past the first two sectors, to see they are left alone.
    for (i, b) in data.iter_mut().enumerate().skip(1024) {
        *b = (i % 251) as u8;
    }
    std::fs::write(path, data).unwrap();
}

/// Boots the test guest with `switches` on its command line and `disks` (`--disk`
/// arguments, in order).
fn boot(switches: &str, disks: &[&str]) -> Run {
    let cmdline = format!("console=ttyS0 {switches}");
    let mut args = vec!["--kernel", guest().to_str().unwrap(), "--memory", "64MiB"];
    args.extend(["--cmdline", &cmdline]);
    for disk in disks {
        args.extend(["--disk", disk]);
    }
    vmm_run(&args)
}

#[test]
fn disk_marker_survives_a_reboot_and_read_only_disks_refuse_writes() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    let other = dir.path().join("other.raw");
    make_disk(&disk, b"vmctl-disk-zero", 64);
    make_disk(&other, b"second-disk", 8);
    let disk_arg = disk.to_str().unwrap();

    // Boot 1 writes the marker.
    let run = boot("testguest.write=marker-one", &[disk_arg]);
    assert_guest_ok(&run);
    let expect = |run: &Run, disk: u32, what: &str, text: &[u8]| {
        assert_line(
            &run.stdout,
            &format!("testguest: disk{disk} {what}={}", sector_hex(text)),
        )
    };
    expect(&run, 0, "sector0", b"vmctl-disk-zero");
    assert_line(&run.stdout, "testguest: disk0 wrote");
    expect(&run, 0, "sector1", b"marker-one");
    assert!(
        run.stdout.contains("virtio_mmio.device=4K@0xd0000000:5"),
        "{}",
        run.stdout
    );

    // Boot 2 reads it back without writing.
    let run = boot("", &[disk_arg]);
    assert_guest_ok(&run);
    expect(&run, 0, "sector1", b"marker-one");
    assert!(!run.stdout.contains("wrote"), "{}", run.stdout);

    // Boot 3: the same disk read-only (disk 0) refuses the write; a second, writable
    // disk (disk 1: disks are numbered in the order given) takes it.
    let before = std::fs::read(&disk).unwrap();
    let ro = format!("{disk_arg},ro");
    let run = boot(
        "testguest.write=marker-two",
        &[&ro, other.to_str().unwrap()],
    );
    assert_guest_ok(&run);
    assert_line(&run.stdout, "testguest: disk0 write refused");
    expect(&run, 0, "sector1", b"marker-one");
    assert_line(&run.stdout, "testguest: disk1 wrote");
    expect(&run, 1, "sector0", b"second-disk");
    expect(&run, 1, "sector1", b"marker-two");
    assert!(
        run.stdout
            .contains("virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"),
        "{}",
        run.stdout
    );
    assert!(
        std::fs::read(&disk).unwrap() == before,
        "the read-only disk file changed"
    );
    let other_data = std::fs::read(&other).unwrap();
    assert_eq!(&other_data[512..522], b"marker-two");
}

#[test]
fn bad_disks_and_macs_give_clear_errors() {
    // Refused before KVM is touched: no root or /dev/kvm needed.
    let kernel = "/proc/self/exe";
    let run = vmm_run(&["--kernel", kernel, "--disk", "/nonexistent/disk.raw"]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("disk /nonexistent/disk.raw"),
        "{}",
        run.stderr
    );
    let run = vmm_run(&["--kernel", kernel, "--nic", "tap0,mac=01:00:5e:00:00:01"]);
    // A usage error, which exits 1 like every error (2 is only "changes present").
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("multicast"), "{}", run.stderr);

    // The same through a spec.
    let dir = tempfile::tempdir().unwrap();
    let spec_run = |devices: Value| {
        let path = dir.path().join("spec.json");
        let spec = json!({"kernel": kernel, "devices": devices});
        std::fs::write(&path, spec.to_string()).unwrap();
        let out = crate::support::vmctl()
            .args(["vmm", "--foreground", "--spec"])
            .arg(&path)
            .output()
            .unwrap();
        // miette wraps long messages: compare with the line breaks and rules removed.
        let err = String::from_utf8_lossy(&out.stderr).replace('│', " ");
        let err = err.split_whitespace().collect::<Vec<_>>().join(" ");
        (out.status.code(), err)
    };
    let (code, err) = spec_run(json!({"disks": [{"path": "/nonexistent/d.raw"}]}));
    assert_eq!(code, Some(1));
    assert!(err.contains("disk /nonexistent/d.raw"), "{err}");
    let (code, err) = spec_run(json!({"nics": [{"tap": "t0", "mac": "52:54:00"}]}));
    assert_eq!(code, Some(1));
    assert!(err.contains("invalid MAC address `52:54:00`"), "{err}");
    let (code, err) = spec_run(json!({"nics": [{"tap": "t0"}, {"tap": "t0"}]}));
    assert_eq!(code, Some(1));
    assert!(err.contains("tap t0 is used by two NICs"), "{err}");
}

/// A network namespace for one test, deleted (with every bridge and tap in it) when
/// dropped — also when the test fails. Named `vmctl-e2e-<pid>-<n>`.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Self {
        let name = crate::support::netns_name();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name} failed");
        Self { name }
    }

    /// Runs `ip -n <netns> ARGS`; whether it succeeded (stderr kept for failures).
    fn try_ip(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn ip(&self, args: &[&str]) {
        if let Err(e) = self.try_ip(args) {
            panic!("ip -n {} {args:?}: {e}", self.name);
        }
    }

    fn bridge(&self, args: &[&str]) {
        let ok = Command::new("bridge")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "bridge -n {} {args:?} failed", self.name);
    }

    /// A tap (with a virtio net header, as the VMM opens it), up.
    fn tap(&self, name: &str) {
        self.ip(&["tuntap", "add", "dev", name, "mode", "tap", "vnet_hdr"]);
        self.ip(&["link", "set", name, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its bridges and taps (the VMMs holding the
        // taps are killed before: their guards drop first).
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// How the test separated the VLANs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VlanMode {
    /// One bridge with `vlan_filtering 1`, each tap an untagged PVID member of its VLAN.
    Filtering,
    /// A bridge per VLAN (kernels without CONFIG_BRIDGE_VLAN_FILTERING), as vmctl's host
    /// runtime does there (`VlanMode::BridgePerVlan`).
    BridgePerVlan,
}

/// Puts `taps` (name, VLAN) on VLAN-isolated bridges in `ns`: a VLAN-filtering bridge
/// when the kernel has it, else one bridge per VLAN.
fn vlan_bridges(ns: &Netns, taps: &[(&str, u16)]) -> VlanMode {
    let filtering = ns
        .try_ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "vlan_filtering",
            "1",
            "vlan_default_pvid",
            "0",
        ])
        .is_ok();
    if filtering {
        ns.ip(&["link", "set", "br0", "up"]);
        for &(tap, vlan) in taps {
            ns.tap(tap);
            ns.ip(&["link", "set", tap, "master", "br0"]);
            let vid = vlan.to_string();
            ns.bridge(&["vlan", "add", "dev", tap, "vid", &vid, "pvid", "untagged"]);
        }
        return VlanMode::Filtering;
    }
    let _ = ns.try_ip(&["link", "del", "br0"]);
    for &(tap, vlan) in taps {
        let br = format!("br{vlan}");
        if ns.try_ip(&["link", "show", &br]).is_err() {
            ns.ip(&["link", "add", &br, "type", "bridge"]);
            ns.ip(&["link", "set", &br, "up"]);
        }
        ns.tap(tap);
        ns.ip(&["link", "set", tap, "master", &br]);
    }
    VlanMode::BridgePerVlan
}

#[test]
fn a_missing_tap_is_refused() {
    if skip() {
        return;
    }
    let ns = Netns::new();
    let run = Running::start(
        Some(&ns.name),
        &["--kernel", guest().to_str().unwrap(), "--nic", "tapnone"],
    )
    .wait();
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("tap tapnone does not exist"),
        "{}",
        run.stderr
    );
    assert!(
        ns.try_ip(&["link", "show", "tapnone"]).is_err(),
        "tap created"
    );
}

fn rx_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.contains(" rx from=")).collect()
}

#[test]
fn vlan_isolation_between_three_guests() {
    if skip()
        || support::skip_unless(
            Command::new("ip").args(["netns", "help"]).output().is_ok(),
            "the `ip` command (iproute2)",
        )
    {
        return;
    }
    let kernel = guest().to_str().unwrap();
    let ns = Netns::new();
    let mode = vlan_bridges(&ns, &[("tapA", 10), ("tapB", 10), ("tapC", 20)]);
    eprintln!("vlan isolation: {mode:?} (network namespace {})", ns.name);

    // Started together; each guest resends every 300 ms for 3 s, so the windows overlap
    // even if one starts a second late.
    let guests: Vec<(&str, Running)> = [("A", "tapA"), ("B", "tapB"), ("C", "tapC")]
        .into_iter()
        .map(|(name, tap)| {
            let cmdline = format!("console=ttyS0 testguest.name={name} testguest.listen=3000");
            let run = Running::start(
                Some(&ns.name),
                &[
                    "--kernel",
                    kernel,
                    "--memory",
                    "32MiB",
                    "--cmdline",
                    &cmdline,
                    "--nic",
                    tap,
                ],
            );
            (name, run)
        })
        .collect();
    let outs: Vec<(&str, String)> = guests
        .into_iter()
        .map(|(name, running)| {
            let run = running.wait();
            assert_guest_ok(&run);
            (name, run.stdout)
        })
        .collect();
    let out = |n: &str| -> &str {
        outs.iter()
            .find(|(name, _)| *name == n)
            .map(|(_, o)| o.as_str())
            .unwrap_or_default()
    };
    let all = || {
        format!(
            "mode {mode:?}\nA:\n{}\nB:\n{}\nC:\n{}",
            out("A"),
            out("B"),
            out("C")
        )
    };

    assert_eq!(
        rx_lines(out("A")),
        ["testguest: nic0 rx from=B"],
        "{}",
        all()
    );
    assert_eq!(
        rx_lines(out("B")),
        ["testguest: nic0 rx from=A"],
        "{}",
        all()
    );
    assert!(rx_lines(out("C")).is_empty(), "{}", all());
    let mac = |tap: &str| vmctl_runtime::vmm::spec::Mac::derived(tap).to_string();
    assert_line(out("A"), &format!("testguest: nic0 mac={}", mac("tapA")));
    assert_line(out("C"), &format!("testguest: nic0 mac={}", mac("tapC")));
}

/// Sums counter `name` over the transport and device counters of `dev`.
fn counter(dev: &Value, group: &str, name: &str) -> u64 {
    dev["counters"][group][name].as_u64().unwrap_or(0)
}

#[test]
fn hostile_queue_is_survived_served_and_counted() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    make_disk(&disk, b"still-serving", 16);
    let before = std::fs::read(&disk).unwrap();
    let vm = Detached::start_with(json!({
        "cmdline": "console=ttyS0 testguest.hostile testguest.halt",
        "devices": {"disks": [{"path": disk}]},
    }));
    vm.wait_console("testguest: ok");
    let console = vm.console();
    assert_line(&console, "testguest: disk0 hostile done");
    // The well-formed read after the attack was served.
    assert_line(
        &console,
        &format!("testguest: disk0 sector0={}", sector_hex(b"still-serving")),
    );
    assert!(!console.contains("FAIL"), "{console}");

    let status = vm.connect().request(json!({"cmd": "status"}));
    assert_eq!(status["state"], "running", "{status}");
    let dev = &status["devices"][0];
    assert_eq!(dev["kind"], "blk", "{status}");
    assert_eq!(dev["gsi"], 5, "{status}");
    assert_eq!(dev["mmio_base"], "0xd0000000", "{status}");
    // What the guest did wrong, one counter each (see tests/guest/src/hostile.rs).
    let t = |n| counter(dev, "transport", n);
    let d = |n| counter(dev, "device", n);
    assert_eq!(t("bad_accesses"), 2, "short and misaligned reads: {dev}");
    assert_eq!(
        t("bad_queue_config"),
        3,
        "queue size 0 and 3, readying it: {dev}"
    );
    assert_eq!(
        t("queue_config_after_ready"),
        2,
        "QueueNum and QueueReady after DRIVER_OK: {dev}"
    );
    assert_eq!(t("bad_notifies"), 1, "notify of a missing queue: {dev}");
    assert_eq!(d("bad_chains"), 3, "head-only, outside memory, loop: {dev}");
    assert_eq!(d("invalid_avail_idx"), 1, "avail idx far ahead: {dev}");
    assert_eq!(d("requests"), 2, "the two good reads: {dev}");
    assert_eq!(dev["bad_requests"], 12, "{dev}");

    let reply = vm.connect().request(json!({"cmd": "kill"}));
    assert_eq!(reply["reply"], "state", "{reply}");
    vm.assert_exits();
    assert!(
        std::fs::read(&disk).unwrap() == before,
        "the hostile guest changed the disk"
    );
}
