//! Which rules make each thread kind's filter: the base rules, then the kind's own, and
//! for an unjailed VMM's vCPU (`--no-sandbox`) also [`super::vcpu::UNJAILED_RULES`].
//! Shared with the build script, which compiles every kind's filter from this table.

use super::{base, control, device, main, vcpu, Rule};

/// Every kind by name (as [`crate::vmm::threads::ThreadKind::name`] gives it), with its
/// own rules.
pub const KINDS: [(&str, &[Rule]); 4] = [
    ("main", main::RULES),
    ("vcpu", vcpu::RULES),
    ("device", device::RULES),
    ("control", control::RULES),
];

/// The rules of kind `name`'s filter, for a jailed VMM or not; none for a name that
/// is no kind's.
pub fn rules_of(name: &str, jailed: bool) -> Vec<Rule> {
    let Some((_, own)) = KINDS.iter().find(|(kind, _)| *kind == name) else {
        return Vec::new();
    };
    let unjailed: &[Rule] = match name {
        "vcpu" if !jailed => vcpu::UNJAILED_RULES,
        _ => &[],
    };
    base::RULES
        .iter()
        .chain(own.iter())
        .chain(unjailed)
        .copied()
        .collect()
}
