//! Framing of vfio-user messages on a Unix stream socket, with file
//! descriptors passed as `SCM_RIGHTS` and a receive timeout on every read,
//! so that no test can hang on a server that stays silent.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use zerocopy::FromBytes;

use crate::wire::{HEADER_SIZE, Header};

/// Most file descriptors one received message may carry. More than the
/// daemon's `max_msg_fds` (16), so that a server sending too many is seen
/// rather than silently truncated.
pub const MAX_RECV_FDS: usize = 32;

/// Most byte slices one message is sent from.
pub const MAX_PARTS: usize = 4;

/// Largest message body the client accepts, in bytes: the largest data
/// transfer (1 MiB) plus room for any fixed payload.
pub const MAX_BODY: usize = (1 << 20) + 4096;

/// A failure to move bytes over the socket.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing arrived within the receive timeout.
    #[error("timed out waiting for the peer")]
    Timeout,
    /// The peer closed the connection (or reset it).
    #[error("the peer closed the connection")]
    Closed,
    /// The peer sent a header whose size field cannot frame a message.
    #[error("the peer sent a message of {size} bytes, which cannot be framed")]
    BadSize {
        /// The size field of the header.
        size: u32,
    },
    /// The kernel dropped file descriptors because the buffer was too small.
    #[error("the peer sent more than {MAX_RECV_FDS} file descriptors")]
    TooManyFds,
    /// Any other socket error.
    #[error("socket error")]
    Io(#[source] io::Error),
}

impl From<io::Error> for TransportError {
    fn from(error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => TransportError::Timeout,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => TransportError::Closed,
            _ => TransportError::Io(error),
        }
    }
}

impl From<rustix::io::Errno> for TransportError {
    fn from(errno: rustix::io::Errno) -> Self {
        io::Error::from(errno).into()
    }
}

/// Free space below which the receive buffer is compacted, in bytes.
const RECV_CHUNK: usize = 64 << 10;

/// Receive buffer size: the largest message plus room to read ahead.
const RECV_BUFFER: usize = HEADER_SIZE + MAX_BODY + RECV_CHUNK;

/// The socket plus a receive buffer allocated once, so that the
/// request/reply path allocates nothing.
#[derive(Debug)]
pub struct Transport {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes.
    head: usize,
    /// End of the received bytes.
    tail: usize,
    /// Stream position of `buf[0]`.
    base: u64,
    /// The last message's body.
    body: Range<usize>,
    /// Descriptors received, with the stream range of the read that
    /// brought them.
    pending: Vec<(Range<u64>, Vec<OwnedFd>)>,
}

impl Transport {
    /// Wraps a connected stream and sets both timeouts to `timeout`.
    pub fn new(stream: UnixStream, timeout: Duration) -> Result<Self, TransportError> {
        let mut transport = Transport {
            stream,
            buf: vec![0; RECV_BUFFER],
            head: 0,
            tail: 0,
            base: 0,
            body: 0..0,
            pending: Vec::new(),
        };
        transport.set_timeout(timeout)?;
        Ok(transport)
    }

    /// Sets the receive and send timeouts.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), TransportError> {
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.set_write_timeout(Some(timeout))?;
        Ok(())
    }

    /// The underlying stream.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends `parts` as one message, with `fds` attached to its first byte.
    pub fn send(&mut self, parts: &[&[u8]], fds: &[BorrowedFd<'_>]) -> Result<(), TransportError> {
        let total: usize = parts.iter().map(|part| part.len()).sum();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_RECV_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(TransportError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many file descriptors for one send",
            )));
        }
        // A fixed array keeps the request path free of allocation.
        let mut slices = [IoSlice::new(&[]); MAX_PARTS];
        if parts.len() > MAX_PARTS {
            return Err(TransportError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many parts for one message",
            )));
        }
        for (slice, part) in slices.iter_mut().zip(parts) {
            *slice = IoSlice::new(part);
        }
        let sent = sendmsg(
            &self.stream,
            &slices[..parts.len()],
            &mut control,
            SendFlags::NOSIGNAL,
        )?;
        if sent < total {
            // The descriptors went with the first bytes; the rest is plain data.
            let mut skip = sent;
            for part in parts {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                self.write_all(&part[skip..])?;
                skip = 0;
            }
        }
        Ok(())
    }

    fn write_all(&self, mut bytes: &[u8]) -> Result<(), TransportError> {
        while !bytes.is_empty() {
            let n = rustix::net::send(&self.stream, bytes, SendFlags::NOSIGNAL)?;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Receives one whole message: returns its header and the descriptors
    /// that came with it; the body is then in [`Transport::body`].
    ///
    /// Reads are buffered: one `recvmsg` usually brings a whole reply (and
    /// may bring the start of the next message, kept for the next call).
    pub fn recv(&mut self) -> Result<(Header, Vec<OwnedFd>), TransportError> {
        // The previous message's bytes are no longer needed.
        self.head = self.body.end.max(self.head);
        self.body = self.head..self.head;
        loop {
            if let Some(message) = self.buffered_message()? {
                return Ok(message);
            }
            self.make_room();
            let tail = self.tail;
            let (n, fds) = self.recv_some(tail)?;
            if !fds.is_empty() {
                let start = self.base + tail as u64;
                self.pending.push((start..start + n as u64, fds));
            }
            self.tail += n;
        }
    }

    /// The next complete message in the buffer, if there is one.
    fn buffered_message(&mut self) -> Result<Option<(Header, Vec<OwnedFd>)>, TransportError> {
        let available = &self.buf[self.head..self.tail];
        let Ok((header, _)) = Header::read_from_prefix(available) else {
            return Ok(None);
        };
        let size = header.size as usize;
        if size < HEADER_SIZE || size - HEADER_SIZE > MAX_BODY {
            return Err(TransportError::BadSize { size: header.size });
        }
        if available.len() < size {
            return Ok(None);
        }
        let start = self.head;
        self.body = start + HEADER_SIZE..start + size;
        let position = self.base + start as u64;
        let end = position + size as u64;
        let mut fds = Vec::new();
        // Linux attaches a sendmsg's descriptors to its first bytes and ends
        // a stream recvmsg right after the bytes that carried descriptors:
        // they belong to the last message that starts inside that read.
        self.pending.retain_mut(|(read, received)| {
            if read.contains(&position) && end >= read.end {
                fds.append(received);
            }
            read.end > end
        });
        Ok(Some((header, fds)))
    }

    /// Moves unconsumed bytes to the front when the free space runs low.
    fn make_room(&mut self) {
        if self.head == self.tail {
            self.base += self.head as u64;
            self.head = 0;
            self.tail = 0;
        } else if self.buf.len() - self.tail < RECV_CHUNK {
            self.buf.copy_within(self.head..self.tail, 0);
            self.base += self.head as u64;
            self.tail -= self.head;
            self.head = 0;
        }
        self.body = self.head..self.head;
    }

    /// One `recvmsg` into the buffer at `at`: at least one byte, or an
    /// error (end of stream is `Closed`).
    fn recv_some(&mut self, at: usize) -> Result<(usize, Vec<OwnedFd>), TransportError> {
        let mut fds = Vec::new();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_RECV_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut self.buf[at..])];
        let received = recvmsg(
            &self.stream,
            &mut iov,
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received_fds) = message {
                fds.extend(received_fds);
            }
        }
        if received.flags.contains(ReturnFlags::CTRUNC) {
            return Err(TransportError::TooManyFds);
        }
        if received.bytes == 0 {
            return Err(TransportError::Closed);
        }
        Ok((received.bytes, fds))
    }

    /// The body of the last message received.
    pub fn body(&self) -> &[u8] {
        &self.buf[self.body.clone()]
    }

    /// Shuts the socket down in both directions.
    pub fn shutdown(&self) {
        // Already shut down or reset: nothing left to do.
        let _ = rustix::net::shutdown(self.stream.as_fd(), rustix::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsFd;

    use zerocopy::IntoBytes;

    use super::*;

    fn message(id: u16, body: &[u8]) -> Vec<u8> {
        let header = Header {
            id,
            command: 9,
            size: (HEADER_SIZE + body.len()) as u32,
            flags: 1,
            error: 0,
        };
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    fn pair() -> (Transport, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let transport = Transport::new(ours, Duration::from_secs(2)).expect("timeouts");
        (transport, theirs)
    }

    #[test]
    fn two_messages_in_one_read_come_out_in_order() {
        let (mut transport, mut peer) = pair();
        let mut both = message(1, b"first");
        both.extend(message(2, b"second!"));
        peer.write_all(&both).unwrap();
        let (header, _) = transport.recv().unwrap();
        assert_eq!((header.id, transport.body()), (1, &b"first"[..]));
        let (header, _) = transport.recv().unwrap();
        assert_eq!((header.id, transport.body()), (2, &b"second!"[..]));
    }

    #[test]
    fn message_split_across_writes_is_reassembled() {
        let (mut transport, mut peer) = pair();
        let bytes = message(7, &[0xab; 100]);
        let writer = std::thread::spawn(move || {
            for chunk in bytes.chunks(9) {
                peer.write_all(chunk).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            peer
        });
        let (header, _) = transport.recv().unwrap();
        assert_eq!(header.id, 7);
        assert_eq!(transport.body(), &[0xab; 100][..]);
        drop(writer.join());
    }

    #[test]
    fn descriptors_stay_with_the_message_they_were_sent_with() {
        let (mut transport, peer) = pair();
        let mut sender = Transport::new(peer, Duration::from_secs(2)).unwrap();
        let file = tempfile::tempfile().unwrap();
        sender.send(&[&message(1, b"plain")], &[]).unwrap();
        sender
            .send(&[&message(2, b"with fd")], &[file.as_fd()])
            .unwrap();
        sender.send(&[&message(3, b"plain again")], &[]).unwrap();
        let received: Vec<(u16, usize)> = (0..3)
            .map(|_| {
                let (header, fds) = transport.recv().unwrap();
                (header.id, fds.len())
            })
            .collect();
        assert_eq!(received, [(1, 0), (2, 1), (3, 0)]);
    }

    #[test]
    fn size_smaller_than_a_header_cannot_be_framed() {
        let (mut transport, mut peer) = pair();
        let mut bytes = message(1, b"");
        bytes[4..8].copy_from_slice(&8u32.to_ne_bytes());
        peer.write_all(&bytes).unwrap();
        assert!(matches!(
            transport.recv(),
            Err(TransportError::BadSize { size: 8 })
        ));
    }

    #[test]
    fn end_of_stream_is_closed_and_silence_is_a_timeout() {
        let (mut transport, peer) = pair();
        transport.set_timeout(Duration::from_millis(50)).unwrap();
        assert!(matches!(transport.recv(), Err(TransportError::Timeout)));
        drop(peer);
        assert!(matches!(transport.recv(), Err(TransportError::Closed)));
    }
}
