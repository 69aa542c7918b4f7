//! Parsed KDL to model structs, one file at a time: each top-level node goes to its
//! kind's builder; unknown nodes are reported with did-you-mean.

mod nodes;
mod reader;
mod values;

pub use values::{base_dir, valid_name};

use std::path::Path;

use kdl::{KdlDocument, KdlValue};
use miette::SourceSpan;

use crate::diagnostics::{suggest, FileId, SchemaError};
use crate::language::TOP_LEVEL;
use crate::model::{Host, Network, Pool, Vlan, Vm, Volume};
use crate::spans::ResourceSpans;
use nodes::Ctx;

/// Everything one file declares, with its spans, and what was wrong in it.
#[derive(Debug, Default)]
pub struct Decoded {
    pub projects: Vec<(String, SourceSpan)>,
    pub hosts: Vec<(Host, ResourceSpans)>,
    pub networks: Vec<(Network, ResourceSpans)>,
    pub vlans: Vec<(Vlan, ResourceSpans)>,
    pub pools: Vec<(Pool, ResourceSpans)>,
    pub volumes: Vec<(Volume, ResourceSpans)>,
    pub vms: Vec<(Vm, ResourceSpans)>,
    pub errors: Vec<SchemaError>,
    /// Whether the file was read and parsed (its nodes are all here).
    pub parsed: bool,
}

/// Decodes the document of file `file`, found at `path`.
pub fn decode(document: &KdlDocument, file: FileId, path: &Path) -> Decoded {
    let mut out = Decoded::default();
    let mut errors = Vec::new();
    let mut ctx = Ctx {
        file,
        base: base_dir(path),
        errors: &mut errors,
    };
    for node in document.nodes() {
        match node.name().value() {
            "project" => project(node, &mut out, &mut ctx),
            "host" => out.hosts.push(nodes::host(node, &mut ctx)),
            "network" => out.networks.push(nodes::network(node, &mut ctx)),
            "vlan" => out.vlans.push(nodes::vlan(node, &mut ctx)),
            "pool" => out.pools.push(nodes::pool(node, &mut ctx)),
            "volume" => out.volumes.push(nodes::volume(node, &mut ctx)),
            "vm" => out.vms.push(nodes::vm(node, &mut ctx)),
            other => ctx.errors.push(SchemaError::UnknownNode {
                place: "top-level node".to_owned(),
                name: other.to_owned(),
                span: node.name().span(),
                help: suggest(other, TOP_LEVEL.iter().map(|k| k.name)),
            }),
        }
    }
    out.errors = errors;
    out
}

fn project(node: &kdl::KdlNode, out: &mut Decoded, ctx: &mut Ctx<'_>) {
    let mut arguments = node.entries().iter().filter(|e| e.name().is_none());
    for entry in node.entries().iter().filter(|e| e.name().is_some()) {
        ctx.errors.push(SchemaError::UnexpectedArgument {
            field: "project".to_owned(),
            span: entry.span(),
            help: "`project` takes only its name".to_owned(),
        });
    }
    if let Some(children) = node.children() {
        ctx.errors.push(SchemaError::UnexpectedArgument {
            field: "project".to_owned(),
            span: children.span(),
            help: "`project` takes only its name".to_owned(),
        });
    }
    match arguments.next() {
        Some(entry) => match entry.value() {
            KdlValue::String(name) => {
                if !valid_name(name) {
                    ctx.errors.push(SchemaError::InvalidName {
                        kind: "project",
                        name: name.clone(),
                        span: entry.span(),
                    });
                }
                out.projects.push((name.clone(), entry.span()));
            }
            other => ctx.errors.push(SchemaError::wrong_type(
                "project",
                "a string",
                reader::type_of(other),
                entry.span(),
            )),
        },
        None => ctx.errors.push(SchemaError::MissingValue {
            node: "project",
            what: "a name".to_owned(),
            span: node.span(),
            help: "write `project \"<name>\"`".to_owned(),
        }),
    }
    for extra in arguments {
        ctx.errors.push(SchemaError::UnexpectedArgument {
            field: "project".to_owned(),
            span: extra.span(),
            help: "`project` takes one name".to_owned(),
        });
    }
}
