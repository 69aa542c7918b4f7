//! A transport's state for snapshots: its registers, its own view of every queue, and
//! the queues of its device once active. Restoring is hostile input like a driver's
//! writes: every queue is rebuilt through virtio-queue's checks (sizes, alignment) and
//! a ready queue must lie inside guest memory, or the restore is refused.

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};

use super::{MmioTransport, S_DRIVER_OK, S_NEEDS_RESET};
use crate::vmm::devices::virtio::VirtioDevice;

/// One virtqueue as saved (virtio-queue's `QueueState`, which has no serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    /// The device's maximum size.
    pub max_size: u16,
    /// The next available-ring index the device reads.
    pub next_avail: u16,
    /// The next used-ring index the device writes.
    pub next_used: u16,
    /// VIRTIO_F_RING_EVENT_IDX negotiated.
    pub event_idx: bool,
    /// The size the driver chose.
    pub size: u16,
    /// Whether the driver readied it.
    pub ready: bool,
    /// The descriptor table's guest address.
    pub desc_table: u64,
    /// The available ring's guest address.
    pub avail_ring: u64,
    /// The used ring's guest address.
    pub used_ring: u64,
}

impl From<QueueState> for QueueSnapshot {
    fn from(s: QueueState) -> Self {
        Self {
            max_size: s.max_size,
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx: s.event_idx_enabled,
            size: s.size,
            ready: s.ready,
            desc_table: s.desc_table,
            avail_ring: s.avail_ring,
            used_ring: s.used_ring,
        }
    }
}

/// A transport and its device, as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    /// The virtio device ID (checked against the device restored into).
    pub device_type: u32,
    /// The transport's queues, as the driver set them up.
    pub queues: Vec<QueueSnapshot>,
    /// Per queue: the driver wrote an invalid size.
    pub bad_size: Vec<bool>,
    /// Per queue: the ring addresses the driver wrote.
    pub ring_addrs: Vec<[u64; 3]>,
    /// Per queue and ring: misaligned.
    pub bad_addr: Vec<[bool; 3]>,
    /// `DeviceFeaturesSel`.
    pub device_features_sel: u32,
    /// `DriverFeaturesSel`.
    pub driver_features_sel: u32,
    /// The features the driver acked.
    pub acked_features: u64,
    /// `QueueSel`.
    pub queue_sel: u32,
    /// The status register.
    pub status: u32,
    /// `ConfigGeneration`.
    pub config_generation: u32,
    /// `InterruptStatus`.
    pub interrupt_status: u32,
    /// The queues of the active device (where it is in each ring), when active.
    pub device_queues: Option<Vec<QueueSnapshot>>,
}

/// Why a transport's state was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransportStateError {
    /// The state is of another kind of device.
    #[error("the state is of virtio device type {saved}, the device is of type {device}")]
    DeviceType {
        /// Saved.
        saved: u32,
        /// Here.
        device: u32,
    },
    /// The queue counts or per-queue lists disagree.
    #[error("the state has {saved} queues, the device has {device}")]
    QueueCount {
        /// Saved.
        saved: usize,
        /// Here.
        device: usize,
    },
    /// A queue's size, maximum or ring addresses are invalid.
    #[error("queue {index} is invalid: {why}")]
    Queue {
        /// The queue.
        index: usize,
        /// Why.
        why: String,
    },
    /// A ready queue's rings are not inside guest memory.
    #[error("queue {index} points outside guest memory")]
    OutsideMemory {
        /// The queue.
        index: usize,
    },
    /// The device refused its queues.
    #[error("the device refused its restored queues: {0}")]
    Activate(String),
}

/// A queue rebuilt from `s` for a device whose maximum is `max`, checked against `mem`.
fn rebuild<M: vm_memory::GuestMemory>(
    index: usize,
    s: &QueueSnapshot,
    max: u16,
    mem: &M,
) -> Result<Queue, TransportStateError> {
    let bad = |why: String| TransportStateError::Queue { index, why };
    if s.max_size != max {
        return Err(bad(format!(
            "maximum size {} where the device has {max}",
            s.max_size
        )));
    }
    let state = QueueState {
        max_size: s.max_size,
        next_avail: s.next_avail,
        next_used: s.next_used,
        event_idx_enabled: s.event_idx,
        size: s.size,
        ready: s.ready,
        desc_table: s.desc_table,
        avail_ring: s.avail_ring,
        used_ring: s.used_ring,
    };
    let q = Queue::try_from(state).map_err(|e| bad(e.to_string()))?;
    if q.ready() && !q.is_valid(mem) {
        return Err(TransportStateError::OutsideMemory { index });
    }
    Ok(q)
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// The transport's and its device's state. Take it with the VM paused and no
    /// queue being served.
    pub fn save_state(&self) -> TransportState {
        TransportState {
            device_type: self.device.device_type(),
            queues: self.queues.iter().map(|q| q.state().into()).collect(),
            bad_size: self.bad_size.clone(),
            ring_addrs: self.ring_addrs.clone(),
            bad_addr: self.bad_addr.clone(),
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            acked_features: self.acked_features,
            queue_sel: self.queue_sel,
            status: self.status,
            config_generation: self.config_generation,
            interrupt_status: self.irq.status(),
            device_queues: self
                .device
                .queue_states()
                .map(|qs| qs.into_iter().map(Into::into).collect()),
        }
    }

    /// Puts a new transport (and its device) into `state`: the device is activated
    /// with its saved queues when the driver had set DRIVER_OK. Nothing is changed
    /// when the state is refused.
    pub fn restore_state(&mut self, state: &TransportState) -> Result<(), TransportStateError> {
        let device = self.device.device_type();
        if state.device_type != device {
            return Err(TransportStateError::DeviceType {
                saved: state.device_type,
                device,
            });
        }
        let n = self.queues.len();
        let lens = [
            state.queues.len(),
            state.bad_size.len(),
            state.ring_addrs.len(),
            state.bad_addr.len(),
        ];
        if let Some(&saved) = lens.iter().find(|&&l| l != n) {
            return Err(TransportStateError::QueueCount { saved, device: n });
        }
        let maxes = self.device.queue_max_sizes().to_vec();
        let rebuild_all = |saved: &[QueueSnapshot]| {
            saved
                .iter()
                .zip(&maxes)
                .enumerate()
                .map(|(i, (s, &max))| rebuild(i, s, max, &self.mem))
                .collect::<Result<Vec<_>, _>>()
        };
        let queues = rebuild_all(&state.queues)?;
        let active = state.status & S_DRIVER_OK != 0 && state.status & S_NEEDS_RESET == 0;
        let device_queues = match (&state.device_queues, active) {
            (Some(saved), true) if saved.len() != n => {
                return Err(TransportStateError::QueueCount {
                    saved: saved.len(),
                    device: n,
                })
            }
            (Some(saved), true) => Some(rebuild_all(saved)?),
            _ => None,
        };
        if let Some(qs) = device_queues {
            self.device
                .activate(self.mem.clone(), qs, state.acked_features, self.irq.clone())
                .map_err(|e| TransportStateError::Activate(e.to_string()))?;
        }
        self.queues = queues;
        self.bad_size = state.bad_size.clone();
        self.ring_addrs = state.ring_addrs.clone();
        self.bad_addr = state.bad_addr.clone();
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.acked_features = state.acked_features;
        self.queue_sel = state.queue_sel;
        self.status = state.status;
        self.config_generation = state.config_generation;
        self.irq.set_status(state.interrupt_status);
        Ok(())
    }
}
