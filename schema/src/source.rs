//! Finding and reading the files of a config: one `.kdl` file, or every `*.kdl` file
//! of a folder (not recursive), in name order.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::NamedSource;

use crate::diagnostics::{FileId, SchemaError};

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

/// Reads one file as UTF-8 text.
pub fn read(path: &Path) -> Result<Arc<str>, Box<SchemaError>> {
    let bytes = std::fs::read(path).map_err(unreadable(path))?;
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
