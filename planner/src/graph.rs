//! The apply graph: the plan's actions as steps, with an edge `a → b` when `a` must finish
//! before `b` starts. It is built from the plan (its changes' `before` and `after`), never
//! from the config, so a saved plan applies exactly as it was shown.
//!
//! Steps and edges:
//! - `create`, `update`, `delete`, `start`, `stop` are one step each; a `replace` is two,
//!   a delete step and a create step with an edge between them. Two steps, not one, because
//!   the two phases sit at different places in the order: a replaced VM on a replaced
//!   volume must go `delete vm → delete volume → create volume → create vm`, which no
//!   single node per resource can express without a cycle or needless serialization.
//! - "Bringing up" steps (create, update, start) follow the bringing-up steps of what
//!   their resource needs (by `after`) on the same host: a VM after its volumes, VLANs
//!   and `depends-on` VMs (on any host), a volume after its pool, a VLAN after its
//!   network.
//! - "Taking down" steps (delete, stop) run in reverse (by `before`): a VM's delete comes
//!   before the delete of its volumes and VLANs, a volume's before its pool's.
//!
//! - A teardown step of a resource comes before the (re)creation of what it used (by
//!   `before`): a restarted VM lets go of its old disk and taps before the volume or
//!   VLAN is made anew.
//! - A create that claims what a delete frees (a VLAN id on a network, a bridge name, a
//!   pool path, a MAC address; a NIC's address on its VLAN, on any host) follows that
//!   delete.
//!
//! - A host's netns is made before anything on that host that lives in it (networks,
//!   VLANs, VMs) is brought up, and removed after all of it is taken down (`netns`).
//! - A host's firewall is brought up before its VMs are (`firewall`).
//! - A VM's `migrate` is one step on its new host; a migrating volume's is two, made on
//!   the new host before the VM moves and deleted on the old one after; what the VM used
//!   on its old host is taken down only after it has moved (`migrate`).
//!
//! A cycle (only `depends-on` can make one) is an error naming every step of it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;

use miette::Diagnostic;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::action::{Action, ResourceId, ResourceKind};
use crate::plan::Plan;

mod firewall;
mod migrate;
mod netns;
pub use netns::lives_in_netns;

/// The host a claim holds on: its resource's, or every host (`""`) for a global one.
fn scope<'a>(host: &'a str, claim: &str) -> &'a str {
    if crate::plan::Resource::claim_is_global(claim) {
        ""
    } else {
        host
    }
}

/// What one step does to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Delete,
    Stop,
    Create,
    Update,
    Start,
    /// A running VM moves from its change's `from` host to its `host`.
    Migrate,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Delete => "delete",
            Phase::Stop => "stop",
            Phase::Create => "create",
            Phase::Update => "update",
            Phase::Start => "start",
            Phase::Migrate => "migrate",
        }
    }

    /// True for the steps that take things down, which run in reverse dependency order.
    pub fn is_teardown(self) -> bool {
        matches!(self, Phase::Delete | Phase::Stop)
    }

    /// The steps a change of `kind` by `action` is made of, in order. A VM's migrate
    /// is one step; a volume's is two: made on the new host before the VM moves, removed
    /// from the old one (the step's host is the change's `from`) after.
    pub fn of(kind: ResourceKind, action: Action) -> &'static [Phase] {
        match action {
            Action::Migrate if kind == ResourceKind::Vm => &[Phase::Migrate],
            Action::Migrate => &[Phase::Create, Phase::Delete],
            Action::NoOp => &[],
            Action::Create => &[Phase::Create],
            Action::Update => &[Phase::Update],
            Action::Replace => &[Phase::Delete, Phase::Create],
            Action::Delete => &[Phase::Delete],
            Action::Start => &[Phase::Start],
            Action::Stop => &[Phase::Stop],
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node of the apply graph: a phase of the change at `change` in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Index into `Plan::changes`.
    pub change: usize,
    pub host: String,
    pub id: ResourceId,
    pub action: Action,
    pub phase: Phase,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.phase, self.id)
    }
}

/// A graph that cannot be applied.
#[derive(Debug, Error, Diagnostic, PartialEq)]
pub enum GraphError {
    #[error("the plan has a dependency cycle: {cycle}")]
    #[diagnostic(
        code(vmctl::plan::cycle),
        help("break the cycle by removing one of its `depends-on`")
    )]
    Cycle { cycle: String },
}

/// The steps of a plan and their order.
#[derive(Debug, Clone)]
pub struct ApplyGraph {
    pub graph: DiGraph<Step, ()>,
}

impl ApplyGraph {
    /// Builds the graph of `plan`'s actionable changes; a cycle is an error.
    pub fn build(plan: &Plan) -> Result<ApplyGraph, GraphError> {
        let mut graph = DiGraph::new();
        let mut by_id: HashMap<(ResourceKind, &str), Vec<NodeIndex>> = HashMap::new();
        for (i, change) in plan.changes.iter().enumerate() {
            let mut previous = None;
            for &phase in Phase::of(change.id.kind, change.action) {
                let host = match (&change.from, phase) {
                    (Some(from), Phase::Delete) => from,
                    _ => &change.host,
                };
                let node = graph.add_node(Step {
                    change: i,
                    host: host.clone(),
                    id: change.id.clone(),
                    action: change.action,
                    phase,
                });
                let key = (change.id.kind, change.id.name.as_str());
                by_id.entry(key).or_default().push(node);
                if let Some(previous) = previous {
                    graph.add_edge(previous, node, ());
                }
                previous = Some(node);
            }
        }
        let mut edges = HashSet::new();
        for node in graph.node_indices() {
            let step = &graph[node];
            let change = &plan.changes[step.change];
            let teardown = step.phase.is_teardown();
            let resource = if teardown {
                &change.before
            } else {
                &change.after
            };
            let Some(resource) = resource else { continue };
            resource.each_need(|kind, name| {
                for &other in by_id.get(&(kind, name)).into_iter().flatten() {
                    // What a resource needs is on its own host (a VLAN that spans hosts
                    // is a change on each), but for the VMs it `depends-on`.
                    if kind != ResourceKind::Vm && graph[other].host != step.host {
                        continue;
                    }
                    if graph[other].phase.is_teardown() != teardown {
                        // A resource going away (or restarting) lets go of what it
                        // used before that is (re)created: a restarted VM's old
                        // process leaves its VLAN's taps and its disk before the VLAN
                        // or the volume is made anew. No edge leads from a bringing-up
                        // step back to a teardown step, so this adds no cycle.
                        if teardown && graph[other].phase == Phase::Create {
                            edges.insert((node, other));
                        }
                        continue;
                    }
                    edges.insert(if teardown {
                        (node, other)
                    } else {
                        (other, node)
                    });
                }
            });
        }
        // A create that claims what a delete frees (a VLAN id, a bridge name, a pool
        // path, a MAC) waits for it.
        let mut freed: HashMap<(&str, String), Vec<NodeIndex>> = HashMap::new();
        for node in graph.node_indices() {
            let step = &graph[node];
            if step.phase == Phase::Delete {
                let change = &plan.changes[step.change];
                for claim in change.before.iter().flat_map(|r| r.claims()) {
                    let host = scope(&change.host, &claim);
                    freed.entry((host, claim)).or_default().push(node);
                }
            }
        }
        if !freed.is_empty() {
            for node in graph.node_indices() {
                let step = &graph[node];
                if step.phase != Phase::Create {
                    continue;
                }
                let change = &plan.changes[step.change];
                for claim in change.after.iter().flat_map(|r| r.claims()) {
                    let host = scope(&change.host, &claim);
                    for &delete in freed.get(&(host, claim)).into_iter().flatten() {
                        // A replace's own two steps are already in order.
                        if graph[delete].change != step.change {
                            edges.insert((delete, node));
                        }
                    }
                }
            }
        }
        netns::add_edges(&graph, &mut edges);
        firewall::add_edges(&graph, &mut edges);
        migrate::add_edges(plan, &graph, &mut edges);
        let mut edges: Vec<_> = edges.into_iter().collect();
        edges.sort();
        for (a, b) in edges {
            graph.add_edge(a, b, ());
        }
        let built = ApplyGraph { graph };
        if let Err(cycle) = petgraph::algo::toposort(&built.graph, None) {
            return Err(GraphError::Cycle {
                cycle: built.describe_cycle(cycle.node_id()),
            });
        }
        Ok(built)
    }

    /// Names every step of a cycle through `start`: `start vm.a -> start vm.b -> start vm.a`.
    fn describe_cycle(&self, start: NodeIndex) -> String {
        let sccs = petgraph::algo::tarjan_scc(&self.graph);
        let component: HashSet<NodeIndex> = sccs
            .into_iter()
            .find(|c| c.contains(&start))
            .unwrap_or_else(|| vec![start])
            .into_iter()
            .collect();
        let first = start;
        // Walk inside the component until a node repeats; the repeat closes the cycle.
        let mut path = vec![first];
        let mut seen: HashMap<NodeIndex, usize> = HashMap::from([(first, 0)]);
        let mut at = first;
        loop {
            let next = self
                .graph
                .neighbors_directed(at, Direction::Outgoing)
                .filter(|n| component.contains(n))
                .min();
            let Some(next) = next else { break };
            if let Some(&pos) = seen.get(&next) {
                path.drain(..pos);
                path.push(next);
                break;
            }
            seen.insert(next, path.len());
            path.push(next);
            at = next;
        }
        path.iter()
            .map(|&n| self.graph[n].to_string())
            .collect::<Vec<_>>()
            .join(" -> ")
    }

    /// Steps in an order the apply may run them one by one: a topological order, ties
    /// broken by kind (dependencies first), host, name and phase, so it is stable.
    pub fn order(&self) -> Vec<NodeIndex> {
        let key = |n: NodeIndex| {
            let step = &self.graph[n];
            (
                step.id.kind,
                step.host.clone(),
                step.id.name.clone(),
                step.phase,
            )
        };
        let mut indegree: Vec<usize> = self
            .graph
            .node_indices()
            .map(|n| {
                self.graph
                    .neighbors_directed(n, Direction::Incoming)
                    .count()
            })
            .collect();
        let mut ready: BinaryHeap<Reverse<(_, NodeIndex)>> = self
            .graph
            .node_indices()
            .filter(|n| indegree[n.index()] == 0)
            .map(|n| Reverse((key(n), n)))
            .collect();
        let mut order = Vec::with_capacity(self.graph.node_count());
        while let Some(Reverse((_, n))) = ready.pop() {
            order.push(n);
            for edge in self.graph.edges_directed(n, Direction::Outgoing) {
                let next = edge.target();
                indegree[next.index()] -= 1;
                if indegree[next.index()] == 0 {
                    ready.push(Reverse((key(next), next)));
                }
            }
        }
        order
    }

    /// Steps in levels: every step of a level depends only on steps of earlier levels, so
    /// a level's steps may run in parallel. (A runtime that starts each step as soon as
    /// its own predecessors finish uses [`ApplyGraph::dependencies`] instead.)
    pub fn levels(&self) -> Vec<Vec<NodeIndex>> {
        let mut level = vec![0usize; self.graph.node_count()];
        let mut levels: Vec<Vec<NodeIndex>> = Vec::new();
        for n in self.order() {
            let l = self
                .graph
                .neighbors_directed(n, Direction::Incoming)
                .map(|p| level[p.index()] + 1)
                .max()
                .unwrap_or(0);
            level[n.index()] = l;
            if levels.len() <= l {
                levels.resize_with(l + 1, Vec::new);
            }
            levels[l].push(n);
        }
        levels
    }

    /// The steps that must finish before `step` starts.
    pub fn dependencies(&self, step: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.neighbors_directed(step, Direction::Incoming)
    }

    /// The steps waiting for `step`: a runtime skips them when `step` fails.
    pub fn dependents(&self, step: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.neighbors_directed(step, Direction::Outgoing)
    }

    /// The step that does `phase` to `address` (`vm.web-1`), on any host.
    pub fn find(&self, phase: Phase, address: &str) -> Option<NodeIndex> {
        self.graph.node_indices().find(|&n| {
            let step = &self.graph[n];
            step.phase == phase && step.id.to_string() == address
        })
    }
}

/// Whether the step `a` (`"delete vm.web-1"`: a phase and an address) must finish before
/// the step `b` starts. For tests: panics when either step is not in the graph.
pub fn happens_before(graph: &ApplyGraph, a: &str, b: &str) -> bool {
    let node = |text: &str| {
        let (phase, address) = text
            .split_once(' ')
            .unwrap_or_else(|| panic!("{text:?} is not `phase kind.name`"));
        let phase = [
            Phase::Delete,
            Phase::Stop,
            Phase::Create,
            Phase::Update,
            Phase::Start,
            Phase::Migrate,
        ]
        .into_iter()
        .find(|p| p.as_str() == phase)
        .unwrap_or_else(|| panic!("{phase:?} is not a phase"));
        graph
            .find(phase, address)
            .unwrap_or_else(|| panic!("no step {text:?} in the graph"))
    };
    let (a, b) = (node(a), node(b));
    a != b && petgraph::algo::has_path_connecting(&graph.graph, a, b, None)
}

#[cfg(test)]
mod tests;
