//! Placement: a volume is attached to one VM only, and a VM uses only the volumes and
//! VLANs of its own host (a VLAN of a network that spans hosts: of any of them).

use std::collections::HashMap;

use super::{Index, Report};
use crate::diagnostics::SchemaError;
use crate::model::Config;
use crate::spans::{ResourceSpans, Site, Spans};

pub fn check(config: &Config, spans: &Spans, index: &Index<'_>, report: &mut Report<'_>) {
    let mut attached: HashMap<&str, (&str, Site)> = HashMap::new();
    for (vm, s) in config.vms.iter().zip(&spans.vms) {
        // A VM whose own host is unknown is already reported as a dangling reference;
        // comparing hosts would only add a second, misleading error.
        let host_known = index.hosts.contains_key(vm.host.as_str());
        for (i, disk) in vm.disks.iter().enumerate() {
            let here = s.field_or_name("disk", i as u32);
            if let Some(&(first_vm, first)) = attached.get(disk.as_str()) {
                report.push_in(
                    &vm.name,
                    s,
                    here,
                    SchemaError::VolumeShared {
                        volume: disk.clone(),
                        vm: vm.name.clone(),
                        first_vm: first_vm.to_owned(),
                        span: here.span,
                        first: (first.file == here.file).then_some(first.span),
                    },
                );
            } else {
                attached.insert(disk, (&vm.name, here));
            }
            if let Some(host) = index.volume_host(config, disk).filter(|_| host_known) {
                other_host(report, vm, s, "volume", disk, &[host], here);
            }
        }
        for (i, nic) in vm.nics.iter().enumerate() {
            let here = s.field_or_name("nic.vlan", i as u32);
            if let Some(hosts) = index.vlan_hosts(config, &nic.vlan).filter(|_| host_known) {
                other_host(report, vm, s, "VLAN", &nic.vlan, hosts, here);
            }
        }
    }
}

fn other_host(
    report: &mut Report<'_>,
    vm: &crate::model::Vm,
    s: &ResourceSpans,
    kind: &'static str,
    name: &str,
    hosts: &[impl AsRef<str>],
    here: Site,
) {
    if vm.host.is_empty() || hosts.iter().any(|h| h.as_ref() == vm.host) {
        return;
    }
    let names: Vec<String> = hosts.iter().map(|h| format!("`{}`", h.as_ref())).collect();
    let other_host = match names.as_slice() {
        [one] => format!("host {one}"),
        many => format!("hosts {}", many.join(", ")),
    };
    report.push_in(
        &vm.name,
        s,
        here,
        SchemaError::OtherHost {
            vm: vm.name.clone(),
            vm_host: vm.host.clone(),
            kind,
            name: name.to_owned(),
            other_host,
            span: here.span,
        },
    );
}
