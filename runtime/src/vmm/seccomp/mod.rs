//! The VMM's seccomp filters: one per thread kind ([`ThreadKind`]), each allowing only
//! the system calls (and, for the riskiest, only the arguments) that threads of that
//! kind make; anything else kills the whole VMM (`SECCOMP_RET_KILL_PROCESS`: the
//! kernel sends SIGSYS, which cannot be caught).
//!
//! To audit a filter, read its file: [`base`] (what every thread makes: memory,
//! futexes, leaving the thread), then [`vcpu`], [`device`], [`control`] or [`main`];
//! each is a list of rules, one system call and one reason per rule. The filter of a
//! kind is `base` plus its own file, compiled with seccompiler once at start-up
//! ([`Filters::compile`]) and installed by the thread itself before it runs any VMM
//! code ([`super::threads`]); the main thread installs its own once every other
//! thread is started, before a vCPU enters the guest.
//!
//! Writing a filter: run the VMM with `VMCTL_VMM_SECCOMP_LOG=1` (or `vmctl vmm
//! --seccomp-log`), which logs (`SECCOMP_RET_LOG`, in `dmesg` as `audit: type=1326 …
//! syscall=N`) instead of killing, and `strace -f` it; docs/seccomp.md says how.

mod base;
mod control;
mod device;
mod main;
mod vcpu;

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::threads::ThreadKind;

/// Errors compiling or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A filter could not be compiled (a rule of ours is malformed: a bug).
    #[error("cannot compile the {kind} thread's seccomp filter: {source}")]
    Compile {
        /// The thread kind.
        kind: ThreadKind,
        /// Why.
        source: seccompiler::Error,
    },
    /// The kernel refused the filter.
    #[error("cannot install the {kind} thread's seccomp filter: {source}")]
    Install {
        /// The thread kind.
        kind: ThreadKind,
        /// Why.
        source: seccompiler::Error,
    },
}

/// What a system call outside a thread's filter gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The VMM is killed by SIGSYS: the default.
    KillProcess,
    /// The call is made and logged by the kernel (`dmesg`): for writing filters.
    Log,
}

/// Which arguments of a system call a rule allows.
#[derive(Debug, Clone, Copy)]
pub enum Only {
    /// Any.
    Any,
    /// Argument `arg` (0-based) equal to one of `values` (compared as 64 bits).
    ArgIn {
        /// The argument.
        arg: u8,
        /// The values allowed.
        values: &'static [u64],
    },
    /// Argument `arg` with none of the bits of `mask` set.
    BitsClear {
        /// The argument.
        arg: u8,
        /// The bits refused.
        mask: u64,
    },
}

/// One allowed system call and why it is allowed.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The system call (`libc::SYS_…`).
    pub nr: i64,
    /// The arguments allowed.
    pub only: Only,
    /// Why the thread makes it.
    pub why: &'static str,
}

/// `nr` with any arguments.
pub const fn any(nr: i64, why: &'static str) -> Rule {
    Rule {
        nr,
        only: Only::Any,
        why,
    }
}

/// `nr` with argument `arg` one of `values`.
pub const fn arg_in(nr: i64, arg: u8, values: &'static [u64], why: &'static str) -> Rule {
    Rule {
        nr,
        only: Only::ArgIn { arg, values },
        why,
    }
}

/// `ioctl` with one of the request numbers `requests`.
pub const fn ioctl(requests: &'static [u64], why: &'static str) -> Rule {
    arg_in(libc::SYS_ioctl, 1, requests, why)
}

/// `nr` (mmap, mprotect) with protections (argument 2) that never make memory
/// executable: no code can be mapped or made runnable after start-up.
pub const fn no_exec(nr: i64, why: &'static str) -> Rule {
    Rule {
        nr,
        only: Only::BitsClear {
            arg: 2,
            mask: libc::PROT_EXEC as u64,
        },
        why,
    }
}

/// The rules of `kind`'s filter: the base rules, then its own; for an unjailed VMM's
/// vCPU (`--no-sandbox`) also [`vcpu::UNJAILED_RULES`].
pub fn rules(kind: ThreadKind, jailed: bool) -> Vec<Rule> {
    let own: &[Rule] = match kind {
        ThreadKind::Main => main::RULES,
        ThreadKind::Vcpu => vcpu::RULES,
        ThreadKind::Device => device::RULES,
        ThreadKind::Control => control::RULES,
    };
    let unjailed: &[Rule] = match kind {
        ThreadKind::Vcpu if !jailed => vcpu::UNJAILED_RULES,
        _ => &[],
    };
    base::RULES
        .iter()
        .chain(own)
        .chain(unjailed)
        .copied()
        .collect()
}

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

/// Compiles `kind`'s filter for `arch`, `action` for what it does not allow.
pub fn compile(
    kind: ThreadKind,
    action: Action,
    jailed: bool,
    arch: TargetArch,
) -> Result<BpfProgram, SeccompError> {
    let compile_err = |source| SeccompError::Compile { kind, source };
    let mut by_nr: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    // Whether a call is allowed with any arguments (then its other rules do not matter).
    let mut unconditional = std::collections::BTreeSet::new();
    for rule in rules(kind, jailed) {
        let conditions = seccomp_rules(rule.only).map_err(compile_err)?;
        if conditions.is_empty() {
            unconditional.insert(rule.nr);
        }
        by_nr.entry(rule.nr).or_default().extend(conditions);
    }
    for nr in unconditional {
        by_nr.insert(nr, Vec::new());
    }
    let mismatch = match action {
        Action::KillProcess => SeccompAction::KillProcess,
        Action::Log => SeccompAction::Log,
    };
    let filter = SeccompFilter::new(by_nr, mismatch, SeccompAction::Allow, arch)
        .map_err(|e| compile_err(e.into()))?;
    BpfProgram::try_from(filter).map_err(|e| compile_err(e.into()))
}

/// Every kind's filter, compiled for this machine.
pub struct Filters {
    programs: BTreeMap<ThreadKind, BpfProgram>,
    jailed: bool,
}

impl Filters {
    /// Compiles the filter of every kind, `action` for what a filter does not allow,
    /// for a jailed VMM or not (`--no-sandbox`).
    pub fn compile(action: Action, jailed: bool) -> Result<Self, SeccompError> {
        let programs = ThreadKind::ALL
            .into_iter()
            .map(|kind| Ok((kind, compile(kind, action, jailed, TargetArch::x86_64)?)))
            .collect::<Result<_, SeccompError>>()?;
        Ok(Self { programs, jailed })
    }

    /// Each kind, the number of system calls its filter allows, and the filter's
    /// length in BPF instructions.
    pub fn sizes(&self) -> Vec<(ThreadKind, usize, usize)> {
        self.programs
            .iter()
            .map(|(kind, program)| {
                let mut calls: Vec<i64> = rules(*kind, self.jailed).iter().map(|r| r.nr).collect();
                calls.sort_unstable();
                calls.dedup();
                (*kind, calls.len(), program.len())
            })
            .collect()
    }

    /// Installs `kind`'s filter on the calling thread (and sets its `no_new_privs`,
    /// which a filter needs). Irreversible: the thread and every thread it starts keep
    /// it.
    pub fn install(&self, kind: ThreadKind) -> Result<(), SeccompError> {
        let install_err = |source| SeccompError::Install { kind, source };
        let program = self
            .programs
            .get(&kind)
            .ok_or(seccompiler::Error::EmptyFilter)
            .map_err(install_err)?;
        seccompiler::apply_filter(program).map_err(install_err)
    }
}

#[cfg(test)]
mod tests;
