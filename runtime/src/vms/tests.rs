use super::*;
use vmctl_schema::VmState;

fn vm(name: &str) -> Vm {
    Vm {
        name: name.into(),
        host: "local".into(),
        cpus: 1,
        memory: 64 << 20,
        kernel: "/k".into(),
        initrd: None,
        cmdline: "console=ttyS0".into(),
        disks: vec!["root".into()],
        nics: Vec::new(),
        cpuset: None,
        state: VmState::Running,
        depends_on: Vec::new(),
        ip_cmdline: false,
        ip_argument: None,
        migrate: true,
        migration_downtime: None,
        cpuid_mask: Vec::new(),
    }
}

#[test]
fn ip_cmdline_appends_the_planners_argument() {
    let paths = VmPaths::new(Path::new("/s"), "lab", "web-1");
    let mut with = vm("web-1");
    with.ip_argument = Some("ip=10.100.0.2::10.100.0.1:255.255.255.0:web-1:eth0:off".into());
    // Without `ip-cmdline` the argument is not the kernel's.
    let spec = vmm_spec(&with, &VmDevices::default(), &paths).unwrap();
    assert_eq!(spec.cmdline, "console=ttyS0");
    with.ip_cmdline = true;
    let spec = vmm_spec(&with, &VmDevices::default(), &paths).unwrap();
    assert_eq!(
        spec.cmdline,
        "console=ttyS0 ip=10.100.0.2::10.100.0.1:255.255.255.0:web-1:eth0:off"
    );
}

fn host(dir: &Path) -> VmHost<'_> {
    VmHost {
        project: "lab",
        state_dir: dir,
        netns: None,
        vmctl: Path::new("/nonexistent/vmctl"),
    }
}

#[test]
fn a_vm_left_running_without_a_process_crashed() {
    let dir = tempfile::tempdir().unwrap();
    write_record(&host(dir.path()), &vm("web-1"), true).unwrap();
    write_record(&host(dir.path()), &vm("web-2"), false).unwrap();
    // Another project's VM and a dir without a record are not seen.
    let other = VmHost {
        project: "other",
        ..host(dir.path())
    };
    write_record(&other, &vm("x"), true).unwrap();
    fs::create_dir_all(vms_dir(dir.path(), "lab").join("half")).unwrap();
    let (vms, bad) = observe_vms(dir.path(), "lab").unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let seen: Vec<_> = vms.iter().map(|v| (v.name.as_str(), v.status)).collect();
    assert_eq!(
        seen,
        [("web-1", VmStatus::Crashed), ("web-2", VmStatus::Stopped)]
    );
}

#[test]
fn a_record_is_written_with_its_format_version_in_front_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_record(&host(dir.path()), &vm("web-1"), true).unwrap();
    let text = fs::read_to_string(&paths.record).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["format-version"], RECORD_FORMAT_VERSION, "{text}");
    assert!(
        text.trim_start().starts_with("{\n  \"format-version\""),
        "{text}"
    );
    let record = read_record(dir.path(), "lab", "web-1").unwrap().unwrap();
    assert_eq!(record.vm.name, "web-1");
    assert!(record.running);
}

#[test]
fn a_bad_record_is_that_vms_problem_alone() {
    use crate::host::records::Cause;
    let dir = tempfile::tempdir().unwrap();
    write_record(&host(dir.path()), &vm("web-1"), true).unwrap();
    let corrupt = write_record(&host(dir.path()), &vm("web-2"), true).unwrap();
    fs::write(&corrupt.record, "{\"project\": \"lab\", \"vm\": ").unwrap();
    let newer = write_record(&host(dir.path()), &vm("web-3"), true).unwrap();
    fs::write(&newer.record, r#"{"format-version": 9, "vm": 1}"#).unwrap();
    fs::write(vms_dir(dir.path(), "lab").join("stray"), "not a dir").unwrap();
    let (vms, bad) = observe_vms(dir.path(), "lab").unwrap();
    let seen: Vec<_> = vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(seen, ["web-1"]);
    let bad: Vec<_> = bad.iter().map(|b| (b.name.as_str(), b.cause)).collect();
    assert_eq!(
        bad,
        [
            ("stray", Cause::Stray),
            ("web-2", Cause::Corrupt),
            ("web-3", Cause::Newer)
        ]
    );
}

#[test]
fn a_stale_pid_file_is_not_a_running_vm() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_record(&host(dir.path()), &vm("web-1"), true).unwrap();
    // Our own pid is alive but is not a `vmctl vmm`.
    fs::write(&paths.pid, format!("{}\n", std::process::id())).unwrap();
    assert_eq!(probe(&paths), Probe::Gone);
    assert!(!stop_vm(&host(dir.path()), "web-1", Duration::from_millis(10)).unwrap());
    assert!(!paths.pid.exists());
    let record = read_record(dir.path(), "lab", "web-1").unwrap().unwrap();
    assert!(!record.running);
    delete_vm(&host(dir.path()), "web-1", Duration::from_millis(10)).unwrap();
    assert!(!paths.dir.exists());
}

#[test]
fn the_vmm_spec_boots_the_hosts_copy_of_the_kernel_when_there_is_one() {
    let paths = VmPaths::new(Path::new("/s"), "lab", "web-1");
    let named = vmm_spec(&vm("web-1"), &VmDevices::default(), &paths).unwrap();
    let devices = VmDevices {
        kernel: Some("/cache/sha256-k".into()),
        initrd: Some("/cache/sha256-i".into()),
        ..VmDevices::default()
    };
    let cached = vmm_spec(&vm("web-1"), &devices, &paths).unwrap();
    let (named, cached) = (
        serde_json::to_value(&named).unwrap(),
        serde_json::to_value(&cached).unwrap(),
    );
    assert_ne!(named["kernel"], "/cache/sha256-k");
    assert_eq!(cached["kernel"], "/cache/sha256-k");
    assert_eq!(cached["initrd"], "/cache/sha256-i");
}

#[test]
fn the_vmm_spec_carries_disks_and_nics() {
    let paths = VmPaths::new(Path::new("/s"), "lab", "web-1");
    let devices = VmDevices {
        disks: vec!["/p/root.raw".into()],
        nics: vec![("vmtap0".into(), "52:54:00:00:00:01".into())],
        ..VmDevices::default()
    };
    let spec = vmm_spec(&vm("web-1"), &devices, &paths).unwrap();
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["devices"]["disks"][0]["path"], "/p/root.raw");
    assert_eq!(json["devices"]["nics"][0]["tap"], "vmtap0");
    assert_eq!(json["devices"]["nics"][0]["mac"], "52:54:00:00:00:01");
    assert_eq!(json["pid_file"], "/s/lab/vms/web-1/vmm.pid");
    let bad = VmDevices {
        nics: vec![("t".into(), "nope".into())],
        ..VmDevices::default()
    };
    assert!(matches!(
        vmm_spec(&vm("web-1"), &bad, &paths),
        Err(VmError::InvalidMac { .. })
    ));
}

#[test]
fn names_that_are_not_file_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        read_record(dir.path(), "lab", "../x"),
        Err(VmError::InvalidName { .. })
    ));
}

/// A live process whose argv has the word `vmm` (as `tail -f vmm` would), named by the
/// pid file of a VM left running: not the VM's VMM, with or without a lock file, and
/// never signalled.
#[test]
fn a_pid_file_naming_another_process_is_not_the_vmm() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let mut other = std::process::Command::new("sleep")
        .arg0("vmm")
        .arg("30")
        .spawn()
        .unwrap();
    for with_lock in [false, true] {
        let paths = write_record(&host(dir.path()), &vm("web-1"), true).unwrap();
        if with_lock {
            fs::write(&paths.lock, "").unwrap();
        }
        fs::write(&paths.pid, format!("{}\n", other.id())).unwrap();
        assert_eq!(vmm_pid(&paths), None);
        assert_eq!(probe(&paths), Probe::Gone);
        let seen = observe_vm(dir.path(), "lab", "web-1").unwrap().unwrap();
        assert_eq!(seen.status, VmStatus::Crashed);
        assert!(!stop_vm(&host(dir.path()), "web-1", Duration::from_millis(10)).unwrap());
        delete_vm(&host(dir.path()), "web-1", Duration::from_millis(10)).unwrap();
        assert!(
            other.try_wait().unwrap().is_none(),
            "the other process was signalled"
        );
    }
    other.kill().unwrap();
    other.wait().unwrap();
}

#[test]
fn state_files_are_private_whatever_was_there() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let vm_dir = vms_dir(dir.path(), "lab").join("web-1");
    fs::create_dir_all(&vm_dir).unwrap();
    for d in [&vm_dir, &vms_dir(dir.path(), "lab")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
    }
    let paths = write_record(&host(dir.path()), &vm("web-1"), true).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&paths.dir), 0o700);
    assert_eq!(mode(&vms_dir(dir.path(), "lab")), 0o700);
    assert_eq!(mode(&paths.record), 0o600);
}

#[test]
fn the_vmms_own_reason_is_passed_on() {
    use super::process::failure_reason;
    assert_eq!(
        failure_reason("error: disk /d is in use\n", b"Error: vmctl::vmm::start\n"),
        "disk /d is in use"
    );
    // Without the line, the diagnostic's message, not its code.
    let stderr = "Error: vmctl::vmm::load\n\n  \u{d7} the kernel is not an ELF64 x86-64 file\n";
    assert_eq!(
        failure_reason("", stderr.as_bytes()),
        "the kernel is not an ELF64 x86-64 file"
    );
    assert_eq!(failure_reason("", b""), "the VMM printed no reason");
}

/// A launcher that hangs (as `vmctl vmm --spec` would reading a FIFO named as the
/// kernel) is killed past its deadline: the start fails, nothing is left running.
#[test]
fn a_hanging_launcher_is_killed() {
    use super::process::{wait_launcher, LaunchFailure};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let paths = write_record(&host(dir.path()), &vm("web-1"), true).unwrap();
    let child = Command::new("sleep")
        .arg("600")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = std::time::Instant::now();
    let waited = wait_launcher(
        child,
        &paths,
        Duration::from_millis(100),
        Duration::from_millis(100),
    );
    assert!(matches!(waited, Err(LaunchFailure::TimedOut(t)) if t == Duration::from_millis(100)));
    assert!(started.elapsed() < Duration::from_secs(5));
    // Killed and reaped: the pid names no process (or, reused, not a `sleep 600`).
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert_ne!(cmdline, b"sleep\x00600\x00");
    let Err(failure) = waited else { unreachable!() };
    let err = failure.into_vm_error("web-1", Path::new("/v/vmctl"), &paths);
    let text = err.to_string();
    assert!(text.contains("did not start the VM within 100ms"), "{text}");
    // The log it points at exists and says it.
    let log = fs::read_to_string(&paths.console).unwrap();
    assert!(log.contains("did not start the VM within 100ms"), "{log}");
}
