//! Parsed KDL to model structs, one file at a time: each top-level node goes to its
//! kind's builder, through expansion (`count`, see `expand.rs`); `template` nodes and
//! the vms that use one wait until every file is decoded (`template.rs`). Unknown nodes
//! are reported with did-you-mean.

mod expand;
mod nodes;
mod reader;
pub mod template;
mod typed;
mod values;

pub use expand::Decl;
pub use nodes::Resource;
pub use values::{base_dir, valid_name};

use std::path::Path;

use kdl::{KdlDocument, KdlValue};
use miette::SourceSpan;

use crate::diagnostics::{suggest, FileId, SchemaError};
use crate::language::{self, TOP_LEVEL};
use crate::notes::Found;
use expand::{Out, Written};
use template::{Deferred, Template};

/// Everything one file declares, with its spans, and what was wrong in it.
#[derive(Default)]
pub struct Decoded {
    pub projects: Vec<(String, SourceSpan)>,
    pub decls: Vec<Decl>,
    pub templates: Vec<Template>,
    /// The vms with `template=`, decoded once every file's templates are known.
    pub deferred: Vec<Deferred>,
    pub errors: Vec<Found>,
    /// Whether the file was read and parsed (its nodes are all here).
    pub parsed: bool,
}

/// Decodes the document of file `file`, found at `path`.
pub fn decode(document: &KdlDocument, file: FileId, path: &Path) -> Decoded {
    let mut out = Decoded::default();
    let base = base_dir(path);
    // Instances made by the counts of this file so far (they are limited).
    let mut made = 0u32;
    for (index, node) in document.nodes().iter().enumerate() {
        let kind = match node.name().value() {
            "project" => {
                project(node, file, &mut out);
                continue;
            }
            "template" => {
                out.templates
                    .push(template::read(node, file, &mut out.errors));
                continue;
            }
            name => match language::top_level(name) {
                Some(kind) => kind,
                None => {
                    let error = SchemaError::UnknownNode {
                        place: "top-level node".to_owned(),
                        name: name.to_owned(),
                        span: node.name().span(),
                        help: suggest(name, TOP_LEVEL.iter().map(|k| k.name)),
                    };
                    out.errors.push(Found::new(file, error, None));
                    continue;
                }
            },
        };
        let count = expand::count_of(node, file, &mut made, &mut out.errors);
        if kind.name == "vm" {
            if let Some(reference) = template::reference(node, file, &mut out.errors) {
                out.deferred.push(Deferred {
                    node: node.clone(),
                    file,
                    base: base.clone(),
                    index,
                    count,
                    template: reference,
                });
                continue;
            }
        }
        let written = Written {
            kind,
            node,
            file,
            base: &base,
            index,
        };
        let sink = Out {
            decls: &mut out.decls,
            errors: &mut out.errors,
        };
        expand::expand(&written, count, None, sink);
    }
    out
}

fn project(node: &kdl::KdlNode, file: FileId, out: &mut Decoded) {
    let mut errors = Vec::new();
    project_name(node, out, &mut errors);
    out.errors
        .extend(errors.into_iter().map(|e| Found::new(file, e, None)));
}

fn project_name(node: &kdl::KdlNode, out: &mut Decoded, errors: &mut Vec<SchemaError>) {
    let mut arguments = node.entries().iter().filter(|e| e.name().is_none());
    for entry in node.entries().iter().filter(|e| e.name().is_some()) {
        errors.push(SchemaError::UnexpectedArgument {
            field: "project".to_owned(),
            span: entry.span(),
            help: "`project` takes only its name".to_owned(),
        });
    }
    if let Some(children) = node.children() {
        errors.push(SchemaError::UnexpectedArgument {
            field: "project".to_owned(),
            span: children.span(),
            help: "`project` takes only its name".to_owned(),
        });
    }
    match arguments.next() {
        Some(entry) => match entry.value() {
            KdlValue::String(name) => {
                if !valid_name(name) {
                    errors.push(SchemaError::InvalidName {
                        kind: "project",
                        name: name.clone(),
                        span: entry.span(),
                    });
                }
                out.projects.push((name.clone(), entry.span()));
            }
            other => errors.push(SchemaError::wrong_type(
                "project",
                "a string",
                reader::type_of(other),
                entry.span(),
            )),
        },
        None => errors.push(SchemaError::MissingValue {
            node: "project",
            what: "a name".to_owned(),
            span: node.span(),
            help: "write `project \"<name>\"`".to_owned(),
        }),
    }
    for extra in arguments {
        errors.push(SchemaError::UnexpectedArgument {
            field: "project".to_owned(),
            span: extra.span(),
            help: "`project` takes one name".to_owned(),
        });
    }
}
