//! `vmctl status`: every resource of the project, live, as the hosts report it — a VM
//! `running`, `stopped` or `crashed`; anything `missing` (in the config, not on its
//! host), `drifted` (on its host, different from the config), `not-in-config`, or
//! `unreadable` (its record cannot be read: the detail says why, the warning above the
//! table how to repair it); the rest `ok`. Read-only: no lock, no changes.
//!
//! DETAIL of a resource that is there and as configured: a VM's pid and uptime while it
//! runs, its cpus, memory, taps and MACs; a volume's size and allocated bytes; a
//! VLAN's id and gateway; a DHCP server's dnsmasq pid; a network's bridge; a pool's
//! path. `--json` carries the same under `detail`, numbers as numbers (bytes, seconds).

use std::path::PathBuf;

use serde_json::{json, Map, Value};
use vmctl_planner::{Action, Change, LiveFile, VmStatus};
use vmctl_runtime::apply::HostSeen;
use vmctl_runtime::host::proc;
use vmctl_schema::units::format_size as human;

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
    #[arg(default_value = ".", env = "VMCTL_CONFIG")]
    pub path: PathBuf,

    /// Print JSON: {"project", "resources": [{kind, name, host, state, attributes,
    /// detail}]}.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub reach: runtime::Reach,
}

/// One resource's line.
struct Row {
    kind: String,
    name: String,
    host: String,
    state: &'static str,
    /// The attributes that differ from the config.
    attributes: Vec<String>,
    /// What the host reports of it, as JSON values in display order (see the module doc).
    detail: Vec<(&'static str, Value)>,
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
        detail: Vec::new(),
    }
}

/// What `seen` reports of the resource of `row`.
fn detail(row: &Row, seen: &HostSeen) -> Vec<(&'static str, Value)> {
    let mut d = Vec::new();
    match row.kind.as_str() {
        "vm" => {
            let Some(vm) = seen.live.vms.iter().find(|v| v.name == row.name) else {
                return d;
            };
            // Both as the VM's host says: its pid there, and how long it has run.
            if let Some(pid) = vm.pid {
                d.push(("pid", pid.into()));
                if let Some(up) = vm.uptime_seconds {
                    d.push(("uptime-seconds", up.into()));
                }
            }
            d.push(("cpus", vm.spec.cpus.into()));
            d.push(("memory", vm.spec.memory.into()));
            let mut taps: Vec<_> = seen.taps.iter().filter(|t| t.vm == row.name).collect();
            taps.sort_by_key(|t| t.nic);
            let taps: Vec<Value> = taps.iter().map(|t| t.ifname.clone().into()).collect();
            d.push(("taps", taps.into()));
            let macs: Vec<Value> = vm.spec.nics.iter().map(|n| n.mac.clone().into()).collect();
            d.push(("macs", macs.into()));
            let ips: Vec<Value> = vm
                .spec
                .nics
                .iter()
                .filter_map(|n| Some(n.ip?.to_string().into()))
                .collect();
            if !ips.is_empty() {
                d.push(("ips", ips.into()));
            }
        }
        "volume" => {
            if let Some(v) = seen.live.volumes.iter().find(|v| v.name == row.name) {
                d.push(("size", v.size.into()));
                if let Some(allocated) = v.allocated {
                    d.push(("allocated", allocated.into()));
                }
            }
        }
        "vlan" => {
            if let Some(v) = seen.live.vlans.iter().find(|v| v.name == row.name) {
                d.push(("id", v.id.into()));
                if let Some(gateway) = &v.gateway {
                    d.push(("gateway", gateway.clone().into()));
                }
            }
        }
        "dhcp" => {
            // dnsmasq's pid while it runs (proven vmctl's, see `host::dhcp`).
            if let Some(pid) = seen
                .live
                .dhcp
                .iter()
                .find(|d| d.name == row.name)
                .and_then(|d| d.pid)
            {
                d.push(("pid", pid.into()));
            }
        }
        "network" => {
            if let Some(n) = seen.live.networks.iter().find(|n| n.name == row.name) {
                d.push(("bridge", n.bridge.clone().into()));
            }
        }
        "pool" => {
            if let Some(p) = seen.live.pools.iter().find(|p| p.name == row.name) {
                d.push(("path", p.path.display().to_string().into()));
            }
        }
        "firewall" => {
            if let Some(f) = seen.live.firewalls.iter().find(|f| f.name == row.name) {
                d.push(("table", format!("inet {}", f.table).into()));
                let uplinks: Vec<Value> = f.uplinks.iter().map(|u| u.clone().into()).collect();
                d.push(("uplinks", uplinks.into()));
            }
        }
        _ => {}
    }
    d
}

/// DETAIL as a line: `pid=1234 uptime=4m10s cpus=2 memory=256MiB taps=vt… macs=52:…`.
fn detail_text(detail: &[(&str, Value)]) -> String {
    let mut parts = Vec::new();
    for (key, value) in detail {
        let text = match (*key, value) {
            ("uptime-seconds", Value::Number(n)) => {
                let secs = n.as_u64().unwrap_or(0);
                parts.push(format!(
                    "uptime={}",
                    proc::human_duration(std::time::Duration::from_secs(secs))
                ));
                continue;
            }
            ("memory" | "size" | "allocated", Value::Number(n)) => human(n.as_u64().unwrap_or(0)),
            (_, Value::Array(items)) if items.is_empty() => continue,
            (_, Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(","),
            (_, Value::String(s)) => s.clone(),
            (_, other) => other.to_string(),
        };
        parts.push(format!("{key}={text}"));
    }
    parts.join(" ")
}

/// A row per resource of the project whose record cannot be read.
fn unreadable_rows(project: &str, live: &LiveFile) -> Vec<Row> {
    let mut rows = Vec::new();
    for (host, state) in &live.hosts {
        for u in state.unreadable.iter().filter(|u| u.project == project) {
            let detail = vec![
                ("path", u.path.display().to_string().into()),
                ("error", u.error.clone().into()),
                ("help", u.help.clone().into()),
            ];
            rows.push(Row {
                kind: u.kind.to_string(),
                name: u.name.clone(),
                host: host.clone(),
                state: "unreadable",
                attributes: Vec::new(),
                detail,
            });
        }
    }
    rows
}

pub fn run(args: &Args, style: &Style) -> Result<(), CommandError> {
    let seen = crate::seen::observe(&args.path, &args.reach, style)?;
    let (config, hosts, live, plan) = (&seen.loaded.config, &seen.hosts, &seen.live, &seen.plan);
    let mut rows: Vec<Row> = plan.changes.iter().map(row).collect();
    for row in &mut rows {
        let healthy = row.attributes.is_empty() && !matches!(row.state, "missing");
        if let Some(seen) = hosts.get(&row.host).filter(|_| healthy) {
            row.detail = detail(row, seen);
        }
        if row.kind == "vm" {
            let names: Vec<String> = live
                .hosts
                .get(&row.host)
                .and_then(|h| h.vms.iter().find(|v| v.name == row.name))
                .map(|v| v.snapshots.clone())
                .unwrap_or_default();
            if !names.is_empty() {
                let names: Vec<Value> = names.into_iter().map(Value::from).collect();
                row.detail.push(("snapshots", names.into()));
            }
        }
    }
    rows.extend(unreadable_rows(&config.project, live));
    rows.sort_by(|a, b| {
        let rank = |k: &str| {
            ["pool", "network", "volume", "vlan", "vm", "firewall"]
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
                    "detail": r
                        .detail
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), v.clone()))
                        .collect::<Map<String, Value>>(),
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
        let detail = if !r.attributes.is_empty() {
            format!("differs: {}", r.attributes.join(", "))
        } else if r.state == "unreadable" {
            let error = r
                .detail
                .iter()
                .find(|(k, _)| *k == "error")
                .and_then(|(_, v)| v.as_str())
                .unwrap_or("");
            format!("cannot read its record: {error} (see the warning above)")
        } else {
            detail_text(&r.detail)
        };
        println!(
            "{address:<width$}  {:<8}  {:<13}  {detail}",
            r.host, r.state
        );
    }
    Ok(())
}
