//! Templates and `count` through the real binary (`tests/fixtures/expansion/`):
//! `validate` and `plan --json` speak of the expanded resources, `fmt` keeps the files
//! as written, an unused template is a warning, and the diagnostics of expanded
//! resources point at the template's setting or the VM's own and name the instance
//! (snapshots, like examples/bad).

use crate::support::{repo_root, vmctl};
use crate::validate::{copy_example, run, text};

const OK: &str = "tests/fixtures/expansion/ok";
const ERRORS: &str = "tests/fixtures/expansion/errors";
const EMPTY_LIVE: &str = "tests/fixtures/live/empty.json";

/// A fixture's .kdl files in a fresh temp dir.
fn copy(fixture: &str) -> tempfile::TempDir {
    copy_example(&repo_root().join(fixture))
}

#[test]
fn validate_counts_the_expanded_resources() {
    let out = run(&["--color", "never", "validate", OK]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "shop: 1 host, 1 network, 2 vlans, 1 pool, 4 volumes, 4 vms\n"
    );
    assert!(out.stderr.is_empty(), "no warning: {}", text(&out.stderr));
}

#[test]
fn the_plan_json_names_expanded_resources_and_no_template() {
    let out = run(&[
        "--color", "never", "plan", OK, "--json", "--live", EMPTY_LIVE,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let addresses: Vec<&str> = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|c| c["address"].as_str())
        .collect();
    for expected in [
        "vm.web-1",
        "vm.web-2",
        "vm.web-3",
        "vm.db-1",
        "volume.web-3-root",
    ] {
        assert!(addresses.contains(&expected), "{expected} in {addresses:?}");
    }
    let all = text(&out.stdout);
    assert!(!all.contains("{n}"), "{all}");
    assert!(
        !all.contains("\"base\"") && !all.contains("template"),
        "{all}"
    );
    let web2 = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["address"] == "vm.web-2")
        .expect("web-2");
    let after = &web2["after"];
    assert_eq!(after["cmdline"], "console=ttyS0 hostname=web-2", "{after}");
    assert_eq!(after["cpus"], 2, "web overrides base: {after}");
    assert_eq!(after["disks"][0], "web-2-root", "{after}");
}

#[test]
fn fmt_keeps_templates_and_counts_as_written() {
    for fixture in [OK, ERRORS] {
        let check = run(&["--color", "never", "fmt", "--check", fixture]);
        assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    }
    let dir = copy(OK);
    let file = dir.path().join("vms.kdl");
    let original = std::fs::read_to_string(&file).expect("read");
    let messy = original.replace("    ", "  ").replace(
        "vm \"web-{n}\" count=3 template=\"web\" {",
        "vm \"web-{n}\" template=web   count=3 {",
    );
    std::fs::write(&file, messy).expect("write");
    let out = run(&["fmt", &dir.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&file).expect("read"), original);
}

#[test]
fn an_unused_template_is_a_warning_and_validate_still_succeeds() {
    let dir = copy(OK);
    let path = dir.path().join("templates.kdl");
    let mut templates = std::fs::read_to_string(&path).expect("read");
    templates.push_str("\ntemplate \"spare\" {\n    cpus 4\n}\n");
    std::fs::write(&path, templates).expect("write");
    let out = vmctl()
        .args(["--color", "never", "validate", "."])
        .current_dir(dir.path())
        .output()
        .expect("vmctl runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "shop: 1 host, 1 network, 2 vlans, 1 pool, 4 volumes, 4 vms\n"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("vmctl::schema::unused_template"),
        "{stderr}"
    );
    insta::assert_snapshot!("unused-template", stderr);
}

#[test]
fn diagnostics_point_at_the_source_and_name_the_instance() {
    let out = run(&["--color", "never", "validate", ERRORS]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    // The template's mistake once for all the VMs it reaches (not db-1: it overrides).
    assert_eq!(
        stderr.matches("vmctl::schema::too_small").count(),
        2,
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "in vm web-1, web-2 and web-3, expanded from vm \"web-{n}\" count=3 at tests/fixtures/"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("no volume named `web-3-root`"), "{stderr}");
    assert!(stderr.contains("error: 4 errors in the config"), "{stderr}");
    insta::assert_snapshot!("expansion-errors", stderr);
}

#[test]
fn plan_reports_a_templates_missing_kernel_once_for_all_its_vms() {
    let dir = copy(OK);
    let out = vmctl()
        .args(["--color", "never", "plan", "."])
        .current_dir(dir.path())
        .output()
        .expect("vmctl runs");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.matches("vmctl::plan::file_missing").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("`kernel` of 4 vms"), "{stderr}");
    assert!(
        stderr.contains("in vm web-1, web-2, web-3 and db-1, from template \"base\""),
        "{stderr}"
    );
    let shown = stderr.replace(&dir.path().display().to_string(), "<config>");
    insta::assert_snapshot!("expansion-missing-kernel", shown);
}
