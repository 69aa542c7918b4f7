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

#[cfg(test)]
mod tests {
    use crate::action::{Action, Effect, Reason};
    use crate::live::LiveFile;
    use crate::testdata::{change, graph_of, plan_of, quickstart, vm};
    use crate::{happens_before, PlanOptions};

    fn live_vm<'a>(live: &'a mut LiveFile, name: &str) -> &'a mut crate::live::LiveVm {
        let host = live.hosts.get_mut("local").expect("host");
        host.vms.iter_mut().find(|v| v.name == name).expect("vm")
    }

    #[test]
    fn a_vm_recorded_without_addresses_gets_them_in_place() {
        let mut config = quickstart();
        let mut live = LiveFile::applied(&config);
        for nic in &mut live_vm(&mut live, "web-1").spec.nics {
            nic.ip = None;
            nic.ip_allocated = false;
        }
        let plan = plan_of(&config, &live).unwrap();
        let web1 = change(&plan, "vm.web-1");
        assert_eq!(web1.action, Action::Update);
        assert_eq!(web1.attributes[0].name, "nics");
        assert_eq!(web1.attributes[0].effect, Effect::InPlace);
        // It keeps the address it would have had: web-2's is not taken.
        assert_eq!(change(&plan, "vm.web-2").action, Action::NoOp);
        // With ip-cmdline its kernel argument changes: a restart.
        let web1 = config.vms.iter_mut().find(|v| v.name == "web-1").unwrap();
        web1.ip_cmdline = true;
        let plan = plan_of(&config, &live).unwrap();
        let web1 = change(&plan, "vm.web-1");
        assert_eq!(web1.action, Action::Replace);
        assert_eq!(web1.reason, Some(Reason::Restart));
    }

    #[test]
    fn declaring_the_allocated_address_changes_nothing_and_another_restarts() {
        let config = quickstart();
        let live = LiveFile::applied(&config);
        let mut declared = config.clone();
        let web1 = declared.vms.iter_mut().find(|v| v.name == "web-1").unwrap();
        web1.nics[0].ip = Some("10.100.0.2".parse().unwrap());
        let plan = plan_of(&declared, &live).unwrap();
        assert!(
            !plan.has_changes(),
            "{:?}",
            plan.actionable().collect::<Vec<_>>()
        );
        let web1 = declared.vms.iter_mut().find(|v| v.name == "web-1").unwrap();
        web1.nics[0].ip = Some("10.100.0.20".parse().unwrap());
        let plan = plan_of(&declared, &live).unwrap();
        let change = change(&plan, "vm.web-1");
        assert_eq!(change.action, Action::Replace);
        assert_eq!(change.attributes[0].name, "nics");
        assert_eq!(change.attributes[0].effect, Effect::Restart);
    }

    #[test]
    fn a_new_vm_that_takes_a_removed_vms_address_starts_after_the_delete() {
        let config = quickstart();
        let live = LiveFile::applied(&config);
        let mut next = config.clone();
        next.vms.retain(|v| v.name != "web-1");
        next.volumes.retain(|v| v.name != "web-1-root");
        let mut web3 = vm("web-3", "front", "52:54:00:00:00:33");
        web3.disks.clear();
        next.vms.push(web3);
        let (plan, graph) = graph_of(&next, &live, &PlanOptions::default());
        let created = change(&plan, "vm.web-3");
        let Some(crate::plan::Resource::Vm(web3)) = &created.after else {
            panic!("web-3 is created");
        };
        assert_eq!(web3.nics[0].ip, Some("10.100.0.2".parse().unwrap()));
        assert!(happens_before(&graph, "delete vm.web-1", "create vm.web-3"));
    }
}
