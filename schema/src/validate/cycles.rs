//! `depends-on` cycles: each loop (a strongly connected component of the `depends-on`
//! graph, found with petgraph's Kosaraju, which is iterative: configs may chain
//! thousands of VMs) is reported once, naming every VM of one cycle through it, at the
//! `depends-on` that closes that cycle.

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use super::{Index, Report};
use crate::diagnostics::SchemaError;
use crate::model::Config;
use crate::spans::Spans;

/// The `depends-on` graph: node `i` is VM `i`, an edge `a → b` (weighted with the index
/// of the `depends-on` entry) says VM `a` depends on VM `b`. Unknown names have no edge
/// (the references check reports them).
fn graph(config: &Config, index: &Index<'_>) -> DiGraph<(), u32> {
    let mut graph = DiGraph::with_capacity(config.vms.len(), config.vms.len());
    for _ in &config.vms {
        graph.add_node(());
    }
    for (from, vm) in config.vms.iter().enumerate() {
        for (i, dep) in vm.depends_on.iter().enumerate() {
            if let Some(&to) = index.vms.get(dep.as_str()) {
                graph.add_edge(NodeIndex::new(from), NodeIndex::new(to), i as u32);
            }
        }
    }
    graph
}

/// One cycle inside `component`, from its first VM in config order, following each
/// VM's first `depends-on` inside the component: the VMs in order (the first again at
/// the end) and the `depends-on` index that closes it.
fn cycle_in(graph: &DiGraph<(), u32>, component: &[NodeIndex]) -> Option<(Vec<usize>, u32)> {
    let start = *component.iter().min()?;
    let mut path = vec![start];
    let mut at = start;
    // Each step visits a new VM until one repeats: at most the component's size.
    for _ in 0..=component.len() {
        let (next, dep) = graph
            .edges(at)
            .filter(|e| component.contains(&petgraph::visit::EdgeRef::target(e)))
            .map(|e| (petgraph::visit::EdgeRef::target(&e), *e.weight()))
            .min_by_key(|&(_, dep)| dep)?;
        if let Some(first) = path.iter().position(|&n| n == next) {
            let mut cycle: Vec<usize> = path[first..].iter().map(|n| n.index()).collect();
            cycle.push(next.index());
            return Some((cycle, dep));
        }
        path.push(next);
        at = next;
    }
    None
}

pub fn check(config: &Config, spans: &Spans, index: &Index<'_>, report: &mut Report<'_>) {
    let graph = graph(config, index);
    let mut cycles: Vec<(Vec<usize>, u32)> = kosaraju_scc(&graph)
        .into_iter()
        .filter(|c| c.len() > 1 || c.iter().any(|&n| graph.contains_edge(n, n)))
        .filter_map(|c| cycle_in(&graph, &c))
        .collect();
    // In config order, so the report is stable.
    cycles.sort();
    for (cycle, dep_index) in cycles {
        let names: Vec<&str> = cycle.iter().map(|&v| config.vms[v].name.as_str()).collect();
        let closing = cycle[cycle.len() - 2];
        if let Some(s) = spans.vms.get(closing) {
            let here = s.field_or_name("depends-on", dep_index);
            let error = SchemaError::DependencyCycle {
                cycle: names.join(" -> "),
                span: here.span,
            };
            report.push_in(&config.vms[closing].name, s, here, error);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::SchemaError;

    fn cycles(text: &str) -> Vec<String> {
        let errors = crate::load_str("c.kdl", text)
            .err()
            .map(|d| d.0)
            .unwrap_or_default();
        errors
            .iter()
            .filter_map(|e| match &e.error {
                SchemaError::DependencyCycle { cycle, .. } => Some(cycle.clone()),
                _ => None,
            })
            .collect()
    }

    fn vm(name: &str, deps: &[&str]) -> String {
        let deps: String = deps
            .iter()
            .map(|d| format!("    depends-on \"{d}\"\n"))
            .collect();
        format!("vm \"{name}\" host=\"h\" {{\n    kernel \"/k\"\n{deps}}}\n")
    }

    fn config(vms: &[(&str, &[&str])]) -> String {
        let mut text = String::from("project \"p\"\nhost \"h\"\n");
        for (name, deps) in vms {
            text.push_str(&vm(name, deps));
        }
        text
    }

    #[test]
    fn each_loop_once_naming_its_vms() {
        let text = config(&[
            ("a", &["b"]),
            ("b", &["c"]),
            ("c", &["a", "d"]),
            ("d", &[]),
            ("e", &["e"]),
            ("f", &["g"]),
            ("g", &["f"]),
        ]);
        assert_eq!(cycles(&text), ["a -> b -> c -> a", "e -> e", "f -> g -> f"]);
    }

    #[test]
    fn no_cycle_in_a_long_chain() {
        let names: Vec<String> = (0..5000).map(|i| format!("v{i}")).collect();
        let deps: Vec<Vec<&str>> = (0..5000)
            .map(|i| {
                if i + 1 < 5000 {
                    vec![names[i + 1].as_str()]
                } else {
                    vec![]
                }
            })
            .collect();
        let vms: Vec<(&str, &[&str])> = names
            .iter()
            .zip(&deps)
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        assert_eq!(cycles(&config(&vms)), Vec::<String>::new());
    }
}
