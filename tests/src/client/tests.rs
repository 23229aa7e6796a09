//! The client against a scripted server on a socketpair: reply checking
//! and serving of DMA requests while a reply is awaited.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use zerocopy::{FromBytes, IntoBytes};

use super::*;
use crate::wire::RegionAccess;

fn header(id: u16, command: u16, msg_flags: u32, error: u32, body_len: usize) -> Header {
    Header {
        id,
        command,
        size: (HEADER_SIZE + body_len) as u32,
        flags: msg_flags,
        error,
    }
}

/// Reads one whole message from the raw peer end.
fn read_message(peer: &mut UnixStream) -> (Header, Vec<u8>) {
    let mut head = [0u8; HEADER_SIZE];
    peer.read_exact(&mut head).unwrap();
    let header = Header::read_from_bytes(&head).unwrap();
    let mut body = vec![0; header.size as usize - HEADER_SIZE];
    peer.read_exact(&mut body).unwrap();
    (header, body)
}

fn scripted(script: impl FnOnce(UnixStream) + Send + 'static) -> (RawClient, JoinHandle<()>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || script(theirs));
    let mut client = RawClient::from_stream(ours).unwrap();
    client.set_timeout(Duration::from_secs(2)).unwrap();
    (client, server)
}

#[test]
fn error_reply_becomes_refused_with_its_errno() {
    let (mut client, server) = scripted(|mut peer| {
        let (request, _) = read_message(&mut peer);
        let reply = header(request.id, request.command, 1 | flags::ERROR, 22, 0);
        peer.write_all(reply.as_bytes()).unwrap();
    });
    let error = client.reset().unwrap_err();
    assert_eq!(error.errno(), Some(22));
    server.join().unwrap();
}

#[test]
fn reply_with_another_id_is_a_bad_reply() {
    let (mut client, server) = scripted(|mut peer| {
        let (request, _) = read_message(&mut peer);
        let reply = header(request.id.wrapping_add(1), request.command, 1, 0, 0);
        peer.write_all(reply.as_bytes()).unwrap();
    });
    assert!(matches!(client.reset(), Err(ClientError::BadReply(_))));
    server.join().unwrap();
}

#[test]
fn reply_without_the_reply_type_is_not_taken_as_one() {
    let (mut client, server) = scripted(|mut peer| {
        let (request, _) = read_message(&mut peer);
        let reply = header(request.id, request.command, 2, 0, 0);
        peer.write_all(reply.as_bytes()).unwrap();
    });
    assert!(matches!(client.reset(), Err(ClientError::BadReply(_))));
    server.join().unwrap();
}

/// Asks the client for `count` bytes at `address` with DMA_READ before
/// answering its pending REGION_WRITE; returns what the client answered.
fn dma_read_during_write(
    remote: Option<(u64, Vec<u8>)>,
    address: u64,
    count: u64,
) -> (Header, Vec<u8>) {
    let (client, server) = scripted(move |mut peer| {
        let (request, _) = read_message(&mut peer);
        let access = DmaAccess { address, count };
        let ask = header(0x40, command::DMA_READ, 0, 0, size_of::<DmaAccess>());
        peer.write_all(ask.as_bytes()).unwrap();
        peer.write_all(access.as_bytes()).unwrap();
        let answer = read_message(&mut peer);
        let done = RegionAccess {
            offset: 0,
            region: 2,
            count: 4,
        };
        let reply = header(request.id, request.command, 1, 0, size_of::<RegionAccess>());
        peer.write_all(reply.as_bytes()).unwrap();
        peer.write_all(done.as_bytes()).unwrap();
        // Hand the answer back through the peer socket's other direction.
        let mut encoded = answer.0.as_bytes().to_vec();
        encoded.extend(answer.1);
        peer.write_all(&encoded).unwrap();
    });
    let mut client = match remote {
        Some((iova, bytes)) => client.with_remote_memory(iova, bytes),
        None => client,
    };
    client.region_write(2, 0x1024, &[1, 0, 0, 0]).unwrap();
    server.join().unwrap();
    let echoed = client.recv_raw().unwrap();
    (echoed.header, echoed.body)
}

#[test]
fn dma_read_is_answered_from_remote_memory_while_a_reply_is_awaited() {
    let memory: Vec<u8> = (0..=255).collect();
    let (reply, body) = dma_read_during_write(Some((0x1000, memory)), 0x1010, 8);
    assert_eq!(
        (reply.id, reply.command, reply.flags),
        (0x40, command::DMA_READ, 1)
    );
    let (access, data) = DmaAccess::read_from_prefix(&body).unwrap();
    assert_eq!((access.address, access.count), (0x1010, 8));
    assert_eq!(data, &[16, 17, 18, 19, 20, 21, 22, 23]);
}

#[test]
fn dma_read_outside_remote_memory_is_refused_with_efault() {
    let (reply, body) = dma_read_during_write(Some((0x1000, vec![0; 16])), 0x1008, 16);
    assert_eq!(reply.flags, 1 | flags::ERROR);
    assert_eq!(reply.error, EFAULT);
    assert!(body.is_empty());
}
