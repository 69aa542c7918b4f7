//! Compiles the VMM's seccomp filters when vmctl is built, as Firecracker does: every
//! thread kind's filter (`src/vmm/seccomp/kinds.rs` and the rule files it names), for a
//! jailed VMM and an unjailed one, killing or logging what it does not allow, becomes a
//! BPF program in `$OUT_DIR/seccomp_programs.rs`, which `src/vmm/seccomp/mod.rs`
//! includes. A VMM then installs programs and never runs seccompiler's compiler.
//!
//! The rule files are the lib's own, read here as modules of this script: what is
//! audited is what is compiled.

#[path = "src/vmm/seccomp/base.rs"]
mod base;
#[path = "src/vmm/seccomp/compile.rs"]
mod compile;
#[path = "src/vmm/seccomp/control.rs"]
mod control;
#[path = "src/vmm/seccomp/device.rs"]
mod device;
#[path = "src/vmm/seccomp/kinds.rs"]
mod kinds;
#[path = "src/vmm/seccomp/main.rs"]
mod main;
#[path = "src/vmm/seccomp/rule.rs"]
mod rule;
#[path = "src/vmm/seccomp/vcpu.rs"]
mod vcpu;

pub use rule::{any, arg_in, ioctl, no_exec, Only, Rule};

use std::fmt::Write as _;
use std::path::PathBuf;

use seccompiler::{SeccompAction, TargetArch};

fn main() {
    println!("cargo::rerun-if-changed=src/vmm/seccomp");
    println!("cargo::rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut text = String::from(
        "/// Every thread kind's filter, jailed or not, killing or logging (runtime/build.rs).\n\
         static PROGRAMS: &[Program] = &[\n",
    );
    for (kind, _) in kinds::KINDS {
        for jailed in [true, false] {
            for (log, mismatch) in [
                (false, SeccompAction::KillProcess),
                (true, SeccompAction::Log),
            ] {
                let rules = kinds::rules_of(kind, jailed);
                let program = compile::compile(&rules, mismatch, TargetArch::x86_64)
                    .unwrap_or_else(|e| panic!("the {kind} filter does not compile: {e}"));
                let _ = writeln!(
                    text,
                    "    Program {{ kind: {kind:?}, jailed: {jailed}, log: {log}, bpf: &["
                );
                for i in &program {
                    let _ = writeln!(
                        text,
                        "        sock_filter {{ code: {:#06x}, jt: {}, jf: {}, k: {:#010x} }},",
                        i.code, i.jt, i.jf, i.k
                    );
                }
                text.push_str("    ] },\n");
            }
        }
    }
    text.push_str("];\n");
    let path = out.join("seccomp_programs.rs");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
