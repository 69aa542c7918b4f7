//! Remote hosts over OpenSSH, on the fleet harness ([`crate::fleet`]): vmctl's
//! runtime connects from the controller namespace to each host's sshd, ships the
//! `vmctl` binary under test once (content-addressed in the host's state dir) and
//! speaks the agent protocol with it; ssh's failures come back naming the host. Needs
//! root, iproute2, OpenSSH and /dev/kvm.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmctl_runtime::remote::build::Executable;
use vmctl_runtime::remote::client::CallError;
use vmctl_runtime::remote::protocol::{KvmAccess, Response, PROTOCOL};
use vmctl_runtime::remote::ship::{agent_path, connect, AgentOptions, ConnectError, Connected};
use vmctl_runtime::remote::ssh::{ControlDir, SshError, SshOptions, SshSession};

use crate::fleet::{self, Fleet};
use crate::lab::text;

/// The binary under test, as it is shipped.
fn vmctl_exe() -> Executable {
    Executable::at(Path::new(env!("CARGO_BIN_EXE_vmctl"))).expect("hashes the vmctl binary")
}

fn ssh_options(config: &Path) -> SshOptions {
    SshOptions {
        config: Some(config.to_owned()),
        connect_timeout: Duration::from_secs(5),
        ..SshOptions::default()
    }
}

fn agent_options(fleet: &Fleet, host: &str) -> AgentOptions {
    AgentOptions {
        state_dir: fleet.host(host).state_dir.clone(),
        sudo: false,
    }
}

/// One run's sessions: a control dir and a session per host.
fn sessions(config: &Path, hosts: &[&str]) -> Vec<SshSession> {
    let control = ControlDir::new().expect("control dir");
    hosts
        .iter()
        .map(|h| {
            SshSession::new(
                h.parse().expect("target"),
                ssh_options(config),
                Arc::clone(&control),
            )
        })
        .collect()
}

/// Connects to `host` in a session of its own.
fn connect_to(fleet: &Fleet, config: &Path, host: &str) -> Result<(), ConnectError> {
    let session = &sessions(config, &[host])[0];
    connect(session, &vmctl_exe(), &agent_options(fleet, host)).map(|c| drop(c.agent))
}

fn sha256_of_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).expect("opens");
    vmctl_runtime::remote::build::sha256_of(&mut file)
        .expect("reads")
        .0
}

#[test]
fn vmctl_is_shipped_once_to_each_host_and_probes_it() {
    if fleet::skip() {
        return;
    }
    let fleet = Fleet::new();
    let exe = vmctl_exe();
    let hosts = ["host-a", "host-b", "host-c"];

    // First run: every host lacks this build; it is shipped, then the agent answers.
    let first = fleet.in_controller(|| {
        let sessions = sessions(&fleet.ssh_config, &hosts);
        let mut out = Vec::new();
        for (session, host) in sessions.iter().zip(hosts) {
            let started = Instant::now();
            let connected = connect(session, &exe, &agent_options(&fleet, host))
                .unwrap_or_else(|e| panic!("{host}: {e}\n{}", fleet.host(host).sshd_log()));
            let elapsed = started.elapsed();
            let Connected {
                mut agent,
                hello,
                shipped,
            } = connected;
            let facts = agent.probe().expect("probe");
            agent.shutdown().expect("bye");
            out.push((host, hello, shipped, facts, elapsed));
        }
        out
    });
    for (host, hello, shipped, facts, elapsed) in &first {
        let shipped = shipped
            .as_ref()
            .unwrap_or_else(|| panic!("{host}: not shipped"));
        eprintln!(
            "{host}: connect + ship {} MiB + handshake + probe: {elapsed:?} (ship {:?})",
            shipped.bytes >> 20,
            shipped.elapsed
        );
        let path = agent_path(&agent_options(&fleet, host), &exe);
        assert_eq!(shipped.path, path);
        assert_eq!(shipped.bytes, exe.len);
        assert_eq!(
            sha256_of_file(&path),
            exe.sha256,
            "{host}: the shipped file"
        );
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o700);
        assert_eq!(mode(path.parent().expect("bin/")), 0o700);
        let bin: Vec<_> = std::fs::read_dir(path.parent().expect("bin/"))
            .expect("lists")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(bin.len(), 1, "{host}: no temp file left: {bin:?}");
        assert_eq!(hello.build, exe.sha256);
        assert_eq!(hello.protocol, PROTOCOL);
        assert_eq!(facts.euid, 0);
        assert_eq!(facts.kvm, KvmAccess::Usable, "{host}");
        assert_eq!(facts.build, exe.sha256);
        assert!(!facts.kernel_release.is_empty());
    }
    let modified = |host: &str| {
        std::fs::metadata(agent_path(&agent_options(&fleet, host), &exe))
            .and_then(|m| m.modified())
            .expect("shipped")
    };
    let before: Vec<_> = hosts.iter().map(|h| modified(h)).collect();

    // A second run (new control dir, new connections) ships nothing; so does a second
    // connect over the same connection.
    fleet.in_controller(|| {
        let sessions = sessions(&fleet.ssh_config, &hosts);
        for (session, host) in sessions.iter().zip(hosts) {
            for round in 0..2 {
                let started = Instant::now();
                let Connected {
                    mut agent, shipped, ..
                } = connect(session, &exe, &agent_options(&fleet, host)).expect("connects");
                let handshake = started.elapsed();
                assert!(shipped.is_none(), "{host}: shipped again");
                let started = Instant::now();
                agent.probe().expect("probe");
                eprintln!(
                    "{host}: {} connect + handshake: {handshake:?}, probe: {:?}",
                    ["fresh", "multiplexed"][round],
                    started.elapsed()
                );
                agent.shutdown().expect("bye");
            }
            // What a multiplexed round trip costs without the agent (`true`): the
            // rest of a connect is the agent's start (hashing its own executable).
            let started = Instant::now();
            let (status, _) = session.run("true", Stdio::null()).expect("runs");
            assert!(status.success());
            eprintln!(
                "{host}: multiplexed `ssh host true`: {:?}",
                started.elapsed()
            );
        }
    });
    let after: Vec<_> = hosts.iter().map(|h| modified(h)).collect();
    assert_eq!(before, after, "no file rewritten");
}

#[test]
fn the_shipped_agent_runs_through_plain_ssh() {
    if fleet::skip() {
        return;
    }
    let fleet = Fleet::with_hosts(1);
    let exe = vmctl_exe();
    fleet
        .in_controller(|| connect_to(&fleet, &fleet.ssh_config, "host-a"))
        .expect("connects");
    let path = agent_path(&agent_options(&fleet, "host-a"), &exe);
    let mut child = fleet
        .ssh(&["host-a", &format!("{} agent", path.display())])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(b"{\"type\":\"probe\"}\n{\"type\":\"reboot\"}\n")
            .expect("writes");
    }
    let out = child.wait_with_output().expect("ends");
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<Response> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        matches!(&lines[0], Response::Probe(f) if f.build == exe.sha256),
        "{lines:?}"
    );
    assert!(matches!(&lines[1], Response::Error(_)), "{lines:?}");
    assert_eq!(lines.len(), 2, "stdin ended, the agent exited: {lines:?}");
}

#[test]
fn a_host_whose_sshd_stopped_fails_alone_naming_it() {
    if fleet::skip() {
        return;
    }
    let mut fleet = Fleet::new();
    fleet.host_mut("host-c").stop_sshd();
    let fleet = &fleet;
    let results = fleet.in_controller(|| {
        ["host-a", "host-b", "host-c"].map(|h| connect_to(fleet, &fleet.ssh_config, h))
    });
    let [a, b, c] = results;
    a.expect("host-a connects");
    b.expect("host-b connects");
    let err = c.expect_err("host-c has no sshd");
    let message = err.to_string();
    assert!(
        matches!(&err, ConnectError::Ssh(SshError::Unreachable { host, line })
            if host == "host-c" && line.contains("Connection refused")),
        "{err:?}"
    );
    assert!(message.contains("host-c"), "{message}");
}

#[test]
fn an_unknown_host_key_is_refused_with_ssh_diagnostic() {
    if fleet::skip() {
        return;
    }
    let fleet = Fleet::with_hosts(1);
    let config = fleet.dir.path().join("ssh_config_unknown_keys");
    let empty = fleet.dir.path().join("known_hosts_empty");
    std::fs::write(&empty, "").expect("writes");
    fleet.write_ssh_config(&config, &empty, &fleet.client_key);
    let err = fleet
        .in_controller(|| connect_to(&fleet, &config, "host-a"))
        .expect_err("unknown host key");
    assert!(
        matches!(&err, ConnectError::Ssh(SshError::HostKey { host, line })
            if host == "host-a" && line.contains("Host key verification failed")),
        "{err:?}"
    );
    // Nothing was shipped over a connection that never was.
    assert!(!fleet.host("host-a").state_dir.join("bin").exists());
}

#[test]
fn a_refused_key_is_refused_with_ssh_diagnostic() {
    if fleet::skip() {
        return;
    }
    let fleet = Fleet::with_hosts(1);
    let config = fleet.dir.path().join("ssh_config_stranger");
    fleet.write_ssh_config(&config, &fleet.known_hosts, &fleet.unauthorized_key());
    let err = fleet
        .in_controller(|| connect_to(&fleet, &config, "host-a"))
        .expect_err("key refused");
    assert!(
        matches!(&err, ConnectError::Ssh(SshError::KeyRefused { host, line })
            if host == "host-a" && line.contains("Permission denied (publickey")),
        "{err:?}"
    );
}

#[test]
fn a_wrong_file_at_the_agent_path_is_replaced() {
    if fleet::skip() {
        return;
    }
    let fleet = Fleet::with_hosts(1);
    let exe = vmctl_exe();
    let path = agent_path(&agent_options(&fleet, "host-a"), &exe);
    std::fs::create_dir_all(path.parent().expect("bin/")).expect("bin/");
    // An "agent" of another build at this build's path (a corrupted or tampered file).
    std::fs::write(
        &path,
        "#!/bin/sh\nread line\necho '{\"type\":\"hello\",\"protocol\":1,\"build\":\"other\"}'\ncat >/dev/null\n",
    )
    .expect("writes");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let connected = fleet.in_controller(|| {
        let session = &sessions(&fleet.ssh_config, &["host-a"])[0];
        connect(session, &exe, &agent_options(&fleet, "host-a")).map(|c| {
            let shipped = c.shipped.is_some();
            let build = c.hello.build.clone();
            drop(c.agent);
            (shipped, build)
        })
    });
    let (shipped, build) = connected.expect("connects");
    assert!(shipped, "another build at the path is replaced");
    assert_eq!(build, exe.sha256);
    assert_eq!(sha256_of_file(&path), exe.sha256);
}

#[test]
fn the_agent_ends_with_its_connection() {
    if fleet::skip() {
        return;
    }
    let fleet = Fleet::with_hosts(1);
    let exe = vmctl_exe();
    let agent_file = agent_path(&agent_options(&fleet, "host-a"), &exe);
    let agents_on_host = || {
        fleet
            .host("host-a")
            .pids()
            .into_iter()
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == agent_file)
            })
            .count()
    };
    fleet.in_controller(|| {
        let mut sessions = sessions(&fleet.ssh_config, &["host-a"]);
        let session = sessions.remove(0);
        let Connected { mut agent, .. } =
            connect(&session, &exe, &agent_options(&fleet, "host-a")).expect("connects");
        agent.probe().expect("probe");
        assert_eq!(agents_on_host(), 1, "one agent runs on the host");
        // The connection drops (its master exits): the agent sees the end of its stdin.
        session.close();
        let deadline = Instant::now() + Duration::from_secs(10);
        while agents_on_host() > 0 {
            assert!(
                Instant::now() < deadline,
                "the agent outlived its connection"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let err = agent.probe().expect_err("the connection is gone");
        assert!(
            matches!(&err, CallError::Ssh(_) | CallError::Gone { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("host-a"), "{err}");
    });
}

/// `vmctl agent` on this machine, no ssh: what the far side of every host runs. Needs
/// nothing special.
#[test]
fn the_agent_command_serves_the_protocol_on_stdio_only() {
    use std::io::Write;
    let exe = vmctl_exe();
    let mut child = crate::support::vmctl()
        .arg("agent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vmctl agent runs");
    let requests = format!(
        "{{\"type\":\"hello\",\"protocol\":{PROTOCOL},\"build\":\"{}\"}}\n{{oops\n{{\"type\":\"probe\"}}\n{{\"type\":\"bye\"}}\n{{\"type\":\"probe\"}}\n",
        exe.sha256
    );
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(requests.as_bytes()).expect("writes");
    let out = child.wait_with_output().expect("ends");
    drop(stdin);
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stderr.is_empty(), "nothing logged: {}", text(&out));
    let responses: Vec<Response> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a response: {l}: {e}")))
        .collect();
    assert_eq!(responses.len(), 4, "nothing after bye: {responses:?}");
    assert!(
        matches!(&responses[0], Response::Hello(h) if h.build == exe.sha256 && h.protocol == PROTOCOL)
    );
    assert!(matches!(&responses[1], Response::Error(_)));
    assert!(matches!(&responses[2], Response::Probe(f) if f.build == exe.sha256));
    assert_eq!(responses[3], Response::Bye);

    // Hidden from the command list, but its own help says what it is.
    let help = crate::support::vmctl()
        .arg("--help")
        .output()
        .expect("runs");
    assert!(!String::from_utf8_lossy(&help.stdout).contains("agent"));
    let help = crate::support::vmctl()
        .args(["agent", "--help"])
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("agent protocol on stdin and stdout"),
        "{help}"
    );
    assert!(help.contains("started by vmctl over ssh"), "{help}");
}
