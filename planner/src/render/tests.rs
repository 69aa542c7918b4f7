//! Snapshots of the human, JSON and DOT renderings of the quickstart-shaped config
//! against an empty, a partial, a drifted and an identical live state.

use crate::live::{LiveFile, VmStatus};
use crate::testdata::{graph_of, quickstart};
use crate::{ApplyGraph, Plan, PlanOptions};

use super::{dot, human, json};

fn planned(live: &LiveFile) -> (Plan, ApplyGraph) {
    graph_of(&quickstart(), live, &PlanOptions::default())
}

/// Pool, network and the web VLAN exist; one volume; no VMs.
pub fn partial() -> LiveFile {
    let mut live = LiveFile::applied(&quickstart());
    let host = live.hosts.get_mut("local").unwrap();
    host.vlans.retain(|v| v.name == "front");
    host.volumes.retain(|v| v.name == "web-1-root");
    host.vms.clear();
    live
}

/// Applied once, then drifted: web-2 crashed, a volume smaller than configured, a gateway
/// removed by hand, db-1 running an older cmdline and less memory, a VM the config forgot.
pub fn drifted() -> LiveFile {
    let config = quickstart();
    let mut live = LiveFile::applied(&config);
    let host = live.hosts.get_mut("local").unwrap();
    host.vlans[0].gateway = None;
    host.volumes[0].size = 512 << 20;
    let mut old = host.vms[0].clone();
    old.name = "old-1".into();
    old.spec.name = "old-1".into();
    old.spec.depends_on.clear();
    host.vms.push(old);
    for vm in &mut host.vms {
        match vm.name.as_str() {
            "web-2" => vm.status = VmStatus::Crashed,
            "db-1" => {
                vm.spec.memory = 128 << 20;
                vm.spec.cmdline = "console=ttyS0 root=/dev/vda rw quiet loglevel=3 \
                                   init=/sbin/init panic=1 random.trust_cpu=on"
                    .into();
            }
            _ => {}
        }
    }
    live
}

fn states() -> [(&'static str, LiveFile); 4] {
    [
        ("empty", LiveFile::default()),
        ("partial", partial()),
        ("drifted", drifted()),
        ("identical", LiveFile::applied(&quickstart())),
    ]
}

#[test]
fn human() {
    for (name, live) in states() {
        let (plan, _) = planned(&live);
        insta::assert_snapshot!(format!("human_{name}"), human::render(&plan, false));
    }
}

#[test]
fn identical_says_no_changes() {
    let (plan, _) = planned(&LiveFile::applied(&quickstart()));
    let text = human::render(&plan, false);
    assert!(text.starts_with("No changes."), "{text}");
}

#[test]
fn colour_only_when_asked() {
    let (plan, _) = planned(&drifted());
    assert!(!human::render(&plan, false).contains('\x1b'));
    assert!(human::render(&plan, true).contains("\x1b[32m+\x1b[0m"));
}

#[test]
fn json() {
    for (name, live) in states() {
        let (plan, graph) = planned(&live);
        let text = json::render(&plan, &graph);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["format_version"], json::FORMAT_VERSION);
        assert_eq!(value["changed"], plan.has_changes());
        insta::assert_snapshot!(format!("json_{name}"), text);
    }
}

#[test]
fn dot() {
    let (_, graph) = planned(&drifted());
    insta::assert_snapshot!("dot_drifted", dot::render(&graph));
}

#[test]
fn long_lists_are_shown_as_a_diff() {
    let config = quickstart();
    let mut changed = config.clone();
    let nic = |vlan: &str, mac: &str| vmctl_schema::Nic {
        vlan: vlan.into(),
        mac: mac.into(),
        ip: None,
        ip_allocated: false,
    };
    changed.vms[2].nics = vec![
        nic("back", "52:54:00:00:00:03"),
        nic("front", "52:54:00:00:00:13"),
        nic("back", "52:54:00:00:00:23"),
    ];
    let (plan, _) = graph_of(
        &changed,
        &LiveFile::applied(&config),
        &PlanOptions::default(),
    );
    let text = human::render(&plan, false);
    let expected = r#"      ~ nics = [
            { mac = "52:54:00:00:00:03", vlan = "back" },
          + { ip = "10.100.0.4", mac = "52:54:00:00:00:13", vlan = "front" },
          + { mac = "52:54:00:00:00:23", vlan = "back" },
        ] # forces restart
"#;
    assert!(text.contains(expected), "{text}");
}

/// A host's netns in the plan: made for the network side of an empty host, and what the
/// destroy of a namespace shared with another project says.
#[test]
fn netns() {
    let mut config = quickstart();
    config.hosts[0].netns = Some("vmctl-lab".into());
    config.vms.clear();
    config.volumes.clear();
    config.pools.clear();
    let (plan, graph) = graph_of(&config, &LiveFile::default(), &PlanOptions::default());
    insta::assert_snapshot!("human_netns_create", human::render(&plan, false));
    insta::assert_snapshot!("dot_netns_create", dot::render(&graph));
    let mut live = LiveFile::applied(&config);
    if let Some(netns) = &mut live.hosts.get_mut("local").unwrap().netns {
        netns.projects.push("other".into());
    }
    let destroy = PlanOptions {
        destroy: true,
        ..PlanOptions::default()
    };
    let (plan, _) = graph_of(&config, &live, &destroy);
    insta::assert_snapshot!("human_netns_shared_destroy", human::render(&plan, false));
}

/// A DHCP server in the plan: a VM joining its VLAN is a reload (only `leases`), a
/// dead dnsmasq a start; neither shows the files, only their hashes.
#[test]
fn dhcp() {
    let mut config = quickstart();
    config.vlans[0].dhcp = true;
    let mut live = LiveFile::applied(&config);
    let mut web3 = crate::testdata::vm("web-3", "front", "52:54:00:00:00:04");
    web3.disks.clear();
    config.vms.push(web3);
    let (plan, _) = graph_of(&config, &live, &PlanOptions::default());
    let text = human::render(&plan, false);
    insta::assert_snapshot!("human_dhcp_reload", text);
    assert!(
        !text.contains("dhcp-range"),
        "the files are not shown:\n{text}"
    );
    live.hosts.get_mut("local").unwrap().dhcp[0].running = false;
    config.vms.pop();
    let (plan, _) = graph_of(&config, &live, &PlanOptions::default());
    insta::assert_snapshot!("human_dhcp_not_running", human::render(&plan, false));
}

#[test]
fn a_live_resource_is_shown_with_every_attribute_in_the_plans_format() {
    let (plan, _) = planned(&LiveFile::applied(&quickstart()));
    let volume = plan
        .changes
        .iter()
        .find(|c| c.id.to_string() == "volume.web-1-root")
        .and_then(|c| c.before.as_ref())
        .expect("the live volume");
    let text = human::render_resource(volume);
    assert!(text.starts_with("volume \"web-1-root\" {\n"), "{text}");
    assert!(text.ends_with("\n}\n"), "{text}");
    // Aligned, sizes as the plan writes them.
    assert_eq!(
        text,
        "volume \"web-1-root\" {\n    from            = \"/lab/images/rootfs.ext4\"\n    pool            = \"fast\"\n    prevent-destroy = false\n    size            = \"1GiB\"\n}\n"
    );
}
