//! Devices the microVM engine emulates.

pub mod virtio;
