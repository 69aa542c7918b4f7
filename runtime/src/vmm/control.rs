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

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::lifecycle::{Lifecycle, RunState, StopReason};

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
}

/// Default time a guest gets to power off after Ctrl-Alt-Del.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request line read.
const MAX_LINE: u64 = 64 * 1024;
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
                    "pid": std::process::id(),
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

/// Binds the control socket, replacing a stale one nobody listens on.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse(path.to_path_buf()));
        }
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path).map_err(|source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    })
}

/// Serves `listener` on a thread: one thread per connection, requests answered in order.
pub fn serve(listener: UnixListener, ctl: Arc<Controller>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("control".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let ctl = ctl.clone();
                let spawned = std::thread::Builder::new()
                    .name("control-conn".into())
                    .stack_size(128 * 1024)
                    .spawn(move || serve_connection(conn, &ctl));
                // Out of threads: the connection is dropped, the VMM goes on.
                drop(spawned);
            }
        })?;
    Ok(())
}

fn serve_connection(conn: UnixStream, ctl: &Controller) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_LINE).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.trim().is_empty() {
            continue;
        }
        ctl.life.request_started();
        let mut reply = ctl.handle_line(line.trim()).to_string();
        reply.push('\n');
        let written = out.write_all(reply.as_bytes());
        ctl.life.request_done();
        if written.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
