//! Edges of a host's firewall: its VMs are brought up after it (a guest that talks at
//! boot finds its VLAN's NAT and separation in place). Teardown needs no order: a
//! VM's delete does not use the table.

use std::collections::HashSet;

use petgraph::graph::{DiGraph, NodeIndex};

use super::Step;
use crate::action::ResourceKind;

/// Adds `bring up firewall.<host> → bring up vm.X` for every VM X on that host.
pub fn add_edges(graph: &DiGraph<Step, ()>, edges: &mut HashSet<(NodeIndex, NodeIndex)>) {
    for fw in graph.node_indices() {
        let firewall = &graph[fw];
        if firewall.id.kind != ResourceKind::Firewall || firewall.phase.is_teardown() {
            continue;
        }
        for node in graph.node_indices() {
            let step = &graph[node];
            if step.host == firewall.host
                && step.id.kind == ResourceKind::Vm
                && !step.phase.is_teardown()
            {
                edges.insert((fw, node));
            }
        }
    }
}
