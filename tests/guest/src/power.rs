//! Ending the run: power off through the i8042, wait for Ctrl-Alt-Del (echoing serial
//! input meanwhile when asked), triple-fault.

use crate::io::{inb, outb};
use crate::serial;
use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

const I8042_DATA: u16 = 0x60;
const I8042_STATUS: u16 = 0x64;
const I8042_COMMAND: u16 = 0x64;
const I8042_RESET: u8 = 0xfe;
const I8042_OUTPUT_FULL: u8 = 0x01;

/// Iterations of `pause` between two polls of the i8042 in halt mode: a few ms on
/// hardware, tens of ms on the nested KVM here, so polling costs few exits.
const POLL_PAUSES: u32 = 20_000;
/// The same while echoing serial input: the 64-byte receive FIFO must not overflow
/// while the guest spins (two exits per poll, still well under the pause time).
const ECHO_POLL_PAUSES: u32 = 1_000;

/// Set when entered through PVH (QEMU microvm, which may have no i8042).
pub static PVH: AtomicBool = AtomicBool::new(false);

fn halt_forever() -> ! {
    loop {
        // SAFETY: interrupts stay off; HLT just stops this vCPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

/// Powers the VM off: i8042 reset (0xfe to port 0x64). Under PVH, where the machine
/// may have no i8042, a triple fault follows (QEMU with -no-reboot then exits).
/// Otherwise it halts, should the VMM ignore the reset.
pub fn poweroff() -> ! {
    outb(I8042_COMMAND, I8042_RESET);
    if PVH.load(Ordering::Relaxed) {
        triple_fault();
    }
    halt_forever()
}

/// Loads an empty IDT and executes `ud2`: #UD cannot be delivered, nor the #GP and
/// #DF that follow, so the CPU shuts down (KVM_EXIT_SHUTDOWN). No int3 / int n.
pub fn triple_fault() -> ! {
    let idtr = [0u16; 5]; // limit 0, base 0
    // SAFETY: the point is to crash the VM.
    unsafe { asm!("lidt [{0}]", "ud2", in(reg) &idtr, options(noreturn, nostack)) }
}

/// Halt mode: interrupts stay off, so instead of HLT the guest polls the i8042 every
/// few ms for a scancode (the VMM's graceful shutdown sends Ctrl-Alt-Del through it)
/// and then powers off. A status of 0xff means no i8042 is there: ignored. With
/// `echo`, each line received on the serial port is printed as `echo=<line>`.
pub fn wait_for_shutdown(echo: bool) -> ! {
    let pauses = if echo { ECHO_POLL_PAUSES } else { POLL_PAUSES };
    let mut in_line = false;
    loop {
        for _ in 0..pauses {
            core::hint::spin_loop();
        }
        if echo {
            while let Some(b) = serial::read() {
                in_line = serial::echo(b, in_line);
            }
        }
        let status = inb(I8042_STATUS);
        if status != 0xff && status & I8042_OUTPUT_FULL != 0 {
            let _scancode = inb(I8042_DATA);
            serial::line(b"shutdown requested");
            poweroff();
        }
    }
}
