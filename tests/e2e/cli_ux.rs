//! What a new user meets first: exit codes of usage errors, one colour decision,
//! completions and man pages, durations as people write them, hints that say what to
//! write, and saved plans (applied from anywhere without asking, refused when edited).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::{is_root, repo_root, skip_unless, stderr, stdout, vmctl, vmctl_in};

fn run(args: &[&str]) -> Output {
    run_with(args, &[])
}

/// Runs vmctl in the repo with `env` set (and NO_COLOR / CLICOLOR_FORCE cleared unless
/// given), stdout and stderr piped.
fn run_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    let clear = ["NO_COLOR", "CLICOLOR_FORCE", "CLICOLOR"];
    vmctl_in(&repo_root(), &clear, &env, args)
}

fn coloured(text: &str) -> bool {
    text.contains("\x1b[")
}

#[test]
fn usage_errors_exit_1_never_2() {
    // No command: the help, on stderr, and 1.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("Usage: vmctl"), "{}", stderr(&out));
    assert!(stderr(&out).contains("plan"), "{}", stderr(&out));
    for args in [
        &["plan", "--bogus"][..],
        &["plan", "--detailed-exitcode", "--bogus"],
        &["completions"],
        &["completions", "tcsh"],
        &["frobnicate"],
        &["--color", "sometimes", "validate"],
        &["apply", "--lock-timeout", "soon"],
        &["apply", "--parallelism", "0"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with("error:"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    for args in [
        &["--help"][..],
        &["--version"],
        &["plan", "--help"],
        &["help"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(!stdout(&out).is_empty(), "{args:?}");
    }
}

#[test]
fn durations_as_people_write_them() {
    for duration in ["90s", "1m30s", "1.5s", "500ms", "0", "5"] {
        // The duration is read; the missing config is what fails.
        let out = run(&[
            "apply",
            "/nonexistent/vmctl-e2e",
            "--lock-timeout",
            duration,
        ]);
        assert_eq!(out.status.code(), Some(1), "{duration}");
        assert!(
            !stderr(&out).contains("invalid value"),
            "{duration}: {}",
            stderr(&out)
        );
    }
    let out = run(&["apply", "--stop-timeout", "1x"]);
    assert!(stderr(&out).contains("1m30s"), "{}", stderr(&out));
}

/// The quickstart planned against the empty live-state fixture.
fn plan_args(dir: &Path) -> Vec<String> {
    let fixture = repo_root().join("tests/fixtures/live/empty.json");
    let text = std::fs::read_to_string(fixture).expect("fixture");
    let live = dir.join("empty.json");
    let root = repo_root().display().to_string();
    std::fs::write(&live, text.replace("@REPO@", &root)).expect("write");
    let live = live.display().to_string();
    ["plan", "examples/quickstart", "--live", &live]
        .map(String::from)
        .to_vec()
}

#[test]
fn color_always_colours_piped_output_of_every_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = plan_args(dir.path());
    let plan: Vec<&str> = plan.iter().map(String::as_str).collect();
    let with = |color: &str, env: &[(&str, &str)]| {
        let mut args = vec!["--color", color];
        args.extend(&plan);
        run_with(&args, env)
    };
    // A plan on a pipe: coloured only when asked (or forced by CLICOLOR_FORCE).
    assert!(coloured(&stdout(&with("always", &[]))));
    assert!(coloured(&stdout(&with("always", &[("NO_COLOR", "1")]))));
    assert!(!coloured(&stdout(&with(
        "never",
        &[("CLICOLOR_FORCE", "1")]
    ))));
    assert!(!coloured(&stdout(&with("auto", &[]))));
    assert!(coloured(&stdout(&with("auto", &[("CLICOLOR_FORCE", "1")]))));
    let forced_but_no = with("auto", &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
    assert!(!coloured(&stdout(&forced_but_no)));

    // Diagnostics (miette) and clap's usage errors follow the same decision.
    let invalid = ["validate", "examples/bad/dependency-cycle"];
    let usage = ["plan", "--bogus"];
    for args in [&invalid[..], &usage[..]] {
        let always = run_with(&[&["--color", "always"], args].concat(), &[]);
        assert!(coloured(&stderr(&always)), "{args:?}: {}", stderr(&always));
        let auto = run_with(args, &[]);
        assert!(!coloured(&stderr(&auto)), "{args:?}: {}", stderr(&auto));
        let forced = run_with(args, &[("CLICOLOR_FORCE", "1")]);
        assert!(coloured(&stderr(&forced)), "{args:?}: {}", stderr(&forced));
        let never = run_with(&[&["--color", "never"], args].concat(), &[]);
        assert!(!coloured(&stderr(&never)), "{args:?}");
    }
}

#[test]
fn completions_for_each_shell_and_man_pages() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains("detailed-exitcode"), "{shell}");
    }
    // bash loads the script and knows how to complete vmctl.
    let bash = Command::new("bash")
        .args([
            "-c",
            "source <(\"$0\" completions bash) && complete -p vmctl",
            env!("CARGO_BIN_EXE_vmctl"),
        ])
        .output();
    if let Ok(bash) = bash {
        assert!(bash.status.success(), "{}", stderr(&bash));
        assert!(stdout(&bash).contains("vmctl"), "{}", stdout(&bash));
    }

    let out = run(&["man"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(".TH vmctl 1"), "{}", stdout(&out));
    let dir = tempfile::tempdir().expect("tempdir");
    let man1 = dir.path().join("man1");
    let out = run(&["man", man1.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for page in [
        "vmctl.1",
        "vmctl-plan.1",
        "vmctl-apply.1",
        "vmctl-completions.1",
        "vmctl-list.1",
        "vmctl-show.1",
        "vmctl-import.1",
    ] {
        let text = std::fs::read_to_string(man1.join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page}: {text}");
    }
    // The new commands and the global -C are completed, and their help has examples.
    let bash = stdout(&run(&["completions", "bash"]));
    for word in ["list", "show", "import", "--chdir", "--state"] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    for command in ["list", "show", "import"] {
        let out = run(&[command, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let help = stdout(&out);
        assert!(help.contains("Examples:\n  vmctl"), "{command}: {help}");
        assert!(help.contains("Exit codes:"), "{command}: {help}");
    }
    let out = run(&["man", "/proc/vmctl-e2e/man1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot write the man pages"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn kdl_v1_booleans_and_hints_that_say_what_to_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |text: &str| {
        let path = dir.path().join("main.kdl");
        std::fs::write(&path, text).expect("write");
        run(&[
            "--color",
            "never",
            "validate",
            path.to_str().expect("utf-8"),
        ])
    };
    let head = "project \"p\"\nhost \"local\"\npool \"p\" host=\"local\" type=\"dir\" {\n    path \"/srv/p\"\n}\n";
    let out = write(&format!(
        "{head}volume \"v\" pool=\"p\" size=\"1MiB\" {{\n    prevent-destroy true\n}}\n"
    ));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("help: KDL v2 writes booleans as #true / #false"),
        "{}",
        stderr(&out)
    );
    let out = write(&format!(
        "{head}volume \"v\" pool=\"p\" size=\"1MiB\" {{\n    prevent-destroy \"yes\"\n}}\nvolume \"w\" pool=\"p\"\n"
    ));
    let text = stderr(&out);
    assert!(
        text.contains("write `prevent-destroy #true` or `prevent-destroy #false`"),
        "{text}"
    );
    assert!(text.contains("add `size` to this volume"), "{text}");
    for line in text.lines().filter(|l| l.contains("help:")) {
        assert!(
            !line.contains(".md") && !line.contains("src/"),
            "a hint names a repository file: {line}"
        );
    }
}

/// A config with one pool and one volume under a temp dir: applying it needs root (the
/// host's lock and state dir) but no network and no VM.
struct Small {
    dir: tempfile::TempDir,
}

impl Small {
    fn new() -> Small {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().display();
        std::fs::create_dir(dir.path().join("config")).expect("mkdir");
        std::fs::write(
            dir.path().join("config/main.kdl"),
            format!(
                "project \"uxe2e\"\nhost \"local\" {{\n    state-dir \"{root}/state\"\n}}\npool \"p\" host=\"local\" type=\"dir\" {{\n    path \"{root}/pool\"\n}}\nvolume \"v\" pool=\"p\" size=\"1MiB\"\n"
            ),
        )
        .expect("write");
        Small { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `vmctl plan . -o ../saved.plan` in the config's folder.
    fn save_plan(&self) -> PathBuf {
        let out = vmctl()
            .args(["--color", "never", "plan", ".", "-o", "../saved.plan"])
            .current_dir(self.path("config"))
            .output()
            .expect("vmctl runs");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        self.path("saved.plan")
    }

    /// `vmctl apply FILE` from `/`, without a terminal and without --auto-approve.
    fn apply(&self, plan: &Path) -> Output {
        vmctl()
            .args(["--color", "never", "apply"])
            .arg(plan)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .expect("vmctl runs")
    }
}

#[test]
fn a_saved_plan_applies_from_any_directory_without_asking() {
    if skip_unless(is_root(), "root (a host's lock and state dir)") {
        return;
    }
    let small = Small::new();
    let saved = small.save_plan();
    let text = std::fs::read_to_string(&saved).expect("plan");
    let source = format!("\"source\":\"{}\"", small.path("config").display());
    assert!(text.contains(&source), "{text}");
    let out = small.apply(&saved);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("Apply complete: 2 done"),
        "{}",
        stdout(&out)
    );
    assert!(small.path("pool/v.raw").is_file());
}

#[test]
fn an_edited_saved_plan_is_refused_before_any_step() {
    if skip_unless(is_root(), "root (a host's lock and state dir)") {
        return;
    }
    let small = Small::new();
    let saved = small.save_plan();
    let text = std::fs::read_to_string(&saved).expect("plan");
    let pool = format!("\"{}\"", small.path("pool").display());
    let elsewhere = format!("\"{}\"", small.path("elsewhere").display());
    let edits = [
        ("a pool path", text.replace(&pool, &elsewhere)),
        (
            "a name",
            text.replace("\"name\":\"v\"", "\"name\":\"../../v\""),
        ),
        (
            "an action",
            text.replacen("\"action\":\"create\"", "\"action\":\"delete\"", 1),
        ),
    ];
    for (what, edited) in edits {
        assert_ne!(edited, text, "{what}: the edit changed nothing");
        std::fs::write(&saved, &edited).expect("write");
        let out = small.apply(&saved);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stdout(&out));
        assert!(
            stderr(&out).contains("was edited"),
            "{what}: {}",
            stderr(&out)
        );
        for made in ["pool", "elsewhere", "v.raw"] {
            assert!(!small.path(made).exists(), "{what}: {made} was made");
        }
    }
    // As written, it applies.
    std::fs::write(&saved, &text).expect("write");
    let out = small.apply(&saved);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Issue 10: a host that cannot be reached is one diagnostic naming it, and `--exclude-host`
/// leaves it out: not reached, nothing planned on it, the other hosts planned as usual.
#[test]
fn an_unreachable_host_is_named_and_exclude_host_leaves_it_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let config = format!(
        r#"project "xh"
host "local" {{ state-dir "{state}"; }}
host "far" {{ ssh "root@127.0.0.1:1"; }}
pool "near" host="local" type="dir" path="{near}"
pool "distant" host="far" type="dir" path="/srv/vmctl/distant"
"#,
        state = root.join("state").display(),
        near = root.join("near").display(),
    );
    std::fs::write(root.join("main.kdl"), config).expect("write config");
    let path = root.display().to_string();
    // The connections are kept by default, in the user's runtime dir: here one of the
    // test's own (nothing is made outside it).
    let xdg = root.join("xdg");
    std::fs::create_dir(&xdg).expect("xdg dir");
    let kept = xdg.join("vmctl/ssh");
    let run = |args: &[&str], control: Option<&str>| {
        let mut env = vec![("XDG_RUNTIME_DIR", xdg.as_os_str())];
        env.extend(control.map(|c| ("VMCTL_SSH_CONTROL_DIR", c.as_ref())));
        vmctl_in(
            &repo_root(),
            &["VMCTL_SSH_CONTROL_DIR", "VMCTL_SSH_CONFIG"],
            &env,
            args,
        )
    };
    let out = run(&["plan", &path], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    // Nothing listens on loopback port 1: ssh's own refusal, naming the host.
    assert!(
        err.contains("vmctl::host::unreachable") && err.contains("\"far\""),
        "{err}"
    );
    assert!(err.contains("--exclude-host"), "{err}");
    let mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).expect("made").permissions())
            & 0o777
    };
    assert_eq!(mode(&kept), 0o700, "the default kept dir, made private");
    assert_eq!(mode(&xdg.join("vmctl")), 0o700);
    // A kept dir others may enter is refused, saying what to do; `none` keeps nothing
    // and does not look at it.
    std::fs::set_permissions(&kept, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out = run(&["plan", &path], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("vmctl::ssh::control_dir"), "{err}");
    assert!(err.contains(&kept.display().to_string()), "{err}");
    assert!(
        err.contains("chmod 700") && err.contains("--ssh-control-dir none"),
        "{err}"
    );
    assert!(!err.contains("vmctl::host::unreachable"), "{err}");
    let out = run(&["plan", &path], Some("none"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("vmctl::host::unreachable"),
        "{}",
        stderr(&out)
    );
    let out = run(&["plan", &path, "--ssh-control-dir", ""], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("`none`"), "{}", stderr(&out));
    let out = run(&["plan", &path, "--exclude-host", "far", "--json"], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("plan JSON");
    let hosts: Vec<&str> = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["host"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(hosts, ["local"], "{plan}");
    // A name that is no host is an error with a suggestion, and nothing is planned.
    let out = run(&["plan", &path, "--exclude-host", "fra"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("vmctl::plan::unknown_host"), "{err}");
    assert!(err.contains("`far`"), "{err}");
    assert!(!err.contains("vmctl::host::unreachable"), "{err}");
}
