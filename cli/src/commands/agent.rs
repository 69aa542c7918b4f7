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
pub struct Args {
    #[command(subcommand)]
    pub job: Option<Job>,
}

/// What an agent does besides serving the protocol (each run by vmctl over ssh).
#[derive(Debug, clap::Subcommand)]
pub enum Job {
    /// Store stdin in the host's image cache as the file of sha256 HEX, refused unless
    /// its bytes have that digest; print its path.
    Receive {
        /// The host's state dir (the cache is its `images/`).
        #[arg(long, value_name = "DIR")]
        state_dir: std::path::PathBuf,
        /// The sha256 the bytes must have, 64 lower-case hex digits.
        #[arg(long, value_name = "HEX")]
        sha256: String,
    },
    /// Serve the protocol on a unix socket, one session per connection, until this
    /// command's ssh session ends or no connection was open for the idle time (a kept
    /// agent: vmctl starts it behind a kept ssh connection, `--ssh-control-dir`).
    Listen {
        /// The socket: `<state-dir>/run/agent-<hex>.sock`.
        #[arg(long, value_name = "PATH")]
        socket: std::path::PathBuf,
        /// End after this many seconds without an open connection.
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        idle_seconds: u64,
    },
    /// A VM's serial console on this host, as `vmctl console` shows it.
    Console {
        /// The host's state dir.
        #[arg(long, value_name = "DIR")]
        state_dir: std::path::PathBuf,
        /// The VM's project.
        #[arg(long)]
        project: String,
        /// The VM, by name.
        vm: String,
        /// Print the last N lines of the console log and exit (with --follow: then follow).
        #[arg(long, short = 'n', value_name = "N")]
        lines: Option<u64>,
        /// Follow the console log as it grows, until the VM's process ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

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

pub fn run(args: &Args) -> Result<(), CommandError> {
    match &args.job {
        None => serve(),
        Some(Job::Listen {
            socket,
            idle_seconds,
        }) => listen(socket, *idle_seconds),
        Some(Job::Receive { state_dir, sha256 }) => {
            let path = vmctl_runtime::host::image_cache::receive(
                state_dir,
                sha256,
                &mut std::io::stdin().lock(),
            )
            .map_err(|e| {
                CommandError::Report(miette::miette!(
                    code = "vmctl::agent::receive",
                    "{}",
                    crate::runtime::chain(&e)
                ))
            })?;
            println!("{}", path.display());
            Ok(())
        }
        Some(Job::Console {
            state_dir,
            project,
            vm,
            lines,
            follow,
        }) => super::console::run_on_host(state_dir, project, vm, *lines, *follow),
    }
}

/// Serves the protocol on stdin and stdout.
fn serve() -> Result<(), CommandError> {
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

/// Serves the protocol on a socket, as a kept agent.
fn listen(socket: &std::path::Path, idle_seconds: u64) -> Result<(), CommandError> {
    let build = vmctl_runtime::remote::build::agent_build_id()
        .map_err(|e| report(AgentCommandError::BuildId(AgentError::BuildId(e))))?;
    vmctl_runtime::remote::listen::listen(
        socket,
        std::time::Duration::from_secs(idle_seconds),
        &build,
    )
    .map_err(|e| {
        CommandError::Report(miette::miette!(
            code = "vmctl::agent::listen",
            help = "vmctl starts this behind a kept ssh connection; another one is started on the next run",
            "{e}"
        ))
    })
}

fn report(error: AgentCommandError) -> CommandError {
    CommandError::Report(miette::Report::new(error))
}
