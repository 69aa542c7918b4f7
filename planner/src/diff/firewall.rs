//! The project's nftables table on a host as a planned resource (`firewall.<host>`,
//! see [`crate::firewall`]): wanted and missing → `create`; wanted and there →
//! `update` when its ruleset's hash (or its VLANs, uplinks or forwarding) differ, a
//! table whose rules were changed by hand among them, else `no-op`; there and no
//! longer wanted (no VLAN with a gateway left, or `destroy`) → `delete`.

use vmctl_schema::Config;

use super::attrs::changed_attributes;
use super::DiffError;
use crate::action::{Action, Reason, ResourceId, ResourceKind};
use crate::firewall::{desired, FirewallError};
use crate::live::LiveState;
use crate::plan::{Change, Resource};

/// The change of the project's firewall on `host`, if it has or needs one.
pub fn diff_firewall(
    config: &Config,
    host: &str,
    live: &LiveState,
    destroy: bool,
) -> Result<Option<Change>, DiffError> {
    let wanted = if destroy {
        None
    } else {
        desired(config, host, live.default_route.as_deref()).map_err(|e| match e {
            FirewallError::NoUplink { host, vlan } => DiffError::NoUplink { host, vlan },
        })?
    };
    let found = live
        .firewalls
        .iter()
        .find(|f| f.project == config.project)
        .map(|f| Resource::Firewall(f.to_model()));
    let wanted = wanted.map(Resource::Firewall);
    let change = |action, reason, before: Option<Resource>, after: Option<Resource>| Change {
        host: host.to_owned(),
        from: None,
        id: ResourceId::new(ResourceKind::Firewall, host),
        action,
        reason,
        attributes: match (&before, &after) {
            (Some(b), Some(a)) => changed_attributes(b, a),
            _ => Vec::new(),
        },
        before,
        after,
        status: None,
    };
    Ok(match (found, wanted) {
        (None, None) => None,
        (None, Some(after)) => Some(change(Action::Create, None, None, Some(after))),
        (Some(before), None) => {
            let reason = if destroy {
                Reason::Destroy
            } else {
                Reason::Removed
            };
            Some(change(Action::Delete, Some(reason), Some(before), None))
        }
        (Some(before), Some(after)) => {
            let mut c = change(Action::NoOp, None, Some(before), Some(after));
            if !c.attributes.is_empty() {
                c.action = Action::Update;
            }
            Some(c)
        }
    })
}
