//! The server's files, its hashes, and its diff and graph rules.

use std::path::Path;

use vmctl_schema::Config;

use super::*;
use crate::action::{Action, Reason};
use crate::graph::happens_before;
use crate::live::LiveFile;
use crate::plan::Resource;
use crate::testdata::{change, fleet, graph_of, plan_of, quickstart, vm};
use crate::PlanOptions;

/// The quickstart with `dhcp #true` on `front` (web-1 and web-2 are on it).
fn config() -> Config {
    let mut config = quickstart();
    config.vlans[0].dhcp = true;
    for volume in &mut config.volumes {
        volume.prevent_destroy = false;
    }
    config
}

fn files_of(plan: &crate::plan::Plan) -> DhcpFiles {
    match &change(plan, "dhcp.front").after {
        Some(Resource::Dhcp(server)) => server.files.clone().expect("files"),
        other => panic!("no server in {other:?}"),
    }
}

#[test]
fn the_files_are_exactly_these() {
    let plan = plan_of(&config(), &LiveFile::default()).expect("plan");
    let files = files_of(&plan);
    let dir = "/var/lib/vmctl/lab/dhcp/front";
    assert_eq!(
        files.conf,
        format!(
            "# vmctl: DHCP and DNS of VLAN front of project lab; written by vmctl, do not edit\n\
             listen-address=10.100.0.1\n\
             bind-interfaces\n\
             except-interface=lo\n\
             user=root\n\
             group=root\n\
             dhcp-range=10.100.0.0,static,255.255.255.0\n\
             dhcp-option=option:router,10.100.0.1\n\
             dhcp-option=option:dns-server,10.100.0.1\n\
             dhcp-option=option:domain-search,lab\n\
             dhcp-authoritative\n\
             dhcp-hostsfile={dir}/hosts\n\
             addn-hosts={dir}/names\n\
             dhcp-leasefile={dir}/leases\n\
             pid-file={dir}/pid\n\
             domain=lab\n\
             local=/lab/\n\
             no-resolv\n\
             no-hosts\n"
        )
    );
    // IPAM gives web-1 and web-2 the first free addresses, by VM name.
    assert_eq!(
        files.hosts,
        "52:54:00:00:00:01,10.100.0.2,web-1\n52:54:00:00:00:02,10.100.0.3,web-2\n"
    );
    assert_eq!(
        files.names,
        "10.100.0.2 web-1.lab web-1\n10.100.0.3 web-2.lab web-2\n"
    );
    // Nothing on `back` (no dhcp), and db-1 is not served on front.
    assert!(!files.hosts.contains("00:03"));
    assert!(plan.changes.iter().all(|c| c.id.to_string() != "dhcp.back"));
}

#[test]
fn rendering_is_deterministic_and_follows_vm_names_not_config_order() {
    let a = plan_of(&config(), &LiveFile::default()).expect("plan");
    let mut reordered = config();
    reordered.vms.reverse();
    let b = plan_of(&reordered, &LiveFile::default()).expect("plan");
    assert_eq!(files_of(&a), files_of(&b));
}

#[test]
fn the_hashes_split_config_from_leases() {
    let dir = Path::new("/s/lab/dhcp/front");
    let vlan = &config().vlans[0];
    let one = [Lease {
        vm: "web-1",
        mac: "52:54:00:00:00:01".into(),
        ip: "10.100.0.2".parse().expect("ip"),
    }];
    let a = render("lab", vlan, dir, &one).expect("files");
    let b = render("lab", vlan, dir, &[]).expect("files");
    assert_eq!(a.config_hash(), b.config_hash());
    assert_ne!(a.leases_hash(), b.leases_hash());
    let other_dir = render("lab", vlan, Path::new("/t/lab/dhcp/front"), &one).expect("files");
    assert_ne!(a.config_hash(), other_dir.config_hash());
    assert_eq!(a.config_hash().len(), 16);
    // Text moved between the two files is a change.
    assert_ne!(hash(&["ab", "c"]), hash(&["a", "bc"]));
    // A second NIC of a VM on the VLAN is leased without the name dnsmasq gives once.
    let two = [
        one[0].clone(),
        Lease {
            vm: "web-1",
            mac: "52:54:00:00:00:09".into(),
            ip: "10.100.0.9".parse().expect("ip"),
        },
    ];
    let files = render("lab", vlan, dir, &two).expect("files");
    assert_eq!(
        files.hosts,
        "52:54:00:00:00:01,10.100.0.2,web-1\n52:54:00:00:00:09,10.100.0.9\n"
    );
    let dotted = [Lease {
        vm: "web.1",
        mac: "52:54:00:00:00:07".into(),
        ip: "10.100.0.7".parse().expect("ip"),
    }];
    let files = render("lab", vlan, dir, &dotted).expect("files");
    assert_eq!(files.hosts, "52:54:00:00:00:07,10.100.0.7\n");
    assert_eq!(files.names, "10.100.0.7 web.1.lab web.1\n");
    // No IPv4 gateway, no server.
    let mut v6 = vlan.clone();
    v6.gateway = Some("fd00::1/64".into());
    assert!(render("lab", &v6, dir, &one).is_none());
}

#[test]
fn missing_is_created_after_its_vlan_and_applied_is_a_no_op() {
    let config = config();
    let (plan, g) = graph_of(&config, &LiveFile::default(), &PlanOptions::default());
    assert_eq!(change(&plan, "dhcp.front").action, Action::Create);
    assert!(happens_before(&g, "create vlan.front", "create dhcp.front"));
    // A guest's lease is there before it boots; back's VM has no server to wait for.
    assert!(happens_before(&g, "create dhcp.front", "create vm.web-1"));
    assert!(!happens_before(&g, "create dhcp.front", "create vm.db-1"));
    let live = LiveFile::applied(&config);
    let plan = plan_of(&config, &live).expect("plan");
    assert_eq!(change(&plan, "dhcp.front").action, Action::NoOp);
    assert_eq!(plan.actionable().count(), 0, "{:#?}", plan.changes);
}

fn plan_with_replace(config: &Config, live: &LiveFile, address: &str) -> crate::plan::Plan {
    let options = PlanOptions {
        replace: vec![address.to_owned()],
        ..PlanOptions::default()
    };
    crate::plan(config, live, &options).expect("plan")
}

fn server_mut(live: &mut LiveFile) -> &mut LiveDhcp {
    let host = live.hosts.get_mut("local").expect("host local");
    &mut host.dhcp[0]
}

#[test]
fn a_server_that_does_not_run_is_started_in_place() {
    let config = config();
    let mut live = LiveFile::applied(&config);
    server_mut(&mut live).running = false;
    let plan = plan_of(&config, &live).expect("plan");
    let c = change(&plan, "dhcp.front");
    assert_eq!(c.action, Action::Update);
    assert_eq!(c.reason, Some(Reason::Crashed));
    assert_eq!(c.attributes.len(), 1);
    assert_eq!(c.attributes[0].name, "running");
}

#[test]
fn a_changed_config_restarts_and_changed_leases_reload() {
    let config = config();
    let mut live = LiveFile::applied(&config);
    server_mut(&mut live).config = "0000000000000000".into();
    let plan = plan_of(&config, &live).expect("plan");
    let c = change(&plan, "dhcp.front");
    assert_eq!(
        (c.action, c.reason.clone()),
        (Action::Update, Some(Reason::Reconfigure))
    );
    assert_eq!(c.attributes[0].effect, crate::action::Effect::Restart);

    // A VM joins the VLAN: only the leases change; nothing else of the VLAN moves.
    let live = LiveFile::applied(&config);
    let mut grown = config.clone();
    grown.vms.push(vm("web-3", "front", "52:54:00:00:00:04"));
    let plan = plan_of(&grown, &live).expect("plan");
    let c = change(&plan, "dhcp.front");
    assert_eq!(
        (c.action, c.reason.clone()),
        (Action::Update, Some(Reason::Reload))
    );
    let names: Vec<&str> = c.attributes.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["leases"]);
    assert_eq!(c.attributes[0].effect, crate::action::Effect::InPlace);
    assert_eq!(change(&plan, "vm.web-1").action, Action::NoOp);
    assert!(files_of(&plan)
        .names
        .contains("10.100.0.4 web-3.lab web-3\n"));
    let g = crate::graph::ApplyGraph::build(&plan).expect("graph");
    assert!(happens_before(&g, "update dhcp.front", "create vm.web-3"));
    // A server replaced on request restarts no guest.
    let forced = plan_with_replace(&config, &live, "dhcp.front");
    assert_eq!(change(&forced, "dhcp.front").action, Action::Replace);
    assert_eq!(forced.actionable().count(), 1, "{:#?}", forced.changes);
}

#[test]
fn turning_dhcp_off_or_deleting_the_vlan_deletes_the_server_first() {
    let config = config();
    let live = LiveFile::applied(&config);
    let mut off = config.clone();
    off.vlans[0].dhcp = false;
    let plan = plan_of(&off, &live).expect("plan");
    let c = change(&plan, "dhcp.front");
    assert_eq!(
        (c.action, c.reason.clone()),
        (Action::Delete, Some(Reason::Removed))
    );
    assert_eq!(change(&plan, "vlan.front").action, Action::NoOp);

    let (plan, g) = graph_of(
        &config,
        &live,
        &PlanOptions {
            destroy: true,
            ..PlanOptions::default()
        },
    );
    assert_eq!(change(&plan, "dhcp.front").action, Action::Delete);
    assert!(happens_before(&g, "delete dhcp.front", "delete vlan.front"));
}

#[test]
fn on_a_spanning_network_the_server_is_on_the_gateway_host_only() {
    let mut config = fleet();
    config.vlans[0].dhcp = true;
    let plan = plan_of(&config, &LiveFile::default()).expect("plan");
    let servers: Vec<&str> = plan
        .changes
        .iter()
        .filter(|c| c.id.kind == crate::action::ResourceKind::Dhcp)
        .map(|c| c.host.as_str())
        .collect();
    assert_eq!(servers, ["kvm-01"]);
    // It leases web-2 on kvm-02 too: the VLAN is one segment.
    assert!(files_of(&plan).hosts.contains("web-2"));
    let live = LiveFile::applied(&config);
    assert_eq!(
        plan_of(&config, &live).expect("plan").actionable().count(),
        0
    );
}

#[test]
fn another_projects_server_is_not_touched() {
    let config = config();
    let mut live = LiveFile::applied(&config);
    server_mut(&mut live).project = "other".into();
    let plan = plan_of(&config, &live).expect("plan");
    assert_eq!(change(&plan, "dhcp.front").action, Action::Create);
    assert_eq!(
        plan.changes
            .iter()
            .filter(|c| c.id.to_string() == "dhcp.front")
            .count(),
        1
    );
}
