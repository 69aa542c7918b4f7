//! The devices' state: the serial port, the i8042, and each virtio-mmio transport with
//! its queues and device, in device order (disks, then NICs, as the spec lists them).
//! The backends (disk files, taps) are not state: a restore opens the ones its spec
//! names.

use serde::{Deserialize, Serialize};

use crate::vmm::devices::i8042::I8042State;
use crate::vmm::devices::serial::SerialSnapshot;
use crate::vmm::devices::virtio::mmio::state::TransportState;

/// Every device of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicesState {
    /// COM1.
    pub serial: SerialSnapshot,
    /// The i8042.
    pub i8042: I8042State,
    /// The virtio devices, in device order.
    pub virtio: Vec<TransportState>,
}
