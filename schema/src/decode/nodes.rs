//! One builder per node kind: a read node to a model struct with its spans. Invalid
//! settings are reported and replaced by neutral values, so later checks still run on
//! the rest of the resource.

use std::path::{Path, PathBuf};

use kdl::KdlNode;
use miette::SourceSpan;

use super::reader::NodeReader;
use super::values::{
    cpuset_error, gateway_error, netns_error, resolve, ssh_address, ssh_error, underlay_error,
};
use crate::diagnostics::{suggest, SchemaError};
use crate::language::{self, NodeKind};
use crate::model::{Host, Network, Nic, Pool, PoolKind, Vlan, Vm, VmState, Volume};
use crate::spans::{FieldSpan, ResourceSpans};
use crate::units::format_size;

/// Smallest guest memory a VM may have.
pub const MIN_VM_MEMORY: u64 = 16 << 20;
/// Guest memory granularity.
pub const PAGE: u64 = 4 << 10;
/// The largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = crate::derive::MAX_VNI;

/// What every builder needs: the file, its folder, where errors go.
pub struct Ctx<'e> {
    pub file: usize,
    pub base: PathBuf,
    pub errors: &'e mut Vec<SchemaError>,
}

fn finish(r: NodeReader<'_, '_>, file: usize) -> ResourceSpans {
    ResourceSpans {
        file,
        node: r.node.span(),
        name: r.name.map_or(r.node.name().span(), |(_, s)| s),
        fields: r.spans,
    }
}

fn name_of(r: &mut NodeReader<'_, '_>) -> String {
    match r.name {
        Some((name, span)) => {
            if !super::values::valid_name(name) {
                r.errors.push(SchemaError::InvalidName {
                    kind: r.kind.name,
                    name: name.to_owned(),
                    span,
                });
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
    span: SourceSpan,
    reason: String,
    help: &'static str,
) {
    r.errors.push(SchemaError::InvalidValue {
        field,
        found: found.to_owned(),
        span,
        reason,
        help,
    });
}

/// A checked text setting: `check` returns why the value is invalid.
fn checked_text(
    r: &mut NodeReader<'_, '_>,
    field: &'static str,
    check: fn(&str) -> Option<String>,
    help: &'static str,
) -> Option<String> {
    let (text, span) = r.text(field)?;
    if let Some(reason) = check(text) {
        invalid(r, field, text, span, reason, help);
    }
    Some(text.to_owned())
}

fn at_least_one(
    r: &mut NodeReader<'_, '_>,
    field: &'static str,
    value: Option<(u32, SourceSpan)>,
) -> Option<u32> {
    let (n, span) = value?;
    if n == 0 {
        r.errors.push(SchemaError::TooSmall {
            field,
            min: "1".to_owned(),
            found: "0".to_owned(),
            span,
            help: "give at least one CPU",
        });
    }
    Some(n)
}

fn path(r: &mut NodeReader<'_, '_>, field: &'static str, base: &Path) -> Option<PathBuf> {
    let (text, span) = r.text(field)?;
    if text.is_empty() {
        invalid(
            r,
            field,
            text,
            span,
            "empty path".to_owned(),
            "give a file or folder path",
        );
    }
    Some(resolve(base, text))
}

fn read<'a, 'e>(
    kind: &'static NodeKind,
    node: &'a KdlNode,
    ctx: &'e mut Ctx<'_>,
) -> NodeReader<'a, 'e> {
    NodeReader::new(kind, node, ctx.errors)
}

pub fn host(node: &KdlNode, ctx: &mut Ctx<'_>) -> (Host, ResourceSpans) {
    let base = ctx.base.clone();
    let file = ctx.file;
    let mut r = read(&language::HOST, node, ctx);
    let name = name_of(&mut r);
    let ssh = checked_text(
        &mut r,
        "ssh",
        ssh_error,
        "write `user@host` or `user@host:port`",
    );
    let sudo = r.boolean("sudo").is_some_and(|(b, _)| b);
    let state_dir =
        path(&mut r, "state-dir", &base).unwrap_or_else(|| PathBuf::from("/var/lib/vmctl"));
    let netns = checked_text(
        &mut r,
        "netns",
        netns_error,
        "a network namespace name such as `vmctl-lab`",
    );
    let cpus_value = r.integer::<u32>("cpus");
    let cpus = at_least_one(&mut r, "cpus", cpus_value);
    let memory = r.size("memory").map(|(bytes, span)| {
        if bytes == 0 {
            r.errors.push(SchemaError::TooSmall {
                field: "memory",
                min: "1B".to_owned(),
                found: "0".to_owned(),
                span,
                help: "leave `memory` out to use what the host reports",
            });
        }
        bytes
    });
    let reserve_memory = r.percent("reserve-memory").map_or(0.08, |(f, _)| f);
    let cpu_overcommit = match r.number("cpu-overcommit") {
        Some((f, span)) if !(f.is_finite() && f > 0.0) => {
            invalid(
                &mut r,
                "cpu-overcommit",
                &f.to_string(),
                span,
                "must be a number above 0".to_owned(),
                "vCPUs allowed per host CPU, e.g. 1.5",
            );
            1.5
        }
        Some((f, _)) => f,
        None => 1.5,
    };
    let underlay = match checked_text(
        &mut r,
        "underlay",
        underlay_error,
        "the host's IPv4 or IPv6 address that the other hosts reach it at, e.g. \"192.0.2.11\"",
    ) {
        Some(text) => text.parse().ok(),
        None => ssh.as_deref().and_then(ssh_address),
    };
    let host = Host {
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
    };
    (host, finish(r, file))
}

pub fn network(node: &KdlNode, ctx: &mut Ctx<'_>) -> (Network, ResourceSpans) {
    let file = ctx.file;
    let mut r = read(&language::NETWORK, node, ctx);
    let name = name_of(&mut r);
    let host = r.text("host");
    let hosts = r.texts("hosts");
    placement(&mut r, &name, host, &hosts);
    let host = host.map(|(h, _)| h.to_owned()).unwrap_or_default();
    let hosts = hosts.into_iter().map(|(h, _)| h.to_owned()).collect();
    let bridge = r.string("bridge").unwrap_or_default();
    let uplink = r.string("uplink");
    let network = Network {
        name,
        host,
        hosts,
        bridge,
        uplink,
    };
    (network, finish(r, file))
}

/// Reports a network with neither `host` nor `hosts`, with both, or with a host listed
/// twice in `hosts`.
fn placement(
    r: &mut NodeReader<'_, '_>,
    network: &str,
    host: Option<(&str, SourceSpan)>,
    hosts: &[(&str, SourceSpan)],
) {
    match (host, hosts.first()) {
        (None, None) => r.errors.push(SchemaError::MissingValue {
            node: "network",
            what: "`host` or `hosts`".to_owned(),
            span: r.name.map_or(r.node.name().span(), |(_, s)| s),
            help: "add `host=\"…\"` for a network on one host, or `hosts \"a\" \"b\"` for one that spans hosts".to_owned(),
        }),
        (Some((_, other)), Some(&(_, span))) => r.errors.push(SchemaError::ConflictingSettings {
            node: "network",
            first: "host",
            second: "hosts",
            span,
            other,
            help: "a network is on one host (`host`) or spans several (`hosts`); keep one of them".to_owned(),
        }),
        _ => {}
    }
    for (i, &(name, span)) in hosts.iter().enumerate() {
        if let Some(&(_, first)) = hosts[..i].iter().find(|(h, _)| *h == name) {
            r.errors.push(SchemaError::DuplicateHost {
                host: name.to_owned(),
                network: network.to_owned(),
                span,
                first,
            });
        }
    }
}

pub fn vlan(node: &KdlNode, ctx: &mut Ctx<'_>) -> (Vlan, ResourceSpans) {
    let file = ctx.file;
    let mut r = read(&language::VLAN, node, ctx);
    let name = name_of(&mut r);
    let network = r.string("network").unwrap_or_default();
    let id = match r.values("id").first().copied() {
        Some((value, span)) => match value.as_integer() {
            Some(id @ 1..=4094) => id as u16,
            Some(id) => {
                r.errors.push(SchemaError::VlanIdRange { id, span });
                0
            }
            None => {
                r.errors.push(SchemaError::wrong_type(
                    "id",
                    "an integer",
                    super::reader::type_of(value),
                    span,
                ));
                0
            }
        },
        None => 0,
    };
    let vni = r.integer::<u32>("vni").and_then(|(vni, span)| match vni {
        0 => {
            r.errors.push(SchemaError::TooSmall {
                field: "vni",
                min: "1".to_owned(),
                found: "0".to_owned(),
                span,
                help: "VNIs are 1 to 16777215; leave `vni` out to derive one",
            });
            None
        }
        _ if vni > MAX_VNI => {
            r.errors.push(SchemaError::NumberTooLarge {
                field: "vni",
                found: vni.to_string(),
                max: MAX_VNI.to_string(),
                span,
            });
            None
        }
        _ => Some(vni),
    });
    let gateway = checked_text(
        &mut r,
        "gateway",
        gateway_error,
        "write an address with its prefix length, e.g. 10.100.0.1/24",
    );
    let gateway_host = r.string("gateway-host");
    let vlan = Vlan {
        name,
        network,
        id,
        vni,
        gateway,
        gateway_host,
    };
    (vlan, finish(r, file))
}

pub fn pool(node: &KdlNode, ctx: &mut Ctx<'_>) -> (Pool, ResourceSpans) {
    let base = ctx.base.clone();
    let file = ctx.file;
    let mut r = read(&language::POOL, node, ctx);
    let name = name_of(&mut r);
    let host = r.string("host").unwrap_or_default();
    if let Some((kind, span)) = r.text("type") {
        if kind != "dir" {
            r.errors.push(SchemaError::UnknownValue {
                field: "pool type",
                found: kind.to_owned(),
                span,
                help: suggest(kind, ["dir"]),
            });
        }
    }
    let path = path(&mut r, "path", &base).unwrap_or_default();
    let pool = Pool {
        name,
        host,
        kind: PoolKind::Dir,
        path,
    };
    (pool, finish(r, file))
}

pub fn volume(node: &KdlNode, ctx: &mut Ctx<'_>) -> (Volume, ResourceSpans) {
    let base = ctx.base.clone();
    let file = ctx.file;
    let mut r = read(&language::VOLUME, node, ctx);
    let name = name_of(&mut r);
    let pool = r.string("pool").unwrap_or_default();
    let size = match r.size("size") {
        Some((0, span)) => {
            r.errors.push(SchemaError::TooSmall {
                field: "size",
                min: "1B".to_owned(),
                found: "0".to_owned(),
                span,
                help: "a volume needs a size above zero, e.g. \"4GiB\"",
            });
            0
        }
        Some((bytes, _)) => bytes,
        None => 0,
    };
    let from = path(&mut r, "from", &base);
    let prevent_destroy = r.boolean("prevent-destroy").is_some_and(|(b, _)| b);
    let volume = Volume {
        name,
        pool,
        size,
        from,
        prevent_destroy,
    };
    (volume, finish(r, file))
}

fn nic(node: &KdlNode, index: u32, r: &mut NodeReader<'_, '_>) -> Nic {
    let mut n = NodeReader::new(&language::NIC, node, r.errors);
    let vlan = n.string("vlan").unwrap_or_default();
    let mac = n.string("mac").unwrap_or_default();
    let spans = std::mem::take(&mut n.spans);
    r.spans.push(FieldSpan {
        name: "nic",
        index,
        span: node.span(),
    });
    for s in spans {
        let name = match s.name {
            "vlan" => "nic.vlan",
            _ => "nic.mac",
        };
        r.spans.push(FieldSpan { name, index, ..s });
    }
    Nic { vlan, mac }
}

fn vm_memory(r: &mut NodeReader<'_, '_>) -> u64 {
    let Some((bytes, span)) = r.size("memory") else {
        return 0;
    };
    if bytes < MIN_VM_MEMORY {
        r.errors.push(SchemaError::TooSmall {
            field: "memory",
            min: "16MiB".to_owned(),
            found: format_size(bytes),
            span,
            help: "a VM needs at least 16MiB of memory",
        });
        return 0;
    }
    if bytes % PAGE != 0 {
        r.errors.push(SchemaError::MemoryAlignment {
            found: format_size(bytes),
            suggestion: format_size(bytes.div_ceil(PAGE) * PAGE),
            span,
        });
        return 0;
    }
    bytes
}

pub fn vm(node: &KdlNode, ctx: &mut Ctx<'_>) -> (Vm, ResourceSpans) {
    let base = ctx.base.clone();
    let file = ctx.file;
    let mut r = read(&language::VM, node, ctx);
    let name = name_of(&mut r);
    let host = r.string("host").unwrap_or_default();
    let cpus_value = r.integer::<u32>("cpus");
    let cpus = at_least_one(&mut r, "cpus", cpus_value).unwrap_or(0);
    let memory = vm_memory(&mut r);
    let kernel = path(&mut r, "kernel", &base).unwrap_or_default();
    let initrd = path(&mut r, "initrd", &base);
    let cmdline = r.string("cmdline").unwrap_or_default();
    let disks = r
        .texts("disk")
        .into_iter()
        .map(|(s, _)| s.to_owned())
        .collect();
    let nodes = r.nodes("nic");
    let nics = nodes
        .into_iter()
        .enumerate()
        .map(|(i, n)| nic(n, u32::try_from(i).unwrap_or(u32::MAX), &mut r))
        .collect();
    let cpuset = checked_text(
        &mut r,
        "cpuset",
        cpuset_error,
        "a cgroup cpuset list such as \"2-3\" or \"0,4-5\"",
    );
    let state = match r.text("state") {
        Some(("running", _)) | None => VmState::Running,
        Some(("stopped", _)) => VmState::Stopped,
        Some((other, span)) => {
            r.errors.push(SchemaError::UnknownValue {
                field: "VM state",
                found: other.to_owned(),
                span,
                help: suggest(other, ["running", "stopped"]),
            });
            VmState::Running
        }
    };
    let depends_on = r
        .texts("depends-on")
        .into_iter()
        .map(|(s, _)| s.to_owned())
        .collect();
    let vm = Vm {
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
    };
    (vm, finish(r, file))
}
