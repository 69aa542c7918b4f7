//! `vmctl console` end to end: a detached VMM of the test guest in a state dir laid out
//! as the runtime lays it out (`<state-dir>/<project>/vms/<name>/`), a config naming
//! that state dir, project and VM; then `--lines`, `--follow`, attaching in pipe mode
//! (input reaching the guest through its UART: `testguest.echo`), one client at a time,
//! and the errors. Every process a test starts is killed by pid when it ends, also
//! when it fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::vmctl;
use crate::vm::{alive, guest, skip, wait_gone, KillOnDrop, VM_TIMEOUT};

const PROJECT: &str = "e2e";

/// A temp dir with a config (`lab.kdl`) and the state dir of one VM in it.
struct Lab {
    dir: tempfile::TempDir,
    vm: String,
    cmdline: String,
}

impl Lab {
    fn new(vm: &str, cmdline: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let config = format!(
            "project \"{PROJECT}\"\nhost \"local\" {{\n    state-dir \"{}\"\n}}\n\
             vm \"{vm}\" host=\"local\" {{\n    cpus 1\n    memory \"64MiB\"\n    \
             kernel \"{}\"\n    cmdline \"{cmdline}\"\n}}\n",
            state.display(),
            guest().display(),
        );
        std::fs::write(dir.path().join("lab.kdl"), config).unwrap();
        Self {
            dir,
            vm: vm.to_string(),
            cmdline: cmdline.to_string(),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("lab.kdl")
    }

    fn vm_dir(&self) -> PathBuf {
        self.dir
            .path()
            .join("state")
            .join(PROJECT)
            .join("vms")
            .join(&self.vm)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.vm_dir().join(name)
    }

    /// Starts the VM as the runtime does: its spec in its state dir, `vmctl vmm --spec`.
    fn start(&self) -> KillOnDrop {
        std::fs::create_dir_all(self.vm_dir()).unwrap();
        let spec = json!({
            "kernel": guest(),
            "memory": "64MiB",
            "cmdline": self.cmdline,
            "console_log": self.path("console.log"),
            "control_socket": self.path("control.sock"),
            "pid_file": self.path("vmm.pid"),
        });
        std::fs::write(self.path("spec.json"), spec.to_string()).unwrap();
        let out = vmctl()
            .args(["vmm", "--spec"])
            .arg(self.path("spec.json"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let pid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let guard = KillOnDrop { pid };
        assert!(
            out.status.success() && pid > 0,
            "vmctl vmm --spec failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        guard
    }

    fn console_log(&self) -> String {
        std::fs::read_to_string(self.path("console.log")).unwrap_or_default()
    }

    fn wait_log(&self, line: &str) {
        let deadline = Instant::now() + VM_TIMEOUT;
        while !self.console_log().lines().any(|l| l == line) {
            assert!(
                Instant::now() < deadline,
                "no `{line}` in:\n{}",
                self.console_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn console(&self, extra: &[&str]) -> Output {
        self.console_cmd(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn console_cmd(&self, extra: &[&str]) -> std::process::Command {
        let mut c = vmctl();
        c.args(["--color", "never", "console", &self.vm])
            .arg(self.config())
            .args(extra);
        c
    }

    fn status(&self) -> Value {
        let mut s = UnixStream::connect(self.path("control.sock")).unwrap();
        s.set_read_timeout(Some(VM_TIMEOUT)).unwrap();
        s.write_all(&vmctl_runtime::vmm::protocol::Request::Status.to_line())
            .unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    fn wait_attached(&self, attached: bool) {
        let deadline = Instant::now() + VM_TIMEOUT;
        while self.status()["console"]["attached"] != attached {
            assert!(Instant::now() < deadline, "attached never {attached}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A `vmctl console` attached in pipe mode; its stdout lines arrive on `lines`.
struct Attached {
    child: Child,
    guard: KillOnDrop,
    lines: mpsc::Receiver<String>,
}

impl Attached {
    fn start(lab: &Lab) -> Self {
        let mut child = lab
            .console_cmd(&[])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let guard = KillOnDrop {
            pid: child.id() as i32,
        };
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            guard,
            lines,
        }
    }

    fn expect_line(&self, want: &str) {
        let deadline = Instant::now() + VM_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == want => return,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no `{want}` from vmctl console; got {seen:?}"),
            }
        }
    }

    /// Waits for the process to end; its exit code and stderr.
    fn wait(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + VM_TIMEOUT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "vmctl console did not end");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = self.guard.pid;
        (status.code(), err)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn console_lines_follow_and_pipe_mode_attach_reach_the_guest() {
    if skip() {
        return;
    }
    let lab = Lab::new("echo-1", "console=ttyS0 testguest.halt testguest.echo");
    let vmm = lab.start();
    lab.wait_log("testguest: ok");

    // --lines: the end of the log.
    let out = lab.console(&["--lines", "5"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.lines().count() <= 5, "{shown}");
    assert!(shown.lines().any(|l| l == "testguest: ok"), "{shown}");

    // --follow runs until the VMM is gone.
    let follow_out = lab.dir.path().join("follow.out");
    let mut follow = lab
        .console_cmd(&["--follow"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&follow_out).unwrap())
        .spawn()
        .unwrap();
    let follow_guard = KillOnDrop {
        pid: follow.id() as i32,
    };

    // Attached in pipe mode: a line typed reaches the guest's UART, which echoes it.
    let mut a = Attached::start(&lab);
    let mut stdin = a.child.stdin.take().unwrap();
    stdin.write_all(b"hello console\n").unwrap();
    a.expect_line("testguest: echo=hello console");
    let status = lab.status();
    assert_eq!(status["console"]["attached"], true, "{status}");
    assert_eq!(status["console"]["dropped_in"], 0, "{status}");

    // One client at a time.
    let busy = lab.console(&[]);
    assert_eq!(busy.status.code(), Some(1));
    let err = text(&busy.stderr);
    assert!(
        err.contains("is busy") && err.contains("another client"),
        "{err}"
    );

    // Pipe mode: stdin ending does not detach; output keeps coming until Ctrl-C.
    drop(stdin);
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(a.guard.pid), "vmctl console ended when stdin did");
    // SAFETY: kill has no memory-safety preconditions; the pid is this test's child.
    unsafe { libc::kill(a.guard.pid, libc::SIGINT) };
    let (code, err) = a.wait();
    assert_eq!(code, Some(130), "{err}");
    lab.wait_attached(false);

    // A new client, with nothing to type: it stays until the VM stops.
    let b = Attached::start(&lab);
    lab.wait_attached(true);
    let pid: i32 = std::fs::read_to_string(lab.path("vmm.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, vmm.pid);
    // SAFETY: as above; the VMM this test started (its pid file's pid).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(wait_gone(pid, VM_TIMEOUT), "the VMM did not stop");
    let (code, err) = b.wait();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        crate::vm::wait_removed(&lab.path("console.sock")),
        "console socket left behind"
    );

    let deadline = Instant::now() + VM_TIMEOUT;
    let follow_status = loop {
        if let Some(s) = follow.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "--follow did not end with the VM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(follow_guard);
    assert!(follow_status.success());
    let followed = std::fs::read_to_string(&follow_out).unwrap();
    assert!(followed.contains("testguest: ok\n"), "{followed}");
    assert!(
        followed.contains("testguest: echo=hello console\n"),
        "{followed}"
    );

    // Stopped: attaching says so and points at apply and --lines.
    let out = lab.console(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("`echo-1` is not running"), "{err}");
    assert!(
        err.contains("vmctl apply") && err.contains("--lines"),
        "{err}"
    );
}

#[test]
fn console_errors_without_a_vm() {
    let lab = Lab::new("web-1", "console=ttyS0");
    let out = lab.console(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("`web-1` is not running"), "{err}");

    let out = lab.console(&["--lines", "10"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("has no console log"), "{err}");
    assert!(err.contains("vmctl apply"), "{err}");

    let out = vmctl()
        .args(["--color", "never", "console", "web1"])
        .arg(lab.config())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no VM `web1`"), "{err}");
    assert!(err.contains("did you mean `web-1`?"), "{err}");
}
