//! `vmctl plan` and `vmctl graph` on the quickstart against the live-state fixtures in
//! tests/fixtures/live/ (empty, partial, drifted, identical): snapshots of the human and
//! JSON output, exit codes with `--detailed-exitcode`, saved plans, and errors.
//!
//! The fixtures write the repo's path as `@REPO@` (the config's kernel paths are
//! absolute); each test writes a copy with the real path, and outputs show it as `[REPO]`.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{repo_root, vmctl};

const STATES: [&str; 4] = ["empty", "partial", "drifted", "identical"];

/// The fixture `name` with the repo's path filled in, written into `dir`.
fn live(name: &str, dir: &Path) -> PathBuf {
    let fixture = repo_root().join(format!("tests/fixtures/live/{name}.json"));
    let text = std::fs::read_to_string(&fixture).expect("fixture");
    let root = repo_root().display().to_string();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, text.replace("@REPO@", &root)).expect("write");
    path
}

fn run(args: &[&str]) -> Output {
    vmctl()
        .arg("--color")
        .arg("never")
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("vmctl runs")
}

/// Output text with the repo's path as `[REPO]`.
fn text(bytes: &[u8]) -> String {
    let root = repo_root().display().to_string();
    String::from_utf8_lossy(bytes).replace(&root, "[REPO]")
}

fn plan(state: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = live(state, dir.path());
    let live = live.to_str().expect("utf-8 path");
    let mut args = vec!["plan", "examples/quickstart", "--live", live];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn human_output_and_detailed_exit_codes() {
    for state in STATES {
        let out = plan(state, &["--detailed-exitcode"]);
        let stdout = text(&out.stdout);
        let expected = if state == "identical" { 0 } else { 2 };
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{state}: {stdout}{}",
            text(&out.stderr)
        );
        assert!(out.stderr.is_empty(), "{state}: {}", text(&out.stderr));
        insta::assert_snapshot!(format!("plan_human_{state}"), stdout);
    }
}

#[test]
fn identical_is_no_changes() {
    let out = plan("identical", &["--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("No changes."));
}

#[test]
fn without_detailed_exitcode_changes_exit_zero() {
    let out = plan("empty", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn empty_creates_everything_in_dependency_order() {
    let out = plan("empty", &[]);
    let stdout = text(&out.stdout);
    let position = |header: &str| {
        stdout
            .find(&format!("# {header} on host"))
            .unwrap_or_else(|| panic!("{header} in {stdout}"))
    };
    for (first, then) in [
        ("netns.vmctl-lab", "network.lan"),
        ("netns.vmctl-lab", "vm.web-1"),
        ("pool.fast", "volume.web-1-root"),
        ("network.lan", "vlan.front"),
        ("volume.db-1-data", "vm.db-1"),
        ("vlan.back", "vm.db-1"),
        ("vm.db-1", "vm.web-1"),
        ("vm.db-1", "vm.web-2"),
    ] {
        assert!(position(first) < position(then), "{first} before {then}");
    }
    assert!(stdout.ends_with("Plan: 12 to add, 0 to change, 0 to destroy.\n"));
}

#[test]
fn json_output() {
    for state in STATES {
        let out = plan(state, &["--json", "--detailed-exitcode"]);
        let stdout = text(&out.stdout);
        let value: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
        assert_eq!(value["format_version"], "1.6");
        assert_eq!(value["changed"], state != "identical");
        insta::assert_snapshot!(format!("plan_json_{state}"), stdout);
    }
}

#[test]
fn graph_is_dot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = live("drifted", dir.path());
    let out = run(&[
        "graph",
        "examples/quickstart",
        "--live",
        live.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    insta::assert_snapshot!("graph_drifted", text(&out.stdout));
}

#[test]
fn a_bad_live_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.json");
    std::fs::write(&path, r#"{"hosts": {"local": {"vm": []}}}"#).unwrap();
    let out = run(&[
        "plan",
        "examples/quickstart",
        "--live",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("is not valid"), "{stderr}");
    assert!(stderr.contains("unknown field `vm`"), "{stderr}");
}

/// A device, a FIFO or a directory named as a config, a live state or a saved plan is
/// refused at once: never read forever (`/dev/zero`) or waited on (a FIFO).
#[test]
fn files_that_are_not_regular_are_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("fifo.kdl");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let fifo = fifo.to_str().unwrap();
    let started = std::time::Instant::now();
    for args in [
        &["validate", fifo][..],
        &["validate", "/dev/zero"],
        &["apply", "/dev/zero"],
        &["plan", "examples/quickstart", "--live", "/dev/zero"],
        &["plan", "examples/quickstart", "--live", fifo],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("not a regular file"), "{args:?}: {stderr}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn prevent_destroy_fails_the_plan_naming_the_volume() {
    let out = plan("identical", &["--replace", "volume.db-1-data"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("vmctl::plan::prevent_destroy"), "{stderr}");
    assert!(stderr.contains("\"db-1-data\""), "{stderr}");
}

#[test]
fn unknown_target_suggests() {
    let out = plan("identical", &["--target", "web1"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("vmctl::plan::unknown_target"), "{stderr}");
    assert!(stderr.contains("did you mean"), "{stderr}");
}

#[test]
fn target_and_replace() {
    let out = plan("identical", &["--replace", "web-1", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("-/+ vm \"web-1\""), "{stdout}");
    assert!(stdout.contains("Plan: 1 to add, 0 to change, 1 to destroy."));
    let out = plan("empty", &["--target", "vm.web-2"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("vm.db-1"), "what web-2 needs: {stdout}");
    assert!(
        stdout.contains("netns.vmctl-lab"),
        "where web-2 lives: {stdout}"
    );
    assert!(!stdout.contains("vm.web-1"), "{stdout}");
}

#[test]
fn saved_plan_records_fingerprints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = live("drifted", dir.path());
    let out_file = dir.path().join("lab.plan");
    let out = run(&[
        "plan",
        "examples/quickstart",
        "--live",
        live.to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Saved the plan to"));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(saved["format_version"], 4);
    // Absolute, so the plan applies from any working directory.
    let source = repo_root().join("examples/quickstart");
    assert_eq!(saved["source"], source.display().to_string());
    let fingerprint = saved["hosts"]["local"].as_str().unwrap();
    assert!(fingerprint.starts_with("sha256:"), "{fingerprint}");
    assert!(saved["config"].as_str().unwrap().starts_with("sha256:"));
    assert!(!saved["plan"]["changes"].as_array().unwrap().is_empty());
}

#[test]
fn a_live_host_not_in_the_config_is_named_and_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("live.json");
    std::fs::write(&path, r#"{"hosts": {"elsewhere": {}}}"#).unwrap();
    let out = run(&[
        "plan",
        "examples/quickstart",
        "--live",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("host \"elsewhere\""), "{stderr}");
    assert!(text(&out.stdout).contains("Plan: 12 to add"));
}
