//! The 8250/16550 serial port (vm-superio's `Serial`) on the port I/O bus. Output is
//! written through to the console log or stdout byte by byte, as the guest writes it:
//! nothing is buffered in the VMM, so a guest flooding the port cannot grow host memory
//! (a slow reader only slows the guest down; an attached `vmctl console` client never
//! does, see [`crate::vmm::console`]). Input from the console client goes into the
//! UART's 64-byte receive FIFO ([`SerialDevice::enqueue_input`]).

use std::io::Write;

use serde::{Deserialize, Serialize};
use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::Serial;

use super::bus::BusDevice;
use super::EventFdTrigger;

/// COM1's first port.
pub const COM1_PORT: u64 = 0x3f8;
/// COM1's ports.
pub const COM1_LEN: u64 = 8;
/// COM1's IRQ line.
pub const COM1_IRQ: u32 = 4;

/// Where guest serial output goes.
pub type SerialOut = Box<dyn Write + Send>;

/// A serial port raising its interrupt through an eventfd.
pub struct SerialDevice {
    serial: Serial<EventFdTrigger, NoEvents, SerialOut>,
}

/// The UART's registers and receive FIFO, for snapshots (vm-superio's `SerialState`,
/// which has no serde).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialSnapshot {
    /// DLL, DLM, IER, IIR, LCR, LSR, MCR, MSR, SCR.
    pub registers: [u8; 9],
    /// The receive FIFO.
    pub fifo: Vec<u8>,
}

impl SerialDevice {
    /// A serial port writing to `out` and signalling `irq`.
    pub fn new(irq: EventFdTrigger, out: SerialOut) -> Self {
        Self {
            serial: Serial::new(irq, out),
        }
    }

    /// A serial port in a saved state; `None` when the state's FIFO is too long.
    pub fn from_snapshot(irq: EventFdTrigger, out: SerialOut, s: &SerialSnapshot) -> Option<Self> {
        let [dll, dlm, ier, iir, lcr, lsr, mcr, msr, scr] = s.registers;
        let state = SerialState {
            baud_divisor_low: dll,
            baud_divisor_high: dlm,
            interrupt_enable: ier,
            interrupt_identification: iir,
            line_control: lcr,
            line_status: lsr,
            modem_control: mcr,
            modem_status: msr,
            scratch: scr,
            in_buffer: s.fifo.clone(),
        };
        let serial = Serial::from_state(&state, irq, NoEvents, out).ok()?;
        Some(Self { serial })
    }

    /// The port's state to save.
    pub fn snapshot(&self) -> SerialSnapshot {
        let s = self.serial.state();
        SerialSnapshot {
            registers: [
                s.baud_divisor_low,
                s.baud_divisor_high,
                s.interrupt_enable,
                s.interrupt_identification,
                s.line_control,
                s.line_status,
                s.modem_control,
                s.modem_status,
                s.scratch,
            ],
            fifo: s.in_buffer,
        }
    }

    /// Puts as many of `bytes` as fit into the receive FIFO (raising the received-data
    /// interrupt when the guest enabled it) and returns how many it took: 0 when the
    /// FIFO is full or the UART is in loopback mode.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let n = self.serial.fifo_capacity().min(bytes.len());
        if n == 0 {
            return 0;
        }
        match self.serial.enqueue_raw_bytes(&bytes[..n]) {
            Ok(taken) => taken,
            // The bytes are in the FIFO; only the interrupt could not be raised.
            Err(vm_superio::serial::Error::Trigger(_)) => n,
            Err(_) => 0,
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (data.len(), u8::try_from(offset)) {
            (1, Ok(offset)) => data[0] = self.serial.read(offset),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (1, Ok(offset)) = (data.len(), u8::try_from(offset)) {
            // A failed host write (closed stdout, full disk) loses the byte; the guest
            // carries on, as with a disconnected UART.
            let _ = self.serial.write(offset, data[0]);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    /// Output collected in memory.
    #[derive(Clone, Default)]
    pub(crate) struct Sink(pub(crate) Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_written_go_out_and_raise_thre() {
        let sink = Sink::default();
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = EventFdTrigger(evt.try_clone().unwrap());
        let mut dev = SerialDevice::new(irq, Box::new(sink.clone()));
        dev.write(1, &[0x02]); // IER: THR empty interrupt
        for b in b"hi\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
        assert!(evt.read().unwrap() >= 1);
        let mut lsr = [0u8];
        dev.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "THR empty");
        let mut wide = [0u8; 2];
        dev.read(0, &mut wide);
        assert_eq!(wide, [0xff, 0xff]);
    }

    #[test]
    fn input_fills_the_fifo_and_no_more() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = EventFdTrigger(evt.try_clone().unwrap());
        let mut dev = SerialDevice::new(irq, Box::new(Sink::default()));
        dev.write(1, &[0x01]); // IER: received data available interrupt
        assert_eq!(dev.enqueue_input(b"hi"), 2);
        assert!(evt.read().unwrap() >= 1);
        let big = [b'x'; 100];
        assert_eq!(dev.enqueue_input(&big), 62);
        assert_eq!(dev.enqueue_input(&big), 0);
        let (mut lsr, mut rbr) = ([0u8], [0u8]);
        dev.read(5, &mut lsr);
        assert_eq!(lsr[0] & 0x01, 1, "data ready");
        dev.read(0, &mut rbr);
        assert_eq!(rbr[0], b'h');
        assert_eq!(dev.enqueue_input(&big), 1);
    }
}
