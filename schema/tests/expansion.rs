//! Templates and `count`, through the loader: what they expand to (names, strings,
//! overrides, order, derived values), and how their mistakes are reported (codes, the
//! spans they point at, the notes naming instances, one diagnostic for a mistake that
//! many instances share).

use std::path::{Path, PathBuf};

use miette::Diagnostic;
use vmctl_schema::{load, load_str, Diagnostics, Kind, Loaded};

const LAB: &str = r#"
project "lab"
host "kvm-01" {
    cpus 16
    memory "16GiB"
}
network "lan" host="kvm-01"
vlan "front" network="lan" id=100
vlan "back" network="lan" id=200
pool "fast" host="kvm-01" type="dir" {
    path "/pools/fast"
}
"#;

fn loads(text: &str) -> Loaded {
    match load_str("/repo/main.kdl", &format!("{LAB}{text}")) {
        Ok(loaded) => loaded,
        Err(e) => panic!("{}", shown(&e)),
    }
}

fn fails(text: &str) -> Diagnostics {
    load_str("/repo/main.kdl", &format!("{LAB}{text}")).expect_err("invalid")
}

/// Each diagnostic as `code: message [note]`.
fn shown(d: &Diagnostics) -> String {
    d.iter()
        .map(|l| {
            let code = l.code().map(|c| c.to_string()).unwrap_or_default();
            match &l.note {
                Some(note) => format!("{code}: {} [{}]", l.error, note.0),
                None => format!("{code}: {}", l.error),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text a diagnostic's first label points at.
fn pointed<'t>(text: &'t str, d: &vmctl_schema::Located) -> &'t str {
    let label = d
        .error
        .labels()
        .and_then(|mut l| l.next())
        .expect("a label");
    &text[label.offset()..label.offset() + label.len()]
}

const WEB: &str = r#"
template "base" {
    host "kvm-01"
    memory "512MiB"
    kernel "images/vmlinux"
    nic vlan="front"
}
template "web" template="base" {
    cpus 2
    cmdline "console=ttyS0 name=web-{n}"
    disk "web-{n}-root"
}
volume "web-{n}-root" count=3 pool="fast" size="4GiB"
volume "web-{n}-data" count=3 pool="fast" size="1GiB"
"#;

#[test]
fn count_numbers_names_and_strings_and_keeps_the_written_order() {
    let loaded = loads(&format!(
        "{WEB}vm \"first\" template=\"base\" cpus=1\n\
         vm \"web-{{n}}\" count=3 template=\"web\" {{\n    disk \"web-{{n}}-data\"\n}}\n\
         vm \"last\" template=\"base\" cpus=1\n"
    ));
    let c = &loaded.config;
    let names: Vec<&str> = c.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["first", "web-1", "web-2", "web-3", "last"]);
    let volumes: Vec<&str> = c.volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        volumes,
        [
            "web-1-root",
            "web-2-root",
            "web-3-root",
            "web-1-data",
            "web-2-data",
            "web-3-data"
        ]
    );
    let web2 = &c.vms[2];
    assert_eq!(web2.cmdline, "console=ttyS0 name=web-2");
    assert_eq!(web2.disks, ["web-2-root", "web-2-data"], "template's first");
    assert_eq!(web2.memory, 512 << 20);
    assert_eq!(web2.kernel, Path::new("/repo/images/vmlinux"));
    // MACs are derived per instance, from the expanded name.
    assert_eq!(
        web2.nics[0].mac,
        vmctl_schema::derive::mac_address("lab", "web-2", 0, 0)
    );
    assert_ne!(c.vms[1].nics[0].mac, web2.nics[0].mac);
    // Templates are not resources: nothing of them is in the model.
    let json = serde_json::to_string(c).expect("json");
    assert!(
        !json.contains("{n}") && !json.contains("\"base\""),
        "{json}"
    );
    // Spans of an instance point at the node as written; its origin says which.
    let s = loaded.spans_of(Kind::Vm, "web-2").expect("spans");
    let origin = s.origin.as_ref().expect("origin");
    let counted = origin.count.as_ref().expect("counted");
    assert_eq!((counted.written.as_str(), counted.count), ("web-{n}", 3));
    let names: Vec<&str> = origin.templates.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["web", "base"], "nearest first");
    assert!(loaded.warnings.is_empty());
}

#[test]
fn the_vm_overrides_its_templates_and_repeated_children_add_up() {
    let loaded = loads(
        r#"
template "base" {
    host "kvm-01"
    cpus 1
    memory "512MiB"
    kernel "images/vmlinux"
    state "stopped"
    nic vlan="front"
}
template "web" template="base" {
    cpus 2
    nic vlan="back"
    depends-on "db"
}
vm "db" template="base" {
    state "running"
}
vm "web" template="web" memory="1GiB" {
    nic vlan="front" mac="52:54:00:00:00:01"
}
"#,
    );
    let web = &loaded.config.vms[1];
    assert_eq!((web.cpus, web.memory), (2, 1 << 30));
    assert_eq!(web.state, vmctl_schema::VmState::Stopped);
    let vlans: Vec<&str> = web.nics.iter().map(|n| n.vlan.as_str()).collect();
    assert_eq!(vlans, ["front", "back", "front"]);
    assert_eq!(web.nics[2].mac, "52:54:00:00:00:01");
    assert_eq!(web.depends_on, ["db"]);
    let db = &loaded.config.vms[0];
    assert_eq!(db.state, vmctl_schema::VmState::Running);
}

#[test]
fn the_quickstart_is_its_hand_written_expansion() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
    let root = std::path::absolute(root).expect("absolute");
    let templated = load(&root).expect("the quickstart loads").config;
    let lab = std::fs::read_to_string(root.join("lab.kdl")).expect("lab.kdl");
    let mut by_hand = String::from(&lab);
    for (name, disk, nic, more) in [
        (
            "web-1",
            "web-1-root",
            "vlan=\"front\"",
            "depends-on \"db-1\"",
        ),
        (
            "web-2",
            "web-2-root",
            "vlan=\"front\"",
            "depends-on \"db-1\"",
        ),
        (
            "db-1",
            "db-1-data",
            "vlan=\"back\" mac=\"52:54:00:00:02:01\" ip=\"10.200.0.10\"",
            "",
        ),
    ] {
        by_hand.push_str(&format!(
            "vm \"{name}\" host=\"local\" {{\n cpus 1\n memory \"64MiB\"\n \
             kernel \"../../tests/guest/vmlinux\"\n ip-cmdline #true\n \
             cmdline \"console=ttyS0 testguest.name={name} testguest.listen=3000 testguest.halt\"\n \
             disk \"{disk}\"\n nic {nic}\n {more}\n}}\n"
        ));
    }
    by_hand.push_str(
        "volume \"web-1-root\" pool=\"fast\" size=\"64MiB\"\n\
         volume \"web-2-root\" pool=\"fast\" size=\"64MiB\"\n\
         volume \"db-1-data\" pool=\"fast\" size=\"128MiB\" { prevent-destroy #true; }\n",
    );
    let by_hand = load_str(root.join("all.kdl"), &by_hand)
        .expect("the hand-written lab loads")
        .config;
    assert_eq!(templated, by_hand);
    // Every guest gets its address on the kernel command line; db-1 declares its own.
    assert!(templated.vms.iter().all(|vm| vm.ip_cmdline));
    let db = templated
        .vms
        .iter()
        .find(|vm| vm.name == "db-1")
        .expect("db-1");
    assert_eq!(db.nics[0].ip, Some("10.200.0.10".parse().unwrap()));
    let subnets: Vec<_> = templated
        .vlans
        .iter()
        .map(|v| v.subnet.as_deref())
        .collect();
    assert_eq!(subnets, [Some("10.100.0.0/24"), Some("10.200.0.0/24")]);
}

#[test]
fn a_mistake_in_a_template_is_one_diagnostic_naming_every_vm() {
    let text = format!(
        "{LAB}{}vm \"web-{{n}}\" count=3 template=\"web\"\nvm \"db-1\" template=\"base\" cpus=1 {{\n    disk \"db\"\n}}\nvolume \"db\" pool=\"fast\" size=\"1G\"\n",
        WEB.replace("memory \"512MiB\"", "memory \"1MiB\"")
    );
    let errors = load_str("/repo/main.kdl", &text).expect_err("invalid");
    assert_eq!(errors.len(), 1, "{}", shown(&errors));
    let d = &errors.0[0];
    assert_eq!(pointed(&text, d), "\"1MiB\"");
    assert_eq!(
        d.note.as_ref().map(|n| n.0.as_str()),
        Some("in vm web-1, web-2, web-3 and db-1, from template \"base\"")
    );
}

#[test]
fn a_mistake_of_one_instance_names_it_and_the_node_it_came_from() {
    let text = format!("{LAB}{WEB}vm \"web-{{n}}\" count=4 template=\"web\"\n");
    let errors = load_str("/repo/main.kdl", &text).expect_err("invalid");
    assert_eq!(errors.len(), 1, "{}", shown(&errors));
    let d = &errors.0[0];
    assert!(d.error.to_string().contains("`web-4-root`"), "{}", d.error);
    // Where the template says `disk "web-{n}-root"`.
    assert_eq!(pointed(&text, d), "\"web-{n}-root\"");
    let line = text
        .lines()
        .position(|l| l.starts_with("vm \"web-{n}\""))
        .expect("the vm")
        + 1;
    assert_eq!(
        d.note.as_ref().map(|n| n.0.clone()),
        Some(format!(
            "in vm web-4, expanded from vm \"web-{{n}}\" count=4 at /repo/main.kdl:{line}, from template \"web\""
        ))
    );
}

#[test]
fn an_override_in_the_vm_is_where_its_mistake_is_shown() {
    let text = format!("{LAB}{WEB}vm \"web-{{n}}\" count=3 template=\"web\" cpus=0\n");
    let errors = load_str("/repo/main.kdl", &text).expect_err("invalid");
    assert_eq!(errors.len(), 1, "{}", shown(&errors));
    assert_eq!(pointed(&text, &errors.0[0]), "cpus=0");
    let note = errors.0[0].note.as_ref().expect("a note").0.clone();
    assert!(
        note.starts_with("in vm web-1, web-2 and web-3, expanded from vm \"web-{n}\" count=3"),
        "{note}"
    );
    assert!(!note.contains("template"), "{note}");
}

#[test]
fn templates_and_the_vms_that_use_them_may_be_in_other_files() {
    let dir = tempfile_dir("files");
    std::fs::write(dir.join("lab.kdl"), LAB).unwrap();
    std::fs::write(
        dir.join("templates.kdl"),
        WEB.replace("cpus 2", "cpus \"two\""),
    )
    .unwrap();
    std::fs::write(
        dir.join("vms.kdl"),
        "vm \"web-{n}\" count=2 template=\"web\"\n",
    )
    .unwrap();
    let errors = load(&dir).expect_err("invalid");
    let codes: Vec<String> = errors
        .iter()
        .filter_map(|d| d.code().map(|c| c.to_string()))
        .collect();
    assert!(
        codes.contains(&"vmctl::schema::wrong_type".to_owned()),
        "{}",
        shown(&errors)
    );
    let wrong = errors
        .iter()
        .find(|d| matches!(d.error, vmctl_schema::SchemaError::WrongType { .. }))
        .expect("wrong type");
    let file = &wrong.source.as_ref().expect("source").name().to_owned();
    assert!(file.ends_with("templates.kdl"), "{file}");
    let note = &wrong.note.as_ref().expect("note").0;
    assert!(note.contains("vms.kdl:1"), "{note}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmctl-expansion-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn codes(d: &Diagnostics) -> Vec<String> {
    d.iter()
        .filter(|l| !vmctl_schema::is_warning(*l))
        .filter_map(|l| l.code().map(|c| c.to_string()))
        .collect()
}

#[test]
fn count_and_placeholder_rules() {
    let vm = "host=\"kvm-01\" cpus=1 memory=\"64MiB\" kernel=\"k\"";
    let e = fails(&format!("vm \"web\" count=2 {vm}\n"));
    assert_eq!(codes(&e), ["vmctl::schema::count_without_placeholder"]);
    let e = fails(&format!("vm \"web-{{n}}\" {vm}\n"));
    assert_eq!(codes(&e), ["vmctl::schema::placeholder_without_count"]);
    let e = fails(&format!("vm \"web\" {vm} cmdline=\"x={{n}}\"\n"));
    assert_eq!(codes(&e), ["vmctl::schema::placeholder_without_count"]);
    let e = fails(&format!("vm \"web-{{n}}\" count=-1 {vm}\n"));
    assert_eq!(codes(&e), ["vmctl::schema::too_small"]);
    let e = fails(&format!("vm \"web-{{n}}\" count=10001 {vm}\n"));
    assert_eq!(codes(&e), ["vmctl::schema::number_too_large"]);
    let e = fails(&format!("vm \"web-{{n}}\" count=\"3\" {vm}\n"));
    assert_eq!(codes(&e), ["vmctl::schema::wrong_type"]);
    // A child node is a count too; 0 declares nothing.
    let loaded = loads(&format!(
        "vm \"web-{{n}}\" {vm} {{\n    count 2\n}}\nvm \"x-{{n}}\" count=0 {vm}\n"
    ));
    assert_eq!(loaded.config.vms.len(), 2);
    // Counted hosts, networks, pools: every resource node takes a count.
    let loaded = loads(
        "host \"h-{n}\" count=2 ssh=\"root@10.0.0.{n}\"\nnetwork \"net-{n}\" count=2 host=\"h-{n}\"\n",
    );
    assert_eq!(loaded.config.hosts[2].ssh.as_deref(), Some("root@10.0.0.2"));
    assert_eq!(loaded.config.networks[2].host, "h-2");
    // A vm may override a numbered setting of its template without a count.
    loads(&format!(
        "template \"t\" {{\n    cmdline \"n={{n}}\"\n}}\nvm \"a\" template=\"t\" {vm} cmdline=\"x\"\n"
    ));
}

#[test]
fn integer_settings_are_numbered_when_written_as_strings_with_the_placeholder() {
    // `id "10{n}"` (here a child) reads as the integers 101, 102, 103: counted VLANs need their own ids.
    let loaded = loads(
        "vlan \"tenant-{n}\" count=3 network=\"lan\" gateway=\"10.{n}.0.1/24\" {\n    id \"10{n}\"\n}\n",
    );
    let ids: Vec<(&str, u16, Option<&str>)> = loaded.config.vlans[2..]
        .iter()
        .map(|v| (v.name.as_str(), v.id, v.gateway.as_deref()))
        .collect();
    assert_eq!(
        ids,
        [
            ("tenant-1", 101, Some("10.1.0.1/24")),
            ("tenant-2", 102, Some("10.2.0.1/24")),
            ("tenant-3", 103, Some("10.3.0.1/24"))
        ]
    );
    let vm = "host=\"kvm-01\" memory=\"64MiB\" kernel=\"k\"";
    let loaded = loads(&format!("vm \"w-{{n}}\" count=2 {vm} cpus=\"{{n}}\"\n"));
    let cpus: Vec<u32> = loaded.config.vms.iter().map(|v| v.cpus).collect();
    assert_eq!(cpus, [1, 2]);
    // Not a whole number once numbered, or a number written as a string without `{n}`:
    // still the wrong type, shown where it is written.
    let text = "vlan \"t-{n}\" count=2 network=\"lan\" id=\"x{n}\"\n";
    let e = fails(text);
    assert_eq!(
        codes(&e),
        ["vmctl::schema::wrong_type"; 2],
        "one per instance"
    );
    let full = format!("{LAB}{text}");
    assert!(e.iter().all(|d| pointed(&full, d).ends_with("\"x{n}\"")));
    let e = fails("vlan \"t\" network=\"lan\" id=\"7\"\n");
    assert_eq!(codes(&e), ["vmctl::schema::wrong_type"]);
    // Without a count it is a placeholder without count, as in any string.
    let e = fails("vlan \"t\" network=\"lan\" id=\"1{n}\"\n");
    assert!(codes(&e).contains(&"vmctl::schema::placeholder_without_count".to_owned()));
}

#[test]
fn template_rules() {
    let vm = "host=\"kvm-01\" cpus=1 memory=\"64MiB\" kernel=\"k\"";
    let e = fails(&format!(
        "vm \"a\" template=\"bse\" {vm}\ntemplate \"base\"\n"
    ));
    assert_eq!(codes(&e), ["vmctl::schema::dangling_reference"]);
    assert!(
        shown(&e).contains("no template named `bse`"),
        "{}",
        shown(&e)
    );
    assert_eq!(
        e.0[0].error.help().map(|h| h.to_string()).as_deref(),
        Some("did you mean `base`?")
    );
    // A cycle is one error naming every member; the vms on it ask for nothing more.
    let e = fails(&format!(
        "template \"a\" template=\"b\"\ntemplate \"b\" template=\"c\"\ntemplate \"c\" template=\"a\"\nvm \"x\" template=\"b\"\nvm \"y\" template=\"c\" {vm}\n"
    ));
    assert_eq!(
        codes(&e),
        ["vmctl::schema::template_cycle"],
        "{}",
        shown(&e)
    );
    assert!(
        shown(&e).contains("`a` -> `b` -> `c` -> `a`"),
        "{}",
        shown(&e)
    );
    assert!(
        e.iter().all(|d| !vmctl_schema::is_warning(d)),
        "all of the cycle is used"
    );
    let e = fails(&format!(
        "template \"t\"\ntemplate \"t\"\nvm \"a\" template=\"t\" {vm}\n"
    ));
    assert_eq!(codes(&e), ["vmctl::schema::duplicate_name"]);
    // What a template may not hold, and what takes no template.
    let e = fails(&format!(
        "template \"t\" count=2\nvm \"a\" template=\"t\" {vm}\n"
    ));
    assert_eq!(codes(&e), ["vmctl::schema::unknown_property"]);
    let e = fails("volume \"v\" template=\"t\" pool=\"fast\" size=\"1G\"\ntemplate \"t\"\n");
    assert_eq!(codes(&e), ["vmctl::schema::unknown_property"]);
    // Missing settings are asked of the vm or its template.
    let e = fails(
        "template \"t\" {\n    cpus 1\n}\nvm \"a\" template=\"t\" host=\"kvm-01\" kernel=\"k\"\n",
    );
    assert_eq!(codes(&e), ["vmctl::schema::missing_value"]);
    assert!(e.0[0]
        .error
        .help()
        .unwrap()
        .to_string()
        .contains("or to its template"));
}

#[test]
fn an_unused_template_is_a_warning_and_is_still_checked() {
    let loaded = loads("template \"spare\" {\n    cpus 1\n}\n");
    let warnings: Vec<String> = loaded
        .warnings
        .iter()
        .map(|w| w.code().map(|c| c.to_string()).unwrap_or_default())
        .collect();
    assert_eq!(warnings, ["vmctl::schema::unused_template"]);
    assert!(vmctl_schema::is_warning(&loaded.warnings[0]));
    let e = fails("template \"spare\" {\n    cpu 1\n}\n");
    assert_eq!(codes(&e), ["vmctl::schema::unknown_property"]);
    assert_eq!(e.to_string(), "1 error in the config");
}

#[test]
fn fmt_keeps_templates_and_counts_as_written() {
    let text = "vm \"web-{n}\" host=\"kvm-01\"  template=\"web\" count=3 { disk \"web-{n}-root\"; }\ntemplate web template=base { cpus 2; }\n";
    let out = vmctl_schema::format(text).expect("formats");
    assert_eq!(
        out,
        "vm \"web-{n}\" count=3 template=\"web\" host=\"kvm-01\" {\n    disk \"web-{n}-root\"\n}\ntemplate \"web\" template=\"base\" {\n    cpus 2\n}\n"
    );
}
