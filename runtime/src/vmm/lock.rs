//! The VMM's identity: a POSIX write lock (`fcntl(F_SETLK)`) on the VM's lock file
//! (`vmm.lock` in its state dir), taken before anything of the VM is opened and held
//! until the process ends (the kernel drops it then, also after SIGKILL).
//!
//! Only this VM's VMM holds it, so "the process holding the lock" is what runs the VM:
//! the kernel names it (`F_GETLK` reports the holder's pid without taking the lock,
//! so asking never gets in a starting VMM's way), a pid file naming any other process
//! does not matter, and a second VMM for the same VM cannot start.
//!
//! Read-write disks are locked with an exclusive `flock` by the block device
//! (`devices::virtio::block`); this lock is the VM's.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why the lock cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds it.
    #[error("another VMM (pid {pid}) already runs this VM: it holds {path}")]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder.
        pid: u32,
    },
    /// The lock file cannot be opened or locked.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// The held lock; released when the process ends (or this is dropped).
#[derive(Debug)]
pub struct VmmLock {
    _file: File,
}

fn flock_struct(kind: libc::c_int) -> libc::flock {
    // SAFETY: flock is a plain C struct; all-zero is a valid value (whole file from 0).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

impl VmmLock {
    /// Takes the lock on `path` (created 0600 if missing), or says who holds it.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        Self::acquire_with(path, true)
    }

    /// Takes the lock on `path` only if the file exists (never creating it).
    pub fn acquire_existing(path: &Path) -> Result<Self, LockError> {
        Self::acquire_with(path, false)
    }

    fn acquire_with(path: &Path, create: bool) -> Result<Self, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_err)?;
        let fl = flock_struct(libc::F_WRLCK);
        // SAFETY: fcntl F_SETLK with a valid fd and a pointer to a live flock struct.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) } != 0 {
            let err = io::Error::last_os_error();
            if matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
                if let Ok(Some(pid)) = holder(path) {
                    return Err(LockError::Held {
                        path: path.to_path_buf(),
                        pid,
                    });
                }
            }
            return Err(io_err(err));
        }
        Ok(Self { _file: file })
    }
}

/// The pid of the process holding the lock on `path`: `None` when nobody holds it or
/// the file does not exist. Never takes the lock. Asked from the process holding it,
/// the answer is `None` (a process's own POSIX locks never conflict with it).
pub fn holder(path: &Path) -> io::Result<Option<u32>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut fl = flock_struct(libc::F_WRLCK);
    // SAFETY: fcntl F_GETLK with a valid fd and a pointer to a live flock struct.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if fl.l_type == libc::F_UNLCK as libc::c_short || fl.l_pid <= 0 {
        return Ok(None);
    }
    Ok(u32::try_from(fl.l_pid).ok())
}

/// Sends `signal` to `pid` only if it still holds the lock on `path`: the process is
/// pinned with a pidfd before the holder is checked, so a pid reused in between is
/// never signalled. Returns whether the signal was sent.
pub fn signal_holder(path: &Path, pid: u32, signal: libc::c_int) -> bool {
    let Some(pidfd) = pidfd_open(pid) else {
        return false;
    };
    if !matches!(holder(path), Ok(Some(p)) if p == pid) {
        return false;
    }
    pidfd_signal(&pidfd, signal)
}

/// A pidfd of `pid`: it keeps naming that process even if the pid is reused.
pub(crate) fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let raw = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: `fd` was just returned by pidfd_open and is owned by nothing else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` to the process of `pidfd`; true when it was sent.
pub(crate) fn pidfd_signal(pidfd: &OwnedFd, signal: libc::c_int) -> bool {
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    #[test]
    fn no_file_or_no_holder_is_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmm.lock");
        assert_eq!(holder(&path).unwrap(), None);
        std::fs::write(&path, "").unwrap();
        assert_eq!(holder(&path).unwrap(), None);
        // Nobody holds it: no signal goes anywhere, not even to ourselves.
        assert!(!signal_holder(&path, std::process::id(), 0));
    }

    #[test]
    fn acquire_creates_0600_and_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmm.lock");
        let lock = VmmLock::acquire(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(lock);
        let link = dir.path().join("link.lock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(VmmLock::acquire(&link), Err(LockError::Io { .. })));
    }

    /// Another process (a forked child of this test) holds the lock: it is named,
    /// a second lock is refused, and only the holder is signalled.
    #[test]
    fn a_lock_held_by_another_process_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmm.lock");
        std::fs::write(&path, "").unwrap();
        let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let mut pipe = [0; 2];
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        // SAFETY: the child only calls async-signal-safe functions (open, fcntl, write,
        // pause, _exit) on memory allocated before the fork, until it is killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe {
                let fd = libc::open(cpath.as_ptr(), libc::O_RDWR);
                let fl = flock_struct(libc::F_WRLCK);
                if fd < 0 || libc::fcntl(fd, libc::F_SETLK, &fl) != 0 {
                    libc::_exit(1);
                }
                libc::write(pipe[1], b"x".as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        assert!(pid > 0);
        unsafe { libc::close(pipe[1]) };
        let mut byte = [0u8; 1];
        assert_eq!(
            unsafe { libc::read(pipe[0], byte.as_mut_ptr().cast(), 1) },
            1
        );
        let held = holder(&path).unwrap();
        let second = VmmLock::acquire(&path);
        // A pid that is not the holder is never signalled.
        let not_holder = signal_holder(&path, std::process::id(), 0);
        let signalled = signal_holder(&path, pid as u32, libc::SIGKILL);
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(held, Some(pid as u32));
        assert!(
            matches!(&second, Err(LockError::Held { pid: p, .. }) if *p == pid as u32),
            "{second:?}"
        );
        assert!(!not_holder);
        assert!(signalled);
        let deadline = Instant::now() + Duration::from_secs(5);
        while holder(&path).unwrap().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(holder(&path).unwrap(), None);
    }
}
