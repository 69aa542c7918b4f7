//! vmctl's config language: KDL files to a typed, validated `Config`, with miette
//! diagnostics pointing at the source.
//!
//! - [`load`] reads a file or folder into a [`Loaded`] config, or returns every
//!   [`Diagnostics`] of the run at once.
//! - [`format()`] gives a file's canonical form; [`json_schema`] the model's schema.
//! - [`derive`] has the stable derived names (bridges, taps, MACs).

pub mod addresses;
pub mod cpu;
pub mod derive;
pub mod diagnostics;
pub mod format;
pub mod json_schema;
pub mod language;
pub mod model;
pub mod source;
pub mod spans;
pub mod units;

mod decode;
mod guard;
mod load;
mod notes;
mod parse;
mod validate;

pub use diagnostics::{is_warning, Diagnostics, FileId, Located, Note, SchemaError};
pub use format::{format, format_source};
pub use json_schema::json_schema;
pub use load::{load, load_str, Kind, Loaded};
pub use model::*;
pub use source::{SourceFile, Sources};
pub use spans::{Counted, FieldSpan, Origin, ResourceSpans, Site, Spans, TemplateSite};
pub use validate::capacity;
