//! Showing a plan: [`human`] for terminals and logs (Terraform's habits), [`json`] for
//! machines (versioned, documented in `planner/PLAN-JSON.md`), [`dot`] for Graphviz.
//! Each returns a `String`; the caller decides where it goes and whether to colour.

pub mod dot;
pub mod human;
pub mod json;
mod values;

#[cfg(test)]
mod tests;
