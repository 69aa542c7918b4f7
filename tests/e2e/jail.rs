//! The VMM's jail (issue 12; docs/sandbox.md): every VMM of a running lab is in its own
//! mount, PID and IPC namespaces with an empty root, runs as its own unprivileged uid
//! with no capability, and sits in its own cgroup; what a compromised VMM tries is
//! refused; another user reaches none of a VM's files.

use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::lab::{text, Lab, VMS};
use crate::support::vmctl;
use crate::vm::{guest, skip, KillOnDrop, VM_TIMEOUT};

/// The first uid of the VMMs' range (`vmm::jail::creds::UID_BASE`).
const UID_BASE: u64 = 2_000_000_000;
/// `vmm::jail::cgroup::MEMORY_OVERHEAD` and `PIDS_OVERHEAD`.
const MEMORY_OVERHEAD: u64 = 64 << 20;
const PIDS_OVERHEAD: u64 = 16;

fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn ns(pid: &str, kind: &str) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/ns/{kind}: {e}"))
        .ino()
}

/// The VMM's cgroup directories (v1 memory and pids, or one v2 group), from
/// `/proc/PID/cgroup`.
fn cgroup_dirs(pid: i32) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mut dirs = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        if !path.starts_with("/vmctl-vmm-") {
            continue;
        }
        let root = match controllers {
            "memory" | "pids" => format!("/sys/fs/cgroup/{controllers}"),
            "" => "/sys/fs/cgroup".to_owned(),
            _ => continue,
        };
        dirs.push(PathBuf::from(format!("{root}{path}")));
    }
    dirs
}

fn read_limit(dirs: &[PathBuf], files: &[&str]) -> Option<u64> {
    dirs.iter()
        .flat_map(|d| files.iter().map(move |f| d.join(f)))
        .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok())
}

#[test]
fn every_vmm_is_jailed_unprivileged_and_in_its_own_cgroup() {
    if skip() {
        return;
    }
    let lab = Lab::new(|vm| format!("console=ttyS0 testguest.name={vm} testguest.halt"));
    lab.apply();
    let lab_net = std::fs::metadata(Path::new("/run/netns").join(&lab.netns))
        .unwrap()
        .ino();
    let host_root = std::fs::metadata("/").unwrap();
    let mut groups = Vec::new();
    let mut uids = Vec::new();
    for vm in VMS {
        let pid = lab.pid(vm).unwrap_or_else(|| panic!("{vm} does not run"));
        let p = pid.to_string();
        let uid = (UID_BASE + pid as u64).to_string();
        uids.push(uid.clone());
        // Every thread started: the main thread confines itself last.
        let deadline = Instant::now() + Duration::from_secs(10);
        let tasks = loop {
            let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .flatten()
                .collect();
            let main = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            if field(&main, "Seccomp:") == "2" || Instant::now() > deadline {
                break tasks;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(tasks.len() > 3, "{vm}: {} threads", tasks.len());
        for task in tasks {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap();
            let four = [uid.as_str(); 4].join(" ");
            assert_eq!(field(&status, "Uid:"), four, "{vm}: {status}");
            assert_eq!(field(&status, "Gid:"), four, "{vm}: {status}");
            assert_eq!(field(&status, "Groups:"), "", "{vm}: {status}");
            for caps in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
                assert_eq!(field(&status, caps), "0000000000000000", "{vm} {caps}");
            }
            assert_eq!(field(&status, "NoNewPrivs:"), "1", "{vm}: {status}");
        }
        // Its own PID namespace, where it is init.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert_eq!(field(&status, "NSpid:"), format!("{pid} 1"), "{vm}");
        for kind in ["mnt", "pid", "ipc"] {
            assert_ne!(
                ns(&p, kind),
                ns("self", kind),
                "{vm}: the host's {kind} namespace"
            );
        }
        assert_eq!(ns(&p, "net"), lab_net, "{vm}: not in the lab's netns");
        // Its root is empty and not the host's.
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let entries: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().collect();
        assert!(entries.is_empty(), "{vm}: its root holds {entries:?}");
        let meta = std::fs::metadata(&root).unwrap();
        assert_ne!((meta.dev(), meta.ino()), (host_root.dev(), host_root.ino()));
        assert!(!root.join("etc/shadow").exists() && !root.join("proc").exists());
        // No environment (the block it started with is wiped), no core dumps.
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(
            environ.iter().all(|&b| b == 0),
            "{vm}: environment left: {}",
            String::from_utf8_lossy(&environ)
        );
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
        // Its cgroup: guest memory + the overhead, vCPUs + the overhead.
        let dirs = cgroup_dirs(pid);
        assert!(!dirs.is_empty(), "{vm}: in no vmctl-vmm group");
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(lab.vm_dir(vm).join("vmm.json")).unwrap())
                .unwrap();
        let memory = match &spec["memory"] {
            serde_json::Value::Number(n) => n.as_u64().unwrap(),
            serde_json::Value::String(s) if s.ends_with("MiB") => {
                s.trim_end_matches("MiB").parse::<u64>().unwrap() << 20
            }
            other => panic!("{vm}: memory {other}"),
        };
        let cpus = spec["cpus"].as_u64().unwrap_or(1);
        assert_eq!(
            read_limit(&dirs, &["memory.limit_in_bytes", "memory.max"]),
            Some(memory + MEMORY_OVERHEAD),
            "{vm}: {dirs:?}"
        );
        assert_eq!(
            read_limit(&dirs, &["pids.max"]),
            Some(cpus + PIDS_OVERHEAD),
            "{vm}: {dirs:?}"
        );
        groups.extend(dirs);
    }
    // One uid per VMM.
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), VMS.len());

    lab.edit("vms.kdl", |t| {
        t.replace("prevent-destroy #true", "prevent-destroy #false")
    });
    lab.apply();
    let out = lab.vmctl(&["destroy", "--auto-approve", "--stop-timeout", "5s"]);
    assert!(out.status.success(), "{}", text(&out));
    // A stop waits for the VMM's supervisor too: once destroy returns, no supervisor of
    // the lab runs and its cgroups are gone, with no grace period.
    let running = lab.processes();
    assert!(
        running.is_empty(),
        "still running after destroy: {running:?}"
    );
    let left: Vec<_> = groups.iter().filter(|g| g.exists()).collect();
    assert!(left.is_empty(), "cgroups left after destroy: {left:?}");
}

/// A foreground VMM of a small spec in `dir`, its stderr in `dir/stderr`, probed with
/// `probe` (`VMCTL_VMM_TEST_PROBE`), with extra `args`.
fn probed_vmm(dir: &Path, probe: &str, args: &[&str]) -> (Child, KillOnDrop) {
    let spec = json!({
        "kernel": guest(),
        "memory": "64MiB",
        "cmdline": "console=ttyS0 testguest.halt",
        "console_log": dir.join("console.log"),
        "control_socket": dir.join("control.sock"),
    });
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let stderr = std::fs::File::create(dir.join("stderr")).unwrap();
    let child = vmctl()
        .args(["vmm", "--foreground", "--spec"])
        .arg(&spec_path)
        .args(args)
        .env("VMCTL_VMM_TEST_PROBE", probe)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let guard = KillOnDrop {
        pid: child.id() as i32,
    };
    (child, guard)
}

/// Waits for the probe's line on the VMM's stderr.
fn probe_line(dir: &Path, name: &str) -> String {
    let deadline = Instant::now() + VM_TIMEOUT;
    let prefix = format!("vmctl probe {name}: ");
    loop {
        let err = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
        if let Some(line) = err.lines().find(|l| l.starts_with(&prefix)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no probe line for {name}; stderr: {err}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_status(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + VM_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the probed VMM did not end");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a compromised VMM tries, once jailed, with its main thread's filter logging
/// instead of killing (so the call reaches the kernel): each is refused by the jail
/// itself. Without the jail (`--no-sandbox`) the same probes are allowed, so each
/// can fail. With the filter killing, each kills the VMM by SIGSYS.
#[test]
fn a_jailed_vmm_gets_nothing_it_tries() {
    if skip() {
        return;
    }
    if !cfg!(debug_assertions) {
        eprintln!("SKIPPED: the probe is in debug builds only");
        return;
    }
    let other = tempfile::tempdir().unwrap();
    let volume = other.path().join("other-vm-root.raw");
    std::fs::write(&volume, vec![0u8; 4096]).unwrap();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let _sleeper = KillOnDrop {
        pid: sleeper.id() as i32,
    };
    let vmctl_bin = env!("CARGO_BIN_EXE_vmctl");
    let probes = [
        (
            "shadow",
            "shadow".to_owned(),
            "No such file or directory",
            true,
        ),
        (
            "open",
            format!("open={}", volume.display()),
            "No such file or directory",
            true,
        ),
        (
            "execve",
            format!("execve={vmctl_bin}"),
            "No such file or directory",
            false,
        ),
        (
            "ptrace",
            format!("ptrace={}", sleeper.id()),
            "No such process",
            true,
        ),
    ];
    for (name, call, refusal, control) in &probes {
        let probe = format!("main:{call}");
        // Jailed, the call reaching the kernel.
        let dir = tempfile::tempdir().unwrap();
        let (mut child, guard) = probed_vmm(dir.path(), &probe, &["--seccomp-log"]);
        let line = probe_line(dir.path(), name);
        assert!(
            line.contains("refused") && line.contains(refusal),
            "{name}, jailed: {line}"
        );
        drop(guard);
        let _ = child.wait();
        // Unjailed (as root, in the host's namespaces): allowed.
        if *control {
            let dir = tempfile::tempdir().unwrap();
            let (mut child, guard) =
                probed_vmm(dir.path(), &probe, &["--seccomp-log", "--no-sandbox"]);
            let line = probe_line(dir.path(), name);
            assert!(line.ends_with("ALLOWED"), "{name}, unjailed: {line}");
            drop(guard);
            let _ = child.wait();
        }
        // Jailed and filtered: killed.
        let dir = tempfile::tempdir().unwrap();
        let (mut child, _guard) = probed_vmm(dir.path(), &probe, &[]);
        let status = wait_status(&mut child);
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{name}: {status:?}");
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// Runs `f` in a forked child as `uid`/`gid` (no groups); its result (an errno, 0 for
/// success) comes back as the child's exit code.
fn as_user(uid: u32, f: impl Fn() -> i32) -> i32 {
    // SAFETY: the child makes only async-signal-safe calls (setgroups, setgid, setuid,
    // the calls of `f`) and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
            {
                libc::_exit(255);
            }
            libc::_exit(f());
        }
    }
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "{status}");
    libc::WEXITSTATUS(status)
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(254)
}

fn connect(path: &CString) -> i32 {
    // SAFETY: socket and connect with a sockaddr_un built here; the fd is closed.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return errno();
        }
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(path.as_bytes()) {
            *d = *s as libc::c_char;
        }
        let rc = libc::connect(
            fd,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        );
        let e = if rc == 0 { 0 } else { errno() };
        libc::close(fd);
        e
    }
}

fn open(path: &CString) -> i32 {
    // SAFETY: open of a NUL-terminated path; the fd is closed.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            return errno();
        }
        libc::close(fd);
        0
    }
}

/// Sockets are root's, 0600; another user — `nobody`, or another VMM's uid — can
/// neither connect to them nor open the VM's volume or console log. Root can (the
/// check can fail).
#[test]
fn another_user_reaches_no_socket_volume_or_console_log() {
    if skip() {
        return;
    }
    let lab = Lab::new(|vm| format!("console=ttyS0 testguest.name={vm} testguest.halt"));
    lab.apply();
    let dir = lab.vm_dir("web-1");
    let c = |p: PathBuf| CString::new(p.into_os_string().into_encoded_bytes()).unwrap();
    let sockets = [c(dir.join("control.sock")), c(dir.join("console.sock"))];
    let files = [
        c(lab.pool_dir().join("web-1-root.raw")),
        c(dir.join("console.log")),
    ];
    for s in ["control.sock", "console.sock"] {
        let meta = std::fs::metadata(dir.join(s)).unwrap();
        assert!(meta.file_type().is_socket(), "{s}");
        assert_eq!((meta.mode() & 0o777, meta.uid()), (0o600, 0), "{s}");
    }
    let web2 = lab.pid("web-2").expect("web-2 runs") as u32;
    for uid in [65534, UID_BASE as u32 + web2] {
        for s in &sockets {
            assert_eq!(
                as_user(uid, || connect(s)),
                libc::EACCES,
                "uid {uid}: {s:?}"
            );
        }
        for f in &files {
            assert_eq!(as_user(uid, || open(f)), libc::EACCES, "uid {uid}: {f:?}");
        }
    }
    for s in &sockets {
        assert_eq!(as_user(0, || connect(s)), 0, "root: {s:?}");
    }
    for f in &files {
        assert_eq!(as_user(0, || open(f)), 0, "root: {f:?}");
    }
}

/// A VMM that goes past its cgroup's memory limit (the test probe allocates 1 GiB once
/// the VMM is confined; the limit is guest memory + 64 MiB) is killed by the kernel,
/// its console log says so, `status` reports the VM crashed, and the next apply starts
/// it again.
#[test]
fn a_vmm_past_its_memory_limit_is_killed_reported_crashed_and_restarted() {
    if skip() {
        return;
    }
    if !cfg!(debug_assertions) {
        eprintln!("SKIPPED: the probe is in debug builds only");
        return;
    }
    let lab = Lab::new(|vm| format!("console=ttyS0 testguest.name={vm} testguest.halt"));
    let out = vmctl()
        .args(["--color", "never", "apply", "--auto-approve"])
        .arg(lab.config_dir())
        .env("VMCTL_VMM_TEST_PROBE", "main:alloc=1024")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + VM_TIMEOUT;
    for vm in VMS {
        let log = lab.vm_dir(vm).join("console.log");
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("went past its memory limit") {
                assert!(text.contains("was killed by SIGKILL"), "{vm}: {text}");
                break;
            }
            assert!(Instant::now() < deadline, "{vm} was not killed: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let status = text(&lab.vmctl(&["status"]));
    for vm in VMS {
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("vm.{vm} ")))
            .unwrap_or_else(|| panic!("{vm} not in status:\n{status}"));
        assert!(line.contains("crashed"), "{vm}: {line}\n{status}");
    }
    lab.apply();
    assert!(lab.planned().is_empty(), "{:?}", lab.planned());
    for vm in VMS {
        assert!(lab.pid(vm).is_some(), "{vm} was not restarted");
    }
}
