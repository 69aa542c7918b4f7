//! `testguest.count-disk`'s ring of sectors on the first disk: pure code on byte
//! slices, so the host's tests include this file (tests/e2e/guest_count.rs) and read
//! the ring the guest wrote.
//!
//! On tick `n` the guest writes one 512-byte sector, `FIRST + n % SECTORS`, holding
//! `count=<n> sector=<s>\n` (decimal, `s` the sector's own number) and zeros up to
//! the end of the sector. After `SECTORS` ticks every sector of the ring holds one of
//! the last `SECTORS` counts, each in the sector of its residue: a sector that missed
//! a write holds a count older by `SECTORS` or more, or nothing.

/// Bytes per sector.
pub const SECTOR: usize = 512;
/// The ring's first sector (past the sectors 0 and 1 the boot's disk checks use).
pub const FIRST: u64 = 64;
/// The ring's length in sectors (8 KiB: one 64 KiB block of the engine's write marks).
pub const SECTORS: u64 = 16;

/// The sector tick `n` writes.
pub fn sector_of(n: u64) -> u64 {
    FIRST + n % SECTORS
}

/// Fills `buf` with tick `n`'s record for its sector.
pub fn record(n: u64, buf: &mut [u8; SECTOR]) {
    buf.fill(0);
    let mut at = 0;
    for (text, value) in [(&b"count="[..], n), (&b" sector="[..], sector_of(n))] {
        buf[at..at + text.len()].copy_from_slice(text);
        at += text.len();
        at += decimal(value, &mut buf[at..]);
    }
    buf[at] = b'\n';
}

/// Writes `n` in decimal at the start of `out` (at most 20 digits): their count.
fn decimal(mut n: u64, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        out[i] = digits[len - 1 - i];
    }
    len
}

/// What one sector of the ring holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub enum Slot {
    /// Zeros: never written.
    Empty,
    /// A well-formed record: its count and the sector it names.
    Count { n: u64, sector: u64 },
    /// Anything else.
    Garbage,
}

/// Reads one sector of the ring (the host's side).
#[cfg_attr(not(test), allow(dead_code))]
pub fn parse(sector: &[u8]) -> Slot {
    if sector.iter().all(|&b| b == 0) {
        return Slot::Empty;
    }
    let Some(end) = sector.iter().position(|&b| b == b'\n') else {
        return Slot::Garbage;
    };
    if sector.len() != SECTOR || sector[end + 1..].iter().any(|&b| b != 0) {
        return Slot::Garbage;
    }
    let number = |s: &[u8]| -> Option<u64> {
        if s.is_empty() || s.len() > 20 || (s.len() > 1 && s[0] == b'0') {
            return None;
        }
        s.iter().try_fold(0u64, |n, &c| {
            if !c.is_ascii_digit() {
                return None;
            }
            n.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        })
    };
    let fields = sector[..end]
        .strip_prefix(b"count=")
        .and_then(|rest| {
            let at = rest.iter().position(|&c| c == b' ')?;
            let (n, rest) = rest.split_at(at);
            Some((n, rest.strip_prefix(b" sector=")?))
        })
        .and_then(|(n, s)| Some((number(n)?, number(s)?)));
    match fields {
        Some((n, sector)) => Slot::Count { n, sector },
        None => Slot::Garbage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(n: u64) -> [u8; SECTOR] {
        let mut buf = [0xaa; SECTOR];
        record(n, &mut buf);
        buf
    }

    #[test]
    fn a_record_names_its_count_and_sector_and_is_zero_after() {
        let buf = written(1234);
        let line = b"count=1234 sector=66\n";
        assert_eq!(&buf[..line.len()], line);
        assert!(buf[line.len()..].iter().all(|&b| b == 0));
        assert_eq!(
            parse(&buf),
            Slot::Count {
                n: 1234,
                sector: 66
            }
        );
        assert_eq!(parse(&written(0)), Slot::Count { n: 0, sector: 64 });
        assert_eq!(
            parse(&written(u64::MAX)),
            Slot::Count {
                n: u64::MAX,
                sector: sector_of(u64::MAX)
            }
        );
    }

    #[test]
    fn ticks_go_round_the_ring() {
        assert_eq!(sector_of(1), 65);
        assert_eq!(sector_of(15), 79);
        assert_eq!(sector_of(16), 64);
        assert_eq!(sector_of(33), 65);
    }

    #[test]
    fn anything_but_a_record_is_empty_or_garbage() {
        assert_eq!(parse(&[0; SECTOR]), Slot::Empty);
        let mut junk = written(7);
        junk[400] = 1;
        assert_eq!(parse(&junk), Slot::Garbage);
        for bad in [
            &b"count= sector=71\n"[..],
            b"count=07 sector=71\n",
            b"count=7 sector=71",
            b"count=7x sector=71\n",
            b"count=7  sector=71\n",
            b"cnt=7 sector=71\n",
            b"count=99999999999999999999 sector=71\n",
        ] {
            let mut buf = [0; SECTOR];
            buf[..bad.len()].copy_from_slice(bad);
            assert_eq!(
                parse(&buf),
                Slot::Garbage,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse(&written(7)[..100]), Slot::Garbage);
    }
}
