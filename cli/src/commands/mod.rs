//! The subcommands, one file each, and the central dispatch. To add a command: a
//! module with an `Args` struct and a `run` function, a variant here, an arm in `run`.

pub mod agent;
pub mod apply;
pub mod completions;
pub mod console;
pub mod destroy;
pub mod fmt;
pub mod graph;
pub mod import;
pub mod list;
pub mod man;
pub mod plan;
pub mod schema;
pub mod show;
pub mod snapshot;
pub mod status;
pub mod validate;
pub mod vmm;

use std::io::Write;

use clap::Subcommand;

use crate::error::CommandError;
use crate::render::Style;

#[derive(Debug, Subcommand)]
pub enum Command {
    Validate(validate::Args),
    Fmt(fmt::Args),
    Schema(schema::Args),
    Plan(plan::Args),
    Graph(graph::Args),
    Apply(apply::Args),
    Destroy(destroy::Args),
    Status(status::Args),
    Import(import::Args),
    List(list::Args),
    Show(show::Args),
    Console(console::Args),
    Snapshot(snapshot::Args),
    Completions(completions::Args),
    Man(man::Args),
    /// Runs one VM in this process (used by the runtime; hidden).
    #[command(hide = true)]
    Vmm(vmm::VmmArgs),
    // Hidden; its help is `agent::Args`'s: the far side of a remote host.
    #[command(hide = true)]
    Agent(agent::Args),
}

/// With `--json`, stdout carries only the run's report: the rest goes to stderr.
fn json_run(json: bool) -> Result<(), CommandError> {
    if json {
        crate::run_json::begin().map_err(|e| CommandError::Failed {
            message: format!("cannot point stdout at stderr for --json: {e}"),
            hint: Some("run without --json".into()),
        })?;
    }
    Ok(())
}

/// Runs one command.
pub fn run(command: Command, style: &Style) -> Result<(), CommandError> {
    match command {
        Command::Validate(args) => validate::run(&args, style),
        Command::Fmt(args) => fmt::run(&args, style),
        Command::Schema(args) => schema::run(&args),
        Command::Plan(args) => plan::run(&args, style),
        Command::Graph(args) => graph::run(&args, style),
        Command::Apply(args) => {
            json_run(args.run.json)?;
            apply::run(&args, style)
        }
        Command::Destroy(args) => {
            json_run(args.run.json)?;
            destroy::run(&args, style)
        }
        Command::Status(args) => status::run(&args, style),
        Command::Import(args) => import::run(&args, style),
        Command::List(args) => list::run(&args, style),
        Command::Show(args) => show::run(&args, style),
        Command::Console(args) => console::run(&args),
        Command::Snapshot(args) => snapshot::run(&args),
        Command::Completions(args) => completions::run(&args),
        Command::Man(args) => man::run(&args),
        Command::Agent(args) => agent::run(&args),
        Command::Vmm(args) => match vmm::run(args) {
            Ok(0) => Ok(()),
            Ok(code) => Err(CommandError::Silent { code }),
            Err(report) => Err(CommandError::Report(report)),
        },
    }
}

/// Writes generated text to stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> Result<(), CommandError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CommandError::failed(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}
