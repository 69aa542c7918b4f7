//! `vmctl agent` (hidden): the far side of a remote host. vmctl starts it over ssh
//! (`vmctl_runtime::remote::ship`) and speaks the agent protocol with it on its stdin
//! and stdout (`vmctl_runtime::remote::protocol`); this parses nothing but `--help`,
//! serves until `bye` or the end of stdin, and renders the error that ended it.

use miette::Diagnostic;
use vmctl_runtime::remote::agent::{self, AgentError};

use crate::error::CommandError;

/// Serve vmctl's agent protocol on stdin and stdout (started by vmctl over ssh).
///
/// This is the far side of a remote host: vmctl runs it on the host through ssh and
/// sends it newline-delimited JSON requests on stdin; it answers one JSON line per
/// request on stdout. It writes nothing else to stdout and logs only to stderr. It
/// exits 0 when asked (`{"type":"bye"}`) or when stdin ends (the ssh connection
/// dropped), so an agent never outlives its connection.
///
/// There is nothing to run by hand; to check that a host can serve vmctl, try
/// `echo '{"type":"probe"}' | ssh HOST vmctl agent`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 the session ended (bye, or the end of stdin); 1 stdin or stdout failed."
)]
pub struct Args {}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum AgentCommandError {
    /// The build id (the executable's sha256) could not be computed.
    #[error("vmctl agent cannot identify its own build")]
    #[diagnostic(
        code(vmctl::agent::build_id),
        help("the agent hashes its own executable (/proc/self/exe); check that /proc is mounted")
    )]
    BuildId(#[source] AgentError),
    /// Reading requests or writing answers failed.
    #[error("vmctl agent lost its connection")]
    #[diagnostic(
        code(vmctl::agent::io),
        help("the agent talks to vmctl over stdin and stdout; the ssh connection that carried them failed")
    )]
    Io(#[source] AgentError),
}

pub fn run(_args: &Args) -> Result<(), CommandError> {
    if nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
        eprintln!(
            "vmctl agent: serving vmctl's agent protocol (JSON lines) on stdin; it is meant to be started by vmctl over ssh. Ctrl-D ends it."
        );
    }
    match agent::serve_stdio() {
        Ok(_) => Ok(()),
        Err(e @ AgentError::BuildId(_)) => Err(report(AgentCommandError::BuildId(e))),
        Err(e @ AgentError::Io(_)) => Err(report(AgentCommandError::Io(e))),
    }
}

fn report(error: AgentCommandError) -> CommandError {
    CommandError::Report(miette::Report::new(error))
}
