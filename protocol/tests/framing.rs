//! Framing over real Unix stream socket pairs.

mod common;

use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::*;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
use vgpu_protocol::wire::Command;
use vgpu_protocol::{FrameError, MessageReader, send_message};

const GUARD: Duration = Duration::from_secs(10);

/// A socket to pass as an fd, and its peer to identify it by.
fn tagged() -> (OwnedFd, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    b.set_read_timeout(Some(GUARD)).unwrap();
    (a.into(), b)
}

/// Whether `received` is the fd whose peer is `peer`.
fn is_same_socket(received: OwnedFd, peer: &mut UnixStream) -> bool {
    let mut stream = UnixStream::from(received);
    stream.write_all(b"!").unwrap();
    let mut byte = [0];
    peer.read_exact(&mut byte).is_ok() && byte == *b"!"
}

/// Whether every copy of the fd whose peer is `peer` has been closed.
fn is_closed(peer: &mut UnixStream) -> bool {
    let mut byte = [0];
    matches!(peer.read(&mut byte), Ok(0))
}

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_read_timeout(Some(GUARD)).unwrap();
    (a, b)
}

#[test]
fn pipelined_messages_from_one_write_need_one_read() {
    let (server, mut client) = pair();
    let mut bytes = region_read(7, 0, 4);
    bytes.extend(region_write(2, 0x504, &[1, 2]));
    bytes.extend(device_get_info(16));
    client.write_all(&bytes).unwrap();
    let mut reader = MessageReader::new(1 << 20);
    let commands: Vec<u16> = (0..3)
        .map(|_| reader.next_frame(&server).unwrap().unwrap().header.command)
        .collect();
    assert_eq!(commands, [9, 10, 4]);
    assert_eq!(reader.reads(), 1);
}

#[test]
fn message_written_one_byte_at_a_time_is_reassembled() {
    let (server, mut client) = pair();
    let message = region_write(2, 0x10, &[0xde, 0xad, 0xbe, 0xef]);
    let expected = message.clone();
    let writer = thread::spawn(move || {
        for byte in message {
            client.write_all(&[byte]).unwrap();
        }
        client
    });
    let mut reader = MessageReader::new(1 << 20);
    let frame = reader.next_frame(&server).unwrap().unwrap();
    assert_eq!(frame.header.msg_size as usize, expected.len());
    assert_eq!(frame.payload, &expected[16..]);
    drop(writer.join().unwrap());
    assert!(reader.next_frame(&server).unwrap().is_none());
}

#[test]
fn fd_goes_to_the_second_of_two_glued_messages() {
    let (server, client) = pair();
    let (fd, mut peer) = tagged();
    send_message(&client, &device_get_info(16), &[]).unwrap();
    send_message(&client, &dma_map(3, 0, 0x1000, 0x1000), &[fd.as_fd()]).unwrap();
    drop(fd);
    let mut reader = MessageReader::new(1 << 20);
    let first = reader.next_frame(&server).unwrap().unwrap();
    assert_eq!(first.header.command, 4);
    assert!(first.fds.is_empty());
    let mut second = reader.next_frame(&server).unwrap().unwrap();
    assert_eq!(second.header.command, 2);
    assert_eq!(second.fds.len(), 1);
    assert!(is_same_socket(second.fds.take(0).unwrap(), &mut peer));
}

#[test]
fn fd_goes_to_the_first_of_two_glued_messages() {
    let (server, client) = pair();
    let (fd, mut peer) = tagged();
    send_message(&client, &dma_map(3, 0, 0x1000, 0x1000), &[fd.as_fd()]).unwrap();
    send_message(&client, &device_get_info(16), &[]).unwrap();
    drop(fd);
    let mut reader = MessageReader::new(1 << 20);
    let mut first = reader.next_frame(&server).unwrap().unwrap();
    assert_eq!(first.header.command, 2);
    assert!(is_same_socket(first.fds.take(0).unwrap(), &mut peer));
    let second = reader.next_frame(&server).unwrap().unwrap();
    assert_eq!(second.header.command, 4);
    assert!(second.fds.is_empty());
}

#[test]
fn fds_of_consecutive_messages_stay_apart() {
    let (server, client) = pair();
    let (fd1, mut peer1) = tagged();
    let (fd2, mut peer2) = tagged();
    let (fd3, mut peer3) = tagged();
    let message = set_irqs(0x24, 2, 0, 2, &[]);
    send_message(&client, &message, &[fd1.as_fd(), fd2.as_fd()]).unwrap();
    send_message(&client, &dma_map(3, 0, 0x1000, 0x1000), &[fd3.as_fd()]).unwrap();
    drop((fd1, fd2, fd3));
    let mut reader = MessageReader::new(1 << 20);
    let mut irqs = reader.next_frame(&server).unwrap().unwrap();
    assert_eq!(irqs.fds.len(), 2);
    assert!(is_same_socket(irqs.fds.take(0).unwrap(), &mut peer1));
    assert!(is_same_socket(irqs.fds.take(1).unwrap(), &mut peer2));
    let mut map = reader.next_frame(&server).unwrap().unwrap();
    assert!(is_same_socket(map.fds.take(0).unwrap(), &mut peer3));
}

#[test]
fn oversized_message_is_skipped_and_its_fds_closed() {
    let (server, client) = pair();
    let (fd, mut peer) = tagged();
    let mut reader = MessageReader::new(64);
    let too_big = reader.max_message_size() + 1000;
    let mut big = command(0x77, Command::RegionWrite, &[&vec![0x55; too_big - 16]]);
    big.truncate(too_big);
    let sender = thread::spawn(move || {
        send_message(&client, &big, &[fd.as_fd()]).unwrap();
        send_message(&client, &region_read(7, 0, 4), &[]).unwrap();
        client
    });
    match reader.next_frame(&server) {
        Err(e @ FrameError::Oversized { header, .. }) => {
            assert_eq!(header.msg_id, 0x77);
            assert!(!e.is_fatal());
            assert_eq!(e.errno(), 7);
        }
        other => panic!("expected Oversized, got {other:?}"),
    }
    let next = reader.next_frame(&server).unwrap().unwrap();
    assert_eq!(next.header.command, 9);
    assert!(next.fds.is_empty());
    drop(next);
    assert!(is_closed(&mut peer));
    drop(sender.join().unwrap());
}

#[test]
fn too_many_fds_fail_that_message_only() {
    let (server, client) = pair();
    let peers: Vec<(OwnedFd, UnixStream)> = (0..17).map(|_| tagged()).collect();
    let fds: Vec<BorrowedFd<'_>> = peers.iter().map(|(fd, _)| fd.as_fd()).collect();
    let message = set_irqs(0x24, 2, 0, 17, &[]);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(17))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    let sent = sendmsg(
        &client,
        &[std::io::IoSlice::new(&message)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
    assert_eq!(sent, message.len());
    send_message(&client, &device_get_info(16), &[]).unwrap();
    let mut peers: Vec<UnixStream> = peers.into_iter().map(|(_, peer)| peer).collect();
    let mut reader = MessageReader::new(1 << 20);
    let err = reader.next_frame(&server).unwrap_err();
    assert!(matches!(err, FrameError::TooManyFds { .. }), "{err:?}");
    assert!(!err.is_fatal());
    assert_eq!(
        reader.next_frame(&server).unwrap().unwrap().header.command,
        4
    );
    assert!(peers.iter_mut().all(is_closed));
}

#[test]
fn end_of_stream_between_messages_is_none() {
    let (server, mut client) = pair();
    client.write_all(&device_get_info(16)).unwrap();
    drop(client);
    let mut reader = MessageReader::new(1 << 20);
    assert!(reader.next_frame(&server).unwrap().is_some());
    assert!(reader.next_frame(&server).unwrap().is_none());
    assert!(reader.next_frame(&server).unwrap().is_none());
}

#[test]
fn end_of_stream_mid_message_is_fatal() {
    let (server, mut client) = pair();
    client
        .write_all(&region_write(2, 0, &[1, 2, 3, 4])[..20])
        .unwrap();
    drop(client);
    let mut reader = MessageReader::new(1 << 20);
    let err = reader.next_frame(&server).unwrap_err();
    assert!(matches!(err, FrameError::UnexpectedEof));
    assert!(err.is_fatal());
}

#[test]
fn size_below_header_is_fatal_with_the_header_to_answer() {
    let (server, mut client) = pair();
    let mut message = device_get_info(16);
    message[4..8].copy_from_slice(&8u32.to_le_bytes());
    client.write_all(&message).unwrap();
    let mut reader = MessageReader::new(1 << 20);
    let err = reader.next_frame(&server).unwrap_err();
    assert_eq!(err.header().map(|h| h.msg_id), Some(4));
    assert!(err.is_fatal());
    assert!(matches!(
        reader.next_frame(&server),
        Err(FrameError::Broken)
    ));
}

#[test]
fn shutdown_from_another_thread_ends_a_blocked_read() {
    let (server, _client) = UnixStream::pair().unwrap();
    let handle = server.try_clone().unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let reader_thread = thread::spawn(move || {
        let mut reader = MessageReader::new(4096);
        let ended = matches!(reader.next_frame(&server), Ok(None) | Err(_));
        done_tx.send(ended).unwrap();
    });
    handle.shutdown(std::net::Shutdown::Both).unwrap();
    assert_eq!(done_rx.recv_timeout(GUARD), Ok(true));
    reader_thread.join().unwrap();
}

#[test]
fn large_message_with_fd_survives_partial_writes() {
    let (server, client) = pair();
    let (fd, mut peer) = tagged();
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let message = region_write(0, 0, &data);
    let sender = thread::spawn(move || {
        send_message(&client, &message, &[fd.as_fd()]).unwrap();
        client
    });
    let mut reader = MessageReader::new(1 << 20);
    let mut frame = reader.next_frame(&server).unwrap().unwrap();
    assert_eq!(&frame.payload[16..], &data[..]);
    assert!(is_same_socket(frame.fds.take(0).unwrap(), &mut peer));
    drop(frame);
    assert!(reader.reads() > 1, "the message must have arrived in parts");
    drop(sender.join().unwrap());
}

#[test]
fn non_blocking_socket_with_nothing_to_read_is_not_fatal() {
    let (server, mut client) = pair();
    server.set_nonblocking(true).unwrap();
    let mut reader = MessageReader::new(4096);
    let err = reader.next_frame(&server).unwrap_err();
    assert!(matches!(&err, FrameError::Io(e) if e.kind() == std::io::ErrorKind::WouldBlock));
    assert!(!err.is_fatal());
    client.write_all(&device_get_info(16)).unwrap();
    assert_eq!(
        reader.next_frame(&server).unwrap().unwrap().header.command,
        4
    );
}
