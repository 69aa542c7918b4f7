//! `vmctl console --lines N` / `--follow`: the VM's console log. The last N lines are
//! found by reading the file backwards in blocks, so a huge log costs as much as its
//! tail; following polls the file and stops when the VM's VMM (the process holding
//! its lock) is gone.
//!
//! The VMM rotates the log at 1 MiB (`console.log` → `console.log.1`,
//! `vmctl_runtime::vmm::console_log`): `--lines` takes what the current file lacks
//! from the rotated one, and `--follow` finishes the old file and goes on with the
//! new one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use vmctl_runtime::vmm::console_log::rotated_path;
use vmctl_runtime::vms::{vmm_pid, VmPaths};

use super::{ConsoleError, VmDir};

/// Bytes read at a time while looking for line ends from the end of the log.
const BLOCK: u64 = 64 * 1024;
/// How often `--follow` looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The offset at which the last `n` lines of a `len`-byte file start. A final line
/// end does not start another line; a last line without one counts as a line.
pub fn tail_start<R: Read + Seek>(r: &mut R, len: u64, n: u64) -> std::io::Result<u64> {
    tail_lines(r, len, n).map(|(start, _)| start)
}

/// [`tail_start`], and how many lines start there (fewer than `n` when the file has
/// fewer).
fn tail_lines<R: Read + Seek>(r: &mut R, len: u64, n: u64) -> std::io::Result<(u64, u64)> {
    if n == 0 {
        return Ok((len, 0));
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
                    return Ok((start + i as u64 + 1, n));
                }
            }
        }
        end = start;
    }
    // Every line end before the last byte starts a line, and so does offset 0.
    Ok((0, if len == 0 { 0 } else { found + 1 }))
}

/// Whether the VM whose state dir is `dir` has a VMM (a process holding its lock).
pub fn vmm_running(dir: &Path) -> bool {
    vmm_pid(&VmPaths::in_dir(dir.to_path_buf())).is_some()
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

/// Prints the log (its last `lines` lines when given, reaching into the rotated log
/// when the current one has fewer), then follows it when asked.
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
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !print_tail(&path, &mut file, lines, &mut out)? || !follow {
        return Ok(0);
    }
    follow_log(&path, file, &mut out, || vmm_running(&vm.dir))?;
    Ok(0)
}

/// Prints the last `lines` lines of the log (all of it without `lines`): from the
/// rotated log as many as the current one lacks. Leaves `file` at its end. `Ok(false)`
/// when `out` is gone.
fn print_tail(
    path: &Path,
    file: &mut File,
    lines: Option<u64>,
    out: &mut impl Write,
) -> Result<bool, ConsoleError> {
    let io = || ConsoleError::io(format!("reading {}", path.display()));
    let len = file.metadata().map_err(io())?.len();
    let (start, found) = match lines {
        Some(n) => tail_lines(file, len, n).map_err(io())?,
        None => (0, 0),
    };
    let wanted_old = lines.map_or(0, |n| n - found);
    if start == 0 && wanted_old > 0 {
        if let Ok(mut old) = File::open(rotated_path(path)) {
            let old_len = old.metadata().map_err(io())?.len();
            let old_start = tail_start(&mut old, old_len, wanted_old).map_err(io())?;
            old.seek(SeekFrom::Start(old_start)).map_err(io())?;
            if !copy_new(&mut old, out)? {
                return Ok(false);
            }
        }
    }
    file.seek(SeekFrom::Start(start)).map_err(io())?;
    copy_new(file, out)
}

/// Follows the log from `file`'s position until `running` says the VMM is gone (one
/// last read after that) or `out` is gone. A rotation (the path names another file)
/// finishes the old file, then goes on from the start of the new one.
fn follow_log(
    path: &Path,
    mut file: File,
    out: &mut impl Write,
    mut running: impl FnMut() -> bool,
) -> Result<(), ConsoleError> {
    let io = || ConsoleError::io(format!("reading {}", path.display()));
    let mut pos = file.stream_position().map_err(io())?;
    loop {
        // Checked before the last read, so output written just before the VMM ended
        // is still printed.
        let running = running();
        let rotated = std::fs::metadata(path)
            .ok()
            .zip(file.metadata().ok())
            .is_some_and(|(now, ours)| now.ino() != ours.ino() || now.dev() != ours.dev());
        if rotated {
            if !copy_new(&mut file, out)? {
                return Ok(());
            }
            if let Ok(new) = File::open(path) {
                file = new;
                pos = 0;
            }
        }
        let now = file.metadata().map_err(io())?.len();
        pos = file.stream_position().map_err(io())?.max(pos);
        if now < pos {
            // Truncated by hand: start again from its beginning.
            pos = file.seek(SeekFrom::Start(0)).map_err(io())?;
        }
        if !copy_new(&mut file, out)? || !running {
            return Ok(());
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
    fn a_pid_file_alone_is_not_a_running_vmm() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!vmm_running(dir.path()));
        // A live pid (ours) in the pid file, a lock file nobody holds: not running.
        std::fs::write(
            dir.path().join("vmm.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        std::fs::write(dir.path().join("vmm.lock"), "").unwrap();
        assert!(!vmm_running(dir.path()));
    }

    /// Lines of the log `text` split into a rotated file (the first `cut` bytes) and
    /// the current one.
    fn rotated_log(text: &[u8], cut: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(rotated_path(&path), &text[..cut]).unwrap();
        std::fs::write(&path, &text[cut..]).unwrap();
        (dir, path)
    }

    #[test]
    fn lines_reach_into_the_rotated_log() {
        let text = b"l1\nl2\nl3\nl4\nl5\n";
        let (_dir, path) = rotated_log(text, 9); // l1 l2 l3 | l4 l5
        for n in 0..8 {
            let mut out = Vec::new();
            let mut file = File::open(&path).unwrap();
            assert!(print_tail(&path, &mut file, Some(n), &mut out).unwrap());
            assert_eq!(out, naive(text, n), "n={n}");
        }
        // Without --lines, only the current file (as before any rotation).
        let mut out = Vec::new();
        print_tail(&path, &mut File::open(&path).unwrap(), None, &mut out).unwrap();
        assert_eq!(out, b"l4\nl5\n");
    }

    #[test]
    fn follow_goes_on_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, "a\n").unwrap();
        let file = File::open(&path).unwrap();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                let append = |s: &str| {
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .unwrap();
                    f.write_all(s.as_bytes()).unwrap();
                };
                std::thread::sleep(FOLLOW_POLL * 2);
                append("b\n");
                std::thread::sleep(FOLLOW_POLL * 2);
                // The VMM's rotation: written, renamed, a new file started.
                append("c\n");
                std::fs::rename(&path, rotated_path(&path)).unwrap();
                std::fs::write(&path, "d\n").unwrap();
                std::thread::sleep(FOLLOW_POLL * 2);
                append("e\n");
            })
        };
        let mut out = Vec::new();
        follow_log(&path, file, &mut out, || !writer.is_finished()).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a\nb\nc\nd\ne\n");
    }
}
