//! Saved plans (`vmctl plan PATH -o FILE`): the plan, the options it was made with, and a
//! fingerprint of the config and of each host's live state, so that `vmctl apply FILE`
//! can refuse a plan whose world moved since ("stale plan").
//!
//! A fingerprint is the SHA-256 of canonical JSON: the config model as loaded, and each
//! host's live state reduced to the project's resources sorted by name
//! ([`LiveState::canonical`]). Another project's work on a shared host, or the order in
//! which a host lists things, does not make a plan stale; any change to this project's
//! resources does.
//!
//! A plan file can be edited by hand, so its changes are not trusted either: `apply`
//! plans the config again against the hosts and refuses the file unless its changes are
//! exactly those ([`SavedPlan::verify`]), before any step runs. Everything a plan does
//! has thus passed the config's own checks (names, paths, references).

use std::collections::BTreeMap;
use std::fmt;

use miette::Diagnostic;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use vmctl_schema::Config;

use crate::live::{LiveFile, LiveState};
use crate::plan::{Change, Plan};

/// The version of the saved-plan file this build writes and reads. 2: SHA-256
/// fingerprints and an absolute `source` (1 had FNV-1a fingerprints); 3: its changes
/// may be of DHCP servers (`dhcp`), and its live fingerprints cover them; 4: a change
/// may be a `migrate`, with the host it moves `from`.
pub const SAVED_FORMAT_VERSION: u32 = 4;

/// A stable hash of some canonical JSON, written `sha256:<64 hex digits>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(pub String);

impl Fingerprint {
    /// Of any serializable value, through its JSON.
    fn of<T: Serialize>(value: &T) -> Fingerprint {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        Fingerprint(format!("sha256:{}", sha256_hex(&bytes)))
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

/// SHA-256 in lower-case hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The options a saved plan was made with, kept so `apply` can show them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SavedOptions {
    pub targets: Vec<String>,
    pub replace: Vec<String>,
    pub destroy: bool,
    /// Hosts the plan leaves out (`--exclude-host`); applying it reaches none of them.
    pub exclude_hosts: Vec<String>,
}

/// A plan file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format_version: u32,
    /// The config path the plan was made from, absolute, so the plan applies from any
    /// working directory.
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
        help("plan files are not kept across vmctl releases: make a new plan with this vmctl (`vmctl plan PATH -o FILE`)")
    )]
    Version { found: u32 },

    #[error("the saved plan was edited: {what}")]
    #[diagnostic(
        code(vmctl::plan::saved_edited),
        help("a plan file is applied only as `vmctl plan` wrote it: make a new plan with `vmctl plan {path} -o FILE`")
    )]
    Edited { what: String, path: String },
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

impl SavedPlan {
    /// Refuses a plan whose changes are not exactly those `replanned` (the config planned
    /// again, with the saved options, against the same live state) has: a hand-edited
    /// name, path or action. The order of the changes does not matter (the apply graph
    /// orders the steps).
    pub fn verify(&self, replanned: &Plan) -> Result<(), SavedPlanError> {
        let edited = |what: String| SavedPlanError::Edited {
            what,
            path: self.source.clone(),
        };
        if self.plan.project != replanned.project {
            return Err(edited(format!(
                "its project is {:?}, the config's {:?}",
                self.plan.project, replanned.project
            )));
        }
        let key = |c: &&Change| (c.host.clone(), c.id.kind, c.id.name.clone());
        let mut saved: Vec<&Change> = self.plan.changes.iter().collect();
        let mut planned: Vec<&Change> = replanned.changes.iter().collect();
        saved.sort_by_key(key);
        planned.sort_by_key(key);
        let (mut s, mut p) = (saved.iter().peekable(), planned.iter().peekable());
        let extra = |a: &Change| {
            edited(format!(
                "it changes {} on host {:?}, which the config does not plan",
                a.id, a.host
            ))
        };
        loop {
            match (s.peek(), p.peek()) {
                (None, None) => return Ok(()),
                (Some(a), Some(b)) if key(a) == key(b) => {
                    if a != b {
                        return Err(edited(format!(
                            "its change of {} on host {:?} is not what the config plans",
                            a.id, a.host
                        )));
                    }
                    s.next();
                    p.next();
                }
                (Some(a), Some(b)) if key(a) < key(b) => return Err(extra(a)),
                (Some(a), None) => return Err(extra(a)),
                (_, Some(b)) => {
                    return Err(edited(format!(
                        "it leaves out {} on host {:?}, which the config plans",
                        b.id, b.host
                    )))
                }
            }
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
    use crate::action::ResourceKind;
    use crate::live::VmStatus;
    use crate::plan::Resource;
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
    fn fingerprints_are_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let saved = saved(&LiveFile::default());
        assert!(saved.config.0.starts_with("sha256:"), "{}", saved.config);
        assert_eq!(saved.config.0.len(), "sha256:".len() + 64);
    }

    #[test]
    fn a_version_3_plan_is_refused_it_knew_no_migrations() {
        let mut saved = saved(&LiveFile::default());
        saved.format_version = 3;
        assert_eq!(
            SavedPlan::from_json(&saved.to_json()),
            Err(SavedPlanError::Version { found: 3 })
        );
    }

    #[test]
    fn a_version_2_plan_is_refused_it_did_not_fingerprint_dhcp_servers() {
        let mut saved = saved(&LiveFile::default());
        saved.format_version = 2;
        assert_eq!(
            SavedPlan::from_json(&saved.to_json()),
            Err(SavedPlanError::Version { found: 2 })
        );
    }

    #[test]
    fn a_version_1_plan_is_refused_with_what_to_do() {
        let mut saved = saved(&LiveFile::default());
        saved.format_version = 1;
        let err = SavedPlan::from_json(&saved.to_json()).unwrap_err();
        assert_eq!(err, SavedPlanError::Version { found: 1 });
        let help = miette::Diagnostic::help(&err).unwrap().to_string();
        assert!(help.contains("make a new plan"), "{help}");
    }

    #[test]
    fn an_edited_plan_is_refused() {
        let config = quickstart();
        let live = LiveFile::default();
        let saved = saved(&live);
        let replanned = plan_of(&config, &live).unwrap();
        assert_eq!(saved.verify(&replanned), Ok(()));
        // Order does not matter.
        let mut reordered = saved.clone();
        reordered.plan.changes.reverse();
        assert_eq!(reordered.verify(&replanned), Ok(()));

        // A pool path pointed elsewhere.
        let mut edited = saved.clone();
        let pool = edited
            .plan
            .changes
            .iter_mut()
            .find(|c| c.id.kind == ResourceKind::Pool);
        let Some(Resource::Pool(p)) = pool.and_then(|c| c.after.as_mut()) else {
            panic!("the quickstart plans a pool");
        };
        p.path = "/etc".into();
        let err = edited.verify(&replanned).unwrap_err();
        assert!(
            matches!(&err, SavedPlanError::Edited { what, .. } if what.contains("pool.fast")),
            "{err:?}"
        );
        // A renamed resource: one the config does not plan, and one left out.
        let mut renamed = saved.clone();
        renamed.plan.changes[0].id.name = "../../x".into();
        assert!(matches!(
            renamed.verify(&replanned),
            Err(SavedPlanError::Edited { .. })
        ));
        // A change dropped, one added.
        let mut dropped = saved.clone();
        dropped.plan.changes.pop();
        assert!(dropped.verify(&replanned).is_err());
        let mut added = saved.clone();
        added.plan.changes.push(added.plan.changes[0].clone());
        assert!(added.verify(&replanned).is_err());
        let mut project = saved;
        project.plan.project = "other".into();
        assert!(project.verify(&replanned).is_err());
    }
}
