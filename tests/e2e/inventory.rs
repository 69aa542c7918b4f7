//! `vmctl list`, `show` and `import`, and finding the config (`-C`, `VMCTL_CONFIG`),
//! through the binary. One test on the quickstart lab before it is applied (everything
//! missing; no VM runs), one on one applied lab for everything that needs running VMs
//! and files in a pool: list and its filters, show and its JSON planned offline, and
//! every import rule. Needs root and /dev/kvm for the applied lab (CI has them).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::lab::{text, Lab, VMS};
use crate::support::{self, stderr, stdout, vmctl, vmctl_in};

/// Guests that stay up until vmctl shuts them down. Their addresses are the
/// quickstart's: web-1 and web-2 allocated from front's subnet, db-1's declared.
fn cmdline(vm: &str) -> String {
    format!("console=ttyS0 testguest.name={vm} testguest.halt")
}

/// The address `list` shows for each quickstart VM.
fn address(vm: &str) -> &'static str {
    match vm {
        "web-1" => "10.100.0.2",
        "web-2" => "10.100.0.3",
        _ => "10.200.0.10",
    }
}

/// `vmctl --color never ARGS…` run in `cwd` with `env` (and no other VMCTL_CONFIG).
fn run_in(cwd: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let args: Vec<&str> = ["--color", "never"].iter().chain(args).copied().collect();
    vmctl_in(cwd, &["VMCTL_CONFIG"], &env, &args)
}

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    stdout(out)
}

/// `list --json`'s VMs as (name, state).
fn states(out: &Output) -> Vec<(String, String)> {
    let list: Value = serde_json::from_str(&ok(out)).expect("list JSON");
    assert_eq!(list["format_version"], "1.0");
    list["vms"]
        .as_array()
        .expect("vms")
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (s("name"), s("state"))
        })
        .collect()
}

fn all(state: &str) -> Vec<(String, String)> {
    let mut names = VMS.map(str::to_owned).to_vec();
    names.sort();
    names.into_iter().map(|n| (n, state.to_owned())).collect()
}

#[test]
fn list_show_and_finding_the_config_before_anything_is_applied() {
    if support::skip_unless(support::is_root(), "root (to observe a host)") {
        return;
    }
    // Nothing is made: its state dir does not exist. (Without its netns, so that the
    // addresses `show` lists are the same in every run.)
    let lab = Lab::without_netns(cmdline);
    lab.edit("lab.kdl", |text| {
        text.lines()
            .filter(|l| !l.trim_start().starts_with("netns "))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let dir = lab.config_dir();
    let root = lab.dir.path();

    // Every VM is missing; the filters select by state and host.
    let out = run_in(root, &[], &["list", "--json", dir.to_str().unwrap()]);
    assert_eq!(states(&out), all("missing"));
    let out = run_in(root, &[], &["list", "config", "--state", "running"]);
    assert_eq!(
        ok(&out),
        "NAME  HOST  STATE  CPUS  MEMORY  IP  MAC  PID  UPTIME\n"
    );
    let out = run_in(
        root,
        &[],
        &["list", "config", "--host", "local", "--state", "missing"],
    );
    let table = ok(&out);
    assert!(
        table.contains("web-1  local  missing  1     64MiB   10.100.0.2 "),
        "{table}"
    );
    insta::assert_snapshot!("list-missing", table);
    assert_eq!(table.lines().count(), 4, "{table}");
    let out = run_in(root, &[], &["list", "config", "--host", "locl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("vmctl::list::unknown_host"),
        "{}",
        text(&out)
    );
    assert!(
        stderr(&out).contains("did you mean `local`?"),
        "{}",
        text(&out)
    );

    // Finding the config: PATH > VMCTL_CONFIG > `.`, with -C applied first.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let out = run_in(
        elsewhere.path(),
        &[("VMCTL_CONFIG", &dir)],
        &["list", "--json"],
    );
    assert_eq!(states(&out), all("missing"));
    let out = run_in(
        elsewhere.path(),
        &[],
        &["-C", dir.to_str().unwrap(), "list", "--json"],
    );
    assert_eq!(states(&out), all("missing"));
    let out = run_in(
        elsewhere.path(),
        &[("VMCTL_CONFIG", Path::new("config"))],
        &["--chdir", root.to_str().unwrap(), "list", "--json"],
    );
    assert_eq!(states(&out), all("missing"));
    let out = run_in(
        root,
        &[("VMCTL_CONFIG", Path::new("/nonexistent"))],
        &["validate", "config"],
    );
    assert_eq!(
        ok(&out),
        "lab: 1 host, 1 network, 2 vlans, 1 pool, 3 volumes, 3 vms\n"
    );
    // An empty VMCTL_CONFIG is none.
    let out = run_in(&dir, &[("VMCTL_CONFIG", Path::new(""))], &["validate"]);
    assert_eq!(
        ok(&out),
        "lab: 1 host, 1 network, 2 vlans, 1 pool, 3 volumes, 3 vms\n"
    );
    let out = run_in(elsewhere.path(), &[], &["validate"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no config in `.`: {}",
        text(&out)
    );
    let out = run_in(root, &[], &["-C", "/nonexistent/vmctl", "validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot change to the directory /nonexistent/vmctl (-C)"));

    // show: one address (from VMCTL_CONFIG, one argument read as the address), and an
    // unknown one with the known addresses.
    let out = run_in(
        elsewhere.path(),
        &[("VMCTL_CONFIG", &dir)],
        &["show", "vm.web-1"],
    );
    assert_eq!(
        ok(&out),
        "# vm.web-1 on host \"local\"\n# not on its host: `vmctl apply` creates it\n"
    );
    let out = run_in(root, &[], &["show", "config", "vm.web-9"]);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!("show-unknown-address", stderr(&out));

    // show --json of hosts with nothing is a live state `plan --live` plans the same
    // creates from as `plan` does from the hosts.
    let live = root.join("live.json");
    std::fs::write(&live, ok(&run_in(root, &[], &["show", "config", "--json"]))).unwrap();
    let changes = |out: &Output| -> Value {
        let plan: Value = serde_json::from_str(&ok(out)).expect("plan JSON");
        plan["changes"].clone()
    };
    let offline = run_in(
        root,
        &[],
        &["plan", "config", "--json", "--live", live.to_str().unwrap()],
    );
    let online = run_in(root, &[], &["plan", "config", "--json"]);
    assert_eq!(changes(&offline), changes(&online));
    assert!(!lab.state_dir().exists(), "nothing was made");
}

/// Writes a KDL block into the lab's `lab.kdl`.
fn declare(lab: &Lab, kdl: &str) {
    lab.edit("lab.kdl", |text| format!("{text}\n{kdl}\n"));
}

fn sparse(path: &Path, size: u64) {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(size))
        .expect("sparse file");
}

/// `vmctl import ADDRESS ID <config>` on `lab`.
fn import(lab: &Lab, address: &str, id: &Path) -> Output {
    lab.vmctl(&["import", address, id.to_str().unwrap()])
}

#[test]
fn list_show_and_import_on_one_applied_lab() {
    if crate::vm::skip()
        || support::skip_unless(
            Command::new("ip").args(["netns", "help"]).output().is_ok(),
            "the `ip` command (iproute2)",
        )
    {
        return;
    }
    let lab = Lab::new(cmdline);
    lab.apply();
    let dir = lab.config_dir();
    let dir = dir.to_str().unwrap();

    // list: every VM running, with its pid, memory, MACs and its address.
    let out = lab.vmctl(&["list", "--json"]);
    let list: Value = serde_json::from_str(&ok(&out)).expect("list JSON");
    for vm in list["vms"].as_array().expect("vms") {
        let name = vm["name"].as_str().unwrap();
        assert_eq!(vm["state"], "running", "{vm}");
        assert_eq!(vm["pid"].as_i64(), lab.pid(name).map(i64::from), "{vm}");
        assert_eq!(vm["memory"], 64 << 20);
        assert!(vm["uptime_seconds"].is_u64(), "{vm}");
        assert_eq!(vm["ips"], serde_json::json!([address(name)]), "{vm}");
    }
    let db = list["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "db-1");
    assert_eq!(
        db.unwrap()["macs"],
        serde_json::json!(["52:54:00:00:02:01"])
    );
    assert_eq!(
        states(&lab.vmctl(&["list", "--json", "--state", "running"])),
        all("running")
    );
    assert_eq!(
        states(&lab.vmctl(&["list", "--json", "--state", "stopped"])),
        []
    );
    let table = ok(&lab.vmctl(&["list", "--state", "running", "--state", "crashed"]));
    assert_eq!(table.lines().count(), 4, "{table}");
    let web1_pid = lab.pid("web-1").expect("web-1 runs").to_string();
    assert!(
        table.lines().any(|l| l.starts_with("web-1  local  running")
            && l.contains(address("web-1"))
            && l.contains(&web1_pid)),
        "{table}"
    );

    // show: every resource in the plan's attribute format; one by its address.
    let shown = ok(&lab.vmctl(&["show"]));
    for block in [
        "pool \"fast\" {",
        "network \"lan\" {",
        "vlan \"front\" {",
        "volume \"db-1-data\" {",
        "vm \"web-1\" {",
    ] {
        assert!(shown.contains(block), "{block}:\n{shown}");
    }
    assert!(
        shown.contains(&format!("# status: running, pid {web1_pid}")),
        "{shown}"
    );
    let one = ok(&vmctl()
        .args(["--color", "never", "show", dir, "vm.db-1"])
        .output()
        .expect("vmctl runs"));
    assert!(one.starts_with("# vm.db-1 on host \"local\"\n"), "{one}");
    assert!(
        one.lines()
            .any(|l| l.starts_with("    memory ") && l.ends_with(" = \"64MiB\"")),
        "{one}"
    );
    assert!(!one.contains("web-1"), "{one}");

    // show --json is what plan --live reads: planned offline, nothing changes.
    let live = lab.dir.path().join("live.json");
    std::fs::write(&live, ok(&lab.vmctl(&["show", "--json"]))).unwrap();
    let out = lab.vmctl(&[
        "plan",
        "--detailed-exitcode",
        "--live",
        live.to_str().unwrap(),
    ]);
    assert!(ok(&out).starts_with("No changes."), "{}", text(&out));
    // One resource's JSON holds that resource alone.
    let one: Value = serde_json::from_str(&ok(&vmctl()
        .args(["show", dir, "volume.db-1-data", "--json"])
        .output()
        .expect("vmctl runs")))
    .unwrap();
    let local = &one["hosts"]["local"];
    assert_eq!(local["volumes"].as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(local["vms"], serde_json::json!([]), "{one}");

    // import: files and a directory made by hand, declared after the apply.
    let pool = lab.pool_dir();
    let slow = lab.dir.path().join("slow");
    std::fs::create_dir(&slow).unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    for name in ["kept", "too-small", "theirs", "busy"] {
        sparse(&pool.join(format!("{name}.raw")), 1 << 20);
    }
    std::fs::write(
        pool.join("theirs.vmctl.json"),
        r#"{"format-version": 1, "project": "other", "name": "theirs"}"#,
    )
    .unwrap();
    declare(
        &lab,
        &format!(
            "pool \"slow\" host=\"local\" type=\"dir\" {{\n    path \"{}\"\n}}\n\
             volume \"kept\" pool=\"fast\" size=\"1MiB\"\n\
             volume \"too-small\" pool=\"fast\" size=\"2MiB\"\n\
             volume \"theirs\" pool=\"fast\" size=\"1MiB\"\n\
             volume \"busy\" pool=\"fast\" size=\"1MiB\"\n\
             volume \"later\" pool=\"slow\" size=\"1MiB\"",
            slow.display()
        ),
    );
    let refused = |address: &str, id: &Path, code: &str| {
        let out = import(&lab, address, id);
        assert_eq!(out.status.code(), Some(1), "{address}: {}", text(&out));
        let err = stderr(&out);
        assert!(err.contains(code), "{address}: {err}");
        assert!(
            err.contains("lab.kdl"),
            "{address}: the declaration's file: {err}"
        );
        err
    };
    // Not where the config puts it; not declared; another project's; the wrong size.
    let elsewhere = lab.dir.path().join("kept.raw");
    refused("volume.kept", &elsewhere, "vmctl::import::wrong_path");
    let out = import(&lab, "volume.kepd", &pool.join("kept.raw"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("did you mean `volume.kept`?"),
        "{}",
        text(&out)
    );
    let err = refused(
        "volume.theirs",
        &pool.join("theirs.raw"),
        "vmctl::import::other_project",
    );
    assert!(err.contains("\"other\""), "{err}");
    let err = refused(
        "volume.too-small",
        &pool.join("too-small.raw"),
        "vmctl::import::size_mismatch",
    );
    assert!(err.contains("declared size"), "the label on `size`: {err}");
    // In use: a process holds a lock on it (as a VMM does on its disks).
    let holder = std::fs::File::open(pool.join("busy.raw")).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
    refused(
        "volume.busy",
        &pool.join("busy.raw"),
        "vmctl::import::in_use",
    );
    drop(holder);
    // A volume of a pool that is not the project's yet; then the pool, then the volume.
    sparse(&slow.join("later.raw"), 1 << 20);
    refused(
        "volume.later",
        &slow.join("later.raw"),
        "vmctl::import::pool_not_ours",
    );
    for (address, id) in [
        ("volume.kept", pool.join("kept.raw")),
        ("pool.slow", slow.clone()),
        ("volume.later", slow.join("later.raw")),
    ] {
        let out = import(&lab, address, &id);
        assert!(
            ok(&out).starts_with(&format!("Imported {address} on host \"local\"")),
            "{}",
            text(&out)
        );
    }
    refused(
        "volume.kept",
        &pool.join("kept.raw"),
        "vmctl::import::already_ours",
    );
    // Nothing refused was marked; the refused are dropped from the config, and the
    // plan has nothing left to do for what was imported.
    for name in ["too-small", "busy"] {
        assert!(!pool.join(format!("{name}.vmctl.json")).exists(), "{name}");
    }
    lab.edit("lab.kdl", |text| {
        text.lines()
            .filter(|l| {
                !["too-small", "theirs", "busy"]
                    .iter()
                    .any(|n| l.contains(&format!("\"{n}\"")))
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    assert_eq!(lab.planned(), Vec::<String>::new());
    let listed = ok(&lab.vmctl(&["status"]));
    assert!(listed.contains("volume.kept"), "{listed}");
    assert!(listed.contains("pool.slow"), "{listed}");
    // Another project's file is untouched.
    let theirs = std::fs::read_to_string(pool.join("theirs.vmctl.json")).unwrap();
    assert!(theirs.contains("\"other\""), "{theirs}");

    // The project renamed in its config: plan and status warn about what the old name
    // left on the host (its record names this config folder), and touch none of it.
    let record = std::fs::read_to_string(lab.state_dir().join("lab/project.json")).unwrap();
    assert!(
        record.contains(&format!("\"origin\": \"{dir}\"")),
        "{record}"
    );
    lab.edit("lab.kdl", |text| {
        text.replace("project \"lab\"", "project \"lab2\"")
    });
    let pids: Vec<_> = VMS.iter().map(|vm| lab.pid(vm)).collect();
    for command in ["plan", "status"] {
        let err = stderr(&lab.vmctl(&[command]));
        let warning = format!(
            "host \"local\" has resources of project \"lab\", applied from this config ({dir}): vm db-1, web-1, web-2; pool fast, slow"
        );
        assert!(
            err.contains("vmctl::plan::orphaned_project"),
            "{command}: {err}"
        );
        // As miette wraps it: compared without the wrapping.
        let flat = |s: &str| -> String {
            s.chars()
                .filter(|c| !c.is_whitespace() && *c != '|')
                .collect()
        };
        assert!(flat(&err).contains(&flat(&warning)), "{command}: {err}");
    }
    assert_eq!(VMS.iter().map(|vm| lab.pid(vm)).collect::<Vec<_>>(), pids);
    // Under its old name again, nothing is anyone's orphan.
    lab.edit("lab.kdl", |text| {
        text.replace("project \"lab2\"", "project \"lab\"")
    });
    let err = stderr(&lab.vmctl(&["plan"]));
    assert!(!err.contains("orphaned_project"), "{err}");
}
