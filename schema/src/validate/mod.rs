//! Checks of the config as a whole, after every file is decoded: names and references,
//! networking (also of networks that span hosts), placement, capacity and dependency
//! cycles. Also fills in the derived values (bridge names, MACs, VNIs) that need the
//! whole config.

mod addresses;
pub mod capacity;
mod cycles;
mod dhcp;
mod names;
mod network;
mod placement;
mod routing;
mod spanning;

use miette::SourceSpan;

use crate::diagnostics::{FileId, SchemaError};
use crate::model::Config;
use crate::notes::{Context, Found};
use crate::source::Sources;
use crate::spans::{ResourceSpans, Site, Spans};

pub use names::Index;

/// Diagnostics found so far, each with its file (and instance, see `notes.rs`).
pub struct Report<'a> {
    pub sources: &'a Sources,
    pub errors: Vec<Found>,
}

impl<'a> Report<'a> {
    pub fn new(sources: &'a Sources) -> Self {
        Report {
            sources,
            errors: Vec::new(),
        }
    }

    pub fn push(&mut self, file: FileId, error: SchemaError) {
        self.errors.push(Found::new(file, error, None));
    }

    /// A problem of resource `name` (whose spans are `spans`) at `here`: for an
    /// instance of a `count` or a vm made from templates, it names the instance.
    pub fn push_in(&mut self, name: &str, spans: &ResourceSpans, here: Site, error: SchemaError) {
        let context = spans.origin.as_ref().map(|origin| Context {
            instance: name.to_owned(),
            origin: std::sync::Arc::clone(origin),
        });
        self.errors.push(Found::new(here.file, error, context));
    }

    /// `path:line:column` of a site.
    pub fn location(&self, site: Site) -> String {
        location(self.sources, site)
    }

    /// For a "second X here, first X there" diagnostic: the first site as a label when
    /// it is in the same file, and a help line saying where it is.
    pub fn first(&self, here: Site, first: Site, help: &str) -> (Option<SourceSpan>, String) {
        let label = (here.file == first.file).then_some(first.span);
        (
            label,
            format!("{help} (the first is at {})", self.location(first)),
        )
    }
}

/// `path:line:column` of a site.
pub fn location(sources: &Sources, site: Site) -> String {
    match sources.position(site) {
        Some((path, line, column)) => format!("{}:{line}:{column}", path.display()),
        None => String::new(),
    }
}

/// Runs every whole-config check, filling in derived values on the way.
pub fn validate(config: &mut Config, spans: &Spans, report: &mut Report<'_>) {
    network::derive_bridges(config);
    network::assign_macs(config, spans, report);
    spanning::derive_vnis(config, spans, report);
    addresses::derive_subnets(config, spans, report);
    let config = &*config;
    let index = Index::build(config, spans, report);
    index.check_references(config, spans, report);
    spanning::check_underlays(config, spans, &index, report);
    spanning::check_vnis(config, spans, &index, report);
    spanning::check_gateway_hosts(config, spans, &index, report);
    dhcp::check_dhcp(config, spans, report);
    network::check_vlan_ids(config, spans, report);
    network::check_interfaces(config, spans, report);
    network::check_vlan_bridges(config, spans, report);
    network::check_gateways(config, spans, report);
    addresses::check(config, spans, report);
    routing::check(config, spans, &index, report);
    placement::check(config, spans, &index, report);
    capacity::check(config, spans, &index, report);
    cycles::check(config, spans, &index, report);
}

/// The diagnostic codes of loading `text` as one file, in order (for tests).
#[cfg(test)]
pub(crate) fn codes_of(text: &str) -> Vec<String> {
    match crate::load_str("main.kdl", text) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics
            .0
            .iter()
            .filter(|d| !crate::diagnostics::is_warning(*d))
            .map(|d| {
                miette::Diagnostic::code(&d.error)
                    .map(|c| c.to_string())
                    .unwrap_or_default()
            })
            .collect(),
    }
}
