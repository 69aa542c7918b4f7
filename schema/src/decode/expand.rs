//! Expansion: one written resource node to the resources it declares. `count=N` makes
//! N instances, `{n}` replaced by 1…N in the name and every string of the node and of
//! its templates; a `vm` with `template=` is read over its templates. Each instance is
//! decoded on its own, its spans pointing at the node (or template) as written and its
//! errors naming the instance (see `notes.rs`).

use std::path::Path;
use std::sync::Arc;

use kdl::{KdlNode, KdlValue};
use miette::SourceSpan;

use super::nodes::{self, Resource};
use super::reader::{type_of, Layer, NodeReader};
use super::template::Template;
use crate::diagnostics::{FileId, SchemaError};
use crate::language::{NodeKind, ValueKind, TEMPLATE};
use crate::notes::{Context, Found};
use crate::spans::{Counted, Origin, ResourceSpans, Site, TemplateSite};

/// What `{n}` reads in names and strings.
pub const PLACEHOLDER: &str = "{n}";
/// The largest `count` of one node.
pub const MAX_COUNT: u32 = 10_000;
/// The most instances the counts of one file may make.
pub const MAX_INSTANCES_PER_FILE: u32 = 100_000;

/// Where a resource stands among the config's nodes — file, node, instance — so the
/// resources keep the order they are written in, templates or not.
pub type Key = (FileId, usize, u32);

/// One declared resource, with its spans and its place.
pub struct Decl {
    pub key: Key,
    pub resource: Resource,
    pub spans: ResourceSpans,
}

/// A node as written.
pub struct Written<'a> {
    pub kind: &'static NodeKind,
    pub node: &'a KdlNode,
    pub file: FileId,
    /// The folder relative paths resolve against.
    pub base: &'a Path,
    /// The node's index in its file.
    pub index: usize,
}

/// A node's `count`, checked: how many instances to make.
#[derive(Debug, Clone, Copy)]
pub struct Count {
    pub n: u32,
    pub at: Site,
}

/// The templates a vm starts from, root first; `complete` when every `template=` on the
/// way was found (else required settings are not asked for: they may be in the missing
/// template).
pub struct Chain<'t> {
    pub templates: Vec<&'t Template>,
    pub complete: bool,
}

/// The first value of setting `name` of `node`, given as a property or a child node.
pub fn setting<'a>(node: &'a KdlNode, name: &str) -> Option<(&'a KdlValue, SourceSpan)> {
    let property = node
        .entries()
        .iter()
        .find(|e| e.name().is_some_and(|k| k.value() == name))
        .map(|e| (e.value(), e.span()));
    let child = || {
        let child = node
            .children()?
            .nodes()
            .iter()
            .find(|c| c.name().value() == name)?;
        let entry = child.entries().iter().find(|e| e.name().is_none())?;
        Some((entry.value(), entry.span()))
    };
    property.or_else(child)
}

/// The node's `count`, checked and counted against the file's limit (`made` so far).
/// A wrong count is reported and reads as 1, so the node is still checked.
pub fn count_of(
    node: &KdlNode,
    file: FileId,
    made: &mut u32,
    errors: &mut Vec<Found>,
) -> Option<Count> {
    let (value, span) = setting(node, "count")?;
    let at = Site { file, span };
    let mut fail = |error| {
        errors.push(Found::new(file, error, None));
        Some(Count { n: 1, at })
    };
    let n = match value.as_integer() {
        None => {
            return fail(SchemaError::wrong_type(
                "count",
                "an integer",
                type_of(value),
                span,
            ));
        }
        Some(n) if n < 0 => {
            return fail(SchemaError::TooSmall {
                field: "count",
                min: "0".to_owned(),
                found: n.to_string(),
                span,
                help: "`count` is how many to make: 0 or more",
            });
        }
        Some(n) => match u32::try_from(n) {
            Ok(n) if n <= MAX_COUNT => n,
            _ => {
                return fail(SchemaError::NumberTooLarge {
                    field: "count",
                    found: n.to_string(),
                    max: MAX_COUNT.to_string(),
                    span,
                });
            }
        },
    };
    match made.checked_add(n).filter(|m| *m <= MAX_INSTANCES_PER_FILE) {
        Some(total) => *made = total,
        None => {
            return fail(SchemaError::TooManyInstances {
                limit: MAX_INSTANCES_PER_FILE,
                span,
            })
        }
    }
    Some(Count { n, at })
}

/// The strings of `node` (and its children) that hold `{n}`: the setting each is in
/// (`""` for the node's own arguments) and its span.
pub fn placeholders(node: &KdlNode) -> Vec<(&str, SourceSpan)> {
    let mut out = Vec::new();
    for entry in node.entries() {
        if holds_placeholder(entry.value()) {
            out.push((entry.name().map_or("", |k| k.value()), entry.span()));
        }
    }
    for child in node.children().into_iter().flat_map(|c| c.nodes()) {
        let mut spans = Vec::new();
        collect_placeholders(child, &mut spans);
        out.extend(spans.into_iter().map(|s| (child.name().value(), s)));
    }
    out
}

fn holds_placeholder(value: &KdlValue) -> bool {
    matches!(value, KdlValue::String(s) if s.contains(PLACEHOLDER))
}

fn collect_placeholders(node: &KdlNode, out: &mut Vec<SourceSpan>) {
    for entry in node.entries() {
        if holds_placeholder(entry.value()) {
            out.push(entry.span());
        }
    }
    for child in node.children().into_iter().flat_map(|c| c.nodes()) {
        collect_placeholders(child, out);
    }
}

/// Whether `node` gives setting `name` (as a property or a child).
fn gives(node: &KdlNode, name: &str) -> bool {
    node.entries()
        .iter()
        .any(|e| e.name().is_some_and(|k| k.value() == name))
        || node
            .children()
            .is_some_and(|c| c.nodes().iter().any(|n| n.name().value() == name))
}

/// `node` (of `kind`) with `{n}` replaced by `n` in every string. A string with `{n}`
/// given for an integer setting (`id="10{n}"`) that reads as a whole number after the
/// replacement becomes that integer; one that does not stays a string, for the reader
/// to report as the wrong type at its span.
fn substitute(node: &KdlNode, kind: &NodeKind, n: &str) -> KdlNode {
    let mut node = node.clone();
    replace_in(&mut node, Some(kind), n);
    node
}

/// Replaces `{n}` in the entries of `node`; `kind` is what the node is when known (a
/// resource, a template or a child node such as `nic`), to find its integer settings.
fn replace_in(node: &mut KdlNode, kind: Option<&NodeKind>, n: &str) {
    for entry in node.entries_mut() {
        let setting = entry.name().map(|k| k.value().to_owned());
        number_value(entry.value_mut(), kind, setting.as_deref(), n);
    }
    let Some(children) = node.children_mut() else {
        return;
    };
    for child in children.nodes_mut() {
        let name = child.name().value().to_owned();
        match kind.and_then(|k| k.field(&name)).map(|(_, f)| f.kind) {
            // A child node of its own kind (`nic`): its properties are its settings.
            Some(ValueKind::Node(inner)) => replace_in(child, Some(inner), n),
            // A setting given as a child (`id "10{n}"`): its arguments are the value.
            Some(_) => {
                for entry in child
                    .entries_mut()
                    .iter_mut()
                    .filter(|e| e.name().is_none())
                {
                    number_value(entry.value_mut(), kind, Some(&name), n);
                }
                replace_in(child, None, n);
            }
            None => replace_in(child, None, n),
        }
    }
}

/// Replaces `{n}` in one value of `setting` of a node of `kind`.
fn number_value(value: &mut KdlValue, kind: Option<&NodeKind>, setting: Option<&str>, n: &str) {
    let KdlValue::String(s) = value else {
        return;
    };
    if !s.contains(PLACEHOLDER) {
        return;
    }
    let numbered = s.replace(PLACEHOLDER, n);
    let integer = kind
        .zip(setting)
        .and_then(|(k, name)| k.field(name))
        .is_some_and(|(_, f)| f.kind == ValueKind::Integer);
    *value = match numbered.parse::<i128>() {
        Ok(i) if integer && numbered.bytes().all(|b| b.is_ascii_digit()) => KdlValue::Integer(i),
        _ => KdlValue::String(numbered),
    };
}

/// The node's name argument, if it is a string.
fn name_of(node: &KdlNode) -> Option<(&str, SourceSpan)> {
    let entry = node.entries().iter().find(|e| e.name().is_none())?;
    entry.value().as_string().map(|s| (s, entry.span()))
}

/// Where the resources decoded go.
pub struct Out<'o> {
    pub decls: &'o mut Vec<Decl>,
    pub errors: &'o mut Vec<Found>,
}

/// Decodes the resources `written` declares: one, or `count` instances, read over the
/// templates of `chain`.
pub fn expand(
    written: &Written<'_>,
    count: Option<Count>,
    chain: Option<&Chain<'_>>,
    out: Out<'_>,
) {
    let name = name_of(written.node);
    let origin = (count.is_some() || chain.is_some()).then(|| {
        Arc::new(Origin {
            kind: written.kind.name,
            count: count.map(|c| Counted {
                written: name.map_or_else(String::new, |(n, _)| n.to_owned()),
                count: c.n,
                site: Site {
                    file: written.file,
                    span: name.map_or(written.node.name().span(), |(_, s)| s),
                },
            }),
            templates: chain
                .map(|c| c.templates.iter().rev().map(|t| t.site()).collect())
                .unwrap_or_default(),
        })
    });
    let templates: &[&Template] = chain.map_or(&[], |c| &c.templates);
    let required = chain.is_none_or(|c| c.complete);
    let mut one = Instance {
        written,
        origin,
        required,
        out,
    };
    let Some(count) = count else {
        one.placeholders_without_count(name.map_or("", |(n, _)| n), templates);
        let layers: Vec<Layer<'_>> = templates.iter().map(|t| t.layer()).collect();
        one.decode(&layers, written.node, 0);
        return;
    };
    let mut n = count.n;
    if let Some((text, span)) = name.filter(|(text, _)| !text.contains(PLACEHOLDER)) {
        let error = SchemaError::CountWithoutPlaceholder {
            kind: written.kind.name,
            name: text.to_owned(),
            span,
            count: count.at.span,
            help: format!(
                "number the instances in the name, e.g. `{} \"{text}-{{n}}\" count={}`: `{{n}}` is replaced by 1 to {}",
                written.kind.name, count.n, count.n
            ),
        };
        one.out.errors.push(Found::new(written.file, error, None));
        n = n.min(1);
    }
    for i in 1..=n {
        let number = i.to_string();
        let own = substitute(written.node, written.kind, &number);
        let owned: Vec<Option<KdlNode>> = templates
            .iter()
            .map(|t| {
                t.has_placeholder
                    .then(|| substitute(&t.node, &TEMPLATE, &number))
            })
            .collect();
        let layers: Vec<Layer<'_>> = templates
            .iter()
            .zip(&owned)
            .map(|(t, o)| Layer {
                node: o.as_ref().unwrap_or(&t.node),
                ..t.layer()
            })
            .collect();
        one.decode(&layers, &own, i);
    }
}

/// The instances of one written node being decoded.
struct Instance<'w, 'o> {
    written: &'w Written<'w>,
    origin: Option<Arc<Origin>>,
    required: bool,
    out: Out<'o>,
}

impl Instance<'_, '_> {
    /// Decodes one instance: `own` (the node, `{n}` replaced) over `templates`.
    fn decode(&mut self, templates: &[Layer<'_>], own: &KdlNode, n: u32) {
        let w = self.written;
        let own = Layer {
            node: own,
            file: w.file,
            kind: w.kind,
        };
        let mut errors = Vec::new();
        let reader = NodeReader::layered(w.kind, templates, own, self.required, &mut errors);
        let (resource, mut spans) = nodes::build(reader, w.base);
        spans.origin = self.origin.clone();
        let context = self.origin.as_ref().map(|origin| Context {
            instance: resource.name().to_owned(),
            origin: Arc::clone(origin),
        });
        self.out.errors.extend(
            errors
                .into_iter()
                .map(|(file, error)| Found::new(file, error, context.clone())),
        );
        self.out.decls.push(Decl {
            key: (w.file, w.index, n),
            resource,
            spans,
        });
    }

    /// Reports every `{n}` of a node without `count`, and of the templates it uses.
    fn placeholders_without_count(&mut self, name: &str, templates: &[&Template]) {
        let w = self.written;
        let kind = w.kind.name;
        let mut report = |file: FileId, span, help: String, context: Option<Context>| {
            let error = SchemaError::PlaceholderWithoutCount {
                kind,
                name: name.to_owned(),
                span,
                help,
            };
            self.out.errors.push(Found::new(file, error, context));
        };
        for (_, span) in placeholders(w.node) {
            let help = format!("add `count=N` to make N of this {kind}, `{{n}}` numbering them 1 to N; without a count, write the value without `{{n}}`");
            report(w.file, span, help, None);
        }
        for (i, t) in templates.iter().enumerate() {
            if !t.has_placeholder {
                continue;
            }
            let context = self.origin.as_ref().map(|origin| Context {
                instance: name.to_owned(),
                origin: Arc::clone(origin),
            });
            // A setting that the vm or a nearer template gives again is not used.
            let overridden = |setting: &str| {
                !w.kind.field(setting).is_some_and(|(_, f)| f.repeated)
                    && (gives(w.node, setting)
                        || templates[i + 1..].iter().any(|t| gives(&t.node, setting)))
            };
            for (setting, span) in placeholders(&t.node) {
                if setting.is_empty() || overridden(setting) {
                    continue;
                }
                let help = format!("template `{}` numbers instances with `{{n}}`: give vm `{name}` a `count`, or its own `{setting}`", t.name);
                report(t.file, span, help, context.clone());
            }
        }
    }
}

impl Template {
    /// The template as a layer a vm is read over.
    pub fn layer(&self) -> Layer<'_> {
        Layer {
            node: &self.node,
            file: self.file,
            kind: &TEMPLATE,
        }
    }

    pub fn site(&self) -> TemplateSite {
        TemplateSite {
            name: self.name.clone(),
            file: self.file,
            node: self.node.span(),
            name_span: self.name_span,
        }
    }
}

impl Resource {
    /// The resource's name.
    pub fn name(&self) -> &str {
        match self {
            Resource::Host(r) => &r.name,
            Resource::Network(r) => &r.name,
            Resource::Vlan(r) => &r.name,
            Resource::Pool(r) => &r.name,
            Resource::Volume(r) => &r.name,
            Resource::Vm(r) => &r.name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(text: &str) -> KdlNode {
        let doc: kdl::KdlDocument = crate::parse::parse(text).expect("parses");
        doc.nodes()[0].clone()
    }

    #[test]
    fn counts_are_limited_per_file() {
        let mut errors = Vec::new();
        let mut made = MAX_INSTANCES_PER_FILE - 5;
        let five = count_of(&node("v \"a{n}\" count=5"), 0, &mut made, &mut errors);
        assert_eq!(five.map(|c| c.n), Some(5));
        assert!(errors.is_empty());
        let over = count_of(&node("v \"a{n}\" count=1"), 0, &mut made, &mut errors);
        assert_eq!(over.map(|c| c.n), Some(1), "reported, read as one");
        assert!(matches!(
            errors[0].error,
            SchemaError::TooManyInstances { .. }
        ));
        assert_eq!(made, MAX_INSTANCES_PER_FILE);
    }

    #[test]
    fn every_string_is_numbered_and_spans_stay() {
        let written = node("vm \"web-{n}\" cmdline=\"a {n} {n}\" { nic vlan=\"v{n}\"; cpus 2; }");
        let two = substitute(&written, &crate::language::VM, "2");
        let strings: Vec<&str> = two
            .entries()
            .iter()
            .chain(two.children().expect("children").nodes()[0].entries())
            .filter_map(|e| e.value().as_string())
            .collect();
        assert_eq!(strings, ["web-2", "a 2 2", "v2"]);
        assert_eq!(two.entries()[0].span(), written.entries()[0].span());
        let settings: Vec<&str> = placeholders(&written).into_iter().map(|(s, _)| s).collect();
        assert_eq!(settings, ["", "cmdline", "nic"]);
        assert!(placeholders(&two).is_empty());
    }
}
