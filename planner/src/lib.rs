//! vmctl's planner: the config (what should be) against the [`LiveState`] of each host
//! (what is: what the host reports, [`facts::HostFacts`], matched to the config by
//! [`matching`]), as a [`Plan`] of [`Change`]s and an [`ApplyGraph`] of their steps, rendered
//! for people ([`render::human`]), machines ([`render::json`]) and Graphviz
//! ([`render::dot`]), and saved with fingerprints ([`saved`]) so a stale plan is refused.
//!
//! Pure: no I/O, no printing. Everything here works on values the caller passes in.

pub mod action;
pub mod capacity;
pub mod dhcp;
pub mod diff;
pub mod facts;
pub mod firewall;
pub mod graph;
pub mod ipam;
pub mod live;
pub mod matching;
pub mod plan;
pub mod record;
pub mod render;
pub mod saved;
pub mod spanning;
pub mod target;

use std::collections::HashSet;

use miette::Diagnostic;
use thiserror::Error;
use vmctl_schema::Config;

pub use action::{Action, Effect, Reason, ResourceId, ResourceKind};
pub use diff::DiffError;
pub use graph::{happens_before, ApplyGraph, GraphError, Phase, Step};
pub use live::{LiveFile, LiveState, VmStatus};
pub use plan::{AttrChange, Change, HostVlan, Plan, Resource, Summary, Tunnel};
pub use saved::{Fingerprint, SavedPlan, SavedPlanError};
pub use target::TargetError;

/// What to plan beyond "make the hosts match the config".
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `--target`: only these resources and what they need.
    pub targets: Vec<String>,
    /// `--replace`: replace these even when nothing forces it.
    pub replace: Vec<String>,
    /// Plan the deletion of everything of the project (`vmctl destroy`).
    pub destroy: bool,
    /// `--exclude-host`: plan nothing on these hosts (their live state is not needed).
    pub exclude_hosts: Vec<String>,
    /// Whether the runtime can move a running VM between hosts (`migrate`); without it a
    /// VM whose host changes is stopped there and started here, its volumes copied.
    pub live_migration: bool,
}

/// One reason a plan cannot be made.
#[derive(Debug, Error, Diagnostic, PartialEq)]
pub enum PlanError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Diff(#[from] DiffError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Capacity(#[from] capacity::CapacityError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Ipam(#[from] ipam::IpamError),
}

/// Every reason a plan cannot be made, reported together.
#[derive(Debug, Error, Diagnostic, PartialEq)]
#[error("no plan: {} error{}", errors.len(), if errors.len() == 1 { "" } else { "s" })]
#[diagnostic(code(vmctl::plan::failed))]
pub struct PlanErrors {
    #[related]
    pub errors: Vec<PlanError>,
}

impl<E: Into<PlanError>> From<Vec<E>> for PlanErrors {
    fn from(errors: Vec<E>) -> Self {
        PlanErrors {
            errors: errors.into_iter().map(Into::into).collect(),
        }
    }
}

/// A plan and its apply graph. The graph is built once, and its steps index the
/// changes of this plan (in the order it has), never those of an earlier one.
#[derive(Debug, Clone)]
pub struct Planned {
    pub plan: Plan,
    pub graph: ApplyGraph,
}

/// Plans `config` against the live state of its hosts. The plan's actionable changes come
/// in apply order, then its no-ops. Every NIC on a VLAN with a subnet has its address in
/// the plan ([`ipam`]).
pub fn plan(config: &Config, live: &LiveFile, options: &PlanOptions) -> Result<Plan, PlanErrors> {
    planned(config, live, options).map(|planned| planned.plan)
}

/// [`plan`], with the apply graph of the plan it returns.
pub fn planned(
    config: &Config,
    live: &LiveFile,
    options: &PlanOptions,
) -> Result<Planned, PlanErrors> {
    let known = if options.targets.is_empty() && options.replace.is_empty() {
        HashSet::new()
    } else {
        known_resources(config, live)
    };
    let mut errors: Vec<PlanError> = Vec::new();
    let mut resolve = |names: &[String], flag| {
        target::resolve(names, &known, flag).unwrap_or_else(|e| {
            errors.extend(e.into_iter().map(PlanError::from));
            HashSet::new()
        })
    };
    let forced = resolve(&options.replace, target::Flag::Replace);
    let targets = resolve(&options.targets, target::Flag::Target);
    errors.extend(
        target::check_hosts(config, &options.exclude_hosts)
            .into_iter()
            .map(PlanError::from),
    );
    if !options.destroy {
        let over = capacity::check(config, live);
        errors.extend(over.into_iter().map(PlanError::from));
    }
    let addresses = if options.destroy {
        ipam::Addresses::default()
    } else {
        ipam::allocate_excluding(config, live, &options.exclude_hosts).unwrap_or_else(|e| {
            errors.extend(e.into_iter().map(PlanError::from));
            ipam::Addresses::default()
        })
    };
    if !errors.is_empty() {
        return Err(PlanErrors { errors });
    }
    let mut changes = diff::diff(config, &addresses, live, &forced, options.destroy)?;
    if !options.exclude_hosts.is_empty() {
        changes.retain(|c| !options.exclude_hosts.contains(&c.host));
    }
    diff::plan_moves(&mut changes, live, options.live_migration);
    diff::resume_paused(&mut changes, live);
    diff::cascade(&mut changes);
    diff::restart_on_new_disks(&mut changes);
    if !options.targets.is_empty() {
        changes = target::restrict(changes, &targets);
    }
    let mut protected = diff::check_prevent_destroy(&changes);
    protected.extend(diff::check_moves(&changes));
    if !protected.is_empty() {
        return Err(protected.into());
    }
    let plan = Plan {
        project: config.project.clone(),
        changes,
    };
    let graph = ApplyGraph::build(&plan).map_err(|e| PlanErrors::from(vec![e]))?;
    Ok(in_apply_order(plan, graph))
}

/// Every resource the config names or the project has on the config's hosts.
fn known_resources(config: &Config, live: &LiveFile) -> HashSet<ResourceId> {
    use ResourceKind::*;
    let mut known = HashSet::new();
    let mut add = |kind, name: &str| {
        known.insert(ResourceId::new(kind, name));
    };
    config.pools.iter().for_each(|r| add(Pool, &r.name));
    config.networks.iter().for_each(|r| add(Network, &r.name));
    config.volumes.iter().for_each(|r| add(Volume, &r.name));
    config.vlans.iter().for_each(|r| add(Vlan, &r.name));
    let servers = config.vlans.iter().filter(|r| r.dhcp);
    servers.for_each(|r| add(Dhcp, &r.name));
    config.vms.iter().for_each(|r| add(Vm, &r.name));
    let project = config.project.as_str();
    for host in &config.hosts {
        let state = live.host(&host.name);
        host.netns.iter().for_each(|n| add(Netns, n));
        let mine = |p: &str| p == project;
        let pools = state.pools.iter().filter(|r| mine(&r.project));
        pools.for_each(|r| add(Pool, &r.name));
        let networks = state.networks.iter().filter(|r| mine(&r.project));
        networks.for_each(|r| add(Network, &r.name));
        let volumes = state.volumes.iter().filter(|r| mine(&r.project));
        volumes.for_each(|r| add(Volume, &r.name));
        let vlans = state.vlans.iter().filter(|r| mine(&r.project));
        vlans.for_each(|r| add(Vlan, &r.name));
        let vms = state.vms.iter().filter(|r| mine(&r.project));
        vms.for_each(|r| add(Vm, &r.name));
        let servers = state.dhcp.iter().filter(|r| mine(&r.project));
        servers.for_each(|r| add(Dhcp, &r.name));
    }
    known
}

/// Reorders the changes: actionable ones by the first of their steps in the graph's
/// order, then the no-ops in config order; the graph's steps are renumbered to match.
fn in_apply_order(plan: Plan, mut graph: ApplyGraph) -> Planned {
    let mut rank = vec![usize::MAX; plan.changes.len()];
    for (position, node) in graph.order().into_iter().enumerate() {
        let change = graph.graph[node].change;
        rank[change] = rank[change].min(position);
    }
    // Sort indices, not changes: a change is large and moving it is the cost.
    let mut order: Vec<usize> = (0..plan.changes.len()).collect();
    order.sort_by_key(|&i| (rank[i], i));
    let mut position = vec![0; order.len()];
    for (new, &old) in order.iter().enumerate() {
        position[old] = new;
    }
    for step in graph.graph.node_weights_mut() {
        step.change = position[step.change];
    }
    let mut slots: Vec<Option<Change>> = plan.changes.into_iter().map(Some).collect();
    let plan = Plan {
        project: plan.project,
        changes: order.into_iter().filter_map(|i| slots[i].take()).collect(),
    };
    Planned { plan, graph }
}

#[cfg(test)]
mod testdata;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::quickstart;

    /// Every step of the returned graph names a change of the returned plan, and the
    /// graph is the one its plan builds (same steps, same edges).
    #[test]
    fn the_graph_is_of_the_plan_returned() {
        let config = quickstart();
        let mut live = LiveFile::applied(&config);
        // Changes in an order that the apply order differs from.
        let state = live.hosts.get_mut("local").expect("local");
        state.vms.clear();
        state.volumes.clear();
        let options = PlanOptions {
            replace: vec!["pool.fast".into()],
            ..PlanOptions::default()
        };
        let Planned { plan, graph } = planned(&config, &live, &options).expect("plan");
        let rebuilt = ApplyGraph::build(&plan).expect("graph");
        let steps = |g: &ApplyGraph| {
            let mut steps: Vec<Step> = g.graph.node_weights().cloned().collect();
            steps.sort_by_key(|s| (s.change, s.phase));
            steps
        };
        assert_eq!(steps(&graph), steps(&rebuilt));
        for step in graph.graph.node_weights() {
            let change = &plan.changes[step.change];
            assert_eq!((&change.host, &change.id), (&step.host, &step.id));
        }
        let edges = |g: &ApplyGraph| {
            let mut edges: Vec<(String, String)> = g
                .graph
                .raw_edges()
                .iter()
                .map(|e| {
                    let name = |n: petgraph::graph::NodeIndex| {
                        format!("{} {}", g.graph[n], g.graph[n].change)
                    };
                    (name(e.source()), name(e.target()))
                })
                .collect();
            edges.sort();
            edges
        };
        assert_eq!(edges(&graph), edges(&rebuilt));
        assert!(edges(&graph).len() > 3);
    }
}
