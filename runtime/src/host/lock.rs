//! The per-host, per-project lock: `flock` on `<state-dir>/<project>/lock`.
//!
//! The holder writes its pid into the file so a second apply can name it. The lock is
//! an open file description held by [`HostLock`]: it is released when the guard drops
//! *or when the process dies in any way*, so a killed apply never leaves a stuck lock.
//! The file is opened close-on-exec, so VM processes started while it is held do not
//! inherit it. A stale pid left in the file by a killed holder is harmless: only the
//! `flock` decides who holds the lock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The mode of `<state-dir>/<project>` (and of a state dir vmctl makes).
const PRIVATE_DIR_MODE: u32 = 0o700;

/// The mode of the lock file.
const LOCK_FILE_MODE: u32 = 0o600;

/// How often a waiting [`acquire`] retries.
const POLL: Duration = Duration::from_millis(50);

/// Errors of taking the host lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot create the lock directory {path}")]
    CreateLockDir { path: PathBuf, source: io::Error },
    #[error("cannot open the lock file {path}")]
    OpenLock { path: PathBuf, source: io::Error },
    #[error("cannot lock {path}")]
    AcquireLock { path: PathBuf, source: Errno },
    #[error("{} holds the lock of this host ({path}); waited {waited:?}", holder_text(*.pid, *.kept_agent))]
    Held {
        path: PathBuf,
        /// The holder's pid as it wrote it, when it could be read.
        pid: Option<u32>,
        /// The holder is vmctl's kept agent on this host (`vmctl agent listen`), which
        /// holds the lock for another vmctl command connected to it, not for itself.
        kept_agent: bool,
        waited: Duration,
    },
    #[error("cannot write the holder's pid into {path}")]
    WritePid { path: PathBuf, source: io::Error },
    #[error("cannot write the project's record {path}")]
    WriteRecord { path: PathBuf, source: io::Error },
    /// A remote host's agent could not take it (its words).
    #[error("{message}")]
    Remote { message: String },
}

fn holder_text(pid: Option<u32>, kept_agent: bool) -> String {
    match (pid, kept_agent) {
        (Some(pid), true) => {
            format!("vmctl's kept agent (pid {pid}), for another vmctl command connected to it,")
        }
        (Some(pid), false) => format!("another vmctl process (pid {pid})"),
        (None, _) => "another vmctl process".to_owned(),
    }
}

/// Whether the process `pid` is vmctl's kept agent (`<vmctl> agent listen …`), which
/// holds project locks for the commands connected to it (`remote::listen`).
pub fn is_kept_agent(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| is_kept_agent_cmdline(&c))
}

/// [`is_kept_agent`] on a `/proc/<pid>/cmdline`.
fn is_kept_agent_cmdline(cmdline: &[u8]) -> bool {
    let mut args = cmdline.split(|b| *b == 0).skip(1);
    args.next() == Some(b"agent") && args.next() == Some(b"listen")
}

/// A held host lock; dropping it releases the lock.
#[derive(Debug)]
pub struct HostLock {
    file: Flock<File>,
    path: PathBuf,
}

impl HostLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for HostLock {
    fn drop(&mut self) {
        // Clear the pid while still holding the lock; the flock itself goes with the fd.
        let _ = self.file.set_len(0);
    }
}

/// The lock file of `project` under `state_dir`.
pub fn lock_path(state_dir: &Path, project: &str) -> PathBuf {
    state_dir.join(project).join("lock")
}

/// Takes the lock of `project` on this host, waiting up to `timeout` (zero: try once).
/// Fails with [`LockError::Held`] naming the holder's pid when it is still held.
pub fn acquire(state_dir: &Path, project: &str, timeout: Duration) -> Result<HostLock, LockError> {
    let path = lock_path(state_dir, project);
    let dir = path.parent().unwrap_or(state_dir);
    create_project_dir(dir).map_err(|source| LockError::CreateLockDir {
        path: dir.to_owned(),
        source,
    })?;
    let start = Instant::now();
    let mut file = open(&path)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                write_pid(&mut locked).map_err(|source| LockError::WritePid {
                    path: path.clone(),
                    source,
                })?;
                return Ok(HostLock { file: locked, path });
            }
            Err((back, Errno::EWOULDBLOCK)) => {
                let waited = start.elapsed();
                if waited >= timeout {
                    let pid = read_pid(&path);
                    return Err(LockError::Held {
                        kept_agent: pid.is_some_and(is_kept_agent),
                        pid,
                        path,
                        waited,
                    });
                }
                thread::sleep(POLL.min(timeout - waited));
                file = back;
            }
            Err((_, source)) => return Err(LockError::AcquireLock { path, source }),
        }
    }
}

/// Creates the project's state dir `dir` (and the missing state dir above it) 0700, and
/// makes `dir`, vmctl's own, 0700 whatever it was: nobody else may add, replace or
/// remove the lock, `vms/` or `pools/` in it. Independent of the caller's umask.
fn create_project_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
}

fn open(path: &Path) -> Result<File, LockError> {
    let err = |source| LockError::OpenLock {
        path: path.to_owned(),
        source,
    };
    // std opens with O_CLOEXEC; O_NOFOLLOW: a symlink planted where the lock should be
    // is refused, not followed.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(LOCK_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(err)?;
    // The mode of a lock file made under another umask (or by an older vmctl) too.
    file.set_permissions(fs::Permissions::from_mode(LOCK_FILE_MODE))
        .map_err(err)?;
    Ok(file)
}

fn write_pid(file: &mut File) -> io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
    file.flush()
}

/// The pid written in the lock file, if there is one.
pub fn read_pid(path: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn a_kept_agent_is_told_by_its_command_line() {
        let listen = b"/var/lib/vmctl/bin/vmctl-ab\0agent\0listen\0--socket\0/x\0";
        assert!(is_kept_agent_cmdline(listen));
        assert!(!is_kept_agent_cmdline(b"/usr/bin/vmctl\0agent\0"));
        assert!(!is_kept_agent_cmdline(b"/usr/bin/vmctl\0apply\0listen\0"));
        assert!(!is_kept_agent_cmdline(b""));
        // This test's own process is none; nor is a pid that does not exist.
        assert!(!is_kept_agent(std::process::id()));
        assert!(!is_kept_agent(u32::MAX));
        let text = LockError::Held {
            path: PathBuf::from("/s/p/lock"),
            pid: Some(7),
            kept_agent: true,
            waited: Duration::ZERO,
        }
        .to_string();
        assert!(text.starts_with("vmctl's kept agent (pid 7)"), "{text}");
    }

    /// Env var that turns `child_holds_lock` into the lock holder of the process test.
    const CHILD_ENV: &str = "VMCTL_TEST_LOCK_CHILD_STATE_DIR";

    #[test]
    fn the_project_dir_is_0700_and_the_lock_0600_whatever_they_were() {
        use std::os::unix::fs::MetadataExt;
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join("lab");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let path = lock_path(state.path(), "lab");
        fs::write(&path, "").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let lock = acquire(state.path(), "lab", Duration::ZERO).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        drop(lock);
        // A new state dir and project dir are made 0700 too.
        let fresh = state.path().join("new/state");
        drop(acquire(&fresh, "lab", Duration::ZERO).unwrap());
        for d in [fresh.clone(), fresh.join("lab")] {
            assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, 0o700, "{d:?}");
        }
    }

    #[test]
    fn a_symlink_where_the_lock_should_be_is_refused_and_its_target_untouched() {
        use std::os::unix::fs::MetadataExt;
        let state = tempfile::tempdir().unwrap();
        fs::create_dir(state.path().join("lab")).unwrap();
        let victim = state.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&victim, lock_path(state.path(), "lab")).unwrap();
        let err = acquire(state.path(), "lab", Duration::ZERO).unwrap_err();
        assert!(matches!(err, LockError::OpenLock { .. }), "{err}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs::metadata(&victim).unwrap().mode() & 0o777, 0o644);
    }

    #[test]
    fn second_acquire_fails_naming_the_pid_then_succeeds_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), "lab", Duration::ZERO).unwrap();
        assert_eq!(read_pid(first.path()), Some(std::process::id()));

        let err = acquire(dir.path(), "lab", Duration::ZERO).unwrap_err();
        match &err {
            LockError::Held { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err
            .to_string()
            .contains(&format!("pid {}", std::process::id())));

        // Another project on the same host is independent.
        let other = acquire(dir.path(), "other", Duration::ZERO).unwrap();
        drop(other);

        drop(first);
        assert_eq!(read_pid(&lock_path(dir.path(), "lab")), None);
        acquire(dir.path(), "lab", Duration::ZERO).unwrap();
    }

    #[test]
    fn acquire_waits_up_to_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), "lab", Duration::ZERO).unwrap();
        let start = Instant::now();
        let err = acquire(dir.path(), "lab", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, LockError::Held { .. }));
        assert!(start.elapsed() >= Duration::from_millis(200));

        let state_dir = dir.path().to_owned();
        let waiter = thread::spawn(move || acquire(&state_dir, "lab", Duration::from_secs(10)));
        thread::sleep(Duration::from_millis(100));
        drop(first);
        waiter.join().unwrap().unwrap();
    }

    /// Not a test on its own: the lock holder that
    /// `lock_dies_with_its_process` runs in a child process.
    #[test]
    #[ignore = "helper run by lock_dies_with_its_process"]
    fn child_holds_lock() {
        let Some(state_dir) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let _lock = acquire(Path::new(&state_dir), "lab", Duration::ZERO).unwrap();
        println!("locked");
        // Hold until killed.
        loop {
            thread::sleep(Duration::from_secs(1));
        }
    }

    #[test]
    fn lock_dies_with_its_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "host::lock::tests::child_holds_lock",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let child_pid = child.id();
        // Kill the child (by its pid, which this test started) whatever happens below.
        struct Reap(std::process::Child);
        impl Drop for Reap {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let stdout = child.stdout.take().unwrap();
        let mut reap = Reap(child);

        let mut lines = io::BufRead::lines(io::BufReader::new(stdout));
        let locked = lines.any(|line| line.map(|l| l.contains("locked")).unwrap_or(false));
        assert!(locked, "child never took the lock");

        match acquire(dir.path(), "lab", Duration::ZERO) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(child_pid)),
            other => panic!("expected Held, got {other:?}"),
        }

        // SIGKILL: no destructor runs, the kernel drops the flock with the process.
        reap.0.kill().unwrap();
        reap.0.wait().unwrap();
        let lock = acquire(dir.path(), "lab", Duration::from_secs(5)).unwrap();
        assert_eq!(read_pid(lock.path()), Some(std::process::id()));
    }
}
