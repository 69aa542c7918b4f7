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

/// One named check: every problem found prints `testguest: FAIL [cpu<n> ]<name>: <what>`;
/// [`Check::done`] prints `testguest: [cpu<n> ]check <name> ok` when there was none. So
/// every check prints at least one line, and a test can look for each by name.
pub struct Check<'a> {
    report: &'a mut Report,
    cpu: Option<u32>,
    name: &'static [u8],
    failed: bool,
}

impl<'a> Check<'a> {
    /// A check of the whole machine (`cpu` `None`) or of one CPU's view (its index, the
    /// BSP being 0).
    pub fn new(report: &'a mut Report, cpu: Option<u32>, name: &'static [u8]) -> Self {
        Check { report, cpu, name, failed: false }
    }

    fn begin(&mut self) {
        self.failed = true;
        self.report.fail_begin();
        if let Some(cpu) = self.cpu {
            serial::bytes(b"cpu");
            serial::dec(u64::from(cpu));
            serial::byte(b' ');
        }
        serial::bytes(self.name);
        serial::bytes(b": ");
    }

    /// A problem: `FAIL … <name>: <what>`.
    pub fn fail(&mut self, what: &[u8]) {
        self.begin();
        serial::bytes(what);
        serial::end();
    }

    /// A problem with the value found and the one expected, in hex:
    /// `FAIL … <name>: <what> (0x<got>, want 0x<want>)`.
    pub fn fail_value(&mut self, what: &[u8], got: u64, want: u64) {
        self.begin();
        serial::bytes(what);
        serial::bytes(b" (0x");
        serial::hex_min(got);
        serial::bytes(b", want 0x");
        serial::hex_min(want);
        serial::bytes(b")");
        serial::end();
    }

    /// `fail(what)` unless `ok`.
    pub fn expect(&mut self, ok: bool, what: &[u8]) {
        if !ok {
            self.fail(what);
        }
    }

    /// `fail_value(what, got, want)` unless `got == want`.
    pub fn expect_eq(&mut self, got: u64, want: u64, what: &[u8]) {
        if got != want {
            self.fail_value(what, got, want);
        }
    }

    /// Ends the check: the `check <name> ok` line when nothing failed.
    pub fn done(self) {
        if self.failed {
            return;
        }
        serial::begin();
        if let Some(cpu) = self.cpu {
            serial::bytes(b"cpu");
            serial::dec(u64::from(cpu));
            serial::byte(b' ');
        }
        serial::bytes(b"check ");
        serial::bytes(self.name);
        serial::bytes(b" ok");
        serial::end();
    }
}
