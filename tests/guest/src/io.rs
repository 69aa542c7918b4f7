//! Port I/O, MMIO, and accesses to guest-physical memory (identity-mapped).
//!
//! Every port or MMIO access is a VM exit (~20 µs on the nested KVM of the test
//! machines): keep them few.

use core::arch::asm;

/// How much of physical memory the guest reads boot structures from (command line,
/// zero page, e820, initrd, MP table): the first 1 GiB. The guest's own page tables map
/// the first 4 GiB (entry.rs), so that MMIO in the 32-bit hole is reachable too.
pub const IDENTITY_LIMIT: u64 = 1 << 30;

/// Writes a byte to an I/O port.
#[inline(always)]
pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no memory effects visible to Rust.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) }
}

/// Reads a byte from an I/O port.
#[inline(always)]
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: port I/O has no memory effects visible to Rust.
    unsafe { asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags)) }
    value
}

/// Whether `[addr, addr + len)` lies in the identity map, so it may be read. Address
/// zero is refused (it means "none" in every structure the guest reads).
pub fn mapped(addr: u64, len: u64) -> bool {
    addr != 0 && addr <= IDENTITY_LIMIT && len <= IDENTITY_LIMIT - addr
}

/// Reads a value of type `T` at physical address `addr`, which must be mapped.
#[inline(always)]
fn read<T: Copy>(addr: u64) -> T {
    debug_assert!(addr != 0);
    // SAFETY: the caller checked `mapped(addr, size_of::<T>())`; memory below the
    // identity limit is plain RAM or emulated memory, readable at any alignment.
    unsafe { core::ptr::read_volatile(addr as *const T) }
}

pub fn rd8(addr: u64) -> u8 {
    read::<u8>(addr)
}

pub fn rd16(addr: u64) -> u16 {
    u16::from_le_bytes([rd8(addr), rd8(addr + 1)])
}

pub fn rd32(addr: u64) -> u32 {
    if addr & 3 == 0 {
        read::<u32>(addr)
    } else {
        u32::from(rd16(addr)) | (u32::from(rd16(addr + 2)) << 16)
    }
}

pub fn rd64(addr: u64) -> u64 {
    u64::from(rd32(addr)) | (u64::from(rd32(addr + 4)) << 32)
}

/// A byte slice over guest-physical memory. The caller checked `mapped(addr, len)`.
pub fn phys_slice<'a>(addr: u64, len: u64) -> &'a [u8] {
    // SAFETY: see `read`; the guest never writes the regions it reads this way.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) }
}

/// Where the guest's own page tables end: the virtio-mmio windows must lie below.
pub const MMIO_LIMIT: u64 = 1 << 32;

/// Reads a 32-bit MMIO register: one aligned 32-bit access.
#[inline(always)]
pub fn mmio_rd32(addr: u64) -> u32 {
    // SAFETY: `addr` is a 4-aligned register of a device window below MMIO_LIMIT
    // (checked when the window was parsed); a volatile u32 read is one `mov`.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// Writes a 32-bit MMIO register: one aligned 32-bit access.
#[inline(always)]
pub fn mmio_wr32(addr: u64, value: u32) {
    // SAFETY: as `mmio_rd32`.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

/// Reads an 8-bit MMIO register (device config space).
#[inline(always)]
pub fn mmio_rd8(addr: u64) -> u8 {
    // SAFETY: as `mmio_rd32`.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

/// Volatile writes to guest RAM the guest owns (its static buffers and rings, which a
/// device reads): the compiler may neither drop nor reorder them.
pub fn wr8(addr: u64, value: u8) {
    // SAFETY: callers pass addresses inside the guest's own static buffers.
    unsafe { core::ptr::write_volatile(addr as *mut u8, value) }
}

pub fn wr16(addr: u64, value: u16) {
    // SAFETY: as `wr8`; callers keep `addr` 2-aligned.
    unsafe { core::ptr::write_volatile(addr as *mut u16, value) }
}

pub fn wr32(addr: u64, value: u32) {
    // SAFETY: as `wr8`; callers keep `addr` 4-aligned.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

pub fn wr64(addr: u64, value: u64) {
    // SAFETY: as `wr8`; callers keep `addr` 8-aligned.
    unsafe { core::ptr::write_volatile(addr as *mut u64, value) }
}

/// Fills `[addr, addr + len)` of the guest's own memory with `value` (asm memset).
pub fn fill(addr: u64, value: u8, len: u64) {
    // SAFETY: as `wr8`.
    unsafe { core::ptr::write_bytes(addr as *mut u8, value, len as usize) }
}

/// Reads a 16-bit value the device may change (ring indexes): one access.
pub fn rd16_volatile(addr: u64) -> u16 {
    // SAFETY: callers pass 2-aligned addresses inside the guest's own rings.
    unsafe { core::ptr::read_volatile(addr as *const u16) }
}
