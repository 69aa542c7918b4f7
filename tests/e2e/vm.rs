//! Helpers for tests that boot the test guest: building it, running `vmctl vmm run`
//! (optionally inside a network namespace, several at once), detached VMMs and their
//! control socket. Every process a helper starts is killed by pid when its guard drops,
//! also when the test fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{self, vmctl};

/// How long any one VM may take here (the guest needs ~30 ms; CI may be slow).
pub const VM_TIMEOUT: Duration = Duration::from_secs(60);

/// The test guest's ELF, built once per test run.
pub fn guest() -> &'static Path {
    static GUEST: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = GUEST.get_or_init(|| {
        let out = Command::new(support::repo_root().join("tests/guest/build"))
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run tests/guest/build: {e}"))?;
        if !out.status.success() {
            return Err(format!("tests/guest/build failed: {}", out.status));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    match built {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// The test guest as a bzImage (tests/guest/build writes it next to the ELF).
pub fn guest_bzimage() -> PathBuf {
    let mut p = guest().as_os_str().to_owned();
    p.push(".bzImage");
    PathBuf::from(p)
}

/// Whether a test that boots guests must skip (no root or /dev/kvm); fails under CI.
pub fn skip() -> bool {
    support::skip_unless(
        support::is_root() && support::has_kvm(),
        "root and /dev/kvm",
    )
}

/// Kills a process by pid (SIGKILL) when dropped, unless it already ended.
pub struct KillOnDrop {
    pub pid: i32,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.pid > 0 && alive(self.pid) {
            // SAFETY: kill has no memory-safety preconditions; the pid is one this test
            // started (the VMM it detached, or a child it spawned).
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        if self.pid > 0 {
            remove_vmm_cgroups(self.pid);
        }
    }
}

/// Removes the cgroups of the VMM whose supervisor is `pid` (a foreground `vmctl vmm`
/// this test started), which a supervisor killed by SIGKILL leaves behind: waits
/// (at most 5 s) for the kernel to empty them (the VMM dies with its supervisor).
pub fn remove_vmm_cgroups(pid: i32) {
    let name = format!("vmctl-vmm-{pid}");
    let deadline = Instant::now() + Duration::from_secs(5);
    for root in [
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup",
    ] {
        let dir = std::path::Path::new(root).join(&name);
        while dir.exists()
            && std::fs::remove_dir(&dir).is_err_and(|e| e.raw_os_error() == Some(libc::EBUSY))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

pub fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0); it has ended as far as the tests care. But the
    // leader of a killed multi-threaded process (a VMM) is a zombie while its other
    // threads still exit, holding the open files (and locks) they share: the process
    // has ended only when none of its threads is still running.
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        !stat.is_empty() && !stat.contains(") Z ") && !stat.contains(") X ")
    })
}

/// Waits (at most 5 s) until `path` no longer exists; whether it went.
pub fn wait_removed(path: &std::path::Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while path.exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// What a foreground run printed and how it ended.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A `vmctl vmm run` in progress; killed (by pid) if dropped before it ended.
pub struct Running {
    child: Child,
    _guard: KillOnDrop,
    _dir: tempfile::TempDir,
    out_path: PathBuf,
    err_path: PathBuf,
    what: String,
}

impl Running {
    /// Starts `vmctl vmm run ARGS`, inside network namespace `netns` when given (through
    /// `ip netns exec`, which execs vmctl in the same process).
    pub fn start(netns: Option<&str>, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns])
                    .arg(env!("CARGO_BIN_EXE_vmctl"));
                c
            }
            None => vmctl(),
        };
        let child = cmd
            .args(["vmm", "run"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap();
        Self {
            _guard: KillOnDrop {
                pid: child.id() as i32,
            },
            child,
            _dir: dir,
            out_path,
            err_path,
            what: format!("vmctl vmm run {args:?}"),
        }
    }

    /// Waits (at most [`VM_TIMEOUT`]) for the VMM to end.
    pub fn wait(mut self) -> Run {
        let deadline = Instant::now() + VM_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{} did not end", self.what);
            std::thread::sleep(Duration::from_millis(5));
        };
        Run {
            status,
            stdout: std::fs::read_to_string(&self.out_path).unwrap(),
            stderr: std::fs::read_to_string(&self.err_path).unwrap(),
        }
    }
}

/// Runs `vmctl vmm run …` with a timeout; the child is killed if the test panics.
pub fn vmm_run(args: &[&str]) -> Run {
    Running::start(None, args).wait()
}

pub fn assert_line(out: &str, line: &str) {
    assert!(
        out.lines().any(|l| l == line),
        "expected the line `{line}` in:\n{out}"
    );
}

pub fn assert_guest_ok(run: &Run) {
    assert!(
        run.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    assert_line(&run.stdout, "testguest: ok");
    assert!(!run.stdout.contains("FAIL"), "{}", run.stdout);
}

/// A detached VMM of the test guest, in a temp dir.
pub struct Detached {
    pub dir: tempfile::TempDir,
    pub guard: KillOnDrop,
}

impl Detached {
    pub fn start(cpus: u32, cmdline: &str) -> Self {
        Self::start_with(json!({ "cmdline": cmdline, "cpus": cpus }))
    }

    /// Starts a detached VMM of the test guest with `fields` of the spec (the kernel,
    /// memory, console log, control socket and pid file are filled in).
    pub fn start_with(fields: Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = json!({
            "kernel": guest(),
            "memory": "128MiB",
            "console_log": dir.path().join("console.log"),
            "control_socket": dir.path().join("control.sock"),
            "pid_file": dir.path().join("vmm.pid"),
        });
        if let (Some(spec), Some(fields)) = (spec.as_object_mut(), fields.as_object()) {
            spec.extend(fields.clone());
        }
        let spec_path = dir.path().join("spec.json");
        std::fs::write(&spec_path, spec.to_string()).unwrap();
        let out = vmctl()
            .args(["vmm", "--spec"])
            .arg(&spec_path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        // The VMM is detached: `vmctl vmm --spec` prints its pid (also in the pid file),
        // and the guard kills it.
        let pid: i32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let me = Self {
            dir,
            guard: KillOnDrop { pid },
        };
        assert!(
            out.status.success(),
            "vmctl vmm --spec failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(pid > 0, "no pid printed");
        me
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What the guest printed so far, whole lines only.
    pub fn console(&self) -> String {
        crate::lab::whole_lines(
            std::fs::read_to_string(self.path("console.log")).unwrap_or_default(),
        )
    }

    pub fn wait_console(&self, line: &str) {
        let deadline = Instant::now() + VM_TIMEOUT;
        while !self.console().lines().any(|l| l == line) {
            assert!(
                Instant::now() < deadline,
                "no `{line}` in:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn connect(&self) -> Control {
        let s = UnixStream::connect(self.path("control.sock")).unwrap();
        s.set_read_timeout(Some(VM_TIMEOUT)).unwrap();
        Control {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// Waits for the VMM to exit; checks its socket and pid file are removed (by its
    /// supervisor, a moment after the jailed VMM exits: docs/sandbox.md).
    pub fn assert_exits(&self) {
        assert!(
            wait_gone(self.guard.pid, VM_TIMEOUT),
            "the VMM is still running"
        );
        let gone = |f: &str| wait_removed(&self.path(f));
        assert!(gone("control.sock"), "control socket left behind");
        assert!(gone("vmm.pid"), "pid file left behind");
    }
}

pub struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Control {
    /// Sends `req` as a request line of this build's protocol version (its `v` is
    /// added) and returns the reply.
    pub fn request(&mut self, mut req: Value) -> Value {
        req["v"] = vmctl_runtime::vmm::protocol::VERSION.into();
        self.request_raw(req)
    }

    /// Sends `req` as it is.
    pub fn request_raw(&mut self, req: Value) -> Value {
        self.writer
            .write_all(format!("{req}\n").as_bytes())
            .unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
    }
}
