//! Issue 10: plan, apply, status, console and destroy on remote hosts, through the
//! binary, on the fleet harness ([`crate::fleet`]): vmctl runs in the controller
//! namespace and reaches each host's sshd with the harness's ssh config, ships itself
//! and the test guest's kernel, and runs each host's steps through its agent.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::fleet::{self, Fleet};
use crate::lab::text;
use crate::vm::guest;

/// A two-host project: on each host a network, a VLAN, a pool, a volume and a VM.
pub(crate) struct FleetLab {
    pub(crate) fleet: Fleet,
    pub(crate) config: PathBuf,
}

impl FleetLab {
    /// A fleet of `hosts` hosts and the config `kdl` makes of it.
    pub(crate) fn with(hosts: usize, kdl: impl FnOnce(&Fleet) -> String) -> FleetLab {
        let fleet = Fleet::with_hosts(hosts);
        let config = fleet.dir.path().join("config");
        std::fs::create_dir_all(&config).expect("config dir");
        std::fs::write(config.join("fleet.kdl"), kdl(&fleet)).expect("write config");
        FleetLab { fleet, config }
    }

    /// Two hosts, each with a network, a VLAN, a pool, a volume and a VM.
    pub(crate) fn new() -> FleetLab {
        FleetLab::with(2, two_host_lab)
    }

    /// `vmctl ARGS… <config>` from the controller namespace.
    pub(crate) fn vmctl(&self, args: &[&str]) -> Output {
        self.fleet
            .controller_command(env!("CARGO_BIN_EXE_vmctl"))
            .args(["--color", "never"])
            .args(args)
            .arg(&self.config)
            .output()
            .expect("vmctl runs")
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.vmctl(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "vmctl {args:?}:\n{}",
            text(&out)
        );
        text(&out)
    }

    /// The plan's actionable changes as `action kind.name@host`, sorted.
    pub(crate) fn planned(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["plan", "--json"];
        args.extend(extra);
        let out = self.vmctl(&args);
        assert_eq!(out.status.code(), Some(0), "plan:\n{}", text(&out));
        let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
        let mut changes: Vec<String> = plan["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .filter(|c| c["action"] != "no-op")
            .map(|c| {
                format!(
                    "{} {}@{}",
                    c["action"].as_str().unwrap_or(""),
                    c["address"].as_str().unwrap_or(""),
                    c["host"].as_str().unwrap_or("")
                )
            })
            .collect();
        changes.sort();
        changes
    }

    /// Changes every VM's memory (a restart, which waits out the guest's stop
    /// timeout), kills `vmctl apply` of it with SIGKILL in mid-run, then checks that
    /// the next apply converges (no lock is stuck on any host); both runs with
    /// `VMCTL_SSH_CONTROL_DIR=control` when given (else the fleet's kept connections).
    /// The config as it was before.
    fn killed_apply_converges(&self, control: Option<&str>) -> String {
        let config = self.config.join("fleet.kdl");
        let written = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            written.replace("memory \"64MiB\"", "memory \"96MiB\""),
        )
        .unwrap();
        let apply = |args: &[&str]| {
            let mut command = self.fleet.controller_command(env!("CARGO_BIN_EXE_vmctl"));
            // A killed run cannot remove its per-run ssh dir (`none`): it is made in
            // the fleet's temp dir, which goes with the fleet.
            command
                .args(args)
                .arg(&self.config)
                .env("TMPDIR", self.fleet.dir.path());
            if let Some(control) = control {
                command.env("VMCTL_SSH_CONTROL_DIR", control);
            }
            command
        };
        let mut first = apply(&["apply", "--auto-approve", "--stop-timeout", "3s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("apply starts");
        std::thread::sleep(std::time::Duration::from_millis(1500));
        // SAFETY: kill has no memory-safety preconditions; the child is this test's own
        // vmctl, not yet reaped.
        unsafe { libc::kill(first.id() as i32, libc::SIGKILL) };
        let _ = first.wait();
        let out = apply(&["apply", "--auto-approve", "--lock-timeout", "20s"])
            .output()
            .expect("vmctl runs");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        written
    }

    pub(crate) fn state(&self, host: &str) -> &Path {
        &self.fleet.host(host).state_dir
    }

    /// The VMM of `vm` on `host`, by the pid file its lock holder wrote.
    pub(crate) fn vmm_pid(&self, host: &str, vm: &str) -> Option<i32> {
        let dir = self.state(host).join("fleet/vms").join(vm);
        let pid: i32 = std::fs::read_to_string(dir.join("vmm.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        crate::vm::alive(pid).then_some(pid)
    }
}

/// The config of [`FleetLab::new`].
fn two_host_lab(fleet: &Fleet) -> String {
    let mut kdl = String::from("project \"fleet\"\n");
    for (host, vm, ssh) in [("a", "web-1", "host-a"), ("b", "web-2", "root@host-b")] {
        let state = &fleet.host(&format!("host-{host}")).state_dir;
        let pool = fleet.dir.path().join(format!("pool-{host}"));
        kdl.push_str(&format!(
            r#"
host "{host}" {{
    ssh "{ssh}"
    state-dir "{state}"
    cpus 2
    memory "1GiB"
}}
network "lan-{host}" host="{host}"
vlan "front-{host}" network="lan-{host}" id=100
pool "pool-{host}" host="{host}" type="dir" path="{pool}"
volume "{vm}-root" pool="pool-{host}" size="16MiB"
vm "{vm}" host="{host}" {{
    cpus 1
    memory "64MiB"
    kernel "{kernel}"
    cmdline "console=ttyS0 testguest.name={vm} testguest.halt"
    disk "{vm}-root"
    nic vlan="front-{host}"
}}
"#,
            state = state.display(),
            pool = pool.display(),
            kernel = guest().display(),
        ));
    }
    kdl
}

/// Takes project `fleet`'s lock on `host` (named `name` in the config) through its
/// kept agent, speaking the agent protocol on the forward in `kept` as vmctl does
/// (hello, calls, open, lock); the lock is held until the returned stream is dropped.
fn hold_lock_through_kept_agent(
    lab: &FleetLab,
    kept: &Path,
    host: &str,
    name: &str,
) -> std::os::unix::net::UnixStream {
    use std::io::{BufRead, Write};
    use vmctl_runtime::hosts::stream::Envelope;
    use vmctl_runtime::hosts::wire::{Answer, Call};
    use vmctl_runtime::remote::protocol::{Hello, Request, PROTOCOL};
    let build =
        vmctl_runtime::remote::build::Executable::at(Path::new(env!("CARGO_BIN_EXE_vmctl")))
            .expect("hashes vmctl")
            .sha256
            .clone();
    // The forward to host's agent: `to-<name>` for its socket `<state-dir>/run/<name>`.
    let state_dir = lab.state(host).to_owned();
    let forwards: Vec<PathBuf> = files_in(&state_dir.join("run"))
        .into_iter()
        .map(|f| kept.join(format!("to-{f}")))
        .collect();
    for forward in forwards {
        let Ok(stream) = std::os::unix::net::UnixStream::connect(&forward) else {
            continue;
        };
        let mut writer = stream.try_clone().expect("clone");
        let mut lines = std::io::BufReader::new(stream.try_clone().expect("clone")).lines();
        let mut send = |line: String| writer.write_all(format!("{line}\n").as_bytes());
        let hello = Request::Hello(Hello {
            protocol: PROTOCOL,
            build: build.clone(),
        });
        send(serde_json::to_string(&hello).unwrap()).expect("hello");
        lines.next().expect("hello answered").expect("reads");
        send(serde_json::to_string(&Request::Calls).unwrap()).expect("calls");
        lines.next().expect("calls answered").expect("reads");
        let call = |id, body| serde_json::to_string(&Envelope { id, body }).unwrap();
        send(call(
            1,
            Call::Open {
                host: name.to_owned(),
                state_dir: state_dir.clone(),
                netns: None,
            },
        ))
        .expect("open");
        send(call(
            2,
            Call::Lock {
                project: "fleet".to_owned(),
                timeout_ms: 5000,
                origin: None,
            },
        ))
        .expect("lock");
        for _ in 0..2 {
            let line = lines.next().expect("an answer").expect("reads");
            let answer: Envelope<Answer> = serde_json::from_str(&line).expect("an answer");
            if answer.id == 2 {
                assert!(matches!(answer.body, Answer::Locked), "{line}");
                return stream;
            }
        }
        panic!("no answer to the lock call");
    }
    panic!("no kept agent of {host} answers in {}", kept.display());
}

/// Writes `bytes` at `at` of the existing file `path`.
pub(crate) fn write_at(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.write_all_at(bytes, at).expect("write");
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_project_on_two_remote_hosts_is_applied_observed_repaired_and_destroyed() {
    if fleet::skip() {
        return;
    }
    let mut lab = FleetLab::new();

    // The plan says which files it will ship where, and their sizes (and reaching the
    // hosts shipped vmctl itself to each, once).
    let planned = lab.ok(&["plan"]);
    for host in ["a", "b"] {
        assert!(
            planned.contains("Shipped vmctl (")
                && planned.contains(&format!("to host \"{host}\" in")),
            "{planned}"
        );
    }
    assert!(planned.contains("Files to ship"), "{planned}");
    let kernel = guest().display().to_string();
    for host in ["a", "b"] {
        let line = format!("kernel {kernel} (");
        assert!(
            planned
                .lines()
                .any(|l| l.contains(&line) && l.ends_with(&format!("to host \"{host}\""))),
            "{planned}"
        );
    }

    // Apply from empty: vmctl and the kernel are shipped to each host once.
    let applied = lab.ok(&["apply", "--auto-approve"]);
    assert!(applied.contains("Apply complete"), "{applied}");
    for host in ["host-a", "host-b"] {
        let bins = files_in(&lab.state(host).join("bin"));
        assert_eq!(bins.len(), 1, "{host}: {bins:?}");
        assert!(bins[0].starts_with("vmctl-"), "{bins:?}");
        let images = files_in(&lab.state(host).join("images"));
        assert_eq!(images.len(), 1, "{host}: the kernel, once: {images:?}");
        assert!(images[0].starts_with("sha256-"), "{images:?}");
    }
    assert!(
        lab.vmm_pid("host-a", "web-1").is_some(),
        "web-1 runs on host a"
    );
    assert!(
        lab.vmm_pid("host-b", "web-2").is_some(),
        "web-2 runs on host b"
    );

    // Nothing left to do; status sees both VMs running where they are.
    assert_eq!(lab.planned(&[]), Vec::<String>::new());
    let out = lab.vmctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = lab.ok(&["status"]);
    for (vm, host) in [("web-1", "a"), ("web-2", "b")] {
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("vm.{vm} ")))
            .unwrap_or_else(|| panic!("{vm} in status:\n{status}"));
        assert!(line.contains("running") && line.contains(host), "{line}");
    }

    // The remote console, through host b's agent.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = lab
            .fleet
            .controller_command(env!("CARGO_BIN_EXE_vmctl"))
            .args(["console", "web-2"])
            .arg(&lab.config)
            .args(["--lines", "20"])
            .output()
            .expect("console runs");
        let shown = text(&out);
        if out.status.success() && shown.contains("testguest: ok") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "web-2's console:\n{shown}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // What a host has is not shipped again.
    let replan = lab.ok(&["plan"]);
    assert!(!replan.contains("Files to ship"), "{replan}");
    assert!(!replan.contains("Shipped vmctl"), "{replan}");

    // Drift on one remote host: its VM's VMM is killed; exactly that is repaired.
    let pid = lab.vmm_pid("host-a", "web-1").expect("web-1's VMM");
    // SAFETY: kill has no memory-safety preconditions; the pid is the VMM this test's
    // apply started (its lock holder wrote it), alive a moment ago.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(
        crate::vm::wait_gone(pid, std::time::Duration::from_secs(10)),
        "web-1 died"
    );
    assert_eq!(lab.planned(&[]), ["start vm.web-1@a"]);
    lab.ok(&["apply", "--auto-approve"]);
    assert_eq!(lab.planned(&[]), Vec::<String>::new());
    // Shipped nothing the second time: still one vmctl and one kernel per host.
    for host in ["host-a", "host-b"] {
        assert_eq!(files_in(&lab.state(host).join("bin")).len(), 1);
        assert_eq!(files_in(&lab.state(host).join("images")).len(), 1);
    }

    // The connections kept so far (the default), closed as a user closes them: then
    // nothing of vmctl runs here or on the hosts.
    lab.fleet
        .close_kept()
        .expect("closing the kept connections");
    let kept_before = files_in(&lab.fleet.control_dir);

    // The opt-out (`--ssh-control-dir none`): one connection and one agent per host
    // for the run, gone when it returns (its masters are told to exit at its end; the
    // 2 s are for their processes to finish exiting).
    let out = lab
        .fleet
        .controller_command(env!("CARGO_BIN_EXE_vmctl"))
        .args(["plan", "--detailed-exitcode", "--ssh-control-dir", "none"])
        .arg(&lab.config)
        .output()
        .expect("vmctl runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !lab.fleet.controller_pids().is_empty() || !lab.fleet.agents().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "left after a run with `none`: controller pids {:?}, agents {:?}",
            lab.fleet.controller_pids(),
            lab.fleet.agents()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        files_in(&lab.fleet.control_dir),
        kept_before,
        "`none` keeps nothing"
    );
    assert!(files_in(&lab.state("host-a").join("run")).is_empty());

    // Host b unreachable: plan fails naming it, and nothing changes on host a.
    lab.fleet.host_mut("host-b").stop_sshd();
    let out = lab.vmctl(&["plan"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("\"b\"") && said.contains("vmctl::host::unreachable"),
        "{said}"
    );
    assert!(!said.contains("\"a\":"), "{said}");
    // Narrowed to the hosts that answer, the run goes on.
    assert_eq!(lab.planned(&["--exclude-host", "b"]), Vec::<String>::new());
    lab.fleet.host_mut("host-b").start_sshd();
    lab.fleet
        .close_kept()
        .expect("closing the kept connections");

    // Connections kept between runs (the default; the fleet's dir): the next run
    // reuses them; a directory others may enter is refused.
    let kept = lab.fleet.control_dir.clone();
    let plan_kept = |dir: &Path| {
        lab.fleet
            .controller_command(env!("CARGO_BIN_EXE_vmctl"))
            .args(["plan", "--detailed-exitcode"])
            .arg(&lab.config)
            .env("VMCTL_SSH_CONTROL_DIR", dir)
            .output()
            .expect("vmctl runs")
    };
    let open = lab.fleet.dir.path().join("ssh-open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = plan_kept(&open);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("others may reach"), "{}", text(&out));
    assert!(
        text(&out).contains("vmctl::ssh::control_dir"),
        "{}",
        text(&out)
    );
    assert!(files_in(&open).is_empty());
    // The first run with them starts each host's kept agent (remote::kept) and the
    // forward to it: a master per host and a forward in the control dir, the agent's
    // socket in the host's state dir.
    let out = plan_kept(&kept);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let agent_sockets = |host: &str| files_in(&lab.state(host).join("run"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while agent_sockets("host-a").is_empty() || agent_sockets("host-b").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no kept agent listens"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = plan_kept(&kept);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let kept_files = files_in(&kept);
    assert_eq!(kept_files.len(), 4, "{kept_files:?}");
    assert_eq!(
        kept_files
            .iter()
            .filter(|f| f.starts_with("to-agent-"))
            .count(),
        2,
        "{kept_files:?}"
    );
    assert_eq!(
        agent_sockets("host-a").len(),
        1,
        "{:?}",
        agent_sockets("host-a")
    );
    // A run with the kept agent starts no ssh session on the host.
    let sessions = || {
        lab.fleet
            .host("host-a")
            .sshd_log()
            .matches("Starting session")
            .count()
    };
    let before = sessions();
    let out = plan_kept(&kept);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(sessions(), before, "a session was started");

    // A project lock held through the kept agent (by a session of its own, here the
    // test's) is named as such: the agent holds it for a command, it is no process to
    // kill.
    {
        let held = hold_lock_through_kept_agent(&lab, &kept, "host-a", "a");
        let out = lab.vmctl(&["apply", "--auto-approve", "--lock-timeout", "0s"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            text(&out).contains("through vmctl's kept agent for host \"a\"")
                && text(&out).contains("killing it ends them all"),
            "{}",
            text(&out)
        );
        drop(held);
    }

    // kill -9 of an apply served by kept agents: the lock its connection held is let
    // go with the connection, and the next run converges.
    let written = lab.killed_apply_converges(None);
    assert_eq!(plan_kept(&kept).status.code(), Some(0));
    std::fs::write(lab.config.join("fleet.kdl"), written).unwrap();
    lab.ok(&["apply", "--auto-approve", "--stop-timeout", "3s"]);

    // The master told to exit takes its kept agent with it, socket and all.
    let exit = lab
        .fleet
        .ssh(&[
            "-o",
            &format!("ControlPath={}/%C", kept.display()),
            "-O",
            "exit",
            "host-a",
        ])
        .output()
        .expect("ssh runs");
    assert!(exit.status.success(), "{}", text(&exit));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !agent_sockets("host-a").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the kept agent outlived its master: {:?}",
            agent_sockets("host-a")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // list and show see both remote hosts; show's JSON plans offline to no change.
    let list: Value = serde_json::from_str(&lab.ok(&["list", "--json"])).expect("list JSON");
    for (vm, host, state_host) in [("web-1", "a", "host-a"), ("web-2", "b", "host-b")] {
        let row = list["vms"]
            .as_array()
            .and_then(|vms| vms.iter().find(|v| v["name"] == vm))
            .unwrap_or_else(|| panic!("{vm} in {list}"));
        assert_eq!(
            (&row["host"], &row["state"]),
            (&Value::from(host), &Value::from("running"))
        );
        let pid = lab.vmm_pid(state_host, vm).map(i64::from);
        assert_eq!(row["pid"].as_i64(), pid, "{row}");
    }
    let out = lab.vmctl(&["show", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let live = lab.fleet.dir.path().join("live.json");
    std::fs::write(&live, &out.stdout).unwrap();
    let offline = lab.ok(&["plan", "--live", live.to_str().unwrap()]);
    assert!(offline.starts_with("No changes."), "{offline}");

    // import on a remote host: its agent checks and marks the file; a refusal comes
    // back whole, as a diagnostic on the declaration.
    let pool_b = lab.fleet.dir.path().join("pool-b");
    for name in ["data-b", "big-b"] {
        std::fs::File::create(pool_b.join(format!("{name}.raw")))
            .and_then(|f| f.set_len(1 << 20))
            .unwrap();
    }
    let kdl = lab.config.join("fleet.kdl");
    let base = std::fs::read_to_string(&kdl).unwrap();
    let extra = "volume \"data-b\" pool=\"pool-b\" size=\"1MiB\"\n";
    std::fs::write(
        &kdl,
        format!("{base}{extra}volume \"big-b\" pool=\"pool-b\" size=\"2MiB\"\n"),
    )
    .unwrap();
    let data_b = pool_b.join("data-b.raw");
    let imported = lab.ok(&["import", "volume.data-b", data_b.to_str().unwrap()]);
    assert!(
        imported.contains("Imported volume.data-b on host \"b\""),
        "{imported}"
    );
    let big_b = pool_b.join("big-b.raw");
    let out = lab.vmctl(&["import", "volume.big-b", big_b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("vmctl::import::size_mismatch"),
        "{}",
        text(&out)
    );
    std::fs::write(&kdl, format!("{base}{extra}")).unwrap();
    assert_eq!(lab.planned(&[]), Vec::<String>::new());

    // Destroy: nothing of the project left on either host.
    lab.ok(&["destroy", "--auto-approve"]);
    assert_eq!(lab.vmm_pid("host-a", "web-1"), None);
    assert_eq!(lab.vmm_pid("host-b", "web-2"), None);
    for host in ["host-a", "host-b"] {
        let project = lab.state(host).join("fleet");
        let left = files_in(&project);
        assert!(left.iter().all(|f| f == "lock"), "{host}: {left:?}");
    }
    let planned = lab.planned(&[]);
    assert!(
        planned.iter().all(|c| c.starts_with("create")),
        "{planned:?}"
    );
    lab.fleet
        .close_kept()
        .expect("nothing of vmctl runs once the kept connections are closed");
}

/// The text a guest printed: its console log on `host` (read as root, like the agent).
pub(crate) fn console_of(lab: &FleetLab, host: &str, vm: &str) -> String {
    let log = lab
        .state(host)
        .join("fleet/vms")
        .join(vm)
        .join("console.log");
    crate::lab::whole_lines(std::fs::read_to_string(log).unwrap_or_default())
}

/// Waits until `vm` on `host` printed `line` (a whole line of its console).
pub(crate) fn wait_console(lab: &FleetLab, host: &str, vm: &str, line: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !console_of(lab, host, vm).lines().any(|l| l == line) {
        assert!(
            std::time::Instant::now() < deadline,
            "no `{line}` on the console of {vm}:\n{}",
            console_of(lab, host, vm)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Project `fleet` on the fleet's hosts `names` (`a` is `host-a`, underlay
/// 192.0.2.11, …), each with a pool `pool-<name>`.
pub(crate) fn hosts_with_pools(fleet: &Fleet, names: &[&str]) -> String {
    let mut kdl = String::from("project \"fleet\"\n");
    for (name, last) in names.iter().zip(11..) {
        let state = &fleet.host(&format!("host-{name}")).state_dir;
        let pool = fleet.dir.path().join(format!("pool-{name}"));
        kdl.push_str(&format!(
            "host \"{name}\" {{\n    ssh \"host-{name}\"\n    underlay \"192.0.2.{last}\"\n    state-dir \"{state}\"\n    cpus 2\n    memory \"1GiB\"\n}}\npool \"pool-{name}\" host=\"{name}\" type=\"dir\" path=\"{pool}\"\n",
            state = state.display(),
            pool = pool.display()
        ));
    }
    kdl
}

/// The issue's three-host lab: web-1 on host a and web-2 on host b on one VLAN that
/// spans both (a VXLAN tunnel between the hosts), db-1 on host c on another VLAN.
fn three_host_lab(fleet: &Fleet) -> String {
    let mut kdl = hosts_with_pools(fleet, &["a", "b", "c"]);
    kdl.push_str(
        "network \"lan\" {\n    hosts \"a\" \"b\"\n}\nvlan \"front\" network=\"lan\" id=100\nnetwork \"lan-c\" host=\"c\"\nvlan \"back\" network=\"lan-c\" id=100\n",
    );
    for (vm, host, vlan) in [
        ("web-1", "a", "front"),
        ("web-2", "b", "front"),
        ("db-1", "c", "back"),
    ] {
        kdl.push_str(&format!(
            "vm \"{vm}\" host=\"{host}\" {{\n    cpus 1\n    memory \"64MiB\"\n    kernel \"{kernel}\"\n    cmdline \"console=ttyS0 testguest.name={vm} testguest.listen=20000 testguest.halt\"\n    nic vlan=\"{vlan}\"\n}}\n",
            kernel = guest().display()
        ));
    }
    kdl
}

#[test]
fn a_vlan_spans_two_remote_hosts_and_a_killed_apply_leaves_no_stuck_lock() {
    if fleet::skip() {
        return;
    }
    let lab = FleetLab::with(3, three_host_lab);
    lab.ok(&["apply", "--auto-approve"]);
    // web-1 and web-2 hear each other across the hosts; db-1 hears neither, nor they it.
    wait_console(&lab, "host-a", "web-1", "testguest: nic0 rx from=web-2");
    wait_console(&lab, "host-b", "web-2", "testguest: nic0 rx from=web-1");
    wait_console(&lab, "host-c", "db-1", "testguest: ok");
    for (host, vm) in [("host-a", "web-1"), ("host-b", "web-2"), ("host-c", "db-1")] {
        let console = console_of(&lab, host, vm);
        let heard: Vec<&str> = console.lines().filter(|l| l.contains("rx from=")).collect();
        let expected = match vm {
            "web-1" => vec!["testguest: nic0 rx from=web-2"],
            "web-2" => vec!["testguest: nic0 rx from=web-1"],
            _ => vec![],
        };
        assert_eq!(heard, expected, "{vm}:\n{console}");
    }
    assert_eq!(lab.planned(&[]), Vec::<String>::new());

    // Drift on host b: its tunnel is deleted; exactly that VLAN's update repairs it.
    let vxlan = lab
        .fleet
        .host("host-b")
        .netns
        .ip(&["-o", "link", "show", "type", "vxlan"]);
    let name = vxlan
        .split(':')
        .nth(1)
        .map(|n| n.trim().to_owned())
        .expect("host b has its tunnel");
    lab.fleet.host("host-b").netns.ip(&["link", "del", &name]);
    assert_eq!(lab.planned(&[]), ["update vlan.front@b"]);
    lab.ok(&["apply", "--auto-approve"]);
    assert_eq!(lab.planned(&[]), Vec::<String>::new());

    // kill -9 of an apply in mid-run: the next apply finds no stuck lock on any host
    // and converges.
    // With one connection per run (the opt-out), the lock goes with the killed run's
    // ssh connection; with the kept ones (the other test), with its socket.
    lab.killed_apply_converges(Some("none"));
    assert_eq!(lab.planned(&[]), Vec::<String>::new());

    lab.ok(&["destroy", "--auto-approve"]);
    for host in ["host-a", "host-b", "host-c"] {
        let left = files_in(&lab.state(host).join("fleet"));
        assert!(left.iter().all(|f| f == "lock"), "{host}: {left:?}");
        let links = lab.fleet.host(host).netns.ip(&["-o", "link", "show"]);
        assert!(!links.contains("vx"), "{host}: {links}");
    }
    lab.fleet
        .close_kept()
        .expect("nothing of vmctl runs once the kept connections are closed");
}

/// The three-host lab with `front` served by DHCP from host a (its `gateway-host`), and
/// web-2 on host b asking for its lease across the tunnel.
fn dhcp_lab(fleet: &Fleet) -> String {
    three_host_lab(fleet)
        .replace(
            "vlan \"front\" network=\"lan\" id=100\n",
            "vlan \"front\" network=\"lan\" id=100 {\n    gateway \"10.100.0.1/24\"\n    \
             gateway-host \"a\"\n    dhcp #true\n}\n",
        )
        .replace(
            "testguest.name=web-2 testguest.listen=20000",
            "testguest.name=web-2 testguest.dhcp",
        )
}

#[test]
fn a_spanning_vlan_is_served_by_dhcp_from_its_gateway_host_through_the_agent() {
    if fleet::skip()
        || crate::support::skip_unless(crate::support::which("dnsmasq").is_some(), "dnsmasq")
        || crate::support::skip_unless(crate::support::which("dig").is_some(), "dig")
    {
        return;
    }
    let lab = FleetLab::with(3, dhcp_lab);
    let planned = lab.planned(&[]);
    let servers: Vec<&String> = planned.iter().filter(|c| c.contains("dhcp.")).collect();
    assert_eq!(servers, ["create dhcp.front@a"], "{planned:?}");
    lab.ok(&["apply", "--auto-approve"]);
    let list: Value = serde_json::from_str(&lab.ok(&["list", "--json"])).expect("list JSON");
    let web2 = list["vms"]
        .as_array()
        .expect("vms")
        .iter()
        .find(|v| v["name"] == "web-2")
        .and_then(|v| v["ips"][0].as_str())
        .expect("web-2's address")
        .to_owned();
    // The lease crosses the tunnel from host a's dnsmasq to the guest on host b.
    wait_console(
        &lab,
        "host-b",
        "web-2",
        &format!("testguest: dhcp lease {web2}/24 gw 10.100.0.1 dns 10.100.0.1"),
    );
    let dir = lab.state("host-a").join("fleet/dhcp/front");
    let pid: i32 = std::fs::read_to_string(dir.join("pid"))
        .expect("dnsmasq's pid file on host a")
        .trim()
        .parse()
        .expect("a pid");
    assert!(crate::vm::alive(pid));
    assert!(!lab.state("host-b").join("fleet/dhcp").exists());
    let dig = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.fleet.host("host-a").netns.name])
        .args(["dig", "+short", "+time=2", "@10.100.0.1", "web-2.fleet"])
        .output()
        .expect("dig runs");
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), web2);
    assert_eq!(lab.planned(&[]), Vec::<String>::new());
    let status = lab.ok(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("dhcp.front ") && l.contains(&format!("pid={pid}"))),
        "{status}"
    );

    lab.ok(&["destroy", "--auto-approve"]);
    crate::vm::wait_gone(pid, std::time::Duration::from_secs(5));
    assert!(!crate::vm::alive(pid), "destroy stops dnsmasq on host a");
    assert!(!dir.exists());
    lab.fleet
        .close_kept()
        .expect("nothing of vmctl runs once the kept connections are closed");
}
