//! Every rule the loader checks, as one miette diagnostic each, and the collection
//! that carries all of a run's diagnostics together.
//!
//! A rule's variant holds only spans and data ([`rules`]); [`Located`] attaches the file
//! it points into, so one enum serves every file, and [`Diagnostics`] reports them all
//! at once ([`located`]).

mod located;
mod rules;
mod suggest;

pub use located::{is_warning, Diagnostics, FileId, Located, Note};
pub use rules::{SchemaError, BOOLEAN, KDL_V2_BOOLEANS};
pub use suggest::suggest;
