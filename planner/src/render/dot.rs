//! The apply graph as Graphviz DOT (`vmctl graph PATH | dot -Tsvg`): one box per step,
//! coloured by action, an edge where one step waits for another. petgraph's `Dot` writes
//! the nodes and edges; this module gives each step its label and colour.

use petgraph::dot::{Config, Dot};

use crate::action::Action;
use crate::graph::{ApplyGraph, Step};

/// Renders the graph as a DOT digraph.
pub fn render(graph: &ApplyGraph) -> String {
    let node = |_, (_, step): (_, &Step)| attributes(step);
    let edge = |_, _| String::new();
    let dot = Dot::with_attr_getters(
        &graph.graph,
        &[
            Config::GraphContentOnly,
            Config::NodeNoLabel,
            Config::EdgeNoLabel,
        ],
        &edge,
        &node,
    );
    // Debug, not Display: the edges carry `()`; with no labels neither is printed.
    format!(
        "digraph plan {{\n    rankdir=LR;\n    node [shape=box, fontname=\"monospace\"];\n{dot:?}}}\n"
    )
}

/// `label="…", color=…` of one step.
fn attributes(step: &Step) -> String {
    let color = match step.action {
        Action::Create => "darkgreen",
        Action::Update => "darkgoldenrod",
        Action::Replace | Action::Delete => "red3",
        Action::Start | Action::Stop => "blue",
        Action::Migrate => "purple",
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
    format!("label=\"{}\", color={color}", escape(&label))
}

/// Quotes and backslashes escaped; newlines as DOT's `\n`.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
