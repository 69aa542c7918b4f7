//! Edges of a move between hosts.
//!
//! - A migrating VM's step is on its new host and follows what it needs there like any
//!   bringing-up step; until it has moved, its VMM on the old host still uses its
//!   disks, taps, VLAN bridges, DHCP server, firewall and netns there, so each of their
//!   teardown steps on the old host (the change's `from`) waits for it.
//! - A moving volume is copied by its `create` step on the new host, from the old one:
//!   when its VM does not migrate but is stopped there and started here, the copy
//!   waits for the VM's delete or stop on the old host, so it reads a disk nothing
//!   writes.

use std::collections::HashSet;

use petgraph::graph::{DiGraph, NodeIndex};

use super::{Phase, Step};
use crate::action::{Action, ResourceKind};
use crate::plan::Plan;

/// Adds `migrate vm.X → teardown of what X used on its old host`, and `teardown of
/// vm.X on the old host → create (copy) of its moving volume`.
pub fn add_edges(
    plan: &Plan,
    graph: &DiGraph<Step, ()>,
    edges: &mut HashSet<(NodeIndex, NodeIndex)>,
) {
    for node in graph.node_indices() {
        let step = &graph[node];
        if step.id.kind == ResourceKind::Volume
            && step.phase == Phase::Create
            && step.action == Action::Migrate
        {
            copy_after_vm_teardown(plan, graph, node, edges);
        }
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

/// The copy of a moving volume (its create step) after every teardown step, on the host
/// it moves from, of a VM that had it as a disk.
fn copy_after_vm_teardown(
    plan: &Plan,
    graph: &DiGraph<Step, ()>,
    copy: NodeIndex,
    edges: &mut HashSet<(NodeIndex, NodeIndex)>,
) {
    let change = &plan.changes[graph[copy].change];
    let Some(from) = &change.from else { return };
    let volume = change.id.name.as_str();
    for other in graph.node_indices() {
        let teardown = &graph[other];
        if teardown.id.kind != ResourceKind::Vm
            || &teardown.host != from
            || !teardown.phase.is_teardown()
        {
            continue;
        }
        let vm = &plan.changes[teardown.change];
        if let Some(crate::plan::Resource::Vm(before)) = &vm.before {
            if before.disks.iter().any(|d| d == volume) {
                edges.insert((other, copy));
            }
        }
    }
}
