//! One module per subcommand, each with a clap `Args` struct and a `run` function, and
//! the dispatch between them.

pub mod vmm;

use std::process::ExitCode;

/// vmctl's subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Runs one VM in this process (used by the runtime; hidden).
    #[command(hide = true)]
    Vmm(vmm::VmmArgs),
}

/// Runs a subcommand.
pub fn run(command: Command) -> miette::Result<ExitCode> {
    match command {
        Command::Vmm(args) => vmm::run(args),
    }
}
