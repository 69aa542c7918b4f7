//! A running VM whose tap is gone, off its VLAN or down is drift.
//!
//! The matcher finds, per running VM, the NICs whose tap is not as applied
//! ([`crate::live::TapDrift`], [`crate::matching::drift`]). A tap that is merely
//! detached (not a port of its VLAN, or of another, or down) is re-attached in place: the VM's `update` step puts it back and the
//! guest never notices. A deleted tap cannot be given back to the running VMM (its
//! descriptor points at the deleted device), so the VM is restarted (`replace`, reason
//! restart; its volumes are kept), which makes the tap anew. Each NIC shows as an
//! attribute `nic[<i>].tap`: `"missing"` or `"detached"` -> `"attached"`.

use serde_json::Value;

use super::disks::keeps_running;
use crate::action::{Action, Effect, Reason, ResourceKind};
use crate::live::{LiveFile, TapState};
use crate::plan::{AttrChange, Change};

/// Adds the tap drift of every VM that keeps running, turning a no-op into an update
/// (a detached tap) or a restart (a missing one).
pub fn repair_taps(changes: &mut [Change], live: &LiveFile, project: &str) {
    for change in changes.iter_mut() {
        if change.id.kind != ResourceKind::Vm || !keeps_running(change) {
            continue;
        }
        let found = live
            .host(&change.host)
            .vms
            .iter()
            .find(|v| v.project == project && v.name == change.id.name);
        let Some(vm) = found else { continue };
        if vm.tap_drift.is_empty() {
            continue;
        }
        for drift in &vm.tap_drift {
            let (before, effect) = match drift.state {
                TapState::Missing => ("missing", Effect::Restart),
                TapState::Detached => ("detached", Effect::InPlace),
            };
            change.attributes.push(AttrChange {
                name: format!("nic[{}].tap", drift.nic),
                before: Value::from(before),
                after: Value::from("attached"),
                effect,
            });
        }
        if change
            .attributes
            .iter()
            .any(|a| a.effect == Effect::Restart)
        {
            change.action = Action::Replace;
            change.reason = Some(Reason::Restart);
        } else if change.action == Action::NoOp {
            change.action = Action::Update;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{TapDrift, VmStatus};
    use crate::testdata;

    #[test]
    fn a_detached_tap_is_an_update_and_a_missing_one_a_restart() {
        let config = testdata::quickstart();
        let mut live = LiveFile::applied(&config);
        let host = config.vms[0].host.clone();
        let vms = &mut live.hosts.get_mut(&host).unwrap().vms;
        assert!(vms.len() >= 2, "the test config has two VMs or more");
        assert!(vms.iter().all(|v| v.status == VmStatus::Running));
        vms[0].tap_drift = vec![TapDrift {
            nic: 0,
            state: TapState::Detached,
        }];
        vms[1].tap_drift = vec![TapDrift {
            nic: 0,
            state: TapState::Missing,
        }];
        let (first, second) = (vms[0].name.clone(), vms[1].name.clone());
        let changes = super::super::diff(
            &config,
            &crate::ipam::allocate(&config, &live).unwrap(),
            &live,
            &Default::default(),
            false,
        )
        .unwrap();
        let of = |name: &str| {
            changes
                .iter()
                .find(|c| c.id.kind == ResourceKind::Vm && c.id.name == name)
                .unwrap()
        };
        let detached = of(&first);
        assert_eq!(detached.action, Action::Update);
        assert_eq!(detached.attributes[0].name, "nic[0].tap");
        assert_eq!(detached.attributes[0].before, "detached");
        assert_eq!(detached.attributes[0].effect, Effect::InPlace);
        let missing = of(&second);
        assert_eq!(missing.action, Action::Replace);
        assert_eq!(missing.reason, Some(Reason::Restart));
        assert_eq!(missing.attributes[0].effect, Effect::Restart);
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
