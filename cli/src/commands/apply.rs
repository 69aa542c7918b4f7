//! `vmctl apply`: lock the hosts, observe them, plan (or take a saved plan, refused when
//! stale), show the plan, ask, and carry it out with progress; a summary of what was
//! done, failed and skipped at the end.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use miette::miette;
use vmctl_planner::render::human;
use vmctl_planner::saved::SavedPlan;
use vmctl_planner::{PlanErrors, PlanOptions, Planned};
use vmctl_runtime::apply::{self, ApplyOptions};
use vmctl_runtime::hosts::Fleet;
use vmctl_schema::Config;

use crate::error::CommandError;
use crate::progress::{self, Progress};
use crate::render::Style;
use crate::run_json::{self, RunReport};
use crate::runtime::{self, chain};
use crate::signals;

/// Make the hosts match the config: plan, show the plan, ask, apply.
///
/// PATH is a config (a .kdl file or a folder) or a plan saved by `vmctl plan -o FILE`,
/// which is applied exactly as saved and refused when the config or a host moved since.
/// Independent actions run in parallel; a failed action skips what depends on it and
/// the rest finish. Ctrl-C starts no new actions and waits for the running ones; a
/// second Ctrl-C stops at once.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  vmctl apply examples/quickstart\n  vmctl apply . --auto-approve              # CI\n  vmctl plan . -o lab.plan && vmctl apply lab.plan\n\nExit codes: 0 success, 1 error or a failed action, 130 interrupted."
)]
pub struct Args {
    /// A .kdl file, a folder whose *.kdl files form one config, or a saved plan.
    #[arg(default_value = ".", env = "VMCTL_CONFIG")]
    pub path: PathBuf,

    #[command(flatten)]
    pub run: RunOptions,

    #[command(flatten)]
    pub reach: runtime::Reach,

    /// Only apply this resource and what it needs (`web-1` or `vm.web-1`). Repeatable.
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,

    /// Replace this resource even if nothing forces it. Repeatable.
    #[arg(long = "replace", value_name = "NAME")]
    pub replace: Vec<String>,
}

/// What `apply` and `destroy` share.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct RunOptions {
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long)]
    pub auto_approve: bool,

    /// Actions running at once on one host (hosts at once: `--host-parallelism`).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallelism: u16,

    /// How long to wait for another vmctl holding a host's lock: 0, 500ms, 1.5s, 1m30s, 5m.
    #[arg(long, value_name = "DUR", default_value = "0", value_parser = runtime::parse_duration)]
    pub lock_timeout: Duration,

    /// How long a VM gets to power off after the shutdown key before it is killed.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = runtime::parse_duration)]
    pub stop_timeout: Duration,

    /// Print what the run did as one JSON document on stdout (docs/apply-json.md);
    /// everything else (the plan, progress, the summary) goes to stderr.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args, style: &Style) -> Result<(), CommandError> {
    if let Some(saved) = read_saved(&args.path)? {
        return apply_saved(saved, &args.run, &args.reach, style);
    }
    let loaded = crate::config::load(&args.path, style)?;
    crate::files::check(&loaded, style)?;
    let config = loaded.config;
    let fleet = runtime::connect(&config, &args.reach, &args.path)?;
    let _locks = runtime::lock(&config, &fleet, args.run.lock_timeout)?;
    let live = runtime::observe(&config, &fleet)?;
    // Said before anything is applied; their steps fail, the rest is applied.
    runtime::report_problems(&live, style);
    let options = PlanOptions {
        targets: args.targets.clone(),
        replace: args.replace.clone(),
        destroy: false,
        exclude_hosts: args.reach.exclude_hosts.clone(),
        live_migration: vmctl_runtime::apply::LIVE_MIGRATION,
    };
    let planned =
        vmctl_planner::planned(&config, &live, &options).map_err(|e| plan_error(&e, style))?;
    execute(&config, &fleet, &planned, &args.run, style, "apply")?;
    runtime::left_alone(&config, &live)
}

/// A saved plan at `path`, if that is what it is (a file of JSON, not a config).
fn read_saved(path: &Path) -> Result<Option<SavedPlan>, CommandError> {
    if !path.is_file() || path.extension().is_some_and(|e| e == "kdl") {
        return Ok(None);
    }
    let Ok(text) = vmctl_schema::source::read_regular(path).map(String::from_utf8) else {
        return Ok(None);
    };
    let Ok(text) = text else {
        return Ok(None);
    };
    if !text.trim_start().starts_with('{') {
        return Ok(None);
    }
    SavedPlan::from_json(&text).map(Some).map_err(|e| {
        CommandError::Report(miette!(
            code = "vmctl::apply::saved_plan",
            help = "a saved plan is what `vmctl plan PATH -o FILE` wrote",
            "{} is not a plan vmctl can apply: {e}",
            path.display()
        ))
    })
}

fn apply_saved(
    saved: SavedPlan,
    run: &RunOptions,
    reach: &runtime::Reach,
    style: &Style,
) -> Result<(), CommandError> {
    // A saved plan leaves out the hosts it was made without, and only those.
    if !reach.exclude_hosts.is_empty() && reach.exclude_hosts != saved.options.exclude_hosts {
        return Err(CommandError::Report(miette!(
            code = "vmctl::apply::saved_plan",
            help = "a saved plan applies to the hosts it was made for: make a new plan with the `--exclude-host` you want, or apply this one without the flag",
            "this plan was made {}, not with the `--exclude-host` given now",
            if saved.options.exclude_hosts.is_empty() {
                "for every host".to_owned()
            } else {
                format!("leaving out {}", saved.options.exclude_hosts.join(", "))
            }
        )));
    }
    let reach = runtime::Reach {
        exclude_hosts: saved.options.exclude_hosts.clone(),
        ..reach.clone()
    };
    let loaded = crate::config::load(Path::new(&saved.source), style)?;
    crate::files::check(&loaded, style)?;
    let config = loaded.config;
    let fleet = runtime::connect(&config, &reach, Path::new(&saved.source))?;
    let _locks = runtime::lock(&config, &fleet, run.lock_timeout)?;
    let live = runtime::observe(&config, &fleet)?;
    saved.check(&config, &live).map_err(|e| {
        CommandError::Report(miette!(
            code = "vmctl::plan::stale",
            help = format!(
                "make a new plan with `vmctl plan {} -o FILE`, review it, and apply that",
                saved.source
            ),
            "{e}"
        ))
    })?;
    // The file's changes are trusted only when they are what the config plans: a
    // hand-edited name, path or action is refused before any step runs.
    let options = PlanOptions {
        targets: saved.options.targets.clone(),
        replace: saved.options.replace.clone(),
        destroy: saved.options.destroy,
        exclude_hosts: saved.options.exclude_hosts.clone(),
        live_migration: vmctl_runtime::apply::LIVE_MIGRATION,
    };
    let planned =
        vmctl_planner::planned(&config, &live, &options).map_err(|e| plan_error(&e, style))?;
    saved
        .verify(&planned.plan)
        .map_err(|e| CommandError::Report(e.into()))?;
    // The saved plan was the approval (as in Terraform): no question asked again.
    let approved = RunOptions {
        auto_approve: true,
        ..*run
    };
    let verb = if saved.options.destroy {
        "destroy"
    } else {
        "apply"
    };
    execute(&config, &fleet, &planned, &approved, style, verb)?;
    runtime::left_alone(&config, &live)
}

/// Shows `plan`, asks, and carries it out (the caller holds the hosts' locks).
pub fn execute(
    config: &Config,
    fleet: &Fleet,
    planned: &Planned,
    run: &RunOptions,
    style: &Style,
    verb: &str,
) -> Result<(), CommandError> {
    let Planned { plan, graph } = planned;
    print!("{}", human::render(plan, style.stdout));
    runtime::print_shipping(plan, fleet);
    if !plan.has_changes() {
        if run.json {
            let nothing = apply::ApplyReport::default();
            run_json::emit(&RunReport::of(verb, &config.project, &nothing, 0));
        }
        return Ok(());
    }
    confirm(run.auto_approve, verb)?;
    let options = ApplyOptions {
        parallelism: apply::Parallelism {
            per_host: usize::from(run.parallelism),
            hosts: fleet.parallelism(),
        },
        stop_timeout: run.stop_timeout,
    };
    signals::install();
    let tty = std::io::stderr().is_terminal();
    let progress = Progress::new(graph.graph.node_count(), tty);
    let started = Instant::now();
    let report = apply::apply(
        config,
        fleet,
        plan,
        graph,
        options,
        &progress,
        &signals::CANCEL,
    )
    .map_err(|e| CommandError::Report(miette!(code = "vmctl::apply::failed", "{}", chain(&e))))?;
    progress.finish();
    let elapsed = started.elapsed().as_secs_f64();
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    println!();
    runtime::print_notes(&report);
    for (step, error) in &report.failed {
        eprintln!(
            "error: {step} on host {:?} failed: {}",
            step.host,
            chain(error)
        );
        if let Some(help) = runtime::step_help(error) {
            eprintln!("  help: {help}");
        }
    }
    if !report.skipped.is_empty() {
        let why = if report.cancelled {
            "interrupted"
        } else {
            "skipped: what they need failed"
        };
        let names: Vec<String> = report.skipped.iter().map(|s| s.to_string()).collect();
        eprintln!("{why}: {}", names.join(", "));
    }
    let summary = format!(
        "{} {}: {} done, {} failed, {} skipped in {elapsed:.1}s.",
        capitalize(verb),
        if report.succeeded() {
            "complete"
        } else {
            "incomplete"
        },
        report.done.len(),
        report.failed.len(),
        report.skipped.len()
    );
    if tty {
        println!("{summary}");
    } else {
        progress::plain(&summary);
    }
    if !report.succeeded() {
        println!("Run `vmctl plan` to see what is left.");
    }
    // Last: stdout is the report's alone from here on.
    if run.json {
        run_json::emit(&RunReport::of(verb, &config.project, &report, elapsed_ms));
    }
    if report.cancelled || signals::CANCEL.load(Ordering::SeqCst) {
        return Err(CommandError::Silent { code: 130 });
    }
    if !report.failed.is_empty() {
        return Err(CommandError::Silent { code: 1 });
    }
    Ok(())
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
        .unwrap_or_default()
}

/// Asks for `yes` on a terminal; refuses without one unless `--auto-approve`.
fn confirm(auto_approve: bool, verb: &str) -> Result<(), CommandError> {
    if auto_approve {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CommandError::Report(miette!(
            code = "vmctl::apply::not_confirmed",
            help = format!("pass --auto-approve to {verb} without asking (as CI does)"),
            "refusing to {verb} without confirmation: stdin is not a terminal to ask on"
        )));
    }
    print!(
        "\nDo you want to perform these actions?\n  vmctl will {verb} exactly the actions above. Only 'yes' will be accepted.\n\n  Enter a value: "
    );
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if answer.trim() == "yes" {
        println!();
        Ok(())
    } else {
        eprintln!("\n{} cancelled.", capitalize(verb));
        Err(CommandError::Silent { code: 1 })
    }
}

/// Prints every planning error as a diagnostic; the exit code is 1.
pub fn plan_error(errors: &PlanErrors, style: &Style) -> CommandError {
    for error in &errors.errors {
        eprint!("{}", style.diagnostic(error));
        eprintln!();
    }
    eprintln!("error: {errors}");
    CommandError::Silent { code: 1 }
}
