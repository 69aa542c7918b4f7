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
/// The i8042's keyboard interrupt line.
const I8042_IRQ: u8 = 1;

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

/// Halt mode: waits for a scancode from the i8042 (the VMM's graceful shutdown sends
/// Ctrl-Alt-Del through it) and then powers off. With an i8042 present the guest sleeps
/// in HLT until IRQ 1 (idle.rs), costing no host CPU; without one (status 0xff, e.g.
/// QEMU microvm) it falls back to polling every few ms. With `echo`, it polls instead,
/// and each line received on the serial port is printed as `echo=<line>`.
pub fn wait_for_shutdown(echo: bool) -> ! {
    let pending = key_pending;
    if echo {
        let mut in_line = false;
        loop {
            for _ in 0..ECHO_POLL_PAUSES {
                core::hint::spin_loop();
            }
            while let Some(b) = serial::read() {
                in_line = serial::echo(b, in_line);
            }
            if pending() {
                break;
            }
        }
    } else if inb(I8042_STATUS) != 0xff && !PVH.load(Ordering::Relaxed) {
        crate::idle::enable_irq(I8042_IRQ);
        crate::idle::wait_until(pending);
    } else {
        while !pending() {
            for _ in 0..POLL_PAUSES {
                core::hint::spin_loop();
            }
        }
    }
    shutdown_requested();
}

/// Whether a key waits on the i8042 (the engine's graceful shutdown).
pub fn key_pending() -> bool {
    let status = inb(I8042_STATUS);
    status != 0xff && status & I8042_OUTPUT_FULL != 0
}

/// Reads the pending key, prints `shutdown requested` and powers off.
pub fn shutdown_requested() -> ! {
    let _scancode = inb(I8042_DATA);
    serial::line(b"shutdown requested");
    poweroff();
}
