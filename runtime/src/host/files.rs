//! The files a config names, checked before anything is planned or applied: each VM's
//! `kernel` and `initrd` and each volume's `from` must exist, be a regular file (a
//! symlink to one is fine) and be readable, and a kernel must look like one
//! ([`loader::kernel_format`]: an ELF64 x86-64 executable or a bzImage). `validate` does
//! not open them (CI validates an infra repo without its images); `plan` and `apply` do.
//!
//! Every problem of every file is returned at once, each naming the resource and the
//! setting, so the CLI can point at its span. A file shared by many VMs is opened once.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use vmctl_schema::Config;

use super::fsutil::{self, NotRegular};
use crate::vmm::arch::x86_64::loader::{self, LoaderError};

/// Why a named file cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FileError {
    #[error("{} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("{} is {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("cannot read {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{} is not a kernel vmctl can boot: {reason}", path.display())]
    NotAKernel { path: PathBuf, reason: String },
}

/// The kind of resource a setting belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Vm,
    Volume,
}

/// One problem: the setting (`kernel`, `initrd`, `from`) of resource `name`.
#[derive(Debug, Clone)]
pub struct FileProblem {
    pub owner: Owner,
    pub name: String,
    pub setting: &'static str,
    pub error: FileError,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    Kernel,
    Plain,
}

/// Checks every file `config` names; the problems in config order.
pub fn check_files(config: &Config) -> Vec<FileProblem> {
    let mut seen: HashMap<(PathBuf, Role), Option<FileError>> = HashMap::new();
    let mut problems = Vec::new();
    let mut check = |owner, name: &str, setting, path: &Path, role| {
        let result = seen
            .entry((path.to_path_buf(), role))
            .or_insert_with(|| check_file(path, role).err());
        if let Some(error) = result {
            problems.push(FileProblem {
                owner,
                name: name.to_owned(),
                setting,
                error: error.clone(),
            });
        }
    };
    for vm in &config.vms {
        check(Owner::Vm, &vm.name, "kernel", &vm.kernel, Role::Kernel);
        if let Some(initrd) = &vm.initrd {
            check(Owner::Vm, &vm.name, "initrd", initrd, Role::Plain);
        }
    }
    for volume in &config.volumes {
        if let Some(from) = &volume.from {
            check(Owner::Volume, &volume.name, "from", from, Role::Plain);
        }
    }
    problems
}

fn check_file(path: &Path, role: Role) -> Result<(), FileError> {
    let (file, _) = fsutil::open_regular(path, true).map_err(|e| open_error(path, e))?;
    if role == Role::Kernel {
        let head = loader::read_kernel_head(&file).map_err(|e| FileError::Unreadable {
            path: path.into(),
            reason: e.to_string(),
        })?;
        loader::kernel_format(&head).map_err(|e| FileError::NotAKernel {
            path: path.into(),
            reason: match e {
                LoaderError::ElfHeader {
                    field,
                    expected,
                    found,
                } => format!("an ELF file whose {field} is {found}, not {expected}"),
                other => other.to_string(),
            },
        })?;
    }
    Ok(())
}

fn open_error(path: &Path, e: io::Error) -> FileError {
    if let Some(not_regular) = e.get_ref().and_then(|e| e.downcast_ref::<NotRegular>()) {
        return FileError::NotRegular {
            path: path.into(),
            kind: not_regular.kind,
        };
    }
    match e.kind() {
        io::ErrorKind::NotFound => FileError::Missing { path: path.into() },
        _ => FileError::Unreadable {
            path: path.into(),
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, kernel: &str, initrd: Option<&str>, from: Option<&str>) -> Config {
        let initrd = initrd
            .map(|p| format!("initrd \"{p}\""))
            .unwrap_or_default();
        let from = from
            .map(|p| format!("{{ from \"{p}\"; }}"))
            .unwrap_or_default();
        let text = format!(
            r#"
project "lab"
host "local"
pool "fast" host="local" type="dir" {{ path "/tmp/p"; }}
volume "root" pool="fast" size="1GiB" {from}
vm "a" host="local" {{
    cpus 1
    memory "64MiB"
    kernel "{kernel}"
    {initrd}
}}
vm "b" host="local" {{
    cpus 1
    memory "64MiB"
    kernel "{kernel}"
}}
"#
        );
        vmctl_schema::load_str(dir.join("main.kdl"), &text)
            .expect("valid config")
            .config
    }

    /// An ELF64 x86-64 `ET_EXEC` header, with `machine` in `e_machine`.
    fn elf(dir: &Path, name: &str, machine: u16) -> PathBuf {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[16] = 2;
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        let path = dir.join(name);
        std::fs::write(&path, h).unwrap();
        path
    }

    #[test]
    fn good_files_pass() {
        let dir = tempfile::tempdir().unwrap();
        elf(dir.path(), "vmlinux", 62);
        std::fs::write(dir.path().join("initrd"), b"x").unwrap();
        std::fs::write(dir.path().join("img"), b"x").unwrap();
        let c = config(dir.path(), "vmlinux", Some("initrd"), Some("img"));
        assert!(check_files(&c).is_empty());
    }

    #[test]
    fn every_problem_is_reported_once_per_setting() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let c = config(dir.path(), "missing", Some("fifo"), Some("/dev/zero"));
        let got: Vec<_> = check_files(&c)
            .into_iter()
            .map(|p| (p.name, p.setting, p.error.to_string()))
            .collect();
        let missing = format!("{} does not exist", dir.path().join("missing").display());
        assert_eq!(
            got,
            [
                ("a".to_owned(), "kernel", missing.clone()),
                (
                    "a".to_owned(),
                    "initrd",
                    format!("{} is a FIFO, not a regular file", fifo.display())
                ),
                ("b".to_owned(), "kernel", missing),
                (
                    "root".to_owned(),
                    "from",
                    "/dev/zero is a character device, not a regular file".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_directory_or_a_foreign_elf_is_not_a_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), ".", None, None);
        assert!(matches!(
            check_files(&c)[0].error,
            FileError::NotRegular {
                kind: "a directory",
                ..
            }
        ));
        elf(dir.path(), "arm", 183);
        let c = config(dir.path(), "arm", None, None);
        let err = check_files(&c)[0].error.to_string();
        assert!(err.contains("e_machine is EM_AARCH64"), "{err}");
        std::fs::write(dir.path().join("text"), b"#!/bin/sh\n").unwrap();
        let c = config(dir.path(), "text", None, None);
        let err = check_files(&c)[0].error.to_string();
        assert!(err.contains("neither an ELF"), "{err}");
    }
}
