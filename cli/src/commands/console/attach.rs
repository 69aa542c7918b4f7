//! Attached to the console socket: stdin to the guest, the guest to stdout. On a
//! terminal, raw mode (restored on every way out: detach, the VM stopping, errors,
//! SIGTERM/SIGHUP/SIGINT, a panic) and Ctrl-] detaches; on a pipe, stdin is forwarded
//! as is until it ends, then output is printed until the VM stops or a signal.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::termios::{self, SetArg, Termios};

use super::{ConsoleError, VmDir};

/// Ctrl-]: detaches (on a terminal).
pub const DETACH: u8 = 0x1d;
/// The console protocol's header line is at most this long.
const MAX_HEADER: usize = 256;
const HEADER_OK: &str = "vmctl-console ok";
const HEADER_BUSY: &str = "vmctl-console busy: ";

/// The terminal's settings before raw mode, put back when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter(fd: BorrowedFd<'_>) -> Result<Self, ConsoleError> {
        let io = |e: nix::Error| ConsoleError::Io {
            what: "cannot put the terminal in raw mode".into(),
            source: e.into(),
        };
        let saved = termios::tcgetattr(fd).map_err(io)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSAFLUSH, &raw).map_err(io)?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The write end of the signal pipe, for the handler.
static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_FD.load(Ordering::Relaxed);
    let byte = sig as u8;
    // SAFETY: write(2) is async-signal-safe; the buffer is a local byte.
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
}

/// Turns SIGINT, SIGTERM, SIGHUP and SIGQUIT into bytes on a socket the main loop
/// polls, so the terminal is restored on the normal way out.
fn catch_signals() -> Result<UnixStream, ConsoleError> {
    let (read, write) = UnixStream::pair().map_err(ConsoleError::io("cannot create a pipe"))?;
    write
        .set_nonblocking(true)
        .map_err(ConsoleError::io("cannot create a pipe"))?;
    SIGNAL_FD.store(write.as_raw_fd(), Ordering::Relaxed);
    // The write end lives as long as the process: the handler may run at any time.
    std::mem::forget(write);
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: the handler only calls write(2) on a descriptor that stays open.
        unsafe { sigaction(sig, &action) }.map_err(|e| ConsoleError::Io {
            what: format!("cannot handle {sig}"),
            source: e.into(),
        })?;
    }
    Ok(read)
}

/// Connects and reads the header line: attached, or why not.
fn connect(vm: &VmDir) -> Result<UnixStream, ConsoleError> {
    let socket = vm.console_socket();
    let not_running = || ConsoleError::NotRunning {
        vm: vm.name.clone(),
        socket: socket.clone(),
    };
    let mut stream = match UnixStream::connect(&socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(not_running())
        }
        Err(source) => {
            return Err(ConsoleError::Io {
                what: format!("cannot connect to {}", socket.display()),
                source,
            })
        }
    };
    let mut header = Vec::new();
    let mut byte = [0u8];
    while header.len() < MAX_HEADER {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => header.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ConsoleError::Io {
                    what: format!("reading from {}", socket.display()),
                    source,
                })
            }
        }
    }
    let header = String::from_utf8_lossy(&header).into_owned();
    if header == HEADER_OK {
        return Ok(stream);
    }
    if let Some(why) = header.strip_prefix(HEADER_BUSY) {
        return Err(ConsoleError::Busy {
            vm: vm.name.clone(),
            why: why.to_string(),
        });
    }
    if header.is_empty() {
        // Closed at once: the VMM is stopping.
        return Err(not_running());
    }
    Err(ConsoleError::Protocol {
        socket,
        said: header,
    })
}

/// How the session ended.
enum End {
    Detached,
    VmStopped,
    Signal(u8),
}

/// Attaches to the console until detached, the VM stops, or a signal. The exit code.
pub fn run(vm: &VmDir) -> Result<u8, ConsoleError> {
    let stream = connect(vm)?;
    let signals = catch_signals()?;
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let end = {
        let _raw = if tty {
            eprintln!("Connected to the console of {} (detach: Ctrl-])", vm.name);
            Some(RawMode::enter(stdin.as_fd())?)
        } else {
            None
        };
        pump(&stream, &signals, tty)?
        // raw mode ends here, before the last message
    };
    match end {
        End::Detached => {
            eprintln!("\nDetached from {}; the VM keeps running.", vm.name);
            Ok(0)
        }
        End::VmStopped => {
            if tty {
                eprintln!("\nThe console of {} closed: the VM stopped.", vm.name);
            }
            Ok(0)
        }
        End::Signal(sig) => Ok(128 + sig),
    }
}

/// The copy loop.
fn pump(stream: &UnixStream, signals: &UnixStream, tty: bool) -> Result<End, ConsoleError> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut input_open = true;
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = vec![
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(stream.as_fd(), PollFlags::POLLIN),
        ];
        if input_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(ConsoleError::Io {
                    what: "poll".into(),
                    source: e.into(),
                })
            }
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (sig_ready, sock_ready, in_ready) = (ready(0), ready(1), ready(2));
        drop(fds);
        if sig_ready {
            let mut b = [0u8];
            let _ = (&*signals).read(&mut b);
            return Ok(End::Signal(b[0]));
        }
        if sock_ready {
            let n = match (&*stream).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if n == 0 {
                let _ = out.flush();
                return Ok(End::VmStopped);
            }
            if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                // Nobody reads our output any more (a closed pipe): leave quietly.
                return Ok(End::Detached);
            }
        }
        if in_ready {
            // Unbuffered: std's buffered stdin could keep bytes poll never reports.
            let n = match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
                Err(e) => return Err(ConsoleError::io("reading stdin")(e.into())),
            };
            if n == 0 {
                input_open = false;
                continue;
            }
            let (send, detach) = match tty.then(|| buf[..n].iter().position(|b| *b == DETACH)) {
                Some(Some(at)) => (&buf[..at], true),
                _ => (&buf[..n], false),
            };
            if (&*stream).write_all(send).is_err() {
                return Ok(End::VmStopped);
            }
            if detach {
                return Ok(End::Detached);
            }
        }
    }
}
