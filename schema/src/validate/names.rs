//! Names: one resource per name and kind, and every reference names a resource that
//! exists (with did-you-mean when it does not).

use std::collections::HashMap;

use super::Report;
use crate::diagnostics::{suggest, SchemaError};
use crate::model::Config;
use crate::spans::{ResourceSpans, Spans};

/// Position of each resource by name, per kind (the first one when doubled).
#[derive(Debug, Default)]
pub struct Index<'c> {
    pub hosts: HashMap<&'c str, usize>,
    pub networks: HashMap<&'c str, usize>,
    pub vlans: HashMap<&'c str, usize>,
    pub pools: HashMap<&'c str, usize>,
    pub volumes: HashMap<&'c str, usize>,
    pub vms: HashMap<&'c str, usize>,
}

fn build_one<'c>(
    kind: &'static str,
    names: impl Iterator<Item = &'c str>,
    spans: &[ResourceSpans],
    report: &mut Report<'_>,
) -> HashMap<&'c str, usize> {
    let mut map: HashMap<&'c str, usize> = HashMap::new();
    for (i, name) in names.enumerate() {
        if name.is_empty() {
            continue; // already reported as missing
        }
        if let Some(&first) = map.get(name) {
            let (Some(here), Some(there)) = (spans.get(i), spans.get(first)) else {
                continue;
            };
            let (first_label, help) = report.first(
                here.site(here.name),
                there.site(there.name),
                &format!("rename one of the two {kind}s"),
            );
            let error = SchemaError::DuplicateName {
                kind,
                name: name.to_owned(),
                span: here.name,
                first: first_label,
                help,
            };
            report.push_in(name, here, here.site(here.name), error);
        } else {
            map.insert(name, i);
        }
    }
    map
}

/// A resource that refers to others.
struct Owner<'s> {
    name: &'s str,
    spans: &'s ResourceSpans,
}

impl Owner<'_> {
    /// Reports `name` (of a `kind`, given in setting `field`) unless `map` has it.
    fn dangling(
        &self,
        report: &mut Report<'_>,
        map: &HashMap<&str, usize>,
        kind: &'static str,
        name: &str,
        field: &str,
        index: u32,
    ) {
        if name.is_empty() || map.contains_key(name) {
            return;
        }
        let mut candidates: Vec<&str> = map.keys().copied().collect();
        candidates.sort_unstable();
        let here = self.spans.field_or_name(field, index);
        let error = SchemaError::DanglingReference {
            kind,
            name: name.to_owned(),
            span: here.span,
            help: suggest(name, candidates),
        };
        report.push_in(self.name, self.spans, here, error);
    }
}

impl<'c> Index<'c> {
    /// Indexes every resource by name, reporting doubled names.
    pub fn build(config: &'c Config, spans: &Spans, report: &mut Report<'_>) -> Self {
        Index {
            hosts: build_one(
                "host",
                config.hosts.iter().map(|h| h.name.as_str()),
                &spans.hosts,
                report,
            ),
            networks: build_one(
                "network",
                config.networks.iter().map(|n| n.name.as_str()),
                &spans.networks,
                report,
            ),
            vlans: build_one(
                "vlan",
                config.vlans.iter().map(|v| v.name.as_str()),
                &spans.vlans,
                report,
            ),
            pools: build_one(
                "pool",
                config.pools.iter().map(|p| p.name.as_str()),
                &spans.pools,
                report,
            ),
            volumes: build_one(
                "volume",
                config.volumes.iter().map(|v| v.name.as_str()),
                &spans.volumes,
                report,
            ),
            vms: build_one(
                "vm",
                config.vms.iter().map(|v| v.name.as_str()),
                &spans.vms,
                report,
            ),
        }
    }

    /// Reports every reference to a resource that does not exist.
    pub fn check_references(&self, config: &Config, spans: &Spans, report: &mut Report<'_>) {
        for (network, s) in config.networks.iter().zip(&spans.networks) {
            let o = Owner {
                name: &network.name,
                spans: s,
            };
            o.dangling(report, &self.hosts, "host", &network.host, "host", 0);
            for (i, host) in network.hosts.iter().enumerate() {
                o.dangling(report, &self.hosts, "host", host, "hosts", i as u32);
            }
        }
        for (vlan, s) in config.vlans.iter().zip(&spans.vlans) {
            let o = Owner {
                name: &vlan.name,
                spans: s,
            };
            o.dangling(
                report,
                &self.networks,
                "network",
                &vlan.network,
                "network",
                0,
            );
            if let Some(host) = &vlan.gateway_host {
                o.dangling(report, &self.hosts, "host", host, "gateway-host", 0);
            }
            for (i, target) in vlan.route_to.iter().enumerate() {
                o.dangling(report, &self.vlans, "vlan", target, "route-to", i as u32);
            }
        }
        for (pool, s) in config.pools.iter().zip(&spans.pools) {
            let o = Owner {
                name: &pool.name,
                spans: s,
            };
            o.dangling(report, &self.hosts, "host", &pool.host, "host", 0);
        }
        for (volume, s) in config.volumes.iter().zip(&spans.volumes) {
            let o = Owner {
                name: &volume.name,
                spans: s,
            };
            o.dangling(report, &self.pools, "pool", &volume.pool, "pool", 0);
        }
        for (vm, s) in config.vms.iter().zip(&spans.vms) {
            let o = Owner {
                name: &vm.name,
                spans: s,
            };
            o.dangling(report, &self.hosts, "host", &vm.host, "host", 0);
            for (i, disk) in vm.disks.iter().enumerate() {
                o.dangling(report, &self.volumes, "volume", disk, "disk", i as u32);
            }
            for (i, nic) in vm.nics.iter().enumerate() {
                o.dangling(report, &self.vlans, "vlan", &nic.vlan, "nic.vlan", i as u32);
            }
            for (i, dep) in vm.depends_on.iter().enumerate() {
                o.dangling(report, &self.vms, "vm", dep, "depends-on", i as u32);
            }
        }
    }

    /// The network of a VLAN, if both exist.
    pub fn vlan_network<'x>(
        &self,
        config: &'x Config,
        vlan: &str,
    ) -> Option<&'x crate::model::Network> {
        let vlan = config.vlans.get(*self.vlans.get(vlan)?)?;
        config
            .networks
            .get(*self.networks.get(vlan.network.as_str())?)
    }

    /// The hosts a VLAN is on (those of its network), if both exist.
    pub fn vlan_hosts<'x>(&self, config: &'x Config, vlan: &str) -> Option<&'x [String]> {
        Some(self.vlan_network(config, vlan)?.on_hosts())
    }

    /// The host a volume is on (through its pool), if both exist.
    pub fn volume_host<'x>(&self, config: &'x Config, volume: &str) -> Option<&'x str> {
        let volume = config.volumes.get(*self.volumes.get(volume)?)?;
        let pool = config.pools.get(*self.pools.get(volume.pool.as_str())?)?;
        Some(pool.host.as_str())
    }
}
