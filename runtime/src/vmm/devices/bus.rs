//! Address-range dispatch of guest port I/O ([`PioBus`]) and MMIO ([`MmioBus`]) to
//! devices. An access no device claims reads as all ones and is dropped when written;
//! the caller counts it. Nothing a guest does on a bus is fatal.

use std::sync::{Arc, Mutex};

/// A device on a bus. `offset` is relative to the base the device was inserted at.
pub trait BusDevice: Send {
    /// A guest read of `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors building a bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The range overlaps a device already on the bus, or is empty or wraps.
    #[error("bus range {base:#x}+{len:#x} is empty or overlaps another device")]
    Overlap {
        /// The base asked for.
        base: u64,
        /// The length asked for.
        len: u64,
    },
}

struct Entry {
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// Devices by address range.
#[derive(Default)]
pub struct Bus {
    entries: Vec<Entry>,
}

/// The port I/O bus (addresses are ports).
pub type PioBus = Bus;
/// The MMIO bus (addresses are guest physical addresses).
pub type MmioBus = Bus;

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` at `base..base + len`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let Some(end) = end else {
            return Err(BusError::Overlap { base, len });
        };
        if self
            .entries
            .iter()
            .any(|e| base < e.base + e.len && e.base < end)
        {
            return Err(BusError::Overlap { base, len });
        }
        self.entries.push(Entry { base, len, device });
        self.entries.sort_by_key(|e| e.base);
        Ok(())
    }

    /// The device whose range holds the whole access `addr..addr + size`.
    fn find(&self, addr: u64, size: usize) -> Option<(&Entry, u64)> {
        let end = addr.checked_add(size as u64)?;
        self.entries
            .iter()
            .find(|e| addr >= e.base && end <= e.base + e.len)
            .map(|e| (e, addr - e.base))
    }

    /// Reads from the device at `addr`; returns `false` (and all ones) when none is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, offset)) => {
                lock(&e.device).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Writes to the device at `addr`; returns `false` (dropping the write) when none is.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, offset)) => {
                lock(&e.device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, recovering it if a previous holder panicked: device state stays
/// usable and the VMM never panics on a poisoned lock.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Scratch {
        last: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Scratch {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_range() {
        let dev = Arc::new(Mutex::new(Scratch::default()));
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b, [2]);
        assert!(bus.write(0x3ff, &[7]));
        assert_eq!(dev.lock().unwrap().last, vec![(7, vec![7])]);
    }

    #[test]
    fn unknown_reads_all_ones_and_drops_writes() {
        let mut bus = Bus::new();
        bus.insert(0x60, 5, Arc::new(Mutex::new(Scratch::default())))
            .unwrap();
        let mut b = [0u8; 4];
        assert!(!bus.read(0x80, &mut b));
        assert_eq!(b, [0xff; 4]);
        assert!(!bus.write(0x80, &[1]));
        // An access straddling the end of a device is nobody's.
        assert!(!bus.read(0x63, &mut b));
        assert!(!bus.read(u64::MAX, &mut b));
    }

    #[test]
    fn overlaps_are_refused() {
        let mut bus = Bus::new();
        let d = || Arc::new(Mutex::new(Scratch::default()));
        bus.insert(0x100, 0x10, d()).unwrap();
        assert!(bus.insert(0x10f, 1, d()).is_err());
        assert!(bus.insert(0xf8, 0x9, d()).is_err());
        assert!(bus.insert(0x110, 0, d()).is_err());
        assert!(bus.insert(u64::MAX, 2, d()).is_err());
        bus.insert(0x110, 1, d()).unwrap();
    }
}
