//! `vmctl vmm` (hidden): the VMM process of one VM. What the process does is the
//! runtime's (`vmctl_runtime::vmm::entry`, which the agent of a remote host shares);
//! this parses the arguments, renders its errors and picks the exit code.
//!
//! - `vmctl vmm --spec FILE [--foreground]` runs the VM a spec describes, detached
//!   (double fork, setsid, stdio to the console log) unless `--foreground`; the
//!   original process exits once the VMM serves its control socket (0, printing the
//!   VMM's pid) or failed (1, printing `error: WHY` on stdout — the VMM's own message,
//!   for the runtime to pass on — and the diagnostic on stderr). A VMM that has not
//!   started within 10 s (`VMCTL_VMM_START_TIMEOUT_MS`) is killed.
//!
//! Before anything of the VM is opened the VMM takes the VM's lock
//! (`vmctl_runtime::vmm::lock`): a second VMM for the same VM refuses to start.
//! - `vmctl vmm run --kernel PATH …` runs a VM in the foreground with its serial
//!   output on stdout: exit 0 when the guest powers off, 2 when it faults, 1 when the
//!   VM cannot be built. `--disk PATH[,ro]` and `--nic TAP[,mac=52:54:00:…]` (both
//!   repeatable) add virtio disks and NICs; the guest sees the disks first, then the
//!   NICs, each in the order given.
//! - Both confine every VMM thread to its seccomp filter (docs/seccomp.md) unless
//!   `--no-seccomp`; `--seccomp-log` (or `VMCTL_VMM_SECCOMP_LOG=1`) logs instead of
//!   killing, for writing filters. Both jail the VMM (docs/sandbox.md: its own
//!   namespaces, uid and cgroup, no capabilities) unless `--no-sandbox`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, FromArgMatches, Subcommand};
use miette::{miette, Report};
use vmctl_runtime::vmm::devices::virtio::block::BlockError;
use vmctl_runtime::vmm::entry::{self, EntryError, Outcome, Restore, Start};
use vmctl_runtime::vmm::seccomp::Action;
use vmctl_runtime::vmm::snapshot::SnapshotError;
use vmctl_runtime::vmm::spec::{self, Disk, Mac, Nic, Size, SpecError, VmmSpec};
use vmctl_runtime::vmm::virtio_wiring::WiringError;
use vmctl_runtime::vmm::{Exit, VmmError};

/// Runs one VM in this process.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct VmmArgs {
    /// The VMM spec (JSON) of the VM to run.
    #[arg(long, value_name = "FILE", required = false)]
    spec: Option<PathBuf>,
    /// Stay in the foreground instead of detaching.
    #[arg(long, requires = "spec")]
    foreground: bool,
    /// Restore the snapshot in DIR (its `state` and `memory` files, as
    /// `vmctl snapshot create` writes them) instead of booting: the spec must describe
    /// the same VM (vCPUs, memory, PIT, devices).
    #[arg(long, value_name = "DIR", requires = "spec")]
    restore: Option<PathBuf>,
    #[command(flatten)]
    seccomp: SeccompArgs,
    #[command(subcommand)]
    command: Option<VmmCommand>,
}

/// How the VMM's threads are filtered.
#[derive(Debug, Args)]
struct SeccompArgs {
    /// Run without seccomp, for debugging: no thread of the VMM gets its filter, so
    /// any of them may make any system call (a bug or a guest that takes over a thread
    /// gets them all). Nothing else changes.
    #[arg(long, conflicts_with = "seccomp_log")]
    no_seccomp: bool,
    /// Log a system call outside a thread's filter (`dmesg`: `audit: type=1326 …
    /// syscall=N`) instead of killing the VMM, for writing filters
    /// (docs/seccomp.md). Also VMCTL_VMM_SECCOMP_LOG=1, which reaches the VMMs that
    /// `vmctl apply` starts.
    #[arg(long, env = "VMCTL_VMM_SECCOMP_LOG", value_parser = clap::builder::BoolishValueParser::new())]
    seccomp_log: bool,
    /// Run without the jail, for debugging: the VMM stays this process, as root with
    /// every capability, in the host's mount, PID and IPC namespaces, with the
    /// host's files in reach and no cgroup limits (docs/sandbox.md). The seccomp
    /// filters stay unless `--no-seccomp` too.
    #[arg(long)]
    no_sandbox: bool,
}

impl SeccompArgs {
    /// What a call outside a filter gets; `None` for no filters.
    fn action(&self) -> Option<Action> {
        match (self.no_seccomp, self.seccomp_log) {
            (true, _) => None,
            (false, true) => Some(Action::Log),
            (false, false) => Some(Action::KillProcess),
        }
    }
}

#[derive(Debug, Subcommand)]
enum VmmCommand {
    /// Boots a kernel in the foreground, guest serial output on stdout.
    Run(RunArgs),
    /// Compiles every thread kind's seccomp filter as a VMM does at start-up and
    /// prints, per kind, how many system calls it allows and its size in BPF
    /// instructions (the rules, with their reasons: runtime/src/vmm/seccomp/).
    Filters,
}

/// `vmctl vmm run`.
#[derive(Debug, Args)]
struct RunArgs {
    /// ELF vmlinux or bzImage.
    #[arg(long, value_name = "PATH")]
    kernel: PathBuf,
    /// Initial ramdisk.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = spec::DEFAULT_CMDLINE)]
    cmdline: String,
    /// vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    cpus: u32,
    /// Guest memory, e.g. 128MiB, 1G.
    #[arg(long, value_name = "SIZE", default_value = "128MiB")]
    memory: String,
    /// CPUID features to hide from the guest (names as in /proc/cpuinfo).
    #[arg(long, value_name = "FEATURE,…", value_delimiter = ',')]
    mask_cpuid: Vec<String>,
    /// Create the in-kernel PIT (Linux guests want it; the test guest does not).
    #[arg(long)]
    pit: bool,
    /// A virtio-blk disk over a raw file; `,ro` opens it read-only. Repeatable.
    #[arg(long, value_name = "PATH[,ro]", value_parser = parse_disk)]
    disk: Vec<Disk>,
    /// A virtio-net NIC over an existing tap (opened in this network namespace);
    /// the MAC is derived from the tap name unless given. Repeatable.
    #[arg(long, value_name = "TAP[,mac=MAC]", value_parser = parse_nic)]
    nic: Vec<Nic>,
    #[command(flatten)]
    seccomp: SeccompArgs,
}

/// `PATH` or `PATH,ro` (also `,rw`).
fn parse_disk(arg: &str) -> Result<Disk, String> {
    let (path, read_only) = match arg.rsplit_once(',') {
        Some((path, "ro")) => (path, true),
        Some((path, "rw")) => (path, false),
        Some((_, opt)) => {
            return Err(format!(
                "unknown disk option `{opt}` (expected `ro` or `rw`)"
            ))
        }
        None => (arg, false),
    };
    if path.is_empty() {
        return Err("empty disk path".into());
    }
    Ok(Disk {
        path: path.into(),
        read_only,
    })
}

/// `TAP` or `TAP,mac=aa:bb:cc:dd:ee:ff`.
fn parse_nic(arg: &str) -> Result<Nic, String> {
    let (tap, mac) = match arg.split_once(',') {
        Some((tap, opt)) => match opt.strip_prefix("mac=") {
            Some(mac) => (tap, Some(mac.parse::<Mac>().map_err(|e| e.to_string())?)),
            None => return Err(format!("unknown NIC option `{opt}` (expected `mac=…`)")),
        },
        None => (arg, None),
    };
    Ok(Nic {
        tap: tap.to_string(),
        mac,
    })
}

/// The arguments of `vmctl vmm …` when that is the command line, parsed with a clap
/// command of `vmm` alone; `None` for every other command.
///
/// The VMM process lives as long as its VM, so what start-up touches stays resident:
/// building the whole CLI's clap tree (every subcommand, every help text) cost it code
/// pages and heap it never needs again (bench/boot.md has the figures). `vmctl vmm`
/// takes no global option (the runtime runs `vmctl vmm --spec FILE`), so its
/// arguments are its own.
/// `None` when the command is not `vmm`; a usage error (or help) is the caller's to
/// print and exit with.
pub fn parse_if_vmm() -> Option<Result<VmmArgs, clap::Error>> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    try_parse_vmm(&args)
}

/// [`parse_if_vmm`] of a given command line (`args[0]` is the binary).
fn try_parse_vmm(args: &[std::ffi::OsString]) -> Option<Result<VmmArgs, clap::Error>> {
    if args.get(1)?.as_encoded_bytes() != b"vmm" {
        return None;
    }
    let bin = std::path::Path::new(&args[0]);
    let bin = bin.file_name().unwrap_or(bin.as_os_str()).to_string_lossy();
    let command = VmmArgs::augment_args(clap::Command::new("vmm").bin_name(format!("{bin} vmm")));
    Some(
        command
            .try_get_matches_from(&args[1..])
            .and_then(|m| VmmArgs::from_arg_matches(&m)),
    )
}

/// Runs `vmctl vmm`.
pub fn run(args: VmmArgs) -> miette::Result<u8> {
    let (start, seccomp, jail) = match (args.command, args.spec) {
        (Some(VmmCommand::Run(run)), _) => {
            let seccomp = run.seccomp.action();
            let jail = !run.seccomp.no_sandbox;
            (Start::Inline(Box::new(inline_spec(run)?)), seccomp, jail)
        }
        (Some(VmmCommand::Filters), _) => return print_filters(),
        (None, Some(path)) => (
            Start::Spec {
                path,
                foreground: args.foreground,
                restore: args.restore.map(|dir| Restore { dir }),
            },
            args.seccomp.action(),
            !args.seccomp.no_sandbox,
        ),
        (None, None) => {
            return Err(miette!(
                code = "vmctl::vmm::usage",
                help = "vmctl vmm --spec FILE [--foreground], or vmctl vmm run --kernel PATH",
                "nothing to run"
            ))
        }
    };
    // A spec's VM says how it ended (on the console log when detached).
    let announce = matches!(start, Start::Spec { .. });
    let result = entry::run(start, seccomp, jail, &mut std::io::stdout());
    match &result {
        Ok(Outcome::Ended(Exit::PowerOff)) if announce => {
            eprintln!("vmctl vmm: the guest powered off")
        }
        Ok(Outcome::Ended(Exit::Killed)) if announce => eprintln!("vmctl vmm: the VM was killed"),
        _ => {}
    }
    finish(result)
}

/// `vmctl vmm filters`: a jailed VMM's filters (every VMM apply starts), then the
/// kinds whose filter differs without the jail (`--no-sandbox`).
fn print_filters() -> miette::Result<u8> {
    use vmctl_runtime::vmm::seccomp::{Action, Filters};
    let sizes = |jailed| Filters::new(Action::KillProcess, jailed).sizes();
    let (jailed, unjailed) = (sizes(true), sizes(false));
    println!(
        "{:<20} {:>9} {:>17}",
        "THREAD", "SYSCALLS", "BPF INSTRUCTIONS"
    );
    for (kind, syscalls, instructions) in &jailed {
        println!("{:<20} {syscalls:>9} {instructions:>17}", kind.to_string());
    }
    for (row, (kind, syscalls, instructions)) in unjailed.iter().enumerate() {
        if jailed.get(row) != Some(&(*kind, *syscalls, *instructions)) {
            let name = format!("{kind} --no-sandbox");
            println!("{name:<20} {syscalls:>9} {instructions:>17}");
        }
    }
    Ok(0)
}

/// The spec of `vmctl vmm run`.
fn inline_spec(args: RunArgs) -> miette::Result<VmmSpec> {
    let memory = spec::parse_size(&args.memory).map_err(|e| vmm_diagnostic(e.into()))?;
    let mut spec = VmmSpec::new(args.kernel);
    spec.initrd = args.initrd;
    spec.cmdline = args.cmdline;
    spec.cpus = args.cpus;
    spec.memory = Size(memory);
    spec.cpuid_mask = args.mask_cpuid;
    spec.pit = args.pit;
    spec.devices.disks = args.disk;
    spec.devices.nics = args.nic;
    Ok(spec)
}

/// Maps how the VMM ended to an exit code, printing a guest fault.
fn finish(result: Result<Outcome, EntryError>) -> miette::Result<u8> {
    let _ = std::io::stdout().flush();
    match result {
        Ok(_) => Ok(0),
        Err(EntryError::Vmm(e @ VmmError::GuestFault { .. })) => {
            eprintln!("{:?}", vmm_diagnostic(e));
            Ok(2)
        }
        Err(e) => Err(diagnostic(e)),
    }
}

/// The CLI's diagnostic for an entry error.
fn diagnostic(e: EntryError) -> Report {
    match e {
        EntryError::Vmm(e) => vmm_diagnostic(e),
        EntryError::Lock(e) => miette!(
            code = "vmctl::vmm::lock",
            help = "one VMM runs a VM: stop the other one (`vmctl destroy`, or `vmctl apply` after stopping it)",
            "{e}"
        ),
        EntryError::Process(e) => miette!(code = "vmctl::vmm::process", "{e}"),
        EntryError::Jail(e) => miette!(
            code = "vmctl::vmm::jail",
            help = "the VMM's jail needs root, cgroup memory and pids controllers (v2, or v1 hierarchies) and mount and PID namespaces; `vmctl vmm run --no-sandbox` runs without it, for debugging only (docs/sandbox.md)",
            "{e}"
        ),
        EntryError::NotStarted { why, console_log } => miette!(
            code = "vmctl::vmm::start",
            help = format!("the console log {} may say more", console_log.display()),
            "the VMM did not start: {why}"
        ),
    }
}

/// What a spec looks like, for a spec that cannot be parsed (a hint says what to write,
/// not where the code is).
const SPEC_HELP: &str = "write the spec as one JSON object, e.g. {\"kernel\": \"/boot/vmlinux\", \"cpus\": 1, \"memory\": \"128MiB\", \"console_log\": \"/tmp/vm.log\", \"devices\": {\"disks\": [{\"path\": \"/tmp/disk.raw\"}]}}; unknown fields are refused, and the error above names the line and column";

/// The CLI's diagnostic for an engine error: a code per kind and a hint.
fn vmm_diagnostic(e: VmmError) -> Report {
    let (code, help): (&str, Option<&str>) = match &e {
        VmmError::Spec(SpecError::Read { .. }) => (
            "vmctl::vmm::spec",
            Some("check the path given to --spec; it must be a readable file"),
        ),
        VmmError::Spec(SpecError::Parse { .. }) => ("vmctl::vmm::spec", Some(SPEC_HELP)),
        VmmError::Spec(SpecError::Kernel { .. } | SpecError::Initrd { .. }) => (
            "vmctl::vmm::image",
            Some("check the path; it must be a readable file"),
        ),
        VmmError::Spec(SpecError::Cpuid(_)) => ("vmctl::vmm::cpuid", None),
        VmmError::Virtio(WiringError::OpenDisk(BlockError::Locked { .. })) => (
            "vmctl::vmm::disk_in_use",
            Some("a disk written by a VM is locked for it: stop the VM or process using it first"),
        ),
        VmmError::Spec(SpecError::Disk { .. }) | VmmError::Virtio(WiringError::OpenDisk(_)) => (
            "vmctl::vmm::disk",
            Some("a disk must be an existing raw file, writable unless it is read-only"),
        ),
        VmmError::Spec(SpecError::Devices(_)) => ("vmctl::vmm::devices", None),
        VmmError::Virtio(WiringError::OpenTap(_) | WiringError::NoSuchTap { .. }) => (
            "vmctl::vmm::nic",
            Some("the tap must exist in the VMM's network namespace (e.g. `ip tuntap add dev NAME mode tap vnet_hdr`), and opening it needs CAP_NET_ADMIN"),
        ),
        VmmError::Spec(_) => ("vmctl::vmm::spec", None),
        VmmError::Memory(_) => (
            "vmctl::vmm::memory",
            Some("give the VM less memory, or free memory on the host"),
        ),
        VmmError::OpenKvm(_) => (
            "vmctl::vmm::kvm",
            Some("vmctl needs read-write access to /dev/kvm (hardware or nested virtualization)"),
        ),
        VmmError::Load(_) | VmmError::OpenImage { .. } => ("vmctl::vmm::load", None),
        VmmError::Snapshot(SnapshotError::CpuFeatures { .. }) => (
            "vmctl::vmm::snapshot_cpu",
            Some("restore the snapshot on a host whose CPU offers these features (and without a `cpuid-mask` hiding them), or boot the VM afresh"),
        ),
        VmmError::Snapshot(SnapshotError::Mismatch { .. }) => (
            "vmctl::vmm::snapshot_mismatch",
            Some("a snapshot restores only into the VM it was taken of: same vCPUs, memory, PIT and devices"),
        ),
        VmmError::Snapshot(_) => (
            "vmctl::vmm::snapshot",
            Some("the snapshot cannot be restored; take a new one with `vmctl snapshot create`"),
        ),
        VmmError::GuestFault { .. } => (
            "vmctl::vmm::guest_fault",
            Some("the guest crashed; its serial output above shows how far it got"),
        ),
        _ => ("vmctl::vmm::engine", None),
    };
    match help {
        Some(help) => miette!(code = code, help = help, "{e}"),
        None => miette!(code = code, "{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<std::ffi::OsString> {
        args.iter().map(Into::into).collect()
    }

    #[test]
    fn vmm_command_lines_are_parsed_alone_and_as_the_full_cli_parses_them() {
        use clap::Parser;
        for line in [
            &["vmctl", "vmm", "--spec", "/tmp/vmm.json", "--foreground"][..],
            &["/usr/bin/vmctl", "vmm", "--spec", "vmm.json"],
            &[
                "vmctl", "vmm", "run", "--kernel", "k", "--cpus", "2", "--disk", "d,ro",
            ],
            &["vmctl", "vmm"],
        ] {
            let alone = try_parse_vmm(&argv(line)).expect("a vmm line").unwrap();
            let full = crate::Cli::try_parse_from(line).unwrap();
            let crate::Command::Vmm(full) = full.command else {
                panic!("{line:?} is not `vmm` to the full CLI");
            };
            assert_eq!(format!("{alone:?}"), format!("{full:?}"), "{line:?}");
        }
        for other in [
            &["vmctl"][..],
            &["vmctl", "validate", "x"],
            &["vmctl", "--color", "never", "vmm"],
        ] {
            assert!(try_parse_vmm(&argv(other)).is_none(), "{other:?}");
        }
        let err = try_parse_vmm(&argv(&["vmctl", "vmm", "--bogus"]))
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("--bogus"), "{err}");
        let err = try_parse_vmm(&argv(&["vmctl", "vmm", "--foreground"]))
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("--spec"), "{err}");
    }

    #[test]
    fn spec_hints_say_what_to_write_not_where_the_code_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmm.json");
        let help = |text: Option<&str>| {
            if let Some(text) = text {
                std::fs::write(&path, text).unwrap();
            }
            let err = VmmSpec::from_file(&path).unwrap_err();
            let report = diagnostic(EntryError::Vmm(VmmError::Spec(err)));
            report.help().map(|h| h.to_string()).unwrap_or_default()
        };
        let missing = help(None);
        assert!(
            missing.contains("check the path given to --spec"),
            "{missing}"
        );
        let bad = help(Some("{\"kernel\": 7}"));
        assert!(!bad.contains("src/"), "{bad}");
        assert!(bad.contains("{\"kernel\": \"/boot/vmlinux\""), "{bad}");
        // The example in the hint is itself a spec that parses.
        let example = SPEC_HELP
            .split_once("e.g. ")
            .and_then(|(_, rest)| rest.split_once("; "))
            .map(|(json, _)| json)
            .unwrap();
        std::fs::write(&path, example).unwrap();
        let spec = VmmSpec::from_file(&path).unwrap();
        assert_eq!((spec.cpus, spec.memory.0), (1, 128 << 20));
    }

    #[test]
    fn disk_arguments() {
        let d = parse_disk("/tmp/a.raw").unwrap();
        assert_eq!((d.path, d.read_only), ("/tmp/a.raw".into(), false));
        let d = parse_disk("/tmp/a,b.raw,ro").unwrap();
        assert_eq!((d.path, d.read_only), ("/tmp/a,b.raw".into(), true));
        assert!(parse_disk("/tmp/a.raw,rx").unwrap_err().contains("`rx`"));
        assert!(parse_disk(",ro").is_err());
    }

    #[test]
    fn nic_arguments() {
        let n = parse_nic("tap0").unwrap();
        assert_eq!((n.tap.as_str(), n.mac), ("tap0", None));
        assert_eq!(n.mac(), Mac::derived("tap0"));
        let n = parse_nic("tap0,mac=52:54:00:00:00:0a").unwrap();
        assert_eq!(n.mac.unwrap().to_string(), "52:54:00:00:00:0a");
        assert!(parse_nic("tap0,mac=52:54")
            .unwrap_err()
            .contains("invalid MAC"));
        assert!(parse_nic("tap0,vlan=3").unwrap_err().contains("`vlan=3`"));
    }
}
