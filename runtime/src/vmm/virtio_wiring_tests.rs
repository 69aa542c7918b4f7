//! Tests of the virtio wiring: layout, status, and the event loop's announcements.

use super::*;
use crate::vmm::devices::virtio::mmio::TransportCounters;
use crate::vmm::devices::virtio::DeviceCounters;

#[test]
fn cmdline_words_follow_the_layout() {
    assert_eq!(
        cmdline_word(0xd000_0000, 5),
        "virtio_mmio.device=4K@0xd0000000:5"
    );
    assert_eq!(
        cmdline_word(0xd000_2000, 7),
        "virtio_mmio.device=4K@0xd0002000:7"
    );
    assert_eq!(VirtioDevices::default().cmdline_words(), "");
}

#[test]
fn interfaces_are_looked_up_by_name() {
    assert!(interface_exists("lo"));
    assert!(!interface_exists("vmctl-nosuch0"));
    assert!(!interface_exists("nul\0"));
}

#[test]
fn tokens_keep_device_and_queue_apart() {
    let t = token(18, 1);
    assert_eq!((t >> 16, t & 0xffff), (18, 1));
    assert_eq!(token(3, BACKEND_SLOT) & 0xffff, BACKEND_SLOT);
    assert_ne!(token(MAX_VIRTIO_DEVICES, BACKEND_SLOT), STOP_TOKEN);
}

#[test]
fn bad_total_sums_every_refusal() {
    let c = VirtioCounters {
        transport: TransportCounters {
            bad_accesses: 1,
            queue_config_after_ready: 2,
            bad_notifies: 4,
            ..Default::default()
        },
        device: DeviceCounters {
            bad_chains: 8,
            invalid_avail_idx: 16,
            requests: 1000,
            ..Default::default()
        },
    };
    assert_eq!(bad_total(&c), 31);
}

#[test]
fn status_serializes_kind_and_counters() {
    let s = DeviceStatus {
        kind: DeviceKind::Net {
            tap: "tap0".into(),
            mac: "52:54:00:00:00:01".into(),
        },
        mmio_base: "0xd0001000".into(),
        gsi: 6,
        bad_requests: 0,
        counters: VirtioCounters::default(),
    };
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["kind"], "net");
    assert_eq!(v["tap"], "tap0");
    assert_eq!(v["gsi"], 6);
    assert_eq!(v["counters"]["device"]["bad_chains"], 0);
}

/// A NIC over an in-memory tap behind its transport, and a disk-like device that has
/// nothing to announce.
fn served_nic() -> Served {
    use crate::vmm::devices::virtio::testing::{CountingInterrupt, FakeTap, QueueLayout};
    let mem = QueueLayout::memory(0x10000);
    let nic: Box<dyn VirtioDevice> =
        Box::new(Net::new(FakeTap::default(), [0x52, 0x54, 0, 0, 0, 1]));
    let transport =
        MmioTransport::new(mem, nic, Arc::new(CountingInterrupt::default())).expect("transport");
    vec![(Arc::new(Mutex::new(transport)), Vec::new())]
}

/// Runs the event loop over a NIC for `ms`, announcing per `schedule`; the NIC's
/// announcements and the loop's time.
fn announcements_in(schedule: Option<Schedule>, ms: u64) -> u64 {
    let served = Arc::new(served_nic());
    let epoll = Epoll::new().unwrap();
    let stop = new_eventfd().unwrap();
    epoll
        .ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP_TOKEN),
        )
        .unwrap();
    let thread_stop = stop.try_clone().unwrap();
    let devices = served.clone();
    let t = std::thread::spawn(move || event_loop(&epoll, &devices, &thread_stop, schedule));
    std::thread::sleep(std::time::Duration::from_millis(ms));
    stop.write(1).unwrap();
    t.join().unwrap();
    let counters = bus::lock(&served[0].0).counters();
    counters.device.announcements
}

/// A restored VM's loop announces three times within 150 ms of its start, then
/// sleeps; a booted VM's never announces.
#[test]
fn the_event_loop_announces_three_times_only_when_told() {
    assert_eq!(announcements_in(None, 300), 0);
    assert_eq!(
        announcements_in(Some(Schedule::new(Instant::now())), 400),
        3
    );
    // Stopped before the last round: the rounds so far.
    let early = announcements_in(Some(Schedule::new(Instant::now())), 0);
    assert_eq!(early, 1);
}

#[test]
fn only_a_restored_vm_with_a_nic_announces() {
    let mut devices = VirtioDevices::default();
    assert!(!devices.announces());
    devices.announce_on_start();
    assert!(!devices.announces(), "no NIC, nothing to announce");
}
