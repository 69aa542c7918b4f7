//! The VMM process of one VM: starting `vmctl vmm --spec` detached (inside the host's
//! netns, in its own process group so a Ctrl-C of the CLI does not reach it), asking it
//! whether it runs, and stopping it (graceful shutdown over the control socket, then
//! SIGKILL).
//!
//! The VM's VMM is the process holding its lock (`vmm.lock`, [`crate::vmm::lock`]), as
//! the kernel reports it: never "whatever pid the pid file names". A signal only ever
//! goes to that holder, pinned by a pidfd. A VM dir without a lock file (a VMM started
//! by a release before the lock) falls back to a process whose command line is exactly
//! `… vmm --spec <this VM's vmm.json>`.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{VmError, VmHost, VmPaths};
use crate::host::fsutil::remove_if_exists;
use crate::vmm::entry::LAUNCHER_ERROR;
use crate::vmm::jail::supervise::SUPERVISOR_NAME;
use crate::vmm::lifecycle::RunState;
use crate::vmm::lock;
use crate::vmm::process::start_timeout;
use crate::vmm::protocol::{legacy, read_reply, Reply, Request};

/// How long a status request may take before the VMM counts as not answering.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a VM's process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A process holds its lock, and the VMM did not say it stopped.
    Running(u32),
    /// No process.
    Gone,
}

/// The pid of the VM's VMM: the holder of its lock; without a lock file, the pid
/// file's process when its command line is this VM's `vmm --spec` (see the module).
pub fn vmm_pid(paths: &VmPaths) -> Option<u32> {
    match std::fs::symlink_metadata(&paths.lock) {
        Ok(_) => lock::holder(&paths.lock).ok().flatten(),
        Err(_) => legacy_vmm_pid(paths),
    }
}

fn legacy_vmm_pid(paths: &VmPaths) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(&paths.pid)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    is_legacy_vmm(pid, paths).then_some(pid)
}

/// Whether `pid` is a live (not zombie) `vmctl vmm --spec <paths.vmm_spec>`.
fn is_legacy_vmm(pid: u32, paths: &VmPaths) -> bool {
    if !crate::host::proc::is_alive(pid) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let spec = paths.vmm_spec.as_os_str().as_encoded_bytes();
    args.windows(3)
        .any(|w| w[0] == b"vmm" && w[1] == b"--spec" && w[2] == spec)
}

/// Sends `signal` to the VM's VMM `pid` if it still is that (see the module).
fn signal_vmm(paths: &VmPaths, pid: u32, signal: libc::c_int) {
    if std::fs::symlink_metadata(&paths.lock).is_ok() {
        lock::signal_holder(&paths.lock, pid, signal);
    } else if is_legacy_vmm(pid, paths) {
        // SAFETY: kill has no memory-safety preconditions; `pid` was just checked to
        // be this VM's `vmctl vmm --spec`.
        unsafe { libc::kill(pid as i32, signal) };
    }
}

/// Asks the VM whether it runs: its pid, then its control socket.
pub fn probe(paths: &VmPaths) -> Probe {
    probe_all(&[paths])[0]
}

/// The verdict on a VMM that is alive, from its status reply (if one came).
fn verdict(pid: u32, reply: Option<&[u8]>) -> Probe {
    match reply.and_then(read_reply).and_then(|r| r.state()) {
        // A VMM that says it stopped is on its way out.
        Some(RunState::Stopped) => Probe::Gone,
        // Running or paused; or alive but not answering, which is still a process
        // holding the VM's files (starting a second one would fight it).
        _ => Probe::Running(pid),
    }
}

/// Asks many VMs at once, from this thread: every status request is sent, then the
/// replies are collected with `poll`, so the VMMs' answers overlap (on a loaded host each
/// takes tens of milliseconds to be scheduled) without a thread per VM.
pub fn probe_all(paths: &[&VmPaths]) -> Vec<Probe> {
    struct Pending {
        index: usize,
        pid: u32,
        stream: UnixStream,
        reply: Vec<u8>,
    }
    let mut out = vec![Probe::Gone; paths.len()];
    let mut pending = Vec::new();
    for (index, p) in paths.iter().enumerate() {
        let Some(pid) = vmm_pid(p) else { continue };
        out[index] = Probe::Running(pid);
        let Ok(mut stream) = UnixStream::connect(&p.control) else {
            continue;
        };
        if stream.write_all(&Request::Status.to_line()).is_err()
            || stream.set_nonblocking(true).is_err()
        {
            continue;
        }
        pending.push(Pending {
            index,
            pid,
            stream,
            reply: Vec::new(),
        });
    }
    let deadline = Instant::now() + PROBE_TIMEOUT;
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fds: Vec<libc::pollfd> = pending
            .iter()
            .map(|p| libc::pollfd {
                fd: p.stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let timeout = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        let mut finished = Vec::new();
        for (slot, fd) in fds.iter().enumerate() {
            if fd.revents == 0 {
                continue;
            }
            let p = &mut pending[slot];
            let mut buf = [0u8; 4096];
            let done = loop {
                match std::io::Read::read(&mut p.stream, &mut buf) {
                    Ok(0) => break true,
                    Ok(n) => {
                        p.reply.extend_from_slice(&buf[..n]);
                        if p.reply.contains(&b'\n') {
                            break true;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            if done {
                finished.push(slot);
            }
        }
        for slot in finished.into_iter().rev() {
            let p = pending.swap_remove(slot);
            let line = p.reply.split(|&b| b == b'\n').next().unwrap_or_default();
            out[p.index] = verdict(p.pid, Some(line));
        }
    }
    out
}

/// Sends `request` (a line of [`Request::to_line`] or [`legacy`]) on the control
/// socket; the reply, if one came that this build can read.
fn request(paths: &VmPaths, request: &[u8], timeout: Duration) -> Option<Reply> {
    let mut stream = UnixStream::connect(&paths.control).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream.write_all(request).ok()?;
    let mut reply = Vec::new();
    BufReader::new(stream).read_until(b'\n', &mut reply).ok()?;
    read_reply(&reply)
}

/// Sends `request` with `files` attached (`SCM_RIGHTS`) and reads the reply, waiting up
/// to `timeout`. `None` when no VMM serves the control socket or it did not answer.
pub fn request_with_files(
    paths: &VmPaths,
    request: &Request,
    files: &[&File],
    timeout: Duration,
) -> Option<Reply> {
    use vmm_sys_util::sock_ctrl_msg::ScmSocket;
    let stream = UnixStream::connect(&paths.control).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let line = request.to_line();
    let fds: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
    let sent = stream.send_with_fds(&[&line[..]], &fds).ok()?;
    if sent < line.len() {
        (&stream).write_all(&line[sent..]).ok()?;
    }
    let mut reply = Vec::new();
    BufReader::new(stream).read_until(b'\n', &mut reply).ok()?;
    read_reply(&reply)
}

/// Sends `request` (no files) and reads the reply; see [`request_with_files`].
pub fn ask(paths: &VmPaths, request: &Request, timeout: Duration) -> Option<Reply> {
    self::request(paths, &request.to_line(), timeout)
}

/// Asks the VMM to shut the VM down (the guest gets `timeout`); the VMM answers once
/// the guest is off or it killed it. A VMM of a build before the versioned protocol
/// refuses the request in its own words: it is asked again in its own protocol.
fn request_shutdown(paths: &VmPaths, timeout: Duration) -> Option<Reply> {
    let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let wait = timeout + Duration::from_secs(5);
    let shutdown = Request::Shutdown {
        timeout_ms: Some(millis),
    };
    match request(paths, &shutdown.to_line(), wait)? {
        Reply::Legacy(r) if !r.ok => request(paths, &legacy::shutdown_line(millis), wait),
        reply => Some(reply),
    }
}

/// Starts the VMM of the spec at `paths.vmm_spec`; returns its pid once its control
/// socket serves. The launcher kills a VMM that has not started within
/// [`start_timeout`]; a launcher that itself has not answered a few seconds later is
/// killed here (it is this process's child), with the VMM if one holds the VM's lock.
pub fn spawn(host: &VmHost<'_>, vm: &str, paths: &VmPaths) -> Result<u32, VmError> {
    spawn_with(host, vm, paths, None)
}

/// Starts the VMM of the spec at `paths.vmm_spec` restoring the snapshot in
/// `snapshot` (`vmctl vmm --spec FILE --restore DIR`), as [`spawn`] does otherwise.
pub fn spawn_restored(
    host: &VmHost<'_>,
    vm: &str,
    paths: &VmPaths,
    snapshot: &Path,
) -> Result<u32, VmError> {
    spawn_with(host, vm, paths, Some(snapshot))
}

fn spawn_with(
    host: &VmHost<'_>,
    vm: &str,
    paths: &VmPaths,
    restore: Option<&Path>,
) -> Result<u32, VmError> {
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
        .args(
            restore
                .map(|dir| [OsStr::new("--restore"), dir.as_os_str()])
                .into_iter()
                .flatten(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // `netns` lives until the launcher has been spawned.
    if let Some(ns) = &netns {
        crate::host::net::netns::enter_in_child(&mut command, ns);
    }
    let child = command.spawn().map_err(|source| VmError::Spawn {
        vm: vm.into(),
        vmctl: host.vmctl.into(),
        source,
    })?;
    drop(netns);
    let output = wait_launcher(child, paths, start_timeout(), LAUNCHER_GRACE)
        .map_err(|e| e.into_vm_error(vm, host.vmctl, paths))?;
    finish_spawn(vm, paths, &output)
}

/// Why waiting for the launcher failed.
pub(super) enum LaunchFailure {
    Wait(std::io::Error),
    /// It was killed past its deadline; the start-up timeout it had.
    TimedOut(Duration),
}

impl LaunchFailure {
    pub(super) fn into_vm_error(
        self,
        vm: &str,
        vmctl: &std::path::Path,
        paths: &VmPaths,
    ) -> VmError {
        match self {
            LaunchFailure::Wait(source) => VmError::Spawn {
                vm: vm.into(),
                vmctl: vmctl.into(),
                source,
            },
            LaunchFailure::TimedOut(timeout) => start_error(
                vm,
                paths,
                format!("vmctl vmm did not start the VM within {timeout:?}, so it was killed"),
            ),
        }
    }
}

/// Waits for the launcher `child` (which kills its VMM past `timeout` itself); one
/// still running `grace` later is killed, and so is the VM's VMM if one holds its lock.
pub(super) fn wait_launcher(
    mut child: std::process::Child,
    paths: &VmPaths,
    timeout: Duration,
    grace: Duration,
) -> Result<std::process::Output, LaunchFailure> {
    let deadline = Instant::now() + timeout + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().map_err(LaunchFailure::Wait),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                if let Some(pid) = vmm_pid(paths) {
                    signal_vmm(paths, pid, libc::SIGKILL);
                }
                return Err(LaunchFailure::TimedOut(timeout));
            }
            Err(e) => return Err(LaunchFailure::Wait(e)),
        }
    }
}

/// Extra time the launcher gets past the start-up timeout to kill its VMM and answer.
const LAUNCHER_GRACE: Duration = Duration::from_secs(5);

fn finish_spawn(vm: &str, paths: &VmPaths, output: &std::process::Output) -> Result<u32, VmError> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let pid = stdout.trim().parse::<u32>().ok();
    if let (true, Some(pid)) = (output.status.success(), pid) {
        return Ok(pid);
    }
    Err(start_error(
        vm,
        paths,
        failure_reason(&stdout, &output.stderr),
    ))
}

/// The VMM's own reason: its `error: …` line on stdout, else the first line of its
/// diagnostic on stderr that is not just the diagnostic's code.
pub(super) fn failure_reason(stdout: &str, stderr: &[u8]) -> String {
    if let Some(why) = stdout.lines().find_map(|l| l.strip_prefix(LAUNCHER_ERROR)) {
        return why.trim().to_owned();
    }
    let stderr = String::from_utf8_lossy(stderr);
    stderr
        .lines()
        .map(|l| l.trim().trim_start_matches(['×', '!', ' ']).trim())
        .filter(|l| !l.is_empty())
        .find(|l| !(l.starts_with("Error:") && l.split_whitespace().count() <= 2))
        .unwrap_or("the VMM printed no reason")
        .to_owned()
}

/// The failed start of `vm` for `why`, pointing at its console log — which exists:
/// the reason is appended to it (creating it) when the VMM could not write it there.
fn start_error(vm: &str, paths: &VmPaths, why: String) -> VmError {
    let has_it = std::fs::read(&paths.console)
        .map(|log| {
            let tail = &log[log.len().saturating_sub(64 * 1024)..];
            String::from_utf8_lossy(tail).contains(&why)
        })
        .unwrap_or(false);
    if !has_it {
        if let Ok(mut log) = crate::vmm::process::open_console_log(&paths.console) {
            let _ = writeln!(log, "vmctl: VM {vm} did not start: {why}");
        }
    }
    VmError::Start {
        vm: vm.into(),
        why: format!("{why} (log: {})", paths.console.display()),
    }
}

/// Stops the VM's process: graceful shutdown (the guest gets `timeout`), then SIGKILL.
/// Removes a dead VMM's leftover pid file and socket. Returns whether a process ran.
pub fn stop(vm: &str, paths: &VmPaths, timeout: Duration) -> Result<bool, VmError> {
    let Some(pid) = vmm_pid(paths) else {
        cleanup(paths);
        return Ok(false);
    };
    // A jailed VMM's supervisor removes its sockets, pid file and cgroup once it ends,
    // taking the VM's lock to do so: the stop is over when that is done too, so that
    // nothing of the VM is left behind a destroy and a restart never meets the lock
    // held by the old VMM's supervisor.
    let supervisor = supervisor_of(pid);
    // Whatever the answer, the VMM is waited for and killed if it is still there.
    let _ = request_shutdown(paths, timeout);
    if !wait_gone(paths, pid, Duration::from_secs(5)) {
        signal_vmm(paths, pid, libc::SIGKILL);
        if !wait_gone(paths, pid, Duration::from_secs(5)) {
            return Err(VmError::Stop {
                vm: vm.into(),
                pid,
                waited: timeout + Duration::from_secs(10),
            });
        }
    }
    if let Some(supervisor) = &supervisor {
        // It only removes files and a cgroup; past this wait the runtime's own clean-up
        // below is what remains, as for an unjailed VMM.
        wait_exit(supervisor, SUPERVISOR_GRACE);
    }
    cleanup(paths);
    Ok(true)
}

/// How long a stop waits for a jailed VMM's supervisor to finish once the VMM ended.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(5);

/// The supervisor of the jailed VMM `pid` (its parent, named `vmm-supervisor`: see
/// [`crate::vmm::jail::supervise`]), pinned by a pidfd before its name is checked;
/// `None` for an unjailed VMM. It is only waited for, never signalled.
fn supervisor_of(pid: u32) -> Option<OwnedFd> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ppid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()?;
    let pidfd = lock::pidfd_open(ppid)?;
    let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).ok()?;
    let name = SUPERVISOR_NAME.to_str().ok()?;
    (comm.trim_end() == name).then_some(pidfd)
}

/// Waits at most `timeout` for the process of `pidfd` to end; whether it did.
pub(crate) fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: poll on one live pollfd; a pidfd is readable once its process ended.
        let ready = unsafe { libc::poll(&mut fd, 1, millis) };
        match ready {
            1.. => return true,
            0 => return false,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return false,
        }
    }
}

fn cleanup(paths: &VmPaths) {
    let _ = remove_if_exists(&paths.pid);
    let _ = remove_if_exists(&paths.control);
}

/// Waits until `pid` is no longer the VM's VMM.
fn wait_gone(paths: &VmPaths, pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while vmm_pid(paths) == Some(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::protocol::Response;
    use std::os::unix::net::UnixListener;

    /// The control socket of a VMM of the build before the versioned protocol, as its
    /// server read requests (copied from it): answers every line of every client, and
    /// returns the requests it carried out.
    fn legacy_vmm(listener: UnixListener, clients: usize) -> std::thread::JoinHandle<Vec<String>> {
        #[derive(serde::Deserialize)]
        #[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
        #[allow(dead_code)]
        enum OldRequest {
            Status,
            Pause,
            Resume,
            Shutdown {
                #[serde(default)]
                timeout_ms: Option<u64>,
            },
            Kill,
        }
        std::thread::spawn(move || {
            let mut done = Vec::new();
            // Serves up to `clients` clients, or until none came for a while.
            listener.set_nonblocking(true).expect("non-blocking");
            let mut waited = Instant::now();
            let mut served = 0;
            while served < clients && waited.elapsed() < Duration::from_secs(3) {
                let stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(e) => panic!("accept: {e}"),
                };
                waited = Instant::now();
                served += 1;
                stream.set_nonblocking(false).expect("blocking");
                let mut line = String::new();
                BufReader::new(&stream)
                    .read_line(&mut line)
                    .expect("a line");
                let reply = match serde_json::from_str::<OldRequest>(line.trim()) {
                    Ok(OldRequest::Shutdown { timeout_ms }) => {
                        done.push(format!("shutdown {timeout_ms:?}"));
                        serde_json::json!({"ok": true, "state": "stopped", "graceful": true})
                    }
                    Ok(OldRequest::Status) => {
                        done.push("status".into());
                        serde_json::json!({"ok": true, "state": "running", "vcpus": 1})
                    }
                    Ok(_) => serde_json::json!({"ok": true, "state": "running"}),
                    Err(e) => {
                        serde_json::json!({"ok": false, "error": format!("invalid request: {e}")})
                    }
                };
                (&stream)
                    .write_all(format!("{reply}\n").as_bytes())
                    .expect("reply written");
            }
            done
        })
    }

    #[test]
    fn a_vmm_of_the_unversioned_build_is_shut_down_in_its_own_protocol() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let paths = VmPaths::in_dir(dir.path().to_path_buf());
        let vmm = legacy_vmm(UnixListener::bind(&paths.control).expect("bound"), 2);
        let reply = request_shutdown(&paths, Duration::from_millis(1500));
        assert_eq!(vmm.join().expect("served"), ["shutdown Some(1500)"]);
        assert_eq!(
            reply.and_then(|r| r.state()),
            Some(RunState::Stopped),
            "the legacy answer is read"
        );
    }

    #[test]
    fn a_vmm_of_the_unversioned_build_is_probed_by_its_status() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let paths = VmPaths::in_dir(dir.path().to_path_buf());
        let vmm = legacy_vmm(UnixListener::bind(&paths.control).expect("bound"), 1);
        let reply = request(&paths, &Request::Status.to_line(), Duration::from_secs(5));
        assert_eq!(vmm.join().expect("served"), ["status"]);
        assert_eq!(reply.and_then(|r| r.state()), Some(RunState::Running));
        let stopped = br#"{"ok":true,"state":"stopped","vcpus":1}"#;
        assert_eq!(verdict(7, Some(stopped)), Probe::Gone);
        assert_eq!(
            verdict(7, Some(b"{\"ok\":true,\"state\":\"paused\"}")),
            Probe::Running(7)
        );
    }

    #[test]
    fn the_verdict_reads_this_builds_replies() {
        let line = |r: Response| r.to_line();
        let stopped = line(Response::State {
            state: RunState::Stopped,
        });
        assert_eq!(verdict(7, Some(&stopped)), Probe::Gone);
        let paused = line(Response::State {
            state: RunState::Paused,
        });
        assert_eq!(verdict(7, Some(&paused)), Probe::Running(7));
        assert_eq!(verdict(7, Some(b"garbage")), Probe::Running(7));
        assert_eq!(verdict(7, None), Probe::Running(7));
    }

    #[test]
    fn only_a_vmm_supervisor_is_waited_for_and_the_wait_ends_with_the_process() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep runs");
        // Its parent is this test, not a supervisor: nothing to wait for.
        assert!(supervisor_of(child.id()).is_none());
        let pidfd = lock::pidfd_open(child.id()).expect("a pidfd");
        assert!(
            !wait_exit(&pidfd, Duration::from_millis(50)),
            "still running"
        );
        child.kill().expect("killed");
        let _ = child.wait();
        assert!(wait_exit(&pidfd, Duration::from_secs(5)), "ended");
    }
}
