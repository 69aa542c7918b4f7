//! Applying a plan: [`observe`] the hosts, [`lock_hosts`] for the whole run, and
//! [`apply`] the plan's [`ApplyGraph`] — each step as soon as the steps it depends on
//! are done, at most `parallelism` at once, on worker threads fed through a channel.
//!
//! - A failed step skips every step that depends on it (transitively); the rest finish.
//! - The cancel flag (the CLI sets it on SIGINT) stops new steps from starting; running
//!   ones finish, and what never started is reported as skipped.
//! - Nothing here prints: a [`Hook`] hears each step start and end, and the CLI draws
//!   progress from it.
//!
//! Every host is reached through the run's [`Fleet`] (`crate::hosts`): a step goes to
//! its host as a [`StepOrder`] — but for the copy of a volume that moves between hosts,
//! which this machine relays between the two ([`move_volume`]).

pub mod move_vm;
pub mod move_volume;
pub mod observe;
pub mod steps;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use petgraph::graph::NodeIndex;
use vmctl_planner::{ApplyGraph, Plan, Step};
use vmctl_schema::Config;

use crate::host::lock::LockError;
use crate::hosts::{Fleet, HeldLock, RunSettings};

pub use observe::{observe, observe_detailed, observe_host_state, HostSeen, LiveError};
pub use steps::{HostContext, Inventory, NicPlace, Places, StepError, StepNote, StepOrder};

/// Errors that stop an apply before it starts.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot take the lock of host {host:?}")]
    Lock {
        host: String,
        #[source]
        source: LockError,
    },
    #[error("the plan names host {host:?}, which the config does not have")]
    UnknownHost { host: String },
}

/// Hears each step as it starts and ends (called from the thread running [`apply`]),
/// and how a long step goes (called from the thread running it).
pub trait Hook: Sync {
    fn pre_apply(&self, step: &Step);
    fn post_apply(&self, step: &Step, result: &Result<(), StepError>);
    /// How step `step` goes, while it runs.
    fn progress(&self, _step: &Step, _what: &StepProgress) {}
}

/// How a running step goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum StepProgress {
    /// A live migration's pre-copy round `round` is sent (the guest runs):
    /// `sent_bytes` so far, the guest writing `dirty_bytes_per_s`, and the pause
    /// expected if it were paused now.
    Migration {
        round: u32,
        sent_bytes: u64,
        dirty_bytes_per_s: u64,
        expected_pause_ms: u64,
    },
}

/// A hook that hears nothing.
pub struct NoHook;

impl Hook for NoHook {
    fn pre_apply(&self, _: &Step) {}
    fn post_apply(&self, _: &Step, _: &Result<(), StepError>) {}
}

/// How to apply.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// Steps running at once: per host, and hosts at once.
    pub parallelism: Parallelism,
    /// How long a VM gets to shut down before it is killed.
    pub stop_timeout: Duration,
}

/// What an apply did: every actionable step is in exactly one list, in the order it
/// ended (skipped ones in graph order).
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub done: Vec<Step>,
    pub failed: Vec<(Step, StepError)>,
    pub skipped: Vec<Step>,
    /// What steps that went well had to say (a kept pool directory, a removed netns).
    pub notes: Vec<(Step, StepNote)>,
    /// True when the cancel flag stopped it early.
    pub cancelled: bool,
}

impl ApplyReport {
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty()
    }
}

/// Takes the lock of each of `hosts` (names of `fleet`'s hosts) for `config.project`,
/// waiting up to `timeout` for each.
pub fn lock_hosts(
    config: &Config,
    fleet: &Fleet,
    hosts: &[&str],
    timeout: Duration,
) -> Result<Vec<HeldLock>, ApplyError> {
    let mut locks = Vec::new();
    for name in hosts {
        let host = fleet.get(name).ok_or_else(|| ApplyError::UnknownHost {
            host: (*name).into(),
        })?;
        let held = host
            .lock(&config.project, fleet.origin(), timeout)
            .map_err(|source| ApplyError::Lock {
                host: (*name).into(),
                source,
            })?;
        locks.push(held);
    }
    Ok(locks)
}

/// After a complete `destroy`: removes the project's empty `vms/` and `pools/` dirs
/// under each host's state dir. The lock file stays (it is what the next vmctl locks;
/// unlinking a held flock file would let two processes hold "the" lock).
pub fn tidy_after_destroy(config: &Config, fleet: &Fleet) {
    for host in fleet.iter() {
        host.tidy(&config.project);
    }
}

/// Whether this runtime can move a running VM between hosts (a plan's VM `migrate`
/// step, [`move_vm`]): it can, pre-copy ([`vmctl_planner::PlanOptions::live_migration`]).
pub const LIVE_MIGRATION: bool = true;

/// Carries out `graph` (built from `plan`) on the hosts of `fleet`. The caller holds
/// the hosts' locks ([`lock_hosts`]).
pub fn apply(
    config: &Config,
    fleet: &Fleet,
    plan: &Plan,
    graph: &ApplyGraph,
    options: ApplyOptions,
    hook: &dyn Hook,
    cancel: &AtomicBool,
) -> Result<ApplyReport, ApplyError> {
    for step in graph.graph.node_weights() {
        if fleet.get(&step.host).is_none() {
            return Err(ApplyError::UnknownHost {
                host: step.host.clone(),
            });
        }
    }
    let project = config.project.as_str();
    let inventory = Inventory::of(plan);
    // What an interrupted apply left (orphan taps; temp and partial files in the plan's
    // pools), before anything else touches the hosts.
    for host in fleet.iter() {
        if graph.graph.node_weights().any(|s| s.host == host.name()) {
            let pools: Vec<PathBuf> = inventory
                .pool_paths()
                .into_iter()
                .filter(|(h, _)| *h == host.name())
                .map(|(_, path)| path.to_owned())
                .collect();
            host.sweep(project, &pools);
        }
    }
    let settings = RunSettings {
        stop_timeout: options.stop_timeout,
        cancel,
    };
    let run = |step: &Step| {
        if let Some(copy) = move_volume::VolumeMove::of(fleet, &inventory, plan, step)? {
            return copy.run(project, cancel);
        }
        if let Some(moving) = move_vm::VmMove::of(fleet, &inventory, plan, step)? {
            return moving.run(project, &settings, &|p| hook.progress(step, p));
        }
        let host = fleet.get(&step.host).ok_or_else(|| StepError::Empty {
            step: step.to_string(),
        })?;
        let mut order = StepOrder::of(&inventory, plan, step)?;
        crate::hosts::ship_files(host, &mut order)?;
        host.run(project, &order, &settings)
    };
    Ok(schedule(graph, options.parallelism, &run, hook, cancel))
}

/// How many steps run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallelism {
    /// Steps at once on one host (at least 1).
    pub per_host: usize,
    /// Hosts with steps running at once (at least 1).
    pub hosts: usize,
}

/// The steps ready to run, a queue per host, each in the graph's stable order.
struct Ready<'g> {
    queues: BTreeMap<&'g str, VecDeque<NodeIndex>>,
    running: BTreeMap<&'g str, usize>,
}

impl<'g> Ready<'g> {
    fn push(&mut self, host: &'g str, n: NodeIndex, rank: &[usize]) {
        insert_in_order(self.queues.entry(host).or_default(), n, rank);
    }

    /// The ready step that comes first in the graph's order among the hosts that may
    /// start one more: fewer than `per_host` running there, and the host already busy
    /// or fewer than `hosts` hosts busy.
    fn pop(&mut self, limits: Parallelism, rank: &[usize]) -> Option<(&'g str, NodeIndex)> {
        let busy = self.running.values().filter(|&&r| r > 0).count();
        let (host, _) = self
            .queues
            .iter()
            .filter_map(|(host, queue)| Some((*host, *queue.front()?)))
            .filter(|(host, _)| {
                let running = self.running.get(host).copied().unwrap_or(0);
                running < limits.per_host && (running > 0 || busy < limits.hosts)
            })
            .min_by_key(|(_, n)| rank[n.index()])?;
        let n = self.queues.get_mut(host)?.pop_front()?;
        *self.running.entry(host).or_default() += 1;
        Some((host, n))
    }

    fn finished(&mut self, host: &str) {
        if let Some(r) = self.running.get_mut(host) {
            *r = r.saturating_sub(1);
        }
    }
}

/// Runs the steps of `graph` in dependency order: at most `limits.per_host` at once on
/// a host, on at most `limits.hosts` hosts at once.
fn schedule(
    graph: &ApplyGraph,
    limits: Parallelism,
    run: &(dyn Fn(&Step) -> Result<Option<StepNote>, StepError> + Sync),
    hook: &dyn Hook,
    cancel: &AtomicBool,
) -> ApplyReport {
    let limits = Parallelism {
        per_host: limits.per_host.max(1),
        hosts: limits.hosts.max(1),
    };
    let count = graph.graph.node_count();
    let order = graph.order();
    let mut waiting = vec![0usize; count];
    let mut rank = vec![0usize; count];
    for (position, &n) in order.iter().enumerate() {
        waiting[n.index()] = graph.dependencies(n).count();
        rank[n.index()] = position;
    }
    let host_of = |n: NodeIndex| graph.graph[n].host.as_str();
    let mut ready = Ready {
        queues: BTreeMap::new(),
        running: BTreeMap::new(),
    };
    for &n in order.iter().filter(|n| waiting[n.index()] == 0) {
        ready.push(host_of(n), n, &rank);
    }
    let host_count = graph
        .graph
        .node_weights()
        .map(|s| s.host.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let workers = (limits.per_host * limits.hosts.min(host_count.max(1))).min(count.max(1));
    let mut skipped = vec![false; count];
    let mut report = ApplyReport::default();
    let (job_tx, job_rx) = mpsc::channel::<NodeIndex>();
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let job_rx = &job_rx;
            scope.spawn(move || loop {
                let next = job_rx.lock().map(|rx| rx.recv());
                let Ok(Ok(n)) = next else { break };
                let result = run(&graph.graph[n]);
                if done_tx.send((n, result)).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        let mut running = 0usize;
        loop {
            while !cancel.load(Ordering::SeqCst) {
                let Some((_, n)) = ready.pop(limits, &rank) else {
                    break;
                };
                hook.pre_apply(&graph.graph[n]);
                if job_tx.send(n).is_err() {
                    break;
                }
                running += 1;
            }
            if running == 0 {
                break;
            }
            let Ok((n, result)) = done_rx.recv() else {
                break;
            };
            running -= 1;
            ready.finished(host_of(n));
            let result = result.map(|note| {
                if let Some(note) = note {
                    report.notes.push((graph.graph[n].clone(), note));
                }
            });
            hook.post_apply(&graph.graph[n], &result);
            match result {
                Ok(()) => {
                    report.done.push(graph.graph[n].clone());
                    for next in graph.dependents(n) {
                        waiting[next.index()] -= 1;
                        if waiting[next.index()] == 0 && !skipped[next.index()] {
                            ready.push(host_of(next), next, &rank);
                        }
                    }
                }
                Err(e) => {
                    report.failed.push((graph.graph[n].clone(), e));
                    let mut stack: Vec<_> = graph.dependents(n).collect();
                    while let Some(m) = stack.pop() {
                        if !skipped[m.index()] {
                            skipped[m.index()] = true;
                            stack.extend(graph.dependents(m));
                        }
                    }
                }
            }
        }
        drop(job_tx);
    });
    report.cancelled = cancel.load(Ordering::SeqCst);
    let finished: std::collections::HashSet<_> = report
        .done
        .iter()
        .chain(report.failed.iter().map(|(s, _)| s))
        .map(|s| (s.change, s.phase))
        .collect();
    for &n in &order {
        let step = &graph.graph[n];
        if !finished.contains(&(step.change, step.phase)) {
            report.skipped.push(step.clone());
        }
    }
    report
}

/// Puts `n` into `ready` keeping the graph's stable order (`rank`: position in it).
fn insert_in_order(ready: &mut VecDeque<NodeIndex>, n: NodeIndex, rank: &[usize]) {
    let at = ready
        .iter()
        .position(|r| rank[r.index()] > rank[n.index()])
        .unwrap_or(ready.len());
    ready.insert(at, n);
}

#[cfg(test)]
mod tests;
