//! Pools, volumes and the files a config names, through the real binary (issue 9, items
//! 3, 6, 8, 12 and 16): symlinks and non-regular files in a pool are refused and their
//! targets left alone; modes do not depend on the umask; a pool dir vmctl did not make
//! is kept and destroy says why; leftovers of a killed apply are cleaned; Ctrl-C stops a
//! long base-image hash; `plan` checks `kernel`, `initrd` and `from`.
//!
//! Each test has its own temp dir (config, state dir, pools) and a host whose `netns`
//! never exists: pools and volumes need none, and nothing touches the machine's network.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, vmctl};
use crate::vm::{alive, KillOnDrop};

/// Pools and volumes belong to root on a real host; the tests need root to act as one
/// (and `setpriv` to try reading as another user).
fn skip() -> bool {
    support::skip_unless(support::is_root(), "root")
}

struct Storage {
    dir: tempfile::TempDir,
}

impl Storage {
    fn new() -> Storage {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("config")).unwrap();
        Storage { dir }
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn pool_dir(&self) -> PathBuf {
        self.dir.path().join("pool")
    }

    /// A victim file outside the pool: `keep` (4 bytes).
    fn victim(&self) -> PathBuf {
        let path = self.dir.path().join("victim");
        fs::write(&path, b"keep").unwrap();
        path
    }

    /// Writes the config: the host, pool `fast` at [`Storage::pool_dir`], and `rest`.
    fn write(&self, rest: &str) {
        let text = format!(
            r#"project "st"
host "local" {{
    state-dir "{}"
    netns "vmctl-e2e-never-{}"
}}
pool "fast" host="local" type="dir" {{
    path "{}"
}}
{rest}
"#,
            self.state_dir().display(),
            std::process::id(),
            self.pool_dir().display()
        );
        fs::write(self.config_dir().join("main.kdl"), text).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        support::vmctl_on(&self.config_dir(), args)
    }

    fn apply(&self) -> Output {
        self.run(&["apply", "--auto-approve"])
    }

    fn destroy(&self) -> Output {
        self.run(&["destroy", "--auto-approve"])
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether `text` says `expected`, however the diagnostic renderer wrapped its lines.
fn says(text: &str, expected: &str) -> bool {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_whitespace() && *c != '|')
            .collect()
    };
    squash(text).contains(&squash(expected))
}

fn ok(out: &Output) -> String {
    let text = text(out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    text
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const DATA: &str = r#"volume "data" pool="fast" size="1MiB""#;

#[test]
fn under_umask_000_pool_dirs_are_0700_and_volumes_0600_and_unreadable_to_others() {
    if skip() {
        return;
    }
    let s = Storage::new();
    // Others may traverse the test's own dir, so only vmctl's modes keep them out.
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    s.write(DATA);
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"umask 000 && exec "$0" --color never apply --auto-approve "$1""#)
        .arg(env!("CARGO_BIN_EXE_vmctl"))
        .arg(s.config_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    ok(&out);
    let pool = s.pool_dir();
    assert_eq!(mode(&pool), 0o700);
    for file in ["data.raw", "data.vmctl.json", ".vmctl.json"] {
        assert_eq!(mode(&pool.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&s.state_dir().join("st/pools")), 0o700);
    let read_as_nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(pool.join("data.raw"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!read_as_nobody.success(), "nobody read the volume");
    ok(&s.destroy());
    assert!(
        !pool.exists(),
        "vmctl made the pool dir, so destroy removes it"
    );
}

#[test]
fn symlinks_where_a_partial_file_or_marker_should_be_are_refused_and_the_victim_unchanged() {
    if skip() {
        return;
    }
    let s = Storage::new();
    s.write("");
    ok(&s.apply());
    let victim = s.victim();
    let partial = s.pool_dir().join("data.raw.vmctl-partial");
    symlink(&victim, &partial).unwrap();

    s.write(DATA);
    let out = s.apply();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(says(&t, &partial.display().to_string()), "{t}");
    assert!(t.contains("symbolic link"), "{t}");
    assert_eq!(fs::read(&victim).unwrap(), b"keep");
    assert!(!s.pool_dir().join("data.raw").exists());

    // A symlink where the volume's marker goes: refused naming it, never followed.
    fs::remove_file(&partial).unwrap();
    let marker = s.pool_dir().join("data.vmctl.json");
    symlink(&victim, &marker).unwrap();
    let out = s.apply();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(says(&t, &marker.display().to_string()), "{t}");
    assert_eq!(fs::read(&victim).unwrap(), b"keep");

    // Without the symlinks it applies, and growing goes to the real file.
    fs::remove_file(&marker).unwrap();
    ok(&s.apply());
    let raw = s.pool_dir().join("data.raw");
    assert_eq!(fs::metadata(&raw).unwrap().len(), 1 << 20);

    // The volume replaced by a symlink: never grown through it.
    fs::remove_file(&raw).unwrap();
    symlink(&victim, &raw).unwrap();
    s.write(&DATA.replace("1MiB", "2MiB"));
    let out = s.apply();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(says(&t, &raw.display().to_string()), "{t}");
    assert_eq!(fs::read(&victim).unwrap(), b"keep");
    fs::remove_file(&raw).unwrap();
}

#[test]
fn a_symlinked_or_group_writable_pool_path_is_refused() {
    if skip() {
        return;
    }
    let s = Storage::new();
    let elsewhere = s.dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o700)).unwrap();
    symlink(&elsewhere, s.pool_dir()).unwrap();
    s.write(DATA);
    let out = s.apply();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("symbolic link"), "{t}");
    assert!(says(&t, &s.pool_dir().display().to_string()), "{t}");
    assert!(names(&elsewhere).is_empty(), "{:?}", names(&elsewhere));

    fs::remove_file(s.pool_dir()).unwrap();
    fs::create_dir(s.pool_dir()).unwrap();
    fs::set_permissions(s.pool_dir(), fs::Permissions::from_mode(0o775)).unwrap();
    let out = s.apply();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("writable by its group"), "{t}");
    assert!(names(&s.pool_dir()).is_empty());
}

#[test]
fn destroy_keeps_a_pool_dir_vmctl_did_not_make_and_says_why() {
    if skip() {
        return;
    }
    let s = Storage::new();
    fs::create_dir(s.pool_dir()).unwrap();
    fs::set_permissions(s.pool_dir(), fs::Permissions::from_mode(0o750)).unwrap();
    s.write(DATA);
    ok(&s.apply());
    let t = ok(&s.destroy());
    assert!(s.pool_dir().is_dir(), "the dir was there before vmctl");
    assert!(
        names(&s.pool_dir()).is_empty(),
        "{:?}",
        names(&s.pool_dir())
    );
    assert!(t.contains("Kept the directory"), "{t}");
    assert!(t.contains("vmctl did not make it"), "{t}");

    // A dir vmctl made but that holds someone's file: kept, and the file named.
    fs::remove_dir(s.pool_dir()).unwrap();
    ok(&s.apply());
    fs::write(s.pool_dir().join("notes.txt"), "mine").unwrap();
    let t = ok(&s.destroy());
    assert!(
        t.contains("it holds files vmctl did not make: notes.txt"),
        "{t}"
    );
    assert_eq!(names(&s.pool_dir()), ["notes.txt"]);
}

#[test]
fn the_next_apply_and_destroy_remove_the_leftovers_of_a_killed_apply() {
    if skip() {
        return;
    }
    let s = Storage::new();
    s.write("");
    ok(&s.apply());
    // What an apply killed while writing markers and building a volume leaves.
    let pool = s.pool_dir();
    fs::write(pool.join(".vmctl.json.tmp-999999"), "{\"proj").unwrap();
    fs::write(pool.join("old.vmctl.json.tmp-999998"), "").unwrap();
    fs::write(
        pool.join("old.vmctl.json"),
        r#"{"project":"st","name":"old"}"#,
    )
    .unwrap();
    fs::write(pool.join("old.raw.vmctl-partial"), "half").unwrap();
    s.write(DATA);
    ok(&s.apply());
    assert_eq!(
        names(&pool),
        [".vmctl.json", "data.raw", "data.vmctl.json"],
        "the leftovers are gone"
    );

    fs::write(pool.join("data.vmctl.json.tmp-999997"), "").unwrap();
    fs::write(pool.join("gone.raw.vmctl-partial"), "half").unwrap();
    let t = ok(&s.destroy());
    assert!(!pool.exists(), "{t}");
}

#[test]
fn ctrl_c_stops_hashing_a_base_image() {
    if skip() {
        return;
    }
    let s = Storage::new();
    // 64 GiB of holes: nothing on disk, but minutes to hash.
    let image = s.dir.path().join("big.img");
    fs::File::create(&image).unwrap().set_len(64 << 30).unwrap();
    s.write(&format!(
        "volume \"data\" pool=\"fast\" size=\"64GiB\" {{\n    from \"{}\"\n}}",
        image.display()
    ));
    let out_path = s.dir.path().join("out");
    let mut child = vmctl()
        .args(["--color", "never", "apply", "--auto-approve"])
        .arg(s.config_dir())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let _guard = KillOnDrop { pid };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(&out_path)
        .unwrap_or_default()
        .contains("create volume.data: started")
    {
        assert!(Instant::now() < deadline, "the volume step never started");
        assert!(alive(pid), "vmctl ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill has no memory-safety preconditions; pid is the child started above.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let stopped = Instant::now();
    let deadline = stopped + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "vmctl still hashing 20 s after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = fs::read_to_string(&out_path).unwrap();
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(out.contains("cancelled"), "{out}");
    assert!(!s.pool_dir().join("data.raw").exists());
    assert!(!s.pool_dir().join("data.raw.vmctl-partial").exists());
}

/// An ELF64 header with `machine` in `e_machine` (62 is x86-64).
fn elf(path: &Path, machine: u16) {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2;
    h[5] = 1;
    h[16] = 2;
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    fs::write(path, h).unwrap();
}

fn vm(name: &str, kernel: &Path, initrd: Option<&Path>) -> String {
    let initrd = initrd
        .map(|p| format!("    initrd \"{}\"\n", p.display()))
        .unwrap_or_default();
    format!(
        "vm \"{name}\" host=\"local\" {{\n    cpus 1\n    memory \"64MiB\"\n    kernel \"{}\"\n{initrd}}}\n",
        kernel.display()
    )
}

#[test]
fn plan_checks_kernel_initrd_and_from_and_applies_nothing() {
    if skip() {
        return;
    }
    let s = Storage::new();
    let d = s.dir.path();
    let fifo = d.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let arm = d.join("arm-vmlinux");
    elf(&arm, 183);
    let good = d.join("vmlinux");
    elf(&good, 62);
    let config = [
        vm("a", &fifo, Some(d)),
        vm("b", &d.join("missing"), None),
        vm("c", &arm, None),
        "volume \"data\" pool=\"fast\" size=\"1MiB\" {\n    from \"/dev/zero\"\n}\n".to_owned(),
    ]
    .concat();
    s.write(&config);
    for command in ["plan", "apply"] {
        let out = s.run(&[command, "--auto-approve"][..if command == "plan" { 1 } else { 2 }]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{command}: {t}");
        for expected in [
            "vmctl::plan::file_not_regular",
            "`kernel` of vm `a`",
            &format!("{} is a FIFO, not a regular file", fifo.display()),
            "`initrd` of vm `a`",
            "is a directory, not a regular file",
            "vmctl::plan::file_missing",
            "`kernel` of vm `b`",
            "vmctl::plan::not_a_kernel",
            "e_machine is EM_AARCH64",
            "`from` of volume `data`",
            "/dev/zero is a character device",
            // The snippet points at the setting in the file.
            &format!("kernel \"{}\"", fifo.display()),
            "5 files named by the config cannot be used",
        ] {
            assert!(says(&t, expected), "{command}: {expected:?} in\n{t}");
        }
        assert!(!s.pool_dir().exists(), "{command} made the pool");
        assert!(
            !s.state_dir().join("st/vms").exists(),
            "{command} made a VM"
        );
    }

    // With regular files and a kernel that looks like one, the plan is made.
    let initrd = d.join("initrd");
    fs::write(&initrd, b"ramdisk").unwrap();
    let image = d.join("rootfs.img");
    fs::write(&image, b"image").unwrap();
    s.write(
        &[
            vm("a", &good, Some(&initrd)),
            format!(
                "volume \"data\" pool=\"fast\" size=\"1MiB\" {{\n    from \"{}\"\n}}\n",
                image.display()
            ),
        ]
        .concat(),
    );
    let out = s.run(&["plan"]);
    let t = ok(&out);
    // The pool, the volume, the VM, and the host's netns the VM lives in.
    assert!(t.contains("Plan: 4 to add"), "{t}");
}
