//! A host's image cache: the kernels, initrds and base images a remote run shipped to
//! it, each stored once by its content, `<state-dir>/images/sha256-<hex>`, and shared by
//! every VM and volume (of any project) that names the same bytes.
//!
//! A file arrives through [`receive`]: written to a private temp file in the cache,
//! hashed as it is written, and renamed into place only when its digest is the one the
//! sender announced — so a file at a cache path always has the content its name says,
//! and a dropped transfer leaves nothing under a final name (its temp file is removed,
//! or swept by the next [`receive`]).
//!
//! Files are 0600 in a 0700 dir: only root reads what VMs boot.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::fsutil;

/// The mode of the cache dir.
const DIR_MODE: u32 = 0o700;
/// The mode of a cached file.
const FILE_MODE: u32 = 0o600;
/// Prefix of a transfer in progress.
const TEMP_PREFIX: &str = ".incoming-";

/// Errors of the image cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{digest:?} is not a sha256 digest (64 lower-case hex digits)")]
    BadDigest { digest: String },
    #[error("cannot create the image cache {path}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("the image cache {path} is not a directory vmctl can trust ({why})")]
    Untrusted { path: PathBuf, why: String },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: io::Error },
    #[error("the file received is not the one announced: its sha256 is {found}, not {expected}")]
    Mismatch { expected: String, found: String },
    #[error("{path} is in the image cache but is not a regular file")]
    NotRegular { path: PathBuf },
}

/// `<state-dir>/images`.
pub fn cache_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("images")
}

/// Where the file of sha256 `hex` is cached.
pub fn cached_path(state_dir: &Path, hex: &str) -> Result<PathBuf, CacheError> {
    check_digest(hex)?;
    Ok(cache_dir(state_dir).join(format!("sha256-{hex}")))
}

fn check_digest(hex: &str) -> Result<(), CacheError> {
    let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(())
    } else {
        Err(CacheError::BadDigest {
            digest: hex.to_owned(),
        })
    }
}

/// The cached file of sha256 `hex`, when the cache has it.
pub fn lookup(state_dir: &Path, hex: &str) -> Result<Option<PathBuf>, CacheError> {
    let path = cached_path(state_dir, hex)?;
    match fsutil::lstat(&path) {
        Ok(Some(meta)) if meta.file_type().is_file() => Ok(Some(path)),
        Ok(Some(_)) => Err(CacheError::NotRegular { path }),
        Ok(None) => Ok(None),
        Err(source) => Err(CacheError::Write { path, source }),
    }
}

/// Makes the cache dir (0700) or checks the one there: a real directory, not a
/// symlink, writable by nobody but its owner.
fn ensure_dir(state_dir: &Path) -> Result<PathBuf, CacheError> {
    let dir = cache_dir(state_dir);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(&dir)
        .map_err(|source| CacheError::CreateDir {
            path: dir.clone(),
            source,
        })?;
    let meta = fs::symlink_metadata(&dir).map_err(|source| CacheError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    if !meta.file_type().is_dir() {
        return Err(CacheError::Untrusted {
            path: dir,
            why: format!("it is a {}", fsutil::kind_of(&meta)),
        });
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(CacheError::Untrusted {
            path: dir,
            why: "others may write to it".into(),
        });
    }
    Ok(dir)
}

/// Stores what `reader` yields as the file of sha256 `hex`, unless the cache has it;
/// its path. Refused (and nothing kept) when the bytes are not that digest.
pub fn receive(state_dir: &Path, hex: &str, reader: &mut dyn Read) -> Result<PathBuf, CacheError> {
    let path = cached_path(state_dir, hex)?;
    if let Some(path) = lookup(state_dir, hex)? {
        // Drain what was sent: the sender does not wait for a verdict mid-stream.
        let _ = io::copy(reader, &mut io::sink());
        return Ok(path);
    }
    let dir = ensure_dir(state_dir)?;
    sweep_stale(&dir);
    let temp = dir.join(format!("{TEMP_PREFIX}{hex}-{}", std::process::id()));
    let written = write_hashed(&temp, reader);
    let found = match written {
        Ok(found) => found,
        Err(source) => {
            let _ = fs::remove_file(&temp);
            return Err(CacheError::Write { path: temp, source });
        }
    };
    if found != hex {
        let _ = fs::remove_file(&temp);
        return Err(CacheError::Mismatch {
            expected: hex.to_owned(),
            found,
        });
    }
    fs::rename(&temp, &path).map_err(|source| {
        let _ = fs::remove_file(&temp);
        CacheError::Write {
            path: path.clone(),
            source,
        }
    })?;
    Ok(path)
}

/// Writes `reader` to a new file at `temp` (0600, never following a link); the sha256
/// of what was written, in hex.
fn write_hashed(temp: &Path, reader: &mut dyn Read) -> io::Result<String> {
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(temp)?;
    let (hex, _) = super::image::sha256_of(
        &mut Tee {
            reader,
            file: &mut file,
        },
        None,
    )?;
    file.sync_all()?;
    Ok(hex)
}

/// A reader that writes what it reads to `file`.
struct Tee<'a> {
    reader: &'a mut dyn Read,
    file: &'a mut File,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.reader.read(buf)?;
        self.file.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Removes temp files of transfers whose process is gone (a dropped connection).
fn sweep_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let pid = rest.rsplit('-').next().and_then(|p| p.parse::<i32>().ok());
        let gone = pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if gone && is_file {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_hex(bytes: &[u8]) -> String {
        super::super::image::sha256_of(&mut &bytes[..], None)
            .unwrap()
            .0
    }

    #[test]
    fn a_file_is_stored_once_by_its_content() {
        let state = tempfile::tempdir().unwrap();
        let hex = sha256_hex(b"kernel bytes");
        assert_eq!(lookup(state.path(), &hex).unwrap(), None);
        let path = receive(state.path(), &hex, &mut &b"kernel bytes"[..]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"kernel bytes");
        assert_eq!(path, cached_path(state.path(), &hex).unwrap());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE);
        let dir_mode = fs::metadata(cache_dir(state.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, DIR_MODE);
        assert_eq!(lookup(state.path(), &hex).unwrap(), Some(path.clone()));
        // Sent again: kept as it is.
        assert_eq!(
            receive(state.path(), &hex, &mut &b"kernel bytes"[..]).unwrap(),
            path
        );
    }

    #[test]
    fn bytes_that_are_not_the_announced_digest_are_refused_and_not_kept() {
        let state = tempfile::tempdir().unwrap();
        let hex = sha256_hex(b"what was announced");
        let err = receive(state.path(), &hex, &mut &b"something else"[..]).unwrap_err();
        assert!(matches!(err, CacheError::Mismatch { .. }), "{err}");
        let left: Vec<_> = fs::read_dir(cache_dir(state.path())).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn digests_that_are_not_sha256_hex_are_refused() {
        let state = tempfile::tempdir().unwrap();
        for bad in ["", "../../etc/passwd", &"A".repeat(64), &"0".repeat(63)] {
            assert!(matches!(
                cached_path(state.path(), bad),
                Err(CacheError::BadDigest { .. })
            ));
        }
    }

    #[test]
    fn a_cache_others_may_write_to_is_not_trusted() {
        let state = tempfile::tempdir().unwrap();
        let dir = cache_dir(state.path());
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let hex = sha256_hex(b"x");
        let err = receive(state.path(), &hex, &mut &b"x"[..]).unwrap_err();
        assert!(matches!(err, CacheError::Untrusted { .. }), "{err}");
    }
}
