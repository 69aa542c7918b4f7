//! Records written by earlier vmctl releases (`tests/records/`, checked in) are read by
//! this one through the same functions observe and apply use. A change to a record type
//! that breaks reading them fails here. See `tests/records/README.md`.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::fs;
use std::path::{Path, PathBuf};

use vmctl_planner::record::RunState;
use vmctl_runtime::host::net::netns;
use vmctl_runtime::host::{origin, pool, records, volume};
use vmctl_runtime::vmm::spec::{SpecError, VmmSpec};
use vmctl_runtime::vms;

/// Where the fixtures say the pool is.
const FIXTURE_POOL: &str = "/var/lib/vmctl/pools/fast";

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/records")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes fixture `name` to `to`, its pool paths pointing at `pool`.
fn place(name: &str, to: &Path, pool: &Path) {
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    let text = fixture(name).replace(FIXTURE_POOL, pool.to_str().unwrap());
    fs::write(to, text).unwrap();
}

/// Fixture `name` read as VM `web-1`'s `spec.json`.
fn read_vm_record(name: &str) -> vms::VmRecord {
    let state = tempfile::tempdir().unwrap();
    let paths = vms::VmPaths::new(state.path(), "lab", "web-1");
    place(name, &paths.record, state.path());
    vms::read_record(state.path(), "lab", "web-1")
        .unwrap()
        .unwrap()
}

#[test]
fn an_unversioned_vm_record_is_read() {
    let record = read_vm_record("unversioned/spec.json");
    assert_eq!(record.project, "lab");
    assert!(record.running);
    let vm = record.vm.to_model();
    assert_eq!(vm.name, "web-1");
    assert_eq!((vm.cpus, vm.memory), (2, 256 << 20));
    assert_eq!(vm.kernel, PathBuf::from("/srv/infra/images/vmlinux"));
    assert_eq!(vm.disks, ["web-1-root"]);
    assert_eq!(vm.nics[0].vlan, "front");
    assert_eq!(vm.nics[0].mac, "52:54:00:12:34:56");
    assert_eq!(vm.cpuset.as_deref(), Some("0-1"));
    assert_eq!(vm.depends_on, ["db-1"]);
}

#[test]
fn a_v1_vm_record_with_later_fields_is_read() {
    let record = read_vm_record("v1/spec.json");
    assert_eq!(record.vm.state, RunState::Stopped);
    assert_eq!(record.vm.initrd, None);
    assert_eq!(record.vm.cpuset, None);
    assert!(!record.running);
}

#[test]
fn a_v2_vm_record_keeps_its_nics_addresses() {
    let record = read_vm_record("v2/spec.json");
    let nics = &record.vm.nics;
    assert_eq!(nics[0].ip, Some("10.100.0.2".parse().unwrap()));
    assert!(nics[0].ip_allocated);
    assert_eq!(nics[1].ip, Some("10.200.0.10".parse().unwrap()));
    assert!(!nics[1].ip_allocated);
    assert!(record.vm.ip_cmdline);
    let argument = record.vm.ip_argument.as_deref();
    assert_eq!(
        argument,
        Some("ip=10.100.0.2::10.100.0.1:255.255.255.0:web-1:eth0:off")
    );
    // Format 1 records have NICs without addresses.
    let old = read_vm_record("v1/spec.json");
    assert!(old.vm.nics.iter().all(|n| n.ip.is_none()));
}

#[test]
fn a_vm_record_of_a_newer_format_is_refused_plainly() {
    let state = tempfile::tempdir().unwrap();
    let paths = vms::VmPaths::new(state.path(), "lab", "web-1");
    place("v1/spec.json", &paths.record, state.path());
    let newer = fixture("v1/spec.json").replace(
        r#""format-version": 1"#,
        r#""format-version": 3, "vm": "now a string""#,
    );
    fs::write(&paths.record, newer).unwrap();
    let err = vms::read_record(state.path(), "lab", "web-1").unwrap_err();
    let text = vmctl_runtime_chain(&err);
    assert!(text.contains("format version 3"), "{text}");
    assert!(text.contains("newer vmctl"), "{text}");
}

fn vmctl_runtime_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[test]
fn an_unversioned_vmm_spec_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vmm.json");
    place("unversioned/vmm.json", &path, dir.path());
    let spec = VmmSpec::from_file(&path).unwrap();
    assert_eq!(spec.format_version, 1);
    assert_eq!(spec.cpus, 2);
    assert_eq!(spec.memory.0, 256 << 20);
    assert_eq!(spec.devices.disks.len(), 1);
    assert_eq!(spec.devices.nics[0].tap, "vt0123456789ab");
    assert_eq!(
        spec.devices.nics[0].mac.map(|m| m.to_string()).as_deref(),
        Some("52:54:00:12:34:56")
    );
    // One of a newer format is refused before its fields are looked at.
    let newer = fixture("unversioned/vmm.json").replace("{\n", "{\n  \"format-version\": 3,\n");
    fs::write(&path, newer).unwrap();
    let err = VmmSpec::from_file(&path).unwrap_err();
    assert!(matches!(err, SpecError::Version { .. }), "{err}");
}

#[test]
fn unversioned_pool_marker_and_index_are_read() {
    pool_marker_and_index_are_read("unversioned");
}

/// The pool marker and index entry of fixture folder `dir` are read, and the pool is
/// observed through the index alone; the marker as read.
fn pool_marker_and_index_are_read(dir: &str) -> pool::PoolMarker {
    let state = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let fast = root.path().join("fast");
    place(
        &format!("{dir}/pool-marker.json"),
        &fast.join(pool::MARKER),
        &fast,
    );
    place(
        &format!("{dir}/pool-index.json"),
        &state.path().join("lab/pools/fast.json"),
        &fast,
    );
    let marker = pool::read_marker(&fast).unwrap().unwrap();
    assert_eq!(
        (marker.project.as_str(), marker.name.as_str()),
        ("lab", "fast")
    );
    // Not configured: found through the index entry alone.
    let pools = pool::observe_pools(state.path(), "lab", &[]).unwrap();
    assert_eq!(pools.len(), 1, "{pools:?}");
    assert_eq!(pools[0].name, "fast");
    assert_eq!(pools[0].path, fast);
    marker
}

#[test]
fn an_unversioned_volume_marker_is_read() {
    volume_marker_is_read("unversioned");
}

/// The volume marker of fixture folder `dir`, beside its pool marker, is observed with
/// every field.
fn volume_marker_is_read(dir: &str) {
    let root = tempfile::tempdir().unwrap();
    let fast = root.path().join("fast");
    place(
        &format!("{dir}/pool-marker.json"),
        &fast.join(pool::MARKER),
        &fast,
    );
    place(
        &format!("{dir}/volume-marker.json"),
        &fast.join("web-1-root.vmctl.json"),
        &fast,
    );
    fs::write(volume::volume_path(&fast, "web-1-root"), vec![0u8; 4096]).unwrap();
    // The pool, by its configured path (no index in this state dir).
    let pools = pool::observe_pools(root.path(), "lab", &[fast.as_path()]).unwrap();
    assert_eq!(pools.len(), 1, "{pools:?}");
    let volumes = volume::observe_volumes(&pools[0]).unwrap();
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    let v = &volumes[0];
    assert_eq!((v.name.as_str(), v.pool.as_str()), ("web-1-root", "fast"));
    assert_eq!(v.size, 4096);
    assert_eq!(
        v.from.as_deref(),
        Some(Path::new("/srv/infra/images/rootfs.ext4"))
    );
    assert!(v.from_digest.as_deref().unwrap().starts_with("sha256:"));
    assert!(v.prevent_destroy);
}

#[test]
fn an_unversioned_netns_marker_is_read() {
    let state = tempfile::tempdir().unwrap();
    place(
        "unversioned/netns-marker.json",
        &netns::legacy_marker_path(state.path(), "lab"),
        state.path(),
    );
    let marker = netns::read_marker(state.path(), "lab", "vmctl-lab")
        .unwrap()
        .unwrap();
    assert_eq!(marker.name, "vmctl-lab");
    assert_eq!(marker.created_by, "lab");
}

// Records of the current formats, as this build writes them (`tests/records/v1/`, the
// netns marker of format 2): every field it writes is read back by the same functions
// observe and apply use.

#[test]
fn current_pool_marker_and_index_are_read() {
    let marker = pool_marker_and_index_are_read("v1");
    assert!(marker.made_dir, "made_dir is read");
}

#[test]
fn a_current_volume_marker_is_read() {
    volume_marker_is_read("v1");
}

#[test]
fn a_current_vmm_spec_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vmm.json");
    place("v1/vmm.json", &path, dir.path());
    let spec = VmmSpec::from_file(&path).unwrap();
    assert_eq!(spec.format_version, 1);
    assert_eq!(
        spec.initrd.as_deref(),
        Some(Path::new("/srv/infra/images/initrd.img"))
    );
    assert_eq!(
        spec.lock_file.as_deref(),
        Some(Path::new("/var/lib/vmctl/lab/vms/web-1/vmm.lock"))
    );
    assert_eq!(spec.devices.nics[0].tap, "vt0123456789ab");
}

#[test]
fn a_current_netns_marker_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vmctl-lab.json");
    place("v1/netns-marker.json", &path, dir.path());
    // What `netns::read_marker` reads `/run/vmctl/netns/<name>.json` with.
    let marker: netns::NetnsMarker = records::read_record(&path, records::version::NETNS_MARKER)
        .unwrap()
        .unwrap();
    assert_eq!(marker.format, 2);
    assert_eq!(marker.name, "vmctl-lab");
    assert_eq!(marker.created_by, "lab");
    assert_eq!(
        marker
            .projects
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["lab", "shop"]
    );
}

#[test]
fn a_current_project_record_is_read_and_names_its_orphans() {
    let state = tempfile::tempdir().unwrap();
    place(
        "v1/project.json",
        &state.path().join("lab/project.json"),
        state.path(),
    );
    fs::create_dir_all(state.path().join("lab/vms/web-1")).unwrap();
    // What `origin::orphans` reads another project's `project.json` with.
    let found = origin::orphans(state.path(), "renamed", Path::new("/home/me/infra"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].project, "lab");
    assert_eq!(found[0].vms, ["web-1"]);
}
