use super::*;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A host whose interfaces are all off but `on`.
fn state<'a>(on: &'a [&'a str]) -> impl Fn(&str) -> Option<bool> + 'a {
    move |ifname| Some(on.contains(&ifname))
}

#[test]
fn interface_names_that_are_not_file_names_or_host_wide_are_never_paths() {
    assert_eq!(path_of("../all"), None);
    assert_eq!(path_of("a/b"), None);
    assert_eq!(path_of("all"), None);
    assert_eq!(path_of("default"), None);
    assert!(path_of("lab-lanv100").is_some());
}

#[test]
fn an_uplink_two_projects_need_stays_on_until_the_last_lets_go() {
    let mut record = HostForwarding::default();
    // Project a turns eth0 and its gateway on.
    let s = record.set_needs(None, "a", &names(&["eth0", "a-gw"]), &[], state(&[]));
    assert_eq!(s.on, names(&["eth0", "a-gw"]));
    record.forget_unneeded(None);
    // Project b needs eth0 too: vmctl holds it already, nothing to switch; b's gateway
    // is turned on.
    let on = ["eth0", "a-gw"];
    let s = record.set_needs(None, "b", &names(&["eth0", "b-gw"]), &[], state(&on));
    assert_eq!(
        s,
        Switches {
            on: names(&["b-gw"]),
            off: vec![]
        }
    );
    record.forget_unneeded(None);
    assert_eq!(record.held(None, Some("b")), names(&["eth0", "b-gw"]));
    // a goes: its gateway is let go, eth0 stays (b needs it).
    let on = ["eth0", "a-gw", "b-gw"];
    let s = record.set_needs(None, "a", &[], &[], state(&on));
    assert_eq!(
        s,
        Switches {
            on: vec![],
            off: names(&["a-gw"])
        }
    );
    record.forget_unneeded(None);
    assert_eq!(record.held(None, None), names(&["eth0", "b-gw"]));
    // b goes: eth0 is off again.
    let s = record.set_needs(None, "b", &[], &[], state(&["eth0", "b-gw"]));
    assert_eq!(s.off, names(&["eth0", "b-gw"]));
    record.forget_unneeded(None);
    assert_eq!(record, HostForwarding::default());
}

#[test]
fn forwarding_the_host_had_on_is_never_touched() {
    let mut record = HostForwarding::default();
    let s = record.set_needs(None, "a", &names(&["eth0"]), &[], state(&["eth0"]));
    assert_eq!(s, Switches::default());
    record.forget_unneeded(None);
    assert!(record.held(None, None).is_empty());
    let s = record.set_needs(None, "a", &[], &[], state(&["eth0"]));
    assert_eq!(s, Switches::default());
}

#[test]
fn a_held_interface_found_off_is_turned_on_again() {
    let mut record = HostForwarding::default();
    record.set_needs(None, "a", &names(&["eth0"]), &[], state(&[]));
    // Turned off by hand (or the switch never happened: a crash after the record).
    let s = record.set_needs(None, "a", &names(&["eth0"]), &[], state(&[]));
    assert_eq!(s.on, names(&["eth0"]));
}

#[test]
fn netns_keep_their_own_interfaces_and_legacy_records_are_taken_over() {
    let mut record = HostForwarding::default();
    record.set_needs(Some("ns1"), "a", &names(&["eth0"]), &[], state(&[]));
    // The same name in another netns is another interface.
    let s = record.set_needs(Some("ns2"), "b", &names(&["eth0"]), &[], state(&["eth0"]));
    assert_eq!(s, Switches::default());
    assert_eq!(record.held(Some("ns1"), None), names(&["eth0"]));
    assert!(record.held(Some("ns2"), None).is_empty());
    // A per-project record of an earlier vmctl said it turned eth1 on for c.
    let s = record.set_needs(None, "c", &[], &names(&["eth1"]), state(&["eth1"]));
    assert_eq!(s.off, names(&["eth1"]));
}

#[test]
fn the_record_round_trips_with_its_version() {
    let dir = std::env::temp_dir().join(format!("vmctl-forwarding-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut record = HostForwarding::default();
    record.set_needs(Some("ns"), "a", &names(&["eth0"]), &[], state(&[]));
    write(&dir, &record).unwrap();
    let text = std::fs::read_to_string(record_path(&dir)).unwrap();
    assert!(text.contains("\"format-version\": 1"), "{text}");
    assert_eq!(read(&dir).unwrap(), record);
    drop(lock(&dir).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}
