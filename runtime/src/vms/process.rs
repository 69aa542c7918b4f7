//! The VMM process of one VM: starting `vmctl vmm --spec` detached (inside the host's
//! netns, in its own process group so a Ctrl-C of the CLI does not reach it), asking it
//! whether it runs, and stopping it (graceful shutdown over the control socket, then
//! SIGKILL by pid).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{VmError, VmHost, VmPaths};
use crate::host::fsutil::remove_if_exists;

/// How long a status request may take before the VMM counts as not answering.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a VM's process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Its pid file names a live `vmctl vmm`, and the VMM did not say it stopped.
    Running(u32),
    /// No process.
    Gone,
}

/// The pid in the VM's pid file when it is a live (not zombie) `vmctl vmm` process.
fn live_pid(paths: &VmPaths) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(&paths.pid)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    is_vmm(pid).then_some(pid)
}

/// Whether `pid` is a live `vmctl vmm` (a recycled pid is some other program).
fn is_vmm(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(state) = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start()) else {
        return false;
    };
    if state.starts_with('Z') || state.starts_with('X') {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmdline.split(|&b| b == 0).any(|arg| arg == b"vmm")
}

/// Asks the VM whether it runs: its pid, then its control socket.
pub fn probe(paths: &VmPaths) -> Probe {
    let Some(pid) = live_pid(paths) else {
        return Probe::Gone;
    };
    match request(paths, r#"{"cmd":"status"}"#, PROBE_TIMEOUT) {
        // A VMM that says it stopped is on its way out.
        Some(reply) if reply.get("state").and_then(|s| s.as_str()) == Some("stopped") => {
            Probe::Gone
        }
        // Running or paused; or alive but not answering, which is still a process
        // holding the VM's files (starting a second one would fight it).
        _ => Probe::Running(pid),
    }
}

/// Sends one request line on the control socket; the reply, if one came.
fn request(paths: &VmPaths, line: &str, timeout: Duration) -> Option<serde_json::Value> {
    let mut stream = UnixStream::connect(&paths.control).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).ok()?;
    serde_json::from_str(&reply).ok()
}

/// Starts the VMM of the spec at `paths.vmm_spec`; returns its pid once its control
/// socket serves.
pub fn spawn(host: &VmHost<'_>, vm: &str, paths: &VmPaths) -> Result<u32, VmError> {
    let netns = host
        .netns
        .map(|name| {
            File::open(format!("/run/netns/{name}")).map_err(|source| VmError::EnterNetns {
                netns: name.into(),
                source,
            })
        })
        .transpose()?;
    let mut command = Command::new(host.vmctl);
    command
        .arg("vmm")
        .arg("--spec")
        .arg(&paths.vmm_spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(ns) = netns {
        let fd = ns.as_raw_fd();
        // SAFETY: setns is async-signal-safe and `fd` stays open (owned by `ns`, which
        // lives until `output` returns) across the fork.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let output = command.output();
        drop(ns);
        return finish_spawn(vm, host, paths, output);
    }
    let output = command.output();
    finish_spawn(vm, host, paths, output)
}

fn finish_spawn(
    vm: &str,
    host: &VmHost<'_>,
    paths: &VmPaths,
    output: std::io::Result<std::process::Output>,
) -> Result<u32, VmError> {
    let output = output.map_err(|source| VmError::Spawn {
        vm: vm.into(),
        vmctl: host.vmctl.into(),
        source,
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let pid = stdout.trim().parse::<u32>().ok();
    match (output.status.success(), pid) {
        (true, Some(pid)) => Ok(pid),
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let why = stderr
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("no message")
                .to_owned();
            Err(VmError::Start {
                vm: vm.into(),
                why: format!("{why} (console log: {})", paths.console.display()),
            })
        }
    }
}

/// Stops the VM's process: graceful shutdown (the guest gets `timeout`), then SIGKILL.
/// Removes a dead VMM's leftover pid file and socket. Returns whether a process ran.
pub fn stop(vm: &str, paths: &VmPaths, timeout: Duration) -> Result<bool, VmError> {
    let Some(pid) = live_pid(paths) else {
        cleanup(paths);
        return Ok(false);
    };
    let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let line = format!(r#"{{"cmd":"shutdown","timeout_ms":{millis}}}"#);
    // The VMM answers once the guest is off or it killed it.
    let _ = request(paths, &line, timeout + Duration::from_secs(5));
    if !wait_gone(pid, Duration::from_secs(5)) && is_vmm(pid) {
        // SAFETY: kill has no memory-safety preconditions; `pid` was just checked to
        // be this VM's `vmctl vmm`.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        if !wait_gone(pid, Duration::from_secs(5)) {
            return Err(VmError::Stop {
                vm: vm.into(),
                pid,
                waited: timeout + Duration::from_secs(10),
            });
        }
    }
    cleanup(paths);
    Ok(true)
}

fn cleanup(paths: &VmPaths) {
    let _ = remove_if_exists(&paths.pid);
    let _ = remove_if_exists(&paths.control);
}

fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_vmm(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}
