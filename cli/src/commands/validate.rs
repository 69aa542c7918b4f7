//! `vmctl validate`: load and check a config, print a one-line summary.

use std::path::PathBuf;

use vmctl_schema::Config;

use crate::error::CommandError;

/// Check a config: syntax, types, names, references, networking, placement, capacity
/// and dependency cycles, reporting every error at once.
///
/// Files the config names (kernels, initrds, base images) are not opened: `plan`
/// checks those, so CI can validate an infra repo without its images.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  vmctl validate                       # the .kdl files of this folder\n  vmctl validate examples/quickstart\n  vmctl validate lab.kdl\n\nExit codes: 0 valid, 1 invalid (every diagnostic is printed)."
)]
pub struct Args {
    /// A .kdl file, or a folder whose *.kdl files form one config.
    #[arg(default_value = ".", env = "VMCTL_CONFIG")]
    pub path: PathBuf,
}

pub fn run(args: &Args, style: &crate::render::Style) -> Result<(), CommandError> {
    let loaded = crate::config::load(&args.path, style)?;
    println!("{}", summary(&loaded.config));
    Ok(())
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `lab: 1 host, 1 network, 2 vlans, 1 pool, 3 volumes, 3 vms`.
pub fn summary(config: &Config) -> String {
    format!(
        "{}: {}, {}, {}, {}, {}, {}",
        config.project,
        count(config.hosts.len(), "host", "hosts"),
        count(config.networks.len(), "network", "networks"),
        count(config.vlans.len(), "vlan", "vlans"),
        count(config.pools.len(), "pool", "pools"),
        count(config.volumes.len(), "volume", "volumes"),
        count(config.vms.len(), "vm", "vms"),
    )
}
