//! virtio-net: a NIC over a tap.

pub mod announce;
mod device;
mod tap;

pub use device::{Net, MAX_FRAME, QUEUE_SIZE, RX_QUEUE, TX_QUEUE};
pub use tap::{Tap, TapDevice, TapError, VNET_HDR_LEN};
