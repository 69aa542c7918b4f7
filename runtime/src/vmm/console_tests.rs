//! Tests of the console socket: the protocol, one client at a time, and the bounds
//! (a client that never reads costs no host memory and never blocks the guest).

use super::*;
use crate::vmm::devices::bus::BusDevice;
use crate::vmm::devices::serial::tests::Sink;
use crate::vmm::devices::EventFdTrigger;
use std::io::BufRead;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Bytes to nowhere, counted.
struct Null;
impl Write for Null {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    path: PathBuf,
    hub: Arc<ConsoleHub>,
    serial: Arc<Mutex<SerialDevice>>,
    log: Sink,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.sock");
    let hub = Arc::new(ConsoleHub::new());
    let log = Sink::default();
    let out = ConsoleOut::new(Box::new(log.clone()), hub.clone());
    let irq = EventFdTrigger(EventFd::new(EFD_NONBLOCK).unwrap());
    let serial = Arc::new(Mutex::new(SerialDevice::new(irq, Box::new(out))));
    serve(
        bind(&path).unwrap(),
        hub.clone(),
        serial.clone(),
        &crate::vmm::threads::Threads::unconfined(),
    )
    .unwrap();
    Setup {
        _dir: dir,
        path,
        hub,
        serial,
        log,
    }
}

impl Setup {
    /// The guest writes `bytes` to THR.
    fn guest_writes(&self, bytes: &[u8]) {
        let mut s = self.serial.lock().unwrap();
        for b in bytes {
            s.write(0, &[*b]);
        }
    }

    /// The guest reads what is in its receive FIFO.
    fn guest_reads(&self) -> Vec<u8> {
        let mut s = self.serial.lock().unwrap();
        let mut got = Vec::new();
        loop {
            let mut lsr = [0u8];
            s.read(5, &mut lsr);
            if lsr[0] & 1 == 0 {
                return got;
            }
            let mut rbr = [0u8];
            s.read(0, &mut rbr);
            got.push(rbr[0]);
        }
    }

    fn connect(&self) -> (BufReader, UnixStream) {
        let s = UnixStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (std::io::BufReader::new(s.try_clone().unwrap()), s)
    }

    fn wait_attached(&self, attached: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.hub.status().attached != attached {
            assert!(
                Instant::now() < deadline,
                "attached never became {attached}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

type BufReader = std::io::BufReader<UnixStream>;

fn header(r: &mut BufReader) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line
}

#[test]
fn output_goes_to_log_and_client_and_input_to_the_guest() {
    let t = setup();
    t.guest_writes(b"before\n");
    let (mut r, mut w) = t.connect();
    assert_eq!(header(&mut r), HEADER_OK);
    t.wait_attached(true);
    t.guest_writes(b"hello\n");
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n", "only output after attaching");
    assert_eq!(&*t.log.0.lock().unwrap(), b"before\nhello\n");

    w.write_all(b"ls\r").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < 3 && Instant::now() < deadline {
        got.extend(t.guest_reads());
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(got, b"ls\r");
    assert_eq!(
        t.hub.status(),
        ConsoleStatus {
            attached: true,
            dropped_out: 0,
            dropped_in: 0
        }
    );

    drop((r, w));
    t.wait_attached(false);
    t.guest_writes(b"after\n"); // nobody attached: log only, nothing dropped
    assert_eq!(t.hub.status().dropped_out, 0);
}

#[test]
fn a_second_client_is_refused_and_can_attach_later() {
    let t = setup();
    let (mut r1, w1) = t.connect();
    assert_eq!(header(&mut r1), HEADER_OK);
    let (mut r2, _w2) = t.connect();
    let busy = header(&mut r2);
    assert!(busy.starts_with(HEADER_BUSY), "{busy}");
    assert!(busy.contains("another client"), "{busy}");
    let mut rest = Vec::new();
    r2.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the refused client is closed");

    drop((r1, w1));
    t.wait_attached(false);
    let (mut r3, _w3) = t.connect();
    assert_eq!(header(&mut r3), HEADER_OK);
    t.hub.close();
    let mut rest = Vec::new();
    r3.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed when the VM stops");
}

/// Current resident set of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_client_that_never_reads_costs_nothing_and_blocks_nothing() {
    let hub = Arc::new(ConsoleHub::new());
    let (server, client) = UnixStream::pair().unwrap();
    let (id, _input) = hub.attach(server).unwrap();
    let mut client = client;
    let mut head = [0u8; HEADER_OK.len()];
    client.read_exact(&mut head).unwrap();
    assert_eq!(&head, HEADER_OK.as_bytes());
    let mut out = ConsoleOut::new(Box::new(Null), hub.clone());
    let chunk = [b'A'; 64 * 1024];
    let flood: u64 = 256 << 20;
    let before = rss_kib();
    let started = Instant::now();
    for _ in 0..flood / chunk.len() as u64 {
        out.write_all(&chunk).unwrap();
    }
    let took = started.elapsed();
    let grown = rss_kib().saturating_sub(before);
    let s = hub.status();
    assert!(s.attached);
    assert!(
        s.dropped_out > flood - (8 << 20),
        "dropped {} of {flood}",
        s.dropped_out
    );
    // The socket buffer holds the rest; the VMM holds nothing.
    assert!(
        grown < 64 << 10,
        "RSS grew by {grown} KiB for a 256 MiB flood"
    );
    assert!(took < Duration::from_secs(30), "writes blocked: {took:?}");

    // Byte by byte through the UART, as a guest writes: never blocks either.
    let irq = EventFdTrigger(EventFd::new(EFD_NONBLOCK).unwrap());
    let mut dev = SerialDevice::new(irq, Box::new(ConsoleOut::new(Box::new(Null), hub.clone())));
    for _ in 0..100_000 {
        dev.write(0, b"B");
    }
    let after = hub.status().dropped_out;
    assert!(after > s.dropped_out + 90_000, "{after}");

    // The client finally reads: it gets the start of the flood, never more than its
    // socket buffer held; every other byte was counted.
    client.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // The flood's start, maybe a few of the UART's bytes that still fit.
                assert!(buf[..n].iter().all(|b| *b == b'A' || *b == b'B'));
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(total + hub.status().dropped_out, flood + 100_000);
    hub.detach(id);
    assert!(!hub.status().attached);
}

#[test]
fn input_beyond_the_fifo_is_dropped_and_counted() {
    let t = setup();
    let (mut r, mut w) = t.connect();
    assert_eq!(header(&mut r), HEADER_OK);
    let flood = [b'k'; 1000];
    w.write_all(&flood).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.hub.status().dropped_in < 1000 - 64 {
        assert!(
            Instant::now() < deadline,
            "dropped_in {}",
            t.hub.status().dropped_in
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(t.hub.status().dropped_in, 1000 - 64);
    assert_eq!(t.guest_reads().len(), 64);
}

#[test]
fn a_client_gone_away_is_detached_on_the_next_output() {
    let hub = Arc::new(ConsoleHub::new());
    let (server, client) = UnixStream::pair().unwrap();
    let _ = hub.attach(server).unwrap();
    drop(client);
    hub.send(b"x");
    assert!(!hub.status().attached);
    assert_eq!(hub.status().dropped_out, 0);
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.sock");
    drop(UnixListener::bind(&path).unwrap()); // stale: nobody listens
    let live = bind(&path).unwrap();
    assert!(matches!(bind(&path), Err(ConsoleError::InUse(_))));
    drop(live);
}
