//! Fuzzes everything in `vgpu-protocol` that reads peer bytes.
//!
//! Input: one byte giving the number of file descriptors to claim (0–17),
//! then a byte stream. The stream is decoded as back-to-back messages with
//! `Header::parse` + `decode_request` (and the DMA reply decoders), then
//! sent through a socket pair and framed by `MessageReader`.
#![no_main]

use std::io::Write;
use std::os::unix::net::UnixStream;

use libfuzzer_sys::fuzz_target;
use vgpu_protocol::{
    DmaLayout, Header, MessageReader, Request, ServerCapabilities, decode_dma_read_reply,
    decode_dma_write_reply, decode_request, encode_dma_read, encode_dma_write,
    encode_version_reply, negotiate,
};

/// Largest stream sent through the socket pair: well under the socket
/// buffer, so the single-threaded write cannot block.
const MAX_FRAMED: usize = 64 * 1024;

fn decode_one(header: &Header, payload: &[u8], fds: usize, scratch: &mut Vec<u8>) {
    match decode_request(header, payload, fds) {
        Ok(Request::Version {
            major,
            minor,
            capabilities,
        }) => {
            if let Ok(negotiated) =
                negotiate(major, minor, &capabilities, &ServerCapabilities::default())
            {
                encode_version_reply(scratch, header, &negotiated);
            }
        }
        Ok(_) => {}
        Err(e) => assert_ne!(e.errno(), 0),
    }
    for layout in [DmaLayout::Qemu, DmaLayout::Spec] {
        let read = encode_dma_read(scratch, layout, header.msg_id, 0x1000, 4);
        let _ = decode_dma_read_reply(&read, header, payload, fds);
        if let Ok(write) = encode_dma_write(scratch, layout, header.msg_id, 0x1000, b"data") {
            let _ = decode_dma_write_reply(&write, header, payload, fds);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&fd_byte, stream)) = data.split_first() else {
        return;
    };
    let fds = usize::from(fd_byte % 18);
    let mut scratch = Vec::new();

    let mut rest = stream;
    while let Ok(header) = Header::parse(rest) {
        // Header::parse guarantees msg_size >= 16, so the loop advances.
        let size = (header.msg_size as usize).min(rest.len());
        let payload = rest.get(16..size).unwrap_or_default();
        decode_one(&header, payload, fds, &mut scratch);
        rest = rest.get(size..).unwrap_or_default();
    }

    if stream.len() > MAX_FRAMED {
        return;
    }
    let (mut client, server) = UnixStream::pair().expect("socketpair");
    client.write_all(stream).expect("write to socket pair");
    drop(client);
    let mut reader = MessageReader::new(256);
    loop {
        match reader.next_frame(&server) {
            Ok(Some(frame)) => {
                decode_one(&frame.header, frame.payload, frame.fds.len(), &mut scratch)
            }
            Ok(None) => break,
            Err(e) if e.is_fatal() => break,
            Err(e) => assert!(e.header().is_some()),
        }
    }
});
