//! The VMM's seccomp filters: one per thread kind ([`ThreadKind`]), each allowing only
//! the system calls (and, for the riskiest, only the arguments) that threads of that
//! kind make; anything else kills the whole VMM (`SECCOMP_RET_KILL_PROCESS`: the
//! kernel sends SIGSYS, which cannot be caught).
//!
//! To audit a filter, read its file: [`base`] (what every thread makes: memory,
//! futexes, leaving the thread), then [`vcpu`], [`device`], [`control`] or [`main`];
//! each is a list of rules, one system call and one reason per rule. The filter of a
//! kind is `base` plus its own file ([`kinds`]), compiled with seccompiler when vmctl
//! is built (`runtime/build.rs`, for each kind, jailed or not, killing or logging) into
//! BPF programs in the binary, as Firecracker does: a VMM never runs the compiler,
//! which cost ~0.8 MiB of resident memory at every start. A thread installs its
//! program itself before it runs any VMM code ([`Filters::install`],
//! [`super::threads`]); the main thread installs its own once every other thread is
//! started, before a vCPU enters the guest.
//!
//! Writing a filter: run the VMM with `VMCTL_VMM_SECCOMP_LOG=1` (or `vmctl vmm
//! --seccomp-log`), which logs (`SECCOMP_RET_LOG`, in `dmesg` as `audit: type=1326 …
//! syscall=N`) instead of killing, and `strace -f` it; docs/seccomp.md says how.

mod base;
#[cfg(test)]
mod compile;
mod control;
mod device;
pub mod kinds;
mod main;
mod rule;
mod vcpu;

pub use rule::{any, arg_in, ioctl, no_exec, Only, Rule};

use seccompiler::sock_filter;

use super::threads::ThreadKind;

/// Errors installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
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

/// One filter compiled by the build script.
struct Program {
    /// The thread kind's name.
    kind: &'static str,
    /// For a jailed VMM (else `--no-sandbox`).
    jailed: bool,
    /// Logging what it does not allow (else killing).
    log: bool,
    /// The BPF program.
    bpf: &'static [sock_filter],
}

// `PROGRAMS`: every filter, written by `runtime/build.rs`.
include!(concat!(env!("OUT_DIR"), "/seccomp_programs.rs"));

/// The rules of `kind`'s filter (see [`kinds`]).
pub fn rules(kind: ThreadKind, jailed: bool) -> Vec<Rule> {
    kinds::rules_of(kind.name(), jailed)
}

/// Every kind's filter for one VMM, as compiled into the binary.
#[derive(Debug, Clone, Copy)]
pub struct Filters {
    action: Action,
    jailed: bool,
}

impl Filters {
    /// The filters of a VMM jailed or not (`--no-sandbox`), `action` for what a filter
    /// does not allow.
    pub fn new(action: Action, jailed: bool) -> Self {
        Self { action, jailed }
    }

    /// `kind`'s program (empty if the build made none: installing it then fails).
    fn program(&self, kind: ThreadKind) -> &'static [sock_filter] {
        PROGRAMS
            .iter()
            .find(|p| {
                p.kind == kind.name()
                    && p.jailed == self.jailed
                    && p.log == (self.action == Action::Log)
            })
            .map_or(&[], |p| p.bpf)
    }

    /// Each kind, the number of system calls its filter allows, and the filter's
    /// length in BPF instructions.
    pub fn sizes(&self) -> Vec<(ThreadKind, usize, usize)> {
        ThreadKind::ALL
            .into_iter()
            .map(|kind| {
                let mut calls: Vec<i64> = rules(kind, self.jailed).iter().map(|r| r.nr).collect();
                calls.sort_unstable();
                calls.dedup();
                (kind, calls.len(), self.program(kind).len())
            })
            .collect()
    }

    /// Installs `kind`'s filter on the calling thread (and sets its `no_new_privs`,
    /// which a filter needs). Irreversible: the thread and every thread it starts keep
    /// it.
    pub fn install(&self, kind: ThreadKind) -> Result<(), SeccompError> {
        seccompiler::apply_filter(self.program(kind))
            .map_err(|source| SeccompError::Install { kind, source })
    }
}

#[cfg(test)]
mod tests;
