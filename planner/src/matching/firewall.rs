//! The project's nftables table as the host found it: vmctl's (marked) with the hash
//! of what was applied while its rules are as applied, with a `modified:` hash of what
//! is there when they are not (drift, repaired by an update), and without the
//! interfaces whose forwarding was turned off by hand (drift too); a table of the name
//! that vmctl did not make is a problem of `firewall.<host>`, never taken over.

use serde_json::Value;
use vmctl_schema::Config;

use crate::facts::FirewallFact;
use crate::firewall::hash_of;
use crate::live::{LiveFirewall, LiveProblem};

/// The live firewall of `config.project` on `host`, or why the host's table is not it.
pub fn live(config: &Config, host: &str, fact: &FirewallFact) -> Result<LiveFirewall, LiveProblem> {
    if !fact.marked {
        return Err(LiveProblem {
            resource: format!("firewall.{host}"),
            message: format!(
                "nftables table inet {} exists in host {host:?}'s network namespace and is not vmctl's (no rule carries `vmctl:{}`)",
                fact.table, config.project
            ),
            help: format!(
                "vmctl never takes over a table it did not make: remove it (`nft delete table inet {}`) if nothing else needs it",
                fact.table
            ),
        });
    }
    let observed = hash_of(&Value::Array(fact.rules.clone()));
    let mut found = LiveFirewall {
        name: host.to_owned(),
        project: config.project.clone(),
        table: fact.table.clone(),
        hash: format!("modified:{observed}"),
        ..LiveFirewall::default()
    };
    if let Some(record) = &fact.record {
        let applied = &record.applied;
        found.vlans.clone_from(&applied.vlans);
        found.uplinks.clone_from(&applied.uplinks);
        found.forwarding = applied
            .forwarding
            .iter()
            .filter(|i| !fact.forwarding_off.contains(i))
            .cloned()
            .collect();
        if record.listing == observed {
            found.hash.clone_from(&applied.hash);
        }
    }
    Ok(found)
}
