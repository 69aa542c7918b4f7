//! The error at the CLI edge: what went wrong, rendered once, and the process exit
//! code it maps to.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | error: invalid config, failed command, `fmt --check` found changes |
//! | 2 | reserved for `plan --detailed-exitcode`: changes present |

use vmctl_schema::Diagnostics;

use crate::render::Style;

/// A failed command.
#[derive(Debug)]
pub enum CommandError {
    /// The config has errors; each is printed as a diagnostic.
    Config(Diagnostics),
    /// A failure with a message and an optional hint.
    Failed {
        message: String,
        hint: Option<String>,
    },
    /// A failure reported as one miette diagnostic (e.g. from the VMM).
    Report(miette::Report),
    /// Failures of several things at once (e.g. one per host that cannot be observed),
    /// each its own diagnostic, then a line counting them.
    Reports {
        reports: Vec<miette::Report>,
        summary: String,
    },
    /// The command already printed what the user needs; only the exit code is left.
    Silent { code: u8 },
}

impl CommandError {
    pub fn failed(message: impl Into<String>) -> Self {
        CommandError::Failed {
            message: message.into(),
            hint: None,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Config(_)
            | CommandError::Failed { .. }
            | CommandError::Report(_)
            | CommandError::Reports { .. } => 1,
            CommandError::Silent { code } => *code,
        }
    }

    /// Prints the error to stderr.
    pub fn print(&self, style: &Style) {
        eprint!("{}", self.render(style));
    }

    pub fn render(&self, style: &Style) -> String {
        match self {
            CommandError::Config(diagnostics) => {
                let mut out = String::new();
                for diagnostic in diagnostics.iter() {
                    out.push_str(&style.diagnostic(diagnostic));
                    out.push('\n');
                }
                out.push_str(&format!("error: {diagnostics}\n"));
                out
            }
            CommandError::Failed { message, hint } => {
                let mut out = format!("error: {message}\n");
                if let Some(hint) = hint {
                    out.push_str(&format!("hint: {hint}\n"));
                }
                out
            }
            CommandError::Report(report) => style.diagnostic(report.as_ref()),
            CommandError::Reports { reports, summary } => {
                let mut out = String::new();
                for report in reports {
                    out.push_str(&style.diagnostic(report.as_ref()));
                    out.push('\n');
                }
                out.push_str(&format!("error: {summary}\n"));
                out
            }
            CommandError::Silent { .. } => String::new(),
        }
    }
}

impl From<Diagnostics> for CommandError {
    fn from(diagnostics: Diagnostics) -> Self {
        CommandError::Config(diagnostics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(CommandError::failed("x").exit_code(), 1);
        assert_eq!(CommandError::Config(Diagnostics(Vec::new())).exit_code(), 1);
        assert_eq!(CommandError::Silent { code: 2 }.exit_code(), 2);
        let style = Style::plain();
        assert_eq!(CommandError::failed("boom").render(&style), "error: boom\n");
    }
}
