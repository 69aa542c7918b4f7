//! A host vmctl reaches through a [`Link`] to an agent on it: every [`Host`] call
//! becomes a [`Call`] and its [`Answer`]. The link is whatever carries the calls (the
//! agent's stdio over SSH; in tests, the agent's code in-process through JSON).
//!
//! - The lock is the agent's: it holds it until [`Call::Unlock`] (sent when the
//!   [`HeldLock`] drops) or until the agent ends — a killed run or a dropped
//!   connection leaves no stuck lock.
//! - A run's cancel flag reaches the agent as [`Call::Cancel`], sent once by a watcher
//!   while a step runs there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmctl_planner::facts::{FactsRequest, HostFacts};

use super::wire::{Answer, Call, WireError};
use super::{HeldLock, Host, RunSettings};
use crate::apply::{StepError, StepNote, StepOrder};
use crate::host::facts::FactsError;
use crate::host::import::{ImportError, ImportOrder};
use crate::host::lock::LockError;
use crate::host::volume_transfer::{Chunk, ReceivePart};
use crate::vms::migrate::{MigrationAnswer, MigrationCall};
use crate::vms::snapshot_call::{SnapshotAnswer, SnapshotCall, SnapshotFailure};

/// Carries calls to one host's agent and brings back its answers. Calls may be made
/// from many threads at once.
pub trait Link: Send + Sync {
    fn call(&self, call: &Call) -> Result<Answer, LinkError>;

    /// Copies the file at `path` on this machine into the host's image cache (once per
    /// content: a copy already there is not sent again); its path on the host.
    fn ship(&self, path: &Path) -> Result<PathBuf, LinkError>;

    /// Whether [`Link::ship`] would send the file at `path`: its size when so.
    fn lacks(&self, path: &Path) -> Result<Option<u64>, LinkError>;

    /// The command that shows VM `vm`'s console on the host (`vmctl agent console`),
    /// its stdio the caller's; `tty` when a user's terminal is to be carried.
    fn console(&self, project: &str, vm: &str, view: &ConsoleView, tty: bool) -> Option<Command>;
}

/// Which console of a VM: attached, or its log's last lines and/or followed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsoleView {
    pub lines: Option<u64>,
    pub follow: bool,
}

/// Why a call got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    #[error("the connection to the agent is gone: {reason}")]
    Gone { reason: String },
    #[error("the agent answered {answer} to a {call} call")]
    Unexpected { call: String, answer: String },
}

/// A host reached through its agent.
pub struct RemoteHost {
    name: String,
    link: Arc<dyn Link>,
    /// What this run shipped: a file's path here → its copy's path there.
    shipped: Mutex<HashMap<PathBuf, PathBuf>>,
}

/// How often a running step's watcher looks at the cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(100);

impl RemoteHost {
    pub fn new(name: &str, link: Arc<dyn Link>) -> RemoteHost {
        RemoteHost {
            name: name.to_owned(),
            link,
            shipped: Mutex::new(HashMap::new()),
        }
    }

    /// The answer to `call`, a failed one as the error it carries.
    fn ask(&self, call: &Call) -> Result<Answer, Failure> {
        match self.link.call(call)? {
            Answer::Failed { error } => Err(Failure::Host(error)),
            answer => Ok(answer),
        }
    }
}

/// A call that failed: on the way, or on the host.
enum Failure {
    Link(LinkError),
    Host(WireError),
}

impl From<LinkError> for Failure {
    fn from(e: LinkError) -> Failure {
        Failure::Link(e)
    }
}

impl Failure {
    fn message(self) -> String {
        match self {
            Failure::Link(e) => e.to_string(),
            Failure::Host(e) => e.message,
        }
    }
}

fn unexpected(call: &str, answer: &Answer) -> String {
    LinkError::Unexpected {
        call: call.to_owned(),
        answer: format!("{answer:?}"),
    }
    .to_string()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Unlocks the agent's lock when dropped.
struct RemoteLock {
    link: Arc<dyn Link>,
    project: String,
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        // Best effort: an agent that is gone holds no lock any more.
        let _ = self.link.call(&Call::Unlock {
            project: self.project.clone(),
        });
    }
}

impl Host for RemoteHost {
    fn console_command(
        &self,
        project: &str,
        vm: &str,
        view: &ConsoleView,
        tty: bool,
    ) -> Option<Command> {
        self.link.console(project, vm, view, tty)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn facts(&self, request: &FactsRequest) -> Result<HostFacts, FactsError> {
        let call = Call::Facts {
            request: request.clone(),
        };
        match self.ask(&call) {
            Ok(Answer::Facts { facts }) => crate::host::facts::check_answer(*facts),
            Ok(other) => Err(FactsError::Remote {
                message: unexpected("facts", &other),
            }),
            Err(f) => Err(FactsError::Remote {
                message: f.message(),
            }),
        }
    }

    fn lock(
        &self,
        project: &str,
        origin: Option<&Path>,
        timeout: Duration,
    ) -> Result<HeldLock, LockError> {
        let call = Call::Lock {
            project: project.to_owned(),
            timeout_ms: millis(timeout),
            origin: origin.map(Path::to_owned),
        };
        match self.ask(&call) {
            Ok(Answer::Locked) => Ok(HeldLock::new(RemoteLock {
                link: Arc::clone(&self.link),
                project: project.to_owned(),
            })),
            Ok(other) => Err(LockError::Remote {
                message: unexpected("lock", &other),
            }),
            Err(Failure::Host(e)) => Err(e.into_lock_error()),
            Err(f) => Err(LockError::Remote {
                message: f.message(),
            }),
        }
    }

    fn sweep(&self, project: &str, pools: &[PathBuf]) {
        let _ = self.ask(&Call::Sweep {
            project: project.to_owned(),
            pools: pools.to_vec(),
        });
    }

    fn run(
        &self,
        project: &str,
        order: &StepOrder,
        run: &RunSettings<'_>,
    ) -> Result<Option<StepNote>, StepError> {
        let call = Call::Run {
            project: project.to_owned(),
            order: Box::new(order.clone()),
            stop_timeout_ms: millis(run.stop_timeout),
        };
        let done = std::sync::atomic::AtomicBool::new(false);
        let answer = std::thread::scope(|scope| {
            // Ctrl-C during a long step (an image copy) reaches the agent.
            scope.spawn(|| {
                while !done.load(Ordering::SeqCst) {
                    if run.cancel.load(Ordering::SeqCst) {
                        let _ = self.link.call(&Call::Cancel);
                        return;
                    }
                    std::thread::sleep(CANCEL_POLL);
                }
            });
            let answer = self.ask(&call);
            done.store(true, Ordering::SeqCst);
            answer
        });
        match answer {
            Ok(Answer::Ran { note }) => Ok(note),
            Ok(other) => Err(StepError::Remote {
                message: unexpected("run", &other),
            }),
            Err(f) => Err(StepError::Remote {
                message: f.message(),
            }),
        }
    }

    fn import(&self, project: &str, order: &ImportOrder) -> Result<PathBuf, ImportError> {
        let call = Call::Import {
            project: project.to_owned(),
            order: order.clone(),
        };
        match self.ask(&call) {
            Ok(Answer::Imported { outcome }) => outcome,
            Ok(other) => Err(ImportError::Host {
                message: unexpected("import", &other),
            }),
            Err(f) => Err(ImportError::Host {
                message: f.message(),
            }),
        }
    }

    fn read_volume(
        &self,
        project: &str,
        pool: &Path,
        name: &str,
        offset: u64,
        max: u64,
    ) -> Result<Chunk, StepError> {
        let call = Call::ReadVolume {
            project: project.to_owned(),
            pool: pool.to_owned(),
            name: name.to_owned(),
            offset,
            max: Some(max),
        };
        match self.ask(&call) {
            Ok(Answer::Chunk { chunk }) => Ok(*chunk),
            Ok(other) => Err(StepError::Remote {
                message: unexpected("read-volume", &other),
            }),
            Err(f) => Err(StepError::Remote {
                message: f.message(),
            }),
        }
    }

    fn snapshot(
        &self,
        project: &str,
        call: &SnapshotCall,
    ) -> Result<Result<SnapshotAnswer, SnapshotFailure>, StepError> {
        let call = Call::Snapshot {
            project: project.to_owned(),
            command: Box::new(call.clone()),
        };
        match self.ask(&call) {
            Ok(Answer::Snapshot { outcome }) => Ok(*outcome),
            Ok(other) => Err(StepError::Remote {
                message: unexpected("snapshot", &other),
            }),
            Err(f) => Err(StepError::Remote {
                message: f.message(),
            }),
        }
    }

    fn migration(&self, project: &str, call: &MigrationCall) -> Result<MigrationAnswer, StepError> {
        let call = Call::Migration {
            project: project.to_owned(),
            step: Box::new(call.clone()),
        };
        match self.ask(&call) {
            Ok(Answer::Migration { outcome }) => Ok(*outcome),
            Ok(other) => Err(StepError::Remote {
                message: unexpected("migration", &other),
            }),
            Err(f) => Err(StepError::Remote {
                message: f.message(),
            }),
        }
    }

    fn receive_volume(
        &self,
        project: &str,
        pool: &Path,
        name: &str,
        part: &ReceivePart,
    ) -> Result<(), StepError> {
        let call = Call::ReceiveVolume {
            project: project.to_owned(),
            pool: pool.to_owned(),
            name: name.to_owned(),
            part: Box::new(part.clone()),
        };
        match self.ask(&call) {
            Ok(Answer::Received) => Ok(()),
            Ok(other) => Err(StepError::Remote {
                message: unexpected("receive-volume", &other),
            }),
            Err(f) => Err(StepError::Remote {
                message: f.message(),
            }),
        }
    }

    fn tidy(&self, project: &str) {
        let _ = self.ask(&Call::Tidy {
            project: project.to_owned(),
        });
    }

    fn lacks(&self, path: &Path) -> Result<Option<u64>, StepError> {
        if self.shipped.lock().is_ok_and(|s| s.contains_key(path)) {
            return Ok(None);
        }
        self.link.lacks(path).map_err(|e| StepError::Ship {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    fn ship(&self, path: &Path) -> Result<Option<PathBuf>, StepError> {
        if let Some(there) = self.shipped.lock().ok().and_then(|s| s.get(path).cloned()) {
            return Ok(Some(there));
        }
        let there = self.link.ship(path).map_err(|e| StepError::Ship {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if let Ok(mut shipped) = self.shipped.lock() {
            shipped.insert(path.to_owned(), there.clone());
        }
        Ok(Some(there))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::wire::Served;
    use std::sync::atomic::AtomicBool;

    /// The agent's code in-process, every call and answer through JSON as on the wire.
    struct Loopback(Served);

    impl Link for Loopback {
        fn call(&self, call: &Call) -> Result<Answer, LinkError> {
            let gone = |e: serde_json::Error| LinkError::Gone {
                reason: e.to_string(),
            };
            let call: Call =
                serde_json::from_str(&serde_json::to_string(call).map_err(gone)?).map_err(gone)?;
            let answer = self.0.answer(call);
            serde_json::from_str(&serde_json::to_string(&answer).map_err(gone)?).map_err(gone)
        }

        fn ship(&self, path: &Path) -> Result<PathBuf, LinkError> {
            Err(LinkError::Gone {
                reason: format!("the loopback ships nothing ({})", path.display()),
            })
        }

        fn console(&self, _: &str, _: &str, _: &ConsoleView, _: bool) -> Option<Command> {
            None
        }

        fn lacks(&self, _: &Path) -> Result<Option<u64>, LinkError> {
            Ok(None)
        }
    }

    fn remote(state: &std::path::Path) -> RemoteHost {
        let served = Served::new("/nonexistent/vmctl".into());
        served.answer(Call::Open {
            host: "far".into(),
            state_dir: state.to_owned(),
            netns: None,
        });
        RemoteHost::new("far", Arc::new(Loopback(served)))
    }

    #[test]
    fn a_remote_host_answers_like_a_local_one() {
        let state = tempfile::tempdir().unwrap();
        let pools = tempfile::tempdir().unwrap();
        let host = remote(state.path());
        let facts = host
            .facts(&FactsRequest::new("lab", state.path(), None))
            .unwrap();
        assert!(facts.pools.is_empty());
        // A pool made through the agent is then among its facts.
        let order = StepOrder {
            step: "create pool.fast".into(),
            phase: vmctl_planner::Phase::Create,
            resource: vmctl_planner::Resource::Pool(vmctl_schema::Pool {
                name: "fast".into(),
                host: "far".into(),
                kind: vmctl_schema::PoolKind::Dir,
                path: pools.path().join("fast"),
            }),
            keep: None,
            places: Default::default(),
        };
        let cancel = AtomicBool::new(false);
        let settings = RunSettings {
            stop_timeout: Duration::ZERO,
            cancel: &cancel,
        };
        assert_eq!(host.run("lab", &order, &settings).unwrap(), None);
        let facts = host
            .facts(&FactsRequest::new("lab", state.path(), None))
            .unwrap();
        let names: Vec<_> = facts.pools.iter().map(|p| &p.name).collect();
        assert_eq!(names, ["fast"]);
        // A step the host refuses comes back as a step error with the host's words.
        let start_a_pool = StepOrder {
            step: "start pool.fast".into(),
            phase: vmctl_planner::Phase::Start,
            ..order
        };
        let err = host.run("lab", &start_a_pool, &settings).unwrap_err();
        assert!(err.to_string().contains("only a VM can do"), "{err}");
    }

    #[test]
    fn the_agents_lock_is_released_when_the_held_lock_drops() {
        let state = tempfile::tempdir().unwrap();
        let host = remote(state.path());
        let other = remote(state.path());
        let held = host.lock("lab", None, Duration::ZERO).unwrap();
        let err = other.lock("lab", None, Duration::ZERO).unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err}");
        drop(held);
        assert!(other.lock("lab", None, Duration::ZERO).is_ok());
    }
}
