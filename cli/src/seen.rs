//! What `status`, `list` and `show` share: the config loaded, every host of it observed
//! through the path `plan` takes (the `Fleet`'s hosts, local or over ssh, answering
//! `HostFacts` that the planner's matcher turns into the live state), and the plan of
//! the config against that state, which says what is missing, drifted or not in the
//! config. Read-only: no lock, no changes.

use std::collections::BTreeMap;
use std::path::Path;

use vmctl_planner::{LiveFile, Plan, PlanOptions};
use vmctl_runtime::apply::HostSeen;
use vmctl_schema::Loaded;

use crate::commands::apply::plan_error;
use crate::error::CommandError;
use crate::render::Style;
use crate::runtime::{self, Reach};

/// The config and its hosts as they are now.
pub struct Seen {
    pub loaded: Loaded,
    /// Each host's live state with the details status shows (taps).
    pub hosts: BTreeMap<String, HostSeen>,
    /// The live state as `plan` sees it, and as `plan --live FILE` reads it.
    pub live: LiveFile,
    /// The config against `live`, without the capacity check (what is there is shown
    /// whether or not more would fit: that is the plan's question).
    pub plan: Plan,
}

/// Loads the config at `path` and observes its hosts (warning about unreadable records).
pub fn observe(path: &Path, reach: &Reach, style: &Style) -> Result<Seen, CommandError> {
    observe_loaded(crate::config::load(path, style)?, path, reach, style)
}

/// Observes the hosts of a config loaded from `path`.
pub fn observe_loaded(
    loaded: Loaded,
    path: &Path,
    reach: &Reach,
    style: &Style,
) -> Result<Seen, CommandError> {
    let fleet = runtime::connect(&loaded.config, reach, path)?;
    let hosts = runtime::observe_detailed(&loaded.config, &fleet)?;
    drop(fleet);
    let live = vmctl_runtime::apply::observe::live_file(&hosts);
    let mut unsized_live = live.clone();
    for state in unsized_live.hosts.values_mut() {
        state.reported = None;
    }
    let options = PlanOptions {
        exclude_hosts: reach.exclude_hosts.clone(),
        live_migration: vmctl_runtime::apply::LIVE_MIGRATION,
        ..PlanOptions::default()
    };
    let plan = vmctl_planner::plan(&loaded.config, &unsized_live, &options)
        .map_err(|e| plan_error(&e, style))?;
    Ok(Seen {
        loaded,
        hosts,
        live,
        plan,
    })
}
