//! The host side of a NIC: a tap, abstracted as [`Tap`] so the device logic is tested
//! with an in-memory fake, and [`TapDevice`], the real one.
//!
//! A [`TapDevice`] is opened by name (the tap already exists, made by the runtime or a
//! test) with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, a 12-byte virtio 1 net header on
//! every frame (`TUNSETVNETHDRSZ`), non-blocking and close-on-exec.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::time::Duration;

/// Length of the virtio 1 net header on every frame (`struct virtio_net_hdr_v1`).
pub const VNET_HDR_LEN: usize = 12;

/// Frames in and out of a NIC's host side, each starting with a virtio net header.
pub trait Tap: Send {
    /// Reads one frame into `buf`; `WouldBlock` when none is waiting.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame; `WouldBlock` when the host side is full.
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize>;
    /// The fd the VMM's event loop polls for readability, if there is one.
    fn fd(&self) -> Option<RawFd>;
}

/// Why a tap could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// tap name {name:?} is empty, too long (15 bytes at most) or contains a NUL
    #[error("tap name {name:?} is empty, too long (15 bytes at most) or contains a NUL")]
    InvalidName { name: String },
    /// cannot open /dev/net/tun: {0}
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(#[source] io::Error),
    /// cannot attach to tap {name}: {source}
    #[error("cannot attach to tap {name}: {source}")]
    AttachTap { name: String, source: io::Error },
    /// cannot set the virtio net header size on tap {name}: {source}
    #[error("cannot set the virtio net header size on tap {name}: {source}")]
    SetVnetHeader { name: String, source: io::Error },
}

/// How long a busy tap is waited for, and how often it is tried meanwhile.
const BUSY_WAIT: Duration = Duration::from_secs(2);
const BUSY_POLL: Duration = Duration::from_millis(10);

/// A tap interface opened by name.
#[derive(Debug)]
pub struct TapDevice {
    file: File,
    name: String,
}

impl TapDevice {
    /// Attaches to the tap `name` (creating it if it does not exist and we may).
    pub fn open(name: &str) -> Result<Self, TapError> {
        let invalid = || TapError::InvalidName {
            name: name.to_owned(),
        };
        // SAFETY: `ifreq` is plain old data; all zeroes is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.is_empty() || name.len() >= ifr.ifr_name.len() || name.contains('\0') {
            return Err(invalid());
        }
        for (dst, &src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;

        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        // `EBUSY`: another descriptor is attached to the (single-queue) tap. vmctl lets
        // go of the one it made the tap with before it starts the VMM, but a process
        // forked by another of its threads meanwhile holds a copy of it until that
        // process execs (the copy is close-on-exec): briefly. A tap someone really holds
        // is still busy after the wait, and refused.
        let mut waited = Duration::ZERO;
        loop {
            // SAFETY: TUNSETIFF reads an `ifreq`, which lives for the call.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
            if rc == 0 {
                break;
            }
            let source = io::Error::last_os_error();
            if source.raw_os_error() != Some(libc::EBUSY) || waited >= BUSY_WAIT {
                return Err(TapError::AttachTap {
                    name: name.to_owned(),
                    source,
                });
            }
            std::thread::sleep(BUSY_POLL);
            waited += BUSY_POLL;
        }
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int, which lives for the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
        if rc < 0 {
            return Err(TapError::SetVnetHeader {
                name: name.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(Self {
            file,
            name: name.to_owned(),
        })
    }

    /// The tap's interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Tap for TapDevice {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.file.write(frame)
    }

    fn fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }
}

#[cfg(test)]
#[path = "tap_tests.rs"]
mod tests;
