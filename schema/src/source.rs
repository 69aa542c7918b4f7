//! Finding and reading the files of a config: one `.kdl` file, or every `*.kdl` file
//! of a folder (not recursive), in name order.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::NamedSource;

use crate::diagnostics::{FileId, SchemaError};
use crate::spans::Site;

/// One file of the config.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path as found (the given path, or the folder joined with the file name).
    pub path: PathBuf,
    pub text: Arc<str>,
}

impl SourceFile {
    /// The file as a miette source, for diagnostics.
    pub fn named(&self) -> NamedSource<Arc<str>> {
        NamedSource::new(self.path.display().to_string(), Arc::clone(&self.text))
    }
}

/// Every file of a loaded config; a [`FileId`] indexes it.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub files: Vec<SourceFile>,
}

impl Sources {
    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id)
    }

    /// The path, line and column (1-based, in bytes) of a site.
    pub fn position(&self, site: Site) -> Option<(&Path, usize, usize)> {
        let file = self.get(site.file)?;
        let mut end = site.span.offset().min(file.text.len());
        while !file.text.is_char_boundary(end) {
            end -= 1;
        }
        let text = &file.text[..end];
        let line = text.matches('\n').count() + 1;
        let column = text.len() - text.rfind('\n').map_or(0, |i| i + 1) + 1;
        Some((&file.path, line, column))
    }
}

fn unreadable(path: &Path) -> impl FnOnce(std::io::Error) -> Box<SchemaError> + '_ {
    move |source| {
        Box::new(SchemaError::UnreadableFile {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// The `.kdl` files that `path` names: itself if it is a file, else the `*.kdl` files
/// in it, sorted by name.
pub fn discover(path: &Path) -> Result<Vec<PathBuf>, Box<SchemaError>> {
    let meta = std::fs::metadata(path).map_err(unreadable(path))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(unreadable(path))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(unreadable(path))?;
        let file = entry.path();
        if file.extension().is_some_and(|e| e == "kdl") && !file.is_dir() {
            files.push(file);
        }
    }
    if files.is_empty() {
        return Err(Box::new(SchemaError::NoConfigFiles {
            path: path.to_path_buf(),
        }));
    }
    files.sort();
    Ok(files)
}

/// Reads the regular file at `path` (a symlink to one is fine), up to the size it had
/// when opened. A FIFO, a device or a directory is refused (`InvalidInput`) without
/// blocking on it or reading it forever: it is opened non-blocking and checked before
/// any read. For every file vmctl reads that a user names (configs, `--live`, saved
/// plans).
pub fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, a device or a directory cannot be read as one)",
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(meta.len()).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads one file as UTF-8 text.
pub fn read(path: &Path) -> Result<Arc<str>, Box<SchemaError>> {
    let bytes = read_regular(path).map_err(unreadable(path))?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Arc::from(text)),
        Err(e) => Err(Box::new(SchemaError::NotUtf8 {
            path: path.to_path_buf(),
            offset: e.utf8_error().valid_up_to(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmctl-source-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn only_regular_files_are_read_and_nothing_blocks() {
        use std::os::unix::ffi::OsStrExt;
        let dir = temp_dir("regular");
        let file = dir.join("a.kdl");
        std::fs::write(&file, "project \"lab\"\n").expect("write");
        assert_eq!(read_regular(&file).expect("read"), b"project \"lab\"\n");
        let link = dir.join("link.kdl");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert!(read_regular(&link).is_ok());
        let fifo = dir.join("fifo.kdl");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).expect("path");
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for path in [fifo.as_path(), Path::new("/dev/zero"), dir.as_path()] {
            let err = read_regular(path).expect_err("refused");
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{path:?}");
            let shown = read(path).expect_err("refused").to_string();
            assert!(shown.contains(&path.display().to_string()), "{shown}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_folder_gives_its_kdl_files_in_order() {
        let dir = temp_dir("order");
        for name in ["b.kdl", "a.kdl", "notes.txt"] {
            std::fs::write(dir.join(name), "").expect("write");
        }
        let files = discover(&dir).expect("files");
        assert_eq!(files, vec![dir.join("a.kdl"), dir.join("b.kdl")]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_empty_folder_is_an_error() {
        let dir = temp_dir("empty");
        assert!(matches!(
            discover(&dir).map_err(|e| *e),
            Err(SchemaError::NoConfigFiles { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_and_non_utf8_files_are_errors() {
        let dir = temp_dir("utf8");
        assert!(matches!(
            discover(&dir.join("nope.kdl")).map_err(|e| *e),
            Err(SchemaError::UnreadableFile { .. })
        ));
        let file = dir.join("latin1.kdl");
        std::fs::write(&file, b"project \"caf\xe9\"").expect("write");
        assert!(matches!(
            read(&file).map_err(|e| *e),
            Err(SchemaError::NotUtf8 { offset: 12, .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
