//! `vmctl man [DIR]`: man pages (clap_mangen), one per command into DIR, or vmctl(1)
//! on stdout.

use std::path::PathBuf;

use clap::CommandFactory;

use crate::error::CommandError;

/// Write the man pages: one per command (vmctl.1, vmctl-plan.1, …) into DIR, or the
/// page of vmctl itself to stdout.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Install:\n  vmctl man /usr/local/share/man/man1 && mandb\n  vmctl man | man -l -\n\nExit codes: 0 success, 1 error."
)]
pub struct Args {
    /// The folder to write the pages into (made if missing).
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<(), CommandError> {
    let command = crate::Cli::command();
    let Some(dir) = &args.dir else {
        let mut out = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut out)
            .map_err(|e| CommandError::failed(format!("cannot render the man page: {e}")))?;
        return super::write_stdout(&out);
    };
    let failed = |e: std::io::Error| CommandError::Failed {
        message: format!("cannot write the man pages into {}: {e}", dir.display()),
        hint: Some("name a folder you can write to, or omit DIR to print vmctl(1)".into()),
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    clap_mangen::generate_to(command, dir).map_err(failed)?;
    println!("Wrote the man pages to {}.", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_visible_command() {
        let dir = tempfile::tempdir().unwrap();
        let args = Args {
            dir: Some(dir.path().join("man1")),
        };
        run(&args).unwrap();
        let page = std::fs::read_to_string(dir.path().join("man1/vmctl-plan.1")).unwrap();
        assert!(page.contains(".TH vmctl-plan 1"), "{page}");
        assert!(page.contains("detailed\\-exitcode"), "{page}");
        for name in [
            "vmctl.1",
            "vmctl-apply.1",
            "vmctl-completions.1",
            "vmctl-man.1",
        ] {
            assert!(dir.path().join("man1").join(name).is_file(), "{name}");
        }
        assert!(!dir.path().join("man1/vmctl-vmm.1").exists());
    }
}
