//! The state file: a fixed header, then the [`Snapshot`] as JSON.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "VMCTLSNP"
//!      8     4  format version, little-endian (FORMAT_VERSION)
//!     12     8  payload length in bytes, little-endian
//!     20    32  SHA-256 of the payload
//!     52     …  payload: the Snapshot, JSON
//! ```
//!
//! A file of another version is refused (a snapshot is taken and restored by the same
//! vmctl; it is not kept across upgrades as a VM's config is), as is one whose length or
//! checksum is wrong. JSON keeps the state readable with `tail -c +53 state | jq`; at a
//! few tens of KiB per vCPU it is parsed in well under a millisecond.

use sha2::{Digest, Sha256};

use super::Snapshot;

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"VMCTLSNP";
/// The format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 32;

/// Why a state file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// Not a vmctl snapshot.
    #[error("not a vmctl snapshot state file (no VMCTLSNP magic)")]
    Magic,
    /// Another format version.
    #[error("snapshot format version {found}, this vmctl reads version {FORMAT_VERSION} only")]
    Version {
        /// The file's version.
        found: u32,
    },
    /// Shorter or longer than its header says.
    #[error("the state file is {actual} bytes, its header says {expected}")]
    Length {
        /// From the header.
        expected: u64,
        /// The file's.
        actual: u64,
    },
    /// The payload is not what was written.
    #[error("the state file's checksum does not match: it was changed or damaged")]
    Checksum,
    /// The payload is not a snapshot of this format.
    #[error("the state file's payload cannot be read: {0}")]
    Payload(String),
}

/// The state file's bytes.
pub fn encode(snapshot: &Snapshot) -> Result<Vec<u8>, FormatError> {
    let payload = serde_json::to_vec(snapshot).map_err(|e| FormatError::Payload(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Reads a state file's bytes: magic, version, length, checksum, then the payload.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, FormatError> {
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(FormatError::Magic);
    }
    let word = |at: usize, len: usize| bytes.get(at..at + len);
    let version = word(8, 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .ok_or(FormatError::Magic)?;
    if version != FORMAT_VERSION {
        return Err(FormatError::Version { found: version });
    }
    let actual = bytes.len().saturating_sub(HEADER) as u64;
    let expected = word(12, 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or(FormatError::Length {
            expected: 0,
            actual,
        })?;
    if bytes.len() < HEADER || expected != actual {
        return Err(FormatError::Length { expected, actual });
    }
    let payload = &bytes[HEADER..];
    if Sha256::digest(payload).as_slice() != &bytes[20..HEADER] {
        return Err(FormatError::Checksum);
    }
    serde_json::from_slice(payload).map_err(|e| FormatError::Payload(e.to_string()))
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
