//! The `vmctl` binary: clap commands wiring schema, planner and runtime together.

mod commands;

use std::process::ExitCode;

use clap::Parser;

/// Declarative infrastructure: KDL files to bridges, VLANs, volumes and KVM microVMs.
#[derive(Debug, Parser)]
#[command(name = "vmctl", version)]
struct Cli {
    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
