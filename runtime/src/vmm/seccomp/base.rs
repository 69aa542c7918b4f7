//! What every VMM thread makes, whatever its kind: memory for the allocator, futexes
//! for locks, closing what it drops, and leaving the thread. Part of every filter.

use super::{any, arg_in, no_exec, Rule};

/// The base rules, one a line.
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    any(libc::SYS_futex, "locks, condition variables, joining threads"),
    no_exec(libc::SYS_mmap, "the allocator's arenas and large blocks; never executable"),
    no_exec(libc::SYS_mprotect, "the allocator grows an arena; never executable"),
    any(libc::SYS_munmap, "the allocator, a thread's signal stack, a vCPU's run area"),
    any(libc::SYS_mremap, "the allocator grows a large block"),
    any(libc::SYS_brk, "the allocator's main arena"),
    arg_in(libc::SYS_madvise, 2, &[libc::MADV_DONTNEED as u64], "the allocator trims; an ending thread releases its stack"),
    any(libc::SYS_close, "an fd dropped (a client gone, the VM stopping)"),
    arg_in(libc::SYS_fcntl, 1, &[libc::F_GETFD as u64], "debug builds check that an fd is open before closing it"),
    any(libc::SYS_rt_sigprocmask, "an ending thread blocks signals; pthread_kill"),
    any(libc::SYS_sigaltstack, "an ending thread removes its stack-overflow signal stack"),
    any(libc::SYS_exit, "a thread ends"),
    any(libc::SYS_clock_gettime, "the clock, where the vDSO cannot read it (a clocksource other than tsc)"),
];
