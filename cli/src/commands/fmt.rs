//! `vmctl fmt`: rewrite config files in canonical form, or check that they are.

use std::path::PathBuf;

use similar::TextDiff;
use vmctl_schema::{format_source, source, Diagnostics, SourceFile};

use crate::error::CommandError;
use crate::render::Style;

/// Rewrite config files in canonical form.
///
/// The order of nodes stays as written; indentation (four spaces), quoting, spacing
/// and the order of properties are normalised; comments are kept. Formatting twice
/// changes nothing. Only syntax is checked: use `validate` for the rest.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  vmctl fmt                    # every .kdl file of this folder\n  vmctl fmt lab.kdl\n  vmctl fmt --check .          # CI: print a diff, exit 1 if a file would change"
)]
pub struct Args {
    /// A .kdl file, or a folder whose *.kdl files are formatted.
    #[arg(default_value = ".", env = "VMCTL_CONFIG")]
    pub path: PathBuf,

    /// Change nothing: print a unified diff of each file that would change, and exit 1
    /// if any would.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: &Args, style: &Style) -> Result<(), CommandError> {
    let paths = source::discover(&args.path).map_err(|e| single(*e, None))?;
    let mut errors = Vec::new();
    let mut changed = 0usize;
    for path in paths {
        let text = match source::read(&path) {
            Ok(text) => text,
            Err(e) => {
                errors.extend(single(*e, None).0);
                continue;
            }
        };
        let file = SourceFile { path, text };
        let formatted = match format_source(&file) {
            Ok(formatted) => formatted,
            Err(diagnostics) => {
                errors.extend(diagnostics.0);
                continue;
            }
        };
        if formatted == *file.text {
            continue;
        }
        changed += 1;
        if args.check {
            print!("{}", diff(&file, &formatted, style));
        } else {
            std::fs::write(&file.path, formatted).map_err(|e| {
                CommandError::failed(format!("cannot write {}: {e}", file.path.display()))
            })?;
            eprintln!("formatted {}", file.path.display());
        }
    }
    if !errors.is_empty() {
        return Err(Diagnostics(errors).into());
    }
    if args.check && changed > 0 {
        eprintln!(
            "{changed} file{} would be reformatted; run `vmctl fmt` to fix",
            if changed == 1 { "" } else { "s" }
        );
        return Err(CommandError::Silent { code: 1 });
    }
    Ok(())
}

fn single(error: vmctl_schema::SchemaError, file: Option<usize>) -> Diagnostics {
    Diagnostics(vec![vmctl_schema::Located {
        source: None,
        file,
        error,
        note: None,
    }])
}

/// The unified diff from the file to its canonical form.
fn diff(file: &SourceFile, formatted: &str, style: &Style) -> String {
    let name = file.path.display().to_string();
    let text = TextDiff::from_lines(&*file.text, formatted)
        .unified_diff()
        .context_radius(3)
        .header(&name, &format!("{name} (formatted)"))
        .to_string();
    if !style.stdout {
        return text;
    }
    text.lines()
        .map(|line| match line.as_bytes().first() {
            Some(b'+') if !line.starts_with("+++") => format!("\x1b[32m{line}\x1b[0m\n"),
            Some(b'-') if !line.starts_with("---") => format!("\x1b[31m{line}\x1b[0m\n"),
            Some(b'@') => format!("\x1b[36m{line}\x1b[0m\n"),
            _ => format!("{line}\n"),
        })
        .collect()
}
