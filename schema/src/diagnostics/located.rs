//! A rule broken in a file ([`Located`]) and the collection that reports all of a run's
//! diagnostics at once ([`Diagnostics`]).

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};
use thiserror::Error;

use super::SchemaError;

/// Index of a source file in [`crate::Sources`].
pub type FileId = usize;

/// Which instances of a `count` or a template a diagnostic was found in (see
/// `notes.rs`); shown under the diagnostic's message.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct Note(pub String);

/// A [`SchemaError`] with the file it points into.
#[derive(Debug)]
pub struct Located {
    /// The file, named as the user gave it, with its text; `None` for errors about a
    /// path rather than about text (unreadable file, empty folder).
    pub source: Option<NamedSource<Arc<str>>>,
    /// Where in the list of files the source is, for sorting.
    pub file: Option<FileId>,
    pub error: SchemaError,
    /// For a resource expanded from a `count` or made from templates: which instances.
    pub note: Option<Note>,
}

impl Located {
    /// The first label's offset, for sorting diagnostics in source order.
    pub fn offset(&self) -> usize {
        self.error
            .labels()
            .and_then(|mut l| l.next())
            .map(|l| l.offset())
            .unwrap_or(0)
    }
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for Located {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.note {
            Some(note) => Some(note),
            None => self.error.source(),
        }
    }
}

impl Diagnostic for Located {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.error.code()
    }
    fn severity(&self) -> Option<miette::Severity> {
        self.error.severity()
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.error.help()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.error.labels()
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }
}

/// Every diagnostic of one run, reported together (warnings among them, in order).
#[derive(Debug, Error)]
#[error("{} in the config", count(self.errors(), "error", "errors"))]
pub struct Diagnostics(pub Vec<Located>);

fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Whether a diagnostic is a warning, not an error.
pub fn is_warning(diagnostic: &dyn Diagnostic) -> bool {
    diagnostic.severity() == Some(miette::Severity::Warning)
}

impl Diagnostic for Diagnostics {
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(self.0.iter().map(|d| d as &dyn Diagnostic)))
    }
}

impl Diagnostics {
    /// The diagnostics, in file then source order.
    pub fn iter(&self) -> impl Iterator<Item = &Located> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// How many of them are errors (not warnings).
    pub fn errors(&self) -> usize {
        self.0.iter().filter(|d| !is_warning(*d)).count()
    }

    /// "2 warnings" and the like, for summary lines.
    pub fn warnings_text(&self) -> Option<String> {
        let n = self.0.len() - self.errors();
        (n > 0).then(|| count(n, "warning", "warnings"))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
