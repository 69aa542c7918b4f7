//! The near side of a kept agent: with the ssh connections kept between runs (the
//! CLI's default; `--ssh-control-dir none` keeps none), each host's agent is kept
//! too, and a run reaches it without starting a process on either side.
//!
//! - [`start`] (after a run reached the host the ordinary way): starts
//!   `vmctl agent listen` on the host over the kept connection, as a session of its
//!   own whose local `ssh` runs on without this run, and asks the connection's master
//!   to forward a socket in the control dir to the agent's socket on the host
//!   (`ssh -O forward -L LOCAL:REMOTE`).
//! - [`reach`] (the next runs): connects to that local socket and says hello. Anything
//!   short of this build's agent answering (no socket, the master or the agent gone,
//!   another build) is `None`, and the run reaches the host the ordinary way.
//!
//! Lifetime: the agent ends when its ssh session does (the master exits, is told to
//! exit, or the connection drops) or after the master's ControlPersist with no
//! connection open; while it lives its session keeps the master, and the master goes
//! after its ControlPersist once the agent has gone. Both sockets are private: the
//! local one in the 0700 control dir, the remote one in the host's `<state-dir>/run/`
//! (0700). Hosts with `sudo` are not kept (the agent runs as root there, and its socket
//! would have to be opened to the ssh user): they are reached the ordinary way, and so
//! is a host whose sshd does not forward sockets (`AllowStreamLocalForwarding no`),
//! where at most one kept agent per build waits out its idle time unused.

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::build::Executable;
use super::client::Agent;
use super::protocol::{Hello, Request, Response, PROTOCOL};
use super::ship::{agent_path, remote_shell, AgentOptions};
use super::ssh::{shell_words, SshSession};

/// How long a kept agent may take to answer the hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest socket path vmctl makes (sun_path holds 107 bytes and a NUL).
const MAX_SOCKET_PATH: usize = 100;

/// The sockets of the kept agent of `session`'s host, when the host can have one: the
/// local one, `<control dir>/to-agent-<key>.sock`, and the agent's on the host,
/// `<state-dir>/run/agent-<key>.sock`; the key is a digest of the target, the ssh
/// config, the state dir and the build. One name per build on the host: a second
/// agent started for it (by a run that could not reach the first, e.g. when the
/// host's sshd does not forward sockets) finds it taken and ends at once.
pub fn sockets(
    session: &SshSession,
    options: &AgentOptions,
    exe: &Executable,
) -> Option<(PathBuf, PathBuf)> {
    if !session.control().is_kept() || options.sudo {
        return None;
    }
    let what = format!(
        "{}\0{}\0{}\0{}",
        session.target(),
        session
            .options()
            .config
            .as_deref()
            .map(|c| c.display().to_string())
            .unwrap_or_default(),
        options.state_dir.display(),
        exe.sha256
    );
    let (digest, _) = super::build::sha256_of(&mut what.as_bytes()).ok()?;
    let name = format!("agent-{}.sock", &digest[..16]);
    // Not a name a master's socket (`%C`, 40 hex digits) can take, so that
    // `DIR/[0-9a-f]*` are the masters (what the README's `ssh -O exit` loop closes).
    let local = session.control().path().join(format!("to-{name}"));
    let remote = options.state_dir.join("run").join(name);
    (usable(&local) && usable(&remote)).then_some((local, remote))
}

/// A path `ssh -L` and `bind` take as it is: short enough, without `:` or newlines.
fn usable(path: &Path) -> bool {
    let text = path.to_string_lossy();
    path.is_absolute() && text.len() <= MAX_SOCKET_PATH && !text.contains([':', '\n', '\0'])
}

/// This build's kept agent of `session`'s host, said hello to; `None` when there is
/// none to reach.
pub fn reach(
    session: &SshSession,
    options: &AgentOptions,
    exe: &Executable,
) -> Option<(Agent, Hello)> {
    let (local, _) = sockets(session, options, exe)?;
    let stream = UnixStream::connect(&local).ok()?;
    let mut agent = Agent::over_socket(session.host(), stream).ok()?;
    agent.set_timeout(Some(HELLO_TIMEOUT));
    let ours = Hello {
        protocol: PROTOCOL,
        build: exe.sha256.clone(),
    };
    let theirs = match agent.call(&Request::Hello(ours)) {
        Ok(Response::Hello(theirs)) => theirs,
        _ => return None,
    };
    if theirs.build != exe.sha256 || theirs.protocol != PROTOCOL {
        return None;
    }
    agent.set_timeout(Some(super::client::DEFAULT_TIMEOUT));
    Some((agent, theirs))
}

/// Starts a kept agent on `session`'s host and the forward to it, for the next runs.
/// Best effort: what fails here only means the next run reaches the host the
/// ordinary way (and tries again).
pub fn start(session: &SshSession, options: &AgentOptions, exe: &Executable) {
    let Some((local, remote)) = sockets(session, options, exe) else {
        return;
    };
    let vmctl = agent_path(options, exe);
    let idle = session
        .options()
        .control_persist
        .as_secs()
        .max(1)
        .to_string();
    let script = format!(
        "exec {}",
        shell_words(&[
            &*vmctl.to_string_lossy(),
            "agent",
            "listen",
            "--socket",
            &remote.to_string_lossy(),
            "--idle-seconds",
            &idle,
        ])
    );
    // The session's local `ssh` outlives this run (it holds the agent's session on
    // the master, and ends with it); its own process group keeps a Ctrl-C meant for
    // this run from ending it. It is never waited for here.
    let started = session
        .command(&remote_shell(false, &script))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    if started.is_err() {
        return;
    }
    session.forward(&local, &remote);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::ssh::{ControlDir, SshOptions};

    fn exe() -> Executable {
        Executable {
            path: PathBuf::from("/proc/self/exe"),
            sha256: "a".repeat(64),
            len: 1,
        }
    }

    #[test]
    fn only_a_kept_connection_to_a_host_without_sudo_has_a_kept_agent() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let kept = ControlDir::kept(&tmp.path().join("ctl")).expect("kept");
        let target = "root@h".parse().expect("target");
        let session = SshSession::new(target, SshOptions::default(), kept);
        let options = AgentOptions::default();
        let (local, remote) = sockets(&session, &options, &exe()).expect("kept");
        assert!(
            local.starts_with(tmp.path().join("ctl")),
            "{}",
            local.display()
        );
        assert!(
            remote.starts_with("/var/lib/vmctl/run/"),
            "{}",
            remote.display()
        );
        assert!(crate::remote::listen::is_socket_path(&remote));
        assert_eq!(
            local.file_name().map(|n| n.to_string_lossy().into_owned()),
            remote
                .file_name()
                .map(|n| format!("to-{}", n.to_string_lossy()))
        );
        let again = sockets(&session, &options, &exe());
        assert_eq!(again, Some((local.clone(), remote)));
        let other_build = Executable {
            sha256: "b".repeat(64),
            ..exe()
        };
        let other = sockets(&session, &options, &other_build).expect("kept");
        assert_ne!(other.0, local);
        let sudo = AgentOptions {
            sudo: true,
            ..AgentOptions::default()
        };
        assert_eq!(sockets(&session, &sudo, &exe()), None);
        let per_run = ControlDir::new().expect("control dir");
        let session = SshSession::new("h".parse().expect("target"), SshOptions::default(), per_run);
        assert_eq!(sockets(&session, &options, &exe()), None);
        // Nothing listens: nothing is reached (and nothing is started by trying).
        assert!(reach(&session, &options, &exe()).is_none());
    }
}
