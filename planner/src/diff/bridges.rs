//! A network whose bridge is set down, or has VLAN filtering turned off, is drift.
//!
//! The host reports it with the network ([`crate::live::LiveNetwork::bridge_drift`]).
//! Both are repaired in place by the network's `update` step, which brings the bridge
//! back to the shape it is made in (up, and filtering where the kernel filters); the
//! VLANs, ports and VMs on it are kept. Each shows as an attribute:
//! `bridge.up` `false -> true`, `bridge.vlan-filtering` `false -> true`.

use serde_json::Value;

use crate::action::{Action, Effect, ResourceKind};
use crate::live::{BridgeDrift, LiveFile};
use crate::plan::{AttrChange, Change};

/// Adds the bridge drift of every network that is kept, turning a no-op into an
/// update.
pub fn repair_bridges(changes: &mut [Change], live: &LiveFile, project: &str) {
    for change in changes.iter_mut() {
        let kept = matches!(change.action, Action::NoOp | Action::Update);
        if change.id.kind != ResourceKind::Network || change.before.is_none() || !kept {
            continue;
        }
        let found = live
            .host(&change.host)
            .networks
            .iter()
            .find(|n| n.project == project && n.name == change.id.name);
        let Some(network) = found else { continue };
        for drift in &network.bridge_drift {
            let name = match drift {
                BridgeDrift::Down => "bridge.up",
                BridgeDrift::VlanFilteringOff => "bridge.vlan-filtering",
            };
            change.attributes.push(AttrChange {
                name: name.to_owned(),
                before: Value::from(false),
                after: Value::from(true),
                effect: Effect::InPlace,
            });
            change.action = Action::Update;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    #[test]
    fn a_bridge_set_down_or_unfiltered_is_an_update_of_its_network() {
        let config = testdata::quickstart();
        let network = config.networks[0].clone();
        let host = network.on_hosts()[0].clone();
        let mut live = LiveFile::applied(&config);
        let networks = &mut live.hosts.get_mut(&host).unwrap().networks;
        let applied = networks
            .iter_mut()
            .find(|n| n.name == network.name)
            .unwrap();
        applied.bridge_drift = vec![BridgeDrift::Down, BridgeDrift::VlanFilteringOff];
        let changes = super::super::diff(
            &config,
            &crate::ipam::allocate(&config, &live).unwrap(),
            &live,
            &Default::default(),
            false,
        )
        .unwrap();
        let changed: Vec<_> = changes
            .iter()
            .filter(|c| c.action != Action::NoOp)
            .collect();
        assert_eq!(changed.len(), 1, "only the network: {changed:?}");
        let change = changed[0];
        assert_eq!(change.id.kind, ResourceKind::Network);
        assert_eq!(change.id.name, network.name);
        assert_eq!(change.action, Action::Update);
        let attrs: Vec<_> = change
            .attributes
            .iter()
            .map(|a| (a.name.as_str(), a.before.clone(), a.after.clone(), a.effect))
            .collect();
        assert_eq!(
            attrs,
            [
                (
                    "bridge.up",
                    Value::from(false),
                    Value::from(true),
                    Effect::InPlace
                ),
                (
                    "bridge.vlan-filtering",
                    Value::from(false),
                    Value::from(true),
                    Effect::InPlace
                ),
            ]
        );
        // Without drift, nothing to do.
        let live = LiveFile::applied(&config);
        let changes = super::super::diff(
            &config,
            &crate::ipam::allocate(&config, &live).unwrap(),
            &live,
            &Default::default(),
            false,
        )
        .unwrap();
        assert!(changes.iter().all(|c| c.action == Action::NoOp));
    }
}
