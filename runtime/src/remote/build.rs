//! The build id: the sha256 of the vmctl executable, in hex.
//!
//! Why the executable's hash and not an id fixed at build time (a git hash, a
//! timestamp): the agent is shipped to a content-addressed path,
//! `<state-dir>/bin/vmctl-<sha256>`, checked by sha256 on the far side, so the hash is
//! needed anyway; with the build id being that same hash, "the host runs this exact
//! build" and "the file at this path is this exact file" are one question, which a
//! build-time id cannot answer (two builds of one commit with other flags, a dirty
//! tree, a rebuilt dependency all share it). The cost is reading the executable once
//! per process (SHA-NI: ~0.1 s for a 150 MB debug build, ~10 ms for a release one),
//! computed on first use and kept ([`Executable::current`]) — and once per build at
//! all when the user's build-id cache knows the file ([`super::build_cache`]).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// An executable and its sha256: what is shipped and the id it answers a handshake
/// with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executable {
    /// Where it is read from to be shipped.
    pub path: PathBuf,
    /// Its sha256, lowercase hex (64 characters).
    pub sha256: String,
    /// Its size in bytes.
    pub len: u64,
}

/// Why an executable could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the vmctl executable {path}: {source}")]
pub struct BuildIdError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl Executable {
    /// The running executable (`/proc/self/exe`), hashed once per process, or not at
    /// all when the user's build-id cache knows this very file
    /// ([`super::build_cache`]).
    pub fn current() -> Result<&'static Executable, BuildIdError> {
        static CURRENT: OnceLock<Result<Executable, String>> = OnceLock::new();
        let current = CURRENT.get_or_init(|| {
            Executable::cached(Path::new("/proc/self/exe"), super::build_cache::location())
                .map_err(|e| e.source.to_string())
        });
        current.as_ref().map_err(|message| BuildIdError {
            path: PathBuf::from("/proc/self/exe"),
            source: std::io::Error::other(message.clone()),
        })
    }

    /// The executable at `path`, its id taken from the cache file `cache` when that
    /// knows the file by its key, else hashed and remembered there.
    pub fn cached(path: &Path, cache: Option<PathBuf>) -> Result<Executable, BuildIdError> {
        use super::build_cache::{lookup, store, unchanged, FileKey};
        let error = |source| BuildIdError {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(error)?;
        let key = FileKey::of(&file.metadata().map_err(error)?);
        if let Some(sha256) = cache.as_deref().and_then(|c| lookup(c, &key)) {
            return Ok(Executable {
                path: path.to_owned(),
                sha256,
                len: key.size(),
            });
        }
        let (sha256, len) = sha256_of(&mut file).map_err(error)?;
        if let Some(cache) = cache {
            if len == key.size() && unchanged(&file, &key) {
                store(&cache, &key, &sha256);
            }
        }
        Ok(Executable {
            path: path.to_owned(),
            sha256,
            len,
        })
    }

    /// The executable at `path` (e.g. the `vmctl` binary a test ships). The path is
    /// read through one open file, so the hash and the size are of the same content.
    pub fn at(path: &Path) -> Result<Executable, BuildIdError> {
        let error = |source| BuildIdError {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(error)?;
        let (sha256, len) = sha256_of(&mut file).map_err(error)?;
        Ok(Executable {
            path: path.to_owned(),
            sha256,
            len,
        })
    }

    /// The file name it has on a host: `vmctl-<sha256>`.
    pub fn file_name(&self) -> String {
        format!("vmctl-{}", self.sha256)
    }
}

/// The sha256 (hex) and length of everything `reader` yields.
pub fn sha256_of(reader: &mut impl Read) -> std::io::Result<(String, u64)> {
    crate::host::image::sha256_of(reader, None)
}

/// Whether `s` looks like a build id: 64 lowercase hex digits.
pub fn is_build_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The build id of the running agent: the hex in its file name when it runs from the
/// content-addressed path vmctl shipped it to (`…/bin/vmctl-<sha256>`: checked by
/// sha256 as it was written, in a directory only root may write), without reading the
/// file again; else the sha256 of the executable ([`Executable::current`]).
pub fn agent_build_id() -> Result<String, BuildIdError> {
    let shipped = std::env::current_exe().ok().and_then(|exe| {
        let in_bin = exe
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "bin");
        let name = exe
            .file_name()?
            .to_str()?
            .strip_prefix("vmctl-")?
            .to_owned();
        (in_bin && is_build_id(&name)).then_some(name)
    });
    match shipped {
        Some(id) => Ok(id),
        None => Executable::current().map(|e| e.sha256.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        let (hex, len) = sha256_of(&mut &b"abc"[..]).expect("hashes");
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(len, 3);
        assert!(is_build_id(&hex));
        assert!(!is_build_id("ABC"));
    }

    #[test]
    fn the_running_executable_has_one_id() {
        let a = Executable::current().expect("hashes");
        let b = Executable::current().expect("hashes");
        assert!(std::ptr::eq(a, b));
        assert!(is_build_id(&a.sha256));
        assert_eq!(a.file_name(), format!("vmctl-{}", a.sha256));
        let again = Executable::at(Path::new("/proc/self/exe")).expect("hashes");
        assert_eq!(again.sha256, a.sha256);
    }

    #[test]
    fn a_cached_id_is_the_hashed_one_and_is_used_without_hashing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = tmp.path().join("build-ids");
        let exe = tmp.path().join("vmctl");
        std::fs::write(&exe, b"abc").expect("writes");
        let hashed = Executable::cached(&exe, Some(cache.clone())).expect("hashes");
        assert_eq!(hashed, Executable::at(&exe).expect("hashes"));
        assert!(cache.exists(), "remembered");
        // The cache answers for the same file (its content is not read again): proven
        // by a cache that says something else for this very key.
        let text = std::fs::read_to_string(&cache).expect("reads");
        std::fs::write(&cache, text.replace(&hashed.sha256, &"e".repeat(64))).expect("writes");
        let cached = Executable::cached(&exe, Some(cache.clone())).expect("cached");
        assert_eq!(cached.sha256, "e".repeat(64));
        assert_eq!(cached.len, 3);
        // Without a cache, it is hashed.
        assert_eq!(Executable::cached(&exe, None).expect("hashes"), hashed);
    }

    #[test]
    fn a_missing_executable_names_its_path() {
        let e = Executable::at(Path::new("/nonexistent/vmctl")).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/vmctl"), "{e}");
    }
}
