//! Halt mode's idle loop: sleep in HLT until the i8042 raises IRQ 1, instead of
//! spinning a host core while the VM waits for its graceful shutdown.
//!
//! The VMM's graceful shutdown puts a scancode in the i8042 and raises IRQ 1. With an
//! in-kernel irqchip, HLT never exits to the VMM: the vCPU sleeps in the host kernel
//! until an interrupt is pending, so an idle guest costs no host CPU. The guest sets
//! up the 8259 PIC (IRQ 0–15 at vectors 0x20–0x2f, all masked but IRQ 1) and an IDT
//! whose entries 0x20–0x2f point at one handler that only acknowledges the PIC. The
//! VMM routes PIC interrupts to the BSP through LAPIC LINT0 (ExtINT). Other vectors
//! stay not-present: an unexpected exception triple-faults, which the VMM reports.

use crate::io::outb;
use core::arch::{asm, global_asm};

const PIC1_COMMAND: u16 = 0x20;
const PIC1_DATA: u16 = 0x21;
const PIC2_COMMAND: u16 = 0xa0;
const PIC2_DATA: u16 = 0xa1;
/// First vector of the master PIC's IRQs.
const PIC_VECTOR_BASE: u8 = 0x20;
/// IDT entries: up to the last PIC vector.
const IDT_ENTRIES: usize = 0x30;

global_asm!(
    r#"
    .section .text.testguest_irq, "ax"
    .global testguest_irq_handler
testguest_irq_handler:
    push rax
    mov al, 0x20
    out 0xa0, al
    out 0x20, al
    pop rax
    iretq
"#
);

extern "C" {
    fn testguest_irq_handler();
}

/// The IDT: 16 bytes per 64-bit gate. Written once before interrupts are enabled.
static mut IDT: [u64; IDT_ENTRIES * 2] = [0; IDT_ENTRIES * 2];

/// Builds the IDT's PIC gates and loads it.
fn load_idt() {
    let handler = testguest_irq_handler as usize as u64;
    let cs: u16;
    // SAFETY: reads the code segment selector.
    unsafe { asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags)) }
    // Interrupt gate, present, DPL 0 (type 0xe, P bit): attributes byte 0x8e.
    let low = (handler & 0xffff)
        | (u64::from(cs) << 16)
        | (0x8e_u64 << 40)
        | (((handler >> 16) & 0xffff) << 48);
    let high = handler >> 32;
    let idt = &raw mut IDT;
    for vector in usize::from(PIC_VECTOR_BASE)..IDT_ENTRIES {
        // SAFETY: single-threaded, interrupts off; the indices are in bounds.
        unsafe {
            (*idt)[vector * 2] = low;
            (*idt)[vector * 2 + 1] = high;
        }
    }
    let limit = (IDT_ENTRIES * 16 - 1) as u16;
    let base = idt as u64;
    let mut idtr = [0u8; 10];
    idtr[..2].copy_from_slice(&limit.to_le_bytes());
    idtr[2..].copy_from_slice(&base.to_le_bytes());
    // SAFETY: the IDT is static and its gates are valid.
    unsafe { asm!("lidt [{0}]", in(reg) idtr.as_ptr(), options(readonly, nostack, preserves_flags)) }
}

/// Initialises both PICs: vectors 0x20/0x28, cascade on IRQ 2, 8086 mode, every IRQ
/// masked but `irq` (on the master).
fn init_pic(irq: u8) {
    outb(PIC1_COMMAND, 0x11);
    outb(PIC2_COMMAND, 0x11);
    outb(PIC1_DATA, PIC_VECTOR_BASE);
    outb(PIC2_DATA, PIC_VECTOR_BASE + 8);
    outb(PIC1_DATA, 0x04);
    outb(PIC2_DATA, 0x02);
    outb(PIC1_DATA, 0x01);
    outb(PIC2_DATA, 0x01);
    outb(PIC1_DATA, !(1u8 << irq));
    outb(PIC2_DATA, 0xff);
}

/// Prepares interrupt-driven waiting for IRQ `irq` (< 8).
pub fn enable_irq(irq: u8) {
    load_idt();
    init_pic(irq);
}

/// Waits until `ready()` holds, sleeping in HLT between interrupts. `sti; hlt` is
/// atomic (STI's one-instruction shadow), so an interrupt arriving after the check
/// still wakes the HLT.
pub fn wait_until(mut ready: impl FnMut() -> bool) {
    while !ready() {
        // SAFETY: the IDT's PIC gates are set (enable_irq); the handler only EOIs.
        unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) }
    }
}
