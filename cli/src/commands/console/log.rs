//! `vmctl console --lines N` / `--follow`: the VM's console log. The last N lines are
//! found by reading the file backwards in blocks, so a huge log costs as much as its
//! tail; following polls the file and stops when the VMM's process (its pid file's
//! pid) is gone.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use super::{ConsoleError, VmDir};

/// Bytes read at a time while looking for line ends from the end of the log.
const BLOCK: u64 = 64 * 1024;
/// How often `--follow` looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The offset at which the last `n` lines of a `len`-byte file start. A final line
/// end does not start another line; a last line without one counts as a line.
pub fn tail_start<R: Read + Seek>(r: &mut R, len: u64, n: u64) -> std::io::Result<u64> {
    if n == 0 {
        return Ok(len);
    }
    // Line ends before this offset separate lines; one at `len - 1` only ends the last.
    let limit = len.saturating_sub(1);
    let mut found = 0;
    let mut end = limit;
    let mut buf = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        // start < end ≤ len, and end - start ≤ BLOCK.
        let block = &mut buf[..(end - start) as usize];
        r.seek(SeekFrom::Start(start))?;
        r.read_exact(block)?;
        for (i, b) in block.iter().enumerate().rev() {
            if *b == b'\n' {
                found += 1;
                if found == n {
                    return Ok(start + i as u64 + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

/// Whether the VMM whose pid is in `pid_file` is alive.
pub fn vmm_running(pid_file: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return false;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

/// Copies `file` from its position to EOF into `out`. `Ok(false)` when `out` is gone
/// (a closed pipe, as with `| head`).
fn copy_new(file: &mut File, out: &mut impl Write) -> Result<bool, ConsoleError> {
    let mut buf = vec![0u8; BLOCK as usize];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(ConsoleError::io("reading the console log"))?;
        if n == 0 {
            return Ok(out.flush().is_ok());
        }
        if out.write_all(&buf[..n]).is_err() {
            return Ok(false);
        }
    }
}

/// Prints the log (its last `lines` lines when given), then follows it when asked.
pub fn run(vm: &VmDir, lines: Option<u64>, follow: bool) -> Result<u8, ConsoleError> {
    let path = vm.console_log();
    let mut file = File::open(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ConsoleError::NoLog {
            vm: vm.name.clone(),
            log: path.clone(),
        },
        _ => ConsoleError::Io {
            what: format!("cannot open {}", path.display()),
            source,
        },
    })?;
    let io = || ConsoleError::io(format!("reading {}", path.display()));
    let len = file.metadata().map_err(io())?.len();
    let start = match lines {
        Some(n) => tail_start(&mut file, len, n).map_err(io())?,
        None => 0,
    };
    let mut pos = file.seek(SeekFrom::Start(start)).map_err(io())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !copy_new(&mut file, &mut out)? || !follow {
        return Ok(0);
    }
    loop {
        // Checked before the last read, so output written just before the VMM ended
        // is still printed.
        let running = vmm_running(&vm.pid_file());
        let now = file.metadata().map_err(io())?.len();
        pos = file.stream_position().map_err(io())?.max(pos);
        if now < pos {
            // Truncated (rotated by hand): start again from its beginning.
            pos = file.seek(SeekFrom::Start(0)).map_err(io())?;
        }
        if !copy_new(&mut file, &mut out)? || !running {
            return Ok(0);
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// The last `n` lines the simple way.
    fn naive(text: &[u8], n: u64) -> Vec<u8> {
        let mut ends: Vec<usize> = text
            .iter()
            .enumerate()
            .filter(|(i, b)| **b == b'\n' && i + 1 < text.len())
            .map(|(i, _)| i + 1)
            .collect();
        ends.insert(0, 0);
        let k = ends.len().saturating_sub(n as usize);
        if n == 0 {
            return Vec::new();
        }
        text[ends[k]..].to_vec()
    }

    fn tail(text: &[u8], n: u64) -> Vec<u8> {
        let mut c = Cursor::new(text);
        let start = tail_start(&mut c, text.len() as u64, n).unwrap();
        text[start as usize..].to_vec()
    }

    #[test]
    fn small_cases() {
        assert_eq!(tail(b"", 5), b"");
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail(b"a\nb\nc\n", 0), b"");
        assert_eq!(tail(b"a\nb\nc\n", 10), b"a\nb\nc\n");
        assert_eq!(tail(b"\n\n\n", 2), b"\n\n");
        assert_eq!(tail(b"x", 1), b"x");
        for text in [&b"a\nbb\n\nccc"[..], b"\n", b"ab\ncd\n\n"] {
            for n in 0..6 {
                assert_eq!(tail(text, n), naive(text, n), "{text:?} {n}");
            }
        }
    }

    #[test]
    fn big_logs_across_blocks() {
        // ~3 MiB of lines of varying length, some longer than a block.
        let mut text = Vec::new();
        for i in 0..40_000u32 {
            let len = if i % 9_999 == 0 {
                100_000
            } else {
                (i % 97) as usize
            };
            text.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, len));
            text.push(b'\n');
        }
        for n in [1, 2, 5, 100, 9_999, 10_001, 39_999, 40_000, 50_000] {
            assert_eq!(tail(&text, n), naive(&text, n), "n={n}");
        }
        text.extend_from_slice(b"no newline at the end");
        assert_eq!(tail(&text, 1), b"no newline at the end");
        assert_eq!(tail(&text, 3), naive(&text, 3));
    }

    #[test]
    fn reads_only_the_tail_of_a_big_file() {
        struct Counting<'a>(Cursor<&'a [u8]>, u64);
        impl Read for Counting<'_> {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.read(b)?;
                self.1 += n as u64;
                Ok(n)
            }
        }
        impl Seek for Counting<'_> {
            fn seek(&mut self, p: SeekFrom) -> std::io::Result<u64> {
                self.0.seek(p)
            }
        }
        let text = b"line\n".repeat(2_000_000); // 10 MB
        let mut c = Counting(Cursor::new(&text), 0);
        let start = tail_start(&mut c, text.len() as u64, 10).unwrap();
        assert_eq!(start, text.len() as u64 - 50);
        assert!(c.1 <= BLOCK, "read {} bytes", c.1);
    }

    #[test]
    fn a_missing_or_dead_pid_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("vmm.pid");
        assert!(!vmm_running(&pid_file));
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        assert!(vmm_running(&pid_file));
        std::fs::write(&pid_file, "garbage").unwrap();
        assert!(!vmm_running(&pid_file));
        std::fs::write(&pid_file, "0").unwrap();
        assert!(!vmm_running(&pid_file));
    }
}
