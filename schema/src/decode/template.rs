//! Templates: `template "NAME" { … }` holds settings and children that `vm` nodes start
//! from (`template="NAME"`). They are not resources and never reach the model.
//!
//! Each file keeps its templates and the vms that use one ([`Deferred`]) as owned
//! nodes; once every file is decoded, [`resolve`] indexes the templates of the whole
//! config, follows each `template=` chain (a dangling name or a cycle is an error),
//! decodes the deferred vms over their chains (in parallel) and warns about templates
//! that no vm uses.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use kdl::KdlNode;
use miette::SourceSpan;
use rayon::prelude::*;

use super::expand::{self, placeholders, Chain, Count, Decl, Out, Written};
use super::reader::{type_of, NodeReader};
use super::values::valid_name;
use crate::diagnostics::{suggest, FileId, SchemaError};
use crate::language::{TEMPLATE, VM};
use crate::notes::Found;
use crate::spans::Site;
use crate::validate::Report;

/// A `template` node of the config.
pub struct Template {
    pub name: String,
    pub name_span: SourceSpan,
    pub file: FileId,
    pub node: KdlNode,
    /// Its own `template=`: the name and where it is given.
    pub parent: Option<(String, Site)>,
    /// Whether any of its strings holds `{n}` (then each instance gets its own copy).
    pub has_placeholder: bool,
}

/// A `vm` with `template=`, decoded once every template is known.
pub struct Deferred {
    pub node: KdlNode,
    pub file: FileId,
    pub base: PathBuf,
    pub index: usize,
    pub count: Option<Count>,
    /// The template it names and where; an empty name when `template=` is not a string.
    pub template: (String, Site),
}

/// The `template=` of a node: its name (empty when not a string, which is reported)
/// and where it is given.
pub fn reference(node: &KdlNode, file: FileId, errors: &mut Vec<Found>) -> Option<(String, Site)> {
    let (value, span) = expand::setting(node, "template")?;
    let at = Site { file, span };
    match value.as_string() {
        Some(name) => Some((name.to_owned(), at)),
        None => {
            let error = SchemaError::wrong_type("template", "a string", type_of(value), span);
            errors.push(Found::new(file, error, None));
            Some((String::new(), at))
        }
    }
}

/// A `template` node as found in a file. Its settings are checked where vms use it (or
/// on its own when none does, see [`resolve`]).
pub fn read(node: &KdlNode, file: FileId, errors: &mut Vec<Found>) -> Template {
    let name = node.entries().iter().find(|e| e.name().is_none());
    let (name, name_span) = match name {
        Some(entry) => (
            entry.value().as_string().unwrap_or_default().to_owned(),
            entry.span(),
        ),
        None => (String::new(), node.name().span()),
    };
    Template {
        name,
        name_span,
        file,
        parent: reference(node, file, errors),
        has_placeholder: !placeholders(node).is_empty(),
        node: node.clone(),
    }
}

/// How far one template's chain was followed.
#[derive(Clone)]
enum Resolved {
    /// The chain, root first, ending with the template itself.
    Chain(Vec<usize>),
    /// A `template=` on the way names no template, or the chain loops: the templates
    /// on the way (used, though broken).
    Broken(Vec<usize>),
}

/// Resolves every template chain, decodes the deferred vms over theirs, and reports
/// what is wrong with the templates themselves.
pub fn resolve(
    templates: &[Template],
    deferred: Vec<Deferred>,
    report: &mut Report<'_>,
) -> Vec<Decl> {
    let index = index(templates, report);
    let chains = chains(templates, &index, report);
    let mut used = vec![false; templates.len()];
    let jobs: Vec<(Deferred, Option<Chain<'_>>)> = deferred
        .into_iter()
        .map(|d| {
            let (name, at) = &d.template;
            let chain = match index.get(name.as_str()) {
                Some(&i) => Some(match &chains[i] {
                    Resolved::Chain(ids) => {
                        for &t in ids {
                            used[t] = true;
                        }
                        Chain {
                            templates: ids.iter().map(|&t| &templates[t]).collect(),
                            complete: true,
                        }
                    }
                    Resolved::Broken(on_the_way) => {
                        for &t in on_the_way {
                            used[t] = true;
                        }
                        Chain {
                            templates: Vec::new(),
                            complete: false,
                        }
                    }
                }),
                None => {
                    if !name.is_empty() {
                        dangling(name, *at, &index, report);
                    }
                    Some(Chain {
                        templates: Vec::new(),
                        complete: false,
                    })
                }
            };
            (d, chain)
        })
        .collect();
    let decoded: Vec<(Vec<Decl>, Vec<Found>)> = jobs
        .par_iter()
        .map(|(d, chain)| {
            let mut decls = Vec::new();
            let mut errors = Vec::new();
            let written = Written {
                kind: &VM,
                node: &d.node,
                file: d.file,
                base: &d.base,
                index: d.index,
            };
            let out = Out {
                decls: &mut decls,
                errors: &mut errors,
            };
            expand::expand(&written, d.count, chain.as_ref(), out);
            (decls, errors)
        })
        .collect();
    let mut decls = Vec::new();
    for (d, errors) in decoded {
        decls.extend(d);
        report.errors.extend(errors);
    }
    for (t, used) in templates.iter().zip(used) {
        if used {
            continue;
        }
        // Nothing else reads an unused template: check its settings on their own.
        let mut errors = Vec::new();
        NodeReader::new(&TEMPLATE, &t.node, t.file, &mut errors);
        for (file, error) in errors {
            report.push(file, error);
        }
        if !t.name.is_empty() {
            let warning = SchemaError::UnusedTemplate {
                name: t.name.clone(),
                span: t.name_span,
            };
            report.push(t.file, warning);
        }
    }
    decls
}

/// The templates by name (the first of a name), reporting doubled and invalid names.
fn index<'t>(templates: &'t [Template], report: &mut Report<'_>) -> HashMap<&'t str, usize> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, t) in templates.iter().enumerate() {
        if t.name.is_empty() {
            continue; // missing or not a string: the reader reports it
        }
        let here = Site {
            file: t.file,
            span: t.name_span,
        };
        if !valid_name(&t.name) {
            let error = SchemaError::InvalidName {
                kind: "template",
                name: t.name.clone(),
                span: t.name_span,
            };
            report.push(t.file, error);
        }
        match index.get(t.name.as_str()) {
            Some(&first) => {
                let there = Site {
                    file: templates[first].file,
                    span: templates[first].name_span,
                };
                let (first, help) = report.first(here, there, "rename one of the two templates");
                let error = SchemaError::DuplicateName {
                    kind: "template",
                    name: t.name.clone(),
                    span: t.name_span,
                    first,
                    help,
                };
                report.push(t.file, error);
            }
            None => {
                index.insert(&t.name, i);
            }
        }
    }
    index
}

fn dangling(name: &str, at: Site, index: &HashMap<&str, usize>, report: &mut Report<'_>) {
    let mut names: Vec<&str> = index.keys().copied().collect();
    names.sort_unstable();
    let error = SchemaError::DanglingReference {
        kind: "template",
        name: name.to_owned(),
        span: at.span,
        help: suggest(name, names),
    };
    report.push(at.file, error);
}

/// Each template's chain, reporting a `template=` that names no template (once, where
/// it is written) and each cycle (once, naming every member).
fn chains(
    templates: &[Template],
    index: &HashMap<&str, usize>,
    report: &mut Report<'_>,
) -> Vec<Resolved> {
    for t in templates {
        if let Some((parent, at)) = &t.parent {
            if !parent.is_empty() && !index.contains_key(parent.as_str()) {
                dangling(parent, *at, index, report);
            }
        }
    }
    let mut cycles: HashSet<Vec<usize>> = HashSet::new();
    (0..templates.len())
        .map(|start| {
            let mut path = vec![start];
            loop {
                let Some(last) = path.last().copied() else {
                    return Resolved::Broken(path);
                };
                let Some((parent, _)) = &templates[last].parent else {
                    path.reverse();
                    return Resolved::Chain(path);
                };
                let Some(&next) = index.get(parent.as_str()) else {
                    return Resolved::Broken(path);
                };
                if let Some(at) = path.iter().position(|&p| p == next) {
                    cycle(templates, &path[at..], &mut cycles, report);
                    return Resolved::Broken(path);
                }
                path.push(next);
            }
        })
        .collect()
}

/// Reports the cycle of `members` (each naming the next, the last the first) unless it
/// was already reported: from its first member in the files, the `template=` that
/// closes it labelled.
fn cycle(
    templates: &[Template],
    members: &[usize],
    seen: &mut HashSet<Vec<usize>>,
    report: &mut Report<'_>,
) {
    let mut set = members.to_vec();
    set.sort_unstable();
    if !seen.insert(set) {
        return;
    }
    let place = |&i: &usize| (templates[i].file, templates[i].name_span.offset());
    let first = (0..members.len())
        .min_by_key(|&k| place(&members[k]))
        .unwrap_or(0);
    let mut order: Vec<usize> = members[first..]
        .iter()
        .chain(&members[..first])
        .copied()
        .collect();
    order.push(order[0]);
    let cycle = order
        .iter()
        .map(|&i| format!("`{}`", templates[i].name))
        .collect::<Vec<_>>()
        .join(" -> ");
    let closing = order[order.len() - 2];
    if let Some((_, at)) = &templates[closing].parent {
        report.push(
            at.file,
            SchemaError::TemplateCycle {
                cycle,
                span: at.span,
            },
        );
    }
}
