//! `vmctl status`: every resource of the project, live, as the hosts report it — a VM
//! `running`, `stopped` or `crashed`; anything `missing` (in the config, not on its
//! host), `drifted` (on its host, different from the config) or `not-in-config`; the
//! rest `ok`. Read-only: no lock, no changes.

use std::path::PathBuf;

use serde_json::json;
use vmctl_planner::{Action, Change, PlanOptions, VmStatus};

use crate::commands::apply::plan_error;
use crate::error::CommandError;
use crate::render::Style;
use crate::runtime;

/// Show every resource of the project as it is live on its host.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  vmctl status examples/quickstart\n  vmctl status . --json\n\nExit codes: 0 success, 1 error."
)]
pub struct Args {
    /// A .kdl file, or a folder whose *.kdl files form one config.
    #[arg(default_value = ".")]
    pub path: PathBuf,

    /// Print JSON: {"project", "resources": [{kind, name, host, state, attributes}]}.
    #[arg(long)]
    pub json: bool,
}

/// One resource's line.
struct Row {
    kind: String,
    name: String,
    host: String,
    state: &'static str,
    /// The attributes that differ from the config.
    attributes: Vec<String>,
}

fn vm_state(status: Option<VmStatus>) -> &'static str {
    match status {
        Some(VmStatus::Running) => "running",
        Some(VmStatus::Stopped) | None => "stopped",
        Some(VmStatus::Crashed) => "crashed",
    }
}

fn row(change: &Change) -> Row {
    let is_vm = change.id.kind == vmctl_planner::ResourceKind::Vm;
    let state = match change.action {
        Action::Create => "missing",
        Action::Delete => "not-in-config",
        Action::Update | Action::Replace if !change.attributes.is_empty() => "drifted",
        _ if is_vm => vm_state(change.status),
        _ => "ok",
    };
    Row {
        kind: change.id.kind.to_string(),
        name: change.id.name.clone(),
        host: change.host.clone(),
        state,
        attributes: change.attributes.iter().map(|a| a.name.clone()).collect(),
    }
}

pub fn run(args: &Args, style: &Style) -> Result<(), CommandError> {
    let config = vmctl_schema::load(&args.path)?.config;
    let live = runtime::observe(&config)?;
    let plan = vmctl_planner::plan(&config, &live, &PlanOptions::default())
        .map_err(|e| plan_error(&e, style))?;
    let mut rows: Vec<Row> = plan.changes.iter().map(row).collect();
    rows.sort_by(|a, b| {
        let rank = |k: &str| {
            ["pool", "network", "volume", "vlan", "vm"]
                .iter()
                .position(|x| *x == k)
        };
        (rank(&a.kind), &a.host, &a.name).cmp(&(rank(&b.kind), &b.host, &b.name))
    });
    if args.json {
        let resources: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "kind": r.kind,
                    "name": r.name,
                    "host": r.host,
                    "state": r.state,
                    "attributes": r.attributes,
                })
            })
            .collect();
        let out = json!({"project": config.project, "resources": resources});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    let width = rows
        .iter()
        .map(|r| r.kind.len() + 1 + r.name.len())
        .max()
        .unwrap_or(0)
        .max(8);
    println!(
        "{:<width$}  {:<8}  {:<13}  DETAIL",
        "RESOURCE", "HOST", "STATE"
    );
    for r in &rows {
        let address = format!("{}.{}", r.kind, r.name);
        let detail = if r.attributes.is_empty() {
            String::new()
        } else {
            format!("differs: {}", r.attributes.join(", "))
        };
        println!(
            "{address:<width$}  {:<8}  {:<13}  {detail}",
            r.host, r.state
        );
    }
    Ok(())
}
