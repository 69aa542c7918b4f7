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
    let mut command = crate::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "vmctl", &mut out);
    super::write_stdout(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(shell: Shell) -> String {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut crate::Cli::command(), "vmctl", &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn scripts_name_the_commands_and_their_flags() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = script(shell);
            for word in [
                "plan",
                "apply",
                "completions",
                "--detailed-exitcode",
                "--color",
            ] {
                assert!(text.contains(word), "{shell}: no {word}");
            }
            // The VMM's own command is for the runtime, not for people.
            assert!(
                !text.contains("--spec"),
                "{shell} completes the hidden vmm command"
            );
        }
    }
}
