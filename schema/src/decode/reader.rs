//! Reading one KDL node against its [`NodeKind`]: the name argument, settings given as
//! properties or child nodes, unknown and repeated settings, and typed values.

use kdl::{KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use crate::diagnostics::{suggest, SchemaError};
use crate::language::{Field, NodeKind, ValueKind};
use crate::spans::FieldSpan;
use crate::units::{parse_percent, parse_size, SizeError};

/// One occurrence of a setting.
#[derive(Clone, Copy)]
enum Occurrence<'a> {
    Property(&'a KdlEntry),
    Child(&'a KdlNode),
}

impl Occurrence<'_> {
    fn span(&self) -> SourceSpan {
        match self {
            Occurrence::Property(e) => e.span(),
            Occurrence::Child(n) => n.span(),
        }
    }
}

/// A node read against its kind; typed getters report problems into `errors`.
pub struct NodeReader<'a, 'e> {
    pub kind: &'static NodeKind,
    pub node: &'a KdlNode,
    pub name: Option<(&'a str, SourceSpan)>,
    given: Vec<(usize, Occurrence<'a>)>,
    /// Names of unknown settings, so a misspelt one is not also reported missing.
    unknown: Vec<String>,
    pub errors: &'e mut Vec<SchemaError>,
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
    /// Sorts the node's entries and children into the kind's settings, reporting
    /// unknown, misplaced and doubled ones.
    pub fn new(
        kind: &'static NodeKind,
        node: &'a KdlNode,
        errors: &'e mut Vec<SchemaError>,
    ) -> Self {
        let mut reader = NodeReader {
            kind,
            node,
            name: None,
            given: Vec::new(),
            unknown: Vec::new(),
            errors,
            spans: Vec::new(),
        };
        reader.sort_entries();
        reader.sort_children();
        reader.check_given();
        reader
    }

    fn sort_entries(&mut self) {
        let mut arguments = 0;
        for entry in self.node.entries() {
            match entry.name() {
                None => {
                    arguments += 1;
                    if arguments == 1 && self.kind.named {
                        match entry.value() {
                            KdlValue::String(s) => self.name = Some((s.as_str(), entry.span())),
                            other => self.errors.push(SchemaError::wrong_type(
                                "name",
                                "a string",
                                type_of(other),
                                entry.span(),
                            )),
                        }
                    } else {
                        self.errors.push(SchemaError::UnexpectedArgument {
                            field: self.kind.name.to_owned(),
                            span: entry.span(),
                            help: self.argument_help(),
                        });
                    }
                }
                Some(key) => match self.kind.field(key.value()) {
                    Some((
                        _,
                        Field {
                            kind: ValueKind::Node(_),
                            name,
                            ..
                        },
                    )) => self.errors.push(SchemaError::wrong_type(
                        name,
                        "a child node",
                        format!("the property {name}="),
                        entry.span(),
                    )),
                    Some((index, _)) => self.given.push((index, Occurrence::Property(entry))),
                    None => self.unknown(key.value(), entry.span()),
                },
            }
        }
        if self.kind.named && arguments == 0 {
            self.errors.push(SchemaError::MissingValue {
                node: self.kind.name,
                what: "a name".to_owned(),
                span: self.node.name().span(),
                help: format!("name it: `{} \"<name>\" …`", self.kind.name),
            });
        }
    }

    fn argument_help(&self) -> String {
        if self.kind.named {
            format!("`{}` takes one argument, its name; settings are properties (key=value) or child nodes", self.kind.name)
        } else {
            format!(
                "`{}` takes no arguments; its settings are properties (key=value)",
                self.kind.name
            )
        }
    }

    fn sort_children(&mut self) {
        let Some(children) = self.node.children() else {
            return;
        };
        for child in children.nodes() {
            let key = child.name().value();
            match self.kind.field(key) {
                Some((index, _)) => self.given.push((index, Occurrence::Child(child))),
                None => self.unknown(key, child.name().span()),
            }
        }
    }

    fn unknown(&mut self, name: &str, span: SourceSpan) {
        self.unknown.push(name.to_owned());
        self.errors.push(SchemaError::UnknownProperty {
            node: self.kind.name,
            name: name.to_owned(),
            span,
            help: suggest(name, self.kind.field_names()),
        });
    }

    fn check_given(&mut self) {
        for (i, field) in self.kind.fields.iter().enumerate() {
            let mut occurrences = self.given.iter().filter(|(f, _)| *f == i).map(|(_, o)| o);
            match occurrences.next() {
                None if field.required && !self.misspelt(field.name) => {
                    self.errors.push(SchemaError::MissingValue {
                        node: self.kind.name,
                        what: format!("`{}`", field.name),
                        span: self.name.map_or(self.node.name().span(), |(_, s)| s),
                        help: format!(
                            "add `{}` to this {}, e.g. `{}`",
                            field.name,
                            self.kind.name,
                            example(field)
                        ),
                    })
                }
                Some(first) if !field.repeated => {
                    let first = first.span();
                    let again: Vec<SourceSpan> = occurrences.map(|o| o.span()).collect();
                    for span in again {
                        self.errors.push(SchemaError::DuplicateProperty {
                            field: field.name,
                            span,
                            first,
                        });
                    }
                }
                _ => {}
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

    /// Every value given for setting `name`, with its span. A child node gives its
    /// arguments (one, or several for a repeated setting).
    pub fn values(&mut self, name: &'static str) -> Vec<(&'a KdlValue, SourceSpan)> {
        let index = self.field_index(name);
        let Some(field) = self.kind.fields.get(index) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let given: Vec<Occurrence<'a>> = self
            .given
            .iter()
            .filter(|(f, _)| *f == index)
            .map(|(_, o)| *o)
            .take(if field.repeated { usize::MAX } else { 1 })
            .collect();
        for occurrence in given {
            match occurrence {
                Occurrence::Property(e) => out.push((e.value(), e.span())),
                Occurrence::Child(node) => self.child_values(field, node, &mut out),
            }
        }
        for (i, (_, span)) in out.iter().enumerate() {
            self.spans.push(FieldSpan {
                name,
                index: u32::try_from(i).unwrap_or(u32::MAX),
                span: *span,
            });
        }
        out
    }

    fn child_values(
        &mut self,
        field: &Field,
        node: &'a KdlNode,
        out: &mut Vec<(&'a KdlValue, SourceSpan)>,
    ) {
        let mut arguments = 0;
        for entry in node.entries() {
            if entry.name().is_some() {
                self.errors.push(SchemaError::UnexpectedArgument {
                    field: field.name.to_owned(),
                    span: entry.span(),
                    help: format!("`{}` takes a value, not properties", field.name),
                });
                continue;
            }
            arguments += 1;
            if arguments > 1 && !field.repeated {
                self.errors.push(SchemaError::UnexpectedArgument {
                    field: field.name.to_owned(),
                    span: entry.span(),
                    help: format!("`{}` takes one value", field.name),
                });
                continue;
            }
            out.push((entry.value(), entry.span()));
        }
        if let Some(children) = node.children() {
            self.errors.push(SchemaError::UnexpectedArgument {
                field: field.name.to_owned(),
                span: children.span(),
                help: format!("`{}` has no children", field.name),
            });
        }
        if arguments == 0 {
            self.errors.push(SchemaError::MissingValue {
                node: self.kind.name,
                what: format!("a value for `{}`", field.name),
                span: node.span(),
                help: format!("write `{} <value>`", field.name),
            });
        }
    }

    /// The child nodes given for a node-valued setting (`nic`).
    pub fn nodes(&self, name: &str) -> Vec<&'a KdlNode> {
        let index = self.field_index(name);
        self.given
            .iter()
            .filter(|(f, _)| *f == index)
            .filter_map(|(_, o)| match o {
                Occurrence::Child(n) => Some(*n),
                Occurrence::Property(_) => None,
            })
            .collect()
    }

    fn wrong(
        &mut self,
        field: &'static str,
        expected: &'static str,
        value: &KdlValue,
        span: SourceSpan,
    ) {
        self.errors.push(SchemaError::wrong_type(
            field,
            expected,
            type_of(value),
            span,
        ));
    }

    /// A string setting.
    pub fn text(&mut self, name: &'static str) -> Option<(&'a str, SourceSpan)> {
        let (value, span) = self.values(name).into_iter().next()?;
        match value {
            KdlValue::String(s) => Some((s.as_str(), span)),
            other => {
                self.wrong(name, "a string", other, span);
                None
            }
        }
    }

    /// A string setting, owned.
    pub fn string(&mut self, name: &'static str) -> Option<String> {
        self.text(name).map(|(s, _)| s.to_owned())
    }

    /// Every string of a repeated setting.
    pub fn texts(&mut self, name: &'static str) -> Vec<(&'a str, SourceSpan)> {
        let mut out = Vec::new();
        for (value, span) in self.values(name) {
            match value {
                KdlValue::String(s) => out.push((s.as_str(), span)),
                other => self.wrong(name, "a string", other, span),
            }
        }
        out
    }

    /// An integer setting that fits `T`.
    pub fn integer<T: TryFrom<i128> + Copy + ToString + Bounded>(
        &mut self,
        name: &'static str,
    ) -> Option<(T, SourceSpan)> {
        let (value, span) = self.values(name).into_iter().next()?;
        let Some(i) = value.as_integer() else {
            self.wrong(name, "an integer", value, span);
            return None;
        };
        self.fit(name, i, span)
    }

    fn fit<T: TryFrom<i128> + Copy + ToString + Bounded>(
        &mut self,
        name: &'static str,
        i: i128,
        span: SourceSpan,
    ) -> Option<(T, SourceSpan)> {
        match T::try_from(i) {
            Ok(v) => Some((v, span)),
            Err(_) if i < 0 => {
                self.errors.push(SchemaError::TooSmall {
                    field: name,
                    min: "0".to_owned(),
                    found: i.to_string(),
                    span,
                    help: "negative values have no meaning here",
                });
                None
            }
            Err(_) => {
                self.errors.push(SchemaError::NumberTooLarge {
                    field: name,
                    found: i.to_string(),
                    max: T::MAX_TEXT.to_owned(),
                    span,
                });
                None
            }
        }
    }

    /// A size setting: a string with a binary unit, or an integer of bytes.
    pub fn size(&mut self, name: &'static str) -> Option<(u64, SourceSpan)> {
        let (value, span) = self.values(name).into_iter().next()?;
        match value {
            KdlValue::Integer(i) => self.fit(name, *i, span),
            KdlValue::String(s) => match parse_size(s) {
                Ok(bytes) => Some((bytes, span)),
                Err(SizeError::TooLarge) => {
                    self.errors.push(SchemaError::NumberTooLarge {
                        field: name,
                        found: s.clone(),
                        max: "16EiB - 1".to_owned(),
                        span,
                    });
                    None
                }
                Err(e) => {
                    let help = match e {
                        SizeError::DecimalUnit { suggestion } => {
                            format!("sizes use binary units: did you mean `{suggestion}`?")
                        }
                        _ => "write a whole number and a binary unit: `512MiB`, `4GiB`, `4G` (= GiB), `16KiB`, or bytes".to_owned(),
                    };
                    self.errors.push(SchemaError::InvalidSize {
                        found: s.clone(),
                        span,
                        help,
                    });
                    None
                }
            },
            other => {
                self.wrong(name, "a size such as \"512MiB\"", other, span);
                None
            }
        }
    }

    /// A number setting (integer or decimal), finite.
    pub fn number(&mut self, name: &'static str) -> Option<(f64, SourceSpan)> {
        let (value, span) = self.values(name).into_iter().next()?;
        let number = match value {
            KdlValue::Integer(i) => *i as f64,
            KdlValue::Float(f) => *f,
            other => {
                self.wrong(name, "a number", other, span);
                return None;
            }
        };
        Some((number, span))
    }

    /// A fraction given as `"8%"` or `0.08`.
    pub fn percent(&mut self, name: &'static str) -> Option<(f64, SourceSpan)> {
        let (value, span) = self.values(name).into_iter().next()?;
        let fraction = match value {
            KdlValue::String(s) => parse_percent(s),
            KdlValue::Float(f) if (0.0..1.0).contains(f) => Some(*f),
            KdlValue::Integer(0) => Some(0.0),
            KdlValue::Float(_) | KdlValue::Integer(_) => None,
            other => {
                self.wrong(name, "a percentage such as \"8%\"", other, span);
                return None;
            }
        };
        if fraction.is_none() {
            self.errors.push(SchemaError::InvalidValue {
                field: name,
                found: value.to_string(),
                span,
                reason: "not a percentage in 0%..100%".to_owned(),
                help: "write a percentage such as \"8%\" (or a fraction such as 0.08)",
            });
        }
        fraction.map(|f| (f, span))
    }

    /// A boolean setting.
    pub fn boolean(&mut self, name: &'static str) -> Option<(bool, SourceSpan)> {
        let (value, span) = self.values(name).into_iter().next()?;
        match value {
            KdlValue::Bool(b) => Some((*b, span)),
            other => {
                self.wrong(name, crate::diagnostics::BOOLEAN, other, span);
                None
            }
        }
    }
}

/// The largest value of an integer type, for "too large" messages.
pub trait Bounded {
    const MAX_TEXT: &'static str;
}

impl Bounded for u16 {
    const MAX_TEXT: &'static str = "65535";
}

impl Bounded for u32 {
    const MAX_TEXT: &'static str = "4294967295";
}

impl Bounded for u64 {
    const MAX_TEXT: &'static str = "18446744073709551615";
}
