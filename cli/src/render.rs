//! The CLI's one colour decision, and how diagnostics look: colours and box-drawing
//! where colour is on, plain ASCII otherwise, so logs and snapshots stay readable.
//!
//! `--color` is read once, before clap parses anything, so clap's own help and usage
//! errors, every command's output and miette's diagnostics follow the same choice. The
//! rules are anstream's (which clap uses): `--color always` colours even when piped,
//! `--color never` never does, and `auto` colours a terminal unless `NO_COLOR` is set,
//! or a pipe too when `CLICOLOR_FORCE` is set.

use std::ffi::OsString;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme};

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour a terminal unless NO_COLOR is set (CLICOLOR_FORCE colours pipes too).
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// The `--color` of a command line, read before clap parses it (the last one wins,
    /// as with clap); `auto` when absent or unreadable, which clap then reports.
    pub fn from_args(args: &[OsString]) -> ColorChoice {
        let mut choice = ColorChoice::Auto;
        let mut args = args.iter().skip(1).map(|a| a.to_str().unwrap_or(""));
        while let Some(arg) = args.next() {
            let value = match arg {
                "--" => break,
                "--color" => args.next().unwrap_or(""),
                _ => match arg.strip_prefix("--color=") {
                    Some(value) => value,
                    None => continue,
                },
            };
            choice = match value {
                "always" => ColorChoice::Always,
                "never" => ColorChoice::Never,
                _ => ColorChoice::Auto,
            };
        }
        choice
    }

    /// The same choice for clap's help and errors.
    pub fn for_clap(self) -> clap::ColorChoice {
        match self {
            ColorChoice::Auto => clap::ColorChoice::Auto,
            ColorChoice::Always => clap::ColorChoice::Always,
            ColorChoice::Never => clap::ColorChoice::Never,
        }
    }
}

/// The resolved output style of one run.
pub struct Style {
    /// Colour on stderr (diagnostics, progress).
    pub color: bool,
    /// Colour on stdout (plans, diffs).
    pub stdout: bool,
}

impl Style {
    /// Resolves `choice` for stdout and stderr, and makes it anstream's global choice.
    pub fn new(choice: ColorChoice) -> Self {
        let global = match choice {
            ColorChoice::Auto => anstream::ColorChoice::Auto,
            ColorChoice::Always => anstream::ColorChoice::Always,
            ColorChoice::Never => anstream::ColorChoice::Never,
        };
        global.write_global();
        let on = |c: anstream::ColorChoice| c != anstream::ColorChoice::Never;
        let style = Style {
            color: on(anstream::AutoStream::choice(&std::io::stderr())),
            stdout: on(anstream::AutoStream::choice(&std::io::stdout())),
        };
        // Any report miette renders itself (a `Debug` of a `Report`) follows the same
        // decision, not miette's own detection (which knows no CLICOLOR_FORCE).
        let color = style.color;
        let _ = miette::set_hook(Box::new(move |_| {
            Box::new(
                miette::MietteHandlerOpts::new()
                    .color(color)
                    .unicode(color)
                    .width(100)
                    .build(),
            )
        }));
        style
    }

    /// No colour anywhere.
    pub fn plain() -> Self {
        Style {
            color: false,
            stdout: false,
        }
    }

    /// One diagnostic, rendered with its source snippet, for stderr.
    pub fn diagnostic(&self, diagnostic: &dyn Diagnostic) -> String {
        let theme = if self.color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::none()
        };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
        let mut out = String::new();
        if handler.render_report(&mut out, diagnostic).is_err() {
            out = format!("error: {diagnostic}\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(args: &[&str]) -> ColorChoice {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        ColorChoice::from_args(&args)
    }

    #[test]
    fn reads_color_before_clap() {
        assert_eq!(choice(&["vmctl", "plan"]), ColorChoice::Auto);
        assert_eq!(
            choice(&["vmctl", "--color", "always", "plan"]),
            ColorChoice::Always
        );
        assert_eq!(
            choice(&["vmctl", "plan", "--color=never"]),
            ColorChoice::Never
        );
        assert_eq!(
            choice(&["vmctl", "--color=never", "x", "--color", "always"]),
            ColorChoice::Always
        );
        assert_eq!(
            choice(&["vmctl", "plan", "--", "--color", "always"]),
            ColorChoice::Auto
        );
        assert_eq!(choice(&["vmctl", "--color"]), ColorChoice::Auto);
    }
}
