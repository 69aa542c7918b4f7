//! The language reference documents every node and setting: of the model (through its
//! JSON Schema, so a new field fails here until documented) and of the language table.

use std::collections::BTreeSet;

const REFERENCE: &str = include_str!("../REFERENCE.md");

/// The KDL name of a model property.
fn kdl_name(property: &str) -> &str {
    match property {
        "hosts" => "host",
        "networks" => "network",
        "vlans" => "vlan",
        "pools" => "pool",
        "volumes" => "volume",
        "vms" => "vm",
        "disks" => "disk",
        "nics" => "nic",
        other => other,
    }
}

fn documented(name: &str) -> bool {
    REFERENCE.contains(&format!("`{name}`"))
}

#[test]
fn every_model_property_is_documented() {
    let schema = vmctl_schema::json_schema();
    let mut missing = BTreeSet::new();
    let mut checked = 0;
    let mut defs: Vec<(&String, &serde_json::Value)> =
        schema["$defs"].as_object().expect("$defs").iter().collect();
    let root = String::from("Config");
    defs.push((&root, &schema));
    for (def, body) in defs {
        if let Some(properties) = body["properties"].as_object() {
            for property in properties.keys() {
                let name = kdl_name(property);
                checked += 1;
                if name != "name" && !documented(name) {
                    missing.insert(format!("{def}.{property} (`{name}`)"));
                }
            }
        }
        for variant in body["oneOf"].as_array().into_iter().flatten() {
            if let Some(value) = variant["const"].as_str() {
                if !REFERENCE.contains(&format!("\"{value}\"")) {
                    missing.insert(format!("{def} value \"{value}\""));
                }
            }
        }
        for value in body["enum"].as_array().into_iter().flatten() {
            if let Some(value) = value.as_str() {
                if !REFERENCE.contains(&format!("\"{value}\"")) {
                    missing.insert(format!("{def} value \"{value}\""));
                }
            }
        }
    }
    assert!(
        checked > 40,
        "only {checked} properties found in the schema"
    );
    assert!(
        missing.is_empty(),
        "REFERENCE.md does not document: {missing:?}"
    );
}

#[test]
fn every_node_and_setting_of_the_language_is_documented() {
    let mut missing = Vec::new();
    let mut kinds: Vec<&vmctl_schema::language::NodeKind> =
        vmctl_schema::language::TOP_LEVEL.to_vec();
    kinds.push(&vmctl_schema::language::NIC);
    for kind in kinds {
        if !REFERENCE.contains(&format!("### `{}`", kind.name))
            && !REFERENCE.contains(&format!("#### `{}`", kind.name))
        {
            missing.push(format!("node {}", kind.name));
        }
        for field in kind.fields {
            if !documented(field.name) {
                missing.push(format!("{}.{}", kind.name, field.name));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "REFERENCE.md does not document: {missing:?}"
    );
}

#[test]
fn every_diagnostic_code_is_documented() {
    let source = include_str!("../src/diagnostics/rules.rs");
    let codes: Vec<&str> = source
        .split("code(vmctl::schema::")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .collect();
    assert!(codes.len() > 30);
    let missing: Vec<&&str> = codes
        .iter()
        .filter(|c| !REFERENCE.contains(&format!("`vmctl::schema::{c}`")))
        .collect();
    assert!(missing.is_empty(), "undocumented codes: {missing:?}");
    let unique: BTreeSet<&&str> = codes.iter().collect();
    assert_eq!(unique.len(), codes.len(), "diagnostic codes must be unique");
}
