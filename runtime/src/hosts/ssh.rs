//! A host reached over OpenSSH: its agent (`vmctl agent` of this very build, shipped
//! when the host lacks it, `remote::ship`; or the host's kept agent when the
//! connection is kept, `remote::kept`) carries the host calls on one session
//! ([`SshLink`]); files the host needs are sent on a session of their own
//! (`vmctl agent receive`) into its image cache, once per content.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use vmctl_schema::Host as HostConfig;

use super::remote::{ConsoleView, Link, LinkError, RemoteHost};
use super::stream::StreamClient;
use super::wire::{Answer, Call};
use crate::host::fsutil;
use crate::remote::build::{sha256_of, Executable};
use crate::remote::client::Agent;
use crate::remote::kept;
use crate::remote::ship::{self, remote_shell, AgentOptions, Shipped};
use crate::remote::ssh::{shell_quote, ControlDir, SshOptions, SshSession};
use crate::remote::target::SshTarget;

/// Why a host could not be reached over ssh.
#[derive(Debug, thiserror::Error)]
pub enum SshHostError {
    #[error("host {host:?}: `ssh {ssh}` is not an ssh target vmctl can use: {reason}")]
    Target {
        host: String,
        ssh: String,
        reason: String,
    },
    #[error("host {host:?}: cannot identify this vmctl to ship it: {reason}")]
    Build { host: String, reason: String },
    #[error("host {host:?}: {source}")]
    Connect {
        host: String,
        #[source]
        source: Box<ship::ConnectError>,
    },
    #[error("host {host:?}: the agent did not take host calls: {reason}")]
    Calls { host: String, reason: String },
    #[error("host {host:?} cannot run VMs: /dev/kvm {reason}")]
    NoKvm { host: String, reason: String },
}

impl SshHostError {
    /// The config's name of the host.
    pub fn host(&self) -> &str {
        match self {
            SshHostError::Target { host, .. }
            | SshHostError::Build { host, .. }
            | SshHostError::Connect { host, .. }
            | SshHostError::Calls { host, .. }
            | SshHostError::NoKvm { host, .. } => host,
        }
    }
}

/// The calls of one host's agent, and how to send it files.
pub struct SshLink {
    /// Dropped first: the agent's input ends, and it exits.
    client: StreamClient,
    /// The `ssh` that carries the session (ended when the link drops).
    _agent: Mutex<Agent>,
    session: Arc<SshSession>,
    /// The agent's path on the host.
    vmctl: PathBuf,
    state_dir: PathBuf,
    sudo: bool,
    /// The sha256 and size of each file hashed in this run, by path.
    digests: Mutex<std::collections::HashMap<PathBuf, (String, u64)>>,
}

/// How to reach a host over ssh.
#[derive(Debug, Clone)]
pub struct SshSettings {
    pub options: SshOptions,
    pub control: Arc<ControlDir>,
}

/// What the run needs of a host beyond reaching it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// The config puts VMs on it: it must have a usable /dev/kvm.
    pub kvm: bool,
}

/// A host reached over ssh, and what reaching it shipped there (vmctl itself).
pub type Reached = (RemoteHost, Option<Shipped>);

/// Connects to `host`'s agent (shipping vmctl when needed) and says which host it is.
pub fn connect(
    host: &HostConfig,
    ssh: &str,
    settings: &SshSettings,
    needs: Needs,
) -> Result<Reached, SshHostError> {
    let target: SshTarget =
        ssh.parse().map_err(
            |e: crate::remote::target::TargetError| SshHostError::Target {
                host: host.name.clone(),
                ssh: ssh.to_owned(),
                reason: e.to_string(),
            },
        )?;
    let exe = Executable::current().map_err(|e| SshHostError::Build {
        host: host.name.clone(),
        reason: e.to_string(),
    })?;
    let session = Arc::new(SshSession::new(
        target,
        settings.options.clone(),
        Arc::clone(&settings.control),
    ));
    let options = AgentOptions {
        state_dir: host.state_dir.clone(),
        sudo: host.sudo,
    };
    // The host's kept agent when there is one (`remote::kept`), else an agent started
    // for this run (shipped first when the host lacks this build), and a kept one
    // started for the next runs when the connection is kept.
    let (mut agent, shipped) = match kept::reach(&session, &options, exe) {
        Some((agent, _hello)) => (agent, None),
        None => {
            let connected =
                ship::connect(&session, exe, &options).map_err(|source| SshHostError::Connect {
                    host: host.name.clone(),
                    source: Box::new(source),
                })?;
            kept::start(&session, &options, exe);
            (connected.agent, connected.shipped)
        }
    };
    let calls_error = |reason: String| SshHostError::Calls {
        host: host.name.clone(),
        reason,
    };
    if needs.kvm {
        let probe = agent.probe().map_err(|e| calls_error(e.to_string()))?;
        if let crate::remote::protocol::KvmAccess::Unusable { reason } = probe.kvm {
            return Err(SshHostError::NoKvm {
                host: host.name.clone(),
                reason,
            });
        }
    }
    let (client, agent) = agent.into_calls().map_err(|e| calls_error(e.to_string()))?;
    let link = SshLink {
        client,
        _agent: Mutex::new(agent),
        session,
        vmctl: ship::agent_path(&options, exe),
        state_dir: host.state_dir.clone(),
        sudo: host.sudo,
        digests: Mutex::new(std::collections::HashMap::new()),
    };
    let opened = link
        .call(&Call::Open {
            host: host.name.clone(),
            state_dir: host.state_dir.clone(),
            netns: host.netns.clone(),
        })
        .map_err(|e| calls_error(e.to_string()))?;
    if opened != Answer::Opened {
        return Err(calls_error(format!("it answered {opened:?} to open")));
    }
    Ok((RemoteHost::new(&host.name, Arc::new(link)), shipped))
}

impl SshLink {
    /// The sha256 (hex) and size of the file at `path`, hashed once per run.
    fn digest(&self, path: &Path) -> Result<(String, u64), LinkError> {
        if let Some(known) = self.digests.lock().ok().and_then(|d| d.get(path).cloned()) {
            return Ok(known);
        }
        let unreadable = |e: std::io::Error| LinkError::Gone {
            reason: format!("cannot read {}: {e}", path.display()),
        };
        let (mut file, _) = fsutil::open_regular(path, true).map_err(unreadable)?;
        let digest = sha256_of(&mut file).map_err(unreadable)?;
        if let Ok(mut digests) = self.digests.lock() {
            digests.insert(path.to_owned(), digest.clone());
        }
        Ok(digest)
    }

    /// Where the host's image cache has the file of sha256 `hex`, if it has it.
    fn cached(&self, hex: &str) -> Result<Option<PathBuf>, LinkError> {
        match self.call(&Call::Image {
            sha256: hex.to_owned(),
        })? {
            Answer::Image { path } => Ok(path),
            Answer::Failed { error } => Err(LinkError::Gone {
                reason: error.message,
            }),
            other => Err(LinkError::Unexpected {
                call: "image".into(),
                answer: format!("{other:?}"),
            }),
        }
    }
}

impl Link for SshLink {
    fn console(&self, project: &str, vm: &str, view: &ConsoleView, tty: bool) -> Option<Command> {
        let mut words = vec![
            shell_quote(&self.vmctl.to_string_lossy()),
            "agent".to_owned(),
            "console".to_owned(),
            "--state-dir".to_owned(),
            shell_quote(&self.state_dir.to_string_lossy()),
            "--project".to_owned(),
            shell_quote(project),
        ];
        if let Some(n) = view.lines {
            words.extend(["--lines".to_owned(), n.to_string()]);
        }
        if view.follow {
            words.push("--follow".to_owned());
        }
        words.extend(["--".to_owned(), shell_quote(vm)]);
        let remote = remote_shell(self.sudo, &format!("exec {}", words.join(" ")));
        Some(if tty {
            self.session.interactive_command(&remote)
        } else {
            self.session.command(&remote)
        })
    }

    fn call(&self, call: &Call) -> Result<Answer, LinkError> {
        self.client.call(call)
    }

    fn lacks(&self, path: &Path) -> Result<Option<u64>, LinkError> {
        let (hex, len) = self.digest(path)?;
        Ok(self.cached(&hex)?.is_none().then_some(len))
    }

    fn ship(&self, path: &Path) -> Result<PathBuf, LinkError> {
        let gone = |reason: String| LinkError::Gone { reason };
        let open = || {
            fsutil::open_regular(path, true)
                .map_err(|e| gone(format!("cannot read {}: {e}", path.display())))
        };
        let (hex, _) = self.digest(path)?;
        if let Some(there) = self.cached(&hex)? {
            return Ok(there);
        }
        // Sent from the start of a fresh open: what is hashed is what is sent, or the
        // far side refuses it.
        let (file, _) = open()?;
        let script = format!(
            "exec {} agent receive --state-dir {} --sha256 {}",
            shell_quote(&self.vmctl.to_string_lossy()),
            shell_quote(&self.state_dir.to_string_lossy()),
            hex
        );
        let (status, stderr) = self
            .session
            .run(&remote_shell(self.sudo, &script), Stdio::from(file))
            .map_err(|e| gone(e.to_string()))?;
        if !status.success() {
            let line = stderr.lines().last().unwrap_or("").to_owned();
            return Err(gone(format!(
                "sending {} failed ({status}): {line}",
                path.display()
            )));
        }
        match self.call(&Call::Image { sha256: hex })? {
            Answer::Image { path: Some(there) } => Ok(there),
            other => Err(gone(format!(
                "{} was sent but the host's cache does not have it ({other:?})",
                path.display()
            ))),
        }
    }
}
