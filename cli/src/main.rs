//! The `vmctl` binary: clap commands wiring schema, planner and runtime together.

mod commands;
mod config;
mod error;
mod files;
mod progress;
mod render;
mod run_json;
mod runtime;
mod seen;
mod signals;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::commands::Command;
use crate::render::ColorChoice;

/// Declarative infrastructure: KDL files to bridges, VLANs, volumes and KVM microVMs.
///
/// An infra repo is a folder of .kdl files describing hosts, networks with VLANs,
/// storage pools with volumes, and VMs. vmctl checks it, formats it, plans it against
/// the live state of every host and applies it.
///
/// Exit codes: 0 success (also --help, --version), 1 error (invalid config, failed
/// command, usage error, no command given, or `fmt --check` found files to reformat),
/// 2 `plan --detailed-exitcode` found changes (never anything else), 130 an apply
/// interrupted by Ctrl-C.
///
/// Finding the config: the PATH argument when given, else $VMCTL_CONFIG, else the
/// current folder; `-C DIR` changes the current folder first, so a relative PATH or
/// VMCTL_CONFIG is read from DIR.
#[derive(Debug, Parser)]
#[command(
    name = "vmctl",
    version,
    propagate_version = true,
    arg_required_else_help = true,
    after_help = "Examples:\n  vmctl validate examples/quickstart\n  vmctl apply examples/quickstart\n  vmctl status examples/quickstart\n  vmctl list examples/quickstart --state running\n  VMCTL_CONFIG=~/infra vmctl console web-1\n  vmctl -C ~/infra plan\n  vmctl fmt --check .\n  vmctl schema > vmctl.schema.json\n  vmctl completions bash > /etc/bash_completion.d/vmctl"
)]
pub struct Cli {
    /// When to use colours in output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,

    /// Run as if vmctl was started in DIR (like `git -C` and `make -C`): applied first,
    /// so a relative PATH, VMCTL_CONFIG or file argument is read from DIR.
    #[arg(short = 'C', long = "chdir", value_name = "DIR", global = true)]
    chdir: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// The exit code of a usage error: 1, as for any error. (clap's own 2 would read as
/// "changes present" under `plan --detailed-exitcode`.)
const USAGE_ERROR: u8 = 1;

/// Parses the command line with the colour decision already made; help and version are
/// printed here and end the process with 0, usage errors with 1.
fn parse(args: Vec<OsString>) -> Result<Cli, ExitCode> {
    let choice = ColorChoice::from_args(&args);
    let command = Cli::command().color(choice.for_clap());
    let parsed = command
        .try_get_matches_from(args)
        .and_then(|mut matches| Cli::from_arg_matches_mut(&mut matches));
    parsed.map_err(|error| usage_exit(&error))
}

/// Prints what clap said: help and version end the process with 0, usage errors with 1.
fn usage_exit(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    // Help and version go to stdout, errors (and the help shown for a bare `vmctl`)
    // to stderr; a closed pipe is nothing to report.
    let _ = error.print();
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
        _ => ExitCode::from(USAGE_ERROR),
    }
}

/// `-C DIR`: the working directory for the rest of the run.
fn change_dir(dir: Option<&std::path::Path>) -> Result<(), error::CommandError> {
    let Some(dir) = dir else {
        return Ok(());
    };
    std::env::set_current_dir(dir).map_err(|e| error::CommandError::Failed {
        message: format!("cannot change to the directory {} (-C): {e}", dir.display()),
        hint: Some("give `-C` (`--chdir`) an existing directory you may enter".into()),
    })
}

fn main() -> ExitCode {
    // An empty VMCTL_CONFIG means none (as an unset one), not "a PATH of no characters".
    if std::env::var_os("VMCTL_CONFIG").is_some_and(|v| v.is_empty()) {
        // SAFETY: the process has one thread this early; nothing reads the environment
        // concurrently.
        unsafe { std::env::remove_var("VMCTL_CONFIG") };
    }
    let (command, color, chdir) = match commands::vmm::parse_if_vmm() {
        Some(Ok(vmm)) => (Command::Vmm(vmm), ColorChoice::Auto, None),
        Some(Err(error)) => return usage_exit(&error),
        None => match parse(std::env::args_os().collect()) {
            Ok(cli) => (cli.command, cli.color, cli.chdir),
            Err(code) => return code,
        },
    };
    let style = render::Style::new(color);
    let result = change_dir(chdir.as_deref()).and_then(|()| commands::run(command, &style));
    match result {
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
