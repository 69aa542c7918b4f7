//! Snapshots through the binary (issue 14): `vmctl snapshot create|list|restore|delete`
//! on a counting test guest of the lab, and the VMM's own refusal of a snapshot whose
//! guest saw CPU features the restoring VM may not have.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::guest_count::{parse, pattern, wait_counts};
use crate::lab::{text, Lab};
use crate::vm::{skip, VM_TIMEOUT};

const MARKER: &[u8] = b"written to the volume after the snapshot";
const MARKER_AT: u64 = 1 << 20;

fn counting_lab() -> Lab {
    Lab::new(|vm| match vm {
        "web-2" => "console=ttyS0 testguest.name=web-2 testguest.count".to_string(),
        _ => format!("console=ttyS0 testguest.name={vm} testguest.halt"),
    })
}

/// The console of `vm` up to its last complete line (the guest may be writing one).
fn console(lab: &Lab, vm: &str) -> String {
    let mut text = lab.console(vm);
    let end = text.rfind('\n').map_or(0, |i| i + 1);
    text.truncate(end);
    text
}

/// The last count line's `n` of a console.
fn last_count(console: &str) -> u64 {
    parse(console).counts.last().map_or(0, |c| c.0)
}

fn volume(lab: &Lab, name: &str) -> PathBuf {
    std::fs::read_dir(lab.pool_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(name) && !n.ends_with(".json")
        })
        .unwrap_or_else(|| panic!("no volume {name} in {}", lab.pool_dir().display()))
}

fn bytes_at(path: &Path, at: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, at).unwrap();
    buf
}

fn vmctl_ok(lab: &Lab, args: &[&str]) -> String {
    let out = lab.vmctl(args);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "vmctl {args:?}:\n{t}");
    t
}

#[test]
fn a_restored_guest_counts_on_from_the_snapshot_with_the_snapshots_disk() {
    if crate::netns::skip() || skip() {
        return;
    }
    let lab = counting_lab();
    lab.apply();
    wait_counts(|| console(&lab, "web-2"), 3);

    let before = last_count(&console(&lab, "web-2"));
    let out = vmctl_ok(&lab, &["snapshot", "create", "web-2", "s1"]);
    let after = last_count(&console(&lab, "web-2"));
    assert!(out.contains("Snapshot s1 of VM web-2 taken"), "{out}");
    let snapdir = lab.vm_dir("web-2").join("snapshots/s1");
    for f in ["state", "memory", "disk-0.raw", "snapshot.json"] {
        assert!(
            snapdir.join(f).is_file(),
            "{f} missing in {}",
            snapdir.display()
        );
    }
    let listed = vmctl_ok(&lab, &["snapshot", "list", "web-2"]);
    assert!(listed.contains("s1"), "{listed}");
    let out = lab.vmctl(&["snapshot", "list", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list JSON");
    assert_eq!(json["format_version"], "1.0");
    assert_eq!(json["snapshots"][0]["name"], "s1");
    assert_eq!(json["snapshots"][0]["vm"], "web-2");
    assert_eq!(json["snapshots"][0]["complete"], true);
    assert_eq!(json["snapshots"][0]["memory"], 64u64 << 20);
    // It survives a new vmctl: the list is read from the host, and `show` names it.
    let shown = vmctl_ok(&lab, &["show"]);
    assert!(shown.contains("# snapshots: s1"), "{shown}");
    let status = vmctl_ok(&lab, &["status"]);
    assert!(status.contains("snapshots=s1"), "{status}");

    // The guest runs on; then the volume changes behind its back.
    wait_counts(|| console(&lab, "web-2"), after as usize + 5);
    let vol = volume(&lab, "web-2-root");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&vol).unwrap();
        f.write_all_at(MARKER, MARKER_AT).unwrap();
    }
    let console_before = console(&lab, "web-2");
    let counted = last_count(&console_before);
    let pid_before = lab.pid("web-2");

    let out = vmctl_ok(
        &lab,
        &["snapshot", "restore", "web-2", "s1", "--auto-approve"],
    );
    assert!(out.contains("restored from snapshot s1"), "{out}");
    assert_ne!(lab.pid("web-2"), pid_before, "a new VMM runs the VM");

    // The restored guest's lines: from the first count that goes back (the old VMM
    // may have printed a few more before it was stopped).
    let new_part = |console: &str| {
        let mut last = 0;
        let mut at = 0;
        for line in console.split_inclusive('\n') {
            if let Some(n) = line
                .strip_prefix("testguest: count=")
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
            {
                if n < last {
                    return console[at..].to_string();
                }
                last = n;
            }
            at += line.len();
        }
        String::new()
    };
    let deadline = Instant::now() + VM_TIMEOUT;
    let restored = loop {
        let part = new_part(&console(&lab, "web-2"));
        if parse(&part).counts.len() >= 5 {
            break part;
        }
        assert!(
            Instant::now() < deadline,
            "no counting after the restore:\n{part}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let c = parse(&restored);
    assert!(c.nonces.is_empty(), "the guest booted again:\n{restored}");
    assert!(!restored.contains("FAIL"), "{restored}");
    assert!(
        !restored.contains("testguest: ok"),
        "a second boot banner:\n{restored}"
    );
    let first = c.counts[0].0;
    assert!(
        first >= before && first <= after + 2,
        "the count resumes from the snapshot ({before}..={after}), not from {first}:\n{restored}"
    );
    assert!(first < counted, "the count went back ({first} < {counted})");
    let pages = (4usize << 20) / pattern::PAGE;
    for (i, (n, sum)) in c.counts.iter().enumerate() {
        assert_eq!(*n, first + i as u64, "counts go on one by one:\n{restored}");
        assert_eq!(
            *sum,
            format!("{:016x}", pattern::expected_sum(pages, *n)),
            "tick {n}"
        );
    }
    // One nonce in the whole log: the one of the only boot.
    assert_eq!(parse(&console(&lab, "web-2")).nonces.len(), 1);
    // The disk is the snapshot's: the marker written after it is gone.
    assert_eq!(
        bytes_at(&vol, MARKER_AT, MARKER.len()),
        bytes_at(&snapdir.join("disk-0.raw"), MARKER_AT, MARKER.len())
    );
    assert_ne!(bytes_at(&vol, MARKER_AT, MARKER.len()), MARKER);

    // A plan after the restore has nothing to do for it.
    let planned = lab.planned();
    assert!(!planned.iter().any(|p| p.contains("web-2")), "{planned:?}");

    let out = vmctl_ok(&lab, &["snapshot", "delete", "web-2", "s1"]);
    assert!(out.contains("deleted"), "{out}");
    assert!(!snapdir.exists());
    let out = lab.vmctl(&["snapshot", "restore", "web-2", "s1", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("vmctl::snapshot::not_found"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_restore_where_the_guests_cpu_features_are_hidden_is_refused_and_the_vm_runs_on() {
    if crate::netns::skip() || skip() {
        return;
    }
    let lab = counting_lab();
    lab.apply();
    wait_counts(|| console(&lab, "web-2"), 2);
    // While another vmctl holds the host's lock, nothing is done.
    {
        use std::os::fd::AsRawFd;
        let lock = std::fs::File::open(lab.state_dir().join("lab/lock")).unwrap();
        // SAFETY: flock on a valid fd we own; the lock goes when it is closed.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let out = lab.vmctl(&["snapshot", "create", "web-2", "s1"]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(t.contains("vmctl::snapshot::locked"), "{t}");
        assert!(!lab.vm_dir("web-2").join("snapshots/s1").exists());
    }
    vmctl_ok(&lab, &["snapshot", "create", "web-2", "s1"]);
    // The VM as it would be on a host without x2APIC (which KVM always offers, so the
    // guest saw it): the host's `cpuid-mask` hides it from the VMs it starts, and a
    // restore is a start.
    lab.edit("lab.kdl", |text| {
        text.replacen(
            "host \"local\" {\n",
            "host \"local\" {\n    cpuid-mask \"x2apic\"\n",
            1,
        )
    });
    let spec = lab.vm_dir("web-2").join("vmm.json");
    let spec_before = std::fs::read_to_string(&spec).unwrap();
    let pid = lab.pid("web-2");
    let counted = last_count(&console(&lab, "web-2"));

    let out = lab.vmctl(&["snapshot", "restore", "web-2", "s1", "--auto-approve"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("vmctl::snapshot::refused"), "{t}");
    assert!(t.contains("x2apic"), "{t}");
    assert!(t.contains("the VM was left as it is"), "{t}");
    // Refused before anything was stopped: the same VMM counts on, its spec unchanged.
    assert_eq!(lab.pid("web-2"), pid);
    wait_counts(|| console(&lab, "web-2"), counted as usize + 2);
    assert_eq!(std::fs::read_to_string(&spec).unwrap(), spec_before);
}

#[test]
fn the_engine_refuses_a_snapshot_of_another_vm_shape_or_a_damaged_one() {
    use crate::support::vmctl;
    use crate::vm::Detached;
    use vmctl_runtime::vmm::protocol::{Reply, Response};
    use vmctl_runtime::vms::snapshots::request_snapshot;
    use vmctl_runtime::vms::VmPaths;
    if skip() {
        return;
    }
    let vm = Detached::start(1, "console=ttyS0 testguest.count");
    wait_counts(|| vm.console(), 2);
    let dir = vm.path("snap");
    std::fs::create_dir(&dir).unwrap();
    let create = |name: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join(name))
            .unwrap()
    };
    let (state, memory) = (create("state"), create("memory"));
    let paths = VmPaths::in_dir(vm.dir.path().to_path_buf());
    match request_snapshot(&paths, &state, &memory, true, false) {
        Some(Reply::Current(Response::Snapshot { memory_bytes, .. })) => {
            assert_eq!(memory_bytes, 128 << 20)
        }
        other => panic!("{other:?}"),
    }
    vm.connect().request(serde_json::json!({"cmd": "kill"}));
    vm.assert_exits();

    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vm.path("spec.json")).unwrap()).unwrap();
    let restore = |spec: &serde_json::Value, snapshot: &Path| {
        let path = vm.path("restore.json");
        std::fs::write(&path, spec.to_string()).unwrap();
        let out = vmctl()
            .args(["--color", "never", "vmm", "--spec"])
            .arg(&path)
            .arg("--restore")
            .arg(snapshot)
            .arg("--foreground")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        text(&out)
    };
    let mut bigger = spec.clone();
    bigger["memory"] = "256MiB".into();
    let t = restore(&bigger, &dir);
    assert!(t.contains("vmctl::vmm::snapshot_mismatch"), "{t}");
    assert!(
        t.contains("the snapshot has 134217728 bytes of memory"),
        "{t}"
    );

    let mut masked = spec.clone();
    masked["cpuid_mask"] = serde_json::json!(["x2apic"]);
    let t = restore(&masked, &dir);
    assert!(t.contains("vmctl::vmm::snapshot_cpu"), "{t}");
    assert!(t.contains("x2apic"), "{t}");

    let damaged = vm.path("damaged");
    std::fs::create_dir(&damaged).unwrap();
    let mut bytes = std::fs::read(dir.join("state")).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x20;
    std::fs::write(damaged.join("state"), bytes).unwrap();
    std::fs::copy(dir.join("memory"), damaged.join("memory")).unwrap();
    let t = restore(&spec, &damaged);
    assert!(t.contains("checksum does not match"), "{t}");
}

#[test]
fn a_snapshot_of_no_vm_is_refused_with_a_diagnostic_before_any_host_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    // The host is never reached (192.0.2.1 is TEST-NET-1): the VM is unknown first.
    std::fs::write(
        dir.path().join("main.kdl"),
        "project \"p\"\nhost \"far\" {\n    ssh \"root@192.0.2.1\"\n}\nvm \"v\" host=\"far\" {\n    kernel \"vmlinux\"\n    cpus 1\n    memory \"64MiB\"\n}\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = crate::support::vmctl()
            .args(["--color", "never", "snapshot"])
            .args(args)
            .arg(dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (out.status.code(), text(&out))
    };
    for args in [
        &["restore", "w", "s1", "--auto-approve"][..],
        &["create", "w", "s1"],
        &["delete", "w", "s1"],
    ] {
        let (code, t) = run(args);
        assert_eq!(code, Some(1), "{t}");
        assert!(t.contains("vmctl::snapshot::unknown_vm"), "{t}");
        assert!(t.contains("`v`"), "{t}");
    }
}
