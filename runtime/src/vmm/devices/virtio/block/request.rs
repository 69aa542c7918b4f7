//! A virtio-blk request, parsed from a checked descriptor chain.
//!
//! Layout (virtio 1.2, 5.2.6): a device-readable 16-byte header (`type`, reserved,
//! `sector`), then data buffers (device-writable for IN and GET_ID, device-readable for
//! OUT), then a device-writable status byte in the last descriptor. Anything else is
//! refused; when the status descriptor itself is sound the guest still gets an error
//! status there, otherwise the chain goes back with nothing written.

use std::ops::Range;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress};

use crate::vmm::devices::virtio::GuestMemoryMmap;

/// Size of the request header.
const HEADER_LEN: u32 = 16;

/// What the guest asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestKind {
    /// Read sectors into the data buffers.
    In,
    /// Write the data buffers to sectors.
    Out,
    /// Make earlier writes durable.
    Flush,
    /// Write the device id string into the data buffers.
    GetId,
    /// A type this device does not implement.
    Unsupported(u32),
}

/// A request whose descriptors are shaped right; its sector range is not checked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub kind: RequestKind,
    pub sector: u64,
    /// Indices of the data descriptors in the chain.
    pub data: Range<usize>,
    /// Total length of the data buffers.
    pub data_len: u64,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// A chain that is not a block request. `status` is where an error status can still be
/// reported, when the last descriptor is a usable status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed {
    pub status: Option<GuestAddress>,
}

/// Parses the descriptors of a chain already checked to lie in guest memory.
pub(crate) fn parse(mem: &GuestMemoryMmap, descs: &[Descriptor]) -> Result<Request, Malformed> {
    let status = match descs.last() {
        Some(last) if descs.len() >= 2 && last.is_write_only() && last.len() >= 1 => {
            Some(last.addr())
        }
        _ => None,
    };
    let bad = Malformed { status };
    let (Some(status), Some(header)) = (status, descs.first()) else {
        return Err(bad);
    };
    if header.is_write_only() || header.len() < HEADER_LEN {
        return Err(bad);
    }
    let mut raw = [0u8; HEADER_LEN as usize];
    mem.read_slice(&mut raw, header.addr()).map_err(|_| bad)?;
    let (kind, rest) = raw.split_at(4);
    let kind = match u32::from_le_bytes(kind.try_into().map_err(|_| bad)?) {
        VIRTIO_BLK_T_IN => RequestKind::In,
        VIRTIO_BLK_T_OUT => RequestKind::Out,
        VIRTIO_BLK_T_FLUSH => RequestKind::Flush,
        VIRTIO_BLK_T_GET_ID => RequestKind::GetId,
        other => RequestKind::Unsupported(other),
    };
    let sector = u64::from_le_bytes(rest[4..12].try_into().map_err(|_| bad)?);

    let data = 1..descs.len() - 1;
    let buffers = &descs[data.clone()];
    let want_writable = match kind {
        RequestKind::In | RequestKind::GetId => Some(true),
        RequestKind::Out => Some(false),
        RequestKind::Flush | RequestKind::Unsupported(_) => None,
    };
    if let Some(writable) = want_writable {
        if buffers.iter().any(|d| d.is_write_only() != writable) {
            return Err(bad);
        }
    }
    let data_len = buffers.iter().map(|d| u64::from(d.len())).sum();
    Ok(Request {
        kind,
        sector,
        data,
        data_len,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::devices::virtio::testing::{F_NEXT, F_WRITE};

    fn mem_with_header(kind: u32, sector: u64) -> GuestMemoryMmap {
        let mem = crate::vmm::devices::virtio::testing::QueueLayout::memory(0x10000);
        mem.write_obj(kind, GuestAddress(0x100)).unwrap();
        mem.write_obj(sector, GuestAddress(0x108)).unwrap();
        mem
    }

    fn d(addr: u64, len: u32, flags: u16) -> Descriptor {
        Descriptor::new(addr, len, flags, 0)
    }

    #[test]
    fn read_request() {
        let mem = mem_with_header(VIRTIO_BLK_T_IN, 7);
        let descs = [
            d(0x100, 16, F_NEXT),
            d(0x1000, 512, F_WRITE | F_NEXT),
            d(0x2000, 1024, F_WRITE | F_NEXT),
            d(0x3000, 1, F_WRITE),
        ];
        let req = parse(&mem, &descs).unwrap();
        assert_eq!(req.kind, RequestKind::In);
        assert_eq!(req.sector, 7);
        assert_eq!(req.data, 1..3);
        assert_eq!(req.data_len, 1536);
        assert_eq!(req.status, GuestAddress(0x3000));
    }

    #[test]
    fn head_only_chain_is_malformed_without_status() {
        let mem = mem_with_header(VIRTIO_BLK_T_IN, 0);
        let err = parse(&mem, &[d(0x100, 16, F_WRITE)]).unwrap_err();
        assert_eq!(err.status, None);
        assert_eq!(parse(&mem, &[]).unwrap_err().status, None);
    }

    #[test]
    fn bad_shapes_report_through_status() {
        let mem = mem_with_header(VIRTIO_BLK_T_IN, 0);
        let status = d(0x3000, 1, F_WRITE);
        // header too short, header writable, read into a readable buffer
        for descs in [
            vec![d(0x100, 8, F_NEXT), status],
            vec![d(0x100, 16, F_WRITE | F_NEXT), status],
            vec![d(0x100, 16, F_NEXT), d(0x1000, 512, F_NEXT), status],
        ] {
            assert_eq!(
                parse(&mem, &descs).unwrap_err().status,
                Some(GuestAddress(0x3000))
            );
        }
        // a readable or empty status byte cannot carry a status
        for last in [d(0x3000, 1, 0), d(0x3000, 0, F_WRITE)] {
            let descs = [d(0x100, 16, F_NEXT), last];
            assert_eq!(parse(&mem, &descs).unwrap_err().status, None);
        }
    }

    #[test]
    fn write_needs_readable_buffers() {
        let mem = mem_with_header(VIRTIO_BLK_T_OUT, 1);
        let ok = [
            d(0x100, 16, F_NEXT),
            d(0x1000, 512, F_NEXT),
            d(0x3000, 1, F_WRITE),
        ];
        assert_eq!(parse(&mem, &ok).unwrap().kind, RequestKind::Out);
        let bad = [
            d(0x100, 16, F_NEXT),
            d(0x1000, 512, F_WRITE | F_NEXT),
            d(0x3000, 1, F_WRITE),
        ];
        assert!(parse(&mem, &bad).is_err());
    }

    #[test]
    fn unknown_type_is_unsupported() {
        let mem = mem_with_header(0xdead, 0);
        let descs = [d(0x100, 16, F_NEXT), d(0x3000, 1, F_WRITE)];
        assert_eq!(
            parse(&mem, &descs).unwrap().kind,
            RequestKind::Unsupported(0xdead)
        );
    }
}
