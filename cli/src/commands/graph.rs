//! `vmctl graph`: the plan's apply graph as Graphviz DOT.

use std::path::PathBuf;

use vmctl_planner::render::dot;

use crate::commands::plan::{make, Planning};
use crate::error::CommandError;
use crate::render::Style;

/// Print the apply graph of the plan as Graphviz DOT: one box per step (a replace is a
/// delete step and a create step), an edge where a step waits for another.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  vmctl graph examples/quickstart | dot -Tsvg > plan.svg\n\nExit codes: 0 success, 1 error."
)]
pub struct Args {
    /// A .kdl file, or a folder whose *.kdl files form one config.
    #[arg(default_value = ".", env = "VMCTL_CONFIG")]
    pub path: PathBuf,

    #[command(flatten)]
    pub planning: Planning,
}

pub fn run(args: &Args, style: &Style) -> Result<(), CommandError> {
    let planned = make(&args.path, &args.planning, style)?;
    print!("{}", dot::render(&planned.graph));
    Ok(())
}
