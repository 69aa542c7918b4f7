//! A running VM moving to another host: what each of the two hosts does. The controller
//! (`crate::apply::move_vm`) drives them, relaying the bytes between them.
//!
//! - On the host it leaves, [`save_out`] pauses the VM and has its VMM save it (the
//!   snapshot request of [`super::snapshots`]) into `<state-dir>/<project>/migrations/
//!   <vm>/out/{state,memory}`; [`read_out`] reads those files a chunk at a time (holes,
//!   the guest's zero pages, are not sent); [`resume`] lets the guest run on when the
//!   move fails; [`discard`] removes the files.
//! - On the host it goes to, [`receive_in`] writes the chunks into
//!   `<state-dir>/<project>/migrations/<vm>/in/`; the VM is then started from them
//!   (`vmctl vmm --restore`, see [`start_in`]) with its disks and taps made there as for
//!   any start.
//!
//! Both directories are vmctl's own (mode 0700, made fresh for each move); nothing else
//! is read or written.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::process;
use super::{check_name, VmError, VmHost, VmPaths};
use crate::host::volume_transfer::{base64_bytes, next_data, Chunk};
use crate::vmm::entry::Restore;
use crate::vmm::lifecycle::RunState;
use crate::vmm::protocol::Reply;
use crate::vmm::protocol::{Request, Response};

/// How long a resume may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One of the two files a VM moves in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationFile {
    /// Its vCPUs, interrupt controllers, clock and devices.
    State,
    /// Its memory.
    Memory,
}

impl MigrationFile {
    pub const ALL: [MigrationFile; 2] = [MigrationFile::State, MigrationFile::Memory];

    fn name(self) -> &'static str {
        match self {
            MigrationFile::State => Restore::STATE,
            MigrationFile::Memory => Restore::MEMORY,
        }
    }
}

/// What the VMM said of its save.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Saved {
    /// The guest's memory in bytes.
    pub memory_bytes: u64,
    /// Memory bytes not all zero (the rest are holes, never sent).
    pub written_bytes: u64,
    /// Milliseconds from the pause to the end of the save.
    pub took_ms: u64,
}

/// One step of receiving a moving VM's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "part",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum InPart {
    /// An empty (sparse) file of `size` bytes; the first makes the directory anew.
    Begin { size: u64 },
    /// `data` at `offset`.
    Data {
        offset: u64,
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
    },
}

/// `<state-dir>/<project>/migrations/<vm>/{out,in}`.
pub fn dir(host: &VmHost<'_>, vm: &str, side: &str) -> PathBuf {
    host.state_dir
        .join(host.project)
        .join("migrations")
        .join(vm)
        .join(side)
}

fn io_err(vm: &str, path: &Path) -> impl FnOnce(io::Error) -> VmError {
    let (vm, path) = (vm.to_owned(), path.to_owned());
    move |source| VmError::WriteState { vm, path, source }
}

/// A fresh, empty directory `path` (0700): anything of an earlier move there goes.
fn fresh_dir(vm: &str, path: &Path) -> Result<(), VmError> {
    if path.exists() {
        fs::remove_dir_all(path).map_err(io_err(vm, path))?;
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err(vm, path))
}

fn new_file(vm: &str, path: &Path) -> Result<File, VmError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err(vm, path))
}

/// Pauses VM `vm` and saves it for the move; it stays paused.
pub fn save_out(host: &VmHost<'_>, vm: &str) -> Result<Saved, VmError> {
    check_name(vm)?;
    let paths = VmPaths::new(host.state_dir, host.project, vm);
    let out = dir(host, vm, "out");
    fresh_dir(vm, &out)?;
    let state = new_file(vm, &out.join(MigrationFile::State.name()))?;
    let memory = new_file(vm, &out.join(MigrationFile::Memory.name()))?;
    let reply = super::snapshots::request_snapshot(&paths, &state, &memory, false);
    match reply {
        Some(Reply::Current(Response::Snapshot {
            memory_bytes,
            written_bytes,
            took_ms,
            ..
        })) => Ok(Saved {
            memory_bytes,
            written_bytes,
            took_ms,
        }),
        other => {
            // Whatever the VMM did, the guest runs on where it is.
            let _ = resume(host, vm);
            let _ = fs::remove_dir_all(&out);
            Err(VmError::Migrate {
                vm: vm.into(),
                reason: match other {
                    Some(Reply::Current(Response::Error(e))) => e.to_string(),
                    other => format!("its VMM did not save it ({other:?})"),
                },
            })
        }
    }
}

/// Lets the paused VM `vm` run on (a move that failed).
pub fn resume(host: &VmHost<'_>, vm: &str) -> Result<(), VmError> {
    check_name(vm)?;
    let paths = VmPaths::new(host.state_dir, host.project, vm);
    match process::ask(&paths, &Request::Resume, REQUEST_TIMEOUT) {
        Some(Reply::Current(Response::State { .. })) => Ok(()),
        other => Err(VmError::Migrate {
            vm: vm.into(),
            reason: format!("its VMM did not resume it ({other:?})"),
        }),
    }
}

/// The next chunk of `file` of the saved VM `vm`, from `offset`.
pub fn read_out(
    host: &VmHost<'_>,
    vm: &str,
    file: MigrationFile,
    offset: u64,
) -> Result<Chunk, VmError> {
    check_name(vm)?;
    let path = dir(host, vm, "out").join(file.name());
    let read_err = |source| VmError::ReadState {
        vm: vm.into(),
        path: path.clone(),
        source,
    };
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(read_err)?;
    let size = f.metadata().map_err(read_err)?.len();
    let (offset, data, next) = next_data(&f, size, offset).map_err(read_err)?;
    Ok(Chunk {
        size,
        from_digest: None,
        offset,
        data,
        next,
    })
}

/// Writes one part of `file` of VM `vm` moving here.
pub fn receive_in(
    host: &VmHost<'_>,
    vm: &str,
    file: MigrationFile,
    part: &InPart,
) -> Result<(), VmError> {
    check_name(vm)?;
    let dir = dir(host, vm, "in");
    let path = dir.join(file.name());
    match part {
        InPart::Begin { size } => {
            if file == MigrationFile::ALL[0] {
                fresh_dir(vm, &dir)?;
            }
            let f = new_file(vm, &path)?;
            f.set_len(*size).map_err(io_err(vm, &path))
        }
        InPart::Data { offset, data } => {
            let f = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(io_err(vm, &path))?;
            let size = f.metadata().map_err(io_err(vm, &path))?.len();
            let len = data.len() as u64;
            if offset.checked_add(len).is_none_or(|end| end > size) {
                return Err(VmError::Migrate {
                    vm: vm.into(),
                    reason: format!(
                        "{len} bytes at offset {offset} do not fit in {} ({size} bytes)",
                        path.display()
                    ),
                });
            }
            f.write_all_at(data, *offset).map_err(io_err(vm, &path))
        }
    }
}

/// What a move that did not finish left on a host, as observing finds it.
pub struct Leftovers<'a> {
    pub state_dir: &'a Path,
    pub project: &'a str,
}

impl Leftovers<'_> {
    /// Whether VM `name` was left paused by a move (its save is still here) — its VMM
    /// says so.
    pub fn left_paused(&self, name: &str) -> bool {
        let out = self
            .state_dir
            .join(self.project)
            .join("migrations")
            .join(name)
            .join("out");
        if !out.is_dir() {
            return false;
        }
        let paths = VmPaths::new(self.state_dir, self.project, name);
        matches!(
            process::ask(&paths, &Request::Status, REQUEST_TIMEOUT),
            Some(Reply::Current(Response::Status(s))) if s.state == RunState::Paused
        )
    }
}

/// Lets VM `vm` run on when a move that did not finish left it paused, and removes
/// what that move left here.
pub fn resume_if_paused(host: &VmHost<'_>, vm: &str) -> Result<(), VmError> {
    let leftovers = Leftovers {
        state_dir: host.state_dir,
        project: host.project,
    };
    if leftovers.left_paused(vm) {
        resume(host, vm)?;
        discard(host, vm)?;
    }
    Ok(())
}

/// The directory VM `vm` moving here starts from.
pub fn incoming(host: &VmHost<'_>, vm: &str) -> PathBuf {
    dir(host, vm, "in")
}

/// Removes what a move of VM `vm` left on this host (both directories).
pub fn discard(host: &VmHost<'_>, vm: &str) -> Result<(), VmError> {
    check_name(vm)?;
    let all = host.state_dir.join(host.project).join("migrations");
    let mine = all.join(vm);
    if mine.exists() {
        fs::remove_dir_all(&mine).map_err(io_err(vm, &mine))?;
    }
    // The parent goes once it is empty.
    let _ = fs::remove_dir(&all);
    Ok(())
}

/// One thing a host does for a move, as a call (the agent's wire carries it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "do",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum MigrationCall {
    /// [`save_out`].
    SaveOut { vm: String },
    /// [`read_out`].
    ReadOut {
        vm: String,
        file: MigrationFile,
        offset: u64,
    },
    /// [`resume`].
    Resume { vm: String },
    /// [`receive_in`].
    ReceiveIn {
        vm: String,
        file: MigrationFile,
        part: InPart,
    },
    /// [`discard`].
    Discard { vm: String },
}

/// What a host answers to a [`MigrationCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "done",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum MigrationAnswer {
    Saved { saved: Saved },
    Chunk { chunk: Chunk },
    Done,
}

/// Carries out `call` on this host.
pub fn serve(host: &VmHost<'_>, call: &MigrationCall) -> Result<MigrationAnswer, VmError> {
    Ok(match call {
        MigrationCall::SaveOut { vm } => MigrationAnswer::Saved {
            saved: save_out(host, vm)?,
        },
        MigrationCall::ReadOut { vm, file, offset } => MigrationAnswer::Chunk {
            chunk: read_out(host, vm, *file, *offset)?,
        },
        MigrationCall::Resume { vm } => {
            resume(host, vm)?;
            MigrationAnswer::Done
        }
        MigrationCall::ReceiveIn { vm, file, part } => {
            receive_in(host, vm, *file, part)?;
            MigrationAnswer::Done
        }
        MigrationCall::Discard { vm } => {
            discard(host, vm)?;
            MigrationAnswer::Done
        }
    })
}
