//! The diff's errors: rules that make a plan impossible rather than merely large.

use miette::Diagnostic;
use thiserror::Error;

use crate::action::Action;

/// Why desired and live cannot be reconciled by a plan.
#[derive(Debug, Error, Diagnostic, PartialEq)]
pub enum DiffError {
    /// A protected volume would be destroyed.
    #[error(
        "volume {name:?} on host {host:?} has prevent-destroy, but the plan would {action} it{why}"
    )]
    #[diagnostic(
        code(vmctl::plan::prevent_destroy),
        help("set `prevent-destroy #false` on volume {name:?} and apply that first if losing its data is intended; otherwise keep it in the config unchanged")
    )]
    PreventDestroy {
        host: String,
        name: String,
        action: Action,
        why: String,
    },

    /// Volumes only grow in place.
    #[error("volume {name:?} on host {host:?} would shrink from {live} to {config} bytes")]
    #[diagnostic(
        code(vmctl::plan::shrink_volume),
        help("a volume cannot shrink in place; to recreate it at the smaller size (its data is lost) plan with `--replace volume.{name}`")
    )]
    ShrinkVolume {
        host: String,
        name: String,
        live: u64,
        config: u64,
    },

    /// The config has no resources while the hosts have the project's.
    #[error("the config of project {project:?} has no resources, so the plan would delete all {count} of them")]
    #[diagnostic(
        code(vmctl::plan::empty_config),
        help("check the path you gave; to remove everything of the project on purpose use `vmctl destroy`")
    )]
    EmptyConfig { project: String, count: usize },

    /// A NAT VLAN without an uplink to leave through.
    #[error("VLAN {vlan:?} has `nat #true`, but host {host:?} reports no default route in its network namespace and the VLAN names no `nat-via`")]
    #[diagnostic(
        code(vmctl::plan::no_uplink),
        help("give VLAN {vlan:?} `nat-via \"IFNAME\"` (the interface NAT leaves through), or add a default route to host {host:?}'s network namespace")
    )]
    NoUplink { host: String, vlan: String },
}
