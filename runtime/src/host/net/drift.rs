//! Tap drift of running VMs, read off an observation: a NIC whose tap is gone, or is
//! there but not on its VLAN (the planner's `TapDrift`, see `vmctl_planner::diff`).
//!
//! A tap whose VLAN is itself gone is not reported as detached: the VLAN's re-creation
//! puts its VMs' taps back (the runtime's `reattach_taps`). A deleted tap is always
//! reported: only a restart of its VM makes it anew.

use vmctl_planner::live::{LiveVm, TapDrift, TapState};
use vmctl_planner::VmStatus;
use vmctl_schema::Config;

use crate::host::observe::HostObservation;

/// The NICs of `vm` whose tap is not as applied, when `vm` runs.
pub fn tap_drift(config: &Config, vm: &LiveVm, seen: &HostObservation) -> Vec<TapDrift> {
    if vm.status != VmStatus::Running {
        return Vec::new();
    }
    let mut drift = Vec::new();
    for (nic, spec) in vm.spec.nics.iter().enumerate() {
        let tap = seen.taps.iter().find(|t| t.vm == vm.name && t.nic == nic);
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
                seen.vlans
                    .iter()
                    .any(|o| o.network == v.network && o.id == v.id)
            });
        let Some(vlan) = vlan else { continue };
        let placed =
            tap.network.as_deref() == Some(vlan.network.as_str()) && tap.vlan == Some(vlan.id);
        if !placed {
            drift.push(TapDrift {
                nic,
                state: TapState::Detached,
            });
        }
    }
    drift
}
