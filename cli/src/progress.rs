//! Progress of an apply, drawn from the runtime's hook: on a terminal an indicatif
//! display (a spinner line per running action above an overall bar); otherwise plain
//! timestamped lines, one when an action starts and one when it ends.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use vmctl_planner::Step;
use vmctl_runtime::apply::{Hook, StepError, StepProgress};

use crate::runtime::chain;

/// The CLI's hook.
pub struct Progress {
    display: Option<Display>,
    started: Mutex<HashMap<String, Instant>>,
}

struct Display {
    multi: MultiProgress,
    overall: ProgressBar,
    lines: Mutex<HashMap<String, ProgressBar>>,
}

fn key(step: &Step) -> String {
    format!("{} {}", step.host, step)
}

impl Progress {
    /// `tty`: draw with indicatif (on stderr); else plain lines on stdout.
    pub fn new(total: usize, tty: bool) -> Progress {
        let display = tty.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(total as u64));
            overall.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} actions, {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            Display {
                multi,
                overall,
                lines: Mutex::new(HashMap::new()),
            }
        });
        Progress {
            display,
            started: Mutex::new(HashMap::new()),
        }
    }

    /// Clears the display before the summary.
    pub fn finish(&self) {
        if let Some(d) = &self.display {
            d.overall.finish_and_clear();
            let _ = d.multi.clear();
        }
    }

    fn elapsed(&self, step: &Step) -> Duration {
        self.started
            .lock()
            .ok()
            .and_then(|m| m.get(&key(step)).map(Instant::elapsed))
            .unwrap_or_default()
    }
}

impl Hook for Progress {
    fn pre_apply(&self, step: &Step) {
        if let Ok(mut started) = self.started.lock() {
            started.insert(key(step), Instant::now());
        }
        match &self.display {
            Some(d) => {
                let line = d
                    .multi
                    .insert_before(&d.overall, ProgressBar::new_spinner());
                line.set_style(
                    ProgressStyle::with_template("  {spinner} {msg} ({elapsed})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                line.set_message(step.to_string());
                line.enable_steady_tick(Duration::from_millis(120));
                if let Ok(mut lines) = d.lines.lock() {
                    lines.insert(key(step), line);
                }
            }
            None => plain(&format!("{step}: started")),
        }
    }

    fn progress(&self, step: &Step, what: &StepProgress) {
        let text = match what {
            StepProgress::Migration {
                round,
                sent_bytes,
                dirty_bytes_per_s,
                expected_pause_ms,
            } => format!(
                "{step}: pre-copy round {round}, {} sent, the guest writes {}/s, pause expected {expected_pause_ms} ms",
                vmctl_schema::capacity::human(*sent_bytes),
                vmctl_schema::capacity::human(*dirty_bytes_per_s)
            ),
        };
        match &self.display {
            Some(d) => {
                if let Some(line) = d.lines.lock().ok().and_then(|l| l.get(&key(step)).cloned()) {
                    line.set_message(text);
                }
            }
            None => plain(&text),
        }
    }

    fn post_apply(&self, step: &Step, result: &Result<(), StepError>) {
        let secs = self.elapsed(step).as_secs_f64();
        let text = match result {
            Ok(()) => format!("{step}: done in {secs:.2}s"),
            Err(e) => format!("{step}: FAILED after {secs:.2}s: {}", chain(e)),
        };
        match &self.display {
            Some(d) => {
                if let Some(line) = d.lines.lock().ok().and_then(|mut l| l.remove(&key(step))) {
                    line.finish_and_clear();
                    d.multi.remove(&line);
                }
                let mark = if result.is_ok() { "✓" } else { "✗" };
                let _ = d.multi.println(format!("{mark} {text}"));
                d.overall.inc(1);
            }
            None => plain(&text),
        }
    }
}

/// A line with a UTC time stamp: `[12:04:05.123] …`.
pub fn plain(text: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ms = now.as_millis() % 86_400_000;
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[{h:02}:{m:02}:{s:02}.{ms:03}] {text}");
    let _ = out.flush();
}
