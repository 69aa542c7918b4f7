//! The kernel command line: read with a bound, printed, and searched for the guest's
//! switches (`testguest.halt`, `testguest.fault`; later `testguest.name=…`,
//! `virtio_mmio.device=…`).

use crate::io::{mapped, phys_slice, rd8};

/// The longest command line the guest reads (Linux x86's COMMAND_LINE_SIZE is 2048;
/// allow more so an over-long one is still visible, bounded).
pub const MAX_LEN: u64 = 4096;

#[derive(Clone, Copy)]
pub struct Cmdline<'a> {
    pub bytes: &'a [u8],
}

impl<'a> Cmdline<'a> {
    pub const EMPTY: Cmdline<'static> = Cmdline { bytes: b"" };

    /// The NUL-terminated string at physical `addr` (at most MAX_LEN bytes; empty when
    /// `addr` is zero). `None` when it is not in the identity map.
    pub fn at(addr: u64) -> Option<Cmdline<'a>> {
        if addr == 0 {
            return Some(Cmdline { bytes: b"" });
        }
        let mut len = 0;
        while len < MAX_LEN && mapped(addr, len + 1) && rd8(addr + len) != 0 {
            len += 1;
        }
        if len < MAX_LEN && !mapped(addr, len + 1) {
            return None;
        }
        Some(Cmdline { bytes: phys_slice(addr, len) })
    }

    /// Space-separated words.
    pub fn words(&self) -> impl Iterator<Item = &'a [u8]> {
        self.bytes.split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty())
    }

    /// Whether the word `name` (or `name=…`) is present.
    pub fn has(&self, name: &[u8]) -> bool {
        self.words().any(|w| w == name || (w.starts_with(name) && w.get(name.len()) == Some(&b'=')))
    }

    /// Every value of `key=value` words, in order.
    #[allow(dead_code)]
    pub fn values(&self, key: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let words = Cmdline { bytes: self.bytes }.words();
        words.filter_map(move |w| {
            if w.len() > key.len() && w.starts_with(key) && w[key.len()] == b'=' {
                Some(&w[key.len() + 1..])
            } else {
                None
            }
        })
    }

    /// The first value of `key=value`.
    #[allow(dead_code)]
    pub fn value(&self, key: &'a [u8]) -> Option<&'a [u8]> {
        self.values(key).next()
    }
}
