//! Network namespaces for the root networking tests: each test makes its own
//! (`vmctl-test-<pid>-<n>`) and drops it, failure included; nothing touches the machine's
//! own namespace. Without root, `/dev/net/tun` or iproute2 the tests skip with a message
//! — except under `CI`, where skipping is a failure.
#![allow(dead_code)] // each test binary uses part of it

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

/// Whether this process can run the tests; panics under `CI` when it cannot.
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tun = std::path::Path::new("/dev/net/tun").exists();
    let ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if root && tun && ip {
        return true;
    }
    let why = format!("needs root, /dev/net/tun and iproute2 (root: {root}, tun: {tun}, ip: {ip})");
    if std::env::var_os("CI").is_some() {
        panic!("{why}; CI must run these tests");
    }
    eprintln!("SKIPPED root networking test: {why}");
    false
}

/// A network namespace for one test, deleted on drop (also when the test panics).
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new() -> TestNetns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "vmctl-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]);
        TestNetns { name }
    }

    pub fn name(&self) -> Option<&str> {
        Some(&self.name)
    }

    /// Runs `ip`/`bridge` with `-n <netns>`, for fixtures and independent checks.
    pub fn cmd(&self, tool: &str, args: &[&str]) -> String {
        let mut full = vec![tool, "-n", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// The names of all interfaces in the namespace.
    pub fn ifnames(&self) -> Vec<String> {
        let links: Value = serde_json::from_str(&self.cmd("ip", &["-j", "link", "show"])).unwrap();
        let mut names: Vec<String> = links
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }

    /// `bridge vlan show dev <dev>` as (vid, pvid, untagged) triples.
    pub fn vlans_of(&self, dev: &str) -> Vec<(u64, bool, bool)> {
        let out = self.cmd("bridge", &["-j", "vlan", "show", "dev", dev]);
        let parsed: Value =
            serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).unwrap();
        let mut vlans = Vec::new();
        for entry in parsed.as_array().unwrap() {
            for vlan in entry["vlans"].as_array().into_iter().flatten() {
                let flags: Vec<&str> = vlan["flags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.as_str())
                    .collect();
                vlans.push((
                    vlan["vlan"].as_u64().unwrap(),
                    flags.contains(&"PVID"),
                    flags.contains(&"Egress Untagged"),
                ));
            }
        }
        vlans
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
