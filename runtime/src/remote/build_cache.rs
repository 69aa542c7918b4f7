//! The build id of an executable, remembered between runs.
//!
//! Hashing the 13 MB release binary costs each run that reaches a remote host ~10 ms
//! of CPU (more than the whole no-change plan of 100 local VMs takes), for an answer
//! that changes only when the file does. So the id is kept in a small file of the
//! user's, keyed by what changes whenever the file's content can have changed: its
//! device, inode, size, mtime and ctime (the ctime cannot be set back by anyone but
//! the clock: every write, rename or chmod moves it). The key is read from the open
//! file that is then hashed, and stored only when the file still has it afterwards.
//!
//! Where: `$VMCTL_BUILD_ID_CACHE` when set (`off` turns the cache off, e.g. for a
//! test that must hash), else `$XDG_CACHE_HOME/vmctl/build-ids`, else
//! `~/.cache/vmctl/build-ids`. A cache that cannot be read or written is no cache:
//! the id is then hashed, never guessed. A wrong id could not go unnoticed either:
//! the host answers the handshake with its own, and what is shipped is checked by
//! sha256 on the far side.

use std::fs::{File, Metadata};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How many executables the cache remembers (the most recent first).
const ENTRIES: usize = 16;

/// What identifies one version of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileKey {
    pub fn of(meta: &Metadata) -> FileKey {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn line(&self, sha256: &str) -> String {
        format!(
            "{} {} {} {} {} {sha256}",
            self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns
        )
    }

    /// The sha256 a cache line gives this key, when it is about this key.
    fn find(&self, line: &str) -> Option<String> {
        let mut words = line.split(' ');
        let key = FileKey {
            dev: words.next()?.parse().ok()?,
            ino: words.next()?.parse().ok()?,
            size: words.next()?.parse().ok()?,
            mtime_ns: words.next()?.parse().ok()?,
            ctime_ns: words.next()?.parse().ok()?,
        };
        let sha256 = words.next()?;
        (key == *self && words.next().is_none() && super::build::is_build_id(sha256))
            .then(|| sha256.to_owned())
    }
}

/// The cache file this process uses, if any.
pub fn location() -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = env("VMCTL_BUILD_ID_CACHE") {
        return (path != "off").then(|| PathBuf::from(path));
    }
    let base = env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|home| Path::new(&home).join(".cache")))?;
    base.is_absolute()
        .then(|| base.join("vmctl").join("build-ids"))
}

/// The id the cache at `cache` has for `key`.
pub fn lookup(cache: &Path, key: &FileKey) -> Option<String> {
    let text = std::fs::read_to_string(cache).ok()?;
    text.lines().find_map(|line| key.find(line))
}

/// Remembers `sha256` for `key` (first), keeping the most recent others; written to a
/// temp file and renamed, so a reader never sees half a cache. Failing is no error.
pub fn store(cache: &Path, key: &FileKey, sha256: &str) {
    let _ = try_store(cache, key, sha256);
}

fn try_store(cache: &Path, key: &FileKey, sha256: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = cache.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let old = std::fs::read_to_string(cache).unwrap_or_default();
    let mut lines = vec![key.line(sha256)];
    lines.extend(
        old.lines()
            .filter(|l| key.find(l).is_none() && !l.is_empty())
            .take(ENTRIES - 1)
            .map(str::to_owned),
    );
    let temp = dir.join(format!(
        ".build-ids.{}.{:x}",
        std::process::id(),
        key.ctime_ns
    ));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all((lines.join("\n") + "\n").as_bytes())?;
        std::fs::rename(&temp, cache)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// The key of the open `file`, read again: whether it still is `key`.
pub fn unchanged(file: &File, key: &FileKey) -> bool {
    file.metadata().is_ok_and(|m| FileKey::of(&m) == *key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(path: &Path) -> FileKey {
        FileKey::of(&std::fs::metadata(path).expect("stat"))
    }

    #[test]
    fn an_id_is_found_by_the_files_key_and_only_by_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = tmp.path().join("sub/build-ids");
        let exe = tmp.path().join("exe");
        std::fs::write(&exe, b"one").expect("writes");
        let key = key_of(&exe);
        assert_eq!(lookup(&cache, &key), None, "no cache yet");
        store(&cache, &key, &"a".repeat(64));
        assert_eq!(lookup(&cache, &key), Some("a".repeat(64)));
        // Rewritten: its ctime (and here its size) moves, and the old id is not found.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&exe, b"other").expect("writes");
        let new = key_of(&exe);
        assert_ne!(new, key);
        assert_eq!(lookup(&cache, &new), None);
        store(&cache, &new, &"b".repeat(64));
        assert_eq!(lookup(&cache, &new), Some("b".repeat(64)));
        assert_eq!(lookup(&cache, &key), Some("a".repeat(64)), "kept as well");
    }

    #[test]
    fn the_cache_is_bounded_and_ignores_lines_it_cannot_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = tmp.path().join("build-ids");
        let exe = tmp.path().join("exe");
        std::fs::write(&exe, b"x").expect("writes");
        let key = key_of(&exe);
        std::fs::write(
            &cache,
            format!(
                "garbage\n{} extra\n{}\n",
                key.line(&"c".repeat(64)),
                key.line("NOTHEX")
            ),
        )
        .expect("writes");
        assert_eq!(lookup(&cache, &key), None);
        for n in 0..40u64 {
            let other = FileKey { ino: n, ..key };
            store(&cache, &other, &"d".repeat(64));
        }
        let lines = std::fs::read_to_string(&cache)
            .expect("reads")
            .lines()
            .count();
        assert_eq!(lines, ENTRIES);
    }
}
