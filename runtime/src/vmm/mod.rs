//! The microVM engine (issue 3); this branch carries only its device layer.

pub mod devices;
