//! The quickstart lab for one test: a copy of examples/quickstart in a temp dir whose
//! host has a temp state dir, a temp pool path and its own network namespace
//! (`vmctl-e2e-<pid>-<n>`), and whose VMs boot the test guest. Dropping a [`Lab`] kills
//! every VMM it finds by its pid file, deletes the namespace (and with it every bridge
//! and tap) and the temp dir — also when the test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{repo_root, vmctl};
use crate::vm::{alive, guest, wait_gone};

/// The quickstart's VMs.
pub const VMS: [&str; 3] = ["web-1", "web-2", "db-1"];

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub netns: String,
}

impl Lab {
    /// The quickstart with each VM's command line `cmdline(vm)`.
    pub fn new(cmdline: impl Fn(&str) -> String) -> Lab {
        let netns = crate::support::netns_name();
        let ok = Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {netns} failed");
        Lab::in_netns(netns, cmdline)
    }

    /// The quickstart in a network namespace that does not exist yet (vmctl makes it);
    /// dropping the lab deletes it all the same if it is still there.
    pub fn without_netns(cmdline: impl Fn(&str) -> String) -> Lab {
        Lab::in_netns(crate::support::netns_name(), cmdline)
    }

    /// Whether the lab's namespace exists.
    pub fn netns_exists(&self) -> bool {
        Path::new("/run/netns").join(&self.netns).exists()
    }

    fn in_netns(netns: String, cmdline: impl Fn(&str) -> String) -> Lab {
        let lab = Lab {
            dir: tempfile::tempdir().expect("tempdir"),
            netns,
        };
        std::fs::create_dir_all(lab.config_dir()).unwrap();
        let example = repo_root().join("examples/quickstart");
        let lab_kdl = std::fs::read_to_string(example.join("lab.kdl")).unwrap();
        let lab_kdl = lab_kdl
            .replace(
                "state-dir \"/var/lib/vmctl\"",
                &format!("state-dir \"{}\"", lab.state_dir().display()),
            )
            .replace("netns \"vmctl-lab\"", &format!("netns \"{}\"", lab.netns))
            .replace(
                "\"/var/lib/vmctl/pools/lab-fast\"",
                &format!("\"{}\"", lab.pool_dir().display()),
            );
        assert!(!lab_kdl.contains("/var/lib/vmctl"), "{lab_kdl}");
        assert!(!lab_kdl.contains("netns \"vmctl-lab\""), "{lab_kdl}");
        std::fs::write(lab.config_dir().join("lab.kdl"), lab_kdl).unwrap();
        let mut vms_kdl = std::fs::read_to_string(example.join("vms.kdl")).unwrap();
        vms_kdl = vms_kdl.replace(
            "\"../../tests/guest/vmlinux\"",
            &format!("\"{}\"", guest().display()),
        );
        for vm in VMS {
            let at = vms_kdl
                .find(&format!("vm \"{vm}\""))
                .expect("vm in vms.kdl");
            let start = at + vms_kdl[at..].find("cmdline \"").expect("cmdline") + 9;
            let end = start + vms_kdl[start..].find('"').expect("closing quote");
            vms_kdl.replace_range(start..end, &cmdline(vm));
        }
        std::fs::write(lab.config_dir().join("vms.kdl"), vms_kdl).unwrap();
        lab
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn pool_dir(&self) -> PathBuf {
        self.dir.path().join("pool")
    }

    pub fn vm_dir(&self, vm: &str) -> PathBuf {
        self.state_dir().join("lab/vms").join(vm)
    }

    /// Rewrites `file` of the config with `edit`.
    pub fn edit(&self, file: &str, edit: impl FnOnce(String) -> String) {
        let path = self.config_dir().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(text)).unwrap();
    }

    /// Sets `setting` (`memory "96MiB"`: a setting's line) on `vm` of vms.kdl: the VM's
    /// own line for it is replaced, or the line is added, overriding its template.
    pub fn set(&self, vm: &str, setting: &str) {
        let key = setting.split(' ').next().unwrap_or(setting);
        self.edit("vms.kdl", |mut text| {
            let at = text.find(&format!("vm \"{vm}\"")).expect("vm in vms.kdl");
            let open = at + text[at..].find("{\n").expect("the vm's block") + 2;
            let close = at + text[at..].find("\n}\n").expect("the vm's end") + 1;
            let line = format!("    {setting}\n");
            match text[open..close].find(&format!("    {key} ")) {
                Some(start) => {
                    let start = open + start;
                    let end = start + text[start..].find('\n').expect("line end") + 1;
                    text.replace_range(start..end, &line);
                }
                None => text.insert_str(open, &line),
            }
            text
        });
    }

    /// Runs `vmctl ARGS… <config dir>` (stdin closed), with a time limit.
    pub fn vmctl(&self, args: &[&str]) -> Output {
        let out = vmctl()
            .args(["--color", "never"])
            .args(args)
            .arg(self.config_dir())
            .stdin(Stdio::null())
            .output()
            .expect("vmctl runs");
        out
    }

    /// `vmctl ARGS… <config dir>` (stdin closed), to run with more settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = vmctl();
        command
            .args(["--color", "never"])
            .args(args)
            .arg(self.config_dir())
            .stdin(Stdio::null());
        command
    }

    /// `vmctl apply --auto-approve`, which must succeed.
    pub fn apply(&self) -> String {
        let out = self.vmctl(&["apply", "--auto-approve", "--stop-timeout", "5s"]);
        let text = text(&out);
        assert_eq!(out.status.code(), Some(0), "apply failed:\n{text}");
        text
    }

    /// `vmctl plan --json`: the actionable changes as `action kind.name`, sorted.
    pub fn planned(&self) -> Vec<String> {
        let out = self.vmctl(&["plan", "--json"]);
        assert_eq!(out.status.code(), Some(0), "plan failed:\n{}", text(&out));
        let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
        let mut changes: Vec<String> = plan["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .filter(|c| c["action"] != "no-op")
            .map(|c| {
                format!(
                    "{} {}",
                    c["action"].as_str().unwrap(),
                    c["address"].as_str().unwrap()
                )
            })
            .collect();
        changes.sort();
        changes
    }

    /// The pid of `vm`'s VMM, when its pid file names a live process.
    pub fn pid(&self, vm: &str) -> Option<i32> {
        let text = std::fs::read_to_string(self.vm_dir(vm).join("vmm.pid")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    /// What `vm` printed so far, whole lines only ([`whole_lines`]).
    pub fn console(&self, vm: &str) -> String {
        let log = std::fs::read_to_string(self.vm_dir(vm).join("console.log"));
        whole_lines(log.unwrap_or_default())
    }

    /// Waits until `vm`'s console has the line `line`.
    pub fn wait_console(&self, vm: &str, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.console(vm).lines().any(|l| l == line) {
            assert!(
                Instant::now() < deadline,
                "no `{line}` on the console of {vm}:\n{}",
                self.console(vm)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `ip -n <netns> ARGS` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.netns)
            .args(args)
            .output()
            .expect("ip runs");
        assert!(out.status.success(), "ip {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every interface in the namespace but `lo`: (name, alias, controller name).
    pub fn links(&self) -> Vec<(String, String, String)> {
        let links: Value = serde_json::from_str(&self.ip(&["-j", "-d", "link", "show"])).unwrap();
        links
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["ifname"] != "lo")
            .map(|l| {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (s(&l["ifname"]), s(&l["ifalias"]), s(&l["master"]))
            })
            .collect()
    }

    /// The interface whose alias is `alias`.
    pub fn link_with_alias(&self, alias: &str) -> Option<String> {
        self.links()
            .into_iter()
            .find(|(_, a, _)| a == alias)
            .map(|(name, ..)| name)
    }

    /// This lab's VMMs: the processes naming its state dir, not their supervisors.
    pub fn vmms(&self) -> Vec<i32> {
        without_supervisors(self.processes())
    }

    /// Processes whose command line mentions this lab's state dir (its VMMs and their
    /// supervisors).
    pub fn processes(&self) -> Vec<i32> {
        processes_naming(&self.state_dir().display().to_string())
    }

    /// Every file under the state dir and the pool dir, relative to the temp dir.
    pub fn files(&self) -> Vec<String> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                out.push(path.strip_prefix(root).unwrap().display().to_string());
                if path.is_dir() {
                    walk(&path, root, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.state_dir(), self.dir.path(), &mut out);
        walk(&self.pool_dir(), self.dir.path(), &mut out);
        out.sort();
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The VMMs first (by pid: their pid files), then what is still running with
        // this lab's state dir on its command line (their supervisors, which remove
        // the VMMs' cgroups once the VMMs are gone, get a moment for that first),
        // then the namespace with its bridges and taps; the temp dir goes with `dir`.
        let vmms: Vec<i32> = VMS.iter().filter_map(|vm| self.pid(vm)).collect();
        for &pid in &vmms {
            // SAFETY: kill has no memory-safety preconditions; these are this test's VMMs.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for &pid in &vmms {
            wait_gone(pid, Duration::from_secs(10));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while !self.processes().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let rest = self.processes();
        for &pid in &rest {
            // SAFETY: as above; processes naming this lab's state dir.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for &pid in &rest {
            wait_gone(pid, Duration::from_secs(10));
            crate::vm::remove_vmm_cgroups(pid);
        }
        if self.netns_exists() {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.netns])
                .status();
        }
    }
}

/// The VMMs among `pids`: not their supervisors (`comm` `vmm-supervisor`, which share
/// their VMM's command line; docs/sandbox.md).
pub fn without_supervisors(pids: Vec<i32>) -> Vec<i32> {
    pids.into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map_or(true, |c| c.trim() != "vmm-supervisor")
        })
        .collect()
}

/// Live processes whose command line contains `needle`, sorted.
pub fn processes_naming(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && alive(pid) {
            pids.push(pid);
        }
    }
    pids.sort();
    pids
}

/// A console's text up to its last newline: the guest may be in the middle of printing
/// the last line (a test that read `nic0 mac=52:54:00:a1:1` took it for the MAC).
pub fn whole_lines(mut text: String) -> String {
    text.truncate(text.rfind('\n').map_or(0, |end| end + 1));
    text
}

/// stdout and stderr of a run, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
