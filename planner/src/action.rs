//! The vocabulary of a plan: what can happen to a resource ([`Action`]), which resource
//! ([`ResourceId`]), how one attribute's change can be carried out ([`Effect`]) and why a
//! change was planned ([`Reason`], which explains and never drives the apply).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What the apply does to one resource. Each value knows its glyph and its words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Live already matches the config.
    NoOp,
    /// Missing on the host: make it.
    Create,
    /// Change attributes in place; the resource keeps running.
    Update,
    /// Destroy then create. For a VM that is a restart with its volumes kept.
    Replace,
    /// On the host but no longer in the config: remove it.
    Delete,
    /// A VM that should run but is stopped or crashed.
    Start,
    /// A VM that should be stopped but runs.
    Stop,
    /// A running VM whose `host` changed, moved to its new host while it runs (and each
    /// of its volumes with it).
    Migrate,
}

impl Action {
    /// Every action, in the order summaries list them.
    pub const ALL: [Action; 8] = [
        Action::Create,
        Action::Update,
        Action::Migrate,
        Action::Replace,
        Action::Delete,
        Action::Start,
        Action::Stop,
        Action::NoOp,
    ];

    /// The Terraform-style glyph in front of a resource: `+`, `~`, `-/+`, `-`; `>` and `<`
    /// for a VM's start and stop (Terraform has none).
    pub fn glyph(self) -> &'static str {
        match self {
            Action::NoOp => " ",
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
            Action::Start => ">",
            Action::Stop => "<",
            Action::Migrate => "~>",
        }
    }

    /// The short name used in JSON and legends: `create`, `update`, `replace`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Action::NoOp => "no-op",
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Migrate => "migrate",
        }
    }

    /// The legend words: `create`, `update in place`, `destroy and then create replacement`, …
    pub fn label(self) -> &'static str {
        match self {
            Action::NoOp => "no change",
            Action::Create => "create",
            Action::Update => "update in place",
            Action::Replace => "destroy and then create replacement",
            Action::Delete => "destroy",
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Migrate => "move to another host while running",
        }
    }

    /// What will happen, as the end of a sentence: `will be created`, `must be replaced`, …
    pub fn verb(self) -> &'static str {
        match self {
            Action::NoOp => "is up to date",
            Action::Create => "will be created",
            Action::Update => "will be updated in place",
            Action::Replace => "must be replaced",
            Action::Delete => "will be destroyed",
            Action::Start => "will be started",
            Action::Stop => "will be stopped",
            Action::Migrate => "will be migrated",
        }
    }

    /// True for `replace`: the apply destroys then creates.
    pub fn is_replace(self) -> bool {
        self == Action::Replace
    }

    /// How this action counts in `Plan: N to add, N to change, N to destroy.`:
    /// `(add, change, destroy)`. A replace counts one add and one destroy, as Terraform's;
    /// a start, stop or migrate is a change.
    pub fn counts(self) -> (usize, usize, usize) {
        match self {
            Action::NoOp => (0, 0, 0),
            Action::Create => (1, 0, 0),
            Action::Update | Action::Start | Action::Stop | Action::Migrate => (0, 1, 0),
            Action::Replace => (1, 0, 1),
            Action::Delete => (0, 0, 1),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of resource a host carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    /// A host's named network namespace (its `netns`), where its networks, VLANs and
    /// taps live.
    Netns,
    Pool,
    Network,
    Volume,
    Vlan,
    /// A VLAN's DHCP and DNS server (dnsmasq), on the host that holds its gateway.
    Dhcp,
    Vm,
    /// A project's nftables table on a host (`firewall.<host>`).
    Firewall,
}

impl ResourceKind {
    /// Every kind, dependencies first.
    pub const ALL: [ResourceKind; 8] = [
        ResourceKind::Netns,
        ResourceKind::Pool,
        ResourceKind::Network,
        ResourceKind::Volume,
        ResourceKind::Vlan,
        ResourceKind::Dhcp,
        ResourceKind::Vm,
        ResourceKind::Firewall,
    ];

    /// The config keyword: `netns`, `pool`, `network`, `volume`, `vlan`, `vm`; `dhcp`
    /// for a VLAN's `dhcp` server, `firewall` for a host's nftables table.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Netns => "netns",
            ResourceKind::Pool => "pool",
            ResourceKind::Network => "network",
            ResourceKind::Volume => "volume",
            ResourceKind::Vlan => "vlan",
            ResourceKind::Dhcp => "dhcp",
            ResourceKind::Vm => "vm",
            ResourceKind::Firewall => "firewall",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceKind {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        ResourceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(())
    }
}

/// A resource's address: its kind and name, shown as `vm.web-1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceId {
    pub kind: ResourceKind,
    pub name: String,
}

impl ResourceId {
    pub fn new(kind: ResourceKind, name: impl Into<String>) -> Self {
        ResourceId {
            kind,
            name: name.into(),
        }
    }

    /// Parses `kind.name`; `None` when the text before the first dot is not a kind.
    pub fn parse_address(address: &str) -> Option<Self> {
        let (kind, name) = address.split_once('.')?;
        let kind = kind.parse().ok()?;
        (!name.is_empty()).then(|| ResourceId::new(kind, name))
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind, self.name)
    }
}

/// How the change of one attribute can be carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// The resource is changed where it is.
    InPlace,
    /// The VM must be restarted (its volumes are kept).
    Restart,
    /// The resource must be destroyed and created again.
    Replace,
}

impl Effect {
    /// The comment after an attribute line: `# forces restart`, `# forces replacement`.
    pub fn comment(self) -> Option<&'static str> {
        match self {
            Effect::InPlace => None,
            Effect::Restart => Some("# forces restart"),
            Effect::Replace => Some("# forces replacement"),
        }
    }
}

/// Why a change was planned. It explains the plan to people; the apply never reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Reason {
    /// Attributes changed that the running VM cannot take without a restart.
    Restart,
    /// Attributes changed that cannot change in place.
    Attributes,
    /// `--replace` named this resource.
    Requested,
    /// A resource this one lives on or uses is replaced, so this one is too.
    DependencyReplaced { of: ResourceId },
    /// A running VM restarts because the plan creates one of its disks anew (its file
    /// was missing): until it restarts it would keep using the deleted file.
    DiskRecreated { of: ResourceId },
    /// The VM's process died.
    Crashed,
    /// The resource is no longer in the config.
    Removed,
    /// `destroy` was asked for.
    Destroy,
    /// A network namespace vmctl made for another project: this project joins its users.
    Join,
    /// A network namespace other projects still use: this project leaves it, and it is
    /// kept for them.
    Shared { projects: Vec<String> },
    /// A DHCP server's configuration changed: dnsmasq is restarted with it.
    Reconfigure,
    /// Only a DHCP server's leases or names changed: dnsmasq re-reads them (SIGHUP)
    /// and keeps running.
    Reload,
    /// A running VM moves here from host `from` and keeps running.
    Migrate { from: String },
    /// A volume moves here from host `from` with the VM `vm` that it is a disk of: made
    /// here, filled while the VM runs, removed there once the VM runs here.
    MovesWith { vm: String, from: String },
    /// A running VM a move that did not finish left paused: it runs on where it is.
    Paused,
    /// A VM (or its volume) moves from host `from` to host `to` by a delete there and a
    /// create here, not a migration: `why`.
    NotMigrated {
        from: String,
        to: String,
        why: String,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Restart => f.write_str("restart; volumes are kept"),
            Reason::Attributes => f.write_str("attributes force replacement"),
            Reason::Requested => f.write_str("replacement requested with --replace"),
            Reason::DependencyReplaced { of } => write!(f, "{of} is replaced"),
            Reason::DiskRecreated { of } => {
                write!(f, "forces restart: disk {} re-created", of.name)
            }
            Reason::Crashed => f.write_str("its process died"),
            Reason::Removed => f.write_str("no longer in the config"),
            Reason::Destroy => f.write_str("destroy was asked for"),
            Reason::Join => f.write_str("vmctl made it for another project; this one joins"),
            Reason::Shared { projects } => write!(
                f,
                "kept: project(s) {} still use it; this one leaves",
                projects.join(", ")
            ),
            Reason::Reconfigure => f.write_str("its configuration changed; dnsmasq restarts"),
            Reason::Reload => {
                f.write_str("leases changed; dnsmasq re-reads them, guests keep theirs")
            }
            Reason::Migrate { from } => write!(f, "from host {from:?}; it keeps running"),
            Reason::Paused => f.write_str("a move that did not finish left it paused; it runs on"),
            Reason::MovesWith { vm, from } => {
                write!(f, "moves from host {from:?} with vm.{vm}")
            }
            Reason::NotMigrated { from, to, why } => write!(
                f,
                "moves from host {from:?} to {to:?} by a delete and a create, not a migration: {why}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glyphs_and_counts() {
        let table = [
            (Action::Create, "+", (1, 0, 0)),
            (Action::Update, "~", (0, 1, 0)),
            (Action::Replace, "-/+", (1, 0, 1)),
            (Action::Delete, "-", (0, 0, 1)),
            (Action::Start, ">", (0, 1, 0)),
            (Action::Stop, "<", (0, 1, 0)),
            (Action::Migrate, "~>", (0, 1, 0)),
            (Action::NoOp, " ", (0, 0, 0)),
        ];
        for (action, glyph, counts) in table {
            assert_eq!(action.glyph(), glyph, "{action}");
            assert_eq!(action.counts(), counts, "{action}");
            assert_eq!(action.is_replace(), action == Action::Replace);
        }
    }

    #[test]
    fn addresses() {
        let id = ResourceId::new(ResourceKind::Vm, "web-1");
        assert_eq!(id.to_string(), "vm.web-1");
        assert_eq!(ResourceId::parse_address("vm.web-1"), Some(id));
        assert_eq!(
            ResourceId::parse_address("volume.a.b"),
            Some(ResourceId::new(ResourceKind::Volume, "a.b"))
        );
        assert_eq!(ResourceId::parse_address("web-1"), None);
        assert_eq!(ResourceId::parse_address("disk.x"), None);
        assert_eq!(ResourceId::parse_address("vm."), None);
    }
}
