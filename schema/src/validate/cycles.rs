//! `depends-on` cycles: each is reported once, naming every VM of the loop.

use super::{Index, Report};
use crate::diagnostics::SchemaError;
use crate::model::Config;
use crate::spans::Spans;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    New,
    OnPath,
    Done,
}

/// Depth-first search without recursion (configs may chain thousands of VMs); every
/// edge to a VM still on the path closes a cycle.
pub fn check(config: &Config, spans: &Spans, index: &Index<'_>, report: &mut Report<'_>) {
    let edges: Vec<Vec<(usize, usize)>> = config
        .vms
        .iter()
        .map(|vm| {
            vm.depends_on
                .iter()
                .enumerate()
                .filter_map(|(i, dep)| index.vms.get(dep.as_str()).map(|&to| (i, to)))
                .collect()
        })
        .collect();
    let mut mark = vec![Mark::New; config.vms.len()];
    let mut position = vec![0usize; config.vms.len()];
    for start in 0..config.vms.len() {
        if mark[start] != Mark::New {
            continue;
        }
        let mut path: Vec<usize> = vec![start];
        let mut next_edge: Vec<usize> = vec![0];
        mark[start] = Mark::OnPath;
        while let (Some(&vm), Some(edge)) = (path.last(), next_edge.last_mut()) {
            let Some(&(dep_index, to)) = edges[vm].get(*edge) else {
                mark[vm] = Mark::Done;
                path.pop();
                next_edge.pop();
                continue;
            };
            *edge += 1;
            match mark[to] {
                Mark::New => {
                    mark[to] = Mark::OnPath;
                    position[to] = path.len();
                    path.push(to);
                    next_edge.push(0);
                }
                Mark::OnPath => {
                    let cycle = path[position[to]..]
                        .iter()
                        .chain(std::iter::once(&to))
                        .map(|&v| config.vms[v].name.as_str())
                        .collect::<Vec<_>>()
                        .join(" -> ");
                    if let Some(s) = spans.vms.get(vm) {
                        report.push(
                            s.file,
                            SchemaError::DependencyCycle {
                                cycle,
                                span: s.field_or_name("depends-on", dep_index as u32),
                            },
                        );
                    }
                }
                Mark::Done => {}
            }
        }
    }
}
