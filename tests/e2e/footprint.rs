//! The engine's footprint: the peak RSS of a VMM booting the test guest with 128 MiB
//! stays under a bound (issue 16; bench/boot.md has the breakdown).
//!
//! What is measured: the release build the figures in README and bench/boot.md are of,
//! the static-pie binary `bench/build-static` builds (and prints). The debug binary the
//! other e2e tests drive is not measured: its peak is mostly the mapped pages of a
//! 130 MiB unoptimized binary (~11 MiB), which says nothing of the release VMM. Cargo
//! builds it here like any other build (a no-op when it is fresh; a full release
//! build the first time). The peak is the VMM process's own `ru_maxrss` from `wait4`
//! (as `/usr/bin/time -f %M` reports it), the same command as bench/boot.sh.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::repo_root;
use crate::vm::{guest, skip, KillOnDrop, VM_TIMEOUT};

/// The bound: 4.5 MiB (the target is ≤ 4 MiB; Firecracker peaks at 4.4 MiB here).
const MAX_PEAK_KIB: i64 = 4608;

/// Builds the static release binary through `bench/build-static`; its path.
fn static_release_binary() -> String {
    let out = Command::new(repo_root().join("bench/build-static"))
        .stderr(Stdio::inherit())
        .output()
        .expect("bench/build-static runs");
    assert!(
        out.status.success(),
        "bench/build-static failed: {}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `BINARY vmm run …` on the test guest; its stdout and peak RSS in KiB.
fn peak_rss_kib(binary: &str) -> (String, i64) {
    let kernel = guest().to_str().unwrap();
    // Reaped below by wait4 (not Child::wait), which also gives its rusage.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new(binary)
        .args([
            "vmm",
            "run",
            "--kernel",
            kernel,
            "--cmdline",
            "console=ttyS0",
        ])
        .args(["--cpus", "1", "--memory", "128MiB"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the VMM starts");
    let pid = child.id() as i32;
    let guard = KillOnDrop { pid };
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = tx.send(out);
    });
    let out = match rx.recv_timeout(VM_TIMEOUT) {
        Ok(out) => out,
        Err(_) => {
            drop(guard);
            panic!("the VMM did not finish within {VM_TIMEOUT:?}");
        }
    };
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 writes it and the status for our child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointers; pid is the child spawned above, not yet reaped.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4: {}", std::io::Error::last_os_error());
    std::mem::forget(guard); // reaped: the pid is no longer ours to kill
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the VMM ended with status {status:#x}:\n{out}"
    );
    (out, usage.ru_maxrss)
}

#[test]
#[ignore = "issue 16 is open: on main the static VMM peaks at 4.3-5.3 MiB (4.36 MiB warm, \
            5.0-5.3 MiB just after the binary is written), over this bound; run it with \
            `cargo test -p vmctl --test e2e -- --ignored footprint`"]
fn vmm_peak_rss_of_a_128_mib_test_guest_stays_under_4_5_mib() {
    if skip() {
        return;
    }
    let binary = static_release_binary();
    // The median of three, as bench/boot.sh reports the median.
    let mut peaks = Vec::new();
    for _ in 0..3 {
        let (out, kib) = peak_rss_kib(&binary);
        assert!(out.contains("testguest: ok"), "guest output:\n{out}");
        peaks.push(kib);
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut sorted = peaks.clone();
    sorted.sort_unstable();
    let median = sorted[1];
    eprintln!("VMM peak RSS of {binary}: {peaks:?} KiB");
    assert!(
        median <= MAX_PEAK_KIB,
        "the VMM's peak RSS is {median} KiB (runs: {peaks:?}), over the {MAX_PEAK_KIB} KiB bound: \
         see bench/boot.md for where a VMM's memory goes and how it was brought down"
    );
}
