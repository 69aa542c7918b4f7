//! The VMM as a process: detaching from the terminal (double fork, `setsid`, stdio to
//! the console log) with a pipe through which the detached VMM tells the waiting
//! parent its pid and then whether it started, and the pid file.
//!
//! Start-up is bounded: a VMM that has not reported within [`start_timeout`] (10 s,
//! `VMCTL_VMM_START_TIMEOUT_MS` to change it) is killed by the parent that forked it.
//!
//! Modes do not depend on the caller's umask: the pid file is 0600, the console log
//! 0640 (both set again on an existing file).

use std::fs::{File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Mode of the console log (and its rotated copy).
pub const CONSOLE_LOG_MODE: u32 = 0o640;
/// Mode of the pid file.
pub const PID_FILE_MODE: u32 = 0o600;
/// How long a VMM may take to report that it started, unless
/// `VMCTL_VMM_START_TIMEOUT_MS` says otherwise.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long past the start-up deadline the parent still waits for the VMM's pid.
const PID_GRACE: Duration = Duration::from_secs(2);

/// The start-up timeout: `VMCTL_VMM_START_TIMEOUT_MS` (milliseconds) when set to a
/// number, else [`DEFAULT_START_TIMEOUT`].
pub fn start_timeout() -> Duration {
    std::env::var("VMCTL_VMM_START_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_START_TIMEOUT, Duration::from_millis)
}

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
    /// Tells the parent the VMM's host pid, first thing: the pid its start-up timer
    /// kills.
    pub fn announce(&mut self) {
        // The parent may be gone; the VMM does not care.
        let _ = writeln!(self.0, "pid {}", super::jail::host_pid());
    }

    /// Tells the parent the VMM runs (its pid) or why it could not start.
    pub fn report(mut self, result: Result<(), String>) {
        let msg = match result {
            Ok(()) => format!("ok {}\n", super::jail::host_pid()),
            Err(e) => format!("error {e}\n"),
        };
        // The parent may be gone; the VMM does not care.
        let _ = self.0.write_all(msg.as_bytes());
    }
}

/// Opens (creating, appending; never through a symlink) the console log, mode 0640.
pub fn open_console_log(path: &Path) -> Result<File, ProcessError> {
    open_with_mode(path, true, CONSOLE_LOG_MODE).map_err(|source| ProcessError::ConsoleLog {
        path: path.to_path_buf(),
        source,
    })
}

/// Opens `path` for writing (appending, or truncating), not following a symlink, and
/// gives it `mode` whatever the umask and whatever mode an existing file had.
fn open_with_mode(path: &Path, append: bool, mode: u32) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(append)
        .write(!append)
        .truncate(!append)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(mode))?;
    Ok(file)
}

/// Detaches: double fork and `setsid`, stdin from /dev/null, stdout and stderr to
/// `console_log`, working directory `/`. The parent waits until the detached VMM
/// reports through its [`ReadyPipe`] (or exits); one that has not reported within
/// `timeout` is killed.
///
/// Must be called while the process has a single thread.
pub fn detach(console_log: &Path, timeout: Duration) -> Result<Detached, ProcessError> {
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
        // SAFETY: waiting for the child we just forked (it forks the VMM and exits).
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Ok(Detached::Parent(await_ready(
            File::from(read_end),
            timeout,
            console_log,
        )));
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
    let write_end = File::from(write_end);
    redirect_stdio(&log)?;
    drop(log);
    close_inherited_fds(write_end.as_raw_fd());
    // SAFETY: chdir with a valid NUL-terminated path.
    unsafe { libc::chdir(c"/".as_ptr()) };
    Ok(Detached::Child(ReadyPipe(write_end)))
}

/// The parent's side of the start-up pipe: the VMM writes `pid N`, then `ok N` or
/// `error WHY` (and closes its end, exiting). Past `timeout` the VMM (the pid it
/// reported, still holding the pipe open, so still that process) is killed.
fn await_ready(mut pipe: File, timeout: Duration, console_log: &Path) -> Result<u32, String> {
    let deadline = Instant::now() + timeout;
    let mut msg = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let text = String::from_utf8_lossy(&msg);
        let reported: Option<u32> = text
            .lines()
            .find_map(|l| l.strip_prefix("pid ")?.trim().parse().ok());
        for line in text.lines() {
            if let Some(pid) = line.strip_prefix("ok ") {
                return pid
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad start-up report `{line}`"));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // The VMM writes its pid first thing; past the deadline it still gets a moment
        // to do so, or it could start unseen after this gave up on it.
        let left = match reported {
            None if left.is_zero() => {
                (deadline + PID_GRACE).saturating_duration_since(Instant::now())
            }
            _ => left,
        };
        // Past the deadline, what the VMM already wrote (its `ok` and the close of its
        // end, perhaps) is read first: a VMM that started is never reported as not.
        if left.is_zero() && pipe_open(&pipe, Duration::ZERO) {
            let killed = reported.filter(|&pid| kill_writer(&pipe, pid));
            return Err(match killed {
                Some(pid) => format!(
                    "the VMM did not start within {timeout:?}, so it was killed (pid {pid}); see {}",
                    console_log.display()
                ),
                None => format!(
                    "the VMM did not start within {timeout:?}; see {}",
                    console_log.display()
                ),
            });
        }
        if !pipe_open(&pipe, left) {
            // Readable: data or EOF.
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => {
                    if let Some(pos) = text.find("error ") {
                        return Err(text[pos + "error ".len()..].trim().to_string());
                    }
                    return Err(format!(
                        "the VMM exited during start-up; see {}",
                        console_log.display()
                    ));
                }
                Ok(n) => msg.extend_from_slice(&buf[..n]),
            }
        }
    }
}

/// Waits up to `wait` for `pipe` to become readable; true when it did not (nothing
/// to read and its writer still holds it open).
fn pipe_open(pipe: &File, wait: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: pipe.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd for the call.
    let n = unsafe { libc::poll(&mut fd, 1, ms) };
    n == 0
}

/// SIGKILLs `pid`, the VMM writing into `pipe`: pinned with a pidfd first, and only
/// while its end of the pipe is still open (a process that exited and whose pid was
/// reused has closed it). Waits a little for it to go. Returns whether it was killed.
fn kill_writer(pipe: &File, pid: u32) -> bool {
    let Some(pidfd) = super::lock::pidfd_open(pid) else {
        return false;
    };
    let mut hup = libc::pollfd {
        fd: pipe.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the call.
    unsafe { libc::poll(&mut hup, 1, 0) };
    if hup.revents & libc::POLLHUP != 0 {
        return false;
    }
    if !super::lock::pidfd_signal(&pidfd, libc::SIGKILL) {
        return false;
    }
    // Gone once its end of the pipe closes.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        // SAFETY: one valid pollfd for the call.
        unsafe { libc::poll(&mut hup, 1, 10) };
        if hup.revents & libc::POLLHUP != 0 {
            break;
        }
    }
    true
}

/// Closes every fd above stderr except `keep`: a detached VMM must not hold pipes or
/// files its launcher shares with others (a caller waiting for EOF would hang).
pub(crate) fn close_inherited_fds(keep: i32) {
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

/// A pid file (`PID\n`, the host pid, mode 0600), removed when dropped (a jailed
/// VMM cannot: its supervisor does). It is informative: what
/// identifies a VM's VMM is its lock ([`super::lock`]).
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes this process's pid to `path`.
    pub fn write(path: &Path) -> Result<Self, ProcessError> {
        open_with_mode(path, false, PID_FILE_MODE)
            .and_then(|mut f| f.write_all(format!("{}\n", super::jail::host_pid()).as_bytes()))
            .map_err(|source| ProcessError::PidFile {
                path: path.to_path_buf(),
                source,
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

    #[test]
    fn modes_do_not_depend_on_the_umask_or_an_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let (pid, log) = (dir.path().join("vmm.pid"), dir.path().join("console.log"));
        for p in [&pid, &log] {
            std::fs::write(p, "old").unwrap();
            std::fs::set_permissions(p, Permissions::from_mode(0o666)).unwrap();
        }
        let _pf = PidFile::write(&pid).unwrap();
        let _log = open_console_log(&log).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&pid), 0o600);
        assert_eq!(mode(&log), 0o640);
        // Never through a symlink.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&log, &link).unwrap();
        assert!(open_console_log(&link).is_err());
    }

    /// A "VMM" (a `sleep` holding the start-up pipe) that reported its pid and then
    /// nothing is killed when the timeout passes, and the error says so.
    #[test]
    fn a_vmm_silent_past_the_timeout_is_killed() {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds were just created and are owned by nothing else.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut writer = File::from(write_end);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdout(writer.try_clone().unwrap())
            .spawn()
            .unwrap();
        writer
            .write_all(format!("pid {}\n", child.id()).as_bytes())
            .unwrap();
        drop(writer);
        let started = Instant::now();
        let verdict = await_ready(
            File::from(read_end),
            Duration::from_millis(200),
            Path::new("/x/console.log"),
        );
        let status = child.wait().unwrap();
        let err = verdict.unwrap_err();
        assert!(err.contains("did not start within 200ms"), "{err}");
        assert!(
            err.contains(&format!("killed (pid {})", child.id())),
            "{err}"
        );
        assert!(err.contains("/x/console.log"), "{err}");
        assert!(!status.success());
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn reports_are_read() {
        let report = |text: &str| {
            let (r, w) = std::io::pipe().unwrap();
            let mut w = File::from(OwnedFd::from(w));
            w.write_all(text.as_bytes()).unwrap();
            drop(w);
            await_ready(
                File::from(OwnedFd::from(r)),
                Duration::from_secs(5),
                Path::new("/l"),
            )
        };
        assert_eq!(report("pid 7\nok 7\n"), Ok(7));
        assert_eq!(
            report("pid 7\nerror disk /d is in use\n"),
            Err("disk /d is in use".to_string())
        );
        assert!(report("pid 7\n")
            .unwrap_err()
            .contains("exited during start-up"));
    }
}
