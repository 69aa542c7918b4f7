//! The VMM's credentials once jailed: none worth having.
//!
//! - **uid and gid**: [`UID_BASE`] + the VMM's pid on the host (so `2000012345` for
//!   pid 12345), no supplementary groups. Two live VMMs never share a pid, so never a
//!   uid: one VMM cannot signal, trace or read another as its owner. The uid owns no
//!   file: everything a VM uses is root's (volumes 0600, console log 0640, sockets
//!   0600) and reaches the VMM as a file descriptor opened before the jail, so a uid
//!   reused by a later VMM inherits nothing either.
//! - **capabilities**: none, in every set — bounding and ambient dropped first, then the
//!   uid change clears permitted and effective, then all of them (inheritable too)
//!   are set to zero and read back.
//! - `no_new_privs`, the parent-death signal (SIGKILL: a VMM never outlives its
//!   supervisor), and an empty environment ([`clear_environment`], before the mount
//!   namespace hides `/proc`).
//! - **rlimits**: no core dumps (`RLIMIT_CORE` 0: guest memory never lands on disk);
//!   open files capped just above what the VMM holds (clients of its sockets).

use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

/// The first uid (and gid) of the VMMs' range; a VMM's is this plus its host pid.
pub const UID_BASE: u32 = 2_000_000_000;
/// Fds a jailed VMM may open beyond the highest one it holds (its sockets' clients).
const SPARE_FDS: u64 = 64;
/// The highest capability number any kernel has now is 40; past the last one,
/// `PR_CAPBSET_DROP` fails with EINVAL, which ends the loop.
const MAX_CAP: libc::c_ulong = 63;

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    /// A system call failed.
    #[error("the VMM's jail: {step} failed: {source}")]
    Sys {
        /// What was being done.
        step: &'static str,
        /// The errno.
        source: nix::Error,
    },
    /// A capability survived the drop.
    #[error("the VMM's jail: capabilities remain after dropping them all (effective {effective:#x}, permitted {permitted:#x}, inheritable {inheritable:#x})")]
    CapsLeft {
        /// Effective set.
        effective: u64,
        /// Permitted set.
        permitted: u64,
        /// Inheritable set.
        inheritable: u64,
    },
}

fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> CredsError {
    move |source| CredsError::Sys { step, source }
}

fn errno(step: &'static str) -> CredsError {
    CredsError::Sys {
        step,
        source: nix::Error::last(),
    }
}

/// The uid and gid of the VMM whose host pid is `host_pid`.
pub fn uid_for(host_pid: u32) -> u32 {
    UID_BASE.saturating_add(host_pid)
}

/// The highest fd this process holds (read from `/proc/self/fd`; 2 when unreadable).
pub fn highest_fd() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
                .max()
                .unwrap_or(2)
        })
        .unwrap_or(2)
}

/// `RLIMIT_NOFILE` for a VMM whose highest fd is `highest`.
pub fn nofile_limit(highest: u64) -> u64 {
    highest + 1 + SPARE_FDS
}

/// Drops every privilege of this (single-threaded, root) process for good: see the
/// module. `nofile` is the open files limit.
pub fn drop_all(host_pid: u32, nofile: u64) -> Result<(), CredsError> {
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(sys("setrlimit(RLIMIT_CORE)"))?;
    setrlimit(Resource::RLIMIT_NOFILE, nofile, nofile).map_err(sys("setrlimit(RLIMIT_NOFILE)"))?;
    for cap in 0..=MAX_CAP {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            if nix::Error::last() == nix::Error::EINVAL {
                break;
            }
            return Err(errno("prctl(PR_CAPBSET_DROP)"));
        }
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(errno("prctl(PR_CAP_AMBIENT_CLEAR_ALL)"));
    }
    let id = uid_for(host_pid);
    setgroups(&[]).map_err(sys("setgroups"))?;
    let gid = Gid::from_raw(id);
    setresgid(gid, gid, gid).map_err(sys("setresgid"))?;
    let uid = Uid::from_raw(id);
    setresuid(uid, uid, uid).map_err(sys("setresuid"))?;
    set_caps(&[Default::default(); 2])?;
    // Cleared by the uid change; set again.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(sys("prctl(PR_SET_PDEATHSIG)"))?;
    nix::sys::prctl::set_no_new_privs().map_err(sys("prctl(PR_SET_NO_NEW_PRIVS)"))?;
    let left = caps()?;
    let set = |f: fn(&libc_cap::Data) -> u32| u64::from(f(&left[0])) | u64::from(f(&left[1])) << 32;
    let (effective, permitted, inheritable) = (
        set(|d| d.effective),
        set(|d| d.permitted),
        set(|d| d.inheritable),
    );
    if effective | permitted | inheritable != 0 {
        return Err(CredsError::CapsLeft {
            effective,
            permitted,
            inheritable,
        });
    }
    Ok(())
}

/// Removes every environment variable (the process is single-threaded, root, and
/// still sees the host's `/proc`), and wipes the environment the process was started
/// with: its strings are zeroed, so `/proc/PID/environ` shows none of them (a VMM is
/// forked from the CLI, so that block is the CLI's environment).
pub fn clear_environment() -> Result<(), CredsError> {
    for (key, _) in std::env::vars_os() {
        std::env::remove_var(key);
    }
    // Fields 50 and 51 of /proc/self/stat: where the initial environment lies.
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| CredsError::Sys {
        step: "reading /proc/self/stat",
        source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    // The command name (field 2) may hold spaces: count from after its `)`.
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after_comm
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let (Some(&start), Some(&end)) = (fields.get(47), fields.get(48)) else {
        return Err(CredsError::Sys {
            step: "finding the environment in /proc/self/stat",
            source: nix::Error::EINVAL,
        });
    };
    if end > start {
        // SAFETY: [start, end) is this process's initial environment block, mapped
        // and writable (the stack); no variable refers to it any more (all removed
        // above), and the process is single-threaded.
        unsafe { std::ptr::write_bytes(start as *mut u8, 0, (end - start) as usize) };
        // Also shrink the block to nothing where the host lets root do so (it needs
        // CAP_SYS_RESOURCE, which containers often lack); zeroed is enough.
        // SAFETY: prctl with integer arguments; the end is set to the start, inside
        // the same mapping.
        unsafe {
            libc::prctl(
                libc::PR_SET_MM,
                libc::PR_SET_MM_ENV_END as libc::c_ulong,
                start as libc::c_ulong,
                0,
                0,
            )
        };
    }
    Ok(())
}

/// The kernel's capability structures (`linux/capability.h`), which libc does not
/// define.
mod libc_cap {
    /// `_LINUX_CAPABILITY_VERSION_3`: two [`Data`], for capabilities 0–31 and 32–63.
    pub const VERSION_3: u32 = 0x2008_0522;

    #[repr(C)]
    pub struct Header {
        pub version: u32,
        pub pid: i32,
    }

    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    pub struct Data {
        pub effective: u32,
        pub permitted: u32,
        pub inheritable: u32,
    }
}

fn set_caps(data: &[libc_cap::Data; 2]) -> Result<(), CredsError> {
    let mut header = libc_cap::Header {
        version: libc_cap::VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads a valid header and two data structs (version 3).
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(errno("capset"));
    }
    Ok(())
}

fn caps() -> Result<[libc_cap::Data; 2], CredsError> {
    let mut header = libc_cap::Header {
        version: libc_cap::VERSION_3,
        pid: 0,
    };
    let mut data = [libc_cap::Data::default(); 2];
    // SAFETY: capget fills two data structs (version 3) from a valid header.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(errno("capget"));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_the_base_plus_the_pid() {
        assert_eq!(uid_for(12345), 2_000_012_345);
        // Every pid a host can have (pid_max is at most 2^22) stays in the range and
        // below the uids the kernel treats specially (-1).
        assert!(uid_for(1 << 22) < u32::MAX - 1);
        assert_eq!(nofile_limit(9), 10 + SPARE_FDS);
    }

    /// A forked child drops everything as a jailed VMM does; the parent checks its
    /// status as the kernel shows it. Needs root.
    #[test]
    fn a_child_that_drops_everything_has_nothing() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root");
            return;
        }
        let (read, write) = std::io::pipe().unwrap();
        // SAFETY: the test binary may have threads; the child only makes system calls
        // and exits, never returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            drop(read);
            let ok = drop_all(std::process::id(), 100).is_ok();
            let mut w = write;
            let _ = std::io::Write::write_all(&mut w, if ok { b"y" } else { b"n" });
            // Wait to be looked at.
            std::thread::sleep(std::time::Duration::from_secs(5));
            // SAFETY: ends the child.
            unsafe { libc::_exit(0) };
        }
        drop(write);
        let mut byte = [0u8; 1];
        let mut read = read;
        std::io::Read::read_exact(&mut read, &mut byte).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        // SAFETY: kill and waitpid of the child forked above.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        assert_eq!(byte[0], b'y');
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let id = uid_for(pid as u32).to_string();
        assert_eq!(field("Uid:"), [id.as_str(); 4].join(" "), "{status}");
        assert_eq!(field("Gid:"), [id.as_str(); 4].join(" "), "{status}");
        assert_eq!(field("Groups:"), "", "{status}");
        for caps in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
            assert_eq!(field(caps), "0000000000000000", "{caps} {status}");
        }
        assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    }
}
