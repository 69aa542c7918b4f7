//! `vmctl completions SHELL`: the shell's completion script for vmctl (clap_complete).

use clap::CommandFactory;
use clap_complete::Shell;

use crate::error::CommandError;

/// Print the completion script for SHELL on stdout.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Install:\n  bash: vmctl completions bash > /etc/bash_completion.d/vmctl\n  zsh:  vmctl completions zsh > \"${fpath[1]}/_vmctl\"\n  fish: vmctl completions fish > ~/.config/fish/completions/vmctl.fish\n\nExit codes: 0 success, 1 error."
)]
pub struct Args {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: &Args) -> Result<(), CommandError> {
    super::write_stdout(&script(args.shell))
}

/// The script, for the commands people use: clap_complete would also offer the hidden
/// `vmm` command, so the script is made from a copy of the CLI without it.
fn script(shell: Shell) -> Vec<u8> {
    let cli = crate::Cli::command();
    let mut command = clap::Command::new("vmctl")
        .version(env!("CARGO_PKG_VERSION"))
        .args(cli.get_arguments().cloned())
        .subcommands(cli.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "vmctl", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_name_the_commands_and_their_flags() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = String::from_utf8(script(shell)).unwrap_or_default();
            for word in ["plan", "apply", "completions", "detailed-exitcode", "color"] {
                assert!(text.contains(word), "{shell}: no {word}");
            }
            // The VMM's own command is for the runtime, not for people.
            assert!(
                !text.contains("vmm"),
                "{shell} completes the hidden vmm command"
            );
        }
    }
}
