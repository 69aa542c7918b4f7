//! `vmctl apply --json` and `vmctl destroy --json`: what a run did, as one JSON document
//! on stdout when it ends (docs/apply-json.md: format [`FORMAT_VERSION`]).
//!
//! Everything for people — the plan, progress, notes, the summary, a confirmation
//! prompt — goes to stderr meanwhile: [`begin`] points the process's stdout (fd 1) at
//! stderr for the whole command and keeps the real stdout for [`emit`], so no line of a
//! command that prints (now or later) can land in the document.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Mutex;

use serde::Serialize;
use vmctl_runtime::apply::{ApplyReport, StepNote};

use crate::runtime::chain;

/// The report's format: a new field is a minor version, a changed one a major.
pub const FORMAT_VERSION: &str = "1.0";

/// The real stdout while [`begin`] has pointed fd 1 at stderr.
static REAL_STDOUT: Mutex<Option<File>> = Mutex::new(None);

/// Points stdout at stderr until [`emit`]; the real stdout is kept for the report.
pub fn begin() -> std::io::Result<()> {
    std::io::stdout().flush()?;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on fd 1 touches no memory; a new fd or -1.
    let saved = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    if saved < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `saved` is a descriptor this process just made and owns alone.
    let saved = unsafe { File::from_raw_fd(saved) };
    // SAFETY: dup2 onto fd 1 replaces what fd 1 was (kept in `saved`).
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if let Ok(mut real) = REAL_STDOUT.lock() {
        *real = Some(saved);
    }
    Ok(())
}

/// Writes `doc` and a newline to the real stdout, and points stdout back at it.
pub fn emit(doc: &impl Serialize) {
    let _ = std::io::stdout().flush();
    let text = serde_json::to_string_pretty(doc).unwrap_or_else(|e| {
        serde_json::json!({"format_version": FORMAT_VERSION, "error": e.to_string()}).to_string()
    });
    let real = REAL_STDOUT.lock().ok().and_then(|mut r| r.take());
    match real {
        Some(real) => {
            // SAFETY: dup2 of a descriptor this process owns onto fd 1.
            unsafe { libc::dup2(real.as_raw_fd(), 1) };
            let mut out = &real;
            let _ = writeln!(out, "{text}");
        }
        None => println!("{text}"),
    }
}

/// The document.
#[derive(Debug, Serialize)]
pub struct RunReport<'a> {
    pub format_version: &'static str,
    /// `apply` or `destroy`.
    pub verb: &'a str,
    pub project: &'a str,
    /// Every step of the plan done (true also for a plan without changes).
    pub complete: bool,
    /// Stopped early by Ctrl-C.
    pub cancelled: bool,
    /// From the start of the first step to the end of the last.
    pub elapsed_ms: u64,
    pub summary: Summary,
    /// Every step of the plan, in the order it ended (skipped ones last).
    pub steps: Vec<StepResult>,
    /// What steps that went well had to say: a VM's migration figures, a moved
    /// volume's bytes, a kept directory, a removed netns.
    pub notes: Vec<NoteOf<'a>>,
}

/// How many steps ended each way.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// One step and how it ended.
#[derive(Debug, Serialize)]
pub struct StepResult {
    /// `create vm.web-1`, as the progress lines name it.
    pub step: String,
    pub host: String,
    /// `done`, `failed` or `skipped`.
    pub result: &'static str,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A step's note, with its step and host.
#[derive(Debug, Serialize)]
pub struct NoteOf<'a> {
    pub step: String,
    pub host: String,
    #[serde(flatten)]
    pub note: &'a StepNote,
}

impl<'a> RunReport<'a> {
    /// The report of `report`, a run of `verb` on `project` that took `elapsed_ms`.
    pub fn of(verb: &'a str, project: &'a str, report: &'a ApplyReport, elapsed_ms: u64) -> Self {
        let ended = |step: &vmctl_planner::Step, result, error| StepResult {
            step: step.to_string(),
            host: step.host.clone(),
            result,
            error,
        };
        let steps = report
            .done
            .iter()
            .map(|s| ended(s, "done", None))
            .chain(
                report
                    .failed
                    .iter()
                    .map(|(s, e)| ended(s, "failed", Some(chain(e)))),
            )
            .chain(report.skipped.iter().map(|s| ended(s, "skipped", None)))
            .collect();
        RunReport {
            format_version: FORMAT_VERSION,
            verb,
            project,
            complete: report.succeeded() && !report.cancelled,
            cancelled: report.cancelled,
            elapsed_ms,
            summary: Summary {
                done: report.done.len(),
                failed: report.failed.len(),
                skipped: report.skipped.len(),
            },
            steps,
            notes: report
                .notes
                .iter()
                .map(|(step, note)| NoteOf {
                    step: step.to_string(),
                    host: step.host.clone(),
                    note,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_note_is_flattened_with_its_step() {
        let report = ApplyReport::default();
        let note = StepNote::VmMigrated {
            name: "web-1".into(),
            from: "a".into(),
            pause_ms: 31,
            save_ms: 4,
            total_ms: 412,
            rounds: 1,
            converged: true,
            budget_ms: 300,
            memory_bytes: 1 << 20,
            paused_bytes: 4096,
            disk_bytes: 0,
            disk_paused_bytes: 0,
        };
        let mut doc = RunReport::of("apply", "lab", &report, 412);
        doc.notes.push(NoteOf {
            step: "migrate vm.web-1".into(),
            host: "b".into(),
            note: &note,
        });
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(v["format_version"], "1.0");
        assert_eq!(v["complete"], true);
        assert_eq!(v["summary"]["done"], 0);
        let n = &v["notes"][0];
        assert_eq!(n["note"], "vm-migrated");
        assert_eq!(n["host"], "b");
        assert_eq!(n["pause-ms"], 31);
        assert_eq!(n["total-ms"], 412);
        assert_eq!(n["converged"], true);
    }
}
