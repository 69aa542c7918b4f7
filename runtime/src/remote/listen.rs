//! The far side of a kept agent (`vmctl agent listen`): the agent protocol served on
//! a unix socket, one session per connection, for as long as the ssh session that
//! started it lives and is used.
//!
//! vmctl starts it only behind a kept ssh connection (the CLI's default) and
//! reaches it through that connection's master (an ssh forward of a socket in the
//! control dir to this one, `remote::kept`), so a run with the connection kept starts
//! no process on either side. It is no service: it ends
//! - when the ssh session that started it ends (the master exited or was told to
//!   exit, the connection dropped): sshd closes the session's pipes, which it sees on
//!   its stdout;
//! - when no connection has been open for `idle`; the session ends with it, and the
//!   master then goes after its own ControlPersist.
//!
//! Each connection is a session of its own, exactly like an agent on ssh's stdio
//! ([`super::agent::serve`]): what a session holds (a project's lock) is let go when
//! its connection ends, so a killed vmctl leaves no stuck lock here either. The socket
//! lives in `<state-dir>/run/` (0700), under the name the caller gives it; it is
//! removed when the agent ends, and the sockets of kept agents that were killed
//! (nothing answers them) are removed by the next one that starts.

use std::io::BufReader;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the agent looks at its session and its idle time.
const TICK: Duration = Duration::from_millis(250);

/// Why a kept agent could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "the socket path {path} must be absolute, named agent-<hex>.sock, in a directory `run`"
    )]
    Path { path: PathBuf },
    #[error("another agent serves {path} already")]
    Taken { path: PathBuf },
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether `path` is a kept agent's socket path: `…/run/agent-<hex>.sock`, absolute.
pub fn is_socket_path(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let key = name
        .strip_prefix("agent-")
        .and_then(|n| n.strip_suffix(".sock"))
        .unwrap_or_default();
    path.is_absolute()
        && path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "run")
        && !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Serves the agent protocol on `path` as build `build` until the session that
/// started this process ends, or nothing was connected for `idle`.
pub fn listen(path: &Path, idle: Duration, build: &str) -> Result<(), ListenError> {
    let listener = bind(path)?;
    let ours = std::fs::symlink_metadata(path).map(|m| m.ino()).ok();
    let open = Arc::new(AtomicUsize::new(0));
    let last_end = Arc::new(Mutex::new(Instant::now()));
    let result = accept_until_done(&listener, idle, build, &open, &last_end);
    // Remove the socket if it still is the one this agent bound.
    if ours.is_some() && std::fs::symlink_metadata(path).map(|m| m.ino()).ok() == ours {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Binds `path`: its directory is made 0700; a socket file left there by an agent
/// that is gone (nothing answers it) is replaced; a live one is refused.
fn bind(path: &Path) -> Result<UnixListener, ListenError> {
    if !is_socket_path(path) {
        return Err(ListenError::Path {
            path: path.to_owned(),
        });
    }
    let bind_error = |source| ListenError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(bind_error(e)),
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(bind_error(std::io::Error::other(
                "something that is not a socket is there",
            )));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ListenError::Taken {
                path: path.to_owned(),
            });
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = path.parent() {
        sweep_dead(dir);
    }
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    Ok(listener)
}

/// Removes the sockets of kept agents that are gone (killed before they could remove
/// their own): files of this directory with a kept agent's name that are sockets and
/// that nothing answers.
fn sweep_dead(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_socket = entry.file_type().is_ok_and(|t| t.is_socket());
        if is_socket
            && is_socket_path(&path)
            && matches!(UnixStream::connect(&path), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn accept_until_done(
    listener: &UnixListener,
    idle: Duration,
    build: &str,
    open: &Arc<AtomicUsize>,
    last_end: &Arc<Mutex<Instant>>,
) -> Result<(), ListenError> {
    loop {
        if session_ended() {
            return Ok(());
        }
        let idle_for = last_end.lock().map(|t| t.elapsed()).unwrap_or_default();
        if open.load(Ordering::SeqCst) == 0 && idle_for >= idle {
            return Ok(());
        }
        if !wait_readable(listener.as_raw_fd(), TICK) {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        open.fetch_add(1, Ordering::SeqCst);
        let (open, last_end, build) = (Arc::clone(open), Arc::clone(last_end), build.to_owned());
        std::thread::spawn(move || {
            serve_connection(stream, &build);
            if let Ok(mut t) = last_end.lock() {
                *t = Instant::now();
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// One session on one connection; what it held goes with it.
fn serve_connection(stream: UnixStream, build: &str) {
    let _ = stream.set_nonblocking(false);
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let _ = super::agent::serve(BufReader::new(reader), &stream, build);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Whether the ssh session that started this agent is gone: sshd closed the reading
/// end of its stdout (a pipe reports POLLERR, a socket POLLHUP).
fn session_ended() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: poll reads and writes exactly the one pollfd it is given.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
}

/// Waits up to `timeout` for `fd` to be readable.
fn wait_readable(fd: i32, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: poll reads and writes exactly the one pollfd it is given.
    let n = unsafe { libc::poll(&mut pfd, 1, millis) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_hex_named_socket_in_a_run_directory_is_a_socket_path() {
        assert!(is_socket_path(Path::new(
            "/var/lib/vmctl/run/agent-0123abcd.sock"
        )));
        for bad in [
            "run/agent-01.sock",
            "/var/lib/vmctl/agent-01.sock",
            "/var/lib/vmctl/run/agent-.sock",
            "/var/lib/vmctl/run/agent-xyz.sock",
            "/var/lib/vmctl/run/other.sock",
        ] {
            assert!(!is_socket_path(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn a_kept_agent_serves_sessions_and_ends_when_idle() {
        use crate::remote::protocol::{read_message, write_message, Request, Response};
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("run").join("agent-0a.sock");
        let served = {
            let path = path.clone();
            std::thread::spawn(move || listen(&path, Duration::from_millis(600), &"b".repeat(64)))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let stream = loop {
            match UnixStream::connect(&path) {
                Ok(stream) => break stream,
                Err(e) => {
                    assert!(Instant::now() < deadline, "never listened: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let mode = std::fs::metadata(path.parent().expect("dir"))
            .expect("dir")
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        // A second agent on the same path is refused while this one serves.
        assert!(matches!(
            listen(&path, Duration::from_millis(10), "x"),
            Err(ListenError::Taken { .. })
        ));
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        write_message(&mut &stream, &Request::Probe).expect("writes");
        let answer: Response = read_message(&mut reader).expect("answers");
        assert!(matches!(answer, Response::Probe(p) if p.build == "b".repeat(64)));
        // Open connections keep it; once they end it goes after `idle`, socket and all.
        std::thread::sleep(Duration::from_millis(900));
        assert!(path.exists(), "ended while a connection was open");
        drop(reader);
        stream
            .shutdown(std::net::Shutdown::Both)
            .expect("shuts down");
        let result = served.join().expect("no panic");
        assert!(result.is_ok(), "{result:?}");
        assert!(!path.exists(), "its socket is removed");
    }
}
