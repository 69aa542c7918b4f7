//! A `vmctl snapshot` command as a call the VM's host carries out ([`serve`]): in
//! process for a local host, through its agent for a host reached over ssh
//! (`crate::hosts::Host::snapshot`). Its failure crosses the wire whole enough for the
//! CLI's diagnostic: [`SnapshotFailure`], the kind of [`SnapshotStoreError`] and its
//! text.

use serde::{Deserialize, Serialize};

use super::snapshots::{self, SnapshotRecord, SnapshotStoreError};
use super::{VmHost, VmPaths};

/// One snapshot command on one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "do",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum SnapshotCall {
    /// [`snapshots::create`].
    Create { vm: String, name: String },
    /// [`snapshots::list`].
    List { vm: String },
    /// [`snapshots::read_snapshot`].
    Find { vm: String, name: String },
    /// [`snapshots::restore`], with the host's `cpuid-mask` as the config says now.
    Restore {
        vm: String,
        name: String,
        cpuid_mask: Vec<String>,
    },
    /// [`snapshots::delete`].
    Delete { vm: String, name: String },
}

impl SnapshotCall {
    fn vm(&self) -> &str {
        match self {
            SnapshotCall::Create { vm, .. }
            | SnapshotCall::List { vm }
            | SnapshotCall::Find { vm, .. }
            | SnapshotCall::Restore { vm, .. }
            | SnapshotCall::Delete { vm, .. } => vm,
        }
    }
}

/// What a host answers to a [`SnapshotCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "done",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum SnapshotAnswer {
    Taken {
        record: SnapshotRecord,
    },
    /// Each snapshot's record, or why it cannot be read.
    Listed {
        records: Vec<Result<SnapshotRecord, SnapshotFailure>>,
    },
    Found {
        record: Option<SnapshotRecord>,
    },
    /// The new VMM's pid.
    Restored {
        pid: u32,
    },
    Deleted {
        record: SnapshotRecord,
    },
}

/// Which [`SnapshotStoreError`] it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    InvalidName,
    Exists,
    NotFound,
    Incomplete,
    NotRunning,
    Engine,
    Disks,
    Refused,
    Io,
    Vm,
}

/// A snapshot command's failure on the VM's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "kebab-case")]
#[error("{message}")]
pub struct SnapshotFailure {
    pub kind: FailureKind,
    /// The VM.
    pub vm: String,
    /// The error's text, with its causes.
    pub message: String,
}

impl SnapshotFailure {
    /// `e`, a failure of a command on VM `vm`.
    pub fn of(e: &SnapshotStoreError, vm: &str) -> Self {
        let kind = match e {
            SnapshotStoreError::InvalidName { .. } => FailureKind::InvalidName,
            SnapshotStoreError::Exists { .. } => FailureKind::Exists,
            SnapshotStoreError::NotFound { .. } => FailureKind::NotFound,
            SnapshotStoreError::Incomplete { .. } => FailureKind::Incomplete,
            SnapshotStoreError::NotRunning { .. } => FailureKind::NotRunning,
            SnapshotStoreError::Engine { .. } => FailureKind::Engine,
            SnapshotStoreError::Disks { .. } => FailureKind::Disks,
            SnapshotStoreError::Refused { .. } => FailureKind::Refused,
            SnapshotStoreError::Io { .. } => FailureKind::Io,
            SnapshotStoreError::Vm(_) => FailureKind::Vm,
        };
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            source = cause.source();
        }
        SnapshotFailure {
            kind,
            vm: vm.to_owned(),
            message,
        }
    }
}

/// Carries out `call` on this host.
pub fn serve(host: &VmHost<'_>, call: &SnapshotCall) -> Result<SnapshotAnswer, SnapshotFailure> {
    let vm = call.vm();
    let failed = |e: SnapshotStoreError| SnapshotFailure::of(&e, vm);
    super::check_name(vm).map_err(|e| failed(e.into()))?;
    let paths = VmPaths::new(host.state_dir, host.project, vm);
    Ok(match call {
        SnapshotCall::Create { vm, name } => SnapshotAnswer::Taken {
            record: snapshots::create(host, vm, name).map_err(failed)?,
        },
        SnapshotCall::List { .. } => SnapshotAnswer::Listed {
            records: snapshots::list(&paths)
                .into_iter()
                .map(|r| r.map_err(failed))
                .collect(),
        },
        SnapshotCall::Find { name, .. } => SnapshotAnswer::Found {
            record: snapshots::read_snapshot(&paths, name).map_err(failed)?,
        },
        SnapshotCall::Restore {
            vm,
            name,
            cpuid_mask,
        } => SnapshotAnswer::Restored {
            pid: snapshots::restore(host, vm, name, Some(cpuid_mask)).map_err(failed)?,
        },
        SnapshotCall::Delete { vm, name } => SnapshotAnswer::Deleted {
            record: snapshots::delete(&paths, vm, name).map_err(failed)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_failures_cross_the_wire() {
        let call = SnapshotCall::Restore {
            vm: "web-1".into(),
            name: "s1".into(),
            cpuid_mask: vec!["x2apic".into()],
        };
        let text = serde_json::to_string(&call).unwrap();
        assert!(text.contains("\"do\":\"restore\""), "{text}");
        assert_eq!(serde_json::from_str::<SnapshotCall>(&text).unwrap(), call);
        let failure = SnapshotFailure::of(
            &SnapshotStoreError::Incomplete {
                vm: "web-1".into(),
                name: "s1".into(),
            },
            "web-1",
        );
        let answer: Result<SnapshotAnswer, SnapshotFailure> = Err(failure.clone());
        let text = serde_json::to_string(&answer).unwrap();
        let back: Result<SnapshotAnswer, SnapshotFailure> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, Err(failure));
    }

    #[test]
    fn a_bad_vm_name_is_refused_before_any_path_is_made() {
        let host = VmHost {
            project: "p",
            state_dir: std::path::Path::new("/nonexistent"),
            netns: None,
            vmctl: std::path::Path::new("/bin/false"),
        };
        let e = serve(
            &host,
            &SnapshotCall::List {
                vm: "../etc".into(),
            },
        )
        .unwrap_err();
        assert_eq!(e.kind, FailureKind::Vm);
    }
}
