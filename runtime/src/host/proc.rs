//! What `/proc` says of a process (how long it has run, for `status`) and of the host
//! (its online CPUs and memory, for the plan's capacity check).

use std::time::Duration;

use vmctl_planner::live::HostReport;

/// This host's online CPUs (`sysconf(_SC_NPROCESSORS_ONLN)`) and memory (`MemTotal`
/// of `/proc/meminfo`); `None` when either cannot be read.
pub fn host_report() -> Option<HostReport> {
    // SAFETY: sysconf has no preconditions and touches no memory.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let cpus = u32::try_from(cpus).ok().filter(|&c| c > 0)?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some(HostReport {
        cpus,
        memory: mem_total(&meminfo)?,
    })
}

/// The CPU features this host's KVM can give a guest, by the names a `cpuid-mask`
/// takes: what a migration to or from this host is checked against. `None` when
/// `/dev/kvm` cannot be opened or asked.
pub fn cpu_features() -> Option<Vec<String>> {
    let kvm = kvm_ioctls::Kvm::new().ok()?;
    let supported = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .ok()?;
    let offered = crate::vmm::arch::x86_64::cpuid::offered_features(supported.as_slice());
    Some(offered.into_iter().map(str::to_owned).collect())
}

/// `MemTotal:  16318412 kB` in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// How long process `pid` has run: its start time (`/proc/<pid>/stat`, field 22, in
/// clock ticks since boot) against the time since boot (`/proc/uptime`). `None` when
/// the process is gone or `/proc` cannot say.
pub fn uptime(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let since_boot = std::fs::read_to_string("/proc/uptime").ok()?;
    let since_boot: f64 = since_boot.split_whitespace().next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions and touches no memory.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let started = start_ticks(&stat)? as f64 / (if ticks > 0 { ticks as f64 } else { 100.0 });
    Some(Duration::from_secs_f64((since_boot - started).max(0.0)))
}

/// The fields of a `/proc/<pid>/stat` line from field 3 (state) on. The command name
/// (field 2) is in parentheses and may hold spaces or parentheses itself: fields are
/// counted after the last `)`.
fn fields_after_name(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace())
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` line.
fn start_ticks(stat: &str) -> Option<u64> {
    // Field 22 is the 20th after field 3.
    fields_after_name(stat)?.nth(19)?.parse().ok()
}

/// Whether process `pid` exists and is alive: not a zombie (`Z`) or dead (`X`, `x`).
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .is_some_and(|stat| is_alive_stat(&stat))
}

fn is_alive_stat(stat: &str) -> bool {
    fields_after_name(stat)
        .and_then(|mut f| f.next())
        .is_some_and(|state| !matches!(state, "Z" | "X" | "x"))
}

/// A duration as people read an uptime: `3d4h`, `2h5m`, `4m10s`, `12s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d{hours}h")
    } else if hours > 0 {
        format!("{hours}h{minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_read_past_a_name_with_spaces_and_parens() {
        let line =
            "1234 (a b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 50";
        assert_eq!(start_ticks(line), Some(98765));
        assert_eq!(start_ticks("garbage"), None);
    }

    #[test]
    fn zombies_and_missing_pids_are_not_alive() {
        assert!(is_alive(std::process::id()));
        assert!(!is_alive(u32::MAX));
        assert!(is_alive_stat("7 (a) b) S 1 7"));
        assert!(!is_alive_stat("7 (a) S) Z 1 7"));
        assert!(!is_alive_stat("7 (x) X 1 7"));
        assert!(!is_alive_stat("garbage"));
        // A child that exited and is not reaped yet is a zombie.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while is_alive(child.id()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!is_alive(child.id()));
        // Reaped (by now, or by another test's waitpid): gone either way.
        let _ = child.wait();
    }

    #[test]
    fn our_own_uptime_is_short_and_a_missing_pid_has_none() {
        let mine = uptime(std::process::id()).unwrap();
        assert!(mine < Duration::from_secs(3600), "{mine:?}");
        assert_eq!(uptime(u32::MAX), None);
    }

    #[test]
    fn the_host_reports_its_cpus_and_memory() {
        let report = host_report().unwrap();
        let online = std::thread::available_parallelism().unwrap().get();
        assert!(report.cpus as usize >= online, "{report:?} < {online}");
        assert!(report.memory > 64 << 20, "{report:?}");
        assert_eq!(
            mem_total("MemFree: 1 kB\nMemTotal:       16318412 kB\n"),
            Some(16318412 * 1024)
        );
        assert_eq!(mem_total("MemTotal: lots"), None);
    }

    #[test]
    fn durations_read_like_uptimes() {
        assert_eq!(human_duration(Duration::from_secs(12)), "12s");
        assert_eq!(human_duration(Duration::from_secs(250)), "4m10s");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2h5m");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d4h"
        );
    }
}
