//! Saved plans (`vmctl plan PATH -o FILE`): the plan, the options it was made with, and a
//! fingerprint of the config and of each host's live state, so that `vmctl apply FILE`
//! can refuse a plan whose world moved since ("stale plan").
//!
//! A fingerprint is FNV-1a (128 bits) of canonical JSON: the config model as loaded, and
//! each host's live state reduced to the project's resources sorted by name
//! ([`LiveState::canonical`]). Another project's work on a shared host, or the order in
//! which a host lists things, does not make a plan stale; any change to this project's
//! resources does. FNV is no defence against someone forging a state that collides;
//! it detects drift, which is its job here.

use std::collections::BTreeMap;
use std::fmt;

use miette::Diagnostic;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use vmctl_schema::Config;

use crate::live::{LiveFile, LiveState};
use crate::plan::Plan;

/// The version of the saved-plan file this build writes and reads.
pub const SAVED_FORMAT_VERSION: u32 = 1;

/// A stable hash of some canonical JSON, written `fnv1a128:<32 hex digits>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(pub String);

impl Fingerprint {
    /// Of any serializable value, through its JSON.
    fn of<T: Serialize>(value: &T) -> Fingerprint {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        Fingerprint(format!("fnv1a128:{:032x}", fnv1a128(&bytes)))
    }

    /// Of a config.
    pub fn of_config(config: &Config) -> Fingerprint {
        Fingerprint::of(config)
    }

    /// Of the part of a host's live state that `project` plans against.
    pub fn of_live(live: &LiveState, project: &str) -> Fingerprint {
        Fingerprint::of(&live.canonical(project))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// FNV-1a, 128-bit.
fn fnv1a128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    bytes.iter().fold(OFFSET, |hash, &b| {
        (hash ^ u128::from(b)).wrapping_mul(PRIME)
    })
}

/// The options a saved plan was made with, kept so `apply` can show them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SavedOptions {
    pub targets: Vec<String>,
    pub replace: Vec<String>,
    pub destroy: bool,
}

/// A plan file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format_version: u32,
    /// The config path the plan was made from, as given.
    pub source: String,
    pub config: Fingerprint,
    /// Every host of the config, by name.
    pub hosts: BTreeMap<String, Fingerprint>,
    pub options: SavedOptions,
    pub plan: Plan,
}

/// Why a saved plan cannot be applied.
#[derive(Debug, Error, Diagnostic, PartialEq)]
pub enum SavedPlanError {
    #[error("the saved plan is stale: {moved} changed since it was made")]
    #[diagnostic(
        code(vmctl::plan::stale),
        help("make a new plan with `vmctl plan {path} -o FILE` and review it")
    )]
    Stale { moved: String, path: String },

    #[error("cannot read the saved plan: {message}")]
    #[diagnostic(
        code(vmctl::plan::saved_unreadable),
        help("a saved plan is the file `vmctl plan -o FILE` wrote")
    )]
    Unreadable { message: String },

    #[error("the saved plan has format version {found}; this vmctl reads version {SAVED_FORMAT_VERSION}")]
    #[diagnostic(
        code(vmctl::plan::saved_version),
        help("make a new plan with this vmctl")
    )]
    Version { found: u32 },
}

impl SavedPlan {
    /// Saves `plan`, made from `config` (loaded from `source`) against `live`.
    pub fn new(
        source: impl Into<String>,
        config: &Config,
        live: &LiveFile,
        options: SavedOptions,
        plan: Plan,
    ) -> SavedPlan {
        SavedPlan {
            format_version: SAVED_FORMAT_VERSION,
            source: source.into(),
            config: Fingerprint::of_config(config),
            hosts: host_fingerprints(config, live),
            options,
            plan,
        }
    }

    /// The file's text: compact JSON (a 10,000-VM plan is large; `--json` is the
    /// format for reading).
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Reads a plan file, refusing other format versions.
    pub fn from_json(text: &str) -> Result<SavedPlan, SavedPlanError> {
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let unreadable = |e: serde_json::Error| SavedPlanError::Unreadable {
            message: e.to_string(),
        };
        let version: Version = serde_json::from_str(text).map_err(unreadable)?;
        if version.format_version != SAVED_FORMAT_VERSION {
            return Err(SavedPlanError::Version {
                found: version.format_version,
            });
        }
        serde_json::from_str(text).map_err(unreadable)
    }

    /// Refuses the plan when the config or any host's live state moved since it was made.
    pub fn check(&self, config: &Config, live: &LiveFile) -> Result<(), SavedPlanError> {
        let mut moved = Vec::new();
        if Fingerprint::of_config(config) != self.config {
            moved.push("the config".to_owned());
        }
        let now = host_fingerprints(config, live);
        let hosts = now.keys().chain(self.hosts.keys());
        let mut hosts: Vec<&String> = hosts.collect();
        hosts.sort();
        hosts.dedup();
        for host in hosts {
            if now.get(host) != self.hosts.get(host) {
                moved.push(format!("the live state of host {host:?}"));
            }
        }
        if moved.is_empty() {
            Ok(())
        } else {
            Err(SavedPlanError::Stale {
                moved: moved.join(", "),
                path: self.source.clone(),
            })
        }
    }
}

fn host_fingerprints(config: &Config, live: &LiveFile) -> BTreeMap<String, Fingerprint> {
    config
        .hosts
        .iter()
        .map(|h| {
            let fingerprint = Fingerprint::of_live(live.host(&h.name), &config.project);
            (h.name.clone(), fingerprint)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::VmStatus;
    use crate::testdata::{plan_of, quickstart};

    fn saved(live: &LiveFile) -> SavedPlan {
        let config = quickstart();
        let plan = plan_of(&config, live).unwrap();
        SavedPlan::new(
            "examples/quickstart",
            &config,
            live,
            SavedOptions::default(),
            plan,
        )
    }

    #[test]
    fn round_trips_and_is_fresh() {
        let live = LiveFile::default();
        let saved = saved(&live);
        let read = SavedPlan::from_json(&saved.to_json()).unwrap();
        assert_eq!(read, saved);
        assert_eq!(read.check(&quickstart(), &live), Ok(()));
        // `{}` for a host is the same as no entry.
        let explicit: LiveFile = serde_json::from_str(r#"{"hosts": {"local": {}}}"#).unwrap();
        assert_eq!(read.check(&quickstart(), &explicit), Ok(()));
    }

    #[test]
    fn a_moved_host_or_config_makes_it_stale() {
        let config = quickstart();
        let live = LiveFile::applied(&config);
        let saved = saved(&live);
        let mut moved = live.clone();
        moved.hosts.get_mut("local").unwrap().vms[0].status = VmStatus::Crashed;
        let err = saved.check(&config, &moved).unwrap_err();
        assert!(
            matches!(&err, SavedPlanError::Stale { moved, .. } if moved == "the live state of host \"local\""),
            "{err:?}"
        );
        let mut changed = config.clone();
        changed.vms[0].cpus = 4;
        let err = saved.check(&changed, &live).unwrap_err();
        assert!(matches!(&err, SavedPlanError::Stale { moved, .. } if moved == "the config"));
    }

    #[test]
    fn order_and_other_projects_do_not_make_it_stale() {
        let config = quickstart();
        let live = LiveFile::applied(&config);
        let saved = saved(&live);
        let mut shuffled = live.clone();
        let host = shuffled.hosts.get_mut("local").unwrap();
        host.vms.reverse();
        let mut theirs = host.pools[0].clone();
        theirs.project = "other".into();
        host.pools.push(theirs);
        assert_eq!(saved.check(&config, &shuffled), Ok(()));
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let mut saved = saved(&LiveFile::default());
        saved.format_version = 99;
        assert_eq!(
            SavedPlan::from_json(&saved.to_json()),
            Err(SavedPlanError::Version { found: 99 })
        );
        assert!(matches!(
            SavedPlan::from_json("{"),
            Err(SavedPlanError::Unreadable { .. })
        ));
    }

    #[test]
    fn fingerprints_are_stable() {
        assert_eq!(
            format!("{:032x}", fnv1a128(b"")),
            "6c62272e07bb014262b821756295c58d"
        );
        assert_eq!(
            format!("{:032x}", fnv1a128(b"a")),
            "d228cb696f1a8caf78912b704e4a8964"
        );
    }
}
