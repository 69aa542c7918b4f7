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
    }
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
    let seen: Vec<_> = vms
        .iter()
        .map(|v| (v.record.vm.name.as_str(), v.status))
        .collect();
    assert_eq!(
        seen,
        [("web-1", VmStatus::Crashed), ("web-2", VmStatus::Stopped)]
    );
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
    let seen: Vec<_> = vms.iter().map(|v| v.record.vm.name.as_str()).collect();
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
fn the_vmm_spec_carries_disks_and_nics() {
    let paths = VmPaths::new(Path::new("/s"), "lab", "web-1");
    let devices = VmDevices {
        disks: vec!["/p/root.raw".into()],
        nics: vec![("vmtap0".into(), "52:54:00:00:00:01".into())],
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
