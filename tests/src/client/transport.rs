//! Framing of vfio-user messages on a Unix stream socket, with file
//! descriptors passed as `SCM_RIGHTS` and a receive timeout on every read,
//! so that no test can hang on a server that stays silent.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
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

/// The socket plus a reusable receive buffer, so that the request/reply
/// path allocates nothing once the buffer has grown.
#[derive(Debug)]
pub struct Transport {
    stream: UnixStream,
    body: Vec<u8>,
    body_len: usize,
}

impl Transport {
    /// Wraps a connected stream and sets both timeouts to `timeout`.
    pub fn new(stream: UnixStream, timeout: Duration) -> Result<Self, TransportError> {
        let mut transport = Transport {
            stream,
            body: vec![0; 4096],
            body_len: 0,
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
    pub fn recv(&mut self) -> Result<(Header, Vec<OwnedFd>), TransportError> {
        let mut fds = Vec::new();
        let mut header = [0u8; HEADER_SIZE];
        self.recv_exact_header(&mut header, &mut fds)?;
        let header = Header::read_from_bytes(&header).map_err(|_| TransportError::Closed)?;
        let size = header.size as usize;
        if size < HEADER_SIZE || size - HEADER_SIZE > MAX_BODY {
            return Err(TransportError::BadSize { size: header.size });
        }
        let body_len = size - HEADER_SIZE;
        if self.body.len() < body_len {
            self.body.resize(body_len, 0);
        }
        let mut filled = 0;
        while filled < body_len {
            let mut body = std::mem::take(&mut self.body);
            let result = self.recv_some(&mut body[filled..body_len], &mut fds);
            self.body = body;
            filled += result?;
        }
        self.body_len = body_len;
        Ok((header, fds))
    }

    fn recv_exact_header(
        &self,
        buf: &mut [u8; HEADER_SIZE],
        fds: &mut Vec<OwnedFd>,
    ) -> Result<(), TransportError> {
        let mut filled = 0;
        while filled < HEADER_SIZE {
            filled += self.recv_some(&mut buf[filled..], fds)?;
        }
        Ok(())
    }

    /// One `recvmsg`: at least one byte, or an error (EOF is `Closed`).
    fn recv_some(&self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<usize, TransportError> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_RECV_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(buf)];
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
        Ok(received.bytes)
    }

    /// The body of the last message received.
    pub fn body(&self) -> &[u8] {
        &self.body[..self.body_len]
    }

    /// Shuts the socket down in both directions.
    pub fn shutdown(&self) {
        // Already shut down or reset: nothing left to do.
        let _ = rustix::net::shutdown(self.stream.as_fd(), rustix::net::Shutdown::Both);
    }
}
