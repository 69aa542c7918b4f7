//! Ctrl-C during an apply: the first SIGINT sets a flag (no new actions start; running
//! ones finish, and the command exits 130); a second one ends the process at once.
//! The handler only touches an atomic, writes a fixed message and may `_exit`: all
//! async-signal-safe.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first SIGINT.
pub static CANCEL: AtomicBool = AtomicBool::new(false);

const FIRST: &[u8] = b"\nInterrupt received: no new actions will start; waiting for the running ones to finish (Ctrl-C again to stop at once).\n";
const SECOND: &[u8] = b"\nSecond interrupt: stopping now.\n";

extern "C" fn on_sigint(_: libc::c_int) {
    if CANCEL.swap(true, Ordering::SeqCst) {
        // SAFETY: write and _exit are async-signal-safe; the buffer is static.
        unsafe {
            libc::write(2, SECOND.as_ptr().cast(), SECOND.len());
            libc::_exit(130);
        }
    }
    // SAFETY: as above.
    unsafe { libc::write(2, FIRST.as_ptr().cast(), FIRST.len()) };
}

/// Installs the handler (for the rest of the process).
pub fn install() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: installing a handler that only does async-signal-safe work.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
}
