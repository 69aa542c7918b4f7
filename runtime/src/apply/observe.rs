//! `observe`: the I/O side of a host's [`LiveState`]: every host of a config asked for
//! its facts (`vmctl_planner::facts::HostFacts`, [`crate::host::facts`] on the host
//! itself, locally or through its agent), in parallel, and each answer handed to the
//! planner's matcher (`vmctl_planner::matching::to_live_state`), which names VLANs,
//! finds names taken and tap drift from the config, with no I/O.
//!
//! A record that cannot be read (a VM's `spec.json`, a pool's or volume's marker, a
//! stray file under `vms/`) arrives as an `Unreadable` with its repair hint, and
//! everything else on the host is observed as usual.

use std::collections::BTreeMap;

use vmctl_planner::facts::{FactsRequest, HostFacts, OrphanProject, TapFact};
use vmctl_planner::matching::to_live_state;
use vmctl_planner::{LiveFile, LiveState};
use vmctl_schema::{Config, Host};

use crate::host::facts::FactsError;
use crate::hosts::Fleet;

pub use crate::host::facts::euid;

/// Errors of observing a host.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("cannot observe host {host:?}")]
    Facts {
        host: String,
        #[source]
        source: FactsError,
    },
    #[error("the config's host {host:?} is not among the hosts reached for this run")]
    NotReached { host: String },
}

/// Everything of `config.project` on `host` (reached as `reached`), with the VMs'
/// processes asked whether they run; also the host's facts, for status.
pub fn observe_host_state(
    config: &Config,
    host: &Host,
    reached: &dyn crate::hosts::Host,
    origin: Option<&std::path::Path>,
) -> Result<(LiveState, HostFacts), LiveError> {
    let mut request = FactsRequest::for_host(config, host);
    request.origin = origin.map(std::path::Path::to_owned);
    let facts = reached.facts(&request).map_err(|source| LiveError::Facts {
        host: host.name.clone(),
        source,
    })?;
    Ok((to_live_state(config, &host.name, &facts), facts))
}

/// One host as observed: the planner's view, the taps behind it for `status`, and the
/// other projects of the same config folder (for a warning).
#[derive(Debug, Clone)]
pub struct HostSeen {
    pub live: LiveState,
    pub taps: Vec<TapFact>,
    pub orphans: Vec<OrphanProject>,
}

impl HostSeen {
    /// The planner's view of `facts`, keeping the taps.
    pub fn of(live: LiveState, facts: HostFacts) -> HostSeen {
        HostSeen {
            live,
            taps: facts.taps,
            orphans: facts.orphans,
        }
    }
}

/// Every host of `config`, observed in parallel through `fleet`. All errors are
/// returned together.
pub fn observe(config: &Config, fleet: &Fleet) -> Result<LiveFile, Vec<LiveError>> {
    observe_detailed(config, fleet).map(into_live_file)
}

/// The planner's view of observed hosts.
pub fn into_live_file(hosts: BTreeMap<String, HostSeen>) -> LiveFile {
    LiveFile {
        hosts: hosts
            .into_iter()
            .map(|(name, seen)| (name, seen.live))
            .collect(),
        ..LiveFile::default()
    }
}

/// The planner's view of observed hosts, keeping the details.
pub fn live_file(hosts: &BTreeMap<String, HostSeen>) -> LiveFile {
    LiveFile {
        hosts: hosts
            .iter()
            .map(|(name, seen)| (name.clone(), seen.live.clone()))
            .collect(),
        ..LiveFile::default()
    }
}

/// Every host of `config`, observed in parallel, with the details; by host name. All
/// errors are returned together.
pub fn observe_detailed(
    config: &Config,
    fleet: &Fleet,
) -> Result<BTreeMap<String, HostSeen>, Vec<LiveError>> {
    let hosts: Vec<&Host> = config
        .hosts
        .iter()
        .filter(|h| !fleet.excludes(&h.name))
        .collect();
    // At most `fleet.parallelism()` hosts at once, the results in the config's order.
    let seen = crate::hosts::in_parallel(&hosts, fleet.parallelism(), |host| {
        let reached = fleet.get(&host.name).ok_or_else(|| LiveError::NotReached {
            host: host.name.clone(),
        })?;
        observe_host_state(config, host, reached, fleet.origin())
            .map(|(live, facts)| HostSeen::of(live, facts))
    });
    let results = hosts.iter().map(|h| h.name.clone()).zip(seen);
    let mut hosts = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, result) in results {
        match result {
            Ok(seen) => {
                hosts.insert(name, seen);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(hosts)
    } else {
        Err(errors)
    }
}
