//! Live-state files written by earlier vmctl releases (`tests/records/`, checked in) are
//! read by this one; one of a newer format is refused plainly.

use vmctl_planner::live::{LiveFile, LiveFileError, LIVE_FORMAT_VERSION};
use vmctl_planner::record::RunState;
use vmctl_planner::VmStatus;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/records")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn an_unversioned_live_file_is_read() {
    let live = LiveFile::from_json(&fixture("live-unversioned.json")).unwrap();
    assert_eq!(live.format_version, 1);
    let host = live.host("local");
    assert_eq!(host.pools[0].name, "fast");
    assert!(host.volumes[0].prevent_destroy);
    assert_eq!(host.vlans[0].gateway.as_deref(), Some("10.100.0.1/24"));
    let vm = &host.vms[0];
    assert_eq!(vm.status, VmStatus::Crashed);
    assert_eq!(vm.spec.state, RunState::Running);
    let model = vm.spec.to_model();
    assert_eq!((model.cpus, model.memory), (2, 256 << 20));
    assert_eq!(model.nics[0].mac, "52:54:00:12:34:56");
}

#[test]
fn a_live_file_of_a_newer_format_is_refused() {
    let newer = fixture("live-unversioned.json").replacen(
        "{",
        &format!("{{\"format-version\": {},", LIVE_FORMAT_VERSION + 1),
        1,
    );
    let err = LiveFile::from_json(&newer).unwrap_err();
    assert!(matches!(err, LiveFileError::Newer(_)), "{err}");
    assert!(err.to_string().contains("newer vmctl"), "{err}");
    // This build's own files are read back.
    let text = serde_json::to_string(&LiveFile::default()).unwrap();
    assert!(text.contains("\"format-version\":5"), "{text}");
    assert_eq!(LiveFile::from_json(&text).unwrap(), LiveFile::default());
}

#[test]
fn a_current_live_file_is_read() {
    use vmctl_planner::live::TapState;
    // Format 1 (the live file is format 2 since the netns became a planned resource):
    // still read, as a host without a netns.
    let live = LiveFile::from_json(&fixture("live-v1.json")).unwrap();
    assert_eq!(live.format_version, 1);
    let host = live.host("local");
    let vm = &host.vms[0];
    assert_eq!(vm.status, VmStatus::Running);
    assert_eq!(vm.tap_drift[0].nic, 0);
    assert_eq!(vm.tap_drift[0].state, TapState::Detached);
    assert_eq!(host.unreadable[0].name, "db-1");
    let reported = host.reported.as_ref().expect("reported");
    assert_eq!((reported.cpus, reported.memory), (8, 16 << 30));
    assert_eq!(host.problems[0].resource, "network.lan");
}

#[test]
fn a_format_4_live_file_reads_as_hosts_without_dhcp_servers_and_5_keeps_them() {
    let v4 = r#"{"format-version": 4, "hosts": {"local": {"vlans": []}}}"#;
    let live = LiveFile::from_json(v4).unwrap();
    assert_eq!(live.format_version, 4);
    assert!(live.host("local").dhcp.is_empty());
    let v5 = r#"{"format-version": 5, "hosts": {"local": {"dhcp": [
        {"name": "front", "project": "lab", "config": "00", "leases": "11", "running": true}
    ]}}}"#;
    let live = LiveFile::from_json(v5).unwrap();
    let server = &live.host("local").dhcp[0];
    assert_eq!((server.name.as_str(), server.running), ("front", true));
    let again = serde_json::to_string(&live).unwrap();
    assert_eq!(LiveFile::from_json(&again).unwrap(), live);
}

#[test]
fn a_live_file_of_format_4_reads_as_hosts_without_a_firewall() {
    let live = LiveFile::from_json(&fixture("live-v4.json")).unwrap();
    assert_eq!(live.format_version, 4);
    let host = live.host("local");
    assert_eq!(host.vlans[0].gateway.as_deref(), Some("10.100.0.1/24"));
    assert!(host.firewalls.is_empty());
    assert_eq!(host.default_route, None);
}
