//! One builder per node kind: a read node (with its templates, for a `vm`) to a model
//! struct with its spans. Invalid settings are reported and replaced by neutral values,
//! so later checks still run on the rest of the resource.

use std::path::{Path, PathBuf};

use kdl::KdlNode;

use super::reader::NodeReader;
use super::values::{
    address_error, cpuset_error, gateway_error, netns_error, resolve, ssh_address, ssh_error,
    subnet_error, underlay_error,
};
use crate::diagnostics::{suggest, SchemaError};
use crate::language;
use crate::model::{Host, Network, Nic, Pool, PoolKind, Vlan, Vm, VmState, Volume};
use crate::spans::{FieldSpan, ResourceSpans, Site};
use crate::units::format_size;

/// Smallest guest memory a VM may have.
pub const MIN_VM_MEMORY: u64 = 16 << 20;
/// Guest memory granularity.
pub const PAGE: u64 = 4 << 10;
/// The largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = crate::derive::MAX_VNI;

/// A decoded resource of any kind.
pub enum Resource {
    Host(Host),
    Network(Network),
    Vlan(Vlan),
    Pool(Pool),
    Volume(Volume),
    Vm(Vm),
}

/// Builds the resource `r` reads (its kind decides which), relative paths resolved
/// against `base`; and its spans.
pub fn build(mut r: NodeReader<'_, '_>, base: &Path) -> (Resource, ResourceSpans) {
    let resource = match r.kind.name {
        "host" => Resource::Host(host(&mut r, base)),
        "network" => Resource::Network(network(&mut r)),
        "vlan" => Resource::Vlan(vlan(&mut r)),
        "pool" => Resource::Pool(pool(&mut r, base)),
        "volume" => Resource::Volume(volume(&mut r, base)),
        _ => Resource::Vm(vm(&mut r, base)),
    };
    let spans = ResourceSpans {
        file: r.file,
        node: r.node.span(),
        name: r.name.map_or(r.node.name().span(), |(_, s)| s),
        fields: r.spans,
        origin: None,
    };
    (resource, spans)
}

fn name_of(r: &mut NodeReader<'_, '_>) -> String {
    match r.name {
        Some((name, span)) => {
            // A name with `{n}` left is one without `count`, reported as such.
            if !super::values::valid_name(name) && !name.contains(super::expand::PLACEHOLDER) {
                let error = SchemaError::InvalidName {
                    kind: r.kind.name,
                    name: name.to_owned(),
                    span,
                };
                let at = Site { file: r.file, span };
                r.report(at, error);
            }
            name.to_owned()
        }
        None => String::new(),
    }
}

fn invalid(
    r: &mut NodeReader<'_, '_>,
    field: &'static str,
    found: &str,
    at: Site,
    reason: String,
    help: &'static str,
) {
    let error = SchemaError::InvalidValue {
        field,
        found: found.to_owned(),
        span: at.span,
        reason,
        help,
    };
    r.report(at, error);
}

/// A checked text setting: `check` returns why the value is invalid.
fn checked_text(
    r: &mut NodeReader<'_, '_>,
    field: &'static str,
    check: fn(&str) -> Option<String>,
    help: &'static str,
) -> Option<String> {
    let (text, at) = r.text(field)?;
    if let Some(reason) = check(text) {
        invalid(r, field, text, at, reason, help);
    }
    Some(text.to_owned())
}

fn at_least_one(
    r: &mut NodeReader<'_, '_>,
    field: &'static str,
    value: Option<(u32, Site)>,
) -> Option<u32> {
    let (n, at) = value?;
    if n == 0 {
        let error = SchemaError::TooSmall {
            field,
            min: "1".to_owned(),
            found: "0".to_owned(),
            span: at.span,
            help: "give at least one CPU",
        };
        r.report(at, error);
    }
    Some(n)
}

fn path(r: &mut NodeReader<'_, '_>, field: &'static str, base: &Path) -> Option<PathBuf> {
    let (text, at) = r.text(field)?;
    if text.is_empty() {
        invalid(
            r,
            field,
            text,
            at,
            "empty path".to_owned(),
            "give a file or folder path",
        );
    }
    Some(resolve(base, text))
}

fn host(r: &mut NodeReader<'_, '_>, base: &Path) -> Host {
    let name = name_of(r);
    let ssh = checked_text(r, "ssh", ssh_error, "write `user@host` or `user@host:port`");
    let sudo = r.boolean("sudo").is_some_and(|(b, _)| b);
    let state_dir = path(r, "state-dir", base).unwrap_or_else(|| PathBuf::from("/var/lib/vmctl"));
    let netns = checked_text(
        r,
        "netns",
        netns_error,
        "a network namespace name such as `vmctl-lab`",
    );
    let cpus_value = r.integer::<u32>("cpus");
    let cpus = at_least_one(r, "cpus", cpus_value);
    let memory = r.size("memory").map(|(bytes, at)| {
        if bytes == 0 {
            let error = SchemaError::TooSmall {
                field: "memory",
                min: "1B".to_owned(),
                found: "0".to_owned(),
                span: at.span,
                help: "leave `memory` out to use what the host reports",
            };
            r.report(at, error);
        }
        bytes
    });
    let reserve_memory = r.percent("reserve-memory").map_or(0.08, |(f, _)| f);
    let cpu_overcommit = match r.number("cpu-overcommit") {
        Some((f, at)) if !(f.is_finite() && f > 0.0) => {
            invalid(
                r,
                "cpu-overcommit",
                &f.to_string(),
                at,
                "must be a number above 0".to_owned(),
                "vCPUs allowed per host CPU, e.g. 1.5",
            );
            1.5
        }
        Some((f, _)) => f,
        None => 1.5,
    };
    let underlay = match checked_text(
        r,
        "underlay",
        underlay_error,
        "the host's IPv4 or IPv6 address that the other hosts reach it at, e.g. \"192.0.2.11\"",
    ) {
        Some(text) => text.parse().ok(),
        None => ssh.as_deref().and_then(ssh_address),
    };
    let cpuid_mask = cpuid_mask(r);
    let migration_downtime = migration_downtime(r);
    Host {
        name,
        state_dir,
        netns,
        cpus,
        memory,
        reserve_memory,
        cpu_overcommit,
        ssh,
        sudo,
        underlay,
        cpuid_mask,
        migration_downtime,
    }
}

/// A host's `cpuid-mask`: known feature names, each once, as the tables spell them.
fn cpuid_mask(r: &mut NodeReader<'_, '_>) -> Vec<String> {
    let mut mask: Vec<String> = Vec::new();
    for (name, at) in r.texts("cpuid-mask") {
        if !crate::cpu::is_feature(name) {
            let help = suggest(name, crate::cpu::FEATURES.iter().copied());
            let error = SchemaError::UnknownValue {
                field: "CPU feature",
                found: name.to_owned(),
                span: at.span,
                help,
            };
            r.report(at, error);
            continue;
        }
        let name = crate::cpu::normalize(name);
        if !mask.contains(&name) {
            mask.push(name);
        }
    }
    mask
}

/// `migration-downtime "50ms"`: from 1 ms to 60 s.
fn migration_downtime(r: &mut NodeReader<'_, '_>) -> Option<u64> {
    let (text, at) = r.text("migration-downtime")?;
    match crate::units::parse_millis(text) {
        Some(ms) if (1..=60_000).contains(&ms) => Some(ms),
        parsed => {
            let reason = match parsed {
                Some(_) => "must be from 1ms to 60s".to_owned(),
                None => "not a duration in whole milliseconds".to_owned(),
            };
            invalid(
                r,
                "migration-downtime",
                text,
                at,
                reason,
                "the longest pause a live migration may cause, such as \"50ms\" or \"1s\"",
            );
            None
        }
    }
}

fn network(r: &mut NodeReader<'_, '_>) -> Network {
    let name = name_of(r);
    let host = r.text("host");
    let hosts = r.texts("hosts");
    placement(r, &name, host, &hosts);
    let host = host.map(|(h, _)| h.to_owned()).unwrap_or_default();
    let hosts = hosts.into_iter().map(|(h, _)| h.to_owned()).collect();
    let bridge = r.string("bridge").unwrap_or_default();
    let uplink = r.string("uplink");
    Network {
        name,
        host,
        hosts,
        bridge,
        uplink,
    }
}

/// Reports a network with neither `host` nor `hosts`, with both, or with a host listed
/// twice in `hosts`.
fn placement(
    r: &mut NodeReader<'_, '_>,
    network: &str,
    host: Option<(&str, Site)>,
    hosts: &[(&str, Site)],
) {
    match (host, hosts.first()) {
        (None, None) => {
            let at = Site {
                file: r.file,
                span: r.name.map_or(r.node.name().span(), |(_, s)| s),
            };
            r.report(at, SchemaError::MissingValue {
                node: "network",
                what: "`host` or `hosts`".to_owned(),
                span: at.span,
                help: "add `host=\"…\"` for a network on one host, or `hosts \"a\" \"b\"` for one that spans hosts".to_owned(),
            })
        }
        (Some((_, other)), Some(&(_, at))) => r.report(
            at,
            SchemaError::ConflictingSettings {
                node: "network",
                first: "host",
                second: "hosts",
                span: at.span,
                other: other.span,
                help:
                    "a network is on one host (`host`) or spans several (`hosts`); keep one of them"
                        .to_owned(),
            },
        ),
        _ => {}
    }
    for (i, &(name, at)) in hosts.iter().enumerate() {
        if let Some(&(_, first)) = hosts[..i].iter().find(|(h, _)| *h == name) {
            r.report(
                at,
                SchemaError::DuplicateHost {
                    host: name.to_owned(),
                    network: network.to_owned(),
                    span: at.span,
                    first: first.span,
                },
            );
        }
    }
}

fn vlan(r: &mut NodeReader<'_, '_>) -> Vlan {
    let name = name_of(r);
    let network = r.string("network").unwrap_or_default();
    let id = match r.values("id").first().copied() {
        Some((value, at)) => match value.as_integer() {
            Some(id @ 1..=4094) => id as u16,
            Some(id) => {
                r.report(at, SchemaError::VlanIdRange { id, span: at.span });
                0
            }
            None => {
                let error = SchemaError::wrong_type(
                    "id",
                    "an integer",
                    super::reader::type_of(value),
                    at.span,
                );
                r.report(at, error);
                0
            }
        },
        None => 0,
    };
    let vni = r.integer::<u32>("vni").and_then(|(vni, at)| match vni {
        0 => {
            let error = SchemaError::TooSmall {
                field: "vni",
                min: "1".to_owned(),
                found: "0".to_owned(),
                span: at.span,
                help: "VNIs are 1 to 16777215; leave `vni` out to derive one",
            };
            r.report(at, error);
            None
        }
        _ if vni > MAX_VNI => {
            let error = SchemaError::NumberTooLarge {
                field: "vni",
                found: vni.to_string(),
                max: MAX_VNI.to_string(),
                span: at.span,
            };
            r.report(at, error);
            None
        }
        _ => Some(vni),
    });
    let gateway = checked_text(
        r,
        "gateway",
        gateway_error,
        "write an address with its prefix length, e.g. 10.100.0.1/24",
    );
    let subnet = checked_text(
        r,
        "subnet",
        subnet_error,
        "write the subnet's first address with its prefix length, e.g. 10.100.0.0/24",
    );
    let gateway_host = r.string("gateway-host");
    let dhcp = r.boolean("dhcp").is_some_and(|(b, _)| b);
    let nat = r.boolean("nat").is_some_and(|(b, _)| b);
    let nat_via = r.string("nat-via");
    let route_to = r
        .texts("route-to")
        .into_iter()
        .map(|(v, _)| v.to_owned())
        .collect();
    Vlan {
        name,
        network,
        id,
        vni,
        gateway,
        subnet,
        gateway_host,
        dhcp,
        nat,
        nat_via,
        route_to,
    }
}

fn pool(r: &mut NodeReader<'_, '_>, base: &Path) -> Pool {
    let name = name_of(r);
    let host = r.string("host").unwrap_or_default();
    if let Some((kind, at)) = r.text("type") {
        if kind != "dir" {
            let error = SchemaError::UnknownValue {
                field: "pool type",
                found: kind.to_owned(),
                span: at.span,
                help: suggest(kind, ["dir"]),
            };
            r.report(at, error);
        }
    }
    let path = path(r, "path", base).unwrap_or_default();
    Pool {
        name,
        host,
        kind: PoolKind::Dir,
        path,
    }
}

fn volume(r: &mut NodeReader<'_, '_>, base: &Path) -> Volume {
    let name = name_of(r);
    let pool = r.string("pool").unwrap_or_default();
    let size = match r.size("size") {
        Some((0, at)) => {
            let error = SchemaError::TooSmall {
                field: "size",
                min: "1B".to_owned(),
                found: "0".to_owned(),
                span: at.span,
                help: "a volume needs a size above zero, e.g. \"4GiB\"",
            };
            r.report(at, error);
            0
        }
        Some((bytes, _)) => bytes,
        None => 0,
    };
    let from = path(r, "from", base);
    let prevent_destroy = r.boolean("prevent-destroy").is_some_and(|(b, _)| b);
    Volume {
        name,
        pool,
        size,
        from,
        prevent_destroy,
    }
}

fn nic(node: &KdlNode, file: usize, index: u32, r: &mut NodeReader<'_, '_>) -> Nic {
    let mut n = NodeReader::new(&language::NIC, node, file, r.errors);
    let vlan = n.string("vlan").unwrap_or_default();
    let mac = n.string("mac").unwrap_or_default();
    let ip = checked_text(
        &mut n,
        "ip",
        address_error,
        "write the NIC's address without a prefix, e.g. ip=\"10.100.0.20\"",
    )
    .and_then(|text| text.parse().ok());
    let spans = std::mem::take(&mut n.spans);
    r.spans.push(FieldSpan {
        name: "nic",
        index,
        file,
        span: node.span(),
    });
    for s in spans {
        let name = match s.name {
            "vlan" => "nic.vlan",
            "ip" => "nic.ip",
            _ => "nic.mac",
        };
        r.spans.push(FieldSpan { name, index, ..s });
    }
    Nic {
        vlan,
        mac,
        ip,
        ip_allocated: false,
    }
}

fn vm_memory(r: &mut NodeReader<'_, '_>) -> u64 {
    let Some((bytes, at)) = r.size("memory") else {
        return 0;
    };
    if bytes < MIN_VM_MEMORY {
        let error = SchemaError::TooSmall {
            field: "memory",
            min: "16MiB".to_owned(),
            found: format_size(bytes),
            span: at.span,
            help: "a VM needs at least 16MiB of memory",
        };
        r.report(at, error);
        return 0;
    }
    if bytes % PAGE != 0 {
        let error = SchemaError::MemoryAlignment {
            found: format_size(bytes),
            suggestion: format_size(bytes.div_ceil(PAGE) * PAGE),
            span: at.span,
        };
        r.report(at, error);
        return 0;
    }
    bytes
}

fn vm(r: &mut NodeReader<'_, '_>, base: &Path) -> Vm {
    let name = name_of(r);
    let host = r.string("host").unwrap_or_default();
    let cpus_value = r.integer::<u32>("cpus");
    let cpus = at_least_one(r, "cpus", cpus_value).unwrap_or(0);
    let memory = vm_memory(r);
    let kernel = path(r, "kernel", base).unwrap_or_default();
    let initrd = path(r, "initrd", base);
    let cmdline = r.string("cmdline").unwrap_or_default();
    let ip_cmdline = r.boolean("ip-cmdline").is_some_and(|(b, _)| b);
    let disks = r
        .texts("disk")
        .into_iter()
        .map(|(s, _)| s.to_owned())
        .collect();
    let nodes = r.nodes("nic");
    let nics = nodes
        .into_iter()
        .enumerate()
        .map(|(i, (n, file))| nic(n, file, u32::try_from(i).unwrap_or(u32::MAX), r))
        .collect();
    let cpuset = checked_text(
        r,
        "cpuset",
        cpuset_error,
        "a cgroup cpuset list such as \"2-3\" or \"0,4-5\"",
    );
    let state = match r.text("state") {
        Some(("running", _)) | None => VmState::Running,
        Some(("stopped", _)) => VmState::Stopped,
        Some((other, at)) => {
            let error = SchemaError::UnknownValue {
                field: "VM state",
                found: other.to_owned(),
                span: at.span,
                help: suggest(other, ["running", "stopped"]),
            };
            r.report(at, error);
            VmState::Running
        }
    };
    let depends_on = r
        .texts("depends-on")
        .into_iter()
        .map(|(s, _)| s.to_owned())
        .collect();
    let migrate = r.boolean("migrate").is_none_or(|(b, _)| b);
    let migration_downtime = migration_downtime(r);
    Vm {
        name,
        host,
        cpus,
        memory,
        kernel,
        initrd,
        cmdline,
        disks,
        nics,
        cpuset,
        state,
        depends_on,
        ip_cmdline,
        ip_argument: None,
        migrate,
        migration_downtime,
        cpuid_mask: Vec::new(),
    }
}
