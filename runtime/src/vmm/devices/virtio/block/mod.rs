//! virtio-blk: a disk over a raw file.

mod device;
mod request;

pub use device::{Block, BlockError, ID_LEN, QUEUE_SIZE, SECTOR_SIZE, WRITTEN_BLOCK};
