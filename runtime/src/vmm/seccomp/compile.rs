//! Compiling a list of [`Rule`]s to a BPF program with seccompiler. Run by the build
//! script (`runtime/build.rs`): a VMM never compiles a filter, it installs the
//! programs compiled into the binary ([`super::Filters`]; seccompiler's compiler costs a
//! VMM ~0.8 MiB of resident memory and time at every start). The lib has it for tests.

use std::collections::{BTreeMap, BTreeSet};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::{Only, Rule};

/// A condition on the low 32 bits of argument `arg`: every argument we check is an
/// `int` or `unsigned int` to the kernel (ioctl's request too), so the upper half,
/// which the kernel ignores, must not decide.
fn condition(
    arg: u8,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, seccompiler::Error> {
    Ok(SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        op,
        value,
    )?)
}

/// The seccompiler rules of one of our rules (none: any arguments).
fn seccomp_rules(only: Only) -> Result<Vec<SeccompRule>, seccompiler::Error> {
    match only {
        Only::Any => Ok(Vec::new()),
        Only::ArgIn { arg, values } => values
            .iter()
            .map(|&v| {
                Ok(SeccompRule::new(vec![condition(
                    arg,
                    SeccompCmpOp::Eq,
                    v,
                )?])?)
            })
            .collect(),
        Only::BitsClear { arg, mask } => Ok(vec![SeccompRule::new(vec![condition(
            arg,
            SeccompCmpOp::MaskedEq(mask),
            0,
        )?])?]),
    }
}

/// Compiles a filter allowing `rules` for `arch`; `mismatch` for any other call.
pub fn compile(
    rules: &[Rule],
    mismatch: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, seccompiler::Error> {
    let mut by_nr: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    // Whether a call is allowed with any arguments (then its other rules do not matter).
    let mut unconditional = BTreeSet::new();
    for rule in rules {
        let conditions = seccomp_rules(rule.only)?;
        if conditions.is_empty() {
            unconditional.insert(rule.nr);
        }
        by_nr.entry(rule.nr).or_default().extend(conditions);
    }
    for nr in unconditional {
        by_nr.insert(nr, Vec::new());
    }
    let filter = SeccompFilter::new(by_nr, mismatch, SeccompAction::Allow, arch)?;
    Ok(BpfProgram::try_from(filter)?)
}
