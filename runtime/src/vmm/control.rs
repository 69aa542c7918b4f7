//! The control socket: a Unix socket speaking the control protocol
//! ([`super::protocol`]: versioned JSON lines, one request per line, one response per
//! line, in order); this module is its server.
//!
//! A line that is not a request of this VMM's version is answered with the typed error
//! and counted (`refused_requests` in `status`); the connection stays open. A line
//! longer than [`MAX_LINE`] closes the connection. The VMM process exits once the VM
//! has stopped and the pending responses are written.
//!
//! One thread serves every client (`poll`), at most [`MAX_CONNECTIONS`] at a time; a
//! new client beyond that closes the one quiet the longest. The socket is 0600.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::console::ConsoleStatus;
use super::lifecycle::{Lifecycle, RunState, StopReason};
use super::protocol::{parse_request, ErrorReply, Request, Response, Status};
use super::snapshot::save::{MemoryOut, Snapshotter};
use super::threads::{ThreadError, ThreadKind, Threads};
use super::virtio_wiring::DeviceStatus;

/// Errors setting up the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another VMM already serves this socket.
    #[error("control socket {0} is in use by another VMM")]
    InUse(std::path::PathBuf),
    /// Binding the socket failed.
    #[error("cannot bind control socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The socket could not be made non-blocking.
    #[error("cannot serve the control socket: {0}")]
    Serve(std::io::Error),
    /// The control thread could not be started.
    #[error(transparent)]
    Thread(#[from] ThreadError),
}

/// Default time a guest gets to power off after Ctrl-Alt-Del.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request line read.
const MAX_LINE: u64 = 64 * 1024;
/// Clients served at once (a newcomer closes the quietest when full).
pub const MAX_CONNECTIONS: usize = 16;
/// Mode of the control and console sockets.
pub const SOCKET_MODE: u32 = 0o600;
/// Longest a reply may wait for room in a client's socket buffer.
const REPLY_TIMEOUT: Duration = Duration::from_millis(500);
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the control socket acts on.
pub struct Controller {
    life: Arc<Lifecycle>,
    ctrl_alt_del: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    devices: Box<dyn Fn() -> Vec<DeviceStatus> + Send + Sync>,
    console: Option<Box<dyn Fn() -> ConsoleStatus + Send + Sync>>,
    snapshots: Option<Snapshotter>,
    /// Lines refused as malformed, unknown or of another version.
    refused: AtomicU64,
}

impl Controller {
    /// A controller of `life`; `ctrl_alt_del` asks the guest to shut down.
    pub fn new(
        life: Arc<Lifecycle>,
        ctrl_alt_del: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    ) -> Self {
        Self {
            life,
            ctrl_alt_del,
            devices: Box::new(Vec::new),
            console: None,
            snapshots: None,
            refused: AtomicU64::new(0),
        }
    }

    /// Reports `devices()` in `status`.
    pub fn with_devices(
        mut self,
        devices: Box<dyn Fn() -> Vec<DeviceStatus> + Send + Sync>,
    ) -> Self {
        self.devices = devices;
        self
    }

    /// Reports `console()` (the console socket's counters) in `status`.
    pub fn with_console(mut self, console: Box<dyn Fn() -> ConsoleStatus + Send + Sync>) -> Self {
        self.console = Some(console);
        self
    }

    /// Saves snapshots with `snapshotter`.
    pub fn with_snapshots(mut self, snapshotter: Snapshotter) -> Self {
        self.snapshots = Some(snapshotter);
        self
    }

    /// Answers one request line (without its newline); a line that is no request is
    /// answered with why, and counted.
    pub fn handle_line(&self, line: &[u8]) -> Response {
        self.handle_line_with_files(line, Vec::new())
    }

    /// Answers one request line that came with `files` (`SCM_RIGHTS`); a request that
    /// takes no files closes them.
    pub fn handle_line_with_files(&self, line: &[u8], files: Vec<File>) -> Response {
        match parse_request(line) {
            Ok(Request::Snapshot { resume, dirty }) => self.snapshot(files, resume, dirty),
            Ok(Request::Precopy { round }) => self.precopy(files, round),
            Ok(req) => self.handle(req),
            Err(e) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Response::Error(e)
            }
        }
    }

    /// A failed request's answer, with the VM's state.
    fn failure(&self, reason: String) -> Response {
        Response::Error(ErrorReply::Failed {
            reason,
            state: self.life.state(),
        })
    }

    /// The snapshotter and the `N` files a request needs (`what` names them).
    fn saving<const N: usize>(
        &self,
        files: Vec<File>,
        what: &str,
    ) -> Result<(&Snapshotter, [File; N]), Box<Response>> {
        let Some(snapshotter) = &self.snapshots else {
            return Err(Box::new(
                self.failure("this VMM cannot save snapshots or migrate".into()),
            ));
        };
        match <[File; N]>::try_from(files) {
            Ok(files) => Ok((snapshotter, files)),
            Err(files) => Err(Box::new(self.failure(format!(
                "{what} needs {N} file(s) sent with the request, not {}",
                files.len()
            )))),
        }
    }

    /// Writes pre-copy round `round` into `files` (one).
    fn precopy(&self, files: Vec<File>, round: u32) -> Response {
        let (snapshotter, [out]) = match self.saving(files, "a pre-copy round") {
            Ok(got) => got,
            Err(refused) => return *refused,
        };
        match snapshotter.precopy(round, &out) {
            Ok(p) => Response::Precopy {
                state: self.life.state(),
                round,
                dirty_pages: p.dirty_pages,
                written_bytes: p.written_bytes,
                took_ms: p.took_ms,
            },
            Err(e) => self.failure(e.to_string()),
        }
    }

    /// Saves the VM into `files` (state, memory — all of it, or the pages written
    /// since the last pre-copy round when `dirty`), resuming it after when `resume`.
    fn snapshot(&self, files: Vec<File>, resume: bool, dirty: bool) -> Response {
        let life = &self.life;
        let (snapshotter, [state_file, memory_file]) =
            match self.saving(files, "a snapshot (state, memory)") {
                Ok(got) => got,
                Err(refused) => return *refused,
            };
        let how = if dirty {
            MemoryOut::Dirty
        } else {
            MemoryOut::All
        };
        let saved = snapshotter.save(&state_file, &memory_file, how);
        if resume {
            let _ = life.resume();
        }
        match saved {
            Ok(s) => Response::Snapshot {
                state: life.state(),
                state_bytes: s.state_bytes,
                memory_bytes: s.memory_bytes,
                written_bytes: s.written_bytes,
                took_ms: s.took_ms,
                disks: s.disks,
            },
            Err(e) => self.failure(e.to_string()),
        }
    }

    /// Answers one request.
    pub fn handle(&self, req: Request) -> Response {
        let life = &self.life;
        let failed = |e: &dyn std::fmt::Display| {
            Response::Error(ErrorReply::Failed {
                reason: e.to_string(),
                state: life.state(),
            })
        };
        let state = || Response::State {
            state: life.state(),
        };
        match req {
            Request::Status => Response::Status(Status {
                state: life.state(),
                uptime_ms: life.uptime_ms(),
                vcpus: life.vcpus,
                memory: life.memory,
                pid: super::jail::host_pid(),
                exits: life.counters.snapshot(),
                devices: (self.devices)(),
                console: self.console.as_ref().map(|c| c()),
                refused_requests: self.refused.load(Ordering::Relaxed),
            }),
            Request::Pause => match life.pause(PAUSE_TIMEOUT) {
                Ok(()) => state(),
                Err(e) => failed(&e),
            },
            Request::Resume => match life.resume() {
                Ok(()) => state(),
                Err(e) => failed(&e),
            },
            Request::Kill => {
                life.request_stop(StopReason::Killed);
                state()
            }
            Request::Snapshot { resume, dirty } => self.snapshot(Vec::new(), resume, dirty),
            Request::Precopy { round } => self.precopy(Vec::new(), round),
            Request::PrecopyEnd => match &self.snapshots {
                Some(s) => match s.precopy_end() {
                    Ok(()) => state(),
                    Err(e) => failed(&e),
                },
                None => state(),
            },
            Request::Shutdown { timeout_ms } => {
                if life.state() == RunState::Stopped {
                    return Response::Shutdown {
                        state: life.state(),
                        graceful: true,
                        ctrl_alt_del_error: None,
                    };
                }
                // A paused guest cannot react to the key press.
                let _ = life.resume();
                let injected = (self.ctrl_alt_del)();
                let timeout = timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
                let graceful = injected.is_ok() && life.wait_stopped(Some(timeout));
                if !graceful {
                    life.request_stop(StopReason::Killed);
                }
                Response::Shutdown {
                    state: life.state(),
                    graceful,
                    ctrl_alt_del_error: injected.err(),
                }
            }
        }
    }
}

/// Binds the control socket, replacing a stale one nobody listens on, and gives it
/// mode 0600 (whatever the umask; the VM's dir is 0700 as well).
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse(path.to_path_buf()));
        }
        let _ = std::fs::remove_file(path);
    }
    let bind_err = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(bind_err)?;
    Ok(listener)
}

/// One client of the control socket: its stream and the request line read so far.
struct Conn {
    stream: UnixStream,
    line: Vec<u8>,
    /// Files received with the bytes not yet answered (for the next request).
    files: Vec<File>,
    /// When it last sent something (the quietest one makes room for a newcomer).
    active: Instant,
}

/// Serves `listener` on one thread with `poll`: at most [`MAX_CONNECTIONS`] clients at
/// once, requests answered in order. When the table is full a new client still gets
/// in: the client quiet the longest is closed to make room, so idle connections can
/// neither exhaust the VMM's threads and memory nor keep `status` out.
pub fn serve(
    listener: UnixListener,
    ctl: Arc<Controller>,
    threads: &Threads,
) -> Result<(), ControlError> {
    listener
        .set_nonblocking(true)
        .map_err(ControlError::Serve)?;
    threads.spawn(ThreadKind::Control, "control", move || {
        serve_loop(&listener, &ctl)
    })?;
    Ok(())
}

/// The control thread: `poll` on the listener and every client, for ever.
fn serve_loop(listener: &UnixListener, ctl: &Controller) {
    let mut conns: Vec<Conn> = Vec::with_capacity(MAX_CONNECTIONS);
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(conns.iter().map(|c| c.stream.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        // Clients first (their slots are the ones polled), newcomers after.
        let mut gone = Vec::new();
        for (i, fd) in fds.iter().enumerate().skip(1) {
            if fd.revents != 0 && !serve_readable(&mut conns[i - 1], ctl) {
                gone.push(i - 1);
            }
        }
        for i in gone.into_iter().rev() {
            conns.swap_remove(i);
        }
        if fds[0].revents != 0 {
            accept_all(listener, &mut conns);
        }
    }
}

/// Accepts every pending client, closing the quietest ones when the table is full.
fn accept_all(listener: &UnixListener, conns: &mut Vec<Conn>) {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // WouldBlock: none left; anything else (EMFILE…): try again on the next poll.
            Err(_) => return,
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        if conns.len() >= MAX_CONNECTIONS {
            if let Some(quietest) = (0..conns.len()).min_by_key(|&i| conns[i].active) {
                conns.swap_remove(quietest);
            }
        }
        conns.push(Conn {
            stream,
            line: Vec::new(),
            files: Vec::new(),
            active: Instant::now(),
        });
    }
}

/// Reads what `conn` sent and answers every complete request. False when the
/// connection is done (closed, broken, a line over [`MAX_LINE`], or a client not
/// reading its replies).
fn serve_readable(conn: &mut Conn, ctl: &Controller) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match recv(&conn.stream, &mut buf) {
            Ok((0, _)) => return false,
            Ok((n, files)) => {
                conn.active = Instant::now();
                conn.files.extend(files);
                if conn.files.len() > MAX_FILES {
                    return false;
                }
                conn.line.extend_from_slice(&buf[..n]);
                while let Some(end) = conn.line.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = conn.line.drain(..=end).collect();
                    let files = std::mem::take(&mut conn.files);
                    if !answer(&conn.stream, &line, files, ctl) {
                        return false;
                    }
                }
                if conn.line.len() as u64 > MAX_LINE {
                    return false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return e.kind() == std::io::ErrorKind::WouldBlock,
        }
    }
}

/// Files a client may send with one request (a snapshot's two).
const MAX_FILES: usize = 2;

/// Reads what a client sent and the files that came with it (`recvmsg`).
fn recv(stream: &UnixStream, buf: &mut [u8]) -> std::io::Result<(usize, Vec<File>)> {
    use std::os::fd::{FromRawFd, RawFd};
    use vmm_sys_util::sock_ctrl_msg::ScmSocket;
    let mut fds: [RawFd; MAX_FILES + 1] = [-1; MAX_FILES + 1];
    let mut iov = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    // SAFETY: the iovec points at `buf`, which is ours to write for its length.
    let (n, nfds) = unsafe { stream.recv_with_fds(&mut iov, &mut fds) }
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    let files = fds[..nfds.min(fds.len())]
        .iter()
        // SAFETY: recvmsg gave us these descriptors; nothing else owns them.
        .map(|&fd| unsafe { File::from_raw_fd(fd) })
        .collect();
    Ok((n, files))
}

/// Answers one request line (blank lines are skipped). False when the reply cannot be
/// written.
fn answer(mut stream: &UnixStream, line: &[u8], files: Vec<File>, ctl: &Controller) -> bool {
    let line = line.trim_ascii();
    if line.is_empty() {
        return true;
    }
    ctl.life.request_started();
    let reply = ctl.handle_line_with_files(line, files).to_line();
    // A reply is small and a fresh socket buffer holds hundreds of them: one that does
    // not fit belongs to a client that does not read; it is dropped.
    let written = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(REPLY_TIMEOUT)))
        .and_then(|()| stream.write_all(&reply))
        .and_then(|()| stream.set_nonblocking(true));
    ctl.life.request_done();
    written.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::console::ConsoleStatus;
    use crate::vmm::protocol::{read_reply, Reply, VERSION};
    use std::io::{BufRead, BufReader, Read};
    use std::sync::atomic::AtomicU32;

    fn controller(life: Arc<Lifecycle>, on_cad: impl Fn() + Send + Sync + 'static) -> Controller {
        Controller::new(
            life,
            Box::new(move || {
                on_cad();
                Ok(())
            }),
        )
    }

    fn status(r: Response) -> Status {
        match r {
            Response::Status(s) => s,
            other => panic!("not a status: {other:?}"),
        }
    }

    fn reply(line: &str) -> Response {
        match read_reply(line.as_bytes()) {
            Some(Reply::Current(r)) => r,
            other => panic!("{line:?} read as {other:?}"),
        }
    }

    #[test]
    fn status_and_errors() {
        let life = Arc::new(Lifecycle::new(2, 128 << 20));
        let ctl = controller(life, || {});
        let s = status(ctl.handle(Request::Status));
        assert_eq!(s.state, RunState::Running);
        assert_eq!((s.vcpus, s.memory), (2, 128 << 20));
        assert_eq!(s.exits.unknown_io, 0);
        assert!(s.devices.is_empty());
        assert_eq!(s.console, None);
        assert_eq!(s.refused_requests, 0);
        let ctl = ctl.with_devices(Box::new(|| {
            vec![DeviceStatus {
                kind: crate::vmm::virtio_wiring::DeviceKind::Blk {
                    path: "/d".into(),
                    read_only: false,
                },
                mmio_base: "0xd0000000".into(),
                gsi: 5,
                bad_requests: 0,
                counters: Default::default(),
            }]
        }));
        let console = ConsoleStatus {
            attached: false,
            dropped_out: 1,
            dropped_in: 2,
        };
        let ctl = ctl.with_console(Box::new(move || console));
        let s = status(ctl.handle(Request::Status));
        assert_eq!(s.devices[0].gsi, 5);
        assert_eq!(s.console, Some(console));
    }

    #[test]
    fn refused_lines_are_typed_errors_and_counted() {
        let ctl = controller(Arc::new(Lifecycle::new(1, 1 << 20)), || {});
        let bad: [&[u8]; 4] = [
            b"not json",
            br#"{"cmd":"status"}"#,
            br#"{"v":1,"cmd":"reboot"}"#,
            b"\xff\xfe",
        ];
        let errors: Vec<Response> = bad.iter().map(|l| ctl.handle_line(l)).collect();
        assert!(matches!(
            errors[0],
            Response::Error(ErrorReply::Malformed { .. })
        ));
        assert_eq!(
            errors[1],
            Response::Error(ErrorReply::Version {
                got: None,
                supported: VERSION
            })
        );
        assert!(matches!(
            &errors[2],
            Response::Error(ErrorReply::UnknownRequest { cmd, .. }) if cmd == "reboot"
        ));
        assert!(matches!(
            errors[3],
            Response::Error(ErrorReply::Malformed { .. })
        ));
        let s = status(ctl.handle_line(br#"{"v":1,"cmd":"status"}"#));
        assert_eq!(s.refused_requests, 4);
    }

    #[test]
    fn shutdown_graceful_when_guest_reacts() {
        let life = Arc::new(Lifecycle::new(0, 1 << 20));
        let l2 = life.clone();
        let ctl = controller(life.clone(), move || l2.request_stop(StopReason::PowerOff));
        let r = ctl.handle(Request::Shutdown { timeout_ms: None });
        assert_eq!(
            r,
            Response::Shutdown {
                state: RunState::Stopped,
                graceful: true,
                ctrl_alt_del_error: None
            }
        );
        assert_eq!(life.stop_reason(), Some(StopReason::PowerOff));
    }

    #[test]
    fn shutdown_kills_after_timeout() {
        let life = Arc::new(Lifecycle::new(0, 1 << 20));
        let presses = Arc::new(AtomicU32::new(0));
        let p2 = presses.clone();
        let ctl = controller(life.clone(), move || {
            p2.fetch_add(1, Ordering::SeqCst);
        });
        let r = ctl.handle(Request::Shutdown {
            timeout_ms: Some(20),
        });
        assert!(
            matches!(
                r,
                Response::Shutdown {
                    graceful: false,
                    ..
                }
            ),
            "{r:?}"
        );
        assert_eq!(presses.load(Ordering::SeqCst), 1);
        assert_eq!(life.stop_reason(), Some(StopReason::Killed));
        let r = ctl.handle(Request::Resume);
        assert!(
            matches!(
                r,
                Response::Error(ErrorReply::Failed {
                    state: RunState::Stopped,
                    ..
                })
            ),
            "{r:?}"
        );
    }

    #[test]
    fn socket_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let life = Arc::new(Lifecycle::new(0, 1 << 20));
        serve(
            bind(&path).unwrap(),
            Arc::new(controller(life.clone(), || {})),
            &Threads::unconfined(),
        )
        .unwrap();
        assert!(matches!(bind(&path), Err(ControlError::InUse(_))));
        let mut s = UnixStream::connect(&path).unwrap();
        let mut sent = Request::Status.to_line();
        sent.extend_from_slice(b"\n  \n{\"bad\n");
        sent.extend(Request::Kill.to_line());
        s.write_all(&sent).unwrap();
        let mut lines = BufReader::new(s).lines();
        let mut next = || reply(&lines.next().unwrap().unwrap());
        assert_eq!(status(next()).state, RunState::Running);
        assert!(matches!(
            next(),
            Response::Error(ErrorReply::Malformed { .. })
        ));
        assert_eq!(
            next(),
            Response::State {
                state: RunState::Stopped
            }
        );
        assert!(life.stopping());
    }

    #[test]
    fn idle_clients_cannot_keep_status_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let life = Arc::new(Lifecycle::new(0, 1 << 20));
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        serve(
            listener,
            Arc::new(controller(life, || {})),
            &Threads::unconfined(),
        )
        .unwrap();
        let status = |s: UnixStream| {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            (&s).write_all(&Request::Status.to_line()).unwrap();
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).unwrap();
            reply(&line)
        };
        // The first client is served and then stays, idle.
        let first = UnixStream::connect(&path).unwrap();
        assert!(matches!(
            status(first.try_clone().unwrap()),
            Response::Status(_)
        ));
        let idle: Vec<UnixStream> = (0..MAX_CONNECTIONS * 8)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        assert!(matches!(
            status(UnixStream::connect(&path).unwrap()),
            Response::Status(_)
        ));
        // The quietest clients were closed to make room: the first one among them.
        first
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!((&first).read(&mut [0u8; 1]).unwrap(), 0);
        drop(idle);
    }

    #[test]
    fn a_snapshot_needs_a_vmm_that_saves_and_two_files() {
        let life = Arc::new(Lifecycle::new(1, 1 << 20));
        let ctl = Controller::new(life, Box::new(|| Ok(())));
        let line = br#"{"v":1,"cmd":"snapshot","resume":true}"#;
        match ctl.handle_line(line) {
            Response::Error(ErrorReply::Failed { reason, .. }) => {
                assert!(reason.contains("cannot save snapshots"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let line = br#"{"v":1,"cmd":"precopy","round":0}"#;
        match ctl.handle_line(line) {
            Response::Error(ErrorReply::Failed { reason, .. }) => {
                assert!(reason.contains("or migrate"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // Without a pre-copy, there is no tracking to end: the state is answered.
        let line = br#"{"v":1,"cmd":"precopy_end"}"#;
        assert!(matches!(ctl.handle_line(line), Response::State { .. }));
    }
}
