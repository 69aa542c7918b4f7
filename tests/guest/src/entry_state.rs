//! The machine state the VMM entered the guest with, recorded by `_start` (entry.rs)
//! before anything changes it: RFLAGS, CR0/CR3/CR4, EFER, the segment selectors and
//! task register, GDTR, IDTR and the stack pointer. Only the Linux 64-bit entry records
//! it (`valid`).

/// Byte offsets in [`EntryState`], for the assembly that fills it.
pub const OFF_RFLAGS: usize = 0;
pub const OFF_CR0: usize = 8;
pub const OFF_CR3: usize = 16;
pub const OFF_CR4: usize = 24;
pub const OFF_EFER: usize = 32;
pub const OFF_SELECTORS: usize = 40;
pub const OFF_GDTR: usize = 56;
pub const OFF_IDTR: usize = 72;
pub const OFF_RSP: usize = 88;
pub const OFF_VALID: usize = 96;

/// Layout fixed by the offsets above (checked below).
#[repr(C)]
pub struct EntryState {
    pub rflags: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// CS, DS, ES, SS, FS, GS, TR.
    pub selectors: [u16; 8],
    /// `sgdt`: limit (2 bytes), base (8 bytes), padding.
    pub gdtr: [u16; 8],
    /// `sidt`: likewise.
    pub idtr: [u16; 8],
    pub rsp: u64,
    pub valid: u8,
}

const _: () = {
    assert!(core::mem::offset_of!(EntryState, selectors) == OFF_SELECTORS);
    assert!(core::mem::offset_of!(EntryState, gdtr) == OFF_GDTR);
    assert!(core::mem::offset_of!(EntryState, idtr) == OFF_IDTR);
    assert!(core::mem::offset_of!(EntryState, rsp) == OFF_RSP);
    assert!(core::mem::offset_of!(EntryState, valid) == OFF_VALID);
    assert!(core::mem::offset_of!(EntryState, efer) == OFF_EFER);
};

/// Written by `_start` only; in .data, not .bss, which `_start` zeroes afterwards.
#[no_mangle]
#[link_section = ".data.testguest_entry_state"]
pub static mut testguest_entry_state: EntryState = EntryState {
    rflags: 0,
    cr0: 0,
    cr3: 0,
    cr4: 0,
    efer: 0,
    selectors: [0; 8],
    gdtr: [0; 8],
    idtr: [0; 8],
    rsp: 0,
    valid: 0,
};

/// A descriptor-table register: `(base, limit)`.
pub fn table(reg: &[u16; 8]) -> (u64, u16) {
    let base = u64::from(reg[1])
        | (u64::from(reg[2]) << 16)
        | (u64::from(reg[3]) << 32)
        | (u64::from(reg[4]) << 48);
    (base, reg[0])
}

/// The recorded state, if the Linux entry recorded one.
pub fn get() -> Option<&'static EntryState> {
    // SAFETY: written once by `_start` before any Rust code runs, only read after.
    let s = unsafe { &*core::ptr::addr_of!(testguest_entry_state) };
    (s.valid == 1).then_some(s)
}
