//! The fleet harness: remote hosts as network namespaces, each with its own `sshd`.
//!
//! An underlay namespace holds a bridge; N host namespaces (default 3: `host-a`,
//! `host-b`, `host-c`) and one controller namespace are joined to it by veths, with
//! TEST-NET addresses that exist only inside the namespaces (controller 192.0.2.10,
//! hosts 192.0.2.11, .12, …). Each host runs `sshd -D -e` on its address with a
//! throwaway host key, the fleet's authorized throwaway client key and root login by
//! key only; each has its own state dir. The controller reaches them with the ssh
//! config the harness writes ([`Fleet::ssh_config`]: `StrictHostKeyChecking yes`
//! against the generated known_hosts, the client key). Code runs in the controller
//! either in a thread of the test that joins its namespace ([`Fleet::in_controller`],
//! for the runtime's API) or as a command that joins it between fork and exec
//! ([`Fleet::controller_command`], for the binary).
//!
//! vmctl keeps its ssh connections (and an agent behind each) between runs by default:
//! every [`Fleet::controller_command`] points `VMCTL_SSH_CONTROL_DIR` at the fleet's
//! own dir ([`Fleet::control_dir`]), and [`Fleet::close_kept`] closes them with
//! `ssh -O exit` and checks that nothing of vmctl runs after.
//!
//! Dropping a [`Fleet`] first closes the kept connections, then kills every process in its namespaces (each `sshd` it started
//! by its pid first, then whatever `ip netns pids` names: sessions, agents), deletes
//! the namespaces (and with them the veths and the bridge) and the temp dir, also
//! when the test fails. The machine's own network namespace is never touched, nor its
//! mounts (each sshd runs in the private mount namespace of its `ip netns exec`, where
//! root's ~/.bashrc is hidden so that an ssh command costs what it costs on a plain
//! host). The one thing left on the machine is `/run/sshd`, sshd's privilege-separation
//! directory (empty; the openssh-server package expects it), made when missing.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::lab::text;
use crate::netns::NetnsGuard;
use crate::support;

/// The programs a fleet needs.
const SSHD: &str = "/usr/sbin/sshd";
const SSH: &str = "ssh";
const SSH_KEYGEN: &str = "ssh-keygen";

/// True when the fleet tests must skip: they need root, iproute2, OpenSSH (client and
/// server) and /dev/kvm (the hosts' probes report it). Under CI a missing one fails.
pub(crate) fn skip() -> bool {
    let runs = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    crate::netns::skip()
        || support::skip_unless(Path::new(SSHD).exists(), "sshd (openssh-server)")
        || support::skip_unless(
            runs(SSH, "-V") && runs(SSH_KEYGEN, "-?"),
            "ssh and ssh-keygen (openssh-client)",
        )
        || support::skip_unless(support::has_kvm(), "/dev/kvm")
}

/// One host of the fleet.
pub(crate) struct FleetHost {
    /// Its name in the ssh config (`host-a`, …).
    pub(crate) name: String,
    /// Its address on the underlay.
    pub(crate) address: String,
    /// Its state dir (`<fleet dir>/<name>/state`).
    pub(crate) state_dir: PathBuf,
    /// Its sshd's files: config, host key, pid file, log.
    pub(crate) dir: PathBuf,
    pub(crate) netns: NetnsGuard,
    sshd: Option<Child>,
}

impl FleetHost {
    /// Starts its sshd and waits until it listens (its pid file is written after
    /// the listening socket is bound).
    pub(crate) fn start_sshd(&mut self) {
        assert!(self.sshd.is_none(), "{}: sshd runs already", self.name);
        let pid_file = self.dir.join("sshd.pid");
        let _ = std::fs::remove_file(&pid_file);
        let log = File::create(self.dir.join("sshd.log")).expect("sshd log");
        // In the mount namespace `ip netns exec` makes (a slave of the machine's: what
        // is mounted in it stays in it), root's ~/.bashrc is hidden: bash sources it
        // for every ssh command, and this machine's costs ~0.2 s per session (pyenv),
        // which a plain host does not have. `exec` keeps sshd at the spawned pid.
        let script = format!(
            "if [ -f /root/.bashrc ]; then mount --bind /dev/null /root/.bashrc || exit 1; fi; exec {SSHD} -D -e -f \"$0\""
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.netns.name, "sh", "-c", &script])
            .arg(self.dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("ip netns exec sshd runs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pid_file.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{}: sshd exited ({status}): {}", self.name, self.sshd_log());
            }
            assert!(
                Instant::now() < deadline,
                "{}: sshd did not listen within 10 s: {}",
                self.name,
                self.sshd_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.sshd = Some(child);
    }

    /// Stops its sshd (by the pid the harness started): new connections are refused.
    /// Sessions it already forked keep running until they end.
    pub(crate) fn stop_sshd(&mut self) {
        if let Some(mut child) = self.sshd.take() {
            signal(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What its sshd logged.
    pub(crate) fn sshd_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// The pids of the processes in its namespace.
    pub(crate) fn pids(&self) -> Vec<u32> {
        netns_pids(&self.netns.name)
    }
}

/// Underlay, controller and hosts, with their sshds and files.
pub(crate) struct Fleet {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) hosts: Vec<FleetHost>,
    /// The ssh config the controller uses (`ssh -F`).
    pub(crate) ssh_config: PathBuf,
    pub(crate) known_hosts: PathBuf,
    /// The client key every host authorizes.
    pub(crate) client_key: PathBuf,
    /// Where vmctl keeps its ssh connections to the hosts (`VMCTL_SSH_CONTROL_DIR` of
    /// every [`Fleet::controller_command`]): the test's own, never the user's default.
    pub(crate) control_dir: PathBuf,
    controller: NetnsGuard,
    underlay: NetnsGuard,
}

/// The controller's address on the underlay.
pub(crate) const CONTROLLER_ADDRESS: &str = "192.0.2.10";

impl Fleet {
    /// The default fleet: three hosts.
    pub(crate) fn new() -> Fleet {
        Fleet::with_hosts(3)
    }

    /// A fleet of `n` hosts (1 to 26): `host-a` at 192.0.2.11, `host-b` at .12, ….
    pub(crate) fn with_hosts(n: usize) -> Fleet {
        assert!((1..=26).contains(&n), "1 to 26 hosts");
        ensure_privsep_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        let underlay = NetnsGuard::made();
        let controller = NetnsGuard::made();
        let client_key = dir.path().join("client_key");
        keygen(&client_key, "vmctl-e2e-client");
        std::fs::copy(
            client_key.with_extension("pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        let mut fleet = Fleet {
            control_dir: dir.path().join("ssh"),
            ssh_config: dir.path().join("ssh_config"),
            known_hosts: dir.path().join("known_hosts"),
            client_key,
            hosts: Vec::new(),
            controller,
            underlay,
            dir,
        };
        fleet.underlay.ip(&["link", "add", "br0", "type", "bridge"]);
        fleet.underlay.ip(&["link", "set", "br0", "up"]);
        join_underlay(
            &fleet.underlay,
            &fleet.controller,
            "ctl",
            CONTROLLER_ADDRESS,
        );
        let mut known_hosts = String::new();
        for i in 0..n {
            let host = fleet.add_host(i);
            let key = std::fs::read_to_string(host.dir.join("ssh_host_ed25519_key.pub"))
                .expect("host key");
            let key: Vec<&str> = key.split_whitespace().take(2).collect();
            known_hosts.push_str(&format!(
                "{},{} {}\n",
                host.name,
                host.address,
                key.join(" ")
            ));
            fleet.hosts.push(host);
        }
        std::fs::write(&fleet.known_hosts, known_hosts).expect("known_hosts");
        fleet.write_ssh_config(&fleet.ssh_config, &fleet.known_hosts, &fleet.client_key);
        for host in &mut fleet.hosts {
            host.start_sshd();
        }
        fleet
    }

    fn add_host(&self, i: usize) -> FleetHost {
        let letter = char::from(b'a' + i as u8);
        let name = format!("host-{letter}");
        let dir = self.dir.path().join(&name);
        let state_dir = dir.join("state");
        std::fs::create_dir_all(&state_dir).expect("host dir");
        let address = format!("192.0.2.{}", 11 + i);
        let netns = NetnsGuard::made();
        join_underlay(&self.underlay, &netns, &format!("h{i}"), &address);
        let host_key = dir.join("ssh_host_ed25519_key");
        keygen(&host_key, &name);
        let config = format!(
            "ListenAddress {address}:22\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {authorized}\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             UseDNS no\n\
             MaxStartups 100\n\
             MaxSessions 100\n\
             LogLevel VERBOSE\n",
            host_key = host_key.display(),
            pid = dir.join("sshd.pid").display(),
            authorized = self.dir.path().join("authorized_keys").display(),
        );
        std::fs::write(dir.join("sshd_config"), config).expect("sshd_config");
        FleetHost {
            name,
            address,
            state_dir,
            dir,
            netns,
            sshd: None,
        }
    }

    /// Writes an ssh config naming every host (`Host host-a` → its address), with
    /// `known_hosts` and the client key `identity`; strict host key checking, no
    /// other file of the machine's (`-F` reads only this one).
    pub(crate) fn write_ssh_config(&self, path: &Path, known_hosts: &Path, identity: &Path) {
        let mut config = String::new();
        for host in &self.hosts {
            config.push_str(&format!(
                "Host {}\n    HostName {}\n",
                host.name, host.address
            ));
        }
        config.push_str(&format!(
            "Host *\n    User root\n    IdentityFile {}\n    IdentitiesOnly yes\n    \
             UserKnownHostsFile {}\n    GlobalKnownHostsFile /dev/null\n    \
             StrictHostKeyChecking yes\n    UpdateHostKeys no\n    \
             PasswordAuthentication no\n    KbdInteractiveAuthentication no\n",
            identity.display(),
            known_hosts.display()
        ));
        std::fs::write(path, config).expect("ssh config");
    }

    /// A new client key that no host authorizes.
    pub(crate) fn unauthorized_key(&self) -> PathBuf {
        let key = self.dir.path().join("unauthorized_key");
        if !key.exists() {
            keygen(&key, "vmctl-e2e-stranger");
        }
        key
    }

    /// The host named `name`.
    pub(crate) fn host(&self, name: &str) -> &FleetHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the fleet"))
    }

    pub(crate) fn host_mut(&mut self, name: &str) -> &mut FleetHost {
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the fleet"))
    }

    /// Runs `f` in a thread that has joined the controller's network namespace; every
    /// process it starts (ssh and its master connections) runs there. A panic in `f`
    /// is the caller's.
    pub(crate) fn in_controller<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let netns = Path::new("/run/netns").join(&self.controller.name);
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                let file = File::open(&netns).expect("the controller's netns file");
                // SAFETY: setns on an open namespace file moves only this thread, which
                // the scope ends before the fleet (and the namespace) can go.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            });
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// `program` run in the controller's network namespace, with `VMCTL_SSH_CONFIG`
    /// naming the fleet's ssh config. The child joins the namespace itself (`setns`
    /// between fork and exec) and is otherwise started exactly as a program run
    /// directly: no `ip netns exec` in between (its own process, a new mount namespace
    /// and a /sys remount per run), so that the fleet benchmark's runs and its local
    /// baseline's cost the same to start. Only for programs that touch no network
    /// state of this machine's (remote hosts only): /sys stays the machine's.
    pub(crate) fn controller_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt;
        let netns = File::open(Path::new("/run/netns").join(&self.controller.name))
            .expect("the controller's netns file");
        let mut command = Command::new(program);
        command
            .env("VMCTL_SSH_CONFIG", &self.ssh_config)
            .env("VMCTL_SSH_CONTROL_DIR", &self.control_dir);
        // SAFETY: the closure only calls setns(2), which is async-signal-safe, on a
        // file the closure owns (opened before the fork, closed on exec).
        unsafe {
            command.pre_exec(move || {
                if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        command
    }

    /// `ssh -F <fleet config> ARGS…` from the controller.
    pub(crate) fn ssh(&self, args: &[&str]) -> Command {
        let mut command = self.controller_command(SSH);
        command
            .arg("-F")
            .arg(&self.ssh_config)
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"])
            .args(args);
        command
    }

    /// The controller's namespace name.
    pub(crate) fn controller_netns(&self) -> &str {
        &self.controller.name
    }

    /// The pids of the processes in the controller's namespace: what vmctl left
    /// running here (ssh masters, the local ends of kept agents' sessions).
    pub(crate) fn controller_pids(&self) -> Vec<u32> {
        netns_pids(&self.controller.name)
    }

    /// The vmctl agents running on the hosts (`vmctl agent …`, kept or not), as
    /// `host pid cmdline`.
    pub(crate) fn agents(&self) -> Vec<String> {
        let mut found = Vec::new();
        for host in &self.hosts {
            for pid in host.pids() {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                if args.get(1).is_some_and(|a| a == "agent") {
                    found.push(format!("{} {pid} {}", host.name, args.join(" ")));
                }
            }
        }
        found
    }

    /// Closes the ssh connections vmctl kept in `dir` (`ssh -O exit` to each master's
    /// socket), which ends the kept agents behind them, then waits (at most 10 s)
    /// until no agent runs on any host and nothing runs in the controller's
    /// namespace; what still runs then is the error.
    pub(crate) fn close_kept_in(&self, dir: &Path) -> Result<(), String> {
        use std::os::unix::fs::FileTypeExt;
        let entries = std::fs::read_dir(dir).map(|d| d.flatten().collect::<Vec<_>>());
        for entry in entries.unwrap_or_default() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let socket = entry.file_type().is_ok_and(|t| t.is_socket());
            // to-agent-*.sock are forwards a master listens on, not masters.
            if socket && !name.starts_with("to-agent-") {
                let control = format!("ControlPath={}", entry.path().display());
                let child = self
                    .ssh(&["-o", &control, "-O", "exit", "kept"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn();
                // Bounded: a socket that is no master's may never answer.
                if let Ok(mut child) = child {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (agents, local) = (self.agents(), self.controller_pids());
            if agents.is_empty() && local.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "10 s after closing the kept connections in {}: agents {agents:?}, controller pids {local:?}",
                    dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// [`Fleet::close_kept_in`] the fleet's own control dir.
    pub(crate) fn close_kept(&self) -> Result<(), String> {
        self.close_kept_in(&self.control_dir)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // The connections vmctl kept, closed the way a user closes them (the agents
        // behind them end with them); what does not end is killed below. Said, not
        // panicked: this also runs while a failed test unwinds.
        if let Err(left) = self.close_kept() {
            eprintln!("fleet: {left}; killed");
        }
        for host in &mut self.hosts {
            host.stop_sshd();
        }
        // Sessions, agents, ssh masters: whatever still runs in the fleet's namespaces.
        let me = std::process::id();
        let names = self
            .hosts
            .iter()
            .map(|h| h.netns.name.clone())
            .chain([self.controller.name.clone(), self.underlay.name.clone()]);
        for name in names {
            for pid in netns_pids(&name) {
                if pid != me {
                    signal(pid, libc::SIGKILL);
                }
            }
        }
        // The NetnsGuards delete the namespaces (hosts first: their veths go with
        // them), the TempDir the files.
    }
}

/// A veth from the underlay's bridge (`port` on that side) to `eth0` in `netns`, with
/// `address`/24, both ends up.
fn join_underlay(underlay: &NetnsGuard, netns: &NetnsGuard, port: &str, address: &str) {
    underlay.ip(&[
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &netns.name,
    ]);
    underlay.ip(&["link", "set", port, "master", "br0", "up"]);
    netns.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"]);
    netns.ip(&["link", "set", "eth0", "up"]);
    netns.ip(&["link", "set", "lo", "up"]);
}

/// A new ed25519 key pair at `path` (and `path.pub`), no passphrase.
fn keygen(path: &Path, comment: &str) {
    let out = Command::new(SSH_KEYGEN)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("ssh-keygen runs");
    assert!(out.status.success(), "ssh-keygen: {}", text(&out));
}

/// sshd refuses to start without its privilege-separation directory, which the
/// openssh-server package's service start makes (none runs here).
fn ensure_privsep_dir() {
    use std::os::unix::fs::DirBuilderExt;
    let dir = Path::new("/run/sshd");
    if !dir.exists() {
        match std::fs::DirBuilder::new().mode(0o755).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("cannot make /run/sshd: {e}"),
        }
    }
}

/// The pids of the processes in the named namespace (`ip netns pids`).
pub(crate) fn netns_pids(name: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn signal(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill has no memory preconditions; the pid is one this fleet started
        // or one `ip netns pids` found in the fleet's own namespaces.
        unsafe { libc::kill(pid, signal) };
    }
}
