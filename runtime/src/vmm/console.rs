//! The console socket: `vmctl console` attached to the guest's serial port.
//!
//! A Unix stream socket (`console.sock`, next to the control socket) serving at most
//! one client at a time. The protocol:
//!
//! 1. On connect the VMM writes one header line: [`HEADER_OK`] (`vmctl-console ok`),
//!    or `vmctl-console busy: <why>` when another client is attached, and then closes
//!    the connection.
//! 2. After `ok`, raw bytes both ways: the guest's serial output as the guest writes it
//!    (it also still goes to the console log), and the client's bytes into the UART's
//!    receive FIFO, raising the guest's serial interrupt.
//! 3. The client detaches by closing the connection (or its write half); the VMM
//!    closes it when the VM stops.
//!
//! Bounded both ways, so neither a guest nor a client can grow host memory or stall
//! the VM:
//!
//! - output is sent non-blocking (`MSG_DONTWAIT`) straight from the vCPU's port write;
//!   whatever the client's socket buffer cannot take is dropped and counted
//!   (`dropped_out`). Nothing is queued in the VMM.
//! - input goes into the 64-byte FIFO of the emulated 16550; when it stays full for
//!   [`INPUT_WAIT`] (a guest not reading), the rest of that chunk is dropped and
//!   counted (`dropped_in`). The console thread reads at most [`INPUT_CHUNK`] bytes at a
//!   time, so a client writing faster than that waits in its own socket buffer.
//!
//! The counters are in the control socket's `status` as
//! `"console":{"attached":…,"dropped_out":…,"dropped_in":…}`.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::control::ControlError;
use super::devices::serial::{SerialDevice, SerialOut};
use super::threads::{ThreadError, ThreadKind, Threads};

/// The header line a client gets when it is attached.
pub const HEADER_OK: &str = "vmctl-console ok\n";
/// The start of the header line a client gets when the console is taken.
pub const HEADER_BUSY: &str = "vmctl-console busy: ";
/// Longest a client's input chunk waits for room in the guest's receive FIFO.
pub const INPUT_WAIT: Duration = Duration::from_millis(50);
/// Bytes read from a client at a time.
pub const INPUT_CHUNK: usize = 256;

/// Errors setting up the console socket.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Another VMM already serves this socket.
    #[error("console socket {0} is in use by another VMM")]
    InUse(PathBuf),
    /// Binding the socket failed.
    #[error("cannot bind console socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The socket could not be made non-blocking.
    #[error("cannot serve the console socket: {0}")]
    Serve(std::io::Error),
    /// The console thread could not be started.
    #[error(transparent)]
    Thread(#[from] ThreadError),
}

/// What `status` reports about the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleStatus {
    /// Whether a client is attached now.
    pub attached: bool,
    /// Output bytes a slow client's socket could not take (since the VMM started).
    pub dropped_out: u64,
    /// Input bytes the guest's receive FIFO could not take.
    pub dropped_in: u64,
}

struct Client {
    id: u64,
    stream: UnixStream,
}

/// The one attached client (if any) and the counters, shared by the serial port's
/// output path (a vCPU thread) and the console thread.
#[derive(Default)]
pub struct ConsoleHub {
    client: Mutex<Option<Client>>,
    next_id: AtomicU64,
    dropped_out: AtomicU64,
    dropped_in: AtomicU64,
}

impl ConsoleHub {
    /// A hub with no client.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Option<Client>> {
        // A panicked holder leaves nothing half-done here: the client is just a socket.
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counters, for `status`.
    pub fn status(&self) -> ConsoleStatus {
        ConsoleStatus {
            attached: self.lock().is_some(),
            dropped_out: self.dropped_out.load(Ordering::Relaxed),
            dropped_in: self.dropped_in.load(Ordering::Relaxed),
        }
    }

    /// Sends guest output to the client without ever blocking: what its socket buffer
    /// cannot take is dropped and counted. A client gone away is detached.
    pub fn send(&self, bytes: &[u8]) {
        let mut guard = self.lock();
        let Some(client) = guard.as_ref() else {
            return;
        };
        let mut sent = 0;
        while sent < bytes.len() {
            let rest = &bytes[sent..];
            // SAFETY: the pointer and length describe `rest`, alive for the call; the
            // fd is the client's socket, owned by `client`.
            let n = unsafe {
                libc::send(
                    client.stream.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            match usize::try_from(n) {
                Ok(n) if n > 0 => sent += n,
                _ => {
                    let err = std::io::Error::last_os_error();
                    match err.kind() {
                        std::io::ErrorKind::Interrupted => continue,
                        std::io::ErrorKind::WouldBlock => {}
                        _ => {
                            // The client went away: detach it; nothing was dropped for it.
                            let _ = client.stream.shutdown(std::net::Shutdown::Both);
                            *guard = None;
                            return;
                        }
                    }
                    let dropped = (bytes.len() - sent) as u64;
                    self.dropped_out.fetch_add(dropped, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// Attaches `stream` as the client, writing the `ok` header, or refuses it with a
    /// `busy` header when another client is attached. Returns the client's id.
    fn attach(&self, mut stream: UnixStream) -> Option<(u64, UnixStream)> {
        // A header fits in any fresh socket's buffer; the timeout is only a backstop.
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let mut guard = self.lock();
        if guard.is_some() {
            drop(guard);
            let _ = stream.write_all(
                format!("{HEADER_BUSY}another client is attached to this console\n").as_bytes(),
            );
            return None;
        }
        // The header goes out before any guest output: `send` waits for this lock.
        stream.write_all(HEADER_OK.as_bytes()).ok()?;
        let input = stream.try_clone().ok()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        *guard = Some(Client { id, stream });
        Some((id, input))
    }

    /// Detaches client `id` if it is still the attached one.
    fn detach(&self, id: u64) {
        let mut guard = self.lock();
        if guard.as_ref().is_some_and(|c| c.id == id) {
            if let Some(c) = guard.take() {
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Closes the attached client's connection (the VM stopped).
    pub fn close(&self) {
        if let Some(c) = self.lock().take() {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Feeds client input into the guest's receive FIFO, waiting at most
    /// [`INPUT_WAIT`] for room; the rest is dropped and counted.
    pub fn feed(&self, serial: &Mutex<SerialDevice>, bytes: &[u8]) {
        let deadline = Instant::now() + INPUT_WAIT;
        let mut rest = bytes;
        loop {
            let taken = serial
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .enqueue_input(rest);
            rest = &rest[taken..];
            if rest.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                self.dropped_in
                    .fetch_add(rest.len() as u64, Ordering::Relaxed);
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The serial port's output: the console log (or stdout), and the attached client.
pub struct ConsoleOut {
    log: SerialOut,
    hub: Arc<ConsoleHub>,
}

impl ConsoleOut {
    /// Output to `log` and to `hub`'s client.
    pub fn new(log: SerialOut, hub: Arc<ConsoleHub>) -> Self {
        Self { log, hub }
    }
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hub.send(buf);
        self.log.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.log.flush()
    }
}

/// Binds the console socket, replacing a stale one nobody listens on (as the control
/// socket is bound).
pub fn bind(path: &Path) -> Result<UnixListener, ConsoleError> {
    super::control::bind(path).map_err(|e| match e {
        ControlError::InUse(path) => ConsoleError::InUse(path),
        ControlError::Bind { path, source } => ConsoleError::Bind { path, source },
        ControlError::Serve(source) => ConsoleError::Serve(source),
        ControlError::Thread(e) => ConsoleError::Thread(e),
    })
}

/// Serves `listener` on one thread (`poll`): attaches one client at a time, refusing
/// others, and feeds the attached client's input into `serial`, [`INPUT_CHUNK`] bytes
/// at a time. No thread per connection: a refused client costs one short write.
pub fn serve(
    listener: UnixListener,
    hub: Arc<ConsoleHub>,
    serial: Arc<Mutex<SerialDevice>>,
    threads: &Threads,
) -> Result<(), ConsoleError> {
    listener
        .set_nonblocking(true)
        .map_err(ConsoleError::Serve)?;
    threads.spawn(ThreadKind::Control, "console", move || {
        serve_loop(&listener, &hub, &serial)
    })?;
    Ok(())
}

/// The console thread: `poll` on the listener and the attached client, for ever.
fn serve_loop(listener: &UnixListener, hub: &ConsoleHub, serial: &Mutex<SerialDevice>) {
    // The attached client's input end and its id. When the hub detaches the client
    // (gone, or the VM stopped) it shuts the socket down, and this end reads EOF.
    let mut input: Option<(UnixStream, u64)> = None;
    let mut buf = [0u8; INPUT_CHUNK];
    loop {
        let mut fds = [
            listener.as_raw_fd(),
            input.as_ref().map_or(-1, |(s, _)| s.as_raw_fd()),
        ]
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs (poll skips -1).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 {
            if let Some((stream, id)) = &mut input {
                let done = match stream.read(&mut buf) {
                    Ok(0) => true,
                    Ok(n) => {
                        hub.feed(serial, &buf[..n]);
                        false
                    }
                    Err(e) => !matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                    ),
                };
                if done {
                    hub.detach(*id);
                    input = None;
                }
            }
        }
        if fds[0].revents != 0 {
            accept_all(listener, hub, &mut input);
        }
    }
}

/// Accepts every pending client: the first one while none is attached becomes the
/// attached client (`input`), the others are told the console is busy.
fn accept_all(listener: &UnixListener, hub: &ConsoleHub, input: &mut Option<(UnixStream, u64)>) {
    loop {
        let conn = match listener.accept() {
            Ok((conn, _)) => conn,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // WouldBlock: none left; anything else (EMFILE…): try again on the next poll.
            Err(_) => return,
        };
        let Some((id, stream)) = hub.attach(conn) else {
            continue;
        };
        if stream.set_nonblocking(true).is_err() {
            hub.detach(id);
            continue;
        }
        // A client the hub detached (it went away) but whose EOF was not read yet.
        *input = Some((stream, id));
    }
}

#[cfg(test)]
#[path = "console_tests.rs"]
mod tests;
