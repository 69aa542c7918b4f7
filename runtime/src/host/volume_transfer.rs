//! A volume's bytes from one host to another, a chunk at a time through the caller
//! (the controller relays between the two hosts' agents; neither host reaches the
//! other).
//!
//! - The source host reads its volume's data ([`read_chunk`]): from an offset, the next
//!   run of data (holes are skipped with `SEEK_DATA`/`SEEK_HOLE`), at most [`CHUNK`]
//!   bytes of it; a chunk of zeros comes back empty (nothing to write on a sparse
//!   file).
//! - The target host receives them ([`receive`]): `begin` writes the volume's marker
//!   and a new sparse partial file of the volume's size, exactly as a create does;
//!   `data` writes into that partial file (never past its size, never into anything but
//!   a regular partial file of a volume whose marker is ours); `finish` syncs it and
//!   renames it into place, so the volume exists only once it is complete; `abort`
//!   removes the partial file. An interrupted copy leaves a marker and a partial file,
//!   which observing reports as no volume and the next create or sweep cleans up.
//!
//! Only volumes of the caller's project are read or written: the pool's marker and the
//! volume's marker must both name it.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fsutil::{self, kind_of, FILE_MODE};
use super::volume::{self, VolumeError, VolumeMarker};

/// The most data one chunk carries.
pub const CHUNK: u64 = 4 << 20;

/// Part of a file, as its host read it: of a volume (with what its marker records), or
/// of a VM moving to another host (`crate::vms::migrate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Chunk {
    /// The file's size in bytes.
    pub size: u64,
    /// A volume's: the digest of the base image its marker records (carried to the new
    /// host's marker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_digest: Option<String>,
    /// Where `data` starts.
    pub offset: u64,
    /// The bytes at `offset`; empty when they are all zero (or there are none).
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
    /// Where the next chunk starts; `size` when this was the last.
    pub next: u64,
}

/// One step of receiving a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "part",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum ReceivePart {
    /// The marker and an empty partial file of `size` bytes.
    Begin {
        size: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<std::path::PathBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_digest: Option<String>,
        #[serde(default)]
        prevent_destroy: bool,
    },
    /// `data` written at `offset` of the partial file.
    Data {
        offset: u64,
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
    },
    /// The partial file, complete, becomes the volume.
    Finish,
    /// The partial file goes (the marker stays, as after an interrupted create).
    Abort,
}

/// Reads the next run of data of volume `name` of `project` in the pool at `pool_path`,
/// from `offset` on, at most `max` bytes of it (and at most [`CHUNK`]).
pub fn read_chunk(
    project: &str,
    pool_path: &Path,
    name: &str,
    offset: u64,
    max: u64,
) -> Result<Chunk, VolumeError> {
    let marker = volume::ours(project, pool_path, name)?;
    let path = volume::volume_path(pool_path, name);
    let read_err = |source| VolumeError::ReadVolume {
        path: path.clone(),
        source,
    };
    let (file, meta) = fsutil::open_regular(&path, false).map_err(read_err)?;
    let (offset, data, next) = next_data(&file, meta.len(), offset, max).map_err(read_err)?;
    Ok(Chunk {
        size: meta.len(),
        from_digest: marker.from_digest,
        offset,
        data,
        next,
    })
}

/// The next run of data of `file` (`size` bytes long) from `offset` on, at most `max`
/// (at least 1) and [`CHUNK`] bytes: `(where it starts, the bytes — empty when all zero
/// or none —, where the next run may start)`; the last is `size` at the end.
pub fn next_data(
    file: &std::fs::File,
    size: u64,
    offset: u64,
    max: u64,
) -> io::Result<(u64, Vec<u8>, u64)> {
    if offset >= size {
        return Ok((size, Vec::new(), size));
    }
    let Some(start) = seek(file, offset, libc::SEEK_DATA)? else {
        return Ok((size, Vec::new(), size));
    };
    let end = seek(file, start, libc::SEEK_HOLE)?
        .unwrap_or(size)
        .min(size);
    let len = (end - start).min(CHUNK).min(max.max(1));
    let mut data = vec![0; usize::try_from(len).unwrap_or(0)];
    file.read_exact_at(&mut data, start)?;
    if data.iter().all(|&b| b == 0) {
        data = Vec::new();
    }
    Ok((start, data, start + len))
}

/// `lseek(fd, offset, whence)`; `None` for `ENXIO` (no data, or no hole, past `offset`).
fn seek(file: &std::fs::File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    // SAFETY: lseek on an open descriptor we own; it touches no memory.
    let at = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if at < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(u64::try_from(at).ok())
}

/// Carries out one part of receiving volume `name` of `project` into the pool at
/// `pool_path`.
pub fn receive(
    project: &str,
    pool_path: &Path,
    name: &str,
    part: &ReceivePart,
) -> Result<(), VolumeError> {
    match part {
        ReceivePart::Begin {
            size,
            from,
            from_digest,
            prevent_destroy,
        } => {
            let partial = volume::prepare_create(project, pool_path, name)?;
            volume::write_marker(
                pool_path,
                &VolumeMarker {
                    project: project.into(),
                    name: name.into(),
                    from: from.clone(),
                    from_digest: from_digest.clone(),
                    prevent_destroy: *prevent_destroy,
                },
            )?;
            let create_err = |source| VolumeError::CreateVolume {
                path: partial.clone(),
                source,
            };
            let file = fsutil::create_new(&partial, FILE_MODE).map_err(create_err)?;
            file.set_len(*size).map_err(create_err)?;
            Ok(())
        }
        ReceivePart::Data { offset, data } => {
            let file = open_partial(project, pool_path, name)?;
            let partial = volume::partial_path(pool_path, name);
            let size = file
                .metadata()
                .map_err(|source| VolumeError::ReadVolume {
                    path: partial.clone(),
                    source,
                })?
                .len();
            let len = data.len() as u64;
            if offset.checked_add(len).is_none_or(|end| end > size) {
                return Err(VolumeError::OutOfRange {
                    path: partial,
                    offset: *offset,
                    len,
                    size,
                });
            }
            file.write_all_at(data, *offset)
                .map_err(|source| VolumeError::CreateVolume {
                    path: partial,
                    source,
                })
        }
        ReceivePart::Finish => {
            let file = open_partial(project, pool_path, name)?;
            file.sync_all()
                .map_err(|source| VolumeError::CreateVolume {
                    path: volume::partial_path(pool_path, name),
                    source,
                })?;
            volume::finish_create(pool_path, name)
        }
        ReceivePart::Abort => {
            volume::ours(project, pool_path, name)?;
            let partial = volume::partial_path(pool_path, name);
            match std::fs::remove_file(&partial) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(VolumeError::DeleteVolume {
                    path: partial,
                    source: e,
                }),
                _ => Ok(()),
            }
        }
    }
}

/// The partial file of a volume being received: ours by its marker, a regular file
/// (never through a symlink), and no complete volume beside it.
fn open_partial(project: &str, pool_path: &Path, name: &str) -> Result<std::fs::File, VolumeError> {
    volume::ours(project, pool_path, name)?;
    let path = volume::volume_path(pool_path, name);
    if std::fs::symlink_metadata(&path).is_ok() {
        return Err(VolumeError::VolumeExists { path });
    }
    let partial = volume::partial_path(pool_path, name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&partial)
        .map_err(|source| VolumeError::ReadVolume {
            path: partial.clone(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| VolumeError::ReadVolume {
        path: partial.clone(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(VolumeError::NotRegular {
            path: partial,
            kind: kind_of(&meta),
        });
    }
    Ok(file)
}

/// Bytes as base64 in JSON (a chunk crosses the agent's JSON stream).
pub(crate) mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
