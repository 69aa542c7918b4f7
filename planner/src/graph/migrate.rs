//! Edges of a migration. A migrating VM's step is on its new host and follows what it
//! needs there like any bringing-up step; until it has moved, its VMM on the old host
//! still uses its disks, taps, VLAN bridges, DHCP server, firewall and netns there, so
//! each of their teardown steps on the old host (the change's `from`) waits for it.

use std::collections::HashSet;

use petgraph::graph::{DiGraph, NodeIndex};

use super::{Phase, Step};
use crate::action::ResourceKind;
use crate::plan::Plan;

/// Adds `migrate vm.X → teardown of what X used on its old host`.
pub fn add_edges(
    plan: &Plan,
    graph: &DiGraph<Step, ()>,
    edges: &mut HashSet<(NodeIndex, NodeIndex)>,
) {
    for node in graph.node_indices() {
        let step = &graph[node];
        if step.phase != Phase::Migrate {
            continue;
        }
        let change = &plan.changes[step.change];
        let (Some(from), Some(before)) = (&change.from, &change.before) else {
            continue;
        };
        let used: HashSet<(ResourceKind, String)> = before
            .needs()
            .into_iter()
            .map(|id| (id.kind, id.name))
            .collect();
        for other in graph.node_indices() {
            let teardown = &graph[other];
            if &teardown.host != from || !teardown.phase.is_teardown() {
                continue;
            }
            let kind = teardown.id.kind;
            let hit = matches!(kind, ResourceKind::Netns | ResourceKind::Firewall)
                || (kind != ResourceKind::Vm && used.contains(&(kind, teardown.id.name.clone())));
            if hit {
                edges.insert((node, other));
            }
        }
    }
}
