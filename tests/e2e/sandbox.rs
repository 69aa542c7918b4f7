//! The VMM's sandbox (issue 12), so far its seccomp filters: every thread of every VMM
//! is filtered, by kind, and a thread that makes a call outside its filter kills the
//! VMM with SIGSYS. docs/seccomp.md says what each kind may do.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::lab::{Lab, VMS};
use crate::support::vmctl;
use crate::vm::{guest, skip, KillOnDrop, VM_TIMEOUT};

/// The kind of a VMM thread by its name (`comm`), as the VMM names them. KVM's own
/// worker in the process (`kvm-nx-lpage-recovery`, run by the kernel, never in user
/// space) is the kernel's.
fn kind_of(comm: &str) -> Option<&'static str> {
    match comm {
        c if c.starts_with("kvm-") => Some("kernel"),
        "vmctl" => Some("main"),
        "virtio" => Some("device"),
        "control" | "console" | "signals" => Some("control"),
        c if c
            .strip_prefix("vcpu")
            .is_some_and(|n| n.parse::<u32>().is_ok()) =>
        {
            Some("vcpu")
        }
        _ => None,
    }
}

/// Each thread of `pid`: its name and the `Seccomp` and `Seccomp_filters` lines of
/// its status.
fn threads(pid: i32) -> Vec<(String, String, String)> {
    let field = |status: &str, name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .map(|t| {
                    let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                    let status =
                        std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
                    (
                        comm.trim().to_owned(),
                        field(&status, "Seccomp:"),
                        field(&status, "Seccomp_filters:"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_vmm_thread_is_filtered_and_named_by_kind() {
    if skip() {
        return;
    }
    let lab = Lab::new(|vm| format!("console=ttyS0 testguest.name={vm} testguest.halt"));
    lab.apply();
    for vm in VMS {
        let pid = lab.pid(vm).unwrap_or_else(|| panic!("{vm} does not run"));
        // The main thread confines itself just after the VMM reported that it started.
        let deadline = Instant::now() + Duration::from_secs(10);
        let threads = loop {
            let threads = threads(pid);
            let all = threads.iter().all(|(_, mode, _)| mode == "2");
            if all || Instant::now() > deadline {
                break threads;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut kinds = std::collections::BTreeSet::new();
        for (comm, mode, filters) in &threads {
            let kind = kind_of(comm)
                .unwrap_or_else(|| panic!("{vm}: thread {comm} is of no kind: {threads:?}"));
            kinds.insert(kind);
            assert_eq!(
                mode, "2",
                "{vm}: thread {comm} is not filtered: {threads:?}"
            );
            // Its own filter only: none inherited from the thread that started it.
            assert_eq!(filters, "1", "{vm}: thread {comm}: {threads:?}");
        }
        kinds.remove("kernel");
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            ["control", "device", "main", "vcpu"].as_slice(),
            "{vm}: {threads:?}"
        );
    }
}

/// With `VMCTL_VMM_TEST_PROBE=<kind>` (debug builds), a thread of that kind calls
/// `socket(AF_INET)` once it is confined: for each kind, the VMM dies by SIGSYS
/// before the guest says anything more than the probe lets it.
#[test]
fn a_thread_outside_its_filter_kills_the_vmm_by_sigsys() {
    if skip() {
        return;
    }
    if !cfg!(debug_assertions) {
        // The probe is compiled into debug builds only (as vmctl is built with the
        // tests, it is one too).
        eprintln!("SKIPPED: the seccomp probe is in debug builds only");
        return;
    }
    for kind in ["vcpu", "device", "control", "main"] {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.raw");
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let spec = json!({
            "kernel": guest(),
            "memory": "64MiB",
            "cmdline": "console=ttyS0 testguest.halt",
            "console_log": dir.path().join("console.log"),
            "control_socket": dir.path().join("control.sock"),
            "devices": {"disks": [{"path": disk}]},
        });
        let spec_path = dir.path().join("spec.json");
        std::fs::write(&spec_path, spec.to_string()).unwrap();
        let mut child = vmctl()
            .args(["vmm", "--foreground", "--spec"])
            .arg(&spec_path)
            .env("VMCTL_VMM_TEST_PROBE", kind)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _guard = KillOnDrop {
            pid: child.id() as i32,
        };
        let deadline = Instant::now() + VM_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{kind}: the probed VMM did not end"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{kind}: {status:?}");
        // And without the probe the same VM runs (it is not the spec that kills it).
        if kind == "main" {
            let mut child = Command::new(env!("CARGO_BIN_EXE_vmctl"))
                .args(["vmm", "--foreground", "--spec"])
                .arg(&spec_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let guard = KillOnDrop {
                pid: child.id() as i32,
            };
            std::thread::sleep(Duration::from_millis(500));
            assert!(
                child.try_wait().unwrap().is_none(),
                "the VMM ended unprobed"
            );
            drop(guard);
        }
    }
}
