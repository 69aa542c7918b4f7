//! The files a config names (`kernel`, `initrd`, `from`), checked by `plan` and `apply`
//! before anything is planned or applied, each problem a diagnostic pointing at its
//! setting. The checking is the runtime's ([`vmctl_runtime::host::files`]); this module
//! only turns its findings into diagnostics.

use miette::{LabeledSpan, MietteDiagnostic, Report};
use vmctl_runtime::host::files::{self, FileError, FileProblem, Owner};
use vmctl_schema::{Kind, Loaded};

use crate::error::CommandError;
use crate::render::Style;

/// Checks the files `loaded` names; prints every problem and fails when there is one.
pub fn check(loaded: &Loaded, style: &Style) -> Result<(), CommandError> {
    let problems = files::check_files(&loaded.config);
    if problems.is_empty() {
        return Ok(());
    }
    for problem in &problems {
        eprint!("{}", style.diagnostic(diagnostic(loaded, problem).as_ref()));
        eprintln!();
    }
    let n = problems.len();
    eprintln!(
        "error: {n} file{} named by the config cannot be used; nothing was planned",
        if n == 1 { "" } else { "s" }
    );
    Err(CommandError::Silent { code: 1 })
}

fn diagnostic(loaded: &Loaded, problem: &FileProblem) -> Report {
    let (code, label, help) = match &problem.error {
        FileError::Missing { .. } => (
            "vmctl::plan::file_missing",
            "no such file",
            "fix the path (relative paths start at the folder of the file that declares them), or put the file there",
        ),
        FileError::NotRegular { .. } => (
            "vmctl::plan::file_not_regular",
            "not a regular file",
            "name a regular file (or a symlink to one): a FIFO, a device or a directory cannot be read to its end",
        ),
        FileError::Unreadable { .. } => (
            "vmctl::plan::file_unreadable",
            "cannot be read",
            "make the file readable by the user running vmctl",
        ),
        FileError::NotAKernel { .. } => (
            "vmctl::plan::not_a_kernel",
            "not a kernel",
            "`kernel` takes an uncompressed ELF64 x86-64 vmlinux or a bzImage",
        ),
    };
    let (kind, what) = match problem.owner {
        Owner::Vm => (Kind::Vm, "vm"),
        Owner::Volume => (Kind::Volume, "volume"),
    };
    let message = format!(
        "`{}` of {what} `{}`: {}",
        problem.setting, problem.name, problem.error
    );
    let mut diagnostic = MietteDiagnostic::new(message)
        .with_code(code)
        .with_help(help);
    let spans = loaded.spans_of(kind, &problem.name);
    let source = spans.and_then(|s| {
        let span = s.field_or_name(problem.setting, 0);
        diagnostic = diagnostic.clone().with_label(LabeledSpan::at(span, label));
        loaded.source_of(s.site(span))
    });
    match source {
        Some(source) => Report::new(diagnostic).with_source_code(source),
        None => Report::new(diagnostic),
    }
}
