//! The files a config names (`kernel`, `initrd`, `from`), checked by `plan` and `apply`
//! before anything is planned or applied, each problem a diagnostic pointing at its
//! setting. The checking is the runtime's ([`vmctl_runtime::host::files`]); this module
//! only turns its findings into diagnostics.

use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};
use vmctl_runtime::host::files::{self, FileError, FileProblem, Owner};
use vmctl_schema::{Kind, Loaded, Note, Site};

use crate::error::CommandError;
use crate::render::Style;

/// Checks the files `loaded` names; prints every problem and fails when there is one.
/// The vms of one template (or one `count`) that name the same file at the same
/// setting get one diagnostic, its note naming them.
pub fn check(loaded: &Loaded, style: &Style) -> Result<(), CommandError> {
    let problems = files::check_files(&loaded.config);
    if problems.is_empty() {
        return Ok(());
    }
    let mut groups: Vec<(Option<Site>, Vec<&FileProblem>)> = Vec::new();
    for problem in &problems {
        let site = site_of(loaded, problem);
        let same = |(s, g): &&mut (Option<Site>, Vec<&FileProblem>)| {
            *s == site
                && g.first().is_some_and(|p| {
                    p.owner == problem.owner
                        && p.setting == problem.setting
                        && p.error.to_string() == problem.error.to_string()
                })
        };
        match groups.iter_mut().find(|g| site.is_some() && same(g)) {
            Some((_, group)) => group.push(problem),
            None => groups.push((site, vec![problem])),
        }
    }
    for (site, group) in &groups {
        let names: Vec<&str> = group.iter().map(|p| p.name.as_str()).collect();
        if let Some(first) = group.first() {
            eprint!(
                "{}",
                style.diagnostic(&diagnostic(loaded, *site, first, &names))
            );
            eprintln!();
        }
    }
    let n = groups.len();
    eprintln!(
        "error: {n} file{} named by the config cannot be used; nothing was planned",
        if n == 1 { "" } else { "s" }
    );
    Err(CommandError::Silent { code: 1 })
}

fn kind_of(owner: Owner) -> (Kind, &'static str) {
    match owner {
        Owner::Vm => (Kind::Vm, "vm"),
        Owner::Volume => (Kind::Volume, "volume"),
    }
}

/// Where the problem's setting is written (in the resource, or in its template).
fn site_of(loaded: &Loaded, problem: &FileProblem) -> Option<Site> {
    let (kind, _) = kind_of(problem.owner);
    let spans = loaded.spans_of(kind, &problem.name)?;
    Some(spans.field_or_name(problem.setting, 0))
}

/// One file problem as a diagnostic on its setting.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct FileDiagnostic {
    message: String,
    code: &'static str,
    help: &'static str,
    label: Option<(SourceSpan, &'static str)>,
    source: Option<NamedSource<Arc<str>>>,
    #[source]
    note: Option<Note>,
}

impl Diagnostic for FileDiagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new(self.help))
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let (span, label) = self.label?;
        Some(Box::new(std::iter::once(LabeledSpan::at(span, label))))
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
}

/// The diagnostic of `problem`, found also in the other resources of `names`.
fn diagnostic(
    loaded: &Loaded,
    site: Option<Site>,
    problem: &FileProblem,
    names: &[&str],
) -> FileDiagnostic {
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
    let (kind, what) = kind_of(problem.owner);
    let message = match names.len() {
        1 => format!(
            "`{}` of {what} `{}`: {}",
            problem.setting, problem.name, problem.error
        ),
        n => format!("`{}` of {n} {what}s: {}", problem.setting, problem.error),
    };
    FileDiagnostic {
        message,
        code,
        help,
        label: site.map(|s| (s.span, label)),
        source: site.and_then(|s| loaded.source_of(s)),
        note: site.and_then(|s| loaded.note(kind, names, s)).map(Note),
    }
}
