//! The sandbox's test probe (debug builds only): `VMCTL_VMM_TEST_PROBE=<kind>[:<call>]`
//! makes a thread of that kind, once confined, try one thing a VMM must never be able
//! to do, and say on stderr how it went: `vmctl probe <call>: refused (<errno>)` or
//! `vmctl probe <call>: ALLOWED`. Under the default seccomp action the VMM dies by
//! SIGSYS instead; under `--seccomp-log` the call reaches the kernel, so what refuses
//! it is the jail (namespaces, uid, capabilities).
//!
//! | call | tries |
//! | --- | --- |
//! | `socket` (the default) | `socket(AF_INET, SOCK_STREAM)` |
//! | `shadow` | `open("/etc/shadow", O_RDONLY)` |
//! | `open=PATH` | `open(PATH, O_RDWR)` (another VM's volume) |
//! | `execve=PATH` | `execve(PATH)` |
//! | `ptrace=PID` | `ptrace(PTRACE_ATTACH, PID)` (another VMM's host pid) |
//! | `alloc=MIB` | maps MIB MiB and writes every page (past the cgroup's memory limit) |

use std::ffi::CString;

use super::threads::ThreadKind;

/// The environment variable (read before the jail clears the environment).
pub const PROBE_ENV: &str = "VMCTL_VMM_TEST_PROBE";

/// One probe: the thread kind that makes it, and the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Which thread tries.
    pub kind: ThreadKind,
    /// What it tries.
    pub call: Call,
}

/// What a probe tries (see the module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `socket(AF_INET)`.
    Socket,
    /// Opens `/etc/shadow`.
    Shadow,
    /// Opens a path read-write.
    Open(CString),
    /// Executes a path.
    Execve(CString),
    /// Attaches to a pid.
    Ptrace(libc::pid_t),
    /// Maps and touches this many MiB.
    Alloc(usize),
}

impl Probe {
    /// The probe `VMCTL_VMM_TEST_PROBE` asks for, in debug builds; never in release.
    pub fn from_env() -> Option<Self> {
        if !cfg!(debug_assertions) {
            return None;
        }
        Self::parse(&std::env::var(PROBE_ENV).ok()?)
    }

    /// `<kind>[:<call>]`.
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, call) = text.split_once(':').unwrap_or((text, "socket"));
        let kind = ThreadKind::ALL.into_iter().find(|k| k.name() == kind)?;
        let path = |p: &str| CString::new(p).ok();
        let call = match call.split_once('=') {
            None if call == "socket" => Call::Socket,
            None if call == "shadow" => Call::Shadow,
            Some(("open", p)) => Call::Open(path(p)?),
            Some(("execve", p)) => Call::Execve(path(p)?),
            Some(("ptrace", pid)) => Call::Ptrace(pid.parse().ok()?),
            Some(("alloc", mib)) => Call::Alloc(mib.parse().ok()?),
            _ => return None,
        };
        Some(Self { kind, call })
    }

    /// Makes the call and writes how it went to stderr.
    pub fn run(&self) {
        let (name, rc) = match &self.call {
            // SAFETY (all four): plain system calls on valid, NUL-terminated strings;
            // an fd that is returned is closed.
            Call::Socket => ("socket", unsafe {
                close_ok(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0))
            }),
            Call::Shadow => ("shadow", unsafe {
                close_ok(libc::open(c"/etc/shadow".as_ptr(), libc::O_RDONLY))
            }),
            Call::Open(p) => ("open", unsafe {
                close_ok(libc::open(p.as_ptr(), libc::O_RDWR))
            }),
            Call::Execve(p) => ("execve", unsafe {
                let argv = [p.as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null()];
                libc::execve(p.as_ptr(), argv.as_ptr(), envp.as_ptr())
            }),
            Call::Ptrace(pid) => ("ptrace", unsafe {
                libc::ptrace(libc::PTRACE_ATTACH, *pid, 0, 0) as libc::c_int
            }),
            Call::Alloc(mib) => ("alloc", alloc(*mib)),
        };
        let line = if rc < 0 {
            format!(
                "vmctl probe {name}: refused ({})\n",
                std::io::Error::last_os_error()
            )
        } else {
            format!("vmctl probe {name}: ALLOWED\n")
        };
        // SAFETY: write of a valid buffer to stderr.
        unsafe { libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), line.len()) };
    }
}

/// Maps `mib` MiB and writes a byte into every page of it; -1 when the map fails.
/// Never unmapped: the point is to be killed for it.
fn alloc(mib: usize) -> libc::c_int {
    let len = mib << 20;
    // SAFETY: an anonymous private mapping, written only within its length.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return -1;
        }
        let p = p.cast::<u8>();
        for offset in (0..len).step_by(4096) {
            std::ptr::write_volatile(p.add(offset), 1);
        }
    }
    0
}

/// `fd` (or -1) as a result, closing a real fd.
unsafe fn close_ok(fd: libc::c_int) -> libc::c_int {
    if fd >= 0 {
        libc::close(fd);
    }
    fd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_parse() {
        assert_eq!(
            Probe::parse("vcpu"),
            Some(Probe {
                kind: ThreadKind::Vcpu,
                call: Call::Socket
            })
        );
        assert_eq!(
            Probe::parse("main:ptrace=42").map(|p| p.call),
            Some(Call::Ptrace(42))
        );
        assert_eq!(
            Probe::parse("main:open=/v/a.raw").map(|p| p.call),
            Some(Call::Open(c"/v/a.raw".into()))
        );
        for bad in ["", "gpu", "main:nothing", "main:ptrace=x", "main:open"] {
            assert_eq!(Probe::parse(bad), None, "{bad}");
        }
    }

    /// Unconfined and as whoever runs the tests, a probe is allowed to open a file it
    /// may open: the probe reports what happened, it does not assume refusal.
    #[test]
    fn a_probe_can_be_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "").unwrap();
        let probe = Probe {
            kind: ThreadKind::Main,
            call: Call::Open(CString::new(path.to_str().unwrap()).unwrap()),
        };
        probe.run();
    }
}
