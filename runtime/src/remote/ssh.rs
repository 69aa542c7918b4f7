//! The system's OpenSSH client, one multiplexed connection per host.
//!
//! Every `ssh` vmctl runs gets the same options: `BatchMode=yes` (never a prompt),
//! a `ConnectTimeout`, `-F FILE` when the run names an ssh config, and connection
//! sharing: `ControlMaster=auto` with its socket in a private 0700 directory
//! ([`ControlDir`]) and a `ControlPersist`, so the first command to a host opens its
//! connection and every later one (agent, shipping, console) reuses it. Where that
//! directory is ([`Control`]): kept across runs ([`ControlDir::kept`], by default
//! [`default_kept_dir`]; the CLI's default, with a ControlPersist of 60 s), so that
//! the next run reuses the connection; or made for one run ([`ControlDir::new`],
//! `--ssh-control-dir none`): dropping a [`SshSession`] then asks its master to exit
//! (`ssh -O exit`) and dropping the [`ControlDir`] removes the directory. What `ssh`
//! says on stderr when it fails becomes an [`SshError`] that names the host and
//! carries ssh's own line.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::target::SshTarget;

/// The exit status `ssh` reserves for its own failures (the remote command's status
/// otherwise).
pub const SSH_FAILED: i32 = 255;

/// How `ssh` is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshOptions {
    /// The `ssh` program (`ssh` on `PATH` by default).
    pub program: PathBuf,
    /// An ssh config file given to every `ssh` as `-F FILE` (`--ssh-config`,
    /// `VMCTL_SSH_CONFIG`); `None` uses the user's own.
    pub config: Option<PathBuf>,
    /// `ConnectTimeout`, whole seconds (at least one).
    pub connect_timeout: Duration,
    /// `ControlPersist`: how long a host's master connection outlives its last use.
    pub control_persist: Duration,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            program: PathBuf::from("ssh"),
            config: None,
            connect_timeout: Duration::from_secs(10),
            control_persist: Duration::from_secs(15),
        }
    }
}

/// Why `ssh` failed, naming the host (the target as written) and carrying the line of
/// ssh's stderr that says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshError {
    /// The connection could not be made: refused, timed out, no route, unknown name,
    /// closed during the key exchange.
    #[error("host {host} is unreachable: {line}")]
    Unreachable { host: String, line: String },
    /// The server refused every key offered.
    #[error("host {host} refused the ssh key: {line}")]
    KeyRefused { host: String, line: String },
    /// The server's host key is not in known_hosts, or has changed.
    #[error("host {host}: its host key is unknown or has changed: {line}")]
    HostKey { host: String, line: String },
    /// Any other failure of `ssh` itself (exit status 255).
    #[error("host {host}: ssh failed: {line}")]
    Failed { host: String, line: String },
    /// `ssh` could not be started.
    #[error("host {host}: cannot run {program}: {reason}")]
    Spawn {
        host: String,
        program: String,
        reason: String,
    },
}

impl SshError {
    /// The host the error names.
    pub fn host(&self) -> &str {
        match self {
            SshError::Unreachable { host, .. }
            | SshError::KeyRefused { host, .. }
            | SshError::HostKey { host, .. }
            | SshError::Failed { host, .. }
            | SshError::Spawn { host, .. } => host,
        }
    }
}

/// Turns what a failed `ssh` wrote on stderr into an [`SshError`] for `host`.
pub fn classify(host: &str, stderr: &str) -> SshError {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let find = |needles: &[&str]| {
        lines
            .iter()
            .find(|l| needles.iter().any(|n| l.contains(n)))
            .map(|l| (*l).to_owned())
    };
    let host = host.to_owned();
    if let Some(line) = find(&["Host key verification failed"]) {
        return SshError::HostKey { host, line };
    }
    if let Some(line) = find(&[
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        "host key is known for",
    ]) {
        return SshError::HostKey { host, line };
    }
    if let Some(line) = find(&["Permission denied ("]) {
        return SshError::KeyRefused { host, line };
    }
    if let Some(line) = find(&[
        "Connection refused",
        "Connection timed out",
        "timed out during banner exchange",
        "No route to host",
        "Network is unreachable",
        "Could not resolve hostname",
        "Name or service not known",
        "Connection closed by",
        "Connection reset by",
        "kex_exchange_identification",
    ]) {
        return SshError::Unreachable { host, line };
    }
    let line = lines
        .last()
        .map(|l| (*l).to_owned())
        .unwrap_or_else(|| "ssh exited with status 255 and said nothing".to_owned());
    SshError::Failed { host, line }
}

/// A private directory for the control sockets of one run: made 0700 under
/// the temp dir, removed with everything in it when dropped. Short, because a socket
/// path may not exceed 107 bytes: `/tmp/vmctl-ssh-<8 hex digits>/<40 hex digits>`.
#[derive(Debug)]
pub struct ControlDir {
    path: PathBuf,
    /// A directory the user keeps across runs (`--ssh-control-dir`): its masters
    /// outlive the run by `ControlPersist`, for the next run to reuse; neither the
    /// directory nor the masters are removed at the end of a run.
    kept: bool,
}

/// Why the control directory could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum ControlDirError {
    /// No private directory for this run could be made under `parent`.
    #[error("cannot make a private directory for ssh's control sockets in {parent}: {reason}")]
    PerRun { parent: PathBuf, reason: String },
    /// The directory connections are kept in is missing and cannot be made, or is
    /// not private to this user.
    #[error("cannot keep ssh connections in {path}: {reason}")]
    Kept { path: PathBuf, reason: String },
}

impl ControlDir {
    /// A new directory under `$TMPDIR` (or /tmp).
    pub fn new() -> Result<Arc<ControlDir>, ControlDirError> {
        ControlDir::new_in(&std::env::temp_dir())
    }

    /// A new directory under `parent`: `mkdir` with mode 0700 of a fresh name (it
    /// fails rather than reuse anything already there), tried a few times.
    pub fn new_in(parent: &Path) -> Result<Arc<ControlDir>, ControlDirError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let error = |e: std::io::Error| ControlDirError::PerRun {
            parent: parent.to_owned(),
            reason: e.to_string(),
        };
        let mut attempt = 0;
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!(
                "vmctl-ssh-{:x}",
                (std::process::id() ^ nanos).wrapping_add(n)
            );
            let path = parent.join(name);
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    // The umask may only have taken bits away; say exactly 0700.
                    let dir = ControlDir { path, kept: false };
                    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o700))
                        .map_err(error)?;
                    return Ok(Arc::new(dir));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => {
                    attempt += 1;
                }
                Err(e) => return Err(error(e)),
            }
        }
    }

    /// `path`, kept across runs: made 0700 if missing (its missing parents too, 0700);
    /// refused unless it is a real directory (not a link) owned by this user and
    /// closed to everyone else, since whoever can reach its sockets can run commands
    /// on the hosts.
    pub fn kept(path: &Path) -> Result<Arc<ControlDir>, ControlDirError> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let error = |reason: String| ControlDirError::Kept {
            path: path.to_owned(),
            reason,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| error(format!("cannot make {}: {e}", parent.display())))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(error(e.to_string())),
        }
        let meta = std::fs::symlink_metadata(path).map_err(|e| error(e.to_string()))?;
        // SAFETY: geteuid has no preconditions, cannot fail and touches no memory.
        let euid = unsafe { libc::geteuid() };
        if !meta.file_type().is_dir() {
            return Err(error(if meta.file_type().is_symlink() {
                "it is a symbolic link (vmctl follows none there)".into()
            } else {
                "it is not a directory".into()
            }));
        }
        if meta.uid() != euid {
            return Err(error(format!(
                "it belongs to uid {}, not to this user (uid {euid})",
                meta.uid()
            )));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(error(format!(
                "its mode is {:o}: others may reach the ssh connections in it (make it 0700)",
                meta.permissions().mode() & 0o777
            )));
        }
        Ok(Arc::new(ControlDir {
            path: path.to_owned(),
            kept: true,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is kept across runs (with its masters).
    pub fn is_kept(&self) -> bool {
        self.kept
    }
}

/// Where the hosts' ssh connections of a run live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Control {
    /// One connection per host for this run, in a private directory made for it and
    /// removed after it; each connection is told to exit at the end of the run
    /// (`--ssh-control-dir none`).
    #[default]
    PerRun,
    /// Kept across runs in this directory ([`ControlDir::kept`]), each host's kept
    /// agent behind its connection (`remote::kept`): what vmctl does by default, in
    /// [`default_kept_dir`].
    Kept(PathBuf),
}

impl Control {
    /// The run's control directory.
    pub fn dir(&self) -> Result<Arc<ControlDir>, ControlDirError> {
        match self {
            Control::PerRun => ControlDir::new(),
            Control::Kept(path) => ControlDir::kept(path),
        }
    }
}

/// The directory vmctl keeps ssh connections in by default, for this user:
/// [`default_kept_dir_for`] with this process's environment and effective uid.
/// `$XDG_RUNTIME_DIR` counts only when it is an absolute path to a directory of this
/// user's (under `sudo -E`, root must not make files in the invoking user's).
pub fn default_kept_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    let xdg = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| {
            dir.is_absolute() && std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == euid)
        });
    default_kept_dir_for(xdg.as_deref(), euid, &std::env::temp_dir())
}

/// The rule of [`default_kept_dir`]: `<xdg>/vmctl/ssh` when the user has a runtime
/// dir (`$XDG_RUNTIME_DIR`, private to them and emptied at logout), else
/// `/run/vmctl/ssh` for root, else `<temp>/vmctl-ssh-uid<uid>` (a name no per-run
/// directory takes: those are `vmctl-ssh-<hex>`), which [`ControlDir::kept`] makes
/// 0700 and refuses when it is a link, another user's, or open to others.
pub fn default_kept_dir_for(xdg: Option<&Path>, euid: u32, temp: &Path) -> PathBuf {
    match xdg {
        Some(dir) => dir.join("vmctl").join("ssh"),
        None if euid == 0 => PathBuf::from("/run/vmctl/ssh"),
        None => temp.join(format!("vmctl-ssh-uid{euid}")),
    }
}

impl Drop for ControlDir {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One host reached over ssh: its target, the run's options and control directory.
/// Commands built here share one connection; dropping the session closes it.
#[derive(Debug)]
pub struct SshSession {
    target: SshTarget,
    options: SshOptions,
    control: Arc<ControlDir>,
}

impl SshSession {
    pub fn new(target: SshTarget, options: SshOptions, control: Arc<ControlDir>) -> Self {
        SshSession {
            target,
            options,
            control,
        }
    }

    /// The host as errors name it: the target as written.
    pub fn host(&self) -> String {
        self.target.to_string()
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// How its `ssh` runs.
    pub fn options(&self) -> &SshOptions {
        &self.options
    }

    /// Its control directory.
    pub fn control(&self) -> &ControlDir {
        &self.control
    }

    /// The options every `ssh` of this session gets, up to (not including) the target.
    pub fn base_args(&self) -> Vec<String> {
        self.args(false)
    }

    /// `ssh -t OPTIONS TARGET REMOTE`: like [`SshSession::command`] with a terminal on
    /// the far side, for a user at a terminal here (a console).
    pub fn interactive_command(&self, remote: &str) -> Command {
        let mut command = Command::new(&self.options.program);
        command
            .args(self.args(true))
            .args(self.target.ssh_args())
            .arg(remote);
        command
    }

    fn args(&self, tty: bool) -> Vec<String> {
        let o = &self.options;
        let mut args = Vec::new();
        if let Some(config) = &o.config {
            args.extend(["-F".to_owned(), config.display().to_string()]);
        }
        let control_path = self.control.path().join("%C");
        for option in [
            "BatchMode=yes".to_owned(),
            format!("ConnectTimeout={}", o.connect_timeout.as_secs().max(1)),
            "ControlMaster=auto".to_owned(),
            format!("ControlPath={}", control_path.display()),
            format!("ControlPersist={}s", o.control_persist.as_secs().max(1)),
            // A socket forward (`remote::kept`) replaces the dead one of a master's
            // earlier forward at the same path.
            "StreamLocalBindUnlink=yes".to_owned(),
            "ServerAliveInterval=15".to_owned(),
            "ServerAliveCountMax=3".to_owned(),
        ] {
            args.extend(["-o".to_owned(), option]);
        }
        // No escape character: the session carries bytes as they are (Ctrl-] and ~
        // included); no terminal unless a user's is to be carried.
        args.extend([
            if tty { "-t" } else { "-T" }.to_owned(),
            "-e".to_owned(),
            "none".to_owned(),
        ]);
        args
    }

    /// `ssh OPTIONS TARGET REMOTE`: `remote` is one command line for the remote user's
    /// shell, quoted by the caller ([`shell_quote`]).
    pub fn command(&self, remote: &str) -> Command {
        let mut command = Command::new(&self.options.program);
        command
            .args(self.base_args())
            .args(self.target.ssh_args())
            .arg(remote);
        command
    }

    /// Spawns `ssh … REMOTE` with the given stdio.
    pub fn spawn(
        &self,
        remote: &str,
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<Child, SshError> {
        self.command(remote)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| SshError::Spawn {
                host: self.host(),
                program: self.options.program.display().to_string(),
                reason: e.to_string(),
            })
    }

    /// Runs `remote` with `stdin`, to its end: its exit status and stderr. An exit
    /// status of 255 is ssh's own failure, classified; any other status is the remote
    /// command's, for the caller to judge.
    pub fn run(&self, remote: &str, stdin: Stdio) -> Result<(ExitStatus, String), SshError> {
        let mut child = self.spawn(remote, stdin, Stdio::null(), Stdio::piped())?;
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            stderr = String::from_utf8_lossy(&bytes).into_owned();
        }
        let status = child.wait().map_err(|e| SshError::Spawn {
            host: self.host(),
            program: self.options.program.display().to_string(),
            reason: e.to_string(),
        })?;
        if status.code() == Some(SSH_FAILED) {
            return Err(classify(&self.host(), &stderr));
        }
        Ok((status, stderr))
    }

    /// Asks this host's master connection to forward the local socket `local` to the
    /// socket `remote` on the host (`ssh -O forward -L LOCAL:REMOTE`), until the master
    /// exits; whether it said yes.
    pub fn forward(&self, local: &Path, remote: &Path) -> bool {
        let mut command = Command::new(&self.options.program);
        command
            .args(self.base_args())
            .args(["-O", "forward", "-L"])
            .arg(format!("{}:{}", local.display(), remote.display()))
            .args(self.target.ssh_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command.status().is_ok_and(|s| s.success())
    }

    /// Asks this host's master connection to exit (`ssh -O exit`); nothing happens when
    /// there is none.
    pub fn close(&self) {
        let mut command = Command::new(&self.options.program);
        command
            .args(self.base_args())
            .args(["-O", "exit"])
            .args(self.target.ssh_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Ok(mut child) = command.spawn() {
            let _ = child.wait();
        }
    }
}

impl Drop for SshSession {
    fn drop(&mut self) {
        // A kept directory's master serves the next run (it ends by ControlPersist).
        if !self.control.is_kept() {
            self.close();
        }
    }
}

/// `s` as one word of a POSIX shell command line: single-quoted unless it is made only
/// of characters no shell treats specially.
pub fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Words joined into one shell command line, each quoted.
pub fn shell_words<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(config: Option<&str>) -> SshSession {
        let options = SshOptions {
            config: config.map(PathBuf::from),
            connect_timeout: Duration::from_secs(3),
            ..SshOptions::default()
        };
        let control = ControlDir::new().expect("control dir");
        SshSession::new("root@h:2222".parse().expect("target"), options, control)
    }

    #[test]
    fn every_ssh_gets_batch_mode_a_timeout_and_the_shared_connection() {
        let s = session(Some("/etc/vmctl/ssh_config"));
        let command = s.command("exec vmctl agent");
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let control = s.control.path().join("%C").display().to_string();
        let expected = [
            "-F",
            "/etc/vmctl/ssh_config",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=3",
            "-o",
            "ControlMaster=auto",
            "-o",
            &format!("ControlPath={control}"),
            "-o",
            "ControlPersist=15s",
            "-o",
            "StreamLocalBindUnlink=yes",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=3",
            "-T",
            "-e",
            "none",
            "-l",
            "root",
            "-p",
            "2222",
            "--",
            "h",
            "exec vmctl agent",
        ];
        assert_eq!(args, expected);
        assert_eq!(command.get_program(), "ssh");
        assert!(
            session(None).base_args()[0] == "-o",
            "no -F without a config"
        );
    }

    #[test]
    fn the_control_dir_is_private_short_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = ControlDir::new().expect("control dir");
        let path = dir.path().to_owned();
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        // A socket path (dir + '/' + 40 hex digits of %C) fits sun_path.
        assert!(path.as_os_str().len() + 41 < 108, "{}", path.display());
        std::fs::write(path.join("leftover"), b"x").expect("writes");
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn the_default_kept_dir_is_the_users_runtime_dir_else_run_for_root_else_temp() {
        let tmp = Path::new("/tmp");
        let xdg = Path::new("/run/user/1000");
        assert_eq!(
            default_kept_dir_for(Some(xdg), 1000, tmp),
            Path::new("/run/user/1000/vmctl/ssh")
        );
        // Root with a runtime dir of its own (a root login) uses it too.
        assert_eq!(
            default_kept_dir_for(Some(Path::new("/run/user/0")), 0, tmp),
            Path::new("/run/user/0/vmctl/ssh")
        );
        assert_eq!(
            default_kept_dir_for(None, 0, tmp),
            Path::new("/run/vmctl/ssh")
        );
        let user = default_kept_dir_for(None, 1000, Path::new("/var/tmp"));
        assert_eq!(user, Path::new("/var/tmp/vmctl-ssh-uid1000"));
        // Not a name a per-run directory (vmctl-ssh-<hex>) can take.
        let name = user
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let suffix = name.strip_prefix("vmctl-ssh-").unwrap_or_default();
        assert!(!suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
        // Whatever the process's environment, the rule gives an absolute path with
        // room for a socket name in sun_path.
        let here = default_kept_dir();
        assert!(here.is_absolute(), "{}", here.display());
    }

    #[test]
    fn a_kept_dir_is_made_private_and_refused_when_open_a_link_or_another_users() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let tmp = tempfile::tempdir().expect("tempdir");
        // Missing: made 0700, parents too.
        let dir = tmp.path().join("vmctl").join("ssh");
        let kept = ControlDir::kept(&dir).expect("made");
        assert!(kept.is_kept());
        for made in [&dir, &tmp.path().join("vmctl")] {
            let meta = std::fs::symlink_metadata(made).expect("exists");
            assert!(meta.is_dir());
            assert_eq!(
                meta.permissions().mode() & 0o777,
                0o700,
                "{}",
                made.display()
            );
        }
        drop(kept);
        assert!(dir.exists(), "a kept dir stays");
        // Open to the group: refused, saying what it is.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).expect("chmod");
        let err = ControlDir::kept(&dir).expect_err("group may enter");
        assert!(err.to_string().contains("mode is 770"), "{err}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        // A link to a private directory of ours: refused all the same (never followed).
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        let err = ControlDir::kept(&link).expect_err("a link");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // A file: refused.
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").expect("file");
        assert!(ControlDir::kept(&file).is_err());
        // Another user's (only root can give it away).
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let theirs = tmp.path().join("theirs");
            std::fs::create_dir(&theirs).expect("dir");
            std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700))
                .expect("chmod");
            std::os::unix::fs::chown(&theirs, Some(65534), None).expect("chown");
            let err = ControlDir::kept(&theirs).expect_err("another user's");
            assert!(err.to_string().contains("belongs to uid 65534"), "{err}");
            assert_eq!(
                std::fs::metadata(&theirs).expect("still there").uid(),
                65534,
                "left as it was"
            );
        }
    }

    #[test]
    fn ssh_failures_are_classified_with_their_line() {
        let refused = "root@192.0.2.13: Permission denied (publickey).\n";
        assert_eq!(
            classify("host-c", refused),
            SshError::KeyRefused {
                host: "host-c".into(),
                line: "root@192.0.2.13: Permission denied (publickey).".into()
            }
        );
        let unknown = "No ED25519 host key is known for 192.0.2.11 and you have requested strict checking.\nHost key verification failed.\n";
        assert_eq!(
            classify("h", unknown),
            SshError::HostKey {
                host: "h".into(),
                line: "Host key verification failed.".into()
            }
        );
        let refused_port = "ssh: connect to host 192.0.2.13 port 22: Connection refused\n";
        assert!(
            matches!(classify("h", refused_port), SshError::Unreachable { line, .. } if line == refused_port.trim())
        );
        assert!(matches!(
            classify(
                "h",
                "ssh: Could not resolve hostname nope: Name or service not known"
            ),
            SshError::Unreachable { .. }
        ));
        assert!(matches!(
            classify("h", "Bad configuration option: foo\n"),
            SshError::Failed { line, .. } if line == "Bad configuration option: foo"
        ));
        assert!(matches!(classify("h", ""), SshError::Failed { .. }));
        let e = classify("host-c", refused_port);
        assert_eq!(e.host(), "host-c");
        assert!(e.to_string().contains("host-c"), "{e}");
        assert!(e.to_string().contains("Connection refused"), "{e}");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/var/lib/vmctl"), "/var/lib/vmctl");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(reboot)"), "'$(reboot)'");
        assert_eq!(shell_words(&["sudo", "-n", "a b"]), "sudo -n 'a b'");
    }

    #[test]
    fn shell_quoting_survives_a_shell() {
        for word in [
            "plain",
            "a b",
            "it's",
            "$(x) `y` \"z\" \\ ;|&",
            "new\nline",
            "",
        ] {
            let out = Command::new("sh")
                .args(["-c", &format!("printf %s {}", shell_quote(word))])
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), word);
        }
    }
}
