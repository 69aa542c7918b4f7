//! Attribute by attribute: which attributes of two versions of a resource differ, and
//! what changing each takes.
//!
//! | kind      | in place                      | forces restart (VM running)            | forces replacement |
//! | --------- | ----------------------------- | -------------------------------------- | ------------------ |
//! | `netns`   | (only its name, its identity) |                                        |                    |
//! | `pool`    |                               |                                        | `type`, `path`     |
//! | `network` | `uplink`                      |                                        | `bridge`           |
//! | `volume`  | `size` (grow), `prevent-destroy` |                                     | `pool`, `from`; `size` shrink is an error unless `--replace` |
//! | `vlan`    | `gateway`, `vxlan` (its tunnel: VNI, local and peer addresses) |        | `network`, `id`    |
//! | `dhcp`    | `leases` (dnsmasq re-reads them), `running` (started) | `config` (dnsmasq restarts) |      |
//! | `vm`      | `cpuset`, `depends-on`, `migrate`, `migration-downtime` | `cpus`, `memory`, `kernel`, `initrd`, `cmdline`, `disks`, `nics` | |
//! | `firewall` | all (`hash` stands for its `ruleset`, which is not shown) | | |
//!
//! An attribute this table does not know forces the strongest effect of its kind, so a
//! new attribute is never silently changed in place. `name` and `host` are the resource's
//! identity (a resource on another host is another resource); a VM's `state` is compared
//! with its live status by the VM rules, not here. A VM's `cpuid-mask` (its host's) is
//! never compared: the guest keeps the CPU it started with (and takes it along when it
//! migrates); a host's new mask reaches a VM when it next starts.

use serde_json::Value;

use crate::action::{Effect, ResourceKind};
use crate::plan::{AttrChange, Resource};

/// What changing `attr` of a `kind` takes.
pub fn effect_of(kind: ResourceKind, attr: &str) -> Effect {
    use ResourceKind::*;
    match (kind, attr) {
        (Network, "uplink") => Effect::InPlace,
        (Volume, "size" | "prevent-destroy") => Effect::InPlace,
        (Vlan, "gateway" | "vxlan") => Effect::InPlace,
        (Vm, "cpuset" | "depends-on" | "migrate" | "migration-downtime") => Effect::InPlace,
        (Vm, _) => Effect::Restart,
        (Dhcp, "leases" | "running") => Effect::InPlace,
        (Dhcp, "config") => Effect::Restart,
        // The table is replaced in one transaction; forwarding follows.
        (Firewall, _) => Effect::InPlace,
        (Netns | Pool | Network | Volume | Vlan | Dhcp, _) => Effect::Replace,
    }
}

/// Attributes that are identity or handled elsewhere (a DHCP server's `files` are
/// compared by their hashes).
fn skipped(attr: &str) -> bool {
    matches!(
        attr,
        "kind" | "name" | "host" | "state" | "files" | "ruleset" | "cpuid-mask"
    )
}

/// The attributes that differ between `before` and `after` (same kind), in the model's
/// field order, each with its effect.
pub fn changed_attributes(before: &Resource, after: &Resource) -> Vec<AttrChange> {
    let kind = after.kind();
    let (Ok(Value::Object(before)), Ok(Value::Object(after))) =
        (serde_json::to_value(before), serde_json::to_value(after))
    else {
        return Vec::new();
    };
    let mut changes = Vec::new();
    // An attribute left out of JSON when absent (a VLAN's `vxlan`) may be on one side
    // only: after's attributes in order, then those only before has.
    let only_before = before.keys().filter(|name| !after.contains_key(*name));
    let names: Vec<&String> = after.keys().chain(only_before).collect();
    for name in names {
        if skipped(name) {
            continue;
        }
        let before_value = before.get(name).cloned().unwrap_or(Value::Null);
        let after_value = after.get(name).cloned().unwrap_or(Value::Null);
        if before_value != after_value {
            changes.push(AttrChange {
                effect: effect_of(kind, name),
                name: name.clone(),
                before: before_value,
                after: after_value,
            });
        }
    }
    changes
}

/// Every attribute of a resource with its value, for showing a create or a destroy.
pub fn all_attributes(resource: &Resource) -> Vec<(String, Value)> {
    match serde_json::to_value(resource) {
        Ok(Value::Object(map)) => map
            .into_iter()
            .filter(|(name, _)| {
                !matches!(
                    name.as_str(),
                    "kind" | "name" | "host" | "files" | "ruleset"
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}
