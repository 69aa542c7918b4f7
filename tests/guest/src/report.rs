//! The guest's verdict: every failing check prints `testguest: FAIL <what>` and makes
//! the final line `testguest: failed` instead of `testguest: ok`.

use crate::serial;

pub struct Report {
    failures: u32,
}

impl Report {
    pub const fn new() -> Self {
        Report { failures: 0 }
    }

    /// Prints `testguest: FAIL <what>`.
    pub fn fail(&mut self, what: &[u8]) {
        self.fail_begin();
        serial::bytes(what);
        serial::end();
    }

    /// Starts a `testguest: FAIL ` line; the caller prints the rest and ends it.
    pub fn fail_begin(&mut self) {
        self.failures += 1;
        serial::begin();
        serial::bytes(b"FAIL ");
    }

    pub fn ok(&self) -> bool {
        self.failures == 0
    }

    /// Prints the final line: `testguest: ok` or `testguest: failed`.
    pub fn verdict(&self) {
        serial::line(if self.ok() { b"ok" } else { b"failed" });
    }
}
