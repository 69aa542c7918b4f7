//! Reading one KDL node against its [`NodeKind`]: the name argument, settings given as
//! properties or child nodes, unknown and repeated settings. A node may be read with
//! the templates it starts from as lower [`Layer`]s: a setting of a higher layer
//! overrides a lower one's, repeated settings are taken from every layer, lowest first.
//! Typed values are read in `typed.rs`.

use kdl::{KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use crate::diagnostics::{suggest, FileId, SchemaError};
use crate::language::{Field, NodeKind, ValueKind};
use crate::spans::{FieldSpan, Site};

/// Problems found while reading, each with the file it points into.
pub type Errors = Vec<(FileId, SchemaError)>;

/// One node to read: a resource's own node, or a template it starts from.
#[derive(Clone, Copy)]
pub struct Layer<'a> {
    pub node: &'a KdlNode,
    pub file: FileId,
    /// What the layer's node may hold (`TEMPLATE` for a template).
    pub kind: &'static NodeKind,
}

/// One occurrence of a setting.
#[derive(Clone, Copy)]
enum Value<'a> {
    Property(&'a KdlEntry),
    Child(&'a KdlNode),
}

#[derive(Clone, Copy)]
struct Occurrence<'a> {
    field: usize,
    layer: usize,
    file: FileId,
    value: Value<'a>,
}

impl Occurrence<'_> {
    fn site(&self) -> Site {
        let span = match self.value {
            Value::Property(e) => e.span(),
            Value::Child(n) => n.span(),
        };
        Site {
            file: self.file,
            span,
        }
    }
}

/// A node read against its kind; typed getters report problems into `errors`.
pub struct NodeReader<'a, 'e> {
    pub kind: &'static NodeKind,
    /// The resource's own node (the last layer).
    pub node: &'a KdlNode,
    /// The file of the own node.
    pub file: FileId,
    pub name: Option<(&'a str, SourceSpan)>,
    given: Vec<Occurrence<'a>>,
    /// Names of unknown settings, so a misspelt one is not also reported missing.
    unknown: Vec<String>,
    pub errors: &'e mut Errors,
    pub spans: Vec<FieldSpan>,
}

/// A human word for a KDL value's type.
pub fn type_of(value: &KdlValue) -> String {
    match value {
        KdlValue::String(s) => format!("the string \"{s}\""),
        KdlValue::Integer(i) => format!("the integer {i}"),
        KdlValue::Float(f) => format!("the number {f}"),
        KdlValue::Bool(b) => format!("#{b}"),
        KdlValue::Null => "#null".to_owned(),
    }
}

/// A setting as one would write it, for "add …" hints: `size "512MiB"`, `host="local"`.
fn example(field: &Field) -> String {
    let value = match field.kind {
        ValueKind::Text | ValueKind::Reference => "\"…\"",
        ValueKind::Path => "\"/path/to/file\"",
        ValueKind::Integer => "1",
        ValueKind::Number => "1.0",
        ValueKind::Size => "\"512MiB\"",
        ValueKind::Percent => "\"8%\"",
        ValueKind::Bool => "#true",
        ValueKind::Node(_) => return format!("{} …", field.name),
    };
    format!("{} {value}", field.name)
}

impl<'a, 'e> NodeReader<'a, 'e> {
    /// Reads `node` of file `file` on its own.
    pub fn new(
        kind: &'static NodeKind,
        node: &'a KdlNode,
        file: FileId,
        errors: &'e mut Errors,
    ) -> Self {
        Self::layered(kind, &[], Layer { node, file, kind }, true, errors)
    }

    /// Reads `own` (the resource's own node) over `templates` (the root template
    /// first), sorting their entries and children into the kind's settings and
    /// reporting unknown, misplaced and doubled ones. Without `required`, missing
    /// required settings are not reported (a template that could not be found would
    /// otherwise make every one of them missing).
    pub fn layered(
        kind: &'static NodeKind,
        templates: &[Layer<'a>],
        own: Layer<'a>,
        required: bool,
        errors: &'e mut Errors,
    ) -> Self {
        let mut reader = NodeReader {
            kind,
            node: own.node,
            file: own.file,
            name: None,
            given: Vec::new(),
            unknown: Vec::new(),
            errors,
            spans: Vec::new(),
        };
        let layers = templates.iter().chain(std::iter::once(&own));
        for (i, layer) in layers.enumerate() {
            reader.sort_entries(i, layer, i == templates.len());
            reader.sort_children(i, layer);
        }
        reader.check_given(templates.len() + 1, required);
        reader
    }

    fn push(&mut self, file: FileId, error: SchemaError) {
        self.errors.push((file, error));
    }

    /// The index in the resource's kind of setting `key` as `layer` may hold it.
    fn accepts(&self, layer: &Layer<'_>, key: &str) -> Option<(usize, &'static Field)> {
        layer.kind.field(key)?;
        self.kind.field(key)
    }

    fn sort_entries(&mut self, i: usize, layer: &Layer<'a>, own: bool) {
        let mut arguments = 0;
        for entry in layer.node.entries() {
            match entry.name() {
                None => {
                    arguments += 1;
                    if arguments == 1 && layer.kind.named {
                        match entry.value() {
                            KdlValue::String(s) if own => {
                                self.name = Some((s.as_str(), entry.span()))
                            }
                            KdlValue::String(_) => {}
                            other => self.push(
                                layer.file,
                                SchemaError::wrong_type(
                                    "name",
                                    "a string",
                                    type_of(other),
                                    entry.span(),
                                ),
                            ),
                        }
                    } else {
                        self.push(
                            layer.file,
                            SchemaError::UnexpectedArgument {
                                field: layer.kind.name.to_owned(),
                                span: entry.span(),
                                help: argument_help(layer.kind),
                            },
                        );
                    }
                }
                Some(key) => match self.accepts(layer, key.value()) {
                    Some((
                        _,
                        Field {
                            kind: ValueKind::Node(_),
                            name,
                            ..
                        },
                    )) => self.push(
                        layer.file,
                        SchemaError::wrong_type(
                            name,
                            "a child node",
                            format!("the property {name}="),
                            entry.span(),
                        ),
                    ),
                    Some((field, _)) => self.given.push(Occurrence {
                        field,
                        layer: i,
                        file: layer.file,
                        value: Value::Property(entry),
                    }),
                    None => self.unknown(layer, key.value(), entry.span()),
                },
            }
        }
        if layer.kind.named && arguments == 0 {
            self.push(
                layer.file,
                SchemaError::MissingValue {
                    node: layer.kind.name,
                    what: "a name".to_owned(),
                    span: layer.node.name().span(),
                    help: format!("name it: `{} \"<name>\" …`", layer.kind.name),
                },
            );
        }
    }

    fn sort_children(&mut self, i: usize, layer: &Layer<'a>) {
        let Some(children) = layer.node.children() else {
            return;
        };
        for child in children.nodes() {
            let key = child.name().value();
            match self.accepts(layer, key) {
                Some((field, _)) => self.given.push(Occurrence {
                    field,
                    layer: i,
                    file: layer.file,
                    value: Value::Child(child),
                }),
                None => self.unknown(layer, key, child.name().span()),
            }
        }
    }

    fn unknown(&mut self, layer: &Layer<'_>, name: &str, span: SourceSpan) {
        self.unknown.push(name.to_owned());
        let help = if name == "count" && layer.kind.name == "template" {
            "`count` belongs on the vm that uses the template: `vm \"web-{n}\" count=3 template=\"…\"`".to_owned()
        } else {
            suggest(name, layer.kind.field_names())
        };
        self.push(
            layer.file,
            SchemaError::UnknownProperty {
                node: layer.kind.name,
                name: name.to_owned(),
                span,
                help,
            },
        );
    }

    fn check_given(&mut self, layers: usize, required: bool) {
        for (i, field) in self.kind.fields.iter().enumerate() {
            let given = || self.given.iter().filter(move |o| o.field == i);
            if given().next().is_none() {
                if required && field.required && !self.misspelt(field.name) {
                    let span = self.name.map_or(self.node.name().span(), |(_, s)| s);
                    let help = format!(
                        "add `{}` to this {}{}, e.g. `{}`",
                        field.name,
                        self.kind.name,
                        if layers > 1 {
                            " or to its template"
                        } else {
                            ""
                        },
                        example(field)
                    );
                    let error = SchemaError::MissingValue {
                        node: self.kind.name,
                        what: format!("`{}`", field.name),
                        span,
                        help,
                    };
                    self.push(self.file, error);
                }
                continue;
            }
            if field.repeated {
                continue;
            }
            let mut doubled = Vec::new();
            for layer in 0..layers {
                let mut in_layer = given().filter(|o| o.layer == layer);
                let Some(first) = in_layer.next() else {
                    continue;
                };
                let first = first.site();
                doubled.extend(in_layer.map(|o| (o.site(), first.span)));
            }
            for (again, first) in doubled {
                self.push(
                    again.file,
                    SchemaError::DuplicateProperty {
                        field: field.name,
                        span: again.span,
                        first,
                    },
                );
            }
        }
    }

    /// Whether an unknown setting of this node looks like a misspelling of `field`.
    fn misspelt(&self, field: &str) -> bool {
        self.unknown
            .iter()
            .any(|u| strsim::jaro_winkler(u, field) > 0.8)
    }

    fn field_index(&self, name: &str) -> usize {
        self.kind.field(name).map(|(i, _)| i).unwrap_or(usize::MAX)
    }

    /// The occurrences of setting `index` that count: for a repeated setting all of
    /// them, lowest layer first; else the first one of the highest layer giving it.
    fn effective(&self, index: usize, repeated: bool) -> Vec<Occurrence<'a>> {
        let mut all: Vec<Occurrence<'a>> = self
            .given
            .iter()
            .filter(|o| o.field == index)
            .copied()
            .collect();
        if !repeated {
            let top = all.iter().map(|o| o.layer).max();
            all.retain(|o| Some(o.layer) == top);
            all.truncate(1);
        }
        all
    }

    /// Every value given for setting `name`, with its site. A child node gives its
    /// arguments (one, or several for a repeated setting).
    pub fn values(&mut self, name: &'static str) -> Vec<(&'a KdlValue, Site)> {
        let index = self.field_index(name);
        let Some(field) = self.kind.fields.get(index) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for occurrence in self.effective(index, field.repeated) {
            match occurrence.value {
                Value::Property(e) => out.push((e.value(), occurrence.site().with(e.span()))),
                Value::Child(node) => self.child_values(field, occurrence.file, node, &mut out),
            }
        }
        for (i, (_, site)) in out.iter().enumerate() {
            self.spans.push(FieldSpan {
                name,
                index: u32::try_from(i).unwrap_or(u32::MAX),
                file: site.file,
                span: site.span,
            });
        }
        out
    }

    fn child_values(
        &mut self,
        field: &Field,
        file: FileId,
        node: &'a KdlNode,
        out: &mut Vec<(&'a KdlValue, Site)>,
    ) {
        let mut arguments = 0;
        for entry in node.entries() {
            if entry.name().is_some() {
                self.push(
                    file,
                    SchemaError::UnexpectedArgument {
                        field: field.name.to_owned(),
                        span: entry.span(),
                        help: format!("`{}` takes a value, not properties", field.name),
                    },
                );
                continue;
            }
            arguments += 1;
            if arguments > 1 && !field.repeated {
                self.push(
                    file,
                    SchemaError::UnexpectedArgument {
                        field: field.name.to_owned(),
                        span: entry.span(),
                        help: format!("`{}` takes one value", field.name),
                    },
                );
                continue;
            }
            out.push((
                entry.value(),
                Site {
                    file,
                    span: entry.span(),
                },
            ));
        }
        if let Some(children) = node.children() {
            self.push(
                file,
                SchemaError::UnexpectedArgument {
                    field: field.name.to_owned(),
                    span: children.span(),
                    help: format!("`{}` has no children", field.name),
                },
            );
        }
        if arguments == 0 {
            self.push(
                file,
                SchemaError::MissingValue {
                    node: self.kind.name,
                    what: format!("a value for `{}`", field.name),
                    span: node.span(),
                    help: format!("write `{} <value>`", field.name),
                },
            );
        }
    }

    /// The child nodes given for a node-valued setting (`nic`), with their files, from
    /// every layer, lowest first.
    pub fn nodes(&self, name: &str) -> Vec<(&'a KdlNode, FileId)> {
        let index = self.field_index(name);
        self.given
            .iter()
            .filter(|o| o.field == index)
            .filter_map(|o| match o.value {
                Value::Child(n) => Some((n, o.file)),
                Value::Property(_) => None,
            })
            .collect()
    }
}

fn argument_help(kind: &NodeKind) -> String {
    if kind.named {
        format!(
            "`{}` takes one argument, its name; settings are properties (key=value) or child nodes",
            kind.name
        )
    } else {
        format!(
            "`{}` takes no arguments; its settings are properties (key=value)",
            kind.name
        )
    }
}
