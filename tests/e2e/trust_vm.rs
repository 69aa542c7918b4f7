//! A VM's VMM can be trusted (issue 9): it is identified by the lock it holds, never by
//! whatever a pid file names; there is one per VM and one writer per disk; its start
//! is bounded in time and a failed start says why; its files are private whatever the
//! umask; idle clients cannot exhaust it. Each test applies a one-VM config (the test
//! guest, one volume, no network) in a temp dir; every process a test starts is killed
//! by pid when it ends, also when it fails.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vmctl_runtime::vmm::lock;

use crate::lab::{processes_naming, text, without_supervisors};
use crate::support::vmctl;
use crate::vm::{guest, skip, wait_gone, KillOnDrop};

const VM: &str = "vm-1";

/// A temp dir with a one-VM config (`trust.kdl`), its state dir and its pool.
struct Trust {
    dir: tempfile::TempDir,
}

impl Trust {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "project \"trust\"\n\
             host \"local\" {{\n    state-dir \"{state}\"\n    cpus 2\n    memory \"1GiB\"\n}}\n\
             pool \"p\" host=\"local\" type=\"dir\" {{\n    path \"{pool}\"\n}}\n\
             volume \"root\" pool=\"p\" size=\"8MiB\"\n\
             vm \"{VM}\" host=\"local\" {{\n    cpus 1\n    memory \"64MiB\"\n    \
             kernel \"{kernel}\"\n    cmdline \"console=ttyS0 testguest.halt\"\n    \
             disk \"root\"\n}}\n",
            state = dir.path().join("state").display(),
            pool = dir.path().join("pool").display(),
            kernel = guest().display(),
        );
        std::fs::write(dir.path().join("trust.kdl"), config).unwrap();
        Self { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("trust.kdl")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn vm_dir(&self) -> PathBuf {
        self.state_dir().join("trust/vms").join(VM)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.vm_dir().join(name)
    }

    /// The volume file (the only file in the pool that is not vmctl's marker).
    fn volume(&self) -> PathBuf {
        std::fs::read_dir(self.dir.path().join("pool"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "raw"))
            .expect("a volume file in the pool")
    }

    /// `vmctl ARGS… trust.kdl`, stdin closed.
    fn vmctl(&self, args: &[&str]) -> Output {
        vmctl()
            .args(["--color", "never"])
            .args(args)
            .arg(self.config())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn apply(&self) -> Output {
        self.vmctl(&["apply", "--auto-approve", "--stop-timeout", "2s"])
    }

    fn apply_ok(&self) -> String {
        let out = self.apply();
        assert_eq!(out.status.code(), Some(0), "apply failed:\n{}", text(&out));
        text(&out)
    }

    /// The VM's VMM as the kernel names it: the holder of its lock.
    fn vmm(&self) -> Option<i32> {
        lock::holder(&self.path("vmm.lock"))
            .unwrap()
            .map(|p| p as i32)
    }

    /// SIGKILLs the VM's VMM `pid` (this test started it) and waits until it is gone
    /// and its lock is free: the thread-group leader of a killed VMM shows as a zombie
    /// while its other threads, which share its open files and so its lock, still exit.
    fn kill_vmm(&self, pid: i32) {
        // SAFETY: kill has no memory-safety preconditions; the VMM this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        assert!(wait_gone(pid, Duration::from_secs(10)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.vmm().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(self.vmm(), None, "the killed VMM still holds the VM's lock");
    }

    /// `vmctl status --json`: the VM's state.
    fn vm_state(&self) -> String {
        let out = self.vmctl(&["status", "--json"]);
        let status: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        status["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "vm")
            .map(|r| r["state"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    }

    /// Processes whose command line mentions this test's state dir, but their
    /// supervisors: its VMMs.
    fn vmms(&self) -> Vec<i32> {
        without_supervisors(processes_naming(&self.state_dir().display().to_string()))
    }

    /// Processes that have `file` open for writing.
    fn writers_of(file: &Path) -> Vec<i32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            for fd in std::fs::read_dir(entry.path().join("fd"))
                .into_iter()
                .flatten()
                .flatten()
            {
                if std::fs::read_link(fd.path()).is_ok_and(|t| t == file) {
                    let info = entry.path().join("fdinfo").join(fd.file_name());
                    let info = std::fs::read_to_string(info).unwrap_or_default();
                    let flags = info
                        .lines()
                        .find_map(|l| l.strip_prefix("flags:"))
                        .and_then(|f| i32::from_str_radix(f.trim(), 8).ok())
                        .unwrap_or(0);
                    if flags & libc::O_ACCMODE != libc::O_RDONLY {
                        pids.push(pid);
                    }
                }
            }
        }
        pids.sort();
        pids.dedup();
        pids
    }
}

impl Drop for Trust {
    fn drop(&mut self) {
        for pid in self.vmms() {
            // SAFETY: kill has no memory-safety preconditions; these are the VMMs this
            // test's applies started (their command line names its state dir).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            wait_gone(pid, Duration::from_secs(10));
        }
    }
}

/// A live process that merely has the argv word `vmm` (`vmm 600`: a `sleep`).
fn decoy() -> (std::process::Child, KillOnDrop) {
    let child = Command::new("sleep")
        .arg0("vmm")
        .arg("600")
        .spawn()
        .unwrap();
    let guard = KillOnDrop {
        pid: child.id() as i32,
    };
    (child, guard)
}

/// Issue 9 item 1: a crashed VM whose pid file names another live process (with an
/// argv word `vmm`) is crashed, is started again, and is destroyed; that process is
/// never signalled.
#[test]
fn a_pid_file_naming_another_process_is_never_signalled() {
    if skip() {
        return;
    }
    let t = Trust::new();
    t.apply_ok();
    let first = t.vmm().expect("the VM's VMM holds its lock");
    t.kill_vmm(first);
    let (mut other, _guard) = decoy();
    std::fs::write(t.path("vmm.pid"), format!("{}\n", other.id())).unwrap();

    assert_eq!(t.vm_state(), "crashed");
    let out = t.vmctl(&["plan", "--json"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let starts_it = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["address"] == format!("vm.{VM}") && c["action"] != "no-op");
    assert!(starts_it, "the plan does not start the crashed VM: {plan}");

    t.apply_ok();
    let second = t.vmm().expect("apply started the VM");
    assert_ne!(second, other.id() as i32);
    assert_eq!(t.vm_state(), "running");
    let out = t.vmctl(&["destroy", "--auto-approve", "--stop-timeout", "2s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(wait_gone(second, Duration::from_secs(10)));
    assert!(
        other.try_wait().unwrap().is_none(),
        "the process the pid file named was signalled"
    );
}

/// Issue 9 item 2: with its pid file and sockets deleted, a running VM is still found
/// (its lock), so apply starts no second VMM; a second VMM for it, or one for another
/// VM with the same disk, refuses to start; the disk is never open for writing twice.
#[test]
fn one_vmm_per_vm_and_one_writer_per_disk() {
    if skip() {
        return;
    }
    let t = Trust::new();
    t.apply_ok();
    let vmm = t.vmm().expect("the VM's VMM holds its lock");
    for f in ["vmm.pid", "control.sock", "console.sock"] {
        std::fs::remove_file(t.path(f)).unwrap();
    }
    assert_eq!(t.vm_state(), "running");
    t.apply_ok();
    assert_eq!(t.vmms(), [vmm]);
    let volume = t.volume();
    assert_eq!(Trust::writers_of(&volume), [vmm]);

    // A second VMM of the same VM.
    let out = vmctl()
        .args(["vmm", "--spec"])
        .arg(t.path("vmm.json"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("another VMM (pid {vmm}) already runs this VM")),
        "{}",
        text(&out)
    );
    // A VMM of another VM (its own files) with the same disk.
    let other = t.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let mut spec: Value =
        serde_json::from_slice(&std::fs::read(t.path("vmm.json")).unwrap()).unwrap();
    for (key, file) in [
        ("console_log", "console.log"),
        ("control_socket", "control.sock"),
        ("pid_file", "vmm.pid"),
        ("lock_file", "vmm.lock"),
    ] {
        spec[key] = other.join(file).display().to_string().into();
    }
    std::fs::write(other.join("vmm.json"), spec.to_string()).unwrap();
    let out = vmctl()
        .args(["vmm", "--spec"])
        .arg(other.join("vmm.json"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("is in use by another VMM or process"),
        "{}",
        text(&out)
    );
    assert_eq!(t.vmms(), [vmm]);
    assert_eq!(Trust::writers_of(&volume), [vmm]);
    assert_eq!(lock::holder(&other.join("vmm.lock")).unwrap(), None);
}

/// Issue 9 item 15: a VMM that cannot start (its disk is locked by another process)
/// fails the step with the VMM's own message, pointing at a log that exists and says
/// it too.
#[test]
fn a_failed_start_says_why_and_points_at_its_log() {
    if skip() {
        return;
    }
    let t = Trust::new();
    t.apply_ok();
    let vmm = t.vmm().unwrap();
    t.kill_vmm(vmm);
    let volume = std::fs::File::open(t.volume()).unwrap();
    // SAFETY: flock on a valid fd this test owns.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&volume), libc::LOCK_EX) },
        0
    );
    let out = t.apply();
    let shown = text(&out);
    assert_ne!(out.status.code(), Some(0), "{shown}");
    let why = format!(
        "disk {} is in use by another VMM or process",
        t.volume().display()
    );
    assert!(shown.contains(&why), "{shown}");
    let log = t.path("console.log");
    assert!(
        shown.contains(&format!("log: {}", log.display())),
        "{shown}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains(&why), "{logged}");
    assert_eq!(t.vmms(), Vec::<i32>::new());
    drop(volume);
    t.apply_ok();
    assert!(t.vmm().is_some());
}

/// Issue 9 item 6: a VMM that has not started within the start-up timeout (here 1 ms,
/// `VMCTL_VMM_START_TIMEOUT_MS`; 10 s by default) is killed and the step says so.
#[test]
fn a_vmm_past_its_start_timeout_is_killed() {
    if skip() {
        return;
    }
    let t = Trust::new();
    let started = Instant::now();
    // A VMM that reports ready before the launcher looks at its 1 ms deadline (a
    // launcher descheduled on a loaded host) is rightly taken as started: stop it and
    // try again, a few times.
    let mut tries = 0;
    let (out, shown) = loop {
        let out = vmctl()
            .args(["--color", "never", "apply", "--auto-approve"])
            .arg(t.config())
            .env("VMCTL_VMM_START_TIMEOUT_MS", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let shown = text(&out);
        tries += 1;
        if out.status.code() == Some(0) && tries < 5 {
            let stop = t.vmctl(&["destroy", "--auto-approve"]);
            assert_eq!(stop.status.code(), Some(0), "{}", text(&stop));
            continue;
        }
        break (out, shown);
    };
    assert_ne!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("did not start within 1ms"), "{shown}");
    assert!(shown.contains("killed"), "{shown}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t.vmms().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(t.vmms(), Vec::<i32>::new());
    assert_eq!(t.vmm(), None);
    t.apply_ok();
    assert!(t.vmm().is_some());
}

/// What an unprivileged user (nobody) gets trying `what` on `path`: `Ok(())` or the
/// errno. Done in a forked child that drops to uid/gid 65534 and calls only
/// async-signal-safe functions.
fn as_nobody(path: &Path, connect: bool) -> Result<(), i32> {
    let cpath = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: sockaddr_un is plain data; zeroed is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = cpath.as_bytes();
    assert!(bytes.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: the child only calls async-signal-safe functions on memory prepared
    // before the fork, then _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                libc::_exit(255);
            }
            let rc = if connect {
                let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                libc::connect(
                    s,
                    (&addr as *const libc::sockaddr_un).cast(),
                    std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                )
            } else {
                libc::open(cpath.as_ptr(), libc::O_RDONLY)
            };
            if rc < 0 {
                libc::_exit(*libc::__errno_location() & 0x7f);
            }
            libc::_exit(0);
        }
    }
    assert!(pid > 0);
    let mut status = 0;
    // SAFETY: waiting for the child just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status));
    match libc::WEXITSTATUS(status) {
        0 => Ok(()),
        255 => panic!("cannot become nobody"),
        errno => Err(errno),
    }
}

/// Issue 9 item 12: applied under `umask 000`, the VM's dir is 0700, its records, pid
/// and lock files and sockets 0600, its console log 0640; with every dir opened up to
/// 0755, nobody still cannot connect to the sockets or read the log.
#[test]
fn vm_files_are_private_whatever_the_umask() {
    if skip() {
        return;
    }
    let t = Trust::new();
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_vmctl"))
        .args(["--color", "never", "apply", "--auto-approve"])
        .arg(t.config())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&t.vm_dir()), 0o700);
    assert_eq!(mode(t.vm_dir().parent().unwrap()), 0o700);
    // The state dir vmctl made, the project's dir in it and the host lock.
    assert_eq!(mode(&t.state_dir()), 0o700);
    assert_eq!(mode(&t.state_dir().join("trust")), 0o700);
    assert_eq!(mode(&t.state_dir().join("trust/lock")), 0o600);
    for f in [
        "spec.json",
        "vmm.json",
        "vmm.pid",
        "vmm.lock",
        "control.sock",
        "console.sock",
    ] {
        assert_eq!(mode(&t.path(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&t.path("console.log")), 0o640);

    // Open every dir on the way, so only the files' own modes stand in the way.
    let mut dir = t.vm_dir();
    loop {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        if dir == t.dir.path() {
            break;
        }
        dir = dir.parent().unwrap().to_path_buf();
    }
    assert_eq!(as_nobody(&t.path("control.sock"), true), Err(libc::EACCES));
    assert_eq!(as_nobody(&t.path("console.sock"), true), Err(libc::EACCES));
    assert_eq!(as_nobody(&t.path("console.log"), false), Err(libc::EACCES));
    // The check itself works: nobody can connect to a socket that allows it.
    std::fs::set_permissions(
        t.path("control.sock"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    assert_eq!(as_nobody(&t.path("control.sock"), true), Ok(()));
}

/// Issue 9 item 14: thousands of idle clients on the control and console sockets
/// neither grow the VMM's threads nor keep `status` from answering.
#[test]
fn idle_clients_cannot_exhaust_the_vmm() {
    if skip() {
        return;
    }
    let t = Trust::new();
    t.apply_ok();
    let vmm = t.vmm().unwrap();
    // The VMM's threads by name (main, signals, vCPUs, virtio, control, console…).
    let threads = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{vmm}/task"))
            .unwrap()
            .flatten()
            .map(|t| std::fs::read_to_string(t.path().join("comm")).unwrap_or_default())
            .map(|c| c.trim().to_owned())
            .collect()
    };
    // Room for the clients' fds in this process.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let room = usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX);
    let per_socket = 2000.min(room.saturating_sub(200) / 2);
    assert!(per_socket >= 500, "only {room} fds");
    let mut clients = Vec::new();
    for sock in ["control.sock", "console.sock"] {
        for _ in 0..per_socket {
            clients.push(UnixStream::connect(t.path(sock)).unwrap());
        }
    }
    let started = Instant::now();
    assert_eq!(t.vm_state(), "running");
    assert!(started.elapsed() < Duration::from_secs(10));
    // A fixed set, whatever the number of clients: no thread per connection.
    let during = threads();
    assert!(
        during.len() <= 10,
        "the VMM has {} threads: {during:?}",
        during.len()
    );
    drop(clients);
    assert_eq!(t.vm_state(), "running");
}
