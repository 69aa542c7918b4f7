//! Allocation: order, stability across adding and removing VMs, declared addresses and
//! their collisions with the hosts, exhaustion, a VLAN that spans hosts.

use std::net::IpAddr;

use vmctl_schema::Config;

use super::*;
use crate::live::LiveFile;
use crate::testdata::{self, quickstart};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

type Row = (String, usize, Option<IpAddr>, bool);

/// Each NIC's `(vm, nic, address, allocated)`, by VM name.
fn addresses(config: &Config) -> Vec<Row> {
    let mut out: Vec<Row> = config
        .vms
        .iter()
        .flat_map(|vm| {
            vm.nics
                .iter()
                .enumerate()
                .map(|(j, n)| (vm.name.clone(), j, n.ip, n.ip_allocated))
        })
        .collect();
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

fn address_of(config: &Config, vm: &str) -> IpAddr {
    let vm = config.vms.iter().find(|v| v.name == vm).unwrap();
    vm.nics[0].ip.unwrap()
}

/// `name` on VLAN `front` (10.100.0.0/24, gateway .1).
fn web(name: &str, mac: &str) -> vmctl_schema::Vm {
    testdata::vm(name, "front", mac)
}

#[test]
fn lowest_free_addresses_in_vm_name_order() {
    let config = quickstart();
    let resolved = assign(&config, &LiveFile::default()).unwrap();
    // `back` has no subnet: db-1's NIC has no address.
    let expected: Vec<Row> = vec![
        ("db-1".into(), 0, None, false),
        ("web-1".into(), 0, Some(ip("10.100.0.2")), true),
        ("web-2".into(), 0, Some(ip("10.100.0.3")), true),
    ];
    assert_eq!(addresses(&resolved), expected);
    // The order is by name, not by place in the config.
    let mut reversed = config.clone();
    reversed.vms.reverse();
    let again = assign(&reversed, &LiveFile::default()).unwrap();
    assert_eq!(addresses(&again), expected);
}

#[test]
fn adding_and_removing_vms_moves_no_address() {
    let config = quickstart();
    let live = LiveFile::applied(&config);
    // A VM that sorts first joins: it gets the next free address, the others keep theirs.
    let mut more = config.clone();
    more.vms.push(web("a-first", "52:54:00:00:00:0a"));
    let resolved = assign(&more, &live).unwrap();
    assert_eq!(address_of(&resolved, "web-1"), ip("10.100.0.2"));
    assert_eq!(address_of(&resolved, "web-2"), ip("10.100.0.3"));
    assert_eq!(address_of(&resolved, "a-first"), ip("10.100.0.4"));
    // Against empty hosts, a-first would have come first.
    let fresh = assign(&more, &LiveFile::default()).unwrap();
    assert_eq!(address_of(&fresh, "a-first"), ip("10.100.0.2"));
    // web-1 is removed: web-2 keeps .3, and web-1's .2 is free for a new VM.
    let mut fewer = config.clone();
    fewer.vms.retain(|v| v.name != "web-1");
    fewer.vms.push(web("web-3", "52:54:00:00:00:0b"));
    let resolved = assign(&fewer, &live).unwrap();
    assert_eq!(address_of(&resolved, "web-2"), ip("10.100.0.3"));
    assert_eq!(address_of(&resolved, "web-3"), ip("10.100.0.2"));
}

#[test]
fn declared_addresses_win_and_allocation_skips_them() {
    let mut config = quickstart();
    let web1 = config.vms.iter().position(|v| v.name == "web-1").unwrap();
    config.vms[web1].nics[0].ip = Some(ip("10.100.0.2"));
    let resolved = assign(&config, &LiveFile::default()).unwrap();
    assert_eq!(address_of(&resolved, "web-1"), ip("10.100.0.2"));
    assert!(!resolved.vms[web1].nics[0].ip_allocated);
    assert_eq!(address_of(&resolved, "web-2"), ip("10.100.0.3"));
}

#[test]
fn a_declared_address_held_by_another_nic_is_an_error_naming_both() {
    let config = quickstart();
    let live = LiveFile::applied(&config); // web-2 holds .3
    let mut declared = config.clone();
    let web1 = declared.vms.iter().position(|v| v.name == "web-1").unwrap();
    declared.vms[web1].nics[0].ip = Some(ip("10.100.0.3"));
    let errors = assign(&declared, &live).unwrap_err();
    assert_eq!(
        errors,
        [IpamError::AddressTaken {
            address: ip("10.100.0.3"),
            vm: "web-1".into(),
            nic: 0,
            holder: "web-2".into(),
            holder_nic: 0,
            host: "local".into(),
        }]
    );
    let text = errors[0].to_string();
    assert!(text.contains("web-1") && text.contains("web-2"), "{text}");
    // Once web-2 is gone from the config, its address is free to declare.
    declared.vms.retain(|v| v.name != "web-2");
    let resolved = assign(&declared, &live).unwrap();
    assert_eq!(address_of(&resolved, "web-1"), ip("10.100.0.3"));
}

#[test]
fn an_exhausted_subnet_is_an_error() {
    let mut config = quickstart();
    config.vlans[0].gateway = Some("10.100.0.1/30".into());
    config.vlans[0].subnet = Some("10.100.0.0/30".into());
    // A /30 with a gateway has one address for two NICs (the schema refuses such a
    // config; the planner still never hands out an address twice).
    let errors = assign(&config, &LiveFile::default()).unwrap_err();
    assert_eq!(
        errors,
        [IpamError::Exhausted {
            subnet: "10.100.0.0/30".into(),
            vlan: "front".into(),
            vm: "web-2".into(),
            nic: 0,
        }]
    );
}

/// The fleet (network `lan` over three hosts) with front's subnet, and it applied.
fn fleet_applied() -> (Config, LiveFile) {
    let mut config = testdata::fleet();
    let front = config.vlans.iter_mut().find(|v| v.name == "front").unwrap();
    front.subnet = Some("10.100.0.0/24".into());
    let live = LiveFile::applied(&config);
    (config, live)
}

/// `config` with a new VM `web-3` on front, on host `kvm-03`.
fn with_web3(config: &Config) -> Config {
    let mut more = config.clone();
    let mut web3 = web("web-3", "52:54:00:00:00:0c");
    web3.host = "kvm-03".into();
    web3.disks.clear();
    more.vms.push(web3);
    more
}

#[test]
fn a_vlan_that_spans_hosts_allocates_across_them() {
    let (config, live) = fleet_applied();
    let resolved = assign(&config, &live).unwrap();
    let host_of = |name: &str| {
        config
            .vms
            .iter()
            .find(|v| v.name == name)
            .unwrap()
            .host
            .clone()
    };
    assert_ne!(host_of("web-1"), host_of("web-2"));
    assert_ne!(
        address_of(&resolved, "web-1"),
        address_of(&resolved, "web-2")
    );
    // A new VM on a third host skips what the other hosts hold.
    let more = with_web3(&config);
    let again = assign(&more, &live).unwrap();
    let held = [address_of(&again, "web-1"), address_of(&again, "web-2")];
    assert!(!held.contains(&address_of(&again, "web-3")));
    assert_eq!(
        held,
        [
            address_of(&resolved, "web-1"),
            address_of(&resolved, "web-2")
        ]
    );
}

#[test]
fn a_new_address_on_a_vlan_of_an_excluded_host_is_an_error() {
    let (config, live) = fleet_applied();
    // kvm-02 is not observed: its VMs' addresses are unknown.
    let mut unseen = live.clone();
    unseen.hosts.remove("kvm-02");
    let excluded = ["kvm-02".to_owned()];
    // What is kept elsewhere stays; kvm-02's VMs get nothing (nothing is planned there).
    let kept = allocate_excluding(&config, &unseen, &excluded).unwrap();
    let mut filled = config.clone();
    for (i, vm) in filled.vms.iter_mut().enumerate() {
        kept.fill(i, vm);
    }
    let web1 = filled.vms.iter().find(|v| v.name == "web-1").unwrap();
    assert!(web1.nics[0].ip.is_some());
    let web2 = filled.vms.iter().find(|v| v.name == "web-2").unwrap();
    assert_eq!(web2.host, "kvm-02");
    assert_eq!(web2.nics[0].ip, None);
    // A new NIC on front elsewhere could take an address kvm-02 holds: refused.
    let more = with_web3(&config);
    let errors = allocate_excluding(&more, &unseen, &excluded).unwrap_err();
    assert!(
        matches!(&errors[..], [IpamError::HostExcluded { vm, host, .. }] if vm == "web-3" && host == "kvm-02"),
        "{errors:?}"
    );
}

#[test]
fn ip_cmdline_gets_the_first_nics_argument() {
    let mut config = quickstart();
    let web1 = config.vms.iter().position(|v| v.name == "web-1").unwrap();
    config.vms[web1].ip_cmdline = true;
    let resolved = assign(&config, &LiveFile::default()).unwrap();
    assert_eq!(
        resolved.vms[web1].ip_argument.as_deref(),
        Some("ip=10.100.0.2::10.100.0.1:255.255.255.0:web-1:eth0:off")
    );
    assert!(resolved
        .vms
        .iter()
        .filter(|v| v.name != "web-1")
        .all(|v| v.ip_argument.is_none()));
}

mod properties {
    use std::collections::{BTreeSet, HashSet};

    use proptest::prelude::*;

    use super::*;

    fn config_of(names: &BTreeSet<u8>) -> Config {
        let mut config = quickstart();
        config.vms = names
            .iter()
            .map(|n| web(&format!("vm-{n}"), &format!("52:54:00:00:01:{n:02x}")))
            .collect();
        config
    }

    proptest! {
        /// Whatever VMs come and go, no two NICs of a VLAN share an address, and every
        /// NIC that stays keeps the address it had.
        #[test]
        fn unique_and_stable(first in proptest::collection::btree_set(0u8..60, 0..30),
                             second in proptest::collection::btree_set(0u8..60, 0..30)) {
            let before = config_of(&first);
            let live = LiveFile::applied(&before);
            let applied = assign(&before, &LiveFile::default()).unwrap();
            let after = assign(&config_of(&second), &live).unwrap();
            let mut seen = HashSet::new();
            for vm in &after.vms {
                let address = vm.nics[0].ip.unwrap();
                prop_assert!(seen.insert(address), "{} twice", address);
                if let Some(old) = applied.vms.iter().find(|v| v.name == vm.name) {
                    prop_assert_eq!(old.nics[0].ip, vm.nics[0].ip);
                }
            }
        }
    }
}
