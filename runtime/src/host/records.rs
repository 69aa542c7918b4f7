//! Reading vmctl's own records from disk by the rules of `vmctl_planner::record`: the
//! `format-version` is looked at first, so a record of a newer format is refused with
//! a clear error rather than misread; then its fields through its own serde type, whose
//! defaults fill what an older vmctl did not write.

use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use vmctl_planner::record;

use super::fsutil::{read_json, write_json_atomic};

/// The format version of each record this build writes and reads. A change that an
/// older reader of the same version cannot read bumps its number here.
///
/// | record | file |
/// | --- | --- |
/// | [`VM_RECORD`] | `<state-dir>/<project>/vms/<vm>/spec.json` |
/// | [`VMM_SPEC`] | `<state-dir>/<project>/vms/<vm>/vmm.json` |
/// | [`POOL_MARKER`] | `<pool>/.vmctl.json` |
/// | [`POOL_INDEX`] | `<state-dir>/<project>/pools/<pool>.json` |
/// | [`VOLUME_MARKER`] | `<pool>/<volume>.vmctl.json` |
/// | [`NETNS_MARKER`] | `/run/vmctl/netns/<name>.json` (format 1: `<state-dir>/<project>/netns.json`, still read) |
/// | [`CREATION_RECORD`] | `/run/vmctl/creating/<netns-cookie>/<ifname>.json` (an interface being made) |
/// | [`PROJECT_RECORD`] | `<state-dir>/<project>/project.json` (the config folder the project was last applied from) |
/// | [`SNAPSHOT_RECORD`] | `<state-dir>/<project>/vms/<vm>/snapshots/<name>/snapshot.json` |
/// | [`FIREWALL_RECORD`] | `<state-dir>/<project>/firewall.json` (the nftables table applied, see `host::firewall`) |
/// | [`FORWARDING_RECORD`] | `<state-dir>/forwarding.json` (the interfaces whose IPv4 forwarding vmctl holds, by project, see `host::forwarding`) |
pub mod version {
    /// 2: each NIC's address (`ip`, `ip-allocated`) and `ip-cmdline`/`ip-argument`;
    /// format 1 reads as NICs without addresses.
    pub const VM_RECORD: u32 = 2;
    pub const VMM_SPEC: u32 = 1;
    pub const POOL_MARKER: u32 = 1;
    pub const POOL_INDEX: u32 = 1;
    pub const VOLUME_MARKER: u32 = 1;
    pub const NETNS_MARKER: u32 = 2;
    pub const CREATION_RECORD: u32 = 1;
    pub const PROJECT_RECORD: u32 = 1;
    pub const FIREWALL_RECORD: u32 = 1;
    pub const SNAPSHOT_RECORD: u32 = 1;
    pub const FORWARDING_RECORD: u32 = 1;
}

/// A record as written: its fields with `format-version` in front. The record types
/// themselves need not carry the version (nor deny unknown fields, so they read it).
#[derive(Serialize)]
struct Versioned<'a, T> {
    #[serde(rename = "format-version")]
    format_version: u32,
    #[serde(flatten)]
    record: &'a T,
}

/// Writes `record` of format `version` to `path` atomically.
pub fn write_record<T: Serialize>(path: &Path, version: u32, record: &T) -> io::Result<()> {
    write_json_atomic(
        path,
        &Versioned {
            format_version: version,
            record,
        },
    )
}

/// Reads the record at `path` of a format up to `known`: `Ok(None)` when the file does
/// not exist; `InvalidData` (carrying `record::NewerFormat` or the parse error) when it
/// is of a newer format or not a record of this type.
pub fn read_record<T: DeserializeOwned>(path: &Path, known: u32) -> io::Result<Option<T>> {
    let Some(value) = read_json::<serde_json::Value>(path)? else {
        return Ok(None);
    };
    record::check_version(&value, known)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A record of one resource that cannot be read: that resource's problem, reported with
/// it while everything else is observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BadRecord {
    /// The resource's name (empty when only the config can tell, by `path`).
    pub name: String,
    /// The file (or the entry where a state dir should be).
    pub path: PathBuf,
    /// What went wrong, with its causes.
    pub error: String,
    pub cause: Cause,
}

/// Why a record cannot be read, as far as the fix differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// Permission denied.
    Denied,
    /// Written by a newer vmctl.
    Newer,
    /// Not valid JSON of the record.
    Corrupt,
    /// Not a file or directory vmctl made (a stray file where a state dir should be).
    Stray,
    /// A symlink or other non-regular file where a volume file should be: never
    /// followed or changed.
    NotRegular,
    /// Any other I/O error.
    Io,
}

impl BadRecord {
    /// The record of `name` at `path` failed to read with `error`.
    pub fn new(name: &str, path: &Path, error: &io::Error) -> BadRecord {
        let newer = error
            .get_ref()
            .is_some_and(|e| e.is::<record::NewerFormat>());
        let cause = match error.kind() {
            io::ErrorKind::PermissionDenied => Cause::Denied,
            io::ErrorKind::InvalidData if newer => Cause::Newer,
            io::ErrorKind::InvalidData => Cause::Corrupt,
            io::ErrorKind::NotADirectory => Cause::Stray,
            _ => Cause::Io,
        };
        BadRecord {
            name: name.to_owned(),
            path: path.to_owned(),
            error: error.to_string(),
            cause,
        }
    }

    /// The error again, for callers that stop at the first bad record.
    pub fn to_io_error(&self) -> io::Error {
        let kind = match self.cause {
            Cause::Denied => io::ErrorKind::PermissionDenied,
            Cause::Newer | Cause::Corrupt => io::ErrorKind::InvalidData,
            Cause::Stray => io::ErrorKind::NotADirectory,
            Cause::NotRegular => io::ErrorKind::InvalidInput,
            Cause::Io => io::ErrorKind::Other,
        };
        io::Error::new(kind, self.error.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, serde::Serialize, Deserialize, PartialEq)]
    struct Thing {
        #[serde(default)]
        name: String,
    }

    #[test]
    fn absent_old_known_and_newer_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("thing.json");
        assert_eq!(read_record::<Thing>(&path, 1).unwrap(), None);
        let thing = Thing { name: "b".into() };
        write_record(&path, 1, &thing).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""format-version": 1"#), "{text}");
        assert_eq!(read_record::<Thing>(&path, 1).unwrap(), Some(thing));
        std::fs::write(&path, r#"{"name": "a", "later-field": 1}"#).unwrap();
        let thing = read_record::<Thing>(&path, 1).unwrap().unwrap();
        assert_eq!(thing.name, "a");
        std::fs::write(&path, r#"{"format-version": 2, "name": 7}"#).unwrap();
        let err = read_record::<Thing>(&path, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("format version 2"), "{err}");
        assert_eq!(BadRecord::new("t", &path, &err).cause, Cause::Newer);
        std::fs::write(&path, "{not json").unwrap();
        let err = read_record::<Thing>(&path, 1).unwrap_err();
        assert_eq!(BadRecord::new("t", &path, &err).cause, Cause::Corrupt);
        // A file where a directory should be.
        let err = read_record::<Thing>(&path.join("spec.json"), 1).unwrap_err();
        assert_eq!(BadRecord::new("t", &path, &err).cause, Cause::Stray);
    }
}
