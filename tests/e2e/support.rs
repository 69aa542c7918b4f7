//! Helpers shared by the end-to-end tests: the binary under test, the repo root, and
//! the rule for tests that need privileges this machine may not give.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The `vmctl` binary cargo built for this test run.
pub fn vmctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmctl"))
}

/// Runs `vmctl --color never ARGS… CONFIG` with stdin closed, to its end.
pub fn vmctl_on(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    vmctl()
        .args(["--color", "never"])
        .args(args)
        .arg(config)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("vmctl runs")
}

/// Runs `vmctl ARGS…` in `cwd` with the variables `clear` removed and `env` set,
/// stdin closed, to its end.
pub fn vmctl_in(
    cwd: &std::path::Path,
    clear: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    args: &[&str],
) -> std::process::Output {
    let mut command = vmctl();
    command
        .args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null());
    for key in clear {
        command.env_remove(key);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("vmctl runs")
}

/// A run's stdout, as text.
pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A run's stderr, as text.
pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

/// Whether a requirement (root, /dev/kvm, netns) is missing. Returns `true` when the
/// test should skip: it prints why. Under CI (`CI` set) a missing requirement is a
/// failure, never a skip.
pub fn skip_unless(ok: bool, what: &str) -> bool {
    if ok {
        return false;
    }
    if std::env::var_os("CI").is_some() {
        panic!("this end-to-end test needs {what}, and CI must run it");
    }
    eprintln!("SKIPPED: this end-to-end test needs {what}");
    true
}

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// True when /dev/kvm can be opened read-write.
pub fn has_kvm() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// A fresh network namespace name for one test: `vmctl-e2e-<pid>-<n>`, `n` counted
/// across every module of the test binary (so no two tests ever share one).
pub fn netns_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "vmctl-e2e-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// `program` on PATH or in /usr/sbin (dnsmasq is there, which a user's PATH may lack).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
