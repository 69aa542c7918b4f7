//! The console log, bounded: once `console.log` would grow past [`MAX_LOG`] (1 MiB) it
//! is renamed `console.log.1` (replacing the older one) and a new `console.log` is
//! started, so a guest flooding its serial port holds at most two files of 1 MiB on the
//! host. A detached VMM's own stdout and stderr follow the log into the new file.
//!
//! A jailed VMM cannot rename the log (no path of the host resolves in its root): it
//! opens a reader of the log and `console.log.1` before the jail
//! ([`ConsoleLog::open_for_jail`]) and rotates by copying the log into
//! `console.log.1` and emptying it (`pread`, `write`, `ftruncate`: no path needed, and
//! its vCPU filter allows no `rename` or `openat`).
//!
//! Readers (`vmctl console --lines/--follow`) read `console.log.1` then `console.log`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::process::{open_console_log, ProcessError};

/// Size at which the console log is rotated.
pub const MAX_LOG: u64 = 1 << 20;

/// The rotated copy of `log`: `console.log.1`.
pub fn rotated_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_owned();
    name.push(".1");
    log.with_file_name(name)
}

/// The console log as the serial port writes it.
pub struct ConsoleLog {
    path: PathBuf,
    file: File,
    len: u64,
    max: u64,
    /// Whether stdout and stderr are this log (a detached VMM): they follow a rotation.
    stdio: bool,
    /// A jailed VMM's way to rotate: a reader of the log, and `console.log.1`.
    by_copy: Option<(File, File)>,
}

impl ConsoleLog {
    /// Opens (creating, appending) the log at `path`; `stdio` when the process's stdout
    /// and stderr write into it.
    pub fn open(path: &Path, stdio: bool) -> Result<Self, ProcessError> {
        Self::with_max(path, stdio, MAX_LOG)
    }

    /// Opens the log at `path` as [`ConsoleLog::open`] does, and what rotating it by
    /// copy needs once the VMM is jailed (see the module).
    pub fn open_for_jail(path: &Path, stdio: bool) -> Result<Self, ProcessError> {
        Self::with_max(path, stdio, MAX_LOG)?.rotating_by_copy()
    }

    fn with_max(path: &Path, stdio: bool, max: u64) -> Result<Self, ProcessError> {
        let file = open_console_log(path)?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len,
            max,
            stdio,
            by_copy: None,
        })
    }

    fn rotating_by_copy(mut self) -> Result<Self, ProcessError> {
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
            .map_err(|source| ProcessError::ConsoleLog {
                path: self.path.clone(),
                source,
            })?;
        let old = open_console_log(&rotated_path(&self.path))?;
        self.by_copy = Some((reader, old));
        Ok(self)
    }

    /// Rotates through the fds of [`ConsoleLog::open_for_jail`]: `console.log.1`
    /// becomes a copy of the log, which is emptied. False without them.
    fn rotate_by_copy(&mut self) -> io::Result<bool> {
        let Some((reader, old)) = &mut self.by_copy else {
            return Ok(false);
        };
        old.set_len(0)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut offset = 0;
        loop {
            let n = reader.read_at(&mut buf, offset)?;
            if n == 0 {
                break;
            }
            old.write_all(&buf[..n])?;
            offset += n as u64;
        }
        self.file.set_len(0)?;
        self.len = 0;
        Ok(true)
    }

    /// Starts a new file; the current one becomes `console.log.1`. When the rename
    /// fails the log is emptied instead: the bound holds either way.
    fn rotate(&mut self) -> io::Result<()> {
        if self.rotate_by_copy()? {
            return Ok(());
        }
        if std::fs::rename(&self.path, rotated_path(&self.path)).is_err() {
            self.file.set_len(0)?;
            self.len = 0;
            return Ok(());
        }
        self.file = open_console_log(&self.path).map_err(|e| match e {
            ProcessError::ConsoleLog { source, .. } => source,
            other => io::Error::other(other.to_string()),
        })?;
        self.len = 0;
        if self.stdio {
            for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
                // SAFETY: dup2 of a valid fd (owned by `self.file`) onto a standard fd.
                unsafe { libc::dup2(self.file.as_raw_fd(), fd) };
            }
        }
        Ok(())
    }
}

impl Write for ConsoleLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.len >= self.max {
            self.rotate()?;
        }
        let room = usize::try_from(self.max - self.len).unwrap_or(usize::MAX);
        let n = self.file.write(&buf[..buf.len().min(room)])?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_flood_is_bounded_to_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut log = ConsoleLog::open(&path, false).unwrap();
        // 3.5 MiB in lines, byte by byte as a UART writes.
        let line = b"0123456789abcdef0123456789abcdef0123456789abcdef012345678901234\n";
        let mut written = 0u64;
        let mut last = 0u32;
        while written < 3 * MAX_LOG + MAX_LOG / 2 {
            for b in format!("{last:08} ").as_bytes().iter().chain(line.iter()) {
                log.write_all(std::slice::from_ref(b)).unwrap();
                written += 1;
            }
            last += 1;
        }
        log.flush().unwrap();
        let cur = std::fs::metadata(&path).unwrap();
        let old = std::fs::metadata(rotated_path(&path)).unwrap();
        assert!(cur.len() <= MAX_LOG, "{}", cur.len());
        assert_eq!(old.len(), MAX_LOG);
        assert_eq!(cur.len() + 3 * MAX_LOG, written);
        assert_eq!(old.permissions().mode() & 0o777, 0o640);
        assert_eq!(cur.permissions().mode() & 0o777, 0o640);
        // The newest output is in the current file, the one before in the old one.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("{:08} ", last - 1)));
        let old_text = std::fs::read_to_string(rotated_path(&path)).unwrap();
        assert!(!old_text.contains(&format!("{:08} ", last - 1)));
    }

    /// A jailed VMM's log (here its file is even unlinked from under it, as its path
    /// does not resolve in the jail) is rotated by copy: `console.log.1` holds the full
    /// log, the log starts again empty.
    #[test]
    fn a_jailed_log_rotates_by_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut log = ConsoleLog::with_max(&path, false, 100)
            .unwrap()
            .rotating_by_copy()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        log.write_all(&[b'x'; 100]).unwrap();
        log.write_all(&[b'y'; 30]).unwrap();
        assert_eq!(std::fs::read(rotated_path(&path)).unwrap(), vec![b'x'; 100]);
        let (reader, _) = log.by_copy.as_ref().unwrap();
        let mut now = Vec::new();
        std::io::Read::read_to_end(&mut &*reader, &mut now).unwrap();
        assert_eq!(now, vec![b'y'; 30]);
        log.write_all(&[b'z'; 80]).unwrap();
        let old = std::fs::read(rotated_path(&path)).unwrap();
        assert_eq!(old.len(), 100);
        assert!(old.starts_with(&[b'y'; 30]) && old.ends_with(&[b'z'; 70]));
    }

    #[test]
    fn an_existing_log_counts_toward_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, vec![b'x'; 90]).unwrap();
        let mut log = ConsoleLog::with_max(&path, false, 100).unwrap();
        log.write_all(&[b'y'; 30]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![b'y'; 20]);
        let old = std::fs::read(rotated_path(&path)).unwrap();
        assert_eq!(old.len(), 100);
        assert!(old.ends_with(&[b'y'; 10]));
    }

    /// The serial port writes the log on a vCPU thread: its filter lets it rotate the
    /// log, and a detached VMM's stdout and stderr follow (in a forked child, which
    /// installs the vCPU filter, writes past the bound twice, and ends with `exit`).
    /// Returns `console.log.1`'s length.
    fn rotate_under_the_vcpu_filter(mut log: ConsoleLog, old: &Path, jailed: bool) -> usize {
        use crate::vmm::seccomp::{Action, Filters};
        use crate::vmm::threads::ThreadKind;
        let filters = Filters::new(Action::KillProcess, jailed);
        // SAFETY: the child installs a filter, writes and leaves with exit(2); glibc's
        // fork leaves its allocator usable in the child.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = match filters.install(ThreadKind::Vcpu) {
                Ok(()) => {
                    let ok = (0..3).all(|_| log.write_all(&[b'x'; 60]).is_ok());
                    i64::from(!ok)
                }
                Err(_) => 3,
            };
            // SAFETY: the raw exit of this (only) thread: the vCPU filter allows exit,
            // not exit_group.
            unsafe { libc::syscall(libc::SYS_exit, code) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child we forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status:#x}"
        );
        std::fs::read(old).unwrap().len()
    }

    #[test]
    fn the_vcpu_filter_lets_the_log_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let log = ConsoleLog::with_max(&path, true, 100).unwrap();
        assert_eq!(
            rotate_under_the_vcpu_filter(log, &rotated_path(&path), false),
            100
        );
        assert_eq!(std::fs::read(&path).unwrap().len(), 80);
    }

    /// And a jailed VMM's rotation by copy (the log's path gone, as in the jail).
    #[test]
    fn the_vcpu_filter_lets_a_jailed_log_rotate_by_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let log = ConsoleLog::with_max(&path, true, 100)
            .unwrap()
            .rotating_by_copy()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            rotate_under_the_vcpu_filter(log, &rotated_path(&path), true),
            100
        );
    }
}
