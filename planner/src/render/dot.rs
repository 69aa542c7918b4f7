//! The apply graph as Graphviz DOT (`vmctl graph PATH | dot -Tsvg`): one box per step,
//! coloured by action, an edge where one step waits for another.

use std::fmt::Write;

use crate::action::Action;
use crate::graph::ApplyGraph;

/// Renders the graph as a DOT digraph, nodes in apply order.
pub fn render(graph: &ApplyGraph) -> String {
    let mut out = String::from(
        "digraph plan {\n    rankdir=LR;\n    node [shape=box, fontname=\"monospace\"];\n",
    );
    for node in graph.order() {
        let step = &graph.graph[node];
        let color = match step.action {
            Action::Create => "darkgreen",
            Action::Update => "darkgoldenrod",
            Action::Replace | Action::Delete => "red3",
            Action::Start | Action::Stop => "blue",
            Action::NoOp => "black",
        };
        let replace = if step.action == Action::Replace {
            " (replace)"
        } else {
            ""
        };
        let label = format!(
            "{} {}{replace}\n{}\nhost {}",
            step.action.glyph(),
            step.phase,
            step.id,
            step.host
        );
        let _ = writeln!(
            out,
            "    s{} [label=\"{}\", color={color}];",
            node.index(),
            escape(&label)
        );
    }
    let mut edges: Vec<(usize, usize)> = graph
        .graph
        .edge_indices()
        .filter_map(|e| graph.graph.edge_endpoints(e))
        .map(|(a, b)| (a.index(), b.index()))
        .collect();
    edges.sort_unstable();
    for (a, b) in edges {
        let _ = writeln!(out, "    s{a} -> s{b};");
    }
    out.push_str("}\n");
    out
}

/// Quotes and backslashes escaped; newlines as DOT's `\n`.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
