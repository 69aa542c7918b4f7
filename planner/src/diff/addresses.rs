//! A VM's NIC addresses in the diff. The address is part of the NIC, so a changed
//! address is a changed `nics` (forcing a restart of a running VM, like a NIC moved to
//! another VLAN: the guest's address is its network identity). Two cases are not changes:
//!
//! - the live NIC has the address the config now declares, allocated then: the same
//!   address, only who chose it differs (`ip-allocated` is taken from the config);
//! - the live VM was applied by a vmctl without addresses (no NIC of its record has one):
//!   its addresses are recorded in place, the guest keeps running. A VM with
//!   `ip-cmdline` still restarts, for its `ip-argument`.

use vmctl_schema::Vm;

use crate::action::Effect;
use crate::plan::AttrChange;

/// `live` with `ip-allocated` of each NIC taken from `wanted` where the address is the
/// same.
pub fn align(live: &mut Vm, wanted: &Vm) {
    for (old, new) in live.nics.iter_mut().zip(&wanted.nics) {
        if old.ip == new.ip {
            old.ip_allocated = new.ip_allocated;
        }
    }
}

/// Makes the `nics` change of a VM recorded without addresses in-place when addresses
/// are all that changed.
pub fn first_record(attributes: &mut [AttrChange], live: &Vm, wanted: &Vm) {
    let legacy = live.nics.iter().all(|n| n.ip.is_none());
    let same_but_addresses = live.nics.len() == wanted.nics.len()
        && live
            .nics
            .iter()
            .zip(&wanted.nics)
            .all(|(a, b)| a.vlan == b.vlan && a.mac == b.mac);
    if !(legacy && same_but_addresses) {
        return;
    }
    for attribute in attributes.iter_mut().filter(|a| a.name == "nics") {
        attribute.effect = Effect::InPlace;
    }
}
