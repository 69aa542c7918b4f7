//! One rule of a filter: a system call a thread kind makes, the arguments it may make
//! it with, and why. Shared with the build script (`runtime/build.rs`), which compiles
//! the filters, so it needs nothing but `libc`.

/// Which arguments of a system call a rule allows.
#[derive(Debug, Clone, Copy)]
pub enum Only {
    /// Any.
    Any,
    /// Argument `arg` (0-based) equal to one of `values` (compared as 64 bits).
    ArgIn {
        /// The argument.
        arg: u8,
        /// The values allowed.
        values: &'static [u64],
    },
    /// Argument `arg` with none of the bits of `mask` set.
    BitsClear {
        /// The argument.
        arg: u8,
        /// The bits refused.
        mask: u64,
    },
}

/// One allowed system call and why it is allowed.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The system call (`libc::SYS_…`).
    pub nr: i64,
    /// The arguments allowed.
    pub only: Only,
    /// Why the thread makes it.
    pub why: &'static str,
}

/// `nr` with any arguments.
pub const fn any(nr: i64, why: &'static str) -> Rule {
    Rule {
        nr,
        only: Only::Any,
        why,
    }
}

/// `nr` with argument `arg` one of `values`.
pub const fn arg_in(nr: i64, arg: u8, values: &'static [u64], why: &'static str) -> Rule {
    Rule {
        nr,
        only: Only::ArgIn { arg, values },
        why,
    }
}

/// `ioctl` with one of the request numbers `requests`.
pub const fn ioctl(requests: &'static [u64], why: &'static str) -> Rule {
    arg_in(libc::SYS_ioctl, 1, requests, why)
}

/// `nr` (mmap, mprotect) with protections (argument 2) that never make memory
/// executable: no code can be mapped or made runnable after start-up.
pub const fn no_exec(nr: i64, why: &'static str) -> Rule {
    Rule {
        nr,
        only: Only::BitsClear {
            arg: 2,
            mask: libc::PROT_EXEC as u64,
        },
        why,
    }
}
