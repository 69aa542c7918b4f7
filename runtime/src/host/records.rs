//! Reading vmctl's own records from disk by the rules of `vmctl_planner::record`: the
//! `format-version` is looked at first, so a record of a newer format is refused with
//! a clear error rather than misread; then its fields through its own serde type, whose
//! defaults fill what an older vmctl did not write.

use std::io;
use std::path::Path;

use serde::de::DeserializeOwned;
use vmctl_planner::record;

use super::fsutil::read_json;

/// Reads the record at `path` of a format up to `known`: `Ok(None)` when the file does
/// not exist; `InvalidData` (carrying `record::NewerFormat` or the parse error) when it
/// is of a newer format or not a record of this type.
pub(crate) fn read_record<T: DeserializeOwned>(path: &Path, known: u32) -> io::Result<Option<T>> {
    let Some(value) = read_json::<serde_json::Value>(path)? else {
        return Ok(None);
    };
    record::check_version(&value, known)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Thing {
        #[serde(default)]
        name: String,
    }

    #[test]
    fn absent_old_known_and_newer_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("thing.json");
        assert_eq!(read_record::<Thing>(&path, 1).unwrap(), None);
        std::fs::write(&path, r#"{"name": "a", "later-field": 1}"#).unwrap();
        let thing = read_record::<Thing>(&path, 1).unwrap().unwrap();
        assert_eq!(thing.name, "a");
        std::fs::write(&path, r#"{"format-version": 2, "name": 7}"#).unwrap();
        let err = read_record::<Thing>(&path, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("format version 2"), "{err}");
        std::fs::write(&path, "{not json").unwrap();
        assert!(read_record::<Thing>(&path, 1).is_err());
    }
}
