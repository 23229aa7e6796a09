//! Server → client `VFIO_USER_DMA_READ` / `VFIO_USER_DMA_WRITE`: the server
//! reaches client memory that was mapped without a file descriptor by
//! asking the client, on the same socket, with message ids of its own.
//!
//! Two layouts are in use. The spec (and libvfio-user) puts a 64-bit count
//! after the address and the data at body offset 16. QEMU's client
//! (`VFIOUserDMARW` in `hw/vfio-user/protocol.h`, QEMU 10.1 and later) has a
//! 32-bit count and the data at body offset 12, and counts the C struct's
//! 4 bytes of tail padding in the message size. A read *request* is the
//! same in both (a 64-bit little-endian count below 4 GiB is a 32-bit count
//! followed by 4 zero bytes); a write request and a read reply differ, so
//! the server must know which client it talks to: [`DmaLayout`].

use zerocopy::{FromBytes, IntoBytes};

use crate::encode::EncodeError;
use crate::header::{Header, MessageKind};
use crate::wire::{Command, DmaAccessBody, HEADER_SIZE, QemuDmaAccessBody, RawHeader};

/// Which layout the client uses for DMA_READ/DMA_WRITE bodies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DmaLayout {
    /// QEMU's client: 32-bit count, data at body offset 12, 4 bytes of padding at the end.
    #[default]
    Qemu,
    /// The specification: 64-bit count, data at body offset 16.
    Spec,
}

/// A DMA request the server sent and now awaits the reply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaRequest {
    /// The server-chosen message id.
    pub msg_id: u16,
    /// [`Command::DmaRead`] or [`Command::DmaWrite`].
    pub command: Command,
    /// Client DMA address.
    pub address: u64,
    /// Bytes transferred.
    pub count: u32,
    /// The layout the request was encoded with.
    pub layout: DmaLayout,
}

impl DmaRequest {
    /// Whether `header` is the reply to this request.
    pub fn is_reply(&self, header: &Header) -> bool {
        header.kind() == MessageKind::Reply
            && header.msg_id == self.msg_id
            && header.command == u16::from(self.command)
    }
}

/// A DMA reply that does not answer the request, or that reports failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DmaError {
    /// Not the reply to this request (wrong type, id or command).
    #[error("message (id {msg_id}, command {command}) is not the reply")]
    NotTheReply {
        /// The message's id.
        msg_id: u16,
        /// The message's command number.
        command: u16,
    },
    /// The client refused the access.
    #[error("client refused the access with errno {errno}")]
    Refused {
        /// The client's errno (0 if it gave none).
        errno: u32,
    },
    /// File descriptors came with the reply.
    #[error("{0} unexpected file descriptors")]
    UnexpectedFds(usize),
    /// The body's length does not fit the request.
    #[error("{len}-byte reply body, expected {expected}")]
    BodyLength {
        /// Body length received.
        len: usize,
        /// Body length expected.
        expected: usize,
    },
    /// The reply's address or count differs from the request's.
    #[error("reply for {address:#x}+{count} does not match the request")]
    Mismatch {
        /// Address in the reply.
        address: u64,
        /// Count in the reply.
        count: u64,
    },
}

fn put(
    buf: &mut Vec<u8>,
    msg_id: u16,
    command: Command,
    body: &[u8],
    data: &[u8],
    pad: usize,
) -> Result<(), EncodeError> {
    let size64 = (HEADER_SIZE + body.len() + pad) as u64 + data.len() as u64;
    let size = u32::try_from(size64).map_err(|_| EncodeError::TooLarge { size: size64 })?;
    let raw = RawHeader {
        msg_id: msg_id.into(),
        command: u16::from(command).into(),
        msg_size: size.into(),
        flags: 0.into(),
        error: 0.into(),
    };
    buf.clear();
    buf.extend_from_slice(raw.as_bytes());
    buf.extend_from_slice(body);
    buf.extend_from_slice(data);
    buf.resize(buf.len() + pad, 0);
    Ok(())
}

/// Encodes a DMA_READ of `count` bytes at `address` with the server's `msg_id`.
/// `count` must not exceed the client's `max_data_xfer_size`.
pub fn encode_dma_read(
    buf: &mut Vec<u8>,
    layout: DmaLayout,
    msg_id: u16,
    address: u64,
    count: u32,
) -> DmaRequest {
    let body = DmaAccessBody {
        address: address.into(),
        count: u64::from(count).into(),
    };
    // 32 bytes: cannot overflow.
    let _ = put(buf, msg_id, Command::DmaRead, body.as_bytes(), &[], 0);
    DmaRequest {
        msg_id,
        command: Command::DmaRead,
        address,
        count,
        layout,
    }
}

/// Encodes a DMA_WRITE of `data` to `address` with the server's `msg_id`.
/// `data` must not exceed the client's `max_data_xfer_size`.
pub fn encode_dma_write(
    buf: &mut Vec<u8>,
    layout: DmaLayout,
    msg_id: u16,
    address: u64,
    data: &[u8],
) -> Result<DmaRequest, EncodeError> {
    let count = u32::try_from(data.len()).map_err(|_| EncodeError::TooLarge {
        size: data.len() as u64,
    })?;
    match layout {
        DmaLayout::Spec => {
            let body = DmaAccessBody {
                address: address.into(),
                count: u64::from(count).into(),
            };
            put(buf, msg_id, Command::DmaWrite, body.as_bytes(), data, 0)?;
        }
        DmaLayout::Qemu => {
            let body = QemuDmaAccessBody {
                address: address.into(),
                count: count.into(),
            };
            put(buf, msg_id, Command::DmaWrite, body.as_bytes(), data, 4)?;
        }
    }
    Ok(DmaRequest {
        msg_id,
        command: Command::DmaWrite,
        address,
        count,
        layout,
    })
}

fn check_reply(request: &DmaRequest, header: &Header, fd_count: usize) -> Result<(), DmaError> {
    if !request.is_reply(header) {
        return Err(DmaError::NotTheReply {
            msg_id: header.msg_id,
            command: header.command,
        });
    }
    if header.is_error() {
        return Err(DmaError::Refused {
            errno: header.error,
        });
    }
    if fd_count != 0 {
        return Err(DmaError::UnexpectedFds(fd_count));
    }
    Ok(())
}

/// Checks the reply to a DMA_READ and returns the data read.
pub fn decode_dma_read_reply<'a>(
    request: &DmaRequest,
    header: &Header,
    payload: &'a [u8],
    fd_count: usize,
) -> Result<&'a [u8], DmaError> {
    check_reply(request, header, fd_count)?;
    let expected = 16 + request.count as usize;
    if payload.len() != expected {
        return Err(DmaError::BodyLength {
            len: payload.len(),
            expected,
        });
    }
    let (address, count, data) = match request.layout {
        DmaLayout::Spec => {
            let (body, data) =
                DmaAccessBody::read_from_prefix(payload).map_err(|_| DmaError::BodyLength {
                    len: payload.len(),
                    expected,
                })?;
            (body.address.get(), body.count.get(), data)
        }
        DmaLayout::Qemu => {
            let (body, rest) =
                QemuDmaAccessBody::read_from_prefix(payload).map_err(|_| DmaError::BodyLength {
                    len: payload.len(),
                    expected,
                })?;
            let data = rest.get(..request.count as usize).unwrap_or_default();
            (body.address.get(), u64::from(body.count.get()), data)
        }
    };
    if address != request.address || count != u64::from(request.count) {
        return Err(DmaError::Mismatch { address, count });
    }
    Ok(data)
}

/// Checks the reply to a DMA_WRITE. QEMU replies with the header alone; a
/// spec client echoes address and count.
pub fn decode_dma_write_reply(
    request: &DmaRequest,
    header: &Header,
    payload: &[u8],
    fd_count: usize,
) -> Result<(), DmaError> {
    check_reply(request, header, fd_count)?;
    if payload.is_empty() {
        return Ok(());
    }
    let body = DmaAccessBody::read_from_bytes(payload).map_err(|_| DmaError::BodyLength {
        len: payload.len(),
        expected: 16,
    })?;
    let (address, count) = (body.address.get(), body.count.get());
    if address != request.address || count != u64::from(request.count) {
        return Err(DmaError::Mismatch { address, count });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_header(request: &DmaRequest, body_len: usize) -> Header {
        Header {
            msg_id: request.msg_id,
            command: request.command.into(),
            msg_size: (16 + body_len) as u32,
            flags: 1,
            error: 0,
        }
    }

    #[test]
    fn read_request_is_the_same_in_both_layouts() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        encode_dma_read(&mut a, DmaLayout::Spec, 0x8001, 0x1000, 64);
        encode_dma_read(&mut b, DmaLayout::Qemu, 0x8001, 0x1000, 64);
        assert_eq!(a, b);
        #[rustfmt::skip]
        let expected = [
            0x01, 0x80, 11, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0x00, 0x10, 0, 0, 0, 0, 0, 0,
            64, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(a, expected);
    }

    #[test]
    fn spec_write_puts_data_at_offset_16() {
        let mut buf = Vec::new();
        encode_dma_write(&mut buf, DmaLayout::Spec, 7, 0x2000, b"abc").unwrap();
        #[rustfmt::skip]
        let expected = [
            7, 0, 12, 0, 35, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0x00, 0x20, 0, 0, 0, 0, 0, 0,
            3, 0, 0, 0, 0, 0, 0, 0,
            b'a', b'b', b'c',
        ];
        assert_eq!(buf, expected);
    }

    #[test]
    fn qemu_write_puts_data_at_offset_12_and_pads() {
        let mut buf = Vec::new();
        encode_dma_write(&mut buf, DmaLayout::Qemu, 7, 0x2000, b"abc").unwrap();
        #[rustfmt::skip]
        let expected = [
            7, 0, 12, 0, 35, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0x00, 0x20, 0, 0, 0, 0, 0, 0,
            3, 0, 0, 0,
            b'a', b'b', b'c',
            0, 0, 0, 0,
        ];
        assert_eq!(buf, expected);
    }

    #[test]
    fn qemu_read_reply_yields_data_from_offset_12() {
        let mut buf = Vec::new();
        let request = encode_dma_read(&mut buf, DmaLayout::Qemu, 3, 0x4000, 4);
        // What QEMU's vfio_user_dma_read sends: the request's 12 bytes, data, 4 zero bytes.
        let payload = [
            0x00, 0x40, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0,
        ];
        let data =
            decode_dma_read_reply(&request, &reply_header(&request, 20), &payload, 0).unwrap();
        assert_eq!(data, [1, 2, 3, 4]);
    }

    #[test]
    fn spec_read_reply_yields_data_from_offset_16() {
        let mut buf = Vec::new();
        let request = encode_dma_read(&mut buf, DmaLayout::Spec, 3, 0x4000, 4);
        let payload = [
            0x00, 0x40, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
        ];
        let data =
            decode_dma_read_reply(&request, &reply_header(&request, 20), &payload, 0).unwrap();
        assert_eq!(data, [1, 2, 3, 4]);
    }

    #[test]
    fn read_reply_with_other_address_is_a_mismatch() {
        let mut buf = Vec::new();
        let request = encode_dma_read(&mut buf, DmaLayout::Spec, 3, 0x4000, 4);
        let payload = [
            0x00, 0x50, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
        ];
        let err =
            decode_dma_read_reply(&request, &reply_header(&request, 20), &payload, 0).unwrap_err();
        assert_eq!(
            err,
            DmaError::Mismatch {
                address: 0x5000,
                count: 4
            }
        );
    }

    #[test]
    fn short_read_reply_is_refused() {
        let mut buf = Vec::new();
        let request = encode_dma_read(&mut buf, DmaLayout::Qemu, 3, 0x4000, 4);
        let payload = [0u8; 19];
        let err =
            decode_dma_read_reply(&request, &reply_header(&request, 19), &payload, 0).unwrap_err();
        assert_eq!(
            err,
            DmaError::BodyLength {
                len: 19,
                expected: 20
            }
        );
    }

    #[test]
    fn error_reply_reports_the_clients_errno() {
        let mut buf = Vec::new();
        let request = encode_dma_read(&mut buf, DmaLayout::Qemu, 3, 0x4000, 4);
        let header = Header {
            flags: 0x21,
            error: 14,
            ..reply_header(&request, 0)
        };
        assert_eq!(
            decode_dma_read_reply(&request, &header, &[], 0),
            Err(DmaError::Refused { errno: 14 })
        );
    }

    #[test]
    fn reply_with_other_id_is_not_the_reply() {
        let mut buf = Vec::new();
        let request = encode_dma_write(&mut buf, DmaLayout::Qemu, 3, 0x4000, b"x").unwrap();
        let header = Header {
            msg_id: 4,
            ..reply_header(&request, 0)
        };
        assert!(matches!(
            decode_dma_write_reply(&request, &header, &[], 0),
            Err(DmaError::NotTheReply { msg_id: 4, .. })
        ));
    }

    #[test]
    fn write_reply_may_be_empty_or_echo_the_access() {
        let mut buf = Vec::new();
        let request = encode_dma_write(&mut buf, DmaLayout::Spec, 3, 0x4000, b"xy").unwrap();
        decode_dma_write_reply(&request, &reply_header(&request, 0), &[], 0).unwrap();
        let echo = [0x00, 0x40, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
        decode_dma_write_reply(&request, &reply_header(&request, 16), &echo, 0).unwrap();
        assert!(decode_dma_write_reply(&request, &reply_header(&request, 16), &echo, 1).is_err());
    }
}
