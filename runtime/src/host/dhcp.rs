//! A VLAN's DHCP and DNS server on this host: dnsmasq, run by vmctl with the files the
//! plan rendered (`vmctl_planner::dhcp`), in `<state-dir>/<project>/dhcp/<vlan>/`
//! (0700, files 0600, written atomically).
//!
//! - **Start**: `<dnsmasq> --conf-file=<dir>/dnsmasq.conf`, daemonized, in the host's
//!   netns (setns between fork and exec) with only the capabilities it needs
//!   ([`KEPT_CAPS`]: the rest leave the bounding set) and `no_new_privs`; dnsmasq's
//!   parent returns once the server is up (or has failed, with its words in
//!   `stderr` there), and its pid file is there.
//! - **Ownership**: a pid is vmctl's only when it is in the server's own pid file AND
//!   `/proc/<pid>/cmdline` is exactly what vmctl ran; the process is then pinned with a
//!   pidfd, the command line checked again, and the signal sent through the pidfd, so a
//!   reused pid is never signalled. (dnsmasq closes the descriptors it inherits, so no
//!   lock can prove it.)
//! - **Update**: the files are rewritten; a server that runs with the same
//!   `dnsmasq.conf` re-reads its leases and names on SIGHUP (its guests' leases stand),
//!   anything else is restarted.
//! - **Delete**: SIGTERM, wait, then the directory is removed.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmctl_planner::dhcp::{
    self as plan, DhcpFiles, LiveDhcp, CONF_FILE, HOSTS_FILE, NAMES_FILE, PID_FILE,
};

/// What dnsmasq said while it started (kept when it failed).
const STDERR_FILE: &str = "stderr";

use super::fsutil;
use crate::vmm::lock::{pidfd_open, pidfd_signal};

/// Errors of running a VLAN's DHCP server.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("dnsmasq is not installed on this host (looked on PATH and in /usr/sbin, /sbin), and VLAN {vlan:?} has `dhcp #true`")]
    NoDnsmasq { vlan: String },
    #[error("cannot write the DHCP server files of VLAN {vlan:?} in {}", dir.display())]
    WriteFiles {
        vlan: String,
        dir: PathBuf,
        source: io::Error,
    },
    #[error("cannot enter network namespace {netns:?} to start dnsmasq")]
    EnterNetns { netns: String, source: io::Error },
    #[error("cannot run {} for VLAN {vlan:?}", exe.display())]
    Spawn {
        vlan: String,
        exe: PathBuf,
        source: io::Error,
    },
    #[error("dnsmasq of VLAN {vlan:?} did not start: {message}")]
    Start { vlan: String, message: String },
    #[error("dnsmasq of VLAN {vlan:?} (pid {pid}) did not end within {} s of SIGTERM", STOP_TIMEOUT.as_secs())]
    Stop { vlan: String, pid: u32 },
    #[error("cannot remove the DHCP server files of VLAN {vlan:?} in {}", dir.display())]
    Remove {
        vlan: String,
        dir: PathBuf,
        source: io::Error,
    },
    #[error("cannot read the DHCP servers in {}", dir.display())]
    Observe { dir: PathBuf, source: io::Error },
}

impl DhcpError {
    /// What to do about it, when there is more to say than the error.
    pub fn help(&self) -> Option<String> {
        match self {
            DhcpError::NoDnsmasq { vlan } => Some(format!(
                "install dnsmasq on the host (Debian: `apt-get install dnsmasq-base`, or `dnsmasq`), or remove `dhcp #true` from VLAN {vlan:?}"
            )),
            DhcpError::Start { .. } => Some(
                "dnsmasq listens on the VLAN's gateway address, DNS port 53 and DHCP port 67 in the host's netns: check that no other DNS or DHCP server holds them there".into(),
            ),
            DhcpError::EnterNetns { netns, .. } => Some(format!(
                "the host's network namespace {netns:?} is gone: apply again (vmctl makes it before anything in it), or make it with `ip netns add {netns}`"
            )),
            DhcpError::Spawn { exe, .. } => Some(format!(
                "{} could not be run: check that it is dnsmasq and executable by root, or reinstall dnsmasq",
                exe.display()
            )),
            DhcpError::Stop { pid, .. } => Some(format!(
                "vmctl signals only the dnsmasq it started (its pid file and command line say so): see what pid {pid} is doing, end it (`kill -9 {pid}`) and apply again"
            )),
            DhcpError::WriteFiles { .. } | DhcpError::Remove { .. } | DhcpError::Observe { .. } => Some(
                "the DHCP server's files are in the project's state dir on the host: it must be a directory root can write".into(),
            ),
        }
    }
}

/// The capabilities dnsmasq keeps: DHCP's raw sockets and ARP entries, ports 53 and 67,
/// and `setgid` (dnsmasq sets its groups even to stay root).
/// (Numbers of linux/capability.h: `CAP_SETGID` 6, `CAP_NET_BIND_SERVICE` 10,
/// `CAP_NET_ADMIN` 12, `CAP_NET_RAW` 13.)
const KEPT_CAPS: [u32; 4] = [6, 10, 12, 13];

/// How long dnsmasq gets to start, and to end after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where dnsmasq is: the first `dnsmasq` on PATH, else in /usr/sbin or /sbin (which
/// a user's PATH may lack).
pub fn find_dnsmasq() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = [PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")];
    find_in(std::env::split_paths(&path).chain(sbin))
}

/// The first executable regular file `dnsmasq` in `dirs`.
fn find_in(dirs: impl Iterator<Item = PathBuf>) -> Option<PathBuf> {
    dirs.map(|dir| dir.join("dnsmasq")).find(|candidate| {
        fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The exact command line of the server in `dir` run from `exe`.
fn command_line(exe: &Path, dir: &Path) -> Vec<OsString> {
    let mut conf = OsString::from("--conf-file=");
    conf.push(dir.join(CONF_FILE));
    vec![exe.as_os_str().to_owned(), conf]
}

/// Whether `/proc/<pid>/cmdline` is exactly `expected`.
fn cmdline_is(pid: u32, expected: &[OsString]) -> bool {
    let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = raw
        .strip_suffix(&[0])
        .unwrap_or(&raw)
        .split(|&b| b == 0)
        .collect();
    args.len() == expected.len() && args.iter().zip(expected).all(|(a, e)| *a == e.as_bytes())
}

/// The dnsmasq of the server in `dir` when it runs and is provably vmctl's: its pid
/// from the pid file there, and a command line exactly as vmctl ran it from an
/// executable named `dnsmasq`.
fn running_pid(dir: &Path) -> Option<(u32, Vec<OsString>)> {
    let text = read_small(&dir.join(PID_FILE))?;
    let pid: u32 = text.trim().parse().ok().filter(|&p| p > 1)?;
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let exe = raw.split(|&b| b == 0).next()?;
    let exe = Path::new(std::ffi::OsStr::from_bytes(exe));
    if exe.file_name()? != "dnsmasq" {
        return None;
    }
    let expected = command_line(exe, dir);
    cmdline_is(pid, &expected).then_some((pid, expected))
}

/// Sends `signal` to the server of `dir` when it is provably vmctl's (see the module
/// comment); its pid when the signal was sent.
fn signal_server(dir: &Path, signal: libc::c_int) -> Option<(u32, std::os::fd::OwnedFd)> {
    let (pid, expected) = running_pid(dir)?;
    let pidfd = pidfd_open(pid)?;
    // The pidfd names that process for good: check it is still the one we ran.
    if !cmdline_is(pid, &expected) {
        return None;
    }
    pidfd_signal(&pidfd, signal).then_some((pid, pidfd))
}

/// A small regular file's text (never through a symlink); `None` when absent or odd.
fn read_small(path: &Path) -> Option<String> {
    let (file, meta) = fsutil::open_regular(path, false).ok()?;
    if meta.len() > 1 << 20 {
        return None;
    }
    let mut text = String::new();
    io::Read::read_to_string(&mut io::Read::take(file, 1 << 20), &mut text).ok()?;
    Some(text)
}

/// What this host has of `project`'s servers: every directory under
/// `<state-dir>/<project>/dhcp/`, with the hashes of its files and whether its dnsmasq
/// runs, by VLAN name.
pub fn observe(state_dir: &Path, project: &str) -> Result<Vec<LiveDhcp>, DhcpError> {
    let root = plan::dir(state_dir, project, "");
    let names = fsutil::list_dir(&root).map_err(|source| DhcpError::Observe {
        dir: root.clone(),
        source,
    })?;
    let mut servers = Vec::new();
    for name in names {
        let Some(name) = name.to_str() else {
            continue;
        };
        let dir = root.join(name);
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let file = |f: &str| read_small(&dir.join(f)).unwrap_or_default();
        let files = DhcpFiles {
            conf: file(CONF_FILE),
            hosts: file(HOSTS_FILE),
            names: file(NAMES_FILE),
        };
        let pid = running_pid(&dir).map(|(pid, _)| pid);
        servers.push(LiveDhcp {
            name: name.to_owned(),
            project: project.to_owned(),
            config: files.config_hash(),
            leases: files.leases_hash(),
            running: pid.is_some(),
            pid,
        });
    }
    servers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(servers)
}

/// Brings the server of `vlan` to `files`, running: written, then reloaded when the
/// running server's configuration is unchanged, else (re)started.
pub fn ensure(
    state_dir: &Path,
    project: &str,
    netns: Option<&str>,
    vlan: &str,
    files: &DhcpFiles,
) -> Result<(), DhcpError> {
    let exe = find_dnsmasq().ok_or_else(|| DhcpError::NoDnsmasq { vlan: vlan.into() })?;
    let dir = plan::dir(state_dir, project, vlan);
    let write_err = |source| DhcpError::WriteFiles {
        vlan: vlan.into(),
        dir: dir.clone(),
        source,
    };
    make_dir(&dir).map_err(write_err)?;
    let same_conf = read_small(&dir.join(CONF_FILE)).as_deref() == Some(files.conf.as_str());
    write_atomic(&dir.join(HOSTS_FILE), &files.hosts).map_err(write_err)?;
    write_atomic(&dir.join(NAMES_FILE), &files.names).map_err(write_err)?;
    if same_conf && signal_server(&dir, libc::SIGHUP).is_some() {
        return Ok(());
    }
    stop(&dir, vlan)?;
    write_atomic(&dir.join(CONF_FILE), &files.conf).map_err(write_err)?;
    start(&exe, &dir, netns, vlan)
}

/// Stops the server of `vlan` (when it runs and is vmctl's) and removes its directory.
pub fn delete(state_dir: &Path, project: &str, vlan: &str) -> Result<(), DhcpError> {
    let dir = plan::dir(state_dir, project, vlan);
    stop(&dir, vlan)?;
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(DhcpError::Remove {
            vlan: vlan.into(),
            dir,
            source: e,
        }),
        _ => {
            // The project's `dhcp` folder goes with its last server.
            if let Some(parent) = dir.parent() {
                let _ = fs::remove_dir(parent);
            }
            Ok(())
        }
    }
}

/// SIGTERM to the server of `dir` when it is vmctl's, and a wait for its end.
fn stop(dir: &Path, vlan: &str) -> Result<(), DhcpError> {
    let Some((pid, pidfd)) = signal_server(dir, libc::SIGTERM) else {
        return Ok(());
    };
    if crate::vms::process::wait_exit(&pidfd, STOP_TIMEOUT) {
        let _ = fsutil::remove_if_exists(&dir.join(PID_FILE));
        Ok(())
    } else {
        Err(DhcpError::Stop {
            vlan: vlan.into(),
            pid,
        })
    }
}

/// Starts dnsmasq on the files in `dir` inside `netns`; returns once its pid file
/// names a process that is provably it.
fn start(exe: &Path, dir: &Path, netns: Option<&str>, vlan: &str) -> Result<(), DhcpError> {
    let _ = fsutil::remove_if_exists(&dir.join(PID_FILE));
    let ns = netns
        .map(|name| {
            File::open(super::net::netns::path_of(name)).map_err(|source| DhcpError::EnterNetns {
                netns: name.into(),
                source,
            })
        })
        .transpose()?;
    // dnsmasq's words go to a file, not a pipe: nothing here waits on a descriptor
    // the daemon might keep.
    let stderr_path = dir.join(STDERR_FILE);
    let _ = fsutil::remove_if_exists(&stderr_path);
    let stderr = fsutil::create_new(&stderr_path, fsutil::FILE_MODE).map_err(|source| {
        DhcpError::WriteFiles {
            vlan: vlan.into(),
            dir: dir.into(),
            source,
        }
    })?;
    let args = command_line(exe, dir);
    let mut command = Command::new(exe);
    command
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0);
    // `ns` stays open until the spawn returned.
    if let Some(ns) = &ns {
        crate::host::net::netns::enter_in_child(&mut command, ns);
    }
    // SAFETY: between fork and exec only async-signal-safe calls (prctl).
    unsafe {
        command.pre_exec(move || {
            for cap in 0..=libc::c_ulong::from(63u8) {
                if KEPT_CAPS.iter().any(|&k| libc::c_ulong::from(k) == cap) {
                    continue;
                }
                // Capabilities this kernel does not know fail with EINVAL: done.
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    let error = io::Error::last_os_error();
                    if error.raw_os_error() == Some(libc::EINVAL) {
                        break;
                    }
                    return Err(error);
                }
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawn_err = |source| DhcpError::Spawn {
        vlan: vlan.into(),
        exe: exe.into(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_err)?;
    drop(ns);
    let failed = |message: String| DhcpError::Start {
        vlan: vlan.into(),
        message,
    };
    let words = || {
        let text = read_small(&stderr_path).unwrap_or_default();
        text.trim().to_owned()
    };
    // dnsmasq's parent exits once the daemon is up, or with its error.
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(spawn_err)? {
            break status;
        }
        if Instant::now() >= deadline {
            // Our own child, not reaped yet: its pid cannot have been reused.
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!(
                "it did not start within {} s; {}",
                START_TIMEOUT.as_secs(),
                words()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if !status.success() {
        return Err(failed(format!("{} ({status})", words())));
    }
    while Instant::now() < deadline {
        if running_pid(dir).is_some() {
            let _ = fsutil::remove_if_exists(&stderr_path);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(failed(format!(
        "no running dnsmasq in {} after {} s",
        dir.join(PID_FILE).display(),
        START_TIMEOUT.as_secs()
    )))
}

/// Makes `dir` and its missing parents, 0700; an existing `dir` is made 0700 too.
fn make_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Writes `text` to `path` atomically (see [`fsutil::write_atomic`]).
fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    fsutil::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsmasq_is_an_executable_file_found_in_order_and_its_absence_says_so() {
        let (a, b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let dirs = || [a.path().to_owned(), b.path().to_owned()].into_iter();
        assert_eq!(find_in(dirs()), None);
        fs::write(a.path().join("dnsmasq"), "").expect("file");
        assert_eq!(find_in(dirs()), None, "not executable");
        fs::create_dir(b.path().join("dnsmasq")).expect("dir");
        assert_eq!(find_in(dirs()), None, "a directory");
        fs::set_permissions(a.path().join("dnsmasq"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        assert_eq!(find_in(dirs()), Some(a.path().join("dnsmasq")));
        let missing = DhcpError::NoDnsmasq {
            vlan: "front".into(),
        };
        let text = missing.to_string();
        assert!(text.contains("dnsmasq is not installed"), "{text}");
        assert!(text.contains("\"front\""), "{text}");
    }

    #[test]
    fn a_command_line_must_match_exactly() {
        let me = std::process::id();
        let raw = fs::read(format!("/proc/{me}/cmdline")).expect("own cmdline");
        let mine: Vec<OsString> = raw
            .strip_suffix(&[0])
            .unwrap_or(&raw)
            .split(|&b| b == 0)
            .map(|a| std::ffi::OsStr::from_bytes(a).to_owned())
            .collect();
        assert!(cmdline_is(me, &mine));
        let mut longer = mine.clone();
        longer.push("--conf-file=/x".into());
        assert!(!cmdline_is(me, &longer));
        assert!(!cmdline_is(me, &mine[..mine.len() - 1]));
    }

    #[test]
    fn a_pid_file_naming_a_process_that_is_not_ours_proves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        // This test process: running, but not a dnsmasq of this directory.
        fs::write(
            dir.path().join(PID_FILE),
            format!("{}\n", std::process::id()),
        )
        .expect("pid file");
        assert!(running_pid(dir.path()).is_none());
        assert!(signal_server(dir.path(), 0).is_none());
        fs::write(dir.path().join(PID_FILE), "1\n").expect("pid file");
        assert!(running_pid(dir.path()).is_none());
        fs::write(dir.path().join(PID_FILE), "garbage").expect("pid file");
        assert!(running_pid(dir.path()).is_none());
    }

    #[test]
    fn files_are_written_0600_in_a_0700_dir_and_observed_with_their_hashes() {
        let state = tempfile::tempdir().expect("tempdir");
        let dir = plan::dir(state.path(), "lab", "front");
        make_dir(&dir).expect("dir");
        let files = DhcpFiles {
            conf: "listen-address=10.0.0.1\n".into(),
            hosts: "52:54:00:00:00:01,10.0.0.2,web-1\n".into(),
            names: "10.0.0.2 web-1.lab web-1\n".into(),
        };
        write_atomic(&dir.join(CONF_FILE), &files.conf).expect("conf");
        write_atomic(&dir.join(HOSTS_FILE), &files.hosts).expect("hosts");
        write_atomic(&dir.join(NAMES_FILE), &files.names).expect("names");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(HOSTS_FILE)), 0o600);
        let seen = observe(state.path(), "lab").expect("observe");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].name, "front");
        assert_eq!(seen[0].config, files.config_hash());
        assert_eq!(seen[0].leases, files.leases_hash());
        assert!(!seen[0].running);
        assert!(observe(state.path(), "other").expect("observe").is_empty());
        delete(state.path(), "lab", "front").expect("delete");
        assert!(!dir.exists());
        assert!(!dir.parent().expect("parent").exists());
    }
}
