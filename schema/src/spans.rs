//! Where each resource of a loaded config was declared, so later stages (plan, apply)
//! can point their own diagnostics at the source; and, for a resource expanded from a
//! `count` or made from templates, the node as written ([`Origin`]).

use std::sync::Arc;

use miette::SourceSpan;

use crate::diagnostics::FileId;

/// A span in one file of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    pub file: FileId,
    pub span: SourceSpan,
}

impl Site {
    /// The same file, another span.
    pub fn with(self, span: SourceSpan) -> Site {
        Site { span, ..self }
    }
}

/// One setting's value: `name` (`"memory"`, `"disk"`, `"nic.mac"`) and, for repeated
/// settings, which one. The file is the VM's own, or a template's that gave the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpan {
    pub name: &'static str,
    pub index: u32,
    pub file: FileId,
    pub span: SourceSpan,
}

/// Spans of one declared resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSpans {
    /// The file of the resource's own node.
    pub file: FileId,
    /// The whole node.
    pub node: SourceSpan,
    /// The name argument (the node name for unnamed nodes); for an instance of a
    /// `count`, the name as written (`"web-{n}"`).
    pub name: SourceSpan,
    /// The settings that were given (by the node or its templates), in reading order.
    pub fields: Vec<FieldSpan>,
    /// For a resource expanded from a `count` or made from templates: where from.
    pub origin: Option<Arc<Origin>>,
}

impl ResourceSpans {
    /// Where setting `name` (the `index`-th for repeated ones) was given, if it was.
    pub fn field(&self, name: &str, index: u32) -> Option<Site> {
        self.fields
            .iter()
            .find(|f| f.name == name && f.index == index)
            .map(|f| Site {
                file: f.file,
                span: f.span,
            })
    }

    /// Where setting `name` was given, or else the resource's name.
    pub fn field_or_name(&self, name: &str, index: u32) -> Site {
        self.field(name, index)
            .unwrap_or_else(|| self.site(self.name))
    }

    /// A span of the resource's own node as a site.
    pub fn site(&self, span: SourceSpan) -> Site {
        Site {
            file: self.file,
            span,
        }
    }
}

/// Where an expanded resource comes from: the counted node as written and the
/// templates it starts from. Shared by every instance of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The node's kind: `vm`, `volume`, …
    pub kind: &'static str,
    /// `count=N` and the name as written, when the node has a count.
    pub count: Option<Counted>,
    /// The templates the node starts from, nearest first (`template=` of the node, then
    /// that template's own `template=`, …).
    pub templates: Vec<TemplateSite>,
}

/// A node with `count`, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// The name as written, with `{n}`.
    pub written: String,
    pub count: u32,
    /// The node's name argument.
    pub site: Site,
}

/// A template a resource starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSite {
    pub name: String,
    pub file: FileId,
    /// The whole `template` node.
    pub node: SourceSpan,
    /// Its name argument.
    pub name_span: SourceSpan,
}

impl Origin {
    /// The template whose node holds `site`, if one does.
    pub fn template_at(&self, site: Site) -> Option<&TemplateSite> {
        self.templates.iter().find(|t| {
            t.file == site.file
                && t.node.offset() <= site.span.offset()
                && site.span.offset() + site.span.len() <= t.node.offset() + t.node.len()
        })
    }
}

/// Spans of every resource, index for index beside the vectors of [`crate::Config`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spans {
    pub project: Option<Site>,
    pub hosts: Vec<ResourceSpans>,
    pub networks: Vec<ResourceSpans>,
    pub vlans: Vec<ResourceSpans>,
    pub pools: Vec<ResourceSpans>,
    pub volumes: Vec<ResourceSpans>,
    pub vms: Vec<ResourceSpans>,
}
