//! The control socket: a Unix socket speaking JSON lines, one request per line, one
//! response per line.
//!
//! | request | response |
//! | --- | --- |
//! | `{"cmd":"status"}` | `{"ok":true,"state":"running","uptime_ms":…,"vcpus":…,"memory":…,"pid":…,"exits":{"total":…,"io":…,"mmio":…,"unknown_io":…,"unknown_mmio":…,"interrupted":…},"devices":[…]}` |
//! | `{"cmd":"pause"}` / `{"cmd":"resume"}` | `{"ok":true,"state":"paused"}` / `{"ok":true,"state":"running"}` |
//! | `{"cmd":"shutdown","timeout_ms":5000}` | Ctrl-Alt-Del through the i8042; answered once the VM stopped: `{"ok":true,"state":"stopped","graceful":true}`, or `"graceful":false` when it was killed after the timeout (default 5 s) |
//! | `{"cmd":"kill"}` | `{"ok":true,"state":"stopped"}` |
//!
//! `console` (when the VM has a console socket) is
//! `{"attached":…,"dropped_out":…,"dropped_in":…}` (see `console`).
//!
//! `devices` lists the virtio devices in device order (disks, then NICs), each
//! `{"kind":"blk","path":…,"read_only":…}` or `{"kind":"net","tap":…,"mac":…}` with
//! `"mmio_base"`, `"gsi"`, `"bad_requests"` (every refused guest request, transport and
//! device) and `"counters":{"transport":{…},"device":{…}}` (see
//! `devices::virtio::VirtioCounters`).
//!
//! Errors: `{"ok":false,"error":"…"}`. The VMM process exits once the VM has stopped
//! and the pending responses are written.
//!
//! One thread serves every client (`poll`), at most [`MAX_CONNECTIONS`] at a time; a
//! new client beyond that closes the one quiet the longest. The socket is 0600.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::lifecycle::{Lifecycle, RunState, StopReason};
use super::threads::{ThreadError, ThreadKind, Threads};

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

/// A control request.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// State, uptime, size, exit counters.
    Status,
    /// Park the vCPUs.
    Pause,
    /// Unpark the vCPUs.
    Resume,
    /// Ctrl-Alt-Del, then kill after `timeout_ms`.
    Shutdown {
        /// Milliseconds to wait for the guest to power off.
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Stop the VM now.
    Kill,
}

/// What the control socket acts on.
pub struct Controller {
    life: Arc<Lifecycle>,
    ctrl_alt_del: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    devices: Box<dyn Fn() -> Value + Send + Sync>,
    console: Option<Box<dyn Fn() -> Value + Send + Sync>>,
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
            devices: Box::new(|| json!([])),
            console: None,
        }
    }

    /// Reports `devices()` (a JSON list) in `status`.
    pub fn with_devices(mut self, devices: Box<dyn Fn() -> Value + Send + Sync>) -> Self {
        self.devices = devices;
        self
    }

    /// Reports `console()` (the console socket's counters) in `status`.
    pub fn with_console(mut self, console: Box<dyn Fn() -> Value + Send + Sync>) -> Self {
        self.console = Some(console);
        self
    }

    /// Answers one request line.
    pub fn handle_line(&self, line: &str) -> Value {
        match serde_json::from_str::<Request>(line) {
            Ok(req) => self.handle(req),
            Err(e) => json!({"ok": false, "error": format!("invalid request: {e}")}),
        }
    }

    fn state(&self) -> Value {
        json!(self.life.state())
    }

    /// Answers one request.
    pub fn handle(&self, req: Request) -> Value {
        let life = &self.life;
        match req {
            Request::Status => {
                let c = &life.counters;
                let mut status = json!({
                    "ok": true,
                    "state": self.state(),
                    "uptime_ms": life.uptime_ms(),
                    "vcpus": life.vcpus,
                    "memory": life.memory,
                    "pid": super::jail::host_pid(),
                    "exits": c,
                    "devices": (self.devices)(),
                });
                if let Some(console) = &self.console {
                    status["console"] = console();
                }
                status
            }
            Request::Pause => match life.pause(PAUSE_TIMEOUT) {
                Ok(()) => json!({"ok": true, "state": self.state()}),
                Err(e) => json!({"ok": false, "error": e.to_string(), "state": self.state()}),
            },
            Request::Resume => match life.resume() {
                Ok(()) => json!({"ok": true, "state": self.state()}),
                Err(e) => json!({"ok": false, "error": e.to_string(), "state": self.state()}),
            },
            Request::Kill => {
                life.request_stop(StopReason::Killed);
                json!({"ok": true, "state": self.state()})
            }
            Request::Shutdown { timeout_ms } => {
                if life.state() == RunState::Stopped {
                    return json!({"ok": true, "state": self.state(), "graceful": true});
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
                let mut v = json!({"ok": true, "state": self.state(), "graceful": graceful});
                if let Err(e) = injected {
                    v["error"] = json!(e);
                }
                v
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
        match conn.stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                conn.active = Instant::now();
                conn.line.extend_from_slice(&buf[..n]);
                while let Some(end) = conn.line.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = conn.line.drain(..=end).collect();
                    if !answer(&conn.stream, &line, ctl) {
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

/// Answers one request line (blank lines are skipped). False when the reply cannot be
/// written.
fn answer(mut stream: &UnixStream, line: &[u8], ctl: &Controller) -> bool {
    let line = String::from_utf8_lossy(line);
    if line.trim().is_empty() {
        return true;
    }
    ctl.life.request_started();
    let mut reply = ctl.handle_line(line.trim()).to_string();
    reply.push('\n');
    // A reply is small and a fresh socket buffer holds hundreds of them: one that does
    // not fit belongs to a client that does not read; it is dropped.
    let written = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(REPLY_TIMEOUT)))
        .and_then(|()| stream.write_all(reply.as_bytes()))
        .and_then(|()| stream.set_nonblocking(true));
    ctl.life.request_done();
    written.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::sync::atomic::{AtomicU32, Ordering};

    fn controller(life: Arc<Lifecycle>, on_cad: impl Fn() + Send + Sync + 'static) -> Controller {
        Controller::new(
            life,
            Box::new(move || {
                on_cad();
                Ok(())
            }),
        )
    }

    #[test]
    fn requests_parse() {
        let r: Request = serde_json::from_str(r#"{"cmd":"shutdown","timeout_ms":10}"#).unwrap();
        assert_eq!(
            r,
            Request::Shutdown {
                timeout_ms: Some(10)
            }
        );
        let r: Request = serde_json::from_str(r#"{"cmd":"status"}"#).unwrap();
        assert_eq!(r, Request::Status);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
    }

    #[test]
    fn status_and_errors() {
        let life = Arc::new(Lifecycle::new(2, 128 << 20));
        let ctl = controller(life, || {});
        let s = ctl.handle_line(r#"{"cmd":"status"}"#);
        assert_eq!(s["ok"], true);
        assert_eq!(s["state"], "running");
        assert_eq!(s["vcpus"], 2);
        assert_eq!(s["memory"], 128u64 << 20);
        assert_eq!(s["exits"]["unknown_io"], 0);
        assert_eq!(s["devices"], json!([]));
        let ctl = ctl.with_devices(Box::new(|| json!([{"kind": "blk"}])));
        let s = ctl.handle_line(r#"{"cmd":"status"}"#);
        assert_eq!(s["devices"][0]["kind"], "blk");
        assert!(s.get("console").is_none());
        let ctl = ctl.with_console(Box::new(|| json!({"attached": false})));
        let s = ctl.handle_line(r#"{"cmd":"status"}"#);
        assert_eq!(s["console"]["attached"], false);
        let e = ctl.handle_line("not json");
        assert_eq!(e["ok"], false);
        assert!(e["error"].as_str().unwrap().contains("invalid request"));
    }

    #[test]
    fn shutdown_graceful_when_guest_reacts() {
        let life = Arc::new(Lifecycle::new(0, 1 << 20));
        let l2 = life.clone();
        let ctl = controller(life.clone(), move || l2.request_stop(StopReason::PowerOff));
        let r = ctl.handle(Request::Shutdown { timeout_ms: None });
        assert_eq!(
            (r["graceful"].clone(), r["state"].clone()),
            (json!(true), json!("stopped"))
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
        assert_eq!(r["graceful"], false);
        assert_eq!(presses.load(Ordering::SeqCst), 1);
        assert_eq!(life.stop_reason(), Some(StopReason::Killed));
        let r = ctl.handle(Request::Resume);
        assert_eq!(r["ok"], false);
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
        s.write_all(b"{\"cmd\":\"status\"}\n\n{\"cmd\":\"kill\"}\n")
            .unwrap();
        let mut lines = BufReader::new(s).lines();
        let status: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(status["state"], "running");
        let kill: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(kill["state"], "stopped");
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
            (&s).write_all(b"{\"cmd\":\"status\"}\n").unwrap();
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).unwrap();
            serde_json::from_str::<Value>(&line).unwrap()
        };
        // The first client is served and then stays, idle.
        let first = UnixStream::connect(&path).unwrap();
        assert_eq!(status(first.try_clone().unwrap())["ok"], true);
        let idle: Vec<UnixStream> = (0..MAX_CONNECTIONS * 8)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        assert_eq!(status(UnixStream::connect(&path).unwrap())["ok"], true);
        // The quietest clients were closed to make room: the first one among them.
        first
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!((&first).read(&mut [0u8; 1]).unwrap(), 0);
        drop(idle);
    }
}
