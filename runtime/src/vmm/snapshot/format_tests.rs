//! Tests of the state file: round trip, and every refusal.

use super::*;
use crate::vmm::devices::i8042::I8042State;
use crate::vmm::devices::serial::SerialSnapshot;
use crate::vmm::snapshot::{DevicesState, VcpuState, VmState};

fn sample() -> Snapshot {
    let mut vcpu = VcpuState {
        id: 0,
        cpuid: vec![kvm_bindings::kvm_cpuid_entry2 {
            function: 1,
            ecx: 1 << 28,
            ..Default::default()
        }],
        mp_state: Default::default(),
        regs: Default::default(),
        sregs: Default::default(),
        xsave: Default::default(),
        xcrs: Default::default(),
        debugregs: Default::default(),
        lapic: Default::default(),
        msrs: vec![kvm_bindings::kvm_msr_entry {
            index: 0x10,
            data: 12345,
            ..Default::default()
        }],
        events: Default::default(),
    };
    vcpu.regs.rip = 0xdead_beef;
    vcpu.xsave.region[7] = 42;
    Snapshot {
        cpus: 1,
        memory: 64 << 20,
        tsc_khz: 2_100_000,
        vcpus: vec![vcpu],
        vm: VmState {
            pic_master: Default::default(),
            pic_slave: Default::default(),
            ioapic: Default::default(),
            pit: None,
            clock: Default::default(),
        },
        devices: DevicesState {
            serial: SerialSnapshot {
                registers: [12, 0, 0, 1, 3, 0x60, 8, 0, 0],
                fifo: b"in".to_vec(),
            },
            i8042: I8042State {
                control: 5,
                outp: 0,
                pending_cmd: None,
                buf: vec![],
            },
            virtio: vec![],
        },
    }
}

#[test]
fn a_snapshot_round_trips() {
    let bytes = encode(&sample()).unwrap();
    assert_eq!(&bytes[..8], MAGIC);
    let back = decode(&bytes).unwrap();
    assert_eq!(back.memory, 64 << 20);
    assert_eq!(back.vcpus[0].regs.rip, 0xdead_beef);
    assert_eq!(back.vcpus[0].xsave.region[7], 42);
    assert_eq!(back.vcpus[0].msrs[0].data, 12345);
    assert_eq!(back.vcpus[0].cpuid[0].ecx, 1 << 28);
    assert_eq!(back.devices, sample().devices);
}

#[test]
fn a_changed_byte_fails_the_checksum() {
    let mut bytes = encode(&sample()).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    assert_eq!(decode(&bytes).unwrap_err(), FormatError::Checksum);
}

#[test]
fn another_version_is_refused() {
    let mut bytes = encode(&sample()).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(
        decode(&bytes).unwrap_err(),
        FormatError::Version { found: 2 }
    );
    bytes[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        decode(&bytes).unwrap_err(),
        FormatError::Version { found: 0 }
    );
}

#[test]
fn a_truncated_or_foreign_file_is_refused() {
    let bytes = encode(&sample()).unwrap();
    assert!(matches!(
        decode(&bytes[..bytes.len() - 1]).unwrap_err(),
        FormatError::Length { .. }
    ));
    assert!(matches!(
        decode(&bytes[..30]).unwrap_err(),
        FormatError::Length { .. }
    ));
    assert_eq!(decode(b"{\"json\":1}").unwrap_err(), FormatError::Magic);
    assert_eq!(decode(b"").unwrap_err(), FormatError::Magic);
}

#[test]
fn a_payload_of_the_wrong_shape_is_refused_with_its_checksum_right() {
    use sha2::{Digest, Sha256};
    let payload = b"{\"cpus\":1}";
    let mut bytes = Vec::new();
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(payload));
    bytes.extend_from_slice(payload);
    assert!(matches!(
        decode(&bytes).unwrap_err(),
        FormatError::Payload(_)
    ));
}
