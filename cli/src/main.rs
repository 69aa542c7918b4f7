//! The `vmctl` binary: clap commands wiring schema, planner and runtime together.

mod commands;
mod error;
mod files;
mod progress;
mod render;
mod runtime;
mod signals;

use std::process::ExitCode;

use clap::Parser;

use crate::commands::Command;
use crate::render::ColorChoice;

/// Declarative infrastructure: KDL files to bridges, VLANs, volumes and KVM microVMs.
///
/// An infra repo is a folder of .kdl files describing hosts, networks with VLANs,
/// storage pools with volumes, and VMs. vmctl checks it, formats it, plans it against
/// the live state of every host and applies it.
///
/// Exit codes: 0 success, 1 error (invalid config, failed command, or `fmt --check`
/// found files to reformat), 2 `plan --detailed-exitcode` found changes, 130 an apply
/// interrupted by Ctrl-C.
#[derive(Debug, Parser)]
#[command(
    name = "vmctl",
    version,
    propagate_version = true,
    after_help = "Examples:\n  vmctl validate examples/quickstart\n  vmctl apply examples/quickstart\n  vmctl status examples/quickstart\n  vmctl fmt --check .\n  vmctl schema > vmctl.schema.json"
)]
pub struct Cli {
    /// When to use colours in output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,

    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let (command, color) = match commands::vmm::parse_if_vmm() {
        Some(vmm) => (Command::Vmm(vmm), ColorChoice::Auto),
        None => {
            let cli = Cli::parse();
            (cli.command, cli.color)
        }
    };
    let style = render::Style::new(color);
    match commands::run(command, &style) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error.print(&style);
            ExitCode::from(error.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
