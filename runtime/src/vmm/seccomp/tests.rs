use super::*;

/// The kind's filter is in the binary for x86_64, the program its rules compile to,
/// and every rule has a reason; a call listed twice (in the base and the kind's file)
/// has its arguments checked both times, so that one rule never silently widens the
/// other.
pub fn compiles_for_x86_64(kind: ThreadKind) {
    use seccompiler::{SeccompAction, TargetArch};
    for jailed in [true, false] {
        for (action, mismatch) in [
            (Action::KillProcess, SeccompAction::KillProcess),
            (Action::Log, SeccompAction::Log),
        ] {
            let program = Filters::new(action, jailed).program(kind);
            let compiled =
                compile::compile(&rules(kind, jailed), mismatch, TargetArch::x86_64).unwrap();
            assert_eq!(program, compiled.as_slice(), "{kind}: the build's program");
            assert!(!program.is_empty());
            // seccomp takes at most 4096 instructions.
            assert!(
                program.len() < 4096,
                "{kind}: {} instructions",
                program.len()
            );
        }
        check_rules(kind, &rules(kind, jailed));
    }
}

fn check_rules(kind: ThreadKind, rules: &[Rule]) {
    for rule in rules {
        assert!(
            !rule.why.trim().is_empty(),
            "{kind}: syscall {} has no reason",
            rule.nr
        );
        let same = rules.iter().filter(|r| r.nr == rule.nr);
        assert!(
            same.count() == 1 || !matches!(rule.only, Only::Any),
            "{kind}: syscall {} listed twice, once with any arguments",
            rule.nr
        );
    }
}

/// What no VMM thread may do, whatever its kind: start programs, make sockets to
/// anywhere, open files by path (the vCPU may only re-create its console log), trace,
/// load code, change its privileges or start threads once running.
#[test]
fn no_filter_allows_what_a_vmm_never_does() {
    let never = [
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_socket,
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_ptrace,
        libc::SYS_process_vm_writev,
        libc::SYS_open,
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_fork,
        libc::SYS_vfork,
        libc::SYS_setuid,
        libc::SYS_setresuid,
        libc::SYS_capset,
        libc::SYS_mount,
        libc::SYS_init_module,
        libc::SYS_kill,
        libc::SYS_seccomp,
        libc::SYS_prctl,
    ];
    for kind in ThreadKind::ALL {
        for jailed in [true, false] {
            for rule in rules(kind, jailed) {
                assert!(
                    !never.contains(&rule.nr),
                    "{kind} allows syscall {}",
                    rule.nr
                );
            }
        }
    }
    // Jailed (the default), no thread opens anything; unjailed, only the vCPU may
    // (its console log, rotated by path).
    for kind in ThreadKind::ALL {
        assert!(
            rules(kind, true).iter().all(|r| r.nr != libc::SYS_openat),
            "{kind} may open files in the jail"
        );
        assert_eq!(
            rules(kind, false).iter().any(|r| r.nr == libc::SYS_openat),
            kind == ThreadKind::Vcpu,
            "{kind}"
        );
    }
}

/// `ioctl`, `openat`, `mmap` and `mprotect` are only ever allowed with their arguments
/// checked.
#[test]
fn the_riskiest_calls_are_allowed_only_with_checked_arguments() {
    let checked = [
        libc::SYS_ioctl,
        libc::SYS_openat,
        libc::SYS_mmap,
        libc::SYS_mprotect,
        libc::SYS_dup2,
        libc::SYS_fcntl,
    ];
    for (kind, jailed) in ThreadKind::ALL
        .into_iter()
        .flat_map(|k| [(k, true), (k, false)])
    {
        for rule in rules(kind, jailed) {
            if checked.contains(&rule.nr) {
                assert!(
                    !matches!(rule.only, Only::Any),
                    "{kind}: {} unchecked",
                    rule.nr
                );
            }
        }
    }
}

#[test]
fn kvm_request_numbers_are_the_kernels() {
    assert_eq!(vcpu::KVM_RUN, 0xae80);
    assert_eq!(vcpu::KVM_GET_REGS, 0x8090_ae81);
}

/// In a forked child: installs `kind`'s filter, then calls `call`; returns how the
/// child ended (its wait status).
fn in_child_with_filter(kind: ThreadKind, call: fn()) -> libc::c_int {
    let filters = Filters::new(Action::KillProcess, true);
    // SAFETY: the child only makes system calls (the filter is compiled before the
    // fork; installing it allocates nothing) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        if filters.install(kind).is_err() {
            // SAFETY: _exit in the child.
            unsafe { libc::_exit(3) };
        }
        call();
        // SAFETY: _exit in the child.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child we forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

#[test]
fn a_call_outside_the_filter_kills_with_sigsys_and_one_inside_does_not() {
    for kind in [
        ThreadKind::Vcpu,
        ThreadKind::Device,
        ThreadKind::Control,
        ThreadKind::Main,
    ] {
        let status = in_child_with_filter(kind, || {
            // SAFETY: socket has no memory-safety preconditions.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        });
        assert!(libc::WIFSIGNALED(status), "{kind}: status {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS, "{kind}");
    }
    // The main thread may write and exit (the others end with `exit`, not `_exit`).
    let status = in_child_with_filter(ThreadKind::Main, || {
        let buf = [0u8; 1];
        // SAFETY: a valid buffer; fd 2 or not, write only reads it.
        unsafe { libc::write(2, buf.as_ptr().cast(), 0) };
    });
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status:#x}"
    );
}
