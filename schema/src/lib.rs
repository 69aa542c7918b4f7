//! vmctl's config language: KDL files to a typed, validated `Config`, with miette
//! diagnostics pointing at the source.

pub mod model;

pub use model::*;
