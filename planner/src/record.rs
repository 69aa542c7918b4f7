//! Records: what vmctl writes to disk or sends between hosts, read back by a later
//! vmctl. Each is its own serde type, never the config model, so that the model can
//! change without making a host's records unreadable.
//!
//! The rules every record follows:
//! - It carries `format-version`, a major version. A record without one was written
//!   before versions existed and is format 1.
//! - A change a reader of the same major version can live with (a new field with a
//!   default) keeps the version: every field has a serde default and unknown fields are
//!   ignored. Any other change bumps it.
//! - A record of a newer major version than this build knows is refused with
//!   [`NewerFormat`], never half-read ([`check_version`] looks before the fields are
//!   parsed).
//!
//! [`VmSpec`] is the applied VM as `spec.json` and the live model carry it.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vmctl_schema::{Nic, Vm, VmState};

/// The format version of a record written before records carried one.
pub const UNVERSIONED: u32 = 1;

/// Serde default of `format-version` fields: [`UNVERSIONED`].
pub fn unversioned() -> u32 {
    UNVERSIONED
}

/// A record written by a newer vmctl, in a format this build cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("it has format version {found}, written by a newer vmctl; this one reads format {known} and older")]
pub struct NewerFormat {
    pub found: u32,
    pub known: u32,
}

/// The `format-version` of a record's JSON (`UNVERSIONED` when it has none, or is not an
/// object: parsing its fields then says what is wrong), refused when newer than `known`.
pub fn check_version(value: &serde_json::Value, known: u32) -> Result<u32, NewerFormat> {
    let found = value
        .get("format-version")
        .and_then(serde_json::Value::as_u64)
        .map_or(UNVERSIONED, |v| u32::try_from(v).unwrap_or(u32::MAX));
    if found > known {
        Err(NewerFormat { found, known })
    } else {
        Ok(found)
    }
}

/// The VM as it was applied: the settings of the config's `vm` node that vmctl acted
/// on. Its JSON is that of the config model's VM when it was introduced (`spec.json` of
/// format 1 held exactly that), so records written before it are read as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct VmSpec {
    pub name: String,
    pub host: String,
    pub cpus: u32,
    /// Guest memory in bytes.
    pub memory: u64,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// Volume names, in attach order.
    pub disks: Vec<String>,
    pub nics: Vec<NicSpec>,
    pub cpuset: Option<String>,
    pub state: RunState,
    pub depends_on: Vec<String>,
    /// Whether the kernel's `ip=` argument was appended (absent: no).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ip_cmdline: bool,
    /// The `ip=` argument appended to the command line, when `ip_cmdline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_argument: Option<String>,
    /// Whether a change of host may move it running (absent: yes).
    #[serde(skip_serializing_if = "is_true")]
    pub migrate: bool,
    /// Its migration pause budget in milliseconds (absent: the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration_downtime: Option<u64>,
    /// The CPU features hidden from the guest when it was started (absent: none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpuid_mask: Vec<String>,
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Default for VmSpec {
    fn default() -> Self {
        VmSpec {
            name: String::new(),
            host: String::new(),
            cpus: 1,
            memory: 0,
            kernel: PathBuf::new(),
            initrd: None,
            cmdline: String::new(),
            disks: Vec::new(),
            nics: Vec::new(),
            cpuset: None,
            state: RunState::Running,
            depends_on: Vec::new(),
            ip_cmdline: false,
            ip_argument: None,
            migrate: true,
            migration_downtime: None,
            cpuid_mask: Vec::new(),
        }
    }
}

/// A NIC of a [`VmSpec`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct NicSpec {
    pub vlan: String,
    pub mac: String,
    /// The NIC's address (absent in records of VMs applied before vmctl had addresses,
    /// and on a VLAN without a subnet): what keeps an allocated address stable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Whether vmctl allocated `ip` (rather than the config declaring it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ip_allocated: bool,
}

/// Whether the applied config asked for the VM running or stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    #[default]
    Running,
    Stopped,
}

impl From<&Vm> for VmSpec {
    fn from(vm: &Vm) -> Self {
        VmSpec {
            name: vm.name.clone(),
            host: vm.host.clone(),
            cpus: vm.cpus,
            memory: vm.memory,
            kernel: vm.kernel.clone(),
            initrd: vm.initrd.clone(),
            cmdline: vm.cmdline.clone(),
            disks: vm.disks.clone(),
            nics: vm
                .nics
                .iter()
                .map(|n| NicSpec {
                    vlan: n.vlan.clone(),
                    mac: n.mac.clone(),
                    ip: n.ip,
                    ip_allocated: n.ip_allocated,
                })
                .collect(),
            cpuset: vm.cpuset.clone(),
            state: match vm.state {
                VmState::Running => RunState::Running,
                VmState::Stopped => RunState::Stopped,
            },
            depends_on: vm.depends_on.clone(),
            ip_cmdline: vm.ip_cmdline,
            ip_argument: vm.ip_argument.clone(),
            migrate: vm.migrate,
            migration_downtime: vm.migration_downtime,
            cpuid_mask: vm.cpuid_mask.clone(),
        }
    }
}

impl VmSpec {
    /// The VM as the config model says it.
    pub fn to_model(&self) -> Vm {
        Vm {
            name: self.name.clone(),
            host: self.host.clone(),
            cpus: self.cpus,
            memory: self.memory,
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone(),
            disks: self.disks.clone(),
            nics: self
                .nics
                .iter()
                .map(|n| Nic {
                    vlan: n.vlan.clone(),
                    mac: n.mac.clone(),
                    ip: n.ip,
                    ip_allocated: n.ip_allocated,
                })
                .collect(),
            cpuset: self.cpuset.clone(),
            state: match self.state {
                RunState::Running => VmState::Running,
                RunState::Stopped => VmState::Stopped,
            },
            depends_on: self.depends_on.clone(),
            ip_cmdline: self.ip_cmdline,
            ip_argument: self.ip_argument.clone(),
            migrate: self.migrate,
            migration_downtime: self.migration_downtime,
            cpuid_mask: self.cpuid_mask.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_vm_spec_round_trips_through_the_model() {
        let vm = crate::testdata::vm("web-1", "front", "52:54:00:00:00:01");
        let spec = VmSpec::from(&vm);
        assert_eq!(spec.to_model(), vm);
        // The record's JSON is the model's JSON of format 1, field for field.
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::to_value(&vm).unwrap()
        );
    }

    #[test]
    fn missing_fields_take_defaults_and_unknown_ones_are_ignored() {
        let spec: VmSpec =
            serde_json::from_value(json!({"name": "a", "cpus": 2, "added-later": true})).unwrap();
        assert_eq!(spec.cpus, 2);
        assert_eq!(spec.state, RunState::Running);
        assert!(spec.nics.is_empty());
    }

    #[test]
    fn versions_unversioned_known_and_newer() {
        assert_eq!(check_version(&json!({"name": "a"}), 1), Ok(UNVERSIONED));
        assert_eq!(check_version(&json!({"format-version": 1}), 2), Ok(1));
        assert_eq!(check_version(&json!([1, 2]), 1), Ok(UNVERSIONED));
        let newer = check_version(&json!({"format-version": 2}), 1).unwrap_err();
        assert_eq!(newer, NewerFormat { found: 2, known: 1 });
        assert!(newer.to_string().contains("newer vmctl"), "{newer}");
        let huge = json!({"format-version": u64::MAX});
        assert!(check_version(&huge, 1).is_err());
    }
}
