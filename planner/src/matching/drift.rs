//! Tap drift of running VMs, read off a host's facts: a NIC whose tap is gone, or is
//! there but not on its VLAN or down ([`TapDrift`], which the diff plans: see
//! `crate::diff::taps`).
//!
//! A tap whose VLAN is itself gone is not reported as detached: the VLAN's re-creation
//! puts its VMs' taps back (the runtime's `reattach_taps`). A deleted tap is always
//! reported: only a restart of its VM makes it anew.

use vmctl_schema::Config;

use crate::facts::HostFacts;
use crate::live::{LiveVm, TapDrift, TapState, VmStatus};

/// The NICs of `vm` whose tap is not as applied, when `vm` runs.
pub fn tap_drift(config: &Config, vm: &LiveVm, facts: &HostFacts) -> Vec<TapDrift> {
    if vm.status != VmStatus::Running {
        return Vec::new();
    }
    let mut drift = Vec::new();
    for (nic, spec) in vm.spec.nics.iter().enumerate() {
        let tap = facts.taps.iter().find(|t| t.vm == vm.name && t.nic == nic);
        let Some(tap) = tap else {
            drift.push(TapDrift {
                nic,
                state: TapState::Missing,
            });
            continue;
        };
        // Where it belongs: the VLAN the VM was applied with, when it exists.
        let vlan = config
            .vlans
            .iter()
            .find(|v| v.name == spec.vlan)
            .filter(|v| {
                facts
                    .vlans
                    .iter()
                    .any(|o| o.network == v.network && o.id == v.id)
            });
        let Some(vlan) = vlan else { continue };
        let placed =
            tap.network.as_deref() == Some(vlan.network.as_str()) && tap.vlan == Some(vlan.id);
        // A tap set down cuts its VM off as surely as one off its VLAN; re-attaching it
        // brings it up.
        if !(placed && tap.up) {
            drift.push(TapDrift {
                nic,
                state: TapState::Detached,
            });
        }
    }
    drift
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::TapFact;
    use crate::matching::tests::{config, vlan_fact};
    use crate::record::{NicSpec, VmSpec};

    fn vm(status: VmStatus) -> LiveVm {
        LiveVm {
            name: "web".into(),
            project: "lab".into(),
            spec: VmSpec {
                name: "web".into(),
                nics: vec![NicSpec {
                    vlan: "front".into(),
                    mac: "52:54:00:00:00:01".into(),
                    ..NicSpec::default()
                }],
                ..VmSpec::default()
            },
            status,
            ..LiveVm::default()
        }
    }

    fn seen(tap: Option<(Option<u16>, bool)>) -> HostFacts {
        HostFacts {
            vlans: vec![vlan_fact("lan", 100)],
            taps: tap
                .map(|(vlan, up)| TapFact {
                    ifname: "vt0".into(),
                    vm: "web".into(),
                    nic: 0,
                    network: vlan.map(|_| "lan".into()),
                    vlan,
                    up,
                })
                .into_iter()
                .collect(),
            ..HostFacts::default()
        }
    }

    fn states(status: VmStatus, tap: Option<(Option<u16>, bool)>) -> Vec<TapState> {
        let drift = tap_drift(&config(), &vm(status), &seen(tap));
        drift.iter().map(|d| d.state).collect()
    }

    #[test]
    fn a_running_vms_tap_gone_off_its_vlan_or_down_is_drift() {
        use TapState::*;
        let running = VmStatus::Running;
        assert_eq!(states(running, Some((Some(100), true))), []);
        assert_eq!(states(running, None), [Missing]);
        assert_eq!(states(running, Some((None, true))), [Detached]);
        assert_eq!(states(running, Some((Some(100), false))), [Detached]);
        // A tap whose VLAN is gone is put back by the VLAN's re-creation, not drift.
        let mut gone = seen(Some((None, true)));
        gone.vlans.clear();
        assert_eq!(tap_drift(&config(), &vm(running), &gone), []);
        // A stopped VM's taps are not its drift.
        assert_eq!(states(VmStatus::Stopped, None), []);
    }
}
