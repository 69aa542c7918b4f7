//! Port I/O and reads of guest-physical memory (identity-mapped).
//!
//! Every port access is a VM exit (~20 µs on the nested KVM of the test machines):
//! keep them few. MMIO helpers for the virtio driver (issue 4) belong here too.

use core::arch::asm;

/// How much of physical memory the guest may touch: the identity map the VMM (or the
/// PVH entry) sets up covers at least the first 1 GiB.
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
