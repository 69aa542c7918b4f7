//! The control protocol: the typed requests and responses of the control socket
//! (`control.sock`), shared by the VMM ([`super::control`]) and its clients
//! (`vms::process`), so the wire format is whatever serde makes of these types.
//!
//! Newline-delimited JSON, one request per line, one response per line, in order:
//! `{"v":1,"cmd":"status"}` → `{"v":1,"reply":"status","state":"running",…}`.
//!
//! **Versioned.** Every request carries the client's [`VERSION`] as `v`, every response
//! the VMM's. A VMM answers a request of another version — or one without `v`, as the
//! unversioned protocol of earlier builds sent — with [`ErrorReply::Version`] and
//! nothing else; that reply's shape (`"reply":"error","error":"version"`) never
//! changes, so any client can read why it was refused. A change to an existing request
//! or response bumps [`VERSION`].
//!
//! **Adding a request** (pause at a safe point, snapshot, restore, …): a new
//! [`Request`] variant with its name in [`Request::NAMES`], the response as a new
//! [`Response`] variant, and a round trip in the tests. New variants are additive: a
//! VMM of the same version that does not know one answers
//! [`ErrorReply::UnknownRequest`].
//!
//! **VMMs of the previous build** (unversioned: `{"cmd":…}` in, `{"ok":…}` out) that
//! still run after an upgrade answer a versioned request with their own error, or — for
//! `status`, which they read without looking at other fields — with their old status.
//! [`read_reply`] reads both as [`Reply::Legacy`], and [`legacy`] holds the one old
//! request a client still sends: `shutdown`, so those VMMs stop gracefully.

use serde::{Deserialize, Serialize};

use super::console::ConsoleStatus;
use super::lifecycle::RunState;
use super::virtio_wiring::DeviceStatus;

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// A line with the protocol version of its sender: `{"v":1, …the body's fields…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<T> {
    /// The sender's [`VERSION`].
    pub v: u32,
    /// The request or response.
    #[serde(flatten)]
    pub body: T,
}

/// What a client asks the VMM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// State, uptime, size, exit and device counters: [`Response::Status`].
    Status,
    /// Park the vCPUs: [`Response::State`].
    Pause,
    /// Unpark the vCPUs: [`Response::State`].
    Resume,
    /// Ctrl-Alt-Del through the i8042, then kill after `timeout_ms` (default 5 s):
    /// [`Response::Shutdown`], once the VM has stopped.
    Shutdown {
        /// Milliseconds the guest gets to power off.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Stop the VM now: [`Response::State`].
    Kill,
    /// Save the VM into the two files sent with this line (`SCM_RIGHTS`, in this
    /// order: the state file, the memory file; docs/snapshot.md):
    /// [`Response::Snapshot`]. The VM is paused for the save and stays paused unless
    /// `resume`.
    Snapshot {
        /// Resume the VM once saved.
        #[serde(default)]
        resume: bool,
        /// Write as memory only the pages written since the last [`Request::Precopy`]
        /// round, as a pages file (`snapshot::pages`): a live migration's last round.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        dirty: bool,
    },
    /// A live migration's pre-copy round, written into the one file sent with this
    /// line while the guest runs: round 0 turns dirty-page tracking on and writes all
    /// of memory (a memory file), later rounds the pages written since the round
    /// before (a pages file): [`Response::Precopy`].
    Precopy {
        /// The round, from 0.
        round: u32,
    },
    /// Turn dirty-page tracking off (the migration did not happen): [`Response::State`].
    PrecopyEnd,
}

impl Request {
    /// The `cmd` of every request this build knows.
    pub const NAMES: &'static [&'static str] = &[
        "status",
        "pause",
        "resume",
        "shutdown",
        "kill",
        "snapshot",
        "precopy",
        "precopy_end",
    ];

    /// The request as one line (with its newline), at this build's [`VERSION`].
    pub fn to_line(&self) -> Vec<u8> {
        line(&Versioned {
            v: VERSION,
            body: self,
        })
    }
}

/// What the VMM answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// The answer to [`Request::Status`].
    Status(Status),
    /// The answer to [`Request::Pause`], [`Request::Resume`] and [`Request::Kill`]: the
    /// state after it.
    State {
        /// Running, paused, or stopped.
        state: RunState,
    },
    /// The answer to [`Request::Shutdown`]: the VM has stopped.
    Shutdown {
        /// Stopped.
        state: RunState,
        /// Whether the guest powered off by itself (false: killed after the timeout).
        graceful: bool,
        /// Why Ctrl-Alt-Del could not be pressed, when it could not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ctrl_alt_del_error: Option<String>,
    },
    /// The answer to [`Request::Snapshot`]: saved.
    Snapshot {
        /// Paused, or running when asked to resume.
        state: RunState,
        /// The state file's length.
        state_bytes: u64,
        /// The memory file's length (the guest's memory).
        memory_bytes: u64,
        /// Memory bytes written (pages not all zero; the rest are holes).
        written_bytes: u64,
        /// Milliseconds from the pause to the end of the save.
        took_ms: u64,
        /// After pre-copy rounds (`dirty`): each disk's blocks written since round 0
        /// (64 KiB blocks, `[first, count]` runs), in disk order — what a migration
        /// sends again.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        disks: Vec<Vec<[u64; 2]>>,
    },
    /// The answer to [`Request::Precopy`]: the round is written.
    Precopy {
        /// Running (or paused, if it was).
        state: RunState,
        /// The round.
        round: u32,
        /// Pages written since the round before (round 0: every page).
        dirty_pages: u64,
        /// Bytes of pages written into the file.
        written_bytes: u64,
        /// Milliseconds the round took.
        took_ms: u64,
    },
    /// The request was refused or failed.
    Error(ErrorReply),
}

impl Response {
    /// The response as one line (with its newline), at this build's [`VERSION`].
    pub fn to_line(&self) -> Vec<u8> {
        line(&Versioned {
            v: VERSION,
            body: self,
        })
    }

    /// The state of the VM the response reports, when it reports one.
    pub fn state(&self) -> Option<RunState> {
        match self {
            Response::Status(s) => Some(s.state),
            Response::State { state }
            | Response::Shutdown { state, .. }
            | Response::Snapshot { state, .. }
            | Response::Precopy { state, .. } => Some(*state),
            Response::Error(ErrorReply::Failed { state, .. }) => Some(*state),
            Response::Error(_) => None,
        }
    }
}

/// The answer to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// Running, paused, or stopped.
    pub state: RunState,
    /// Milliseconds since the VM started.
    pub uptime_ms: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory in bytes.
    pub memory: u64,
    /// The VMM's pid, as the host sees it.
    pub pid: u32,
    /// `KVM_RUN` exits, by kind.
    pub exits: ExitCounts,
    /// The virtio devices in device order (disks, then NICs).
    pub devices: Vec<DeviceStatus>,
    /// The console socket's counters, when the VM has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleStatus>,
    /// Control requests answered with [`ErrorReply::Malformed`],
    /// [`ErrorReply::UnknownRequest`] or [`ErrorReply::Version`] since the VMM started.
    pub refused_requests: u64,
}

/// `KVM_RUN` exits by kind, as counted when `status` was asked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitCounts {
    /// Every return from `KVM_RUN`.
    pub total: u64,
    /// Port I/O exits.
    pub io: u64,
    /// MMIO exits.
    pub mmio: u64,
    /// Port I/O no device claimed.
    pub unknown_io: u64,
    /// MMIO no device claimed.
    pub unknown_mmio: u64,
    /// `KVM_RUN` interrupted by a kick or a signal.
    pub interrupted: u64,
}

/// Why a request was not answered as asked: `{"reply":"error","error":"<kind>",…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case", deny_unknown_fields)]
pub enum ErrorReply {
    /// Not a JSON object of a known request's fields (or not UTF-8).
    #[error("malformed control request: {reason}")]
    Malformed {
        /// What the parser said.
        reason: String,
    },
    /// A `cmd` this VMM does not know.
    #[error("unknown control request {cmd:?} (this VMM knows {known})")]
    UnknownRequest {
        /// The `cmd` sent.
        cmd: String,
        /// The requests it knows, comma-separated.
        known: String,
    },
    /// A request of another protocol version (`None`: without `v`, as earlier builds
    /// sent).
    #[error("control protocol version {} is not this VMM's version {supported}", got.map_or("none".to_owned(), |v| v.to_string()))]
    Version {
        /// The version the client sent.
        got: Option<u32>,
        /// The one version this VMM speaks.
        supported: u32,
    },
    /// A well-formed request that could not be carried out (resume a stopped VM, a
    /// pause the vCPUs did not reach in time).
    #[error("{reason}")]
    Failed {
        /// Why.
        reason: String,
        /// The VM's state after the attempt.
        state: RunState,
    },
}

/// Just enough of a request line to route it: its version and name.
#[derive(Deserialize)]
struct Header {
    v: Option<u32>,
    cmd: Option<String>,
}

/// Reads one request line (without its newline). Never panics: whatever the bytes, the
/// result is a request or the typed reason it is none, checked in this order: JSON
/// object, version, known `cmd`, its fields.
pub fn parse_request(line: &[u8]) -> Result<Request, ErrorReply> {
    let malformed = |e: serde_json::Error| ErrorReply::Malformed {
        reason: e.to_string(),
    };
    let header: Header = serde_json::from_slice(line).map_err(malformed)?;
    if header.v != Some(VERSION) {
        return Err(ErrorReply::Version {
            got: header.v,
            supported: VERSION,
        });
    }
    let Some(cmd) = header.cmd else {
        return Err(ErrorReply::Malformed {
            reason: "no `cmd`".into(),
        });
    };
    if !Request::NAMES.contains(&cmd.as_str()) {
        return Err(ErrorReply::UnknownRequest {
            cmd,
            known: Request::NAMES.join(", "),
        });
    }
    serde_json::from_slice::<Versioned<Request>>(line)
        .map(|r| r.body)
        .map_err(malformed)
}

/// A reply line as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A response of this build's protocol, or a version error of any.
    Current(Response),
    /// The reply of a VMM of a build before the protocol was versioned.
    Legacy(legacy::Reply),
}

impl Reply {
    /// The state of the VM the reply reports, when it reports one.
    pub fn state(&self) -> Option<RunState> {
        match self {
            Reply::Current(r) => r.state(),
            Reply::Legacy(r) => r.state,
        }
    }
}

/// Reads one reply line (with or without its newline); `None` when it is neither a
/// response of this version (a version error of any version included) nor an
/// unversioned VMM's reply.
pub fn read_reply(line: &[u8]) -> Option<Reply> {
    if let Ok(r) = serde_json::from_slice::<Versioned<Response>>(line) {
        let current =
            r.v == VERSION || matches!(r.body, Response::Error(ErrorReply::Version { .. }));
        return current.then_some(Reply::Current(r.body));
    }
    serde_json::from_slice::<legacy::Reply>(line)
        .ok()
        .map(Reply::Legacy)
}

/// `value` as JSON and a newline. Serializing these types cannot fail (no maps with
/// non-string keys, no failing `Serialize` impls); were it to, the line is empty and
/// the peer sees a blank line, which both ends skip.
fn line<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The unversioned protocol of builds before [`VERSION`] 1, as far as a client still
/// speaks it: to stop VMMs of such a build that run when vmctl is upgraded.
pub mod legacy {
    use serde::{Deserialize, Serialize};

    use super::RunState;

    /// Their `shutdown` request: `{"cmd":"shutdown","timeout_ms":…}`.
    #[derive(Debug, Serialize)]
    struct Shutdown {
        cmd: &'static str,
        timeout_ms: u64,
    }

    /// The `shutdown` line (with its newline) such a VMM understands.
    pub fn shutdown_line(timeout_ms: u64) -> Vec<u8> {
        super::line(&Shutdown {
            cmd: "shutdown",
            timeout_ms,
        })
    }

    /// What such a VMM answered: `{"ok":…,"state":…,"error":…}` and, for `status`,
    /// more fields this build does not read.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
    pub struct Reply {
        /// Whether it did what was asked.
        pub ok: bool,
        /// The VM's state, when it said.
        #[serde(default)]
        pub state: Option<RunState>,
        /// Why it did not, when it did not.
        #[serde(default)]
        pub error: Option<String>,
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
