//! Small file helpers shared by the pool, volume and lock modules.
//!
//! What vmctl writes it creates with `O_CREAT | O_EXCL | O_NOFOLLOW` (never through a
//! symlink, never over someone else's file) and an explicit mode set with `fchmod`, so the
//! caller's umask changes nothing. What it reads as a record must be a regular file: a
//! symlink, FIFO or device where a record should be is refused, never followed or opened
//! in a way that could block.

use std::ffi::OsString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The mode of every record and volume file vmctl writes.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Records are small; a larger file where one should be is not one.
const RECORD_LIMIT: u64 = 16 << 20;

/// The suffix of the temp files [`write_json_atomic`] writes beside their target:
/// `<file>.tmp-<pid>`.
pub(crate) const TMP_INFIX: &str = ".tmp-";

/// Why a path is not the regular file it should be.
#[derive(Debug, thiserror::Error)]
#[error("{} is {kind}, not a regular file; vmctl never follows or opens one there", path.display())]
pub struct NotRegular {
    pub path: std::path::PathBuf,
    pub kind: &'static str,
}

/// What kind of file `meta` describes, in words: "a symbolic link", "a FIFO", ….
pub fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn not_regular(path: &Path, meta: &Metadata) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        NotRegular {
            path: path.into(),
            kind: kind_of(meta),
        },
    )
}

/// `lstat`: `None` when nothing is at `path`.
pub(crate) fn lstat(path: &Path) -> io::Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Fails when something other than a regular file is at `path` (nothing is fine).
pub(crate) fn refuse_non_regular(path: &Path) -> io::Result<()> {
    match lstat(path)? {
        Some(meta) if !meta.file_type().is_file() => Err(not_regular(path, &meta)),
        _ => Ok(()),
    }
}

/// Opens `path` for reading when it is a regular file (a symlink to one is followed when
/// `follow`), with its metadata. A FIFO or device is refused without blocking on it.
pub fn open_regular(path: &Path, follow: bool) -> io::Result<(File, Metadata)> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) && !follow => {
            let meta = fs::symlink_metadata(path)?;
            return Err(not_regular(path, &meta));
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(not_regular(path, &meta));
    }
    Ok((file, meta))
}

/// Creates `path` as a new file (never through a symlink, never over an existing file)
/// with exactly `mode`, open for reading and writing.
pub(crate) fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // The umask may have taken bits away from `mode` (or, at 000, left group bits the
    // caller did not mean): set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(file)
}

/// Writes `value` as pretty JSON to `path` atomically: a new temp file beside it (mode
/// 0600), fsync, rename. A reader sees the old file or the new one, never half of one.
/// Refused when something other than a regular file is at `path`.
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let mut text = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    text.push(b'\n');
    write_atomic(path, &text)
}

/// Writes `text` to `path` atomically: a new temp file beside it (mode 0600), fsync,
/// rename. Refused when something other than a regular file is at `path`.
pub(crate) fn write_atomic(path: &Path, text: &[u8]) -> io::Result<()> {
    refuse_non_regular(path)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(format!("{TMP_INFIX}{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    // A temp file of this name is a leftover of a killed vmctl whose pid was ours; an
    // unlink never follows a symlink, and a directory there makes create_new fail.
    let _ = fs::remove_file(&tmp);
    let mut created = false;
    let result = (|| {
        let mut file = create_new(&tmp, FILE_MODE)?;
        created = true;
        file.write_all(text)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() && created {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads JSON from `path`: `Ok(None)` when the file does not exist. A symlink, FIFO or
/// device there is an error, and so is a file larger than any record.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    let (file, meta) = match open_regular(path, false) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if meta.len() > RECORD_LIMIT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes is too large for a vmctl record", meta.len()),
        ));
    }
    let mut bytes = Vec::new();
    file.take(RECORD_LIMIT).read_to_end(&mut bytes)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Removes a file; a file already gone is fine.
pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The entry names of directory `path`; a directory that does not exist is empty.
pub(crate) fn list_dir(path: &Path) -> io::Result<Vec<OsString>> {
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    entries.map(|entry| entry.map(|e| e.file_name())).collect()
}

/// Whether `name` is a temp file [`write_json_atomic`] writes: `<x>.json.tmp-<digits>`.
pub(crate) fn is_json_tmp(name: &str) -> bool {
    name.rsplit_once(TMP_INFIX).is_some_and(|(base, pid)| {
        base.ends_with(".json") && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Runs `f` with the process umask set to `mask` (tests in one process share it, so
    /// only the file's own mode is asserted, never anything umask-dependent elsewhere).
    fn with_umask<T>(mask: libc::mode_t, f: impl FnOnce() -> T) -> T {
        // SAFETY: umask has no preconditions.
        let old = unsafe { libc::umask(mask) };
        let out = f();
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        out
    }

    #[test]
    fn records_are_0600_under_umask_000() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        with_umask(0, || write_json_atomic(&path, &1u8)).unwrap();
        let mode = fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    #[test]
    fn a_symlink_where_a_record_should_be_is_refused_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let path = dir.path().join("r.json");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let err = write_json_atomic(&path, &1u8).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = read_json::<u8>(&path).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_fifo_record_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read_json::<u8>(&path).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
    }

    #[test]
    fn json_tmp_names() {
        assert!(is_json_tmp(".vmctl.json.tmp-123"));
        assert!(is_json_tmp("root.vmctl.json.tmp-9"));
        for name in [
            "root.raw",
            "x.json.tmp-",
            "x.json.tmp-1a",
            "x.tmp-12",
            "a.json",
        ] {
            assert!(!is_json_tmp(name), "{name}");
        }
    }
}
