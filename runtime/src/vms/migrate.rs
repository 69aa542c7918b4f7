//! A running VM moving to another host: what each of the two hosts does. The controller
//! (`crate::apply::move_vm`) drives them, relaying the bytes between them.
//!
//! - On the host it leaves, [`precopy_out`] has the VMM write a pre-copy round while
//!   the guest runs (round 0 all of memory into `<state-dir>/<project>/migrations/
//!   <vm>/out/memory`, every later round the pages written since into `out/pages`);
//!   [`save_out`] pauses the VM and has its VMM save it (the snapshot request of
//!   [`super::snapshots`]) into `out/state` and `out/memory` — or, after pre-copy
//!   rounds, `out/pages` (only what changed since the last round); [`read_out`] reads
//!   those files a chunk at a time (holes, the guest's zero pages, are not sent);
//!   [`resume`] lets the guest run on when the move fails (and ends the dirty-page
//!   tracking); [`discard`] removes the files.
//! - On the host it goes to, [`receive_in`] writes the chunks into
//!   `<state-dir>/<project>/migrations/<vm>/in/`, [`apply_pages`] lays each pages file
//!   received into the memory file there; the VM is then started from them
//!   (`vmctl vmm --restore`) with its disks and taps made there as for any start.
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
use crate::host::volume_transfer::{base64_bytes, next_data, Chunk, CHUNK};
use crate::vmm::entry::Restore;
use crate::vmm::lifecycle::RunState;
use crate::vmm::protocol::Reply;
use crate::vmm::protocol::{Request, Response};

/// How long a resume may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pre-copy round may take (it writes up to all of the guest's memory).
const SAVE_TIMEOUT: Duration = Duration::from_secs(300);

/// One of the two files a VM moves in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationFile {
    /// Its vCPUs, interrupt controllers, clock and devices.
    State,
    /// Its memory.
    Memory,
    /// The pages written since the last pre-copy round (`vmm::snapshot::pages`).
    Pages,
}

impl MigrationFile {
    fn name(self) -> &'static str {
        match self {
            MigrationFile::State => Restore::STATE,
            MigrationFile::Memory => Restore::MEMORY,
            MigrationFile::Pages => "pages",
        }
    }
}

/// What the VMM said of a pre-copy round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Precopied {
    /// Pages written since the round before (round 0: every page of the guest).
    pub dirty_pages: u64,
    /// Bytes written into the round's file (round 0: pages not all zero).
    pub written_bytes: u64,
    /// Milliseconds the round took (the guest ran).
    pub took_ms: u64,
}

/// What the VMM said of its save.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Saved {
    /// The guest's memory in bytes.
    pub memory_bytes: u64,
    /// Memory bytes not all zero (the rest are holes, never sent).
    pub written_bytes: u64,
    /// Milliseconds from the pause to the end of the save.
    pub took_ms: u64,
    /// After pre-copy rounds: each disk's blocks written since round 0 (`[first,
    /// count]` runs of 64 KiB blocks), in the VM's disk order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Vec<[u64; 2]>>,
}

/// One step of receiving a moving VM's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "part",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum InPart {
    /// An empty (sparse) file of `size` bytes, in place of one of that name.
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
    super::new_private_file(path).map_err(io_err(vm, path))
}

/// A file of the move's directory `dir`, made anew (one of that name goes).
fn replaced_file(vm: &str, dir: &Path, file: MigrationFile) -> Result<File, VmError> {
    let path = dir.join(file.name());
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(vm, &path)(e)),
        _ => {}
    }
    new_file(vm, &path)
}

/// Has the VMM of the running VM `vm` write pre-copy round `round` (see the module
/// comment); the guest runs on.
pub fn precopy_out(host: &VmHost<'_>, vm: &str, round: u32) -> Result<Precopied, VmError> {
    check_name(vm)?;
    let paths = VmPaths::new(host.state_dir, host.project, vm);
    let out = dir(host, vm, "out");
    let file = if round == 0 {
        fresh_dir(vm, &out)?;
        MigrationFile::Memory
    } else {
        MigrationFile::Pages
    };
    let f = replaced_file(vm, &out, file)?;
    let request = Request::Precopy { round };
    match process::request_with_files(&paths, &request, &[&f], SAVE_TIMEOUT) {
        Some(Reply::Current(Response::Precopy {
            dirty_pages,
            written_bytes,
            took_ms,
            ..
        })) => Ok(Precopied {
            dirty_pages,
            written_bytes,
            took_ms,
        }),
        other => {
            let _ = process::ask(&paths, &Request::PrecopyEnd, REQUEST_TIMEOUT);
            let _ = fs::remove_dir_all(&out);
            Err(VmError::Migrate {
                vm: vm.into(),
                reason: match other {
                    Some(Reply::Current(Response::Error(e))) => e.to_string(),
                    other => format!("its VMM did not write pre-copy round {round} ({other:?})"),
                },
            })
        }
    }
}

/// Pauses VM `vm` and saves it for the move; it stays paused. After pre-copy rounds
/// (`precopied`), its memory is saved as the pages written since the last round.
pub fn save_out(host: &VmHost<'_>, vm: &str, precopied: bool) -> Result<Saved, VmError> {
    check_name(vm)?;
    let paths = VmPaths::new(host.state_dir, host.project, vm);
    let out = dir(host, vm, "out");
    let memory_file = if precopied {
        MigrationFile::Pages
    } else {
        fresh_dir(vm, &out)?;
        MigrationFile::Memory
    };
    let state = replaced_file(vm, &out, MigrationFile::State)?;
    let memory = replaced_file(vm, &out, memory_file)?;
    let reply = super::snapshots::request_snapshot(&paths, &state, &memory, false, precopied);
    match reply {
        Some(Reply::Current(Response::Snapshot {
            memory_bytes,
            written_bytes,
            took_ms,
            disks,
            ..
        })) => Ok(Saved {
            memory_bytes,
            written_bytes,
            took_ms,
            disks,
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

/// Lets the paused VM `vm` run on (a move that failed), with no dirty pages tracked.
pub fn resume(host: &VmHost<'_>, vm: &str) -> Result<(), VmError> {
    check_name(vm)?;
    let paths = VmPaths::new(host.state_dir, host.project, vm);
    match process::ask(&paths, &Request::Resume, REQUEST_TIMEOUT) {
        Some(Reply::Current(Response::State { .. })) => {
            // Tracking costs the guest a fault on its first write of each page.
            let _ = process::ask(&paths, &Request::PrecopyEnd, REQUEST_TIMEOUT);
            Ok(())
        }
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
    let (offset, data, next) = next_data(&f, size, offset, CHUNK).map_err(read_err)?;
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
            if !dir.is_dir() {
                fresh_dir(vm, &dir)?;
            }
            let f = replaced_file(vm, &dir, file)?;
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

/// Lays the pages file received for VM `vm` into its memory file there, and removes
/// it: the pages applied.
pub fn apply_pages(host: &VmHost<'_>, vm: &str) -> Result<u64, VmError> {
    check_name(vm)?;
    let dir = dir(host, vm, "in");
    let open = |file: MigrationFile, write: bool| {
        let path = dir.join(file.name());
        OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io_err(vm, &path))
    };
    let pages = open(MigrationFile::Pages, false)?;
    let memory = open(MigrationFile::Memory, true)?;
    let applied =
        crate::vmm::snapshot::pages::apply(&pages, &memory).map_err(|e| VmError::Migrate {
            vm: vm.into(),
            reason: format!("its pages could not be applied: {e}"),
        })?;
    let path = dir.join(MigrationFile::Pages.name());
    fs::remove_file(&path).map_err(io_err(vm, &path))?;
    Ok(applied)
}

/// Whether VM `vm` runs here (the new host, after its start): its VMM answers that it
/// runs.
pub fn running(host: &VmHost<'_>, vm: &str) -> Result<(), VmError> {
    check_name(vm)?;
    let paths = VmPaths::new(host.state_dir, host.project, vm);
    match process::ask(&paths, &Request::Status, REQUEST_TIMEOUT) {
        Some(Reply::Current(Response::Status(s))) if s.state == RunState::Running => Ok(()),
        other => Err(VmError::Migrate {
            vm: vm.into(),
            reason: format!(
                "it does not run on the new host after its start ({}): it runs on where it was",
                match other {
                    Some(Reply::Current(Response::Status(s))) =>
                        format!("its VMM says {:?}", s.state),
                    None => "no VMM answers".to_owned(),
                    other => format!("{other:?}"),
                }
            ),
        }),
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
    /// [`precopy_out`].
    PrecopyOut { vm: String, round: u32 },
    /// [`save_out`].
    SaveOut {
        vm: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        precopied: bool,
    },
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
    /// [`apply_pages`].
    ApplyPages { vm: String },
    /// [`running`].
    Running { vm: String },
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
    Precopied { precopied: Precopied },
    Chunk { chunk: Chunk },
    Done,
}

/// Carries out `call` on this host.
pub fn serve(host: &VmHost<'_>, call: &MigrationCall) -> Result<MigrationAnswer, VmError> {
    Ok(match call {
        MigrationCall::PrecopyOut { vm, round } => MigrationAnswer::Precopied {
            precopied: precopy_out(host, vm, *round)?,
        },
        MigrationCall::SaveOut { vm, precopied } => MigrationAnswer::Saved {
            saved: save_out(host, vm, *precopied)?,
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
        MigrationCall::ApplyPages { vm } => {
            apply_pages(host, vm)?;
            MigrationAnswer::Done
        }
        MigrationCall::Running { vm } => {
            running(host, vm)?;
            MigrationAnswer::Done
        }
        MigrationCall::Discard { vm } => {
            discard(host, vm)?;
            MigrationAnswer::Done
        }
    })
}
