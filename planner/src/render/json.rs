//! The plan for machines: one JSON document, versioned by `format_version` and documented
//! in `planner/PLAN-JSON.md`. Adding fields is a minor version; renaming or removing one,
//! or changing a meaning, is a major version.

use serde::Serialize;

use crate::graph::ApplyGraph;
use crate::plan::{Change, Plan, Summary};

/// The version of the document [`render`] writes.
pub const FORMAT_VERSION: &str = "1.6";

#[derive(Serialize)]
struct Document<'a> {
    format_version: &'static str,
    project: &'a str,
    changed: bool,
    summary: Summary,
    changes: Vec<ChangeJson<'a>>,
    steps: Vec<StepJson<'a>>,
}

#[derive(Serialize)]
struct ChangeJson<'a> {
    address: String,
    #[serde(flatten)]
    change: &'a Change,
}

#[derive(Serialize)]
struct StepJson<'a> {
    step: usize,
    change: usize,
    address: String,
    host: &'a str,
    phase: &'static str,
    requires: Vec<usize>,
}

/// Renders `plan` and its apply graph as pretty JSON (a trailing newline included).
pub fn render(plan: &Plan, graph: &ApplyGraph) -> String {
    let order = graph.order();
    let mut position = vec![0; graph.graph.node_count()];
    for (i, node) in order.iter().enumerate() {
        position[node.index()] = i;
    }
    let steps = order
        .iter()
        .enumerate()
        .map(|(i, &node)| {
            let step = &graph.graph[node];
            let mut requires: Vec<usize> = graph
                .dependencies(node)
                .map(|n| position[n.index()])
                .collect();
            requires.sort_unstable();
            StepJson {
                step: i,
                change: step.change,
                address: step.id.to_string(),
                host: &step.host,
                phase: step.phase.as_str(),
                requires,
            }
        })
        .collect();
    let document = Document {
        format_version: FORMAT_VERSION,
        project: &plan.project,
        changed: plan.has_changes(),
        summary: plan.summary(),
        changes: plan
            .changes
            .iter()
            .map(|change| ChangeJson {
                address: change.id.to_string(),
                change,
            })
            .collect(),
        steps,
    };
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
    text.push('\n');
    text
}
