//! `vmctl plan`: the config against the live state of every host, as the actions `apply`
//! would take, for people (Terraform's habits), for machines (`--json`) and for later
//! (`-o FILE`).

use std::path::{Path, PathBuf};

use vmctl_planner::render::{human, json};
use vmctl_planner::saved::{SavedOptions, SavedPlan};
use vmctl_planner::{ApplyGraph, LiveFile, Plan, PlanErrors, PlanOptions};
use vmctl_schema::Config;

use crate::error::CommandError;
use crate::render::Style;

/// Show what `apply` would change: create, update in place, replace, destroy, start or
/// stop, each attribute change marked `# forces restart` or `# forces replacement`.
///
/// The live state of every host is observed on the host itself (its pools, volumes,
/// bridges, VLANs and VMs); `--live FILE` plans against a saved live state instead
/// (`{"hosts": {"local": {…}}}`, a host the file does not name has nothing on it).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  vmctl plan examples/quickstart\n  vmctl plan . --detailed-exitcode   # CI drift check\n  vmctl plan . --json > plan.json\n  vmctl plan . -o lab.plan           # for `vmctl apply lab.plan`\n  vmctl plan . --target vm.web-1\n  vmctl plan . --live live.json      # offline, against a saved live state\n\nExit codes: 0 success (with --detailed-exitcode: no changes), 1 error,\n2 changes present (only with --detailed-exitcode).\n\nThe --json format is documented in planner/PLAN-JSON.md."
)]
pub struct Args {
    /// A .kdl file, or a folder whose *.kdl files form one config.
    #[arg(default_value = ".", env = "VMCTL_CONFIG")]
    pub path: PathBuf,

    #[command(flatten)]
    pub planning: Planning,

    /// Print the plan as JSON (versioned: `format_version`) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,

    /// Also save the plan to FILE, for `vmctl apply FILE`; apply refuses it once the
    /// config or a host's live state has moved.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// The options `plan` and `graph` share.
#[derive(Debug, clap::Args)]
pub struct Planning {
    #[command(flatten)]
    pub reach: crate::runtime::Reach,

    /// Read the live state of every host from this JSON file instead of observing the
    /// hosts.
    #[arg(long, value_name = "FILE")]
    pub live: Option<PathBuf>,

    /// Only plan this resource and what it needs: a name (`web-1`) or an address
    /// (`vm.web-1`). Repeatable.
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,

    /// Replace this resource even if nothing forces it (a VM restarts; a volume is
    /// recreated empty or from its base image). Repeatable.
    #[arg(long = "replace", value_name = "NAME")]
    pub replace: Vec<String>,
}

/// A plan with what it was made from.
pub struct Planned {
    pub config: Config,
    pub live: LiveFile,
    pub plan: Plan,
    pub graph: ApplyGraph,
    /// The hosts as reached for the plan (none with `--live`).
    pub fleet: Option<vmctl_runtime::hosts::Fleet>,
}

pub fn run(args: &Args, style: &Style) -> Result<(), CommandError> {
    let mut planned = make(&args.path, &args.planning, style)?;
    let Planned {
        config, live, plan, ..
    } = &planned;
    if args.json {
        print!("{}", json::render(plan, &planned.graph));
    } else {
        print!("{}", human::render(plan, style.stdout));
        if let Some(fleet) = &planned.fleet {
            crate::runtime::print_shipping(plan, fleet);
        }
    }
    if let Some(out) = &args.out {
        let options = SavedOptions {
            targets: args.planning.targets.clone(),
            replace: args.planning.replace.clone(),
            destroy: false,
            exclude_hosts: args.planning.reach.exclude_hosts.clone(),
        };
        // Absolute, so the plan applies from any working directory.
        let source = std::path::absolute(&args.path).unwrap_or_else(|_| args.path.clone());
        let source = source.display().to_string();
        let saved = SavedPlan::new(source, config, live, options, plan.clone());
        std::fs::write(out, saved.to_json()).map_err(|e| CommandError::Failed {
            message: format!("cannot write the plan to {}: {e}", out.display()),
            hint: None,
        })?;
        if !args.json {
            println!(
                "\nSaved the plan to {}. To perform exactly these actions, run: vmctl apply {}",
                out.display(),
                out.display()
            );
        }
    }
    let changed = plan.has_changes();
    let problems = if args.planning.live.is_none() {
        crate::runtime::report_problems(live, style)
    } else {
        0
    };
    // The hosts' connections end properly (their ssh masters, their control dir)...
    drop(planned.fleet.take());
    // ...but the process ends now: freeing a 10,000-VM plan piece by piece would only
    // cost time.
    std::mem::forget(planned);
    if problems > 0 {
        eprintln!(
            "error: {problems} resource(s) cannot be applied as they are; apply would fail for them and what needs them"
        );
        return Err(CommandError::Silent { code: 1 });
    }
    if args.detailed_exitcode && changed {
        return Err(CommandError::Silent { code: 2 });
    }
    Ok(())
}

/// Loads the config and the live state and plans; errors are printed as diagnostics.
pub fn make(path: &Path, planning: &Planning, style: &Style) -> Result<Planned, CommandError> {
    let mut fleet = None;
    let (loaded, live) = match planning.live.as_deref() {
        // The live state's JSON is read while the config's files are parsed.
        Some(live_path) => std::thread::scope(|scope| {
            let live = scope.spawn(|| read_live(live_path));
            let loaded = vmctl_schema::load(path);
            if let Ok(loaded) = &loaded {
                crate::config::warn(loaded, style);
            }
            let live = live
                .join()
                .unwrap_or_else(|_| Err(CommandError::failed("reading the live state panicked")));
            (loaded, live)
        }),
        None => {
            let loaded = crate::config::load(path, style)?;
            // The files the config names, before the hosts (offline, `--live`, skips both).
            crate::files::check(&loaded, style)?;
            let live =
                crate::runtime::connect(&loaded.config, &planning.reach, path).and_then(|f| {
                    let live = crate::runtime::observe(&loaded.config, &f);
                    fleet = Some(f);
                    live
                });
            (Ok(loaded), live)
        }
    };
    let (loaded, live) = (loaded?, live?);
    let options = PlanOptions {
        targets: planning.targets.clone(),
        replace: planning.replace.clone(),
        destroy: false,
        exclude_hosts: planning.reach.exclude_hosts.clone(),
        live_migration: vmctl_runtime::apply::LIVE_MIGRATION,
    };
    let config = loaded.config;
    for host in live.hosts.keys() {
        if !config.hosts.iter().any(|h| &h.name == host) {
            eprintln!(
                "warning: the live state names host {host:?}, which the config does not have; \
                 it is not planned"
            );
        }
    }
    let vmctl_planner::Planned { plan, graph } =
        vmctl_planner::planned(&config, &live, &options).map_err(|e| report(&e, style))?;
    Ok(Planned {
        config,
        live,
        plan,
        graph,
        fleet,
    })
}

fn read_live(path: &Path) -> Result<LiveFile, CommandError> {
    let text = vmctl_schema::source::read_regular(path)
        .and_then(|bytes| {
            String::from_utf8(bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
        .map_err(|e| CommandError::Failed {
            message: format!("cannot read the live state {}: {e}", path.display()),
            hint: None,
        })?;
    LiveFile::from_json(&text).map_err(|e| CommandError::Failed {
        message: format!("the live state {} is not valid: {e}", path.display()),
        hint: Some(
            "write it as {\"hosts\": {\"<host>\": {\"pools\": [], \"networks\": [], \"volumes\": [], \"vlans\": [], \"vms\": []}}} (a host left out has nothing on it)"
                .into(),
        ),
    })
}

/// Prints every planning error as a diagnostic; the exit code is 1.
fn report(errors: &PlanErrors, style: &Style) -> CommandError {
    for error in &errors.errors {
        eprint!("{}", style.diagnostic(error));
        eprintln!();
    }
    eprintln!("error: {errors}");
    CommandError::Silent { code: 1 }
}
