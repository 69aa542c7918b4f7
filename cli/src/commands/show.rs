//! `vmctl show`: the live state of every resource of the project (or of one), with all
//! its attributes in the plan's attribute format — Terraform's `show` / `state show`.
//! Observed the way `plan` observes ([`crate::seen`]); read-only.
//!
//! `--json` writes the live state exactly as `vmctl plan --live FILE` reads it (a
//! versioned `LiveFile`), so a plan can be made offline from what `show` saw: `vmctl show
//! --json > live.json; vmctl plan --live live.json`. With an ADDRESS the file holds that
//! resource alone.

use std::collections::HashSet;
use std::path::PathBuf;

use vmctl_planner::render::human::render_resource;
use vmctl_planner::{Action, Change, LiveFile, LiveState, ResourceId, ResourceKind, VmStatus};
use vmctl_runtime::host::proc;
use vmctl_schema::units::format_size as human;

use crate::error::CommandError;
use crate::render::Style;
use crate::runtime;
use crate::seen::Seen;

/// Show the live state of every resource of the project, or of one, with all its
/// attributes.
///
/// PATH is the config (default: $VMCTL_CONFIG, else the current folder); ADDRESS a
/// resource's address (`vm.web-1`, `volume.db-1-data`) or bare name (`web-1`: every
/// resource of that name). With one argument, it is the ADDRESS when it reads as an
/// address (`<kind>.<name>`) and no file or folder of that name exists; otherwise PATH.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  vmctl show examples/quickstart\n  vmctl show examples/quickstart vm.web-1\n  VMCTL_CONFIG=examples/quickstart vmctl show vm.web-1\n  vmctl show --json > live.json && vmctl plan --live live.json   # plan offline\n\nExit codes: 0 success, 1 error (also an ADDRESS that names nothing)."
)]
pub struct Args {
    /// A .kdl file, or a folder whose *.kdl files form one config.
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,

    /// The resource to show: `vm.web-1`, or a bare name.
    #[arg(value_name = "ADDRESS")]
    pub address: Option<String>,

    /// Print the live state as JSON, in the format `vmctl plan --live FILE` reads
    /// (versioned: `format-version`).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub reach: runtime::Reach,
}

/// The config's path and the address, from the positional arguments (see [`Args`]).
fn resolve(args: &Args) -> (PathBuf, Option<String>) {
    let from_env = || {
        std::env::var_os("VMCTL_CONFIG")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
    };
    match (&args.path, &args.address) {
        (Some(path), address) if address.is_some() => (path.clone(), address.clone()),
        (Some(only), _) => {
            let text = only.to_string_lossy();
            if ResourceId::parse_address(&text).is_some() && !only.exists() {
                (from_env(), Some(text.into_owned()))
            } else {
                (only.clone(), None)
            }
        }
        (None, _) => (from_env(), None),
    }
}

/// Every resource the project has on its hosts or in its config.
fn known(seen: &Seen) -> Vec<ResourceId> {
    let mut ids: Vec<ResourceId> = seen.plan.changes.iter().map(|c| c.id.clone()).collect();
    for state in seen.live.hosts.values() {
        ids.extend(state.held(&seen.loaded.config.project));
    }
    ids.sort();
    ids.dedup();
    ids
}

/// The resources `address` names, or a diagnostic naming the known ones.
fn select(address: &str, known: &[ResourceId]) -> Result<HashSet<ResourceId>, CommandError> {
    let found: HashSet<ResourceId> = match ResourceId::parse_address(address) {
        Some(id) if known.contains(&id) => HashSet::from([id]),
        _ => known
            .iter()
            .filter(|id| id.name == address)
            .cloned()
            .collect(),
    };
    if !found.is_empty() {
        return Ok(found);
    }
    let addresses: Vec<String> = known.iter().map(ToString::to_string).collect();
    let suggestion = vmctl_schema::diagnostics::suggest(
        address,
        addresses
            .iter()
            .map(String::as_str)
            .chain(known.iter().map(|id| id.name.as_str())),
    );
    let listed = if addresses.is_empty() {
        "The project has no resources.".to_owned()
    } else {
        format!("The project's resources: {}.", addresses.join(", "))
    };
    Err(CommandError::Report(miette::miette!(
        code = "vmctl::show::unknown_address",
        help = format!("{suggestion} {listed}"),
        "{address:?} names no resource of the config or of its hosts"
    )))
}

/// `live` with only the resources of `ids` (and the hosts that hold one).
fn only(live: &LiveFile, ids: &HashSet<ResourceId>) -> LiveFile {
    let has = |kind: ResourceKind, name: &str| ids.contains(&ResourceId::new(kind, name));
    let mut out = LiveFile {
        format_version: live.format_version,
        ..LiveFile::default()
    };
    for (host, state) in &live.hosts {
        let kept = LiveState {
            pools: keep(&state.pools, |p| has(ResourceKind::Pool, &p.name)),
            volumes: keep(&state.volumes, |v| has(ResourceKind::Volume, &v.name)),
            networks: keep(&state.networks, |n| has(ResourceKind::Network, &n.name)),
            vlans: keep(&state.vlans, |v| has(ResourceKind::Vlan, &v.name)),
            vms: keep(&state.vms, |v| has(ResourceKind::Vm, &v.name)),
            dhcp: keep(&state.dhcp, |d| has(ResourceKind::Dhcp, &d.name)),
            netns: state
                .netns
                .clone()
                .filter(|n| has(ResourceKind::Netns, &n.name)),
            unreadable: keep(&state.unreadable, |u| has(u.kind, &u.name)),
            reported: state.reported,
            cpu_features: state.cpu_features.clone(),
            problems: keep(&state.problems, |p| {
                ids.iter().any(|id| id.to_string() == p.resource)
            }),
            firewalls: keep(&state.firewalls, |f| has(ResourceKind::Firewall, &f.name)),
            default_route: state.default_route.clone(),
        };
        let holds_one = LiveState {
            reported: None,
            cpu_features: None,
            default_route: None,
            ..kept.clone()
        } != LiveState::EMPTY;
        if holds_one {
            out.hosts.insert(host.clone(), kept);
        }
    }
    out
}

fn keep<T: Clone>(items: &[T], f: impl Fn(&T) -> bool) -> Vec<T> {
    items.iter().filter(|i| f(i)).cloned().collect()
}

/// The comment lines above a resource: where it is and what its host reports beside
/// its attributes.
fn facts(change: &Change, seen: &Seen) -> Vec<String> {
    let mut lines = vec![format!("# {} on host {:?}", change.id, change.host)];
    let host = seen.hosts.get(&change.host);
    match change.action {
        Action::Create => lines.push("# not on its host: `vmctl apply` creates it".into()),
        Action::Delete => lines.push("# not in the config: `vmctl apply` deletes it".into()),
        _ if !change.attributes.is_empty() => {
            let names: Vec<&str> = change.attributes.iter().map(|a| a.name.as_str()).collect();
            lines.push(format!("# differs from the config: {}", names.join(", ")));
        }
        _ => {}
    }
    let Some(host) = host else {
        return lines;
    };
    match change.id.kind {
        ResourceKind::Vm if change.action != Action::Create => {
            let status = match change.status.unwrap_or_default() {
                VmStatus::Running => "running",
                VmStatus::Stopped => "stopped",
                VmStatus::Crashed => "crashed",
            };
            let vm = host.live.vms.iter().find(|v| v.name == change.id.name);
            let mut line = format!("# status: {status}");
            if let Some(pid) = vm.and_then(|v| v.pid) {
                line.push_str(&format!(", pid {pid}"));
            }
            if let Some(up) = vm.and_then(|v| v.uptime_seconds) {
                let up = proc::human_duration(std::time::Duration::from_secs(up));
                line.push_str(&format!(", up {up}"));
            }
            lines.push(line);
            let snapshots = vm.map(|v| v.snapshots.clone()).unwrap_or_default();
            if !snapshots.is_empty() {
                lines.push(format!("# snapshots: {}", snapshots.join(", ")));
            }
            let mut taps: Vec<_> = host
                .taps
                .iter()
                .filter(|t| t.vm == change.id.name)
                .collect();
            taps.sort_by_key(|t| t.nic);
            if !taps.is_empty() {
                let names: Vec<&str> = taps.iter().map(|t| t.ifname.as_str()).collect();
                lines.push(format!("# taps: {}", names.join(", ")));
            }
        }
        ResourceKind::Dhcp if change.action != Action::Create => {
            let server = host.live.dhcp.iter().find(|d| d.name == change.id.name);
            lines.push(match server.and_then(|d| d.pid) {
                Some(pid) => format!("# dnsmasq: running, pid {pid}"),
                None => "# dnsmasq: not running".into(),
            });
        }
        ResourceKind::Volume => {
            let volume = host.live.volumes.iter().find(|v| v.name == change.id.name);
            if let Some(allocated) = volume.and_then(|v| v.allocated) {
                lines.push(format!("# allocated on disk: {}", human(allocated)));
            }
        }
        _ => {}
    }
    lines
}

/// Kinds in the order a reader builds them up: where things live, then what uses them.
fn rank(kind: ResourceKind) -> usize {
    ResourceKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(usize::MAX)
}

/// The human text of the selected resources.
fn text(seen: &Seen, selected: Option<&HashSet<ResourceId>>) -> String {
    let mut changes: Vec<&Change> = seen
        .plan
        .changes
        .iter()
        .filter(|c| selected.is_none_or(|s| s.contains(&c.id)))
        .collect();
    changes.sort_by(|a, b| {
        (rank(a.id.kind), &a.host, &a.id.name).cmp(&(rank(b.id.kind), &b.host, &b.id.name))
    });
    let mut blocks = Vec::new();
    for change in changes {
        let mut block = facts(change, seen).join("\n");
        block.push('\n');
        if let Some(live) = &change.before {
            block.push_str(&render_resource(live));
        }
        blocks.push(block);
    }
    for (host, state) in &seen.live.hosts {
        for u in &state.unreadable {
            let id = ResourceId::new(u.kind, &u.name);
            if u.project != seen.loaded.config.project || selected.is_some_and(|s| !s.contains(&id))
            {
                continue;
            }
            blocks.push(format!(
                "# {id} on host {host:?}\n# its record {} cannot be read: {} (see the warning above)\n",
                u.path.display(),
                u.error
            ));
        }
    }
    blocks.join("\n")
}

pub fn run(args: &Args, style: &Style) -> Result<(), CommandError> {
    let (path, address) = resolve(args);
    let seen = crate::seen::observe(&path, &args.reach, style)?;
    let selected = match &address {
        Some(address) => Some(select(address, &known(&seen))?),
        None => None,
    };
    if args.json {
        let live = match &selected {
            Some(ids) => only(&seen.live, ids),
            None => seen.live.clone(),
        };
        let text = serde_json::to_string_pretty(&live).map_err(|e| {
            CommandError::failed(format!("cannot write the live state as JSON: {e}"))
        })?;
        return super::write_stdout(format!("{text}\n").as_bytes());
    }
    super::write_stdout(text(&seen, selected.as_ref()).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmctl_planner::live::{LivePool, LiveVolume};

    #[test]
    fn one_address_keeps_that_resource_and_the_host_holding_it() {
        let mut live = LiveFile::default();
        let state = LiveState {
            pools: vec![LivePool {
                name: "fast".into(),
                ..LivePool::default()
            }],
            volumes: vec![
                LiveVolume {
                    name: "db".into(),
                    ..LiveVolume::default()
                },
                LiveVolume {
                    name: "web".into(),
                    ..LiveVolume::default()
                },
            ],
            ..LiveState::default()
        };
        live.hosts.insert("a".into(), state);
        live.hosts.insert("b".into(), LiveState::default());
        let ids = HashSet::from([ResourceId::new(ResourceKind::Volume, "db")]);
        let kept = only(&live, &ids);
        assert_eq!(kept.format_version, live.format_version);
        assert_eq!(kept.hosts.keys().collect::<Vec<_>>(), ["a"]);
        let a = &kept.hosts["a"];
        assert!(a.pools.is_empty());
        assert_eq!(a.volumes.len(), 1);
        assert_eq!(a.volumes[0].name, "db");
    }

    #[test]
    fn an_unknown_address_names_the_known_ones() {
        let known = [
            ResourceId::new(ResourceKind::Vm, "web-1"),
            ResourceId::new(ResourceKind::Pool, "fast"),
        ];
        assert_eq!(select("web-1", &known).ok().map(|s| s.len()), Some(1));
        let Err(error) = select("vm.web-2", &known) else {
            panic!("vm.web-2 is unknown");
        };
        let text = error.render(&Style::plain());
        assert!(text.contains("did you mean `vm.web-1`?"), "{text}");
        assert!(text.contains("vm.web-1, pool.fast"), "{text}");
    }
}
