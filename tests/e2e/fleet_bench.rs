//! The fleet benchmark (issue 10), run by `bench/fleet.sh` (ignored in the suite: it is
//! a measurement, not a test): for each host count in `HOSTS` (default `10`), a fleet of
//! that many sshd namespaces ([`crate::fleet`]) with `VMS` test-guest VMs each (default
//! 10, no disks or NICs); it times the apply from empty (vmctl shipped to every host
//! first), a second apply from empty with vmctl already there, the no-change plan (the
//! median of `RUNS`, default 5), and the no-change plan of the same number of VMs on one
//! local host, in the same run, as the baseline of the ratio.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::fleet::{self, Fleet};
use crate::lab::text;
use crate::vm::guest;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The config: `vms` VMs on each of `hosts` (names and `host` node bodies).
fn config(hosts: &[(String, String)], vms: usize) -> String {
    let mut kdl = String::from("project \"bench\"\n");
    for (name, body) in hosts {
        kdl.push_str(&format!(
            "host \"{name}\" {{\n{body}    cpus 256\n    memory \"256GiB\"\n}}\n"
        ));
        for i in 1..=vms {
            kdl.push_str(&format!(
                "vm \"{name}-vm-{i}\" host=\"{name}\" {{\n    cpus 1\n    memory \"32MiB\"\n    kernel \"{}\"\n    cmdline \"console=ttyS0 testguest.halt\"\n}}\n",
                guest().display()
            ));
        }
    }
    kdl
}

/// Runs `vmctl ARGS… DIR` (from the controller when `fleet` is given); its output and
/// wall time.
fn timed(fleet: Option<&Fleet>, dir: &Path, args: &[&str]) -> (Output, Duration) {
    timed_with(fleet, dir, args, None)
}

/// [`timed`], with `VMCTL_SSH_CONTROL_DIR` set to `kept` when given.
fn timed_with(
    fleet: Option<&Fleet>,
    dir: &Path,
    args: &[&str],
    kept: Option<&Path>,
) -> (Output, Duration) {
    let bin = env!("CARGO_BIN_EXE_vmctl");
    let mut command = match fleet {
        Some(fleet) => fleet.controller_command(bin),
        None => std::process::Command::new(bin),
    };
    if let Some(kept) = kept {
        command.env("VMCTL_SSH_CONTROL_DIR", kept);
    }
    command.args(args).arg(dir);
    let started = Instant::now();
    let out = command.output().expect("vmctl runs");
    (out, started.elapsed())
}

fn ok(fleet: Option<&Fleet>, dir: &Path, args: &[&str]) -> Duration {
    let (out, took) = timed(fleet, dir, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "vmctl {args:?}:\n{}",
        text(&out)
    );
    took
}

fn median_plan(fleet: Option<&Fleet>, dir: &Path, runs: usize, kept: Option<&Path>) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let (out, took) = timed_with(fleet, dir, &["plan", "--detailed-exitcode"], kept);
            assert_eq!(out.status.code(), Some(0), "a change left:\n{}", text(&out));
            took
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

#[test]
#[ignore = "a benchmark: run it with bench/fleet.sh"]
fn fleet_bench() {
    if fleet::skip() {
        return;
    }
    let vms: usize = env_or("VMS", "10").parse().expect("VMS is a number");
    let runs: usize = env_or("RUNS", "5").parse().expect("RUNS is a number");
    let counts: Vec<usize> = env_or("HOSTS", "10")
        .split_whitespace()
        .map(|n| n.parse().expect("HOSTS are numbers"))
        .collect();
    println!("| hosts × VMs | apply from empty (ships vmctl) | apply from empty (vmctl there) | no-change plan | … connections kept | same VMs on one local host | ratio (kept) |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for hosts in counts {
        let fleet = Fleet::with_hosts(hosts);
        let dir = fleet.dir.path().join("config");
        std::fs::create_dir_all(&dir).expect("config dir");
        let names: Vec<(String, String)> = fleet
            .hosts
            .iter()
            .map(|h| {
                (
                    h.name.clone(),
                    format!(
                        "    ssh \"{}\"\n    state-dir \"{}\"\n",
                        h.name,
                        h.state_dir.display()
                    ),
                )
            })
            .collect();
        std::fs::write(dir.join("bench.kdl"), config(&names, vms)).expect("config");
        let first = ok(Some(&fleet), &dir, &["apply", "--auto-approve"]);
        let plan = median_plan(Some(&fleet), &dir, runs, None);
        // Connections kept between runs (`--ssh-control-dir`): the first run opens
        // them, the measured ones reuse them.
        let kept = fleet.dir.path().join("ssh-control");
        std::fs::create_dir(&kept).expect("control dir");
        std::fs::set_permissions(&kept, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("0700");
        median_plan(Some(&fleet), &dir, 1, Some(&kept));
        let plan_kept = median_plan(Some(&fleet), &dir, runs, Some(&kept));
        ok(Some(&fleet), &dir, &["destroy", "--auto-approve"]);
        let again = ok(Some(&fleet), &dir, &["apply", "--auto-approve"]);
        ok(Some(&fleet), &dir, &["destroy", "--auto-approve"]);

        // The baseline: as many VMs on this machine as one host, in the same run.
        let local = tempfile::tempdir().expect("tempdir");
        let local_dir = local.path().join("config");
        std::fs::create_dir_all(&local_dir).expect("config dir");
        let body = format!(
            "    state-dir \"{}\"\n",
            local.path().join("state").display()
        );
        let one = [("local".to_owned(), body)];
        std::fs::write(local_dir.join("bench.kdl"), config(&one, hosts * vms)).expect("config");
        ok(None, &local_dir, &["apply", "--auto-approve"]);
        let baseline = median_plan(None, &local_dir, runs, None);
        ok(None, &local_dir, &["destroy", "--auto-approve"]);
        println!(
            "| {hosts} × {vms} | {} | {} | {} | {} | {} | {:.2}× ({:.2}×) |",
            secs(first),
            secs(again),
            secs(plan),
            secs(plan_kept),
            secs(baseline),
            plan.as_secs_f64() / baseline.as_secs_f64(),
            plan_kept.as_secs_f64() / baseline.as_secs_f64()
        );
    }
}
