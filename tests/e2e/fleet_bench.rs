//! The fleet benchmark (issue 10), run by `bench/fleet.sh` (ignored in the suite: it is
//! a measurement, not a test): for each host count in `HOSTS` (default `10`), a fleet of
//! that many sshd namespaces ([`crate::fleet`]) with `VMS` test-guest VMs each (default
//! 10, no disks or NICs); it times the apply from empty (vmctl shipped to every host
//! first), a second apply from empty with vmctl already there, and the no-change plan
//! three ways, interleaved round by round (`RUNS` rounds, default 7, each in another
//! order) so that load from elsewhere falls on all three alike: against the fleet as a
//! user runs it by default (the connections and agents of the previous run kept, in
//! the fleet's control dir), against the fleet with `--ssh-control-dir none` (one
//! connection and agent per host per run), and against the same number of VMs on one
//! local host — the baseline of the ratios. It prints medians, the spread (min–max), and the median
//! of the per-round ratios.
//!
//! `HOLD=FILE` keeps the fleet and the local VMs up after the measured rounds until
//! FILE is removed (it is written with the commands to run by hand, for profiling).

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

/// [`timed`], with `VMCTL_SSH_CONTROL_DIR` set to `control` when given (else the
/// fleet's own kept dir).
fn timed_with(
    fleet: Option<&Fleet>,
    dir: &Path,
    args: &[&str],
    control: Option<&str>,
) -> (Output, Duration) {
    let bin = env!("CARGO_BIN_EXE_vmctl");
    let mut command = match fleet {
        Some(fleet) => fleet.controller_command(bin),
        None => std::process::Command::new(bin),
    };
    if let Some(control) = control {
        command.env("VMCTL_SSH_CONTROL_DIR", control);
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

/// The times of one kind of run, and what they say.
#[derive(Default)]
struct Times(Vec<Duration>);

impl Times {
    fn median(&self) -> f64 {
        median(self.0.iter().map(Duration::as_secs_f64).collect())
    }

    /// `0.123 s (0.110–0.140)`.
    fn show(&self) -> String {
        let secs: Vec<f64> = self.0.iter().map(Duration::as_secs_f64).collect();
        let min = secs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = secs.iter().copied().fold(0.0, f64::max);
        format!("{:.3} s ({min:.3}–{max:.3})", self.median())
    }

    /// The median and spread of the ratios, round by round, to `base`.
    fn ratio(&self, base: &Times) -> String {
        let ratios: Vec<f64> = self
            .0
            .iter()
            .zip(&base.0)
            .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
            .collect();
        let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let max = ratios.iter().copied().fold(0.0, f64::max);
        format!("{:.1}× ({min:.1}–{max:.1})", median(ratios))
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One no-change plan; its wall time.
fn plan(fleet: Option<&Fleet>, dir: &Path, control: Option<&str>) -> Duration {
    let (out, took) = timed_with(fleet, dir, &["plan", "--detailed-exitcode"], control);
    assert_eq!(out.status.code(), Some(0), "a change left:\n{}", text(&out));
    took
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Waits until the file `hold` is removed, having written into it how to reach what
/// the benchmark keeps up.
fn hold(hold: &Path, fleet: &Fleet, dir: &Path, local_dir: &Path) {
    let how = format!(
        "# Remove this file to end the benchmark.\n\
         controller netns: {}\n\
         fleet:  ip netns exec {} env VMCTL_SSH_CONFIG={} VMCTL_SSH_CONTROL_DIR={} {} plan {}\n\
         none:   ... VMCTL_SSH_CONTROL_DIR=none\n\
         local:  {} plan {}\n",
        fleet.controller_netns(),
        fleet.controller_netns(),
        fleet.ssh_config.display(),
        fleet.control_dir.display(),
        env!("CARGO_BIN_EXE_vmctl"),
        dir.display(),
        env!("CARGO_BIN_EXE_vmctl"),
        local_dir.display(),
    );
    std::fs::write(hold, &how).expect("hold file");
    println!("holding until {} is removed:\n{how}", hold.display());
    while hold.exists() {
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "a benchmark: run it with bench/fleet.sh"]
fn fleet_bench() {
    if fleet::skip() {
        return;
    }
    let vms: usize = env_or("VMS", "10").parse().expect("VMS is a number");
    let runs: usize = env_or("RUNS", "7").parse().expect("RUNS is a number");
    let counts: Vec<usize> = env_or("HOSTS", "10")
        .split_whitespace()
        .map(|n| n.parse().expect("HOSTS are numbers"))
        .collect();
    println!("| hosts × VMs | apply from empty (ships vmctl) | apply from empty (vmctl there) | no-change plan (default: kept) | ratio | … `--ssh-control-dir none` | ratio | same VMs on one local host |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
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

        // The baseline: as many VMs on this machine as one host, up at the same time.
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

        // Connections kept between runs (the default): the applies opened them and
        // started each host's kept agent; the next runs find them.
        plan(Some(&fleet), &dir, None);
        plan(Some(&fleet), &dir, Some("none"));
        plan(None, &local_dir, None);

        let (mut default, mut none, mut baseline) =
            (Times::default(), Times::default(), Times::default());
        for round in 0..runs {
            for kind in (0..3).map(|k| (k + round) % 3) {
                match kind {
                    0 => default.0.push(plan(Some(&fleet), &dir, None)),
                    1 => none.0.push(plan(Some(&fleet), &dir, Some("none"))),
                    _ => baseline.0.push(plan(None, &local_dir, None)),
                }
            }
        }
        if let Ok(file) = std::env::var("HOLD") {
            hold(Path::new(&file), &fleet, &dir, &local_dir);
        }
        ok(None, &local_dir, &["destroy", "--auto-approve"]);
        ok(Some(&fleet), &dir, &["destroy", "--auto-approve"]);
        let again = ok(Some(&fleet), &dir, &["apply", "--auto-approve"]);
        ok(Some(&fleet), &dir, &["destroy", "--auto-approve"]);
        println!(
            "| {hosts} × {vms} | {} | {} | {} | {} | {} | {} | {} |",
            secs(first),
            secs(again),
            default.show(),
            default.ratio(&baseline),
            none.show(),
            none.ratio(&baseline),
            baseline.show(),
        );
    }
}
