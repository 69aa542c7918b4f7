//! `vmctl destroy`: remove everything of the project from every host of the config, in
//! reverse dependency order, after a `yes`. A `prevent-destroy` volume makes the plan
//! fail instead.

use std::path::PathBuf;

use vmctl_planner::PlanOptions;

use crate::commands::apply::{execute, plan_error, RunOptions};
use crate::error::CommandError;
use crate::render::Style;
use crate::runtime;

/// Destroy everything of the project on every host of the config: VMs, VLANs,
/// networks, volumes, pools, and a host's network namespace when vmctl made it.
/// Resources of other projects are never touched.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  vmctl destroy examples/quickstart\n  vmctl destroy . --auto-approve\n\nExit codes: 0 success, 1 error or a failed action, 130 interrupted."
)]
pub struct Args {
    /// A .kdl file, or a folder whose *.kdl files form one config.
    #[arg(default_value = ".", env = "VMCTL_CONFIG")]
    pub path: PathBuf,

    #[command(flatten)]
    pub run: RunOptions,

    #[command(flatten)]
    pub reach: runtime::Reach,
}

pub fn run(args: &Args, style: &Style) -> Result<(), CommandError> {
    let config = crate::config::load(&args.path, style)?.config;
    let fleet = runtime::connect(&config, &args.reach, &args.path)?;
    let _locks = runtime::lock(&config, &fleet, args.run.lock_timeout)?;
    let live = runtime::observe(&config, &fleet)?;
    let options = PlanOptions {
        destroy: true,
        exclude_hosts: args.reach.exclude_hosts.clone(),
        ..PlanOptions::default()
    };
    let planned =
        vmctl_planner::planned(&config, &live, &options).map_err(|e| plan_error(&e, style))?;
    execute(&config, &fleet, &planned, &args.run, style, "destroy")?;
    vmctl_runtime::apply::tidy_after_destroy(&config, &fleet);
    Ok(())
}
