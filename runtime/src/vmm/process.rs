//! The VMM as a process: detaching from the terminal (double fork, `setsid`, stdio to
//! the console log) with a pipe through which the detached VMM tells the waiting
//! parent whether it started, and the pid file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Errors detaching or writing the pid file.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A system call failed.
    #[error("{call} failed: {source}")]
    Sys {
        /// The call.
        call: &'static str,
        /// The errno.
        source: std::io::Error,
    },
    /// The console log cannot be opened.
    #[error("cannot open the console log {path}: {source}")]
    ConsoleLog {
        /// The log.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The pid file cannot be written.
    #[error("cannot write the pid file {path}: {source}")]
    PidFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn sys(call: &'static str) -> ProcessError {
    ProcessError::Sys {
        call,
        source: std::io::Error::last_os_error(),
    }
}

/// Which side of [`detach`] we are on.
pub enum Detached {
    /// The original process: the detached VMM's start-up verdict (`Err` carries its
    /// error message, or says it died before telling).
    Parent(Result<u32, String>),
    /// The detached VMM: report start-up through this.
    Child(ReadyPipe),
}

/// The detached VMM's end of the start-up pipe.
pub struct ReadyPipe(File);

impl ReadyPipe {
    /// Tells the parent the VMM runs (its pid) or why it could not start.
    pub fn report(mut self, result: Result<(), String>) {
        let msg = match result {
            Ok(()) => format!("ok {}\n", std::process::id()),
            Err(e) => format!("error {e}\n"),
        };
        // The parent may be gone; the VMM does not care.
        let _ = self.0.write_all(msg.as_bytes());
    }
}

/// Opens (creating, appending) the console log.
pub fn open_console_log(path: &Path) -> Result<File, ProcessError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| ProcessError::ConsoleLog {
            path: path.to_path_buf(),
            source,
        })
}

/// Detaches: double fork and `setsid`, stdin from /dev/null, stdout and stderr to
/// `console_log`, working directory `/`. The parent waits until the detached VMM
/// reports through its [`ReadyPipe`] (or exits).
///
/// Must be called while the process has a single thread.
pub fn detach(console_log: &Path) -> Result<Detached, ProcessError> {
    let log = open_console_log(console_log)?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(sys("pipe2"));
    }
    // SAFETY: both fds were just created and are owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    // SAFETY: the process is single-threaded (documented precondition), so the child
    // may run arbitrary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(sys("fork"));
    }
    if pid > 0 {
        drop(write_end);
        let mut status = 0;
        // SAFETY: waiting for the child we just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let mut msg = String::new();
        let _ = File::from(read_end).read_to_string(&mut msg);
        let verdict = match msg.trim().split_once(' ') {
            Some(("ok", pid)) => pid
                .parse()
                .map_err(|_| format!("bad start-up report `{msg}`")),
            Some(("error", e)) => Err(e.to_string()),
            _ => Err(format!(
                "the VMM exited during start-up; see {}",
                console_log.display()
            )),
        };
        return Ok(Detached::Parent(verdict));
    }

    // First child: new session, then fork again so the VMM is no session leader and
    // can never acquire a controlling terminal.
    drop(read_end);
    // SAFETY: plain system calls in a single-threaded child.
    unsafe {
        if libc::setsid() < 0 {
            libc::_exit(1);
        }
        match libc::fork() {
            0 => {}
            n if n < 0 => libc::_exit(1),
            _ => libc::_exit(0),
        }
    }
    redirect_stdio(&log)?;
    drop(log);
    close_inherited_fds(write_end.as_raw_fd());
    // SAFETY: chdir with a valid NUL-terminated path.
    unsafe { libc::chdir(c"/".as_ptr()) };
    Ok(Detached::Child(ReadyPipe(File::from(write_end))))
}

/// Closes every fd above stderr except `keep`: a detached VMM must not hold pipes or
/// files its launcher shares with others (a caller waiting for EOF would hang).
fn close_inherited_fds(keep: i32) {
    let fds: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in fds.into_iter().filter(|&fd| fd > 2 && fd != keep) {
        // SAFETY: closing an fd this process inherited and no Rust object owns (the
        // only owned ones, `keep` and the standard fds, are skipped). The fd of the
        // finished directory listing is already closed: EBADF, ignored.
        unsafe { libc::close(fd) };
    }
}

fn redirect_stdio(log: &File) -> Result<(), ProcessError> {
    let null = File::open("/dev/null").map_err(|source| ProcessError::Sys {
        call: "open /dev/null",
        source,
    })?;
    for (from, to) in [
        (null.as_raw_fd(), libc::STDIN_FILENO),
        (log.as_raw_fd(), libc::STDOUT_FILENO),
        (log.as_raw_fd(), libc::STDERR_FILENO),
    ] {
        // SAFETY: both fds are valid; dup2 atomically replaces the standard fd.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(sys("dup2"));
        }
    }
    Ok(())
}

/// A pid file, removed when dropped.
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes this process's pid to `path`.
    pub fn write(path: &Path) -> Result<Self, ProcessError> {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
            ProcessError::PidFile {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(Self(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_is_written_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmm.pid");
        let pf = PidFile::write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(pf);
        assert!(!path.exists());
        assert!(PidFile::write(&dir.path().join("no/such/dir")).is_err());
    }
}
