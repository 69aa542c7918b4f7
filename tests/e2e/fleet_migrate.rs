//! Issue 14 on the fleet harness ([`crate::fleet`], set up as in
//! [`crate::fleet_apply`]): VMs moved between two hosts reached over ssh — a stopped
//! move with its disk, live migration (pre-copy, convergence, CPU features, the RARP
//! announcement, a disk written during the move), the three kills in the middle of a
//! move (controller, source VMM, target VMM), and `vmctl snapshot` on a remote host.

use std::path::PathBuf;

use serde_json::Value;

use crate::fleet::{self, Fleet};
use crate::fleet_apply::{console_of, hosts_with_pools, wait_console, write_at, FleetLab};
use crate::lab::text;
use crate::vm::guest;

/// Issue 14: a VM edited onto another host (its `host`, its disk's pool and its NIC's
/// VLAN) takes its disk's data along: its NIC's VLAN changes, which needs a restart, so
/// it is not migrated but stopped on host a, its volume copied through vmctl to host b
/// (only the data, not the holes), started on host b, and the volume removed from host
/// a after.
#[test]
fn a_vm_moved_to_another_host_takes_its_disk_along() {
    if fleet::skip() {
        return;
    }
    let lab = FleetLab::new();
    lab.ok(&["apply", "--auto-approve"]);
    assert!(lab.vmm_pid("host-a", "web-1").is_some(), "web-1 runs on a");

    // What the guest's disk holds on host a, beyond the part the guest touches.
    let pool = |host: &str| lab.fleet.dir.path().join(format!("pool-{host}"));
    let marker = b"vmctl moves this disk";
    write_at(&pool("a").join("web-1-root.raw"), 9 << 20, marker);

    let path = lab.config.join("fleet.kdl");
    let config = std::fs::read_to_string(&path).unwrap();
    let moved = config
        .replace(
            "volume \"web-1-root\" pool=\"pool-a\"",
            "volume \"web-1-root\" pool=\"pool-b\"",
        )
        .replace("vm \"web-1\" host=\"a\"", "vm \"web-1\" host=\"b\"")
        .replace("nic vlan=\"front-a\"", "nic vlan=\"front-b\"");
    assert_ne!(moved, config);
    std::fs::write(&path, moved).unwrap();

    assert_eq!(
        lab.planned(&[]),
        [
            "create vm.web-1@b",
            "delete vm.web-1@a",
            "migrate volume.web-1-root@b",
        ]
    );
    // Its NIC changes VLAN: a restart, so it moves stopped.
    let shown = lab.ok(&["plan"]);
    assert!(
        shown.contains(
            "by a delete and a create, not a migration: `nics` changes too, which needs a restart"
        ),
        "{shown}"
    );
    let applied = lab.ok(&["apply", "--auto-approve"]);
    assert!(
        applied.contains("Copied volume \"web-1-root\" from host \"a\" to host \"b\""),
        "{applied}"
    );

    // On b, whole and still sparse; gone from a; the VM runs on b only.
    let there = pool("b").join("web-1-root.raw");
    let bytes = std::fs::read(&there).expect("web-1's volume on b");
    assert_eq!(bytes.len(), 16 << 20);
    assert_eq!(&bytes[9 << 20..(9 << 20) + marker.len()], marker);
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(&there).unwrap().blocks() * 512;
    assert!(allocated < 8 << 20, "{allocated} bytes allocated");
    assert!(!pool("a").join("web-1-root.raw").exists());
    assert!(!pool("a").join("web-1-root.vmctl.json").exists());
    assert!(lab.vmm_pid("host-a", "web-1").is_none(), "web-1 left a");
    assert!(lab.vmm_pid("host-b", "web-1").is_some(), "web-1 runs on b");
    assert_eq!(lab.planned(&[]), Vec::<String>::new());

    lab.ok(&["destroy", "--auto-approve"]);
    assert!(!there.exists());
}

/// Issue 14: a running, counting guest moved from host a to host b by editing its
/// `host` (and its disk's pool) and applying: it is migrated — paused on a, its state,
/// memory and disk sent to b, resumed there — and counts on without a second boot, its
/// memory pattern intact, its disk's data along; nothing of it stays on a.
#[test]
fn a_running_vm_migrates_to_another_host_and_counts_on() {
    if fleet::skip() {
        return;
    }
    let lab = FleetLab::with(2, counting_lab);
    lab.ok(&["apply", "--auto-approve"]);
    let before = crate::guest_count::wait_counts(|| console_of(&lab, "host-a", "web-1"), 3);
    let booted = crate::guest_count::parse(&before);
    assert_eq!(booted.nonces.len(), 1, "{before}");
    let pages = booted.region_bytes / crate::guest_count::pattern::PAGE as u64;
    assert!(pages > 0, "{before}");
    let pool = |host: &str| lab.fleet.dir.path().join(format!("pool-{host}"));
    let marker = b"this disk moved with its guest";
    write_at(&pool("a").join("web-1-root.raw"), 9 << 20, marker);

    let path = lab.config.join("fleet.kdl");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        config
            .replace("pool=\"pool-a\" size", "pool=\"pool-b\" size")
            .replace("vm \"web-1\" host=\"a\"", "vm \"web-1\" host=\"b\""),
    )
    .unwrap();
    assert_eq!(
        lab.planned(&[]),
        ["migrate vm.web-1@b", "migrate volume.web-1-root@b"]
    );
    let counted_on_a = crate::guest_count::parse(&console_of(&lab, "host-a", "web-1"))
        .counts
        .len() as u64;
    // With --json: stdout is the run's report alone, the rest is on stderr.
    let out = lab.vmctl(&["apply", "--auto-approve", "--json"]);
    let applied = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = applied
        .lines()
        .find(|l| {
            l.starts_with(
                "Migrated VM \"web-1\" from host \"a\" to host \"b\" while it ran: paused",
            )
        })
        .unwrap_or_else(|| panic!("{applied}"));
    eprintln!("{said}");
    assert!(
        applied.contains("migrate vm.web-1: pre-copy round 1,"),
        "no progress line: {applied}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", text(&out)));
    assert_eq!(report["format_version"], "1.0");
    assert_eq!(report["complete"], true);
    let notes = report["notes"].as_array().expect("notes");
    let migrated = notes
        .iter()
        .find(|n| n["note"] == "vm-migrated")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(migrated["name"], "web-1");
    assert_eq!(migrated["from"], "a");
    assert_eq!(migrated["host"], "b");
    assert!(
        migrated["rounds"].as_u64().is_some_and(|r| r >= 1),
        "{migrated}"
    );
    assert!(
        migrated["pause-ms"].as_u64() <= migrated["total-ms"].as_u64(),
        "{migrated}"
    );

    // On b it goes on: no boot (no nonce, no verdict), counts after a's, sums right.
    assert!(lab.vmm_pid("host-a", "web-1").is_none(), "web-1 left a");
    assert!(lab.vmm_pid("host-b", "web-1").is_some(), "web-1 runs on b");
    let after = crate::guest_count::wait_counts(|| console_of(&lab, "host-b", "web-1"), 3);
    assert!(!after.contains("FAIL"), "{after}");
    assert!(
        !after.contains("testguest: ok"),
        "the guest booted again:\n{after}"
    );
    let moved = crate::guest_count::parse(&after);
    assert!(moved.nonces.is_empty(), "the guest booted again:\n{after}");
    let first = moved.counts.first().map_or(0, |c| c.0);
    assert!(
        first > counted_on_a.saturating_sub(1),
        "counts restart: {first} after {counted_on_a}\n{after}"
    );
    for (pair, next) in moved.counts.iter().zip(moved.counts.iter().skip(1)) {
        assert_eq!(next.0, pair.0 + 1, "{after}");
    }
    for (n, sum) in &moved.counts {
        let want = crate::guest_count::pattern::expected_sum(pages as usize, *n);
        assert_eq!(*sum, format!("{want:016x}"), "tick {n}:\n{after}");
    }
    // `vmctl console` shows it where it is now, through host b's agent.
    let out = lab
        .fleet
        .controller_command(env!("CARGO_BIN_EXE_vmctl"))
        .args(["console", "web-1"])
        .arg(&lab.config)
        .args(["--lines", "5"])
        .output()
        .expect("console runs");
    let shown = text(&out);
    assert!(
        out.status.success() && shown.contains("testguest: count="),
        "{shown}"
    );
    let bytes = std::fs::read(pool("b").join("web-1-root.raw")).expect("web-1's volume on b");
    assert_eq!(&bytes[9 << 20..(9 << 20) + marker.len()], marker);
    assert!(!pool("a").join("web-1-root.raw").exists());
    assert!(!lab.state("host-a").join("fleet/vms/web-1").exists());
    assert!(!lab.state("host-a").join("fleet/migrations").exists());
    assert!(!lab.state("host-b").join("fleet/migrations").exists());
    assert_eq!(lab.planned(&[]), Vec::<String>::new());
    // Nothing to do: still one document, complete, without steps.
    let out = lab.vmctl(&["apply", "--auto-approve", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", text(&out)));
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(
        report["steps"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );

    lab.ok(&["destroy", "--auto-approve"]);
}

/// Issue 14: a guest that writes faster than the move sends never fits its budget (here
/// `migration-downtime "1ms"`): the pre-copy rounds stop when they no longer shrink what
/// is left, and the move goes on with a longer pause — said in the apply's line and in
/// its `--json` report — and the guest counts on, its memory right.
#[test]
fn a_guest_that_does_not_converge_is_moved_with_a_longer_pause_said() {
    if fleet::skip() {
        return;
    }
    let lab = FleetLab::with(2, |fleet| {
        counting_lab(fleet).replace(
            "    cpus 1\n",
            "    cpus 1\n    migration-downtime \"1ms\"\n",
        )
    });
    counting_then_moved(&lab);
    let out = lab.vmctl(&["apply", "--auto-approve", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        said.contains("it did not converge (the guest wrote as fast as the move sent), so it paused longer than its 1 ms budget"),
        "{said}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", text(&out)));
    let migrated = report["notes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["note"] == "vm-migrated"))
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(migrated["converged"], false, "{migrated}");
    assert_eq!(migrated["budget-ms"], 1, "{migrated}");
    assert!(
        migrated["rounds"].as_u64().is_some_and(|r| r > 1),
        "a stalled pre-copy takes rounds to be found stalled: {migrated}"
    );
    let after = crate::guest_count::wait_counts(|| console_of(&lab, "host-b", "web-1"), 3);
    assert!(!after.contains("FAIL"), "{after}");
    assert!(
        crate::guest_count::parse(&after).nonces.is_empty(),
        "booted again:\n{after}"
    );
    lab.ok(&["destroy", "--auto-approve"]);
}

/// Issue 14: a host whose `cpuid-mask` hides a CPU feature the running guest has cannot
/// take it running: the plan moves it by a delete and a create (a restart), saying
/// which feature — refused at plan time, before anything is paused or copied.
#[test]
fn a_host_that_hides_a_feature_the_guest_has_gets_it_by_a_restart_not_a_migration() {
    if fleet::skip() {
        return;
    }
    let lab = FleetLab::with(2, |fleet| {
        counting_lab(fleet).replace(
            "host \"b\" {\n",
            "host \"b\" {\n    cpuid-mask \"x2apic\"\n",
        )
    });
    counting_then_moved(&lab);
    assert_eq!(
        lab.planned(&[]),
        [
            "create vm.web-1@b",
            "delete vm.web-1@a",
            "migrate volume.web-1-root@b"
        ]
    );
    let shown = lab.ok(&["plan"]);
    assert!(
        shown.contains("not a migration") && shown.contains("x2apic"),
        "{shown}"
    );
    // Nothing was paused or saved for it: it counts on on host a.
    assert!(!lab.state("host-a").join("fleet/migrations").exists());
    let counted = crate::guest_count::parse(&console_of(&lab, "host-a", "web-1"))
        .counts
        .len();
    crate::guest_count::wait_counts(|| console_of(&lab, "host-a", "web-1"), counted + 2);
    lab.ok(&["destroy", "--auto-approve"]);
}

/// Issue 14: `vmctl snapshot` on a VM of a host reached over ssh, through its agent:
/// taken while it counts, listed, shown by `status`, restored (it counts on from the
/// snapshot's tick, no boot), deleted.
#[test]
fn a_vm_on_a_remote_host_is_snapshotted_listed_restored_and_its_snapshot_deleted() {
    if fleet::skip() {
        return;
    }
    let lab = FleetLab::with(2, counting_lab);
    lab.ok(&["apply", "--auto-approve"]);
    crate::guest_count::wait_counts(|| console_of(&lab, "host-a", "web-1"), 2);
    let last_count = || {
        crate::guest_count::parse(&console_of(&lab, "host-a", "web-1"))
            .counts
            .last()
            .map_or(0, |c| c.0)
    };
    // The snapshot is taken between these two reads of the count.
    let before = last_count();
    let taken = lab.ok(&["snapshot", "create", "web-1", "s1"]);
    assert!(taken.contains("Snapshot s1 of VM web-1 taken"), "{taken}");
    let at = last_count();
    let snapshot = lab.state("host-a").join("fleet/vms/web-1/snapshots/s1");
    assert!(snapshot.join("snapshot.json").is_file(), "not on host a");

    let listed = lab.ok(&["snapshot", "list", "--json"]);
    let listed: serde_json::Value =
        serde_json::from_str(&listed[..listed.rfind('}').map_or(0, |e| e + 1)])
            .unwrap_or_else(|e| panic!("{e}: {listed}"));
    assert_eq!(listed["snapshots"][0]["name"], "s1", "{listed}");
    assert_eq!(listed["snapshots"][0]["vm"], "web-1", "{listed}");
    let status = lab.ok(&["status"]);
    assert!(
        status.contains("s1"),
        "status does not show the snapshot:\n{status}"
    );

    // Later ticks, then back to the snapshot: the count goes on from `at`.
    crate::guest_count::wait_counts(|| console_of(&lab, "host-a", "web-1"), at as usize + 5);
    let restored = lab.ok(&["snapshot", "restore", "web-1", "s1", "--auto-approve"]);
    assert!(restored.contains("restored from snapshot s1"), "{restored}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let after = loop {
        let console = console_of(&lab, "host-a", "web-1");
        let tail: Vec<u64> = crate::guest_count::parse(&console)
            .counts
            .iter()
            .map(|c| c.0)
            .collect();
        // The restored guest prints its counts again from the snapshot's tick on.
        if let Some(pos) = tail.windows(2).position(|w| w[1] <= w[0]) {
            break tail[pos + 1];
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no count from the snapshot:\n{console}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        before <= after && after <= at + 1,
        "restored at tick {after}, the snapshot was taken between ticks {before} and {at}"
    );
    let deleted = lab.ok(&["snapshot", "delete", "web-1", "s1"]);
    assert!(
        deleted.contains("Snapshot s1 of VM web-1 deleted"),
        "{deleted}"
    );
    assert!(!snapshot.exists());
    lab.ok(&["destroy", "--auto-approve"]);
}

/// Two hosts on one spanning VLAN with a pool each; web-1 counts on host a, on a disk.
fn counting_lab(fleet: &Fleet) -> String {
    let mut kdl = hosts_with_pools(fleet, &["a", "b"]);
    kdl.push_str(&format!(
        "network \"lan\" {{\n    hosts \"a\" \"b\"\n}}\nvlan \"front\" network=\"lan\" id=100\n\
         volume \"web-1-root\" pool=\"pool-a\" size=\"16MiB\"\n\
         vm \"web-1\" host=\"a\" {{\n    cpus 1\n    memory \"64MiB\"\n    kernel \"{kernel}\"\n    cmdline \"console=ttyS0 testguest.name=web-1 testguest.count\"\n    disk \"web-1-root\"\n    nic vlan=\"front\"\n}}\n",
        kernel = guest().display()
    ));
    kdl
}

/// Applies [`counting_lab`], waits for web-1 to count on host a, then edits it (and its
/// disk's pool) onto host b: the config's path and its text for a and for b.
fn counting_then_moved(lab: &FleetLab) -> (PathBuf, String, String) {
    lab.ok(&["apply", "--auto-approve"]);
    crate::guest_count::wait_counts(|| console_of(lab, "host-a", "web-1"), 2);
    web1_edited_onto_b(lab)
}

/// Edits web-1 (and its disk's pool) onto host b in the config: its path and its text
/// for a and for b.
fn web1_edited_onto_b(lab: &FleetLab) -> (PathBuf, String, String) {
    let path = lab.config.join("fleet.kdl");
    let on_a = std::fs::read_to_string(&path).unwrap();
    let on_b = on_a
        .replace("pool=\"pool-a\" size", "pool=\"pool-b\" size")
        .replace("vm \"web-1\" host=\"a\"", "vm \"web-1\" host=\"b\"");
    std::fs::write(&path, &on_b).unwrap();
    (path, on_a, on_b)
}

/// `vmctl apply` started with its migrations stalled `ms` once the guest is saved
/// (debug builds), returned when web-1's save is on host a.
fn stalled_apply(lab: &FleetLab, ms: u32) -> std::process::Child {
    let apply = lab
        .fleet
        .controller_command(env!("CARGO_BIN_EXE_vmctl"))
        .args(["--color", "never", "apply", "--auto-approve"])
        .arg(&lab.config)
        .env("VMCTL_TEST_MIGRATION_STALL_MS", ms.to_string())
        .env("TMPDIR", lab.fleet.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("apply starts");
    let saved = lab.state("host-a").join("fleet/migrations/web-1/out/state");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::metadata(&saved).map_or(true, |m| m.len() == 0) {
        assert!(std::time::Instant::now() < deadline, "the save never came");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    apply
}

/// Issue 14: the controller killed in the middle of a migration (the guest saved and
/// paused on host a, nothing started on b) leaves exactly one copy, paused; a plan that
/// keeps the VM on a resumes it there (it counts on, no boot), and the move, planned
/// again, completes.
#[test]
fn a_migration_whose_controller_is_killed_leaves_one_paused_copy_that_resumes() {
    if fleet::skip() {
        return;
    }
    let lab = FleetLab::with(2, counting_lab);
    let (path, on_a, on_b) = counting_then_moved(&lab);
    // The move stalls once the guest is saved (debug builds), and is killed there.
    let mut apply = stalled_apply(&lab, 20_000);
    // SAFETY: kill has no memory-safety preconditions; the child is this test's own
    // vmctl, not yet reaped.
    unsafe { libc::kill(apply.id() as i32, libc::SIGKILL) };
    let _ = apply.wait();

    // One copy: paused on a (it prints nothing), none on b.
    assert!(lab.vmm_pid("host-a", "web-1").is_some());
    assert!(lab.vmm_pid("host-b", "web-1").is_none());
    let counted = crate::guest_count::parse(&console_of(&lab, "host-a", "web-1"))
        .counts
        .len();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let still = crate::guest_count::parse(&console_of(&lab, "host-a", "web-1"))
        .counts
        .len();
    assert_eq!(counted, still, "the guest runs: it should be paused");

    // Kept on a: resumed in place.
    std::fs::write(&path, &on_a).unwrap();
    assert_eq!(lab.planned(&[]), ["update vm.web-1@a"]);
    let shown = lab.ok(&["plan"]);
    assert!(
        shown.contains("a move that did not finish left it paused"),
        "{shown}"
    );
    lab.ok(&["apply", "--auto-approve"]);
    crate::guest_count::wait_counts(|| console_of(&lab, "host-a", "web-1"), still + 2);
    let console = console_of(&lab, "host-a", "web-1");
    assert_eq!(
        crate::guest_count::parse(&console).nonces.len(),
        1,
        "{console}"
    );
    assert!(!console.contains("FAIL"), "{console}");
    assert!(!lab.state("host-a").join("fleet/migrations").exists());
    assert_eq!(lab.planned(&[]), Vec::<String>::new());

    // And moved after all.
    std::fs::write(&path, &on_b).unwrap();
    let applied = lab.ok(&["apply", "--auto-approve"]);
    assert!(applied.contains("Migrated VM \"web-1\""), "{applied}");
    assert!(lab.vmm_pid("host-a", "web-1").is_none());
    assert!(lab.vmm_pid("host-b", "web-1").is_some());
    crate::guest_count::wait_counts(|| console_of(&lab, "host-b", "web-1"), 2);
    lab.ok(&["destroy", "--auto-approve"]);
}

/// Issue 14: the new host's VMM killed right after it started the moving guest (before
/// the old host discards its paused copy): the move fails, the paused copy is resumed —
/// it counts on on host a, no boot — and nothing of it stays on host b; the plan still
/// says to move it, and the next apply does.
#[test]
fn a_migration_whose_target_vmm_is_killed_after_its_start_leaves_the_guest_running_where_it_was() {
    if fleet::skip() {
        return;
    }
    let lab = FleetLab::with(2, counting_lab);
    counting_then_moved(&lab);
    let apply = lab
        .fleet
        .controller_command(env!("CARGO_BIN_EXE_vmctl"))
        .args(["--color", "never", "apply", "--auto-approve"])
        .arg(&lab.config)
        .env("VMCTL_TEST_MIGRATION_STALL_STARTED_MS", "5000")
        .env("TMPDIR", lab.fleet.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("apply starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // Killed once its start is over: the guest counts on b (the apply is then in its
    // stall, before it would discard a's paused copy). A VMM killed during its start
    // fails the start instead — another path, which this test is not about.
    let target = loop {
        let counting = || {
            !crate::guest_count::parse(&console_of(&lab, "host-b", "web-1"))
                .counts
                .is_empty()
        };
        if let Some(pid) = lab.vmm_pid("host-b", "web-1").filter(|_| counting()) {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "web-1 never started on b"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // SAFETY: kill has no memory-safety preconditions; `target` is the VMM this test's
    // apply started on host b (its pid file and flock say so: vmm_pid).
    unsafe { libc::kill(target, libc::SIGKILL) };
    let out = apply.wait_with_output().expect("apply ends");
    let said = text(&out);
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("does not run on the new host"), "{said}");

    // One copy: on a, running and counting on from where it was.
    assert!(lab.vmm_pid("host-a", "web-1").is_some());
    assert!(lab.vmm_pid("host-b", "web-1").is_none());
    let counted = crate::guest_count::parse(&console_of(&lab, "host-a", "web-1"))
        .counts
        .len();
    let console =
        crate::guest_count::wait_counts(|| console_of(&lab, "host-a", "web-1"), counted + 2);
    assert_eq!(
        crate::guest_count::parse(&console).nonces.len(),
        1,
        "{console}"
    );
    assert!(!console.contains("FAIL"), "{console}");
    assert!(!lab.state("host-b").join("fleet/vms/web-1").exists());
    assert!(!lab.state("host-a").join("fleet/migrations").exists());
    assert!(!lab.state("host-b").join("fleet/migrations").exists());
    assert_eq!(
        lab.planned(&[]),
        ["migrate vm.web-1@b", "migrate volume.web-1-root@b"]
    );
    let applied = lab.ok(&["apply", "--auto-approve"]);
    assert!(applied.contains("Migrated VM \"web-1\""), "{applied}");
    assert!(lab.vmm_pid("host-a", "web-1").is_none());
    assert!(lab.vmm_pid("host-b", "web-1").is_some());
    lab.ok(&["destroy", "--auto-approve"]);
}

/// Issue 14: the source VMM killed in the middle of a migration, once it has saved the
/// guest: the move goes on from the save — the guest counts on, on host b, without a
/// second boot — and nothing of it stays on host a.
#[test]
fn a_migration_whose_source_vmm_is_killed_after_the_save_completes_from_it() {
    if fleet::skip() {
        return;
    }
    let lab = FleetLab::with(2, counting_lab);
    counting_then_moved(&lab);
    let source = lab.vmm_pid("host-a", "web-1").expect("web-1 runs on a");
    let apply = stalled_apply(&lab, 3000);
    // SAFETY: kill has no memory-safety preconditions; `source` is the VMM this test's
    // apply started (its pid file and flock say so: vmm_pid).
    unsafe { libc::kill(source, libc::SIGKILL) };
    let out = apply.wait_with_output().expect("apply ends");
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("Migrated VM \"web-1\""), "{said}");
    assert!(lab.vmm_pid("host-a", "web-1").is_none());
    assert!(lab.vmm_pid("host-b", "web-1").is_some());
    let after = crate::guest_count::wait_counts(|| console_of(&lab, "host-b", "web-1"), 2);
    assert!(
        crate::guest_count::parse(&after).nonces.is_empty(),
        "booted again:\n{after}"
    );
    assert!(!after.contains("FAIL"), "{after}");
    assert!(!lab.state("host-a").join("fleet/vms/web-1").exists());
    assert_eq!(lab.planned(&[]), Vec::<String>::new());
    lab.ok(&["destroy", "--auto-approve"]);
}

/// [`counting_lab`] with web-1 chatting while it counts (`testguest.chat`: its name
/// frame every tick, what it hears printed) and a chatting peer on host a on the same
/// spanning VLAN.
fn chatting_lab(fleet: &Fleet) -> String {
    let mut kdl = counting_lab(fleet).replace(
        "testguest.name=web-1 testguest.count",
        "testguest.name=web-1 testguest.count testguest.chat",
    );
    kdl.push_str(&format!(
        "vm \"peer\" host=\"a\" {{\n    cpus 1\n    memory \"64MiB\"\n    kernel \"{kernel}\"\n    cmdline \"console=ttyS0 testguest.name=peer testguest.count=1 testguest.chat\"\n    nic vlan=\"front\"\n}}\n",
        kernel = guest().display()
    ));
    kdl
}

/// The announcements (RARP requests a restored VMM sends) of `vm`'s first NIC, from
/// its VMM's `status` over its control socket on `host`.
fn nic_announcements(lab: &FleetLab, host: &str, vm: &str) -> u64 {
    use std::io::{BufRead, Write};
    let socket = lab
        .state(host)
        .join("fleet/vms")
        .join(vm)
        .join("control.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&socket)
        .unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let request = serde_json::json!({"v": vmctl_runtime::vmm::protocol::VERSION, "cmd": "status"});
    s.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    let status: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
    let nic = status["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["kind"] == "net"))
        .unwrap_or_else(|| panic!("no NIC in {status}"));
    nic["counters"]["device"]["announcements"]
        .as_u64()
        .unwrap_or_else(|| panic!("no announcements in {nic}"))
}

/// The interface through which `host`'s bridges learnt `mac` (`bridge fdb`), if any.
fn learnt_on(lab: &FleetLab, host: &str, mac: &str) -> Option<String> {
    let out = std::process::Command::new("bridge")
        .args(["-n", &lab.fleet.host(host).netns.name, "-j", "fdb", "show"])
        .output()
        .expect("bridge runs");
    assert!(out.status.success(), "bridge fdb show: {}", text(&out));
    let fdb: Value = serde_json::from_slice(&out.stdout).expect("fdb JSON");
    fdb.as_array()?
        .iter()
        .find(|e| e["mac"] == mac && e["master"].is_string())
        .and_then(|e| e["ifname"].as_str().map(str::to_owned))
}

/// Issue 14: a running guest migrated from host a to host b is announced on the
/// network from b (its restored VMM sends 3 RARP requests of its MAC out of its tap, as
/// QEMU does; its VMM on a, booted, sent none): the peer on host a hears them across
/// the VLAN's tunnel, host b's bridge has learnt the MAC on web-1's tap and host a's
/// on the tunnel when the apply returns, and the two guests go on hearing each other.
#[test]
fn a_migrated_guest_is_announced_and_still_heard_on_its_spanning_vlan() {
    if fleet::skip()
        || crate::support::skip_unless(crate::support::which("bridge").is_some(), "bridge")
    {
        return;
    }
    let lab = FleetLab::with(2, chatting_lab);
    lab.ok(&["apply", "--auto-approve"]);
    wait_console(&lab, "host-a", "web-1", "testguest: nic0 rx from=peer");
    wait_console(&lab, "host-a", "peer", "testguest: nic0 rx from=web-1");
    crate::guest_count::wait_counts(|| console_of(&lab, "host-a", "web-1"), 2);
    let booted = console_of(&lab, "host-a", "web-1");
    let mac = booted
        .lines()
        .find_map(|l| l.strip_prefix("testguest: nic0 mac="))
        .unwrap_or_else(|| panic!("web-1's MAC:\n{booted}"))
        .to_owned();
    assert!(!booted.contains("rarp"), "{booted}");
    assert_eq!(
        nic_announcements(&lab, "host-a", "web-1"),
        0,
        "a boot announces"
    );

    web1_edited_onto_b(&lab);
    assert_eq!(
        lab.planned(&[]),
        ["migrate vm.web-1@b", "migrate volume.web-1-root@b"]
    );
    let peer_before = console_of(&lab, "host-a", "peer").len();
    let applied = lab.ok(&["apply", "--auto-approve"]);
    assert!(applied.contains("Migrated VM \"web-1\""), "{applied}");
    let peer_at_apply = console_of(&lab, "host-a", "peer").len();

    // Learnt where it is now: on b, its tap; on a, the VLAN's tunnel.
    let spec: Value = serde_json::from_slice(
        &std::fs::read(lab.state("host-b").join("fleet/vms/web-1/vmm.json"))
            .expect("web-1's VMM spec on b"),
    )
    .expect("vmm.json");
    let tap = spec["devices"]["nics"][0]["tap"]
        .as_str()
        .expect("web-1's tap")
        .to_owned();
    assert_eq!(
        learnt_on(&lab, "host-b", &mac).as_deref(),
        Some(tap.as_str()),
        "host b's bridge has not learnt {mac} on {tap}"
    );
    let on_a = learnt_on(&lab, "host-a", &mac).unwrap_or_default();
    let vxlan = lab
        .fleet
        .host("host-a")
        .netns
        .ip(&["-o", "link", "show", "type", "vxlan"]);
    assert!(
        !on_a.is_empty() && vxlan.contains(&format!(": {on_a}:")),
        "host a learnt {mac} on {on_a:?}, not its tunnel:\n{vxlan}"
    );

    // The restored VMM announced 3 times (within 150 ms of its start); the peer on a
    // heard it from b.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while nic_announcements(&lab, "host-b", "web-1") < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than 3 announcements"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(nic_announcements(&lab, "host-b", "web-1"), 3);
    let heard = console_of(&lab, "host-a", "peer");
    let rarps = heard[peer_before..]
        .lines()
        .filter(|l| *l == format!("testguest: nic0 rarp mac={mac}"))
        .count();
    assert!(
        (1..=3).contains(&rarps),
        "{rarps} announcements heard:\n{heard}"
    );
    eprintln!("the peer heard {rarps} of 3 announcements");

    // The two go on hearing each other: web-1 (its console on b is all after the
    // move) hears the peer, the peer hears web-1 after the apply.
    wait_console(&lab, "host-b", "web-1", "testguest: nic0 rx from=peer");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let heard = console_of(&lab, "host-a", "peer");
        if heard[peer_at_apply..]
            .lines()
            .any(|l| l == "testguest: nic0 rx from=web-1")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the peer does not hear web-1 after the move:\n{heard}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let after = crate::guest_count::wait_counts(|| console_of(&lab, "host-b", "web-1"), 2);
    assert!(
        crate::guest_count::parse(&after).nonces.is_empty(),
        "{after}"
    );
    for (vm, host) in [("web-1", "host-b"), ("peer", "host-a")] {
        let console = console_of(&lab, host, vm);
        assert!(!console.contains("FAIL"), "{vm}:\n{console}");
    }
    lab.ok(&["destroy", "--auto-approve"]);
}

/// [`counting_lab`] with web-1 writing each tick's record into a ring of sectors on
/// its disk (`testguest.count-disk`, tests/guest/README.md) and a 1 ms
/// `migration-downtime`, which a guest rewriting 4 MiB every tick never fits: its
/// pre-copy goes on until it stalls (4 rounds or more after round 0), so it counts
/// on for a while after its disk was copied.
fn disk_counting_lab(fleet: &Fleet) -> String {
    counting_lab(fleet)
        .replace(
            "testguest.count\"",
            "testguest.count testguest.count-disk\"",
        )
        .replace(
            "    disk \"web-1-root\"\n",
            "    disk \"web-1-root\"\n    migration-downtime \"1ms\"\n",
        )
}

/// Issue 14: the blocks a guest writes to its disk while it migrates — after its disk
/// was copied to the new host, before its pause — are on the new host when it runs
/// there (`VolumeMove::resend` of the blocks the save reports written).
///
/// The guest writes tick `n`'s record into sector 64 + n % 16 of its disk, waits for
/// the write and a flush, then prints `count=<n>`. Right after the apply returns the
/// ring is read from web-1's volume on b. Why it cannot pass by luck, with `L` the
/// last count a's console showed when b's incoming memory file appeared, and `F` the
/// first count printed on b:
///
/// - b's memory file is begun only once the disk copy is done, and the console log
///   is written as the guest prints: tick L+1 printed after that moment, so tick L+2
///   wrote its sector after the copy read it. `F - 1 >= L + 2` is asserted: tick
///   F-1, the last printed on a (its write done before the pause), wrote after the
///   copy, and only a resend can bring it to b.
/// - on b the guest writes ticks F, F+1, …; with the ring's newest count below
///   `F - 1 + 16` (asserted), b has not yet rewritten tick F-1's sector. So that
///   sector holds F-1 exactly when the write made during the pre-copy arrived, and a
///   count a whole turn older (what the copy read) when it did not.
///
/// Checked to fail with `disk.resend(…)` left out of `copy_and_start`.
#[test]
fn the_blocks_a_guest_writes_while_it_migrates_are_on_its_new_host() {
    use crate::guest_count::{check_disk_ring, disk_ring, disk_ring_of, parse, wait_counts};
    if fleet::skip() {
        return;
    }
    let r = disk_ring::SECTORS;
    let lab = FleetLab::with(2, disk_counting_lab);
    lab.ok(&["apply", "--auto-approve"]);
    // A whole turn and more on a: every sector of the ring holds a count.
    let on_a = wait_counts(|| console_of(&lab, "host-a", "web-1"), r as usize + 2);
    assert!(
        on_a.contains("testguest: count disk sectors=64-79") && !on_a.contains("FAIL"),
        "{on_a}"
    );
    web1_edited_onto_b(&lab);

    // What a printed when the disk copy was over: b's incoming memory file is begun.
    let incoming = lab.state("host-b").join("fleet/migrations/web-1/in/memory");
    let console_a = lab.state("host-a").join("fleet/vms/web-1/console.log");
    let over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = {
        let over = over.clone();
        std::thread::spawn(move || {
            while !over.load(std::sync::atomic::Ordering::SeqCst) {
                if incoming.exists() {
                    let console = std::fs::read_to_string(&console_a).unwrap_or_default();
                    return parse(&console).counts.last().map(|c| c.0);
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            None
        })
    };
    let out = lab.vmctl(&["apply", "--auto-approve", "--json"]);
    let image = std::fs::read(lab.fleet.dir.path().join("pool-b/web-1-root.raw"));
    over.store(true, std::sync::atomic::Ordering::SeqCst);
    let at_copy = watch.join().expect("the watcher");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let image = image.expect("web-1's volume on b");
    let report: Value = serde_json::from_slice(&out.stdout).expect("the run's report");
    let migrated = report["notes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["note"] == "vm-migrated"))
        .unwrap_or_else(|| panic!("{report}"));
    eprintln!("{migrated}");

    let on_b = wait_counts(|| console_of(&lab, "host-b", "web-1"), 1);
    let first_on_b = parse(&on_b).counts[0].0;
    let last_on_a = first_on_b.saturating_sub(1);
    let ring = disk_ring_of(&image);
    let at_copy = at_copy.unwrap_or_else(|| {
        panic!("b's incoming memory never seen while web-1 ran on a: {migrated}")
    });
    assert!(
        last_on_a >= at_copy + 2,
        "web-1 printed {at_copy} when its disk copy was over and {last_on_a} last on a: \
         no tick wrote its disk between the copy and the pause ({migrated})"
    );
    let slot = ring[(last_on_a % r) as usize];
    assert_eq!(
        slot,
        disk_ring::Slot::Count {
            n: last_on_a,
            sector: disk_ring::sector_of(last_on_a)
        },
        "tick {last_on_a}, the last on a, wrote sector {} after the disk copy (which \
         a showed at {at_copy}); b's volume holds {slot:?} there: a block written during \
         the pre-copy was not sent again ({migrated}); the ring:\n{ring:#?}",
        disk_ring::sector_of(last_on_a)
    );
    let newest = check_disk_ring(&ring);
    eprintln!(
        "web-1 counted {at_copy} when its disk was copied, {last_on_a} when it paused; \
         its ring on b at {newest} when the apply returned"
    );
    assert!(
        newest < last_on_a + r,
        "b's guest rewrote the whole ring ({newest}) before it was read: inconclusive"
    );
    assert!(
        migrated["disk-paused-bytes"].as_u64() >= Some(64 << 10),
        "the ring's block was not sent during the pause: {migrated}"
    );

    // On b it counts on, its ring kept whole by the restored disk queue.
    let on_b = wait_counts(|| console_of(&lab, "host-b", "web-1"), r as usize + 2);
    assert!(!on_b.contains("FAIL"), "{on_b}");
    let printed = parse(&on_b).counts.last().map_or(0, |c| c.0);
    let volume = std::fs::read(lab.fleet.dir.path().join("pool-b/web-1-root.raw")).unwrap();
    assert!(check_disk_ring(&disk_ring_of(&volume)) >= printed);
    lab.ok(&["destroy", "--auto-approve"]);
}
