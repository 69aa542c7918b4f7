//! Wiring the spec's virtio disks and NICs into a VM: the devices, their virtio-mmio
//! transports on the MMIO bus, an irqfd per device, an ioeventfd per queue, the
//! `virtio_mmio.device=` words of the guest command line, and the event loop that
//! serves queue notifications and tap traffic.
//!
//! Layout (constants in `arch/x86_64/layout.rs`): device `n` — the disks first, then the
//! NICs, each list in spec order — has its 4 KiB window at `0xd000_0000 + n * 0x1000`
//! and interrupt line GSI `5 + n` (at most 19 devices: GSIs 5–23 of the in-kernel
//! IO-APIC, all routed 1:1 in the MP table). The guest learns it from
//! `virtio_mmio.device=4K@0x<base>:<gsi>`, appended to its command line in the same
//! order, so Linux names the first disk `vda`.
//!
//! One thread (`virtio`) runs the event loop: it sleeps in `epoll_wait` on every
//! queue's ioeventfd (KVM signals it when the guest writes the queue index to
//! `QueueNotify`, without an exit to user space), every tap (edge-triggered) and a stop
//! eventfd; it never polls. Each event locks one transport and calls its
//! `process_queue` / `process_backend`; the vCPU threads lock the same transport for
//! register accesses. Pausing the VM parks the vCPUs only (as in Firecracker): requests
//! already made available are still served, and frames from the tap still fill
//! buffers the guest posted. The loop ends, after the vCPUs, when the VM stops.
//!
//! A restored VM ([`VirtioDevices::announce_on_start`]) has its NICs announce the
//! guest's MACs on the network as the loop starts, a few times over 150 ms
//! ([`super::devices::virtio::net::announce`]): the loop sleeps in `epoll_wait` with a timeout until the
//! last round, then without one. A booted VM announces nothing.

use std::os::unix::io::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use kvm_ioctls::{IoEventAddress, VmFd};
use serde::{Deserialize, Serialize};
use vm_memory::bitmap::AtomicBitmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::arch::x86_64::layout::{
    MAX_VIRTIO_DEVICES, VIRTIO_GSI_START, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START,
};
use super::devices::bus::{self, BusError, MmioBus};
use super::devices::virtio::block::{Block, BlockError};
use super::devices::virtio::mmio::{MmioError, MmioTransport, NOTIFY_REG_OFFSET};
use super::devices::virtio::net::announce::Schedule;
use super::devices::virtio::net::{Net, TapDevice, TapError};
use super::devices::virtio::{GuestMemoryMmap, VirtioCounters, VirtioDevice};
use super::spec::Devices;
use super::threads::{ThreadError, ThreadKind, Threads};

/// Errors attaching virtio devices or running their event loop.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    /// More devices than GSIs.
    #[error("{count} virtio devices do not fit: at most {MAX_VIRTIO_DEVICES}")]
    TooManyDevices {
        /// Disks plus NICs.
        count: usize,
    },
    /// A disk file could not be opened.
    #[error(transparent)]
    OpenDisk(#[from] BlockError),
    /// A NIC's tap does not exist (the VMM attaches to taps, it never makes them).
    #[error("tap {name} does not exist in the VMM's network namespace")]
    NoSuchTap {
        /// The tap's name.
        name: String,
    },
    /// A tap could not be opened.
    #[error(transparent)]
    OpenTap(#[from] TapError),
    /// The transport refused the device.
    #[error("cannot create the virtio-mmio transport of device {index}: {source}")]
    CreateTransport {
        /// The device's index.
        index: usize,
        /// Why.
        source: MmioError,
    },
    /// An eventfd or the epoll instance could not be created.
    #[error("cannot create an {what}: {source}")]
    CreateFd {
        /// `eventfd` or `epoll` instance.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// KVM refused the irqfd of a device.
    #[error("cannot register the irqfd of GSI {gsi}: {source}")]
    RegisterIrqfd {
        /// The GSI.
        gsi: u32,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// KVM refused a queue's ioeventfd.
    #[error("cannot register the ioeventfd of queue {queue} at {addr:#x}: {source}")]
    RegisterIoevent {
        /// The notify register's address.
        addr: u64,
        /// The queue.
        queue: usize,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// An fd could not be added to the event loop.
    #[error("cannot add an fd to the virtio event loop: {0}")]
    AddToEpoll(std::io::Error),
    /// The device window could not be placed on the MMIO bus.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The event loop thread could not be started.
    #[error("cannot start the virtio event loop: {0}")]
    StartThread(ThreadError),
}

/// Devices of every kind behind one transport type.
pub type Transport = MmioTransport<Box<dyn VirtioDevice>>;

/// What a device is, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceKind {
    /// A virtio-blk disk.
    Blk {
        /// The disk file.
        path: PathBuf,
        /// Opened read-only.
        read_only: bool,
    },
    /// A virtio-net NIC.
    Net {
        /// The tap.
        tap: String,
        /// The guest's MAC.
        mac: String,
    },
}

/// One device in `status`: what and where it is, and its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// Kind and backend.
    #[serde(flatten)]
    pub kind: DeviceKind,
    /// Base of its MMIO window.
    pub mmio_base: String,
    /// Its interrupt line.
    pub gsi: u32,
    /// Guest requests refused, of every kind (transport and device).
    pub bad_requests: u64,
    /// The transport's and the device's counters.
    pub counters: VirtioCounters,
}

/// Every refusal the transport and the device counted.
pub fn bad_total(c: &VirtioCounters) -> u64 {
    let t = &c.transport;
    t.bad_accesses
        + t.bad_registers
        + t.bad_queue_config
        + t.queue_config_after_ready
        + t.bad_status
        + t.features_after_ok
        + t.activate_failures
        + t.bad_notifies
        + c.device.bad_total()
}

struct Attached {
    kind: DeviceKind,
    base: u64,
    gsi: u32,
    transport: Arc<Mutex<Transport>>,
    /// One per queue, registered as an ioeventfd on the notify register.
    queue_fds: Vec<EventFd>,
}

/// The VM's virtio devices, attached to KVM and the MMIO bus.
#[derive(Default)]
pub struct VirtioDevices {
    devices: Vec<Attached>,
    /// Each disk's written blocks, in disk order (a live migration re-sends them).
    disk_writes: Vec<Arc<AtomicBitmap>>,
    /// The NICs announce the guest's MACs when the event loop starts (a restore).
    announce: bool,
}

/// The event-loop token of device `dev`'s queue `slot`, or of its backend.
fn token(dev: usize, slot: u64) -> u64 {
    ((dev as u64) << 16) | slot
}
const BACKEND_SLOT: u64 = 0xffff;
const STOP_TOKEN: u64 = u64::MAX;

fn new_eventfd() -> Result<EventFd, WiringError> {
    EventFd::new(EFD_NONBLOCK).map_err(|source| WiringError::CreateFd {
        what: "eventfd",
        source,
    })
}

impl VirtioDevices {
    /// Opens every disk and tap of `spec`, and attaches each device: irqfd on its GSI,
    /// transport on `mmio`, an ioeventfd per queue. Needs the irqchip to exist.
    pub fn attach(
        vm: &VmFd,
        mem: &GuestMemoryMmap,
        spec: &Devices,
        mmio: &mut MmioBus,
    ) -> Result<Self, WiringError> {
        if spec.count() > MAX_VIRTIO_DEVICES {
            return Err(WiringError::TooManyDevices {
                count: spec.count(),
            });
        }
        let mut devices = Vec::with_capacity(spec.count());
        let mut disk_writes = Vec::with_capacity(spec.disks.len());
        for disk in &spec.disks {
            let block = Block::open(&disk.path, disk.read_only)?;
            disk_writes.push(block.written());
            let dev: Box<dyn VirtioDevice> = Box::new(block);
            let kind = DeviceKind::Blk {
                path: disk.path.clone(),
                read_only: disk.read_only,
            };
            devices.push((kind, dev));
        }
        for nic in &spec.nics {
            // Attaching to a missing tap would create a new one, connected to nothing.
            if !interface_exists(&nic.tap) {
                return Err(WiringError::NoSuchTap {
                    name: nic.tap.clone(),
                });
            }
            let mac = nic.mac();
            let dev: Box<dyn VirtioDevice> = Box::new(Net::new(TapDevice::open(&nic.tap)?, mac.0));
            let kind = DeviceKind::Net {
                tap: nic.tap.clone(),
                mac: mac.to_string(),
            };
            devices.push((kind, dev));
        }
        let mut me = Self {
            disk_writes,
            ..Self::default()
        };
        for (index, (kind, device)) in devices.into_iter().enumerate() {
            me.devices
                .push(Self::attach_one(vm, mem, mmio, index, kind, device)?);
        }
        Ok(me)
    }

    fn attach_one(
        vm: &VmFd,
        mem: &GuestMemoryMmap,
        mmio: &mut MmioBus,
        index: usize,
        kind: DeviceKind,
        device: Box<dyn VirtioDevice>,
    ) -> Result<Attached, WiringError> {
        // `index < MAX_VIRTIO_DEVICES` (19), so neither conversion can truncate.
        let base = VIRTIO_MMIO_START + index as u64 * VIRTIO_MMIO_SIZE;
        let gsi = VIRTIO_GSI_START + index as u32;

        let irqfd = new_eventfd()?;
        vm.register_irqfd(&irqfd, gsi)
            .map_err(|source| WiringError::RegisterIrqfd { gsi, source })?;
        let transport = MmioTransport::new(mem.clone(), device, Arc::new(irqfd))
            .map_err(|source| WiringError::CreateTransport { index, source })?;
        let queues = transport.queue_count();
        let transport = Arc::new(Mutex::new(transport));
        mmio.insert(base, VIRTIO_MMIO_SIZE, transport.clone())?;

        let addr = base + NOTIFY_REG_OFFSET;
        let mut queue_fds = Vec::with_capacity(queues);
        for queue in 0..queues {
            let fd = new_eventfd()?;
            // datamatch: a 4-byte write of the queue index.
            vm.register_ioevent(&fd, &IoEventAddress::Mmio(addr), queue as u32)
                .map_err(|source| WiringError::RegisterIoevent {
                    addr,
                    queue,
                    source,
                })?;
            queue_fds.push(fd);
        }
        Ok(Attached {
            kind,
            base,
            gsi,
            transport,
            queue_fds,
        })
    }

    /// Has the NICs announce the guest's MACs on the network when the event loop
    /// starts ([`super::devices::virtio::net::announce`]): the guest was restored, perhaps on another host.
    pub fn announce_on_start(&mut self) {
        self.announce = true;
    }

    /// Whether [`VirtioDevices::start`] will announce: asked for, and there is a NIC.
    pub fn announces(&self) -> bool {
        self.announce
            && self
                .devices
                .iter()
                .any(|d| matches!(d.kind, DeviceKind::Net { .. }))
    }

    /// How many devices are attached.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The `virtio_mmio.device=4K@0x<base>:<gsi>` words announcing every device, in
    /// device order, space-separated (empty without devices).
    pub fn cmdline_words(&self) -> String {
        let words: Vec<String> = self
            .devices
            .iter()
            .map(|d| cmdline_word(d.base, d.gsi))
            .collect();
        words.join(" ")
    }

    /// Each disk's written blocks, in disk order (for a live migration).
    pub fn disk_writes(&self) -> Vec<Arc<AtomicBitmap>> {
        self.disk_writes.clone()
    }

    /// Every device's transport, in device order (for snapshots).
    pub fn transports(&self) -> Vec<Arc<Mutex<Transport>>> {
        self.devices.iter().map(|d| d.transport.clone()).collect()
    }

    /// Puts every device into the state a snapshot saved, in device order; refused
    /// when the counts or a device's kind or queues do not fit.
    pub fn restore(
        &self,
        saved: &[super::devices::virtio::mmio::state::TransportState],
    ) -> Result<(), super::snapshot::SnapshotError> {
        use super::snapshot::SnapshotError;
        if saved.len() != self.devices.len() {
            return Err(SnapshotError::Mismatch {
                what: format!(
                    "the snapshot has {} virtio devices, the spec {}",
                    saved.len(),
                    self.devices.len()
                ),
            });
        }
        for (index, (d, state)) in self.devices.iter().zip(saved).enumerate() {
            bus::lock(&d.transport)
                .restore_state(state)
                .map_err(|e| SnapshotError::Device {
                    index: format!("virtio {index}"),
                    why: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// A handle on the devices' status for the control socket.
    pub fn status_source(&self) -> StatusSource {
        StatusSource(
            self.devices
                .iter()
                .map(|d| (d.kind.clone(), d.base, d.gsi, d.transport.clone()))
                .collect(),
        )
    }

    /// Starts the event loop thread (none without devices). Dropping or
    /// [`EventLoop::stop`]ping the result ends it.
    pub fn start(&self, threads: &Threads) -> Result<Option<EventLoop>, WiringError> {
        if self.devices.is_empty() {
            return Ok(None);
        }
        let epoll = Epoll::new().map_err(|source| WiringError::CreateFd {
            what: "epoll instance",
            source,
        })?;
        let add = |fd: RawFd, events: EventSet, data: u64| {
            epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(events, data))
                .map_err(WiringError::AddToEpoll)
        };
        let stop = new_eventfd()?;
        add(stop.as_raw_fd(), EventSet::IN, STOP_TOKEN)?;
        let mut served = Vec::with_capacity(self.devices.len());
        for (dev, d) in self.devices.iter().enumerate() {
            let mut fds = Vec::with_capacity(d.queue_fds.len());
            for (q, fd) in d.queue_fds.iter().enumerate() {
                let fd = fd.try_clone().map_err(|source| WiringError::CreateFd {
                    what: "eventfd",
                    source,
                })?;
                add(fd.as_raw_fd(), EventSet::IN, token(dev, q as u64))?;
                fds.push(fd);
            }
            if let Some(fd) = bus::lock(&d.transport).backend_fd() {
                add(
                    fd,
                    EventSet::IN | EventSet::EDGE_TRIGGERED,
                    token(dev, BACKEND_SLOT),
                )?;
            }
            served.push((d.transport.clone(), fds));
        }
        let thread_stop = stop.try_clone().map_err(|source| WiringError::CreateFd {
            what: "eventfd",
            source,
        })?;
        let announce = self.announces();
        let thread = threads
            .spawn(ThreadKind::Device, "virtio", move || {
                let schedule = announce.then(|| Schedule::new(Instant::now()));
                event_loop(&epoll, &served, &thread_stop, schedule)
            })
            .map_err(WiringError::StartThread)?;
        Ok(Some(EventLoop {
            stop,
            thread: Some(thread),
        }))
    }
}

/// Whether a network interface `name` exists in this thread's network namespace.
fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// The kernel command-line word of a device at `base` on `gsi`.
pub fn cmdline_word(base: u64, gsi: u32) -> String {
    format!("virtio_mmio.device=4K@{base:#x}:{gsi}")
}

/// The devices' status, readable from another thread (the control socket's).
#[derive(Clone)]
pub struct StatusSource(Vec<(DeviceKind, u64, u32, Arc<Mutex<Transport>>)>);

impl StatusSource {
    /// Every device's status, in device order.
    pub fn status(&self) -> Vec<DeviceStatus> {
        self.0
            .iter()
            .map(|(kind, base, gsi, t)| {
                let counters = bus::lock(t).counters();
                DeviceStatus {
                    kind: kind.clone(),
                    mmio_base: format!("{base:#x}"),
                    gsi: *gsi,
                    bad_requests: bad_total(&counters),
                    counters,
                }
            })
            .collect()
    }
}

/// The running event loop; stops (and joins its thread) when dropped.
pub struct EventLoop {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl EventLoop {
    /// Ends the loop and waits for its thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(thread) = self.thread.take() {
            // If the write fails the thread cannot be told; do not wait for it.
            if self.stop.write(1).is_ok() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.halt();
    }
}

type Served = Vec<(Arc<Mutex<Transport>>, Vec<EventFd>)>;

/// Sleeps in `epoll_wait` and hands each event to its device until `stop` fires;
/// has every device announce itself when `announce` says a round is due.
fn event_loop(epoll: &Epoll, devices: &Served, stop: &EventFd, mut announce: Option<Schedule>) {
    let mut events = vec![EpollEvent::default(); 64];
    loop {
        if let Some(schedule) = announce.as_mut() {
            if schedule.take_due(Instant::now()) {
                for (transport, _) in devices {
                    bus::lock(transport).device_mut().announce();
                }
            }
        }
        let timeout = announce.map_or(-1, |s| s.timeout_ms(Instant::now()));
        let n = match epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // An epoll instance that cannot be waited on will not recover.
            Err(_) => return,
        };
        for event in &events[..n] {
            let data = event.data();
            if data == STOP_TOKEN {
                let _ = stop.read();
                return;
            }
            let slot = data & 0xffff;
            let Some((transport, fds)) = usize::try_from(data >> 16)
                .ok()
                .and_then(|dev| devices.get(dev))
            else {
                continue;
            };
            if slot == BACKEND_SLOT {
                bus::lock(transport).process_backend();
                continue;
            }
            let Some(fd) = usize::try_from(slot).ok().and_then(|q| fds.get(q)) else {
                continue;
            };
            // Clears the count (WouldBlock when another wake-up already did).
            let _ = fd.read();
            // `slot < 0xffff`, so it fits a queue index.
            bus::lock(transport).process_queue(slot as u16);
        }
    }
}

#[cfg(test)]
#[path = "virtio_wiring_tests.rs"]
mod tests;
