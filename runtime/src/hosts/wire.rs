//! The calls a host answers, as data: what a remote host's agent receives and sends
//! back, one JSON object per call. [`Served`] answers them on the host itself with a
//! [`LocalHost`], so a remote host runs exactly the code this machine runs.
//!
//! An agent serves one run: [`Call::Open`] says which host it is (state dir, netns);
//! the locks it takes are held until [`Call::Unlock`] or until the agent ends (its
//! connection dropped, the run killed) — a lock never outlives the run that took it.
//!
//! Errors cross as text ([`WireError`]), with the one structured case the caller acts
//! on: a lock held by another vmctl.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vmctl_planner::facts::{FactsRequest, HostFacts};

use super::{HeldLock, Host, LocalHost, RunSettings};
use crate::apply::{StepError, StepNote, StepOrder};
use crate::host::facts::FactsError;
use crate::host::import::{ImportError, ImportOrder};
use crate::host::lock::LockError;
use crate::host::volume_transfer::{Chunk, ReceivePart};
use crate::vms::migrate::{MigrationAnswer, MigrationCall};
use crate::vms::snapshot_call::{SnapshotAnswer, SnapshotCall, SnapshotFailure};

/// One call to a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "call",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum Call {
    /// Which host the agent is: the first call of a run.
    Open {
        host: String,
        state_dir: PathBuf,
        #[serde(default)]
        netns: Option<String>,
    },
    Facts {
        request: FactsRequest,
    },
    Lock {
        project: String,
        timeout_ms: u64,
        /// The config's folder, recorded with the lock.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<PathBuf>,
    },
    Unlock {
        project: String,
    },
    Sweep {
        project: String,
        pools: Vec<PathBuf>,
    },
    Run {
        project: String,
        order: Box<StepOrder>,
        stop_timeout_ms: u64,
    },
    /// Starts no long work anew (copying or hashing an image stops): Ctrl-C.
    Cancel,
    Tidy {
        project: String,
    },
    /// Where the host's image cache has the file of this sha256 (hex), if it has it.
    Image {
        sha256: String,
    },
    /// Adopts a pool directory or volume file into the project (`vmctl import`).
    Import {
        project: String,
        order: ImportOrder,
    },
    /// The next run of a volume's data from `offset` (a volume moving to another host).
    ReadVolume {
        project: String,
        pool: PathBuf,
        name: String,
        offset: u64,
        /// At most this many bytes (absent: a whole chunk).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u64>,
    },
    /// One thing the host does for a VM moving to or from it.
    Migration {
        project: String,
        step: Box<MigrationCall>,
    },
    /// A `vmctl snapshot` command on one of the host's VMs.
    Snapshot {
        project: String,
        command: Box<SnapshotCall>,
    },
    /// One part of receiving a volume from another host.
    ReceiveVolume {
        project: String,
        pool: PathBuf,
        name: String,
        part: Box<ReceivePart>,
    },
}

/// A host's answer to one [`Call`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "answer",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum Answer {
    Opened,
    Facts {
        facts: Box<HostFacts>,
    },
    Locked,
    Unlocked,
    Swept,
    Ran {
        note: Option<StepNote>,
    },
    Cancelled,
    Tidied,
    Image {
        path: Option<PathBuf>,
    },
    /// The import's outcome: the path adopted, or why not (whole, for its help).
    Imported {
        outcome: Result<PathBuf, ImportError>,
    },
    Chunk {
        chunk: Box<Chunk>,
    },
    Received,
    Migration {
        outcome: Box<MigrationAnswer>,
    },
    /// The snapshot command's answer, or its failure (whole, for its help).
    Snapshot {
        outcome: Box<Result<SnapshotAnswer, SnapshotFailure>>,
    },
    Failed {
        error: WireError,
    },
}

/// An error as it crosses the wire: its text with every cause, and what the caller
/// acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct WireError {
    pub message: String,
    /// The lock is held by another vmctl.
    #[serde(default)]
    pub held: Option<HeldBy>,
}

/// Who holds a host lock, as [`LockError::Held`] says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HeldBy {
    pub path: PathBuf,
    pub pid: Option<u32>,
    /// The holder is the host's kept agent, for another command connected to it.
    #[serde(default)]
    pub kept_agent: bool,
    pub waited_ms: u64,
}

impl WireError {
    /// `error` and its causes, one clause each.
    pub fn of(error: &dyn std::error::Error) -> WireError {
        WireError {
            message: chain(error),
            held: None,
        }
    }

    fn of_lock(error: &LockError) -> WireError {
        let held = match error {
            LockError::Held {
                path,
                pid,
                kept_agent,
                waited,
            } => Some(HeldBy {
                path: path.clone(),
                pid: *pid,
                kept_agent: *kept_agent,
                waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            }),
            _ => None,
        };
        WireError {
            held,
            ..WireError::of(error)
        }
    }

    /// The lock error this stands for: [`LockError::Held`] when it is one.
    pub fn into_lock_error(self) -> LockError {
        match self.held {
            Some(h) => LockError::Held {
                path: h.path,
                pid: h.pid,
                kept_agent: h.kept_agent,
                waited: Duration::from_millis(h.waited_ms),
            },
            None => LockError::Remote {
                message: self.message,
            },
        }
    }
}

/// `error` and its causes, one clause each (a cause already in the text is skipped).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Answers calls on this machine, for one run: the agent's side.
pub struct Served {
    host: Mutex<Option<LocalHost>>,
    vmctl: PathBuf,
    locks: Mutex<HashMap<String, HeldLock>>,
    cancel: AtomicBool,
}

impl Served {
    /// Serves calls, running VMs with `vmctl` (the agent's own binary).
    pub fn new(vmctl: PathBuf) -> Served {
        Served {
            host: Mutex::new(None),
            vmctl,
            locks: Mutex::new(HashMap::new()),
            cancel: AtomicBool::new(false),
        }
    }

    fn host(&self) -> Result<LocalHost, WireError> {
        let host = self.host.lock().ok().and_then(|h| h.clone());
        host.ok_or_else(|| WireError {
            message: "the agent was not told which host it is (no `open` call first)".into(),
            held: None,
        })
    }

    /// The answer to `call`. Calls may come from several threads at once (steps of one
    /// host run in parallel).
    pub fn answer(&self, call: Call) -> Answer {
        match self.try_answer(call) {
            Ok(answer) => answer,
            Err(error) => Answer::Failed { error },
        }
    }

    fn try_answer(&self, call: Call) -> Result<Answer, WireError> {
        Ok(match call {
            Call::Open {
                host,
                state_dir,
                netns,
            } => {
                let local = LocalHost::at(&host, &state_dir, netns.as_deref(), &self.vmctl);
                if let Ok(mut slot) = self.host.lock() {
                    *slot = Some(local);
                }
                Answer::Opened
            }
            Call::Facts { request } => {
                let facts = self
                    .host()?
                    .facts(&request)
                    .map_err(|e| WireError::of(&e))?;
                Answer::Facts {
                    facts: Box::new(facts),
                }
            }
            Call::Lock {
                project,
                timeout_ms,
                origin,
            } => {
                let held = self
                    .host()?
                    .lock(
                        &project,
                        origin.as_deref(),
                        Duration::from_millis(timeout_ms),
                    )
                    .map_err(|e| WireError::of_lock(&e))?;
                if let Ok(mut locks) = self.locks.lock() {
                    locks.insert(project, held);
                }
                Answer::Locked
            }
            Call::Unlock { project } => {
                if let Ok(mut locks) = self.locks.lock() {
                    locks.remove(&project);
                }
                Answer::Unlocked
            }
            Call::Sweep { project, pools } => {
                self.host()?.sweep(&project, &pools);
                Answer::Swept
            }
            Call::Run {
                project,
                order,
                stop_timeout_ms,
            } => {
                let settings = RunSettings {
                    stop_timeout: Duration::from_millis(stop_timeout_ms),
                    cancel: &self.cancel,
                };
                let note = self
                    .host()?
                    .run(&project, &order, &settings)
                    .map_err(|e| WireError::of(&e))?;
                Answer::Ran { note }
            }
            Call::Cancel => {
                self.cancel.store(true, Ordering::SeqCst);
                Answer::Cancelled
            }
            Call::Tidy { project } => {
                self.host()?.tidy(&project);
                Answer::Tidied
            }
            Call::Image { sha256 } => {
                let path = crate::host::image_cache::lookup(self.host()?.state_dir(), &sha256)
                    .map_err(|e| WireError::of(&e))?;
                Answer::Image { path }
            }
            Call::Import { project, order } => Answer::Imported {
                outcome: self.host()?.import(&project, &order),
            },
            Call::ReadVolume {
                project,
                pool,
                name,
                offset,
                max,
            } => {
                let max = max.unwrap_or(crate::host::volume_transfer::CHUNK);
                let chunk = self
                    .host()?
                    .read_volume(&project, &pool, &name, offset, max)
                    .map_err(|e| WireError::of(&e))?;
                Answer::Chunk {
                    chunk: Box::new(chunk),
                }
            }
            Call::Migration { project, step } => {
                let outcome = self
                    .host()?
                    .migration(&project, &step)
                    .map_err(|e| WireError::of(&e))?;
                Answer::Migration {
                    outcome: Box::new(outcome),
                }
            }
            Call::Snapshot { project, command } => {
                let outcome = self
                    .host()?
                    .snapshot(&project, &command)
                    .map_err(|e| WireError::of(&e))?;
                Answer::Snapshot {
                    outcome: Box::new(outcome),
                }
            }
            Call::ReceiveVolume {
                project,
                pool,
                name,
                part,
            } => {
                self.host()?
                    .receive_volume(&project, &pool, &name, &part)
                    .map_err(|e| WireError::of(&e))?;
                Answer::Received
            }
        })
    }
}

/// A failed answer as the caller's error types say it.
impl From<WireError> for FactsError {
    fn from(e: WireError) -> FactsError {
        FactsError::Remote { message: e.message }
    }
}

impl From<WireError> for StepError {
    fn from(e: WireError) -> StepError {
        StepError::Remote { message: e.message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmctl_planner::facts::FACTS_FORMAT;

    fn served() -> (tempfile::TempDir, Served) {
        let state = tempfile::tempdir().unwrap();
        let served = Served::new("/nonexistent/vmctl".into());
        let opened = served.answer(Call::Open {
            host: "far".into(),
            state_dir: state.path().to_owned(),
            netns: None,
        });
        assert_eq!(opened, Answer::Opened);
        (state, served)
    }

    #[test]
    fn calls_and_answers_round_trip_as_json() {
        let call = Call::Lock {
            project: "lab".into(),
            timeout_ms: 500,
            origin: None,
        };
        let json = serde_json::to_string(&call).unwrap();
        assert_eq!(json, r#"{"call":"lock","project":"lab","timeout-ms":500}"#);
        assert_eq!(serde_json::from_str::<Call>(&json).unwrap(), call);
        let answer = Answer::Failed {
            error: WireError {
                message: "boom".into(),
                held: None,
            },
        };
        let json = serde_json::to_string(&answer).unwrap();
        assert_eq!(serde_json::from_str::<Answer>(&json).unwrap(), answer);
    }

    #[test]
    fn nothing_is_done_before_the_host_is_named() {
        let served = Served::new("/nonexistent/vmctl".into());
        let answer = served.answer(Call::Tidy {
            project: "lab".into(),
        });
        let Answer::Failed { error } = answer else {
            panic!("{answer:?}");
        };
        assert!(
            error.message.contains("no `open` call"),
            "{}",
            error.message
        );
    }

    #[test]
    fn an_empty_host_has_no_facts_of_the_project() {
        let (state, served) = served();
        let request = FactsRequest::new("lab", state.path(), None);
        let Answer::Facts { facts } = served.answer(Call::Facts { request }) else {
            panic!("no facts");
        };
        assert!(facts.vms.is_empty() && facts.pools.is_empty());
        assert_eq!(facts.format_version, FACTS_FORMAT);
    }

    #[test]
    fn a_facts_call_of_another_format_is_refused_saying_so() {
        let (state, served) = served();
        // A request as a vmctl of format 1 sends it: no `format-version`.
        let call = format!(
            r#"{{"call": "facts", "request": {{"project": "lab", "state-dir": {:?}}}}}"#,
            state.path()
        );
        let call: Call = serde_json::from_str(&call).unwrap();
        let Answer::Failed { error } = served.answer(call) else {
            panic!("a request of format 1 was answered");
        };
        let expected =
            format!("the request is of format 1; this vmctl speaks format {FACTS_FORMAT}");
        assert!(error.message.contains(&expected), "{}", error.message);
    }

    #[test]
    fn a_lock_is_held_until_unlocked_and_a_second_taker_hears_who_holds_it() {
        let (state, served) = served();
        let lock = Call::Lock {
            project: "lab".into(),
            timeout_ms: 0,
            origin: Some("/home/me/infra".into()),
        };
        assert_eq!(served.answer(lock.clone()), Answer::Locked);
        // The lock records where the project comes from.
        let record = std::fs::read_to_string(state.path().join("lab/project.json")).unwrap();
        assert!(
            record.contains("\"origin\": \"/home/me/infra\""),
            "{record}"
        );
        // Another run (another agent) on the same host.
        let other = Served::new("/nonexistent/vmctl".into());
        other.answer(Call::Open {
            host: "far".into(),
            state_dir: state.path().to_owned(),
            netns: None,
        });
        let Answer::Failed { error } = other.answer(lock.clone()) else {
            panic!("locked twice");
        };
        let held = error.held.clone().expect("who holds it");
        assert_eq!(held.pid, Some(std::process::id()));
        assert!(matches!(error.into_lock_error(), LockError::Held { .. }));
        assert_eq!(
            served.answer(Call::Unlock {
                project: "lab".into()
            }),
            Answer::Unlocked
        );
        assert_eq!(other.answer(lock), Answer::Locked);
    }

    #[test]
    fn the_image_cache_is_asked_by_digest() {
        use crate::host::image_cache;
        let (state, served) = served();
        let hex = crate::host::image::sha256_of(&mut &b"kernel"[..], None)
            .unwrap()
            .0;
        let ask = |sha256: &str| {
            served.answer(Call::Image {
                sha256: sha256.to_owned(),
            })
        };
        assert_eq!(ask(&hex), Answer::Image { path: None });
        let path = image_cache::receive(state.path(), &hex, &mut &b"kernel"[..]).unwrap();
        assert_eq!(ask(&hex), Answer::Image { path: Some(path) });
        assert!(matches!(ask("../etc"), Answer::Failed { .. }));
    }
}
