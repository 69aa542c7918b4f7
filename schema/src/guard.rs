//! Limits checked before the KDL parser sees a file.
//!
//! kdl 6.7 parses some small inputs in exponential time (kdl-rs issue 177:
//! `a /-{/-{/-{…`, doubling with every nested slashdashed block) and overflows the
//! stack on deep nesting (`{{{…`, `/*/*/*…`, `/-/-/-…`). vmctl's language nests two
//! levels, so this scanner refuses anything nested deeper than [`MAX_DEPTH`] before
//! parsing, and files over [`MAX_FILE_BYTES`].
//!
//! The scanner knows KDL v2's strings (quoted, multi-line, raw) and comments (line,
//! nested block), so braces inside them do not count. It refuses an unterminated
//! string or block comment itself (the parser would refuse it too), so it never has to
//! guess how the parser recovers from one.

use miette::SourceSpan;

use crate::diagnostics::SchemaError;

/// Largest file accepted: many times any real infra file (the 10,000-VM benchmark
/// config is about 2 MB in total).
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// Deepest nesting of `{`, of block comments and of chained slashdashes. At depth 8
/// the parser's worst case is a few milliseconds.
pub const MAX_DEPTH: usize = 8;

/// Checks `text` against the limits; `Ok` means the parser may see it.
pub fn check(text: &str) -> Result<(), Box<SchemaError>> {
    if text.len() > MAX_FILE_BYTES {
        return Err(Box::new(SchemaError::FileTooLarge {
            size: text.len(),
            limit: MAX_FILE_BYTES,
        }));
    }
    Scanner {
        bytes: text.as_bytes(),
        pos: 0,
    }
    .run()
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

fn too_deep(what: &'static str, depth: usize, at: usize) -> Box<SchemaError> {
    Box::new(SchemaError::NestingTooDeep {
        what,
        depth,
        limit: MAX_DEPTH,
        span: SourceSpan::from((at, 1)),
    })
}

fn unterminated(what: &str, start: usize, len: usize) -> Box<SchemaError> {
    Box::new(SchemaError::Syntax {
        message: format!("unterminated {what}"),
        span: SourceSpan::from((start, len)),
        label: format!("this {what} is never closed"),
        help: Some(format!("close the {what}")),
    })
}

impl Scanner<'_> {
    fn at(&self, offset: usize) -> Option<u8> {
        self.bytes.get(self.pos + offset).copied()
    }

    fn starts_with(&self, s: &[u8]) -> bool {
        self.bytes[self.pos..].starts_with(s)
    }

    fn run(&mut self) -> Result<(), Box<SchemaError>> {
        let mut depth = 0usize;
        // Slashdashes since the last token that was not whitespace or a slashdash.
        let mut chain = 0usize;
        while let Some(b) = self.at(0) {
            let start = self.pos;
            match b {
                b'{' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(too_deep("blocks `{`", depth, start));
                    }
                    self.pos += 1;
                }
                b'}' => {
                    depth = depth.saturating_sub(1);
                    self.pos += 1;
                }
                b'/' if self.at(1) == Some(b'-') => {
                    chain += 1;
                    if chain > MAX_DEPTH {
                        return Err(too_deep("slashdashes `/-`", chain, start));
                    }
                    self.pos += 2;
                    continue;
                }
                b'/' if self.at(1) == Some(b'/') => self.line_comment(),
                b'/' if self.at(1) == Some(b'*') => {
                    self.block_comment()?;
                    continue;
                }
                b'"' => self.quoted()?,
                b'#' if matches!(self.at(1), Some(b'#' | b'"')) => self.raw()?,
                b' ' | b'\t' | b'\n' | b'\r' => {
                    self.pos += 1;
                    continue;
                }
                _ => self.pos += 1,
            }
            chain = 0;
        }
        Ok(())
    }

    fn line_comment(&mut self) {
        // Ends at a newline; ending later than the parser would is harmless here.
        while let Some(b) = self.at(0) {
            if b == b'\n' {
                return;
            }
            self.pos += 1;
        }
    }

    fn block_comment(&mut self) -> Result<(), Box<SchemaError>> {
        let start = self.pos;
        let mut depth = 0usize;
        while self.pos < self.bytes.len() {
            if self.starts_with(b"/*") {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep("block comments `/*`", depth, self.pos));
                }
                self.pos += 2;
            } else if self.starts_with(b"*/") {
                depth -= 1;
                self.pos += 2;
                if depth == 0 {
                    return Ok(());
                }
            } else {
                self.pos += 1;
            }
        }
        Err(unterminated("block comment", start, 2))
    }

    /// `"…"` or `"""…"""`, with backslash escapes.
    fn quoted(&mut self) -> Result<(), Box<SchemaError>> {
        let start = self.pos;
        let close: &[u8] = if self.starts_with(b"\"\"\"") {
            b"\"\"\""
        } else {
            b"\""
        };
        self.pos += close.len();
        while let Some(b) = self.at(0) {
            if b == b'\\' {
                self.pos += 2;
            } else if self.starts_with(close) {
                self.pos += close.len();
                return Ok(());
            } else {
                self.pos += 1;
            }
        }
        self.pos = self.bytes.len();
        Err(unterminated("string", start, close.len()))
    }

    /// `#"…"#`, `##"…"##`, `#"""…"""#`: no escapes.
    fn raw(&mut self) -> Result<(), Box<SchemaError>> {
        let start = self.pos;
        let hashes = self.bytes[start..]
            .iter()
            .take_while(|&&b| b == b'#')
            .count();
        self.pos += hashes;
        if self.at(0) != Some(b'"') {
            // `##` not followed by a quote: not a string; the parser will say why.
            return Ok(());
        }
        let quotes = if self.starts_with(b"\"\"\"") { 3 } else { 1 };
        self.pos += quotes;
        let mut close = vec![b'"'; quotes];
        close.extend(std::iter::repeat_n(b'#', hashes));
        while self.pos < self.bytes.len() {
            if self.starts_with(&close) {
                self.pos += close.len();
                return Ok(());
            }
            self.pos += 1;
        }
        Err(unterminated("raw string", start, hashes + quotes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> Option<String> {
        check(text).err().map(|e| {
            use miette::Diagnostic;
            e.code().map(|c| c.to_string()).unwrap_or_default()
        })
    }

    #[test]
    fn accepts_real_configs() {
        let text = r##"
            project "lab" // comment with { braces
            /* block /* nested */ { */
            vm "a" { cmdline "a={{{{{{{{{{{{" ; kernel #"raw {{{{{{{{{{ "#
                /-disk "x"
                nic vlan="v" { /-mac "x" }
            }
            s """
              multi {{{{{{{{{{ \""" still
              """
        "##;
        assert_eq!(code(text), None);
    }

    #[test]
    fn refuses_deep_nesting_of_every_kind() {
        let braces = "a {".repeat(MAX_DEPTH + 1);
        assert_eq!(
            code(&braces).as_deref(),
            Some("vmctl::schema::nesting_too_deep")
        );
        let issue_177 = format!("a {}", "/-{".repeat(MAX_DEPTH + 1));
        assert_eq!(
            code(&issue_177).as_deref(),
            Some("vmctl::schema::nesting_too_deep")
        );
        let comments = "/*".repeat(MAX_DEPTH + 1);
        assert_eq!(
            code(&comments).as_deref(),
            Some("vmctl::schema::nesting_too_deep")
        );
        let slashdashes = format!("a {}", "/- ".repeat(MAX_DEPTH + 1));
        assert_eq!(
            code(&slashdashes).as_deref(),
            Some("vmctl::schema::nesting_too_deep")
        );
    }

    #[test]
    fn closing_braces_do_not_reset_depth_when_hidden_in_strings() {
        let sneaky = format!("a {}", "/-{ \"}\" ".repeat(MAX_DEPTH + 1));
        assert_eq!(
            code(&sneaky).as_deref(),
            Some("vmctl::schema::nesting_too_deep")
        );
    }

    #[test]
    fn refuses_unterminated_strings_and_comments() {
        for text in ["a \"x", "a #\"x\"", "a \"\"\" x", "/* /* */", "a ##\"x\"#"] {
            assert_eq!(
                code(text).as_deref(),
                Some("vmctl::schema::syntax"),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_huge_files() {
        let big = " ".repeat(MAX_FILE_BYTES + 1);
        assert_eq!(code(&big).as_deref(), Some("vmctl::schema::file_too_large"));
    }
}
