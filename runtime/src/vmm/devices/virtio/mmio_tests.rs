//! Tests of the virtio-mmio register state machine against a dummy device.

use std::sync::Arc;

use super::*;
use crate::vmm::devices::virtio::testing::{CountingInterrupt, QueueLayout};
use crate::vmm::devices::virtio::{ActivateError, DeviceCounters};

const DUMMY_ID: u32 = 42;
const DUMMY_FEATURE: u64 = 1 << 3;

#[derive(Default)]
struct Dummy {
    config: [u8; 16],
    active: bool,
    activations: usize,
    resets: usize,
    notified: Vec<u16>,
    queues: Vec<Queue>,
}

impl VirtioDevice for Dummy {
    fn device_type(&self) -> u32 {
        DUMMY_ID
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 8]
    }
    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | DUMMY_FEATURE
    }
    fn config_space(&self) -> &[u8] {
        &self.config
    }
    fn write_config(&mut self, offset: usize, data: &[u8]) -> bool {
        if offset < 8 {
            return false;
        }
        self.config[offset..offset + data.len()].copy_from_slice(data);
        true
    }
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        _acked: u64,
        _irq: IrqTrigger,
    ) -> Result<(), ActivateError> {
        if !queues[0].ready() {
            return Err(ActivateError::QueueNotUsable { index: 0 });
        }
        self.active = true;
        self.activations += 1;
        self.queues = queues;
        Ok(())
    }
    fn is_activated(&self) -> bool {
        self.active
    }
    fn process_queue(&mut self, index: u16) {
        self.notified.push(index);
    }
    fn reset(&mut self) {
        self.active = false;
        self.resets += 1;
    }
    fn queue_states(&self) -> Option<Vec<virtio_queue::QueueState>> {
        self.active
            .then(|| self.queues.iter().map(|q| q.state()).collect())
    }
    fn counters(&self) -> DeviceCounters {
        DeviceCounters::default()
    }
}

fn transport() -> MmioTransport<Dummy> {
    let mem = QueueLayout::memory(0x10000);
    let mut config = [0u8; 16];
    for (i, b) in config.iter_mut().enumerate() {
        *b = i as u8;
    }
    let dummy = Dummy {
        config,
        ..Dummy::default()
    };
    MmioTransport::new(mem, dummy, Arc::new(CountingInterrupt::default())).unwrap()
}

fn r32(t: &mut MmioTransport<Dummy>, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn w32(t: &mut MmioTransport<Dummy>, offset: u64, v: u32) {
    t.write(offset, &v.to_le_bytes());
}

fn setup_queue(t: &mut MmioTransport<Dummy>, index: u32, layout: QueueLayout) {
    w32(t, REG_QUEUE_SEL, index);
    w32(t, REG_QUEUE_NUM, u32::from(layout.size));
    w32(t, REG_QUEUE_DESC_LOW, layout.desc as u32);
    w32(t, REG_QUEUE_DESC_HIGH, 0);
    w32(t, REG_QUEUE_DRIVER_LOW, layout.avail as u32);
    w32(t, REG_QUEUE_DRIVER_HIGH, 0);
    w32(t, REG_QUEUE_DEVICE_LOW, layout.used as u32);
    w32(t, REG_QUEUE_DEVICE_HIGH, 0);
    w32(t, REG_QUEUE_READY, 1);
}

/// ACKNOWLEDGE, DRIVER, features, FEATURES_OK.
fn negotiate(t: &mut MmioTransport<Dummy>) {
    w32(t, REG_STATUS, S_ACK);
    w32(t, REG_STATUS, S_ACK | S_DRIVER);
    w32(t, REG_DRIVER_FEATURES_SEL, 1);
    w32(t, REG_DRIVER_FEATURES, 1); // VERSION_1
    w32(t, REG_DRIVER_FEATURES_SEL, 0);
    w32(t, REG_DRIVER_FEATURES, DUMMY_FEATURE as u32);
    w32(t, REG_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    assert_eq!(r32(t, REG_STATUS), S_ACK | S_DRIVER | S_FEATURES_OK);
}

/// A device set up as Linux does it, with queue 0 at 0x1000.
fn active() -> MmioTransport<Dummy> {
    let mut t = transport();
    negotiate(&mut t);
    setup_queue(&mut t, 0, QueueLayout::new(0x1000, 16));
    w32(
        &mut t,
        REG_STATUS,
        S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK,
    );
    assert!(t.device().is_activated());
    t
}

#[test]
fn identification_registers() {
    let mut t = transport();
    assert_eq!(r32(&mut t, REG_MAGIC), 0x7472_6976);
    assert_eq!(r32(&mut t, REG_VERSION), 2);
    assert_eq!(r32(&mut t, REG_DEVICE_ID), DUMMY_ID);
    assert_eq!(r32(&mut t, REG_VENDOR_ID), 0);
    assert_eq!(r32(&mut t, REG_DEVICE_FEATURES), DUMMY_FEATURE as u32);
    w32(&mut t, REG_DEVICE_FEATURES_SEL, 1);
    assert_eq!(r32(&mut t, REG_DEVICE_FEATURES), 1);
    w32(&mut t, REG_DEVICE_FEATURES_SEL, 2);
    assert_eq!(r32(&mut t, REG_DEVICE_FEATURES), 0);
    w32(&mut t, REG_QUEUE_SEL, 1);
    assert_eq!(r32(&mut t, REG_QUEUE_NUM_MAX), 8);
    w32(&mut t, REG_QUEUE_SEL, 7);
    assert_eq!(r32(&mut t, REG_QUEUE_NUM_MAX), 0);
    assert_eq!(t.counters().transport, TransportCounters::default());
}

#[test]
fn full_handshake_activates_and_notifies() {
    let mut t = active();
    assert_eq!(t.device().queues[0].size(), 16);
    assert_eq!(t.device().queues[0].desc_table(), 0x1000);
    assert!(!t.device().queues[1].ready());
    w32(&mut t, REG_QUEUE_NOTIFY, 0);
    t.process_queue(1);
    assert_eq!(t.device().notified, vec![0, 1]);
    t.process_queue(2);
    w32(&mut t, REG_QUEUE_NOTIFY, 0x10000);
    assert_eq!(t.counters().transport.bad_notifies, 2);
    assert_eq!(t.device().notified, vec![0, 1]);
}

#[test]
fn notify_before_driver_ok_is_counted() {
    let mut t = transport();
    w32(&mut t, REG_QUEUE_NOTIFY, 0);
    t.process_queue(0);
    assert!(t.device().notified.is_empty());
    assert_eq!(t.counters().transport.bad_notifies, 2);
}

#[test]
fn features_ok_needs_version_1_and_offered_features() {
    let mut t = transport();
    w32(&mut t, REG_STATUS, S_ACK);
    w32(&mut t, REG_STATUS, S_ACK | S_DRIVER);
    w32(&mut t, REG_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    assert_eq!(r32(&mut t, REG_STATUS), S_ACK | S_DRIVER, "no VERSION_1");
    w32(&mut t, REG_DRIVER_FEATURES_SEL, 1);
    w32(&mut t, REG_DRIVER_FEATURES, 1 | 2); // VERSION_1 and bit 33, not offered
    w32(&mut t, REG_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    assert_eq!(
        r32(&mut t, REG_STATUS),
        S_ACK | S_DRIVER,
        "unoffered feature"
    );
    w32(&mut t, REG_DRIVER_FEATURES, 1);
    w32(&mut t, REG_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    assert_eq!(r32(&mut t, REG_STATUS), S_ACK | S_DRIVER | S_FEATURES_OK);
    assert_eq!(t.counters().transport.bad_status, 2);
    // Features are frozen now.
    w32(&mut t, REG_DRIVER_FEATURES, 3);
    assert_eq!(t.counters().transport.features_after_ok, 1);
    assert_eq!(t.acked_features, VIRTIO_F_VERSION_1);
}

#[test]
fn status_steps_cannot_be_skipped_or_undone() {
    let mut t = transport();
    w32(&mut t, REG_STATUS, S_ACK | S_DRIVER); // skips ACK
    w32(&mut t, REG_STATUS, S_DRIVER_OK); // skips everything
    assert_eq!(r32(&mut t, REG_STATUS), 0);
    w32(&mut t, REG_STATUS, S_ACK);
    w32(&mut t, REG_STATUS, S_ACK | S_DRIVER);
    w32(&mut t, REG_STATUS, S_ACK); // clears DRIVER
    w32(&mut t, REG_STATUS, S_ACK | S_DRIVER | S_DRIVER_OK); // skips FEATURES_OK
    assert_eq!(r32(&mut t, REG_STATUS), S_ACK | S_DRIVER);
    assert_eq!(t.counters().transport.bad_status, 4);
    assert!(!t.device().is_activated());
    // FAILED is always accepted, and then only a reset helps.
    w32(&mut t, REG_STATUS, S_FAILED);
    assert_eq!(r32(&mut t, REG_STATUS), S_ACK | S_DRIVER | S_FAILED);
    w32(&mut t, REG_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    assert_eq!(t.counters().transport.bad_status, 5);
    w32(&mut t, REG_STATUS, 0);
    assert_eq!(r32(&mut t, REG_STATUS), 0);
}

#[test]
fn bad_queue_sizes_are_refused() {
    let mut t = transport();
    negotiate(&mut t);
    w32(&mut t, REG_QUEUE_SEL, 0);
    for bad in [0, 3, 12, 32, 0x1_0000] {
        w32(&mut t, REG_QUEUE_NUM, bad);
        w32(&mut t, REG_QUEUE_READY, 1);
        assert_eq!(r32(&mut t, REG_QUEUE_READY), 0, "size {bad}");
    }
    assert_eq!(t.counters().transport.bad_queue_config, 10);
    assert_eq!(t.queues[0].size(), 16, "bad sizes never applied");
    // The driver carries on to DRIVER_OK with no usable queue: NEEDS_RESET.
    w32(
        &mut t,
        REG_STATUS,
        S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK,
    );
    assert!(!t.device().is_activated());
    assert_ne!(r32(&mut t, REG_STATUS) & S_NEEDS_RESET, 0);
    assert_eq!(t.counters().transport.activate_failures, 1);
    assert_ne!(
        t.interrupt_status() & super::super::VIRTIO_MMIO_INT_CONFIG,
        0
    );
    // A reset and a proper set-up recover the device.
    w32(&mut t, REG_STATUS, 0);
    negotiate(&mut t);
    setup_queue(&mut t, 0, QueueLayout::new(0x1000, 8));
    w32(
        &mut t,
        REG_STATUS,
        S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK,
    );
    assert!(t.device().is_activated());
    assert_eq!(t.device().queues[0].size(), 8);
}

#[test]
fn queue_outside_memory_fails_activation() {
    let mut t = transport();
    negotiate(&mut t);
    setup_queue(&mut t, 0, QueueLayout::new(0xff00, 16));
    w32(
        &mut t,
        REG_STATUS,
        S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK,
    );
    assert!(!t.device().is_activated());
    assert_ne!(r32(&mut t, REG_STATUS) & S_NEEDS_RESET, 0);
    // Echoing NEEDS_RESET back, or any further step, changes nothing.
    w32(
        &mut t,
        REG_STATUS,
        S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK | S_NEEDS_RESET,
    );
    assert!(!t.device().is_activated());
}

#[test]
fn queue_registers_are_frozen_after_driver_ok() {
    let mut t = active();
    let before = (
        t.queues[0].size(),
        t.queues[0].desc_table(),
        t.queues[0].ready(),
    );
    w32(&mut t, REG_QUEUE_SEL, 0);
    w32(&mut t, REG_QUEUE_NUM, 4);
    w32(&mut t, REG_QUEUE_READY, 0);
    w32(&mut t, REG_QUEUE_DESC_LOW, 0x4000);
    w32(&mut t, REG_QUEUE_DRIVER_LOW, 0x4000);
    w32(&mut t, REG_QUEUE_DEVICE_HIGH, 1);
    w32(&mut t, REG_QUEUE_SEL, 1);
    w32(&mut t, REG_QUEUE_READY, 1);
    assert_eq!(t.counters().transport.queue_config_after_ready, 6);
    let after = (
        t.queues[0].size(),
        t.queues[0].desc_table(),
        t.queues[0].ready(),
    );
    assert_eq!(before, after);
    assert!(!t.queues[1].ready());
    assert_eq!(t.device().activations, 1);
    w32(&mut t, REG_QUEUE_NOTIFY, 0);
    assert_eq!(t.device().notified, vec![0], "device still serves");
}

#[test]
fn ready_queue_is_frozen_before_driver_ok() {
    let mut t = transport();
    negotiate(&mut t);
    setup_queue(&mut t, 0, QueueLayout::new(0x1000, 16));
    w32(&mut t, REG_QUEUE_NUM, 4);
    w32(&mut t, REG_QUEUE_DESC_LOW, 0x2000);
    assert_eq!(t.counters().transport.queue_config_after_ready, 2);
    // Un-readying first is allowed.
    w32(&mut t, REG_QUEUE_READY, 0);
    w32(&mut t, REG_QUEUE_NUM, 4);
    assert_eq!(t.queues[0].size(), 4);
}

#[test]
fn short_and_misaligned_register_accesses_are_refused() {
    let mut t = active();
    let mut two = [0u8; 2];
    t.read(REG_MAGIC, &mut two);
    assert_eq!(two, [0xff, 0xff]);
    let mut four = [0u8; 4];
    t.read(REG_MAGIC + 1, &mut four);
    assert_eq!(four, [0xff; 4]);
    let mut eight = [0u8; 8];
    t.read(REG_MAGIC, &mut eight);
    t.write(REG_STATUS, &[0]); // a one-byte "reset" must not reset
    t.write(REG_QUEUE_NOTIFY + 2, &0u32.to_le_bytes());
    t.write(REG_QUEUE_NOTIFY, &[0, 0]);
    assert_eq!(t.counters().transport.bad_accesses, 6);
    assert!(t.device().is_activated());
    assert!(t.device().notified.is_empty());
    // Write-only and unknown registers.
    assert_eq!(r32(&mut t, REG_QUEUE_NOTIFY), 0);
    assert_eq!(r32(&mut t, 0x0f0), 0);
    w32(&mut t, REG_MAGIC, 1);
    assert_eq!(t.counters().transport.bad_registers, 3);
}

#[test]
fn config_space_takes_aligned_accesses_only() {
    let mut t = active();
    let base = CONFIG_SPACE_OFFSET;
    let mut b1 = [0u8; 1];
    t.read(base + 5, &mut b1);
    assert_eq!(b1, [5]);
    let mut b2 = [0u8; 2];
    t.read(base + 6, &mut b2);
    assert_eq!(b2, [6, 7]);
    let mut b8 = [0u8; 8];
    t.read(base + 8, &mut b8);
    assert_eq!(b8, [8, 9, 10, 11, 12, 13, 14, 15]);
    assert_eq!(t.counters().transport.bad_accesses, 0);

    let mut b4 = [0u8; 4];
    t.read(base + 2, &mut b4); // misaligned
    assert_eq!(b4, [0xff; 4]);
    let mut b3 = [0u8; 3];
    t.read(base, &mut b3); // odd width
    assert_eq!(b3, [0xff; 3]);
    t.read(base + 16, &mut b1); // past the end
    t.read(base + 0xefc, &mut b4); // far past the end, still in the window
    t.read(u64::MAX - 3, &mut b4); // overflowing offset
    t.write(base + 9, &[1, 2]); // misaligned write
    t.write(base + 16, &[1]); // past the end
    assert_eq!(t.counters().transport.bad_accesses, 7);

    // Aligned writes reach the device, which may refuse them.
    t.write(base + 8, &[0xaa, 0xbb]);
    t.write(base, &[0xcc]);
    assert_eq!(t.counters().transport.bad_registers, 1);
    assert_eq!(
        &t.device().config[..10],
        &[0, 1, 2, 3, 4, 5, 6, 7, 0xaa, 0xbb]
    );
    assert_eq!(r32(&mut t, REG_CONFIG_GENERATION), 1);
}

#[test]
fn interrupt_ack_clears_bits() {
    let mut t = active();
    t.irq.trigger(IrqType::Vring).unwrap();
    t.irq.trigger(IrqType::Config).unwrap();
    assert_eq!(r32(&mut t, REG_INTERRUPT_STATUS), 3);
    w32(&mut t, REG_INTERRUPT_ACK, 1);
    assert_eq!(r32(&mut t, REG_INTERRUPT_STATUS), 2);
    w32(&mut t, REG_INTERRUPT_STATUS, 0); // read-only
    assert_eq!(r32(&mut t, REG_INTERRUPT_STATUS), 2);
}

#[test]
fn reset_returns_to_initial_state() {
    let mut t = active();
    w32(&mut t, REG_QUEUE_SEL, 1);
    w32(&mut t, REG_STATUS, 0);
    assert_eq!(t.device().resets, 1);
    assert!(!t.device().is_activated());
    assert_eq!(r32(&mut t, REG_STATUS), 0);
    assert_eq!(r32(&mut t, REG_QUEUE_READY), 0);
    assert_eq!(t.queues[0].size(), 16);
    assert_eq!(t.acked_features, 0);
    // And it comes up again.
    negotiate(&mut t);
    setup_queue(&mut t, 0, QueueLayout::new(0x1000, 16));
    w32(
        &mut t,
        REG_STATUS,
        S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK,
    );
    assert_eq!(t.device().activations, 2);
}

#[test]
fn invalid_queue_select_is_counted() {
    let mut t = transport();
    negotiate(&mut t);
    w32(&mut t, REG_QUEUE_SEL, 5);
    w32(&mut t, REG_QUEUE_NUM, 8);
    w32(&mut t, REG_QUEUE_READY, 1);
    w32(&mut t, REG_QUEUE_DESC_LOW, 0);
    assert_eq!(r32(&mut t, REG_QUEUE_READY), 0);
    assert_eq!(t.counters().transport.bad_queue_config, 3);
}

#[test]
fn invalid_queue_max_is_refused_at_construction() {
    struct Bad;
    impl VirtioDevice for Bad {
        fn device_type(&self) -> u32 {
            0
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[256, 100]
        }
        fn avail_features(&self) -> u64 {
            0
        }
        fn config_space(&self) -> &[u8] {
            &[]
        }
        fn activate(
            &mut self,
            _: GuestMemoryMmap,
            _: Vec<Queue>,
            _: u64,
            _: IrqTrigger,
        ) -> Result<(), ActivateError> {
            Ok(())
        }
        fn is_activated(&self) -> bool {
            false
        }
        fn process_queue(&mut self, _: u16) {}
        fn reset(&mut self) {}
        fn queue_states(&self) -> Option<Vec<virtio_queue::QueueState>> {
            None
        }
        fn counters(&self) -> DeviceCounters {
            DeviceCounters::default()
        }
    }
    let err = MmioTransport::new(
        QueueLayout::memory(0x1000),
        Bad,
        Arc::new(CountingInterrupt::default()),
    )
    .unwrap_err();
    assert_eq!(
        err,
        MmioError::InvalidQueueMax {
            index: 1,
            size: 100
        }
    );
}

#[test]
fn misaligned_ring_addresses_are_refused() {
    let mut t = transport();
    negotiate(&mut t);
    w32(&mut t, REG_QUEUE_SEL, 0);
    w32(&mut t, REG_QUEUE_DESC_LOW, 0x1008); // tables are 16-byte aligned
    w32(&mut t, REG_QUEUE_DRIVER_LOW, 0x2001); // avail rings 2-byte
    w32(&mut t, REG_QUEUE_DEVICE_LOW, 0x3002); // used rings 4-byte
    w32(&mut t, REG_QUEUE_READY, 1);
    assert_eq!(r32(&mut t, REG_QUEUE_READY), 0);
    assert_eq!(t.counters().transport.bad_queue_config, 4);
    // Fixing two of the three is not enough; fixing all three is.
    w32(&mut t, REG_QUEUE_DESC_LOW, 0x1000);
    w32(&mut t, REG_QUEUE_DRIVER_LOW, 0x2000);
    w32(&mut t, REG_QUEUE_READY, 1);
    assert_eq!(r32(&mut t, REG_QUEUE_READY), 0);
    w32(&mut t, REG_QUEUE_DEVICE_LOW, 0x3000);
    w32(&mut t, REG_QUEUE_READY, 1);
    assert_eq!(r32(&mut t, REG_QUEUE_READY), 1);
    assert_eq!(t.queues[0].used_ring(), 0x3000);
    // The high halves combine with the low ones.
    let mut t = transport();
    negotiate(&mut t);
    w32(&mut t, REG_QUEUE_DESC_LOW, 0x1000);
    w32(&mut t, REG_QUEUE_DESC_HIGH, 0x1);
    assert_eq!(t.queues[0].desc_table(), 0x1_0000_1000);
    // A high half does not make a misaligned low half right.
    w32(&mut t, REG_QUEUE_DEVICE_LOW, 0x3001);
    w32(&mut t, REG_QUEUE_DEVICE_HIGH, 0);
    w32(&mut t, REG_QUEUE_READY, 1);
    assert_eq!(r32(&mut t, REG_QUEUE_READY), 0);
}

#[test]
fn a_saved_transport_restores_into_a_new_one_with_its_device_active() {
    let mut t = active();
    t.irq.trigger(IrqType::Vring).unwrap();
    let saved = t.save_state();
    assert!(saved.device_queues.is_some());
    let mut back = transport();
    back.restore_state(&saved).unwrap();
    assert!(back.device().is_activated());
    assert_eq!(back.save_state(), saved);
    assert_eq!(r32(&mut back, REG_STATUS), r32(&mut t, REG_STATUS));
    assert_eq!(r32(&mut back, REG_INTERRUPT_STATUS), 1);
    // The restored device serves notifications.
    back.process_queue(0);
    assert_eq!(back.device().notified, vec![0]);
}

#[test]
fn a_saved_queue_outside_guest_memory_is_refused_and_nothing_changes() {
    let saved = active().save_state();
    for tamper in [
        |s: &mut TransportStateT| s.queues[0].desc_table = 0xffff_0000,
        |s: &mut TransportStateT| {
            if let Some(q) = s.device_queues.as_mut() {
                q[0].used_ring = 1 << 40;
            }
        },
    ] {
        let mut bad = saved.clone();
        tamper(&mut bad);
        let mut t = transport();
        assert_eq!(
            t.restore_state(&bad),
            Err(state::TransportStateError::OutsideMemory { index: 0 })
        );
        assert!(!t.device().is_activated());
        assert_eq!(r32(&mut t, REG_STATUS), 0);
    }
    // A size the device cannot have, a misaligned ring, another device, a queue too many.
    let mut bad = saved.clone();
    bad.queues[0].size = 3;
    assert!(matches!(
        transport().restore_state(&bad),
        Err(state::TransportStateError::Queue { index: 0, .. })
    ));
    let mut bad = saved.clone();
    bad.queues[0].avail_ring = 0x1001;
    assert!(matches!(
        transport().restore_state(&bad),
        Err(state::TransportStateError::Queue { index: 0, .. })
    ));
    let mut bad = saved.clone();
    bad.device_type = 2;
    assert!(matches!(
        transport().restore_state(&bad),
        Err(state::TransportStateError::DeviceType { .. })
    ));
    let mut bad = saved;
    bad.bad_size.push(false);
    assert!(matches!(
        transport().restore_state(&bad),
        Err(state::TransportStateError::QueueCount { .. })
    ));
}

type TransportStateT = state::TransportState;
