//! A minimal i8042 keyboard controller at ports 0x60 (data) and 0x64 (status/command):
//! enough for a guest to reset the machine (command 0xfe, which vmctl treats as power
//! off) and for the VMM to request a graceful shutdown by injecting Ctrl-Alt-Del
//! (scancodes the guest reads from 0x60 once status bit 0, OBF, is set).

use std::collections::VecDeque;

use vm_superio::Trigger;

use super::bus::BusDevice;

/// The data port.
pub const I8042_DATA_PORT: u64 = 0x60;
/// Ports 0x60..=0x64.
pub const I8042_LEN: u64 = 5;
/// The keyboard's IRQ line.
pub const KBD_IRQ: u32 = 1;

const OFFSET_DATA: u64 = 0;
const OFFSET_COMMAND: u64 = 4;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_INTERFACE_TEST: u8 = 0xab;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_RESET_CPU: u8 = 0xfe;

/// Status: output buffer full.
pub const SB_OUT_DATA_AVAIL: u8 = 0x01;
/// Control byte: keyboard interrupt enabled.
const CB_KBD_INT: u8 = 0x01;
const CB_POST_OK: u8 = 0x04;
const SELF_TEST_OK: u8 = 0x55;
const KBD_ACK: u8 = 0xfa;

/// Ctrl, Alt, Del make codes (scancode set 2).
pub const CTRL_ALT_DEL: [u8; 4] = [0x14, 0x11, 0xe0, 0x71];
/// The output buffer never holds more than this: a guest can't grow it.
const BUF_CAP: usize = 16;

/// Errors of the i8042.
#[derive(Debug, thiserror::Error)]
pub enum I8042Error {
    /// The guest has not read earlier key presses yet.
    #[error("the i8042 output buffer is full: the guest is not reading its keyboard")]
    BufferFull,
}

/// The controller. `R` is asked to reset (power off) the VM, `I` raises IRQ 1.
pub struct I8042<R: Trigger, I: Trigger> {
    reset: R,
    kbd_irq: I,
    control: u8,
    outp: u8,
    pending_cmd: Option<u8>,
    buf: VecDeque<u8>,
}

impl<R: Trigger, I: Trigger> I8042<R, I> {
    /// A controller with an empty output buffer.
    pub fn new(reset: R, kbd_irq: I) -> Self {
        Self {
            reset,
            kbd_irq,
            control: CB_POST_OK | CB_KBD_INT,
            outp: 0,
            pending_cmd: None,
            buf: VecDeque::with_capacity(BUF_CAP),
        }
    }

    fn push(&mut self, byte: u8) -> Result<(), I8042Error> {
        if self.buf.len() >= BUF_CAP {
            return Err(I8042Error::BufferFull);
        }
        self.buf.push_back(byte);
        if self.control & CB_KBD_INT != 0 {
            // An interrupt that cannot be raised is not fatal: the guest may poll.
            let _ = self.kbd_irq.trigger();
        }
        Ok(())
    }

    /// Queues Ctrl-Alt-Del, the graceful shutdown request.
    pub fn inject_ctrl_alt_del(&mut self) -> Result<(), I8042Error> {
        if self.buf.len() + CTRL_ALT_DEL.len() > BUF_CAP {
            return Err(I8042Error::BufferFull);
        }
        for b in CTRL_ALT_DEL {
            self.push(b)?;
        }
        Ok(())
    }

    fn command(&mut self, cmd: u8) {
        let reply = match cmd {
            CMD_READ_CTR => Some(self.control),
            CMD_READ_OUTP => Some(self.outp),
            CMD_SELF_TEST => Some(SELF_TEST_OK),
            CMD_INTERFACE_TEST => Some(0),
            CMD_WRITE_CTR | CMD_WRITE_OUTP => {
                self.pending_cmd = Some(cmd);
                None
            }
            CMD_RESET_CPU => {
                let _ = self.reset.trigger();
                None
            }
            _ => None,
        };
        if let Some(r) = reply {
            self.buf.clear();
            let _ = self.push(r);
        }
    }

    fn data(&mut self, value: u8) {
        match self.pending_cmd.take() {
            Some(CMD_WRITE_CTR) => self.control = value,
            Some(CMD_WRITE_OUTP) => self.outp = value,
            // A byte for the keyboard itself: acknowledge it.
            _ => {
                let _ = self.push(KBD_ACK);
            }
        }
    }
}

/// The controller's state, for snapshots.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042State {
    /// The control byte.
    pub control: u8,
    /// The output port.
    pub outp: u8,
    /// A command waiting for its data byte.
    pub pending_cmd: Option<u8>,
    /// The output buffer.
    pub buf: Vec<u8>,
}

impl<R: Trigger, I: Trigger> I8042<R, I> {
    /// The state to save.
    pub fn state(&self) -> I8042State {
        I8042State {
            control: self.control,
            outp: self.outp,
            pending_cmd: self.pending_cmd,
            buf: self.buf.iter().copied().collect(),
        }
    }

    /// Takes a saved state; a buffer longer than the controller's is refused.
    pub fn restore(&mut self, state: &I8042State) -> Result<(), I8042Error> {
        if state.buf.len() > BUF_CAP {
            return Err(I8042Error::BufferFull);
        }
        self.control = state.control;
        self.outp = state.outp;
        self.pending_cmd = state.pending_cmd;
        self.buf = state.buf.iter().copied().collect();
        Ok(())
    }
}

impl<R: Trigger + Send, I: Trigger + Send> BusDevice for I8042<R, I> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match (offset, data.len()) {
            (OFFSET_COMMAND, 1) if self.buf.is_empty() => 0,
            (OFFSET_COMMAND, 1) => SB_OUT_DATA_AVAIL,
            (OFFSET_DATA, 1) => {
                let v = self.buf.pop_front().unwrap_or(0);
                if !self.buf.is_empty() && self.control & CB_KBD_INT != 0 {
                    let _ = self.kbd_irq.trigger();
                }
                v
            }
            _ => 0xff,
        };
        data.fill(value);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (OFFSET_COMMAND, [cmd]) => self.command(*cmd),
            (OFFSET_DATA, [value]) => self.data(*value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Count(Arc<AtomicU32>);
    impl Count {
        fn get(&self) -> u32 {
            self.0.load(Ordering::SeqCst)
        }
    }
    impl Trigger for Count {
        type E = ();
        fn trigger(&self) -> Result<(), ()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn read(dev: &mut I8042<Count, Count>, offset: u64) -> u8 {
        let mut b = [0u8];
        BusDevice::read(dev, offset, &mut b);
        b[0]
    }

    #[test]
    fn reset_command_triggers_reset() {
        let reset = Count::default();
        let mut dev = I8042::new(reset.clone(), Count::default());
        BusDevice::write(&mut dev, OFFSET_COMMAND, &[CMD_RESET_CPU]);
        assert_eq!(reset.get(), 1);
    }

    #[test]
    fn ctrl_alt_del_sets_obf_and_is_read_back() {
        let (reset, irq) = (Count::default(), Count::default());
        let mut dev = I8042::new(reset.clone(), irq.clone());
        assert_eq!(read(&mut dev, OFFSET_COMMAND), 0, "idle status is 0");
        dev.inject_ctrl_alt_del().unwrap();
        assert!(irq.get() >= 1);
        let mut got = Vec::new();
        while read(&mut dev, OFFSET_COMMAND) & SB_OUT_DATA_AVAIL != 0 {
            got.push(read(&mut dev, OFFSET_DATA));
        }
        assert_eq!(got, CTRL_ALT_DEL);
        assert_eq!(reset.get(), 0);
        let mut wide = [0u8; 2];
        BusDevice::read(&mut dev, OFFSET_DATA, &mut wide);
        assert_eq!(wide, [0xff, 0xff]);
    }

    #[test]
    fn buffer_is_bounded() {
        let mut dev = I8042::new(Count::default(), Count::default());
        for _ in 0..BUF_CAP / CTRL_ALT_DEL.len() {
            dev.inject_ctrl_alt_del().unwrap();
        }
        assert!(dev.inject_ctrl_alt_del().is_err());
        for _ in 0..100 {
            BusDevice::write(&mut dev, OFFSET_DATA, &[0xff]);
        }
        assert_eq!(dev.buf.len(), BUF_CAP);
    }

    #[test]
    fn control_byte_round_trip() {
        let mut dev = I8042::new(Count::default(), Count::default());
        BusDevice::write(&mut dev, OFFSET_COMMAND, &[CMD_WRITE_CTR]);
        BusDevice::write(&mut dev, OFFSET_DATA, &[0x45]);
        BusDevice::write(&mut dev, OFFSET_COMMAND, &[CMD_READ_CTR]);
        assert_eq!(read(&mut dev, OFFSET_DATA), 0x45);
        BusDevice::write(&mut dev, OFFSET_COMMAND, &[CMD_SELF_TEST]);
        assert_eq!(read(&mut dev, OFFSET_DATA), SELF_TEST_OK);
    }
}
