//! Connecting to a host's agent, shipping vmctl first when the host lacks this build.
//!
//! The agent runs from a content-addressed path, `<state-dir>/bin/vmctl-<sha256>`.
//! [`connect`] starts it there and says hello; when the file is absent (the start
//! script exits [`ABSENT`]) or the agent answers as another build, the running
//! executable is sent over the same ssh connection: written to a temp file next to the
//! final path (umask 077), checked by sha256 on the far side, made 0700 and renamed
//! into place, so the final path never holds a partial or wrong file. Then the agent
//! is started again. A host that has this build ships nothing. With `sudo`, both the
//! agent and the shipping run through `sudo -n` (never a password prompt).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::build::Executable;
use super::client::{Agent, CallError};
use super::protocol::{Hello, Request, Response, PROTOCOL};
use super::ssh::{shell_quote, SshError, SshSession};

/// The state dir of a host whose config names none.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vmctl";

/// The exit status of the start script when the agent's file is not there.
pub const ABSENT: i32 = 97;

/// The exit status of the shipping script when the received file has another sha256.
pub const BAD_CHECKSUM: i32 = 98;

/// Where and how the agent runs on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentOptions {
    /// The host's state dir; the agent lives in its `bin/`.
    pub state_dir: PathBuf,
    /// Run the agent (and the shipping) through `sudo -n`.
    pub sudo: bool,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            sudo: false,
        }
    }
}

/// A connected agent, and what it took.
#[derive(Debug)]
pub struct Connected {
    pub agent: Agent,
    /// The agent's half of the handshake.
    pub hello: Hello,
    /// What was shipped, when the host lacked this build.
    pub shipped: Option<Shipped>,
}

/// One executable shipped to a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipped {
    /// Its path on the host.
    pub path: PathBuf,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Why a host's agent could not be reached. Every variant names the host.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A state dir that is not absolute, or holds a newline or NUL.
    #[error("host {host}: the state dir `{dir}` must be an absolute path without newlines")]
    StateDir { host: String, dir: String },
    /// `ssh` failed.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The agent did not answer the handshake (it could not start, or ended). An ssh
    /// failure found on the way is [`ConnectError::Ssh`], never this.
    #[error(transparent)]
    Handshake(CallError),
    /// The agent speaks another protocol version while being this build.
    #[error("host {host}: the agent speaks protocol {theirs}, this vmctl {ours}")]
    Protocol {
        host: String,
        ours: u32,
        theirs: u32,
    },
    /// The executable to ship could not be read.
    #[error("host {host}: cannot read {path} to ship it: {reason}")]
    ReadExecutable {
        host: String,
        path: PathBuf,
        reason: String,
    },
    /// The far side did not take the file (no space, not writable, wrong sha256, …).
    #[error("host {host}: shipping vmctl to {path} failed ({status}): {line}")]
    Ship {
        host: String,
        path: PathBuf,
        status: String,
        line: String,
    },
    /// After shipping, the agent still is not there or not this build.
    #[error("host {host}: after shipping, {path} answers as build {found}, not {expected}")]
    BuildMismatch {
        host: String,
        path: PathBuf,
        expected: String,
        found: String,
    },
}

impl From<CallError> for ConnectError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Ssh(e) => ConnectError::Ssh(e),
            other => ConnectError::Handshake(other),
        }
    }
}

/// The agent's path on a host: `<state-dir>/bin/vmctl-<sha256>`.
pub fn agent_path(options: &AgentOptions, exe: &Executable) -> PathBuf {
    options.state_dir.join("bin").join(exe.file_name())
}

/// Connects to the agent of `session`'s host, shipping `exe` first when the host
/// lacks it. `exe` is what runs there: [`Executable::current`] for vmctl itself.
pub fn connect(
    session: &SshSession,
    exe: &Executable,
    options: &AgentOptions,
) -> Result<Connected, ConnectError> {
    let host = session.host();
    let dir = options.state_dir.to_string_lossy();
    if !options.state_dir.is_absolute() || dir.contains(['\n', '\0']) {
        return Err(ConnectError::StateDir {
            host,
            dir: dir.into_owned(),
        });
    }
    let path = agent_path(options, exe);
    match start(session, exe, options, &path)? {
        Greeting::Ready(agent, hello) => {
            return Ok(Connected {
                agent,
                hello,
                shipped: None,
            })
        }
        Greeting::Absent | Greeting::OtherBuild(_) => {}
    }
    let shipped = ship(session, exe, options, &path)?;
    match start(session, exe, options, &path)? {
        Greeting::Ready(agent, hello) => Ok(Connected {
            agent,
            hello,
            shipped: Some(shipped),
        }),
        Greeting::Absent => Err(ConnectError::BuildMismatch {
            host,
            path,
            expected: exe.sha256.clone(),
            found: "none (the file is not there)".to_owned(),
        }),
        Greeting::OtherBuild(found) => Err(ConnectError::BuildMismatch {
            host,
            path,
            expected: exe.sha256.clone(),
            found,
        }),
    }
}

enum Greeting {
    Ready(Agent, Hello),
    Absent,
    OtherBuild(String),
}

/// Starts the agent at `path` and says hello.
fn start(
    session: &SshSession,
    exe: &Executable,
    options: &AgentOptions,
    path: &Path,
) -> Result<Greeting, ConnectError> {
    let script = format!(
        "p={}; if [ -x \"$p\" ]; then exec \"$p\" agent; fi; echo \"vmctl: $p is not there\" >&2; exit {ABSENT}",
        shell_quote(&path.to_string_lossy())
    );
    let child = session.spawn(
        &remote_shell(options.sudo, &script),
        Stdio::piped(),
        Stdio::piped(),
        Stdio::piped(),
    )?;
    let mut agent = Agent::new(session.host(), child)?;
    let ours = Hello {
        protocol: PROTOCOL,
        build: exe.sha256.clone(),
    };
    let theirs = match agent.call(&Request::Hello(ours)) {
        Ok(Response::Hello(theirs)) => theirs,
        Ok(other) => return Err(agent.unexpected("hello", other).into()),
        Err(CallError::Gone {
            code: Some(ABSENT), ..
        }) => return Ok(Greeting::Absent),
        Err(e) => return Err(e.into()),
    };
    if theirs.build != exe.sha256 {
        return Ok(Greeting::OtherBuild(theirs.build));
    }
    if theirs.protocol != PROTOCOL {
        return Err(ConnectError::Protocol {
            host: session.host(),
            ours: PROTOCOL,
            theirs: theirs.protocol,
        });
    }
    Ok(Greeting::Ready(agent, theirs))
}

/// Sends `exe` to `path` on the host: a temp file in the same directory, checked by
/// sha256 there, then renamed into place.
fn ship(
    session: &SshSession,
    exe: &Executable,
    options: &AgentOptions,
    path: &Path,
) -> Result<Shipped, ConnectError> {
    let host = session.host();
    let dir = path.parent().unwrap_or(Path::new("/"));
    let script = ship_script(&dir.to_string_lossy(), &exe.file_name(), &exe.sha256);
    let file = File::open(&exe.path).map_err(|e| ConnectError::ReadExecutable {
        host: host.clone(),
        path: exe.path.clone(),
        reason: e.to_string(),
    })?;
    let started = Instant::now();
    let (status, stderr) = session.run(&remote_shell(options.sudo, &script), Stdio::from(file))?;
    if !status.success() {
        let line = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("the far side said nothing")
            .to_owned();
        return Err(ConnectError::Ship {
            host,
            path: path.to_owned(),
            status: status.to_string(),
            line,
        });
    }
    Ok(Shipped {
        path: path.to_owned(),
        bytes: exe.len,
        elapsed: started.elapsed(),
    })
}

/// The far side of shipping: stdin to a temp file in `dir`, checked against `sha256`,
/// then renamed to `dir/name`; the temp file is removed whatever fails.
fn ship_script(dir: &str, name: &str, sha256: &str) -> String {
    format!(
        r#"set -e
umask 077
d={dir}
mkdir -p "$d"
t=$(mktemp "$d/.vmctl-XXXXXX")
trap 'rm -f "$t"' EXIT
cat > "$t"
s=$(sha256sum < "$t")
s=${{s%% *}}
if [ "$s" != {sha256} ]; then
    echo "vmctl: the received file's sha256 is $s, not {sha256}" >&2
    exit {BAD_CHECKSUM}
fi
chmod 0700 "$t"
mv -f "$t" "$d"/{name}
trap - EXIT"#,
        dir = shell_quote(dir),
        name = shell_quote(name),
    )
}

/// `sh -c SCRIPT` as one command line for the remote user's shell, through
/// `sudo -n` when asked.
pub fn remote_shell(sudo: bool, script: &str) -> String {
    let sh = format!("sh -c {}", shell_quote(script));
    if sudo {
        format!("sudo -n {sh}")
    } else {
        sh
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Runs the shipping script locally on `input`, in `dir`.
    fn run_ship_script(dir: &Path, input: &[u8], sha256: &str) -> std::process::Output {
        use std::io::Write;
        let script = ship_script(&dir.to_string_lossy(), "vmctl-x", sha256);
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(input).expect("writes");
        drop(stdin);
        child.wait_with_output().expect("waits")
    }

    fn sha(bytes: &[u8]) -> String {
        super::super::build::sha256_of(&mut &bytes[..])
            .expect("hashes")
            .0
    }

    #[test]
    fn the_ship_script_writes_a_checked_private_file_atomically() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state dir's/bin");
        let out = run_ship_script(&dir, b"#!/bin/sh\n", &sha(b"#!/bin/sh\n"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = dir.join("vmctl-x");
        assert_eq!(std::fs::read(&file).expect("shipped"), b"#!/bin/sh\n");
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o700);
        assert_eq!(mode(&dir), 0o700);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("lists")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["vmctl-x"], "no temp file left");
    }

    #[test]
    fn a_wrong_checksum_leaves_nothing_at_the_final_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = run_ship_script(tmp.path(), b"truncated", &sha(b"the whole file"));
        assert_eq!(out.status.code(), Some(BAD_CHECKSUM));
        assert!(String::from_utf8_lossy(&out.stderr).contains("sha256"));
        assert_eq!(std::fs::read_dir(tmp.path()).expect("lists").count(), 0);
    }

    #[test]
    fn remote_commands_are_one_quoted_shell_line() {
        assert_eq!(remote_shell(false, "echo 'hi'"), r"sh -c 'echo '\''hi'\'''");
        assert!(remote_shell(true, "x").starts_with("sudo -n sh -c "));
        let out = Command::new("sh")
            .args(["-c", &remote_shell(false, "printf '%s' \"$0\"")])
            .output()
            .expect("sh runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "sh");
    }

    #[test]
    fn the_agent_path_is_content_addressed_under_the_state_dir() {
        let exe = Executable {
            path: PathBuf::from("/proc/self/exe"),
            sha256: "a".repeat(64),
            len: 1,
        };
        assert_eq!(
            agent_path(&AgentOptions::default(), &exe),
            PathBuf::from(format!("/var/lib/vmctl/bin/vmctl-{}", "a".repeat(64)))
        );
    }
}
