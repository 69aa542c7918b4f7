//! Edges of a host's network namespace: everything that lives in it (networks, VLANs,
//! VMs and their taps) is brought up after the namespace is made, and taken down before
//! it is removed. By host, not by name: the namespace is the host's, not a resource's.

use std::collections::HashSet;

use petgraph::graph::{DiGraph, NodeIndex};

use super::{Phase, Step};
use crate::action::ResourceKind;

/// Whether a resource of `kind` lives in its host's network namespace.
pub fn lives_in_netns(kind: ResourceKind) -> bool {
    match kind {
        ResourceKind::Network
        | ResourceKind::Vlan
        | ResourceKind::Dhcp
        | ResourceKind::Vm
        | ResourceKind::Firewall => true,
        ResourceKind::Netns | ResourceKind::Pool | ResourceKind::Volume => false,
    }
}

/// Adds to `edges` the netns edges of `graph`: `create netns → bring up X` and
/// `take down X → delete netns` for every X on the same host that lives in it.
pub fn add_edges(graph: &DiGraph<Step, ()>, edges: &mut HashSet<(NodeIndex, NodeIndex)>) {
    for ns in graph.node_indices() {
        let netns = &graph[ns];
        if netns.id.kind != ResourceKind::Netns {
            continue;
        }
        for node in graph.node_indices() {
            let step = &graph[node];
            if step.host != netns.host || !lives_in_netns(step.id.kind) {
                continue;
            }
            match (netns.phase, step.phase.is_teardown()) {
                (Phase::Create, false) => {
                    edges.insert((ns, node));
                }
                (Phase::Delete, true) => {
                    edges.insert((node, ns));
                }
                _ => {}
            }
        }
    }
}
