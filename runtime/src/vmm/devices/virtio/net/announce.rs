//! Telling the network where a guest is now, as QEMU's `announce_self` does after a
//! migration: each NIC of a restored VM sends a RARP request of its MAC out of its tap,
//! a few times, so that bridges and switches learn the MAC's new port at once instead
//! of when the guest next sends something (until then they would send its frames
//! towards the host it left).
//!
//! The frame is QEMU's (`announce_self_create`): broadcast, from the guest's MAC,
//! EtherType 0x8035 (RARP), a "request reverse" (opcode 3) whose sender and target
//! hardware addresses are the guest's MAC and whose protocol addresses are zero,
//! padded to the Ethernet minimum of 60 bytes. On the tap it carries the zeroed
//! virtio net header every frame carries ([`VNET_HDR_LEN`]).
//!
//! [`Schedule`]: three rounds, at 0, 50 and 150 ms after the VMM's event loop starts —
//! QEMU's first three (it sends five: 50 ms apart, the gap growing by 100 ms each
//! round), enough for a frame lost at one switch while keeping the burst under
//! 200 ms. The VMM's event loop keeps the schedule with its `epoll_wait` timeout: no
//! thread and no timer fd of its own.

use std::time::{Duration, Instant};

use super::tap::VNET_HDR_LEN;

/// EtherType of RARP.
pub const ETHERTYPE_RARP: u16 = 0x8035;
/// The frame's length without its header: the Ethernet minimum (without FCS).
pub const RARP_FRAME_LEN: usize = 60;
/// When each round is sent, after the event loop starts.
pub const ROUNDS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(50),
    Duration::from_millis(150),
];

/// The RARP request announcing `mac`, with its (zeroed) virtio net header in front.
pub fn rarp_frame(mac: [u8; 6]) -> [u8; VNET_HDR_LEN + RARP_FRAME_LEN] {
    let mut buf = [0u8; VNET_HDR_LEN + RARP_FRAME_LEN];
    let f = &mut buf[VNET_HDR_LEN..];
    f[0..6].fill(0xff); // destination: broadcast
    f[6..12].copy_from_slice(&mac); // source
    f[12..14].copy_from_slice(&ETHERTYPE_RARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    f[18] = 6; // hardware address length
    f[19] = 4; // protocol address length
    f[20..22].copy_from_slice(&3u16.to_be_bytes()); // opcode: request reverse
    f[22..28].copy_from_slice(&mac); // sender hardware address (sender IP 0.0.0.0)
    f[32..38].copy_from_slice(&mac); // target hardware address (target IP 0.0.0.0)
    buf
}

/// When the announcement rounds are due.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    round: usize,
}

impl Schedule {
    /// Rounds at [`ROUNDS`] after `start`.
    pub fn new(start: Instant) -> Self {
        Self { start, round: 0 }
    }

    /// When the next round is due; `None` once every round is done.
    pub fn next(&self) -> Option<Instant> {
        ROUNDS.get(self.round).map(|at| self.start + *at)
    }

    /// How long `epoll_wait` may sleep from `now` before the next round, in whole
    /// milliseconds rounded up (so it does not wake just before and spin); -1 (for
    /// ever) once every round is done.
    pub fn timeout_ms(&self, now: Instant) -> i32 {
        match self.next() {
            None => -1,
            Some(due) => {
                let us = due.saturating_duration_since(now).as_micros();
                i32::try_from(us.div_ceil(1000)).unwrap_or(i32::MAX)
            }
        }
    }

    /// Whether a round is due at `now`; if so it counts as done.
    pub fn take_due(&mut self, now: Instant) -> bool {
        match self.next() {
            Some(due) if due <= now => {
                self.round += 1;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// Byte for byte what QEMU's `announce_self_create` writes for the same MAC.
    #[test]
    fn the_frame_is_qemus_rarp_request() {
        let buf = rarp_frame(MAC);
        assert_eq!(
            &buf[..VNET_HDR_LEN],
            &[0u8; VNET_HDR_LEN],
            "a zeroed header"
        );
        #[rustfmt::skip]
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // broadcast
            0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // from the guest's MAC
            0x80, 0x35,                         // RARP
            0x00, 0x01, 0x08, 0x00, 6, 4,       // Ethernet, IPv4, lengths
            0x00, 0x03,                         // request reverse
            0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0, 0, 0, 0, // sender MAC, 0.0.0.0
            0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0, 0, 0, 0, // target MAC, 0.0.0.0
        ];
        let frame = &buf[VNET_HDR_LEN..];
        assert_eq!(frame.len(), 60);
        assert_eq!(&frame[..42], &want);
        assert_eq!(&frame[42..], &[0u8; 18], "padding");
    }

    #[test]
    fn the_schedule_runs_three_rounds_then_sleeps_for_ever() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        assert_eq!(s.timeout_ms(t0), 0);
        assert!(s.take_due(t0));
        assert!(!s.take_due(t0 + Duration::from_millis(49)));
        assert_eq!(s.timeout_ms(t0 + Duration::from_micros(10_500)), 40);
        assert!(s.take_due(t0 + Duration::from_millis(50)));
        assert_eq!(s.timeout_ms(t0 + Duration::from_millis(50)), 100);
        // Late (the loop was busy): due at once, one round at a time.
        assert_eq!(s.timeout_ms(t0 + Duration::from_secs(1)), 0);
        assert!(s.take_due(t0 + Duration::from_secs(1)));
        assert_eq!(s.next(), None);
        assert_eq!(s.timeout_ms(t0 + Duration::from_secs(1)), -1);
        assert!(!s.take_due(t0 + Duration::from_secs(9)));
    }
}
