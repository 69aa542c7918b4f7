//! Where each resource of a loaded config was declared, so later stages (plan, apply)
//! can point their own diagnostics at the source.

use miette::SourceSpan;

use crate::diagnostics::FileId;

/// A span in one file of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    pub file: FileId,
    pub span: SourceSpan,
}

/// One setting's value: `name` (`"memory"`, `"disk"`, `"nic.mac"`) and, for repeated
/// settings, which one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpan {
    pub name: &'static str,
    pub index: u32,
    pub span: SourceSpan,
}

/// Spans of one declared resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSpans {
    pub file: FileId,
    /// The whole node.
    pub node: SourceSpan,
    /// The name argument (the node name for unnamed nodes).
    pub name: SourceSpan,
    /// The settings that were given, in source order.
    pub fields: Vec<FieldSpan>,
}

impl ResourceSpans {
    /// The span of setting `name` (the `index`-th for repeated ones), if given.
    pub fn field(&self, name: &str, index: u32) -> Option<SourceSpan> {
        self.fields
            .iter()
            .find(|f| f.name == name && f.index == index)
            .map(|f| f.span)
    }

    /// The span of setting `name`, or else of the resource's name.
    pub fn field_or_name(&self, name: &str, index: u32) -> SourceSpan {
        self.field(name, index).unwrap_or(self.name)
    }

    pub fn site(&self, span: SourceSpan) -> Site {
        Site {
            file: self.file,
            span,
        }
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
