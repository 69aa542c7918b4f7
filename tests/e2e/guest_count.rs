//! `testguest.count`: the test guest's counting mode, which snapshot, restore and
//! migration tests watch. Its memory pattern (tests/guest/src/count/pattern.rs) is
//! compiled here too, so its unit tests run on the host and these tests recompute
//! every sum the guest prints. The e2e tests boot the guest through a detached
//! `vmctl vmm --spec` (killed by pid when a test ends, also when it fails).

#[path = "../guest/src/count/disk_ring.rs"]
pub(crate) mod disk_ring;
#[path = "../guest/src/count/pattern.rs"]
pub(crate) mod pattern;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::lab::{text, Lab};
use crate::support::{skip_unless, which};
use crate::vm::{assert_line, guest, skip, vmm_run, Detached, VM_TIMEOUT};

/// What a counting guest printed so far.
pub(crate) struct Counting {
    pub(crate) nonces: Vec<String>,
    pub(crate) region_bytes: u64,
    /// `(n, sum)` of every `count=` line, in order.
    pub(crate) counts: Vec<(u64, String)>,
}

pub(crate) fn parse(console: &str) -> Counting {
    let mut c = Counting {
        nonces: Vec::new(),
        region_bytes: 0,
        counts: Vec::new(),
    };
    // Only whole lines: the guest may be in the middle of the last one.
    let whole = crate::lab::whole_lines(console.to_owned());
    for line in whole.lines() {
        let Some(rest) = line.strip_prefix("testguest: ") else {
            continue;
        };
        if let Some(nonce) = rest.strip_prefix("nonce=") {
            c.nonces.push(nonce.to_string());
        } else if let Some(region) = rest.strip_prefix("count region=") {
            let bytes = region.split('@').next().unwrap_or_default();
            c.region_bytes = bytes
                .parse()
                .unwrap_or_else(|_| panic!("bad region line {line:?}"));
        } else if let Some(count) = rest.strip_prefix("count=") {
            let (n, sum) = count
                .split_once(" sum=")
                .unwrap_or_else(|| panic!("bad count line {line:?}"));
            let n = n
                .parse()
                .unwrap_or_else(|_| panic!("bad count line {line:?}"));
            c.counts.push((n, sum.to_string()));
        }
    }
    c
}

/// Waits until the guest whose console `console()` reads printed `at_least` count
/// lines; returns its console.
pub(crate) fn wait_counts(console: impl Fn() -> String, at_least: usize) -> String {
    let deadline = Instant::now() + VM_TIMEOUT;
    loop {
        let console = console();
        if parse(&console).counts.len() >= at_least {
            return console;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {at_least} count lines in:\n{console}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The ring of records `testguest.count-disk` writes, read from the disk image
/// `image`: what each of its sectors holds, in order.
pub(crate) fn disk_ring_of(image: &[u8]) -> Vec<disk_ring::Slot> {
    (disk_ring::FIRST..disk_ring::FIRST + disk_ring::SECTORS)
        .map(|s| {
            let at = s as usize * disk_ring::SECTOR;
            image
                .get(at..at + disk_ring::SECTOR)
                .map_or(disk_ring::Slot::Garbage, disk_ring::parse)
        })
        .collect()
}

/// Checks a ring the guest wrote for at least [`disk_ring::SECTORS`] ticks: every
/// sector holds a record naming itself, of a count in its residue class, and no count
/// is older than the newest by a whole turn of the ring (a sector that missed a write
/// would be). Returns the newest count.
pub(crate) fn check_disk_ring(ring: &[disk_ring::Slot]) -> u64 {
    let r = disk_ring::SECTORS;
    let counts: Vec<u64> = ring
        .iter()
        .zip(disk_ring::FIRST..)
        .map(|(slot, at)| match *slot {
            disk_ring::Slot::Count { n, sector }
                if sector == at && n % r == at - disk_ring::FIRST =>
            {
                n
            }
            _ => panic!("sector {at} holds {slot:?}; the ring:\n{ring:#?}"),
        })
        .collect();
    let newest = counts.iter().copied().max().unwrap_or(0);
    for (n, at) in counts.iter().zip(disk_ring::FIRST..) {
        assert!(
            newest - n < r,
            "sector {at} holds count {n}, a whole turn older than the newest, {newest}: a write was lost; the ring:\n{ring:#?}"
        );
    }
    newest
}

/// Checks one boot's output: one nonce, a region of `bytes`, counts 1, 2, 3, … each
/// with the sum of the pattern for that tick, no FAIL; returns the nonce.
fn check_counting(console: &str, bytes: u64) -> String {
    let c = parse(console);
    assert!(!console.contains("FAIL"), "{console}");
    assert_line(console, "testguest: ok");
    assert_eq!(c.nonces.len(), 1, "one nonce line expected:\n{console}");
    assert_eq!(c.nonces[0].len(), 16, "{console}");
    assert!(u64::from_str_radix(&c.nonces[0], 16).is_ok(), "{console}");
    assert_eq!(c.region_bytes, bytes, "{console}");
    let pages = (bytes / pattern::PAGE as u64) as usize;
    for (i, (n, sum)) in c.counts.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "counts must go 1, 2, 3, …:\n{console}");
        assert_eq!(
            *sum,
            format!("{:016x}", pattern::expected_sum(pages, *n)),
            "tick {n}:\n{console}"
        );
    }
    // The nonce comes before the first count, the verdict between them.
    let at = |s: &str| console.find(s).unwrap_or(usize::MAX);
    assert!(at("testguest: nonce=") < at("testguest: ok"), "{console}");
    assert!(at("testguest: ok") < at("testguest: count=1 "), "{console}");
    c.nonces[0].clone()
}

#[test]
fn counting_guests_tick_with_the_right_sums_and_a_nonce_per_boot() {
    if skip() {
        return;
    }
    // Two boots at once: the default region, and 8 MiB with `testguest.halt`.
    let a = Detached::start(1, "console=ttyS0 testguest.count");
    let b = Detached::start(1, "console=ttyS0 testguest.count=8 testguest.halt");
    let console_a = wait_counts(|| a.console(), 3);
    let console_b = wait_counts(|| b.console(), 3);
    let nonce_a = check_counting(&console_a, 4 << 20);
    let nonce_b = check_counting(&console_b, 8 << 20);
    assert_ne!(nonce_a, nonce_b, "two boots printed the same nonce");

    // The host's graceful shutdown ends a counting guest (with or without halt).
    for vm in [&a, &b] {
        let reply = vm
            .connect()
            .request(json!({"cmd": "shutdown", "timeout_ms": 10000}));
        assert_eq!(reply["graceful"], true, "{reply}");
        vm.assert_exits();
        let console = vm.console();
        assert_line(&console, "testguest: shutdown requested");
        // Still consistent to the last tick, and still one nonce.
        check_counting(
            &console,
            if std::ptr::eq(vm, &a) {
                4 << 20
            } else {
                8 << 20
            },
        );
    }
}

#[test]
fn a_count_region_that_does_not_fit_is_refused() {
    if skip() {
        return;
    }
    let kernel = guest().to_str().unwrap();
    for (arg, line) in [
        // RAM is [1 MiB, 64 MiB) (and below 0x9fc00); the region starts at 2 MiB, so
        // 62 MiB would just fit and 63 do not.
        (
            "testguest.count=63",
            "testguest: FAIL testguest.count=63 does not fit: 66060288 bytes at 0x00200000 are not all in e820 RAM",
        ),
        ("testguest.count=4M", "testguest: FAIL testguest.count= is not a number of MiB (1 to 3071)"),
        ("testguest.count=0", "testguest: FAIL testguest.count= is not a number of MiB (1 to 3071)"),
    ] {
        let run = vmm_run(&["--kernel", kernel, "--memory", "64MiB", "--cmdline", arg]);
        assert_line(&run.stdout, line);
        assert_line(&run.stdout, "testguest: failed");
        let counting = parse(&run.stdout);
        assert!(counting.nonces.is_empty() && counting.counts.is_empty(), "{}", run.stdout);
    }
}

#[test]
fn a_counting_guest_with_an_address_answers_pings_between_ticks() {
    if crate::netns::skip() || skip() || skip_unless(which("ping").is_some(), "ping (iputils-ping)")
    {
        return;
    }
    // The quickstart's web-2 gets an address on front (allocated, appended as `ip=`)
    // and counts.
    let lab = Lab::new(|vm| match vm {
        "web-2" => "console=ttyS0 testguest.name=web-2 testguest.count".to_string(),
        _ => format!("console=ttyS0 testguest.name={vm} testguest.halt"),
    });
    lab.apply();
    let console = wait_counts(|| lab.console("web-2"), 3);
    let addr = console
        .lines()
        .find_map(|l| l.strip_prefix("testguest: ip ")?.split('/').next())
        .unwrap_or_else(|| panic!("no `ip` line:\n{console}"))
        .to_string();
    assert!(addr.starts_with("10.100.0."), "{console}");
    let counted = parse(&console).counts.len();
    for _ in 0..2 {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.netns, "ping", "-c1", "-W2", &addr])
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec ping runs");
        assert!(
            out.status.success(),
            "no reply from the counting guest:\n{}\n{}",
            text(&out),
            lab.console("web-2")
        );
    }
    // It kept counting meanwhile, right.
    let console = wait_counts(|| lab.console("web-2"), counted + 2);
    check_counting(&console, 4 << 20);
    // A graceful stop ends it (the counting loop watches the i8042).
    lab.set("web-2", "state \"stopped\"");
    lab.apply();
    let console = lab.console("web-2");
    assert!(
        console
            .lines()
            .any(|l| l.starts_with("testguest: net dropped=")),
        "{console}"
    );
    assert_line(&console, "testguest: shutdown requested");
    check_counting(&console, 4 << 20);
}

/// `testguest.count-disk`: each tick writes its record into the ring on the first disk
/// before it prints its line, and nothing else of the disk changes; a disk that cannot
/// hold the ring, or none, is a FAIL (and the guest counts on without it).
#[test]
fn a_counting_guest_writes_each_tick_into_a_ring_on_its_disk() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    let mut image: Vec<u8> = (0..128 * 512).map(|i| (i % 251) as u8).collect();
    let ring =
        disk_ring::FIRST as usize * 512..(disk_ring::FIRST + disk_ring::SECTORS) as usize * 512;
    image[ring.clone()].fill(0);
    std::fs::write(&disk, &image).unwrap();
    let vm = Detached::start_with(json!({
        "cmdline": "console=ttyS0 testguest.count testguest.count-disk",
        "devices": {"disks": [{"path": disk}]},
    }));
    // Each tick printed has its record in its sector (or a later turn's).
    let console = wait_counts(|| vm.console(), 3);
    assert_line(&console, "testguest: count disk sectors=64-79");
    let early = disk_ring_of(&std::fs::read(&disk).unwrap());
    let printed = parse(&console).counts.len() as u64;
    for (n, slot) in (1..=printed).map(|n| (n, early[(n % disk_ring::SECTORS) as usize])) {
        assert!(
            matches!(slot, disk_ring::Slot::Count { n: m, .. } if m >= n),
            "tick {n} printed but its sector holds {slot:?}"
        );
    }

    let console = wait_counts(|| vm.console(), disk_ring::SECTORS as usize + 3);
    check_counting(&console, 4 << 20);
    let printed = parse(&console).counts.len() as u64;
    let now = std::fs::read(&disk).unwrap();
    let newest = check_disk_ring(&disk_ring_of(&now));
    // Written before printed: the ring is at least as far as the console.
    assert!(newest >= printed, "ring at {newest}, console at {printed}");
    assert!(
        now[..ring.start] == image[..ring.start] && now[ring.end..] == image[ring.end..],
        "the guest wrote outside its ring"
    );
    drop(vm);

    let small = dir.path().join("small.raw");
    std::fs::write(&small, vec![0u8; 72 * 512]).unwrap();
    for (disks, line) in [
        (
            json!([{"path": small}]),
            "testguest: FAIL testguest.count-disk: the first disk has 72 sectors, the ring needs 80",
        ),
        (
            json!([{"path": disk, "read_only": true}]),
            "testguest: FAIL testguest.count-disk: the first disk is read-only",
        ),
        (json!([]), "testguest: FAIL testguest.count-disk needs a virtio disk"),
    ] {
        let vm = Detached::start_with(json!({
            "cmdline": "console=ttyS0 testguest.count testguest.count-disk",
            "devices": {"disks": disks},
        }));
        vm.wait_console("testguest: failed");
        assert_line(&vm.console(), line);
        // It counts on, without the disk.
        wait_counts(|| vm.console(), 1);
    }
    assert_eq!(std::fs::read(&small).unwrap(), vec![0u8; 72 * 512]);
}
