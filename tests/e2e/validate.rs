//! `vmctl validate`, `fmt` and `schema` on the examples: the quickstart is valid, each
//! examples/bad case fails with its expected diagnostics (snapshots), fmt is idempotent
//! and `fmt --check` catches an unformatted file.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{repo_root, vmctl};

pub(crate) fn run(args: &[&str]) -> Output {
    vmctl()
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("vmctl runs")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn bad_cases() -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(repo_root().join("examples/bad"))
        .expect("examples/bad exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    cases
}

#[test]
fn quickstart_is_valid() {
    let out = run(&["validate", "examples/quickstart"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "lab: 1 host, 1 network, 2 vlans, 1 pool, 3 volumes, 3 vms\n"
    );
}

#[test]
fn fleet_example_is_valid() {
    let out = run(&["validate", "examples/fleet"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "shop: 3 hosts, 2 networks, 2 vlans, 3 pools, 3 volumes, 3 vms\n"
    );
}

#[test]
fn every_bad_example_fails_with_its_diagnostics() {
    let cases = bad_cases();
    assert!(
        cases.len() >= 20,
        "expected a case per kind of error, found {cases:?}"
    );
    for case in cases {
        let path = format!("examples/bad/{case}");
        let out = run(&["--color", "never", "validate", &path]);
        assert_eq!(out.status.code(), Some(1), "{case} must be invalid");
        assert!(out.stdout.is_empty(), "{case}: nothing on stdout");
        let stderr = text(&out.stderr);
        let code = format!("vmctl::schema::{}", case.replace('-', "_"));
        let expected_code = match case.as_str() {
            "missing-project" => "vmctl::schema::project".to_owned(),
            "non-utf8" => "vmctl::schema::not_utf8".to_owned(),
            "no-kdl-files" => "vmctl::schema::no_config_files".to_owned(),
            "vlan-id-range" => "vmctl::schema::vlan_id_range".to_owned(),
            _ => code,
        };
        assert!(
            stderr.contains(&expected_code),
            "{case}: expected {expected_code} in\n{stderr}"
        );
        insta::assert_snapshot!(format!("bad-{case}"), stderr);
    }
}

/// Copies an example folder's .kdl files into a fresh temp dir.
pub(crate) fn copy_example(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(from).expect("example dir").flatten() {
        if entry.path().extension().is_some_and(|e| e == "kdl") {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
        }
    }
    dir
}

fn examples() -> Vec<PathBuf> {
    let root = repo_root().join("examples");
    let mut out = vec![root.join("quickstart"), root.join("fleet")];
    out.extend(bad_cases().into_iter().map(|c| root.join("bad").join(c)));
    out
}

fn read_all(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| (e.path(), std::fs::read(e.path()).expect("read")))
        .collect();
    files.sort();
    files
}

#[test]
fn fmt_is_idempotent_on_every_example() {
    for example in examples() {
        let dir = copy_example(&example);
        let path = dir.path().to_string_lossy().into_owned();
        let first = run(&["fmt", &path]);
        if first.status.code() != Some(0) {
            // Syntax errors, non-UTF-8 or no .kdl files: fmt refuses, and says why.
            assert_eq!(first.status.code(), Some(1));
            assert!(!first.stderr.is_empty());
            continue;
        }
        // The examples in the repo are kept in canonical form.
        assert!(
            first.stderr.is_empty(),
            "{} is not in canonical form: {}",
            example.display(),
            text(&first.stderr)
        );
        let once = read_all(dir.path());
        let second = run(&["fmt", &path]);
        assert_eq!(second.status.code(), Some(0));
        assert_eq!(
            read_all(dir.path()),
            once,
            "{}: fmt is not idempotent",
            example.display()
        );
        let check = run(&["fmt", "--check", &path]);
        assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    }
}

#[test]
fn fmt_check_shows_a_diff_and_fails_on_an_unformatted_copy() {
    let dir = copy_example(&repo_root().join("examples/quickstart"));
    let file = dir.path().join("lab.kdl");
    let original = std::fs::read_to_string(&file).expect("read");
    let messy = original
        .replace("    ", "  ")
        .replace("network=\"lan\" id=100", "id=100   network=lan");
    std::fs::write(&file, &messy).expect("write");
    let path = dir.path().to_string_lossy().into_owned();

    let check = run(&["--color", "never", "fmt", "--check", &path]);
    assert_eq!(check.status.code(), Some(1));
    let diff = text(&check.stdout);
    assert!(diff.contains("--- ") && diff.contains("+++ "), "{diff}");
    assert!(
        diff.contains("-vlan \"front\" id=100   network=lan {"),
        "{diff}"
    );
    assert!(
        diff.contains("+vlan \"front\" network=\"lan\" id=100 {"),
        "{diff}"
    );
    assert!(text(&check.stderr).contains("1 file would be reformatted"));
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        messy,
        "--check changes nothing"
    );

    let fix = run(&["fmt", &path]);
    assert_eq!(fix.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&file).expect("read"), original);
}

#[test]
fn schema_prints_a_json_schema() {
    let out = run(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(schema["title"], "Config");
    assert!(schema["$schema"].is_string());
}

#[test]
fn every_command_has_help_with_examples_and_a_version() {
    for command in [
        &["--help"][..],
        &["validate", "--help"],
        &["fmt", "--help"],
        &["schema", "--help"],
    ] {
        let out = run(command);
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stdout).contains("Examples:"), "{command:?}");
    }
    let out = run(&["--version"]);
    assert_eq!(
        text(&out.stdout),
        format!("vmctl {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_missing_path_is_a_clear_error() {
    let out = run(&["--color", "never", "validate", "no/such/dir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read no/such/dir"));
}
