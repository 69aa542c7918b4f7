//! The project's nftables table on this host (`table inet vmctl-<project>`, see
//! `vmctl_planner::firewall`), and the IPv4 forwarding its VLANs need.
//!
//! The table is read and written with the `nft` tool's JSON interface only (`nft -j`),
//! run inside the host's netns (`setns` before exec); no other table is ever named.
//! A table of the project's name is vmctl's when one of its rules carries the mark
//! `vmctl:<project>` or vmctl's record of it exists; any other is refused, never
//! replaced or deleted. Applying replaces the whole table in one transaction (add,
//! delete, add it anew with its chains and rules), so no packet ever sees half of it.
//!
//! The record, `<state-dir>/<project>/firewall.json`, keeps what was applied, the hash
//! of the table's normalized listing right after (a later listing that differs is
//! drift: a rule deleted by hand) and the interfaces whose forwarding vmctl holds for
//! the project. Forwarding is shared with the host's other projects
//! ([`super::forwarding`]): turned on where vmctl finds it off, off again when no
//! project needs it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use vmctl_planner::facts::{FirewallFact, FirewallRecord};
use vmctl_planner::firewall::{
    hash_of, is_marked, normalize_listing, table_name, uplink_guard, Firewall,
};

use super::forwarding::{self, ForwardingError};
use super::net::{Netlink, NetlinkError};
use super::records::{read_record, version, write_record};

/// Errors of observing and changing the project's nftables table.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error(
        "the `nft` tool is not installed on this host, and vmctl's NAT and VLAN separation need it"
    )]
    NftMissing,
    #[error("cannot run `nft`")]
    Spawn(#[source] io::Error),
    #[error("cannot enter network namespace {netns:?} to run `nft`")]
    EnterNetns { netns: String, source: io::Error },
    #[error("`nft` refused to {action} table inet {table}: {stderr}")]
    Nft {
        action: &'static str,
        table: String,
        stderr: String,
    },
    #[error("`nft -j list table inet {table}` did not answer JSON")]
    Listing {
        table: String,
        source: serde_json::Error,
    },
    #[error(
        "nftables table inet {table} exists and is not vmctl's (no rule carries `vmctl:{project}`)"
    )]
    NotOurs {
        table: String,
        project: String,
        /// The host's netns the table is in.
        netns: Option<String>,
    },
    #[error("cannot read or write vmctl's record of its nftables table ({path}); if it cannot be read, move it away and apply again (vmctl then rewrites it; forwarding it had turned on stays on)")]
    Record { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Forwarding(#[from] ForwardingError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

impl FirewallError {
    /// What to do about it, when there is more to say than the error.
    pub fn help(&self) -> Option<String> {
        match self {
            FirewallError::NftMissing => Some(
                "install nftables (Debian/Ubuntu: `apt-get install nftables`) on the host, then apply again".into(),
            ),
            FirewallError::NotOurs { table, netns, .. } => {
                let exec = netns
                    .as_ref()
                    .map_or_else(String::new, |n| format!("ip netns exec {n} "));
                Some(format!(
                    "vmctl never takes over a table it did not make: remove it (`{exec}nft delete table inet {table}`) if nothing else needs it"
                ))
            }
            FirewallError::EnterNetns { netns, .. } => Some(format!(
                "the host's network namespace {netns:?} is gone: apply again (vmctl makes it before anything in it), or make it with `ip netns add {netns}`"
            )),
            FirewallError::Nft { .. } | FirewallError::Listing { .. } => Some(
                "vmctl drives nft through its JSON interface (`nft -j`, nftables 0.9.3 or later): check `nft --version` on the host; nft's own words are above".into(),
            ),
            FirewallError::Forwarding(ForwardingError::Set { .. }) => Some(
                "vmctl turns forwarding on per interface in /proc/sys/net/ipv4/conf inside the host's netns: run vmctl as root there".into(),
            ),
            FirewallError::Forwarding(ForwardingError::Record { path, .. }) => Some(format!(
                "{} lists the interfaces whose forwarding vmctl turned on, for which projects: if it cannot be read, move it away and apply every project of the host again",
                path.display()
            )),
            _ => None,
        }
    }
}

/// `<state-dir>/<project>/firewall.json`.
pub fn record_path(state_dir: &Path, project: &str) -> PathBuf {
    state_dir.join(project).join("firewall.json")
}

fn read(state_dir: &Path, project: &str) -> Result<Option<FirewallRecord>, FirewallError> {
    let path = record_path(state_dir, project);
    read_record(&path, version::FIREWALL_RECORD)
        .map_err(|source| FirewallError::Record { path, source })
}

/// Runs `nft -j` with `args` in `netns`, `input` on its stdin; its stdout, or its
/// stderr as the error.
fn nft(
    netns: Option<&str>,
    args: &[&str],
    input: Option<&str>,
) -> Result<Result<String, String>, FirewallError> {
    let ns = match netns {
        Some(name) => Some(std::fs::File::open(format!("/run/netns/{name}")).map_err(
            |source| FirewallError::EnterNetns {
                netns: name.into(),
                source,
            },
        )?),
        None => None,
    };
    let mut command = Command::new("nft");
    command
        .arg("-j")
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // `ns` lives until the child is spawned.
    if let Some(ns) = &ns {
        crate::host::net::netns::enter_in_child(&mut command, ns);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(FirewallError::NftMissing),
        Err(e) => return Err(FirewallError::Spawn(e)),
    };
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(FirewallError::Spawn)?;
    }
    let output = child.wait_with_output().map_err(FirewallError::Spawn)?;
    Ok(if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    })
}

/// The table's normalized listing, or `None` when there is no such table.
fn list(netns: Option<&str>, table: &str) -> Result<Option<Vec<Value>>, FirewallError> {
    match nft(netns, &["list", "table", "inet", table], None)? {
        Ok(text) => {
            let value: Value =
                serde_json::from_str(&text).map_err(|source| FirewallError::Listing {
                    table: table.into(),
                    source,
                })?;
            Ok(Some(normalize_listing(&value)))
        }
        Err(stderr) if stderr.contains("No such file or directory") => Ok(None),
        Err(stderr) => Err(FirewallError::Nft {
            action: "list",
            table: table.into(),
            stderr,
        }),
    }
}

/// What the host has of `project`'s table: `None` when there is neither a table nor
/// vmctl's record of one (also when `nft` is missing and vmctl never made one).
pub fn observe(
    state_dir: &Path,
    project: &str,
    netns: Option<&str>,
) -> Result<Option<FirewallFact>, FirewallError> {
    let table = table_name(project);
    let record = read(state_dir, project)?;
    let rules = match list(netns, &table) {
        Ok(rules) => rules,
        // Without vmctl's record there is no table of vmctl's to observe: an nft that
        // cannot run or list (missing, or a kernel without nf_tables) must not fail the
        // plans of projects that need no firewall. Apply checks again before making one.
        Err(FirewallError::NftMissing | FirewallError::Nft { .. }) if record.is_none() => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    Ok(match (rules, record) {
        (None, None) => None,
        // vmctl made it and it is gone: nothing there (the plan creates it).
        (None, Some(_)) => None,
        (Some(rules), record) => {
            let applied = record
                .as_ref()
                .map(|r| r.applied.forwarding.clone())
                .unwrap_or_default();
            let forwarding_off = Netlink::run(netns, |_| {
                let mut off = Vec::new();
                for ifname in applied {
                    if forwarding::is_on(&ifname)? == Some(false) {
                        off.push(ifname);
                    }
                }
                Ok::<_, FirewallError>(off)
            })?;
            Some(FirewallFact {
                table,
                marked: is_marked(&rules, project) || record.is_some(),
                rules,
                record,
                forwarding_off,
            })
        }
    })
}

/// The interface of the netns's IPv4 default route (the one of lowest metric), from
/// `/proc/thread-self/net/route` read inside the netns.
pub fn default_route(netns: Option<&str>) -> Result<Option<String>, FirewallError> {
    Netlink::run(netns, |_| {
        let text = std::fs::read_to_string("/proc/thread-self/net/route").unwrap_or_default();
        Ok::<_, FirewallError>(parse_default_route(&text))
    })
}

/// The default route's interface in the text of `/proc/net/route`.
fn parse_default_route(text: &str) -> Option<String> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask …
            let (iface, destination, metric, mask) = (
                fields.first()?,
                fields.get(1)?,
                fields.get(6)?,
                fields.get(7)?,
            );
            let up = u32::from_str_radix(fields.get(3)?, 16).ok()? & 1 == 1;
            (up && *destination == "00000000" && *mask == "00000000").then(|| {
                (
                    metric.parse::<u64>().unwrap_or(u64::MAX),
                    (*iface).to_owned(),
                )
            })
        })
        .min()
        .map(|(_, iface)| iface)
}

/// Refuses a table of the project's name that is not vmctl's.
fn check_ours(
    state_dir: &Path,
    project: &str,
    netns: Option<&str>,
) -> Result<(bool, Option<FirewallRecord>), FirewallError> {
    let table = table_name(project);
    let record = read(state_dir, project)?;
    let exists = match list(netns, &table)? {
        Some(rules) if !is_marked(&rules, project) && record.is_none() => {
            return Err(FirewallError::NotOurs {
                table,
                project: project.into(),
                netns: netns.map(str::to_owned),
            })
        }
        Some(_) => true,
        None => false,
    };
    Ok((exists, record))
}

/// Makes the table `firewall` says (replacing vmctl's own in one transaction), turns
/// forwarding on where it is needed and off where vmctl turned it on and it no longer
/// is, and records it all.
pub fn apply(
    state_dir: &Path,
    project: &str,
    netns: Option<&str>,
    firewall: &Firewall,
) -> Result<(), FirewallError> {
    let table = table_name(project);
    let (_, record) = check_ours(state_dir, project, netns)?;
    let mut commands = vec![
        json!({"metainfo": {"json_schema_version": 1}}),
        json!({"add": {"table": {"family": "inet", "name": table}}}),
        json!({"delete": {"table": {"family": "inet", "name": table}}}),
    ];
    let planned = firewall.ruleset["nftables"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    commands.extend(planned.into_iter().filter(|c| c.get("metainfo").is_none()));
    // What an earlier vmctl recorded per project as turned on for it.
    let legacy = record.map(|r| r.enabled).unwrap_or_default();
    // An uplink whose forwarding vmctl turns on (or holds, for any project) lets nothing
    // new in: see `vmctl_planner::firewall::uplink_guard`. One that forwarded already
    // is the host's own routing, left as it was.
    let mut held = forwarding::held(state_dir, netns)?;
    held.extend(legacy.iter().cloned());
    let guarded = Netlink::run(netns, |_| {
        let mut guarded = Vec::new();
        for uplink in &firewall.uplinks {
            if held.contains(uplink) || forwarding::is_on(uplink)? == Some(false) {
                guarded.push(uplink.clone());
            }
        }
        Ok::<_, FirewallError>(guarded)
    })?;
    commands.extend(guarded.iter().map(|u| uplink_guard(project, u)));
    let input = json!({ "nftables": commands }).to_string();
    if let Err(stderr) = nft(netns, &["-f", "-"], Some(&input))? {
        return Err(FirewallError::Nft {
            action: "replace",
            table,
            stderr,
        });
    }
    let listing = list(netns, &table)?.unwrap_or_default();
    // On where it is needed and off (no other project needing it either); an interface
    // that does not exist is the other name of a gateway (see `vmctl_planner::firewall`).
    let enabled = forwarding::set_needs(state_dir, netns, project, &firewall.forwarding, &legacy)?;
    let record = FirewallRecord {
        applied: Firewall {
            ruleset: Value::Null,
            ..firewall.clone()
        },
        listing: hash_of(&Value::Array(listing)),
        enabled,
    };
    let path = record_path(state_dir, project);
    write_record(&path, version::FIREWALL_RECORD, &record)
        .map_err(|source| FirewallError::Record { path, source })
}

/// Removes the project's table (only vmctl's) and lets go of its forwarding: turned
/// off where vmctl turned it on and no other project needs it.
pub fn delete(state_dir: &Path, project: &str, netns: Option<&str>) -> Result<(), FirewallError> {
    let table = table_name(project);
    let (exists, record) = check_ours(state_dir, project, netns)?;
    if exists {
        let input = json!({"nftables": [
            {"metainfo": {"json_schema_version": 1}},
            {"delete": {"table": {"family": "inet", "name": table}}}
        ]})
        .to_string();
        if let Err(stderr) = nft(netns, &["-f", "-"], Some(&input))? {
            return Err(FirewallError::Nft {
                action: "delete",
                table,
                stderr,
            });
        }
    }
    let legacy = record.map(|r| r.enabled).unwrap_or_default();
    forwarding::set_needs(state_dir, netns, project, &[], &legacy)?;
    let path = record_path(state_dir, project);
    super::fsutil::remove_if_exists(&path).map_err(|source| FirewallError::Record { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_is_the_up_route_to_everything_of_lowest_metric() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth1\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n\
            eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            eth2\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(parse_default_route(text).as_deref(), Some("eth0"));
        let none = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
            eth2\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(parse_default_route(none), None);
        assert_eq!(parse_default_route(""), None);
    }

    #[test]
    fn a_foreign_table_is_removed_in_its_netns() {
        let error = |netns: Option<&str>| FirewallError::NotOurs {
            table: "vmctl-lab".into(),
            project: "lab".into(),
            netns: netns.map(str::to_owned),
        };
        let help = error(Some("vmctl-lab")).help().unwrap_or_default();
        assert!(
            help.contains("`ip netns exec vmctl-lab nft delete table inet vmctl-lab`"),
            "{help}"
        );
        let help = error(None).help().unwrap_or_default();
        assert!(
            help.contains("(`nft delete table inet vmctl-lab`)"),
            "{help}"
        );
    }
}
