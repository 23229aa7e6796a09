//! Framing over a Unix stream socket: [`MessageReader`] cuts the byte stream
//! into messages and hands each the file descriptors that came with it;
//! [`send_message`] writes one message, with its descriptors, whole.
//!
//! # Which message do received descriptors belong to?
//!
//! SCM_RIGHTS descriptors travel with the socket buffer that carried them.
//! Linux's stream receive path (`unix_stream_read_generic`) stops a
//! `recvmsg` right after the first buffer that carried descriptors, and a
//! sender writes each message with one `sendmsg` whose descriptors ride on
//! its first bytes. So the descriptors a `recvmsg` returns came with the
//! last buffer it read from, which began a message that has at least one
//! byte in this read: they belong to the message holding the read's last
//! byte. The reader records, per batch, that message's start (a stream
//! offset) and hands the batch out with that message.
//!
//! # Buffering
//!
//! One buffer, allocated up front, holds the largest message allowed; each
//! wake-up does one `recvmsg` into its free end and then yields every
//! complete message in it without another system call. A message larger
//! than the limit is reported as [`FrameError::Oversized`] and its bytes are
//! dropped as they arrive, without being buffered; the next message is then
//! served as usual.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use zerocopy::FromBytes;

use crate::error::errno;
use crate::fdlist::{FdList, MAX_MSG_FDS};
use crate::header::Header;
use crate::wire::{HEADER_SIZE, RawHeader};

/// Room beyond header, fixed part and data, for messages whose variable part
/// is not data (the version JSON, SET_IRQS bools).
const SLACK: usize = 4096;
/// Fixed part of the largest data-carrying message (REGION_WRITE, DMA_READ reply).
const ACCESS_SIZE: usize = 16;
/// Descriptors one `recvmsg` can take in; more are discarded by the kernel
/// (MSG_CTRUNC), which fails the message anyway.
const RECV_FDS: usize = 2 * MAX_MSG_FDS;
const RECV_CMSG_SPACE: usize = rustix::cmsg_space!(ScmRights(RECV_FDS));
const SEND_CMSG_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_MSG_FDS));
/// Most slices [`send_message_vectored`] takes.
pub const MAX_SEND_PARTS: usize = 8;

/// One framed message. `payload` borrows the reader's buffer until the next call.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The message header.
    pub header: Header,
    /// The `msg_size - 16` bytes after the header.
    pub payload: &'a [u8],
    /// The file descriptors that came with the message.
    pub fds: FdList,
}

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A message larger than the limit. Its bytes are being skipped; answer
    /// it with [`FrameError::errno`] and keep reading.
    #[error("{}-byte message exceeds the {max}-byte limit", header.msg_size)]
    Oversized {
        /// The message's header.
        header: Header,
        /// The limit.
        max: usize,
    },
    /// A message that came with more than [`MAX_MSG_FDS`] descriptors (or
    /// with descriptors the kernel had to drop). They are closed and the
    /// message skipped; answer it and keep reading.
    #[error("message came with too many file descriptors")]
    TooManyFds {
        /// The message's header.
        header: Header,
    },
    /// `msg_size` below 16: the stream cannot be framed any further. Answer
    /// and close the connection.
    #[error("message size {} is smaller than the header", header.msg_size)]
    BadMessageSize {
        /// The message's header.
        header: Header,
    },
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed in the middle of a message")]
    UnexpectedEof,
    /// The socket failed.
    #[error("socket receive failed")]
    Io(#[source] io::Error),
    /// An earlier fatal error left the stream unframeable.
    #[error("stream already failed")]
    Broken,
}

impl FrameError {
    /// Whether the connection must be closed. `Io` with `WouldBlock` (a
    /// non-blocking socket with nothing to read) is not fatal.
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::Oversized { .. } | Self::TooManyFds { .. } => false,
            Self::Io(e) => e.kind() != io::ErrorKind::WouldBlock,
            Self::BadMessageSize { .. } | Self::UnexpectedEof | Self::Broken => true,
        }
    }

    /// The header of the message to answer, if there is one.
    pub fn header(&self) -> Option<&Header> {
        match self {
            Self::Oversized { header, .. }
            | Self::TooManyFds { header }
            | Self::BadMessageSize { header } => Some(header),
            Self::UnexpectedEof | Self::Io(_) | Self::Broken => None,
        }
    }

    /// The errno for the answer.
    pub fn errno(&self) -> i32 {
        match self {
            Self::Oversized { .. } => errno::E2BIG,
            Self::TooManyFds { .. } | Self::BadMessageSize { .. } => errno::EINVAL,
            Self::UnexpectedEof | Self::Broken => errno::EPROTO,
            Self::Io(e) => e.raw_os_error().unwrap_or(errno::EPROTO),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Eof,
    Broken,
}

/// Descriptors waiting for the message that starts at stream offset `msg_start`.
#[derive(Debug)]
struct PendingFds {
    msg_start: u64,
    fds: FdList,
    overflow: bool,
}

/// Reads messages from a Unix stream socket (blocking or not), see the module docs.
///
/// To stop a reader blocked in [`MessageReader::next_frame`] from another
/// thread, shut the socket down (`shutdown(Both)` on a clone): the pending
/// `recvmsg` returns end-of-file.
#[derive(Debug)]
pub struct MessageReader {
    buf: Box<[u8]>,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// Start of the first message not yet handed out.
    head: usize,
    /// End of the received bytes.
    tail: usize,
    /// Stream offset where the message being skipped ends.
    discard_end: u64,
    max_message: usize,
    /// At most two: the message at `head` and the one a new read ends in.
    pending: [Option<PendingFds>; 2],
    cmsg: [MaybeUninit<u8>; RECV_CMSG_SPACE],
    state: State,
    reads: u64,
}

/// What the buffer holds next.
enum Buffered {
    Frame {
        header: Header,
        start: usize,
        end: usize,
        fds: FdList,
    },
    NeedMore,
}

impl MessageReader {
    /// A reader for messages carrying up to `max_data_xfer_size` bytes of data.
    pub fn new(max_data_xfer_size: u32) -> Self {
        let max_message = HEADER_SIZE + ACCESS_SIZE + max_data_xfer_size as usize + SLACK;
        Self {
            buf: vec![0; max_message].into_boxed_slice(),
            base: 0,
            head: 0,
            tail: 0,
            discard_end: 0,
            max_message,
            pending: [None, None],
            cmsg: [MaybeUninit::uninit(); RECV_CMSG_SPACE],
            state: State::Open,
            reads: 0,
        }
    }

    /// Largest message accepted, header included.
    pub fn max_message_size(&self) -> usize {
        self.max_message
    }

    /// Number of `recvmsg` calls made so far.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// The next message, `Ok(None)` at end of stream.
    pub fn next_frame(&mut self, socket: impl AsFd) -> Result<Option<Frame<'_>>, FrameError> {
        loop {
            match self.state {
                State::Open => {}
                State::Eof => return Ok(None),
                State::Broken => return Err(FrameError::Broken),
            }
            if let Buffered::Frame {
                header,
                start,
                end,
                fds,
            } = self.next_buffered()?
            {
                let payload = self.buf.get(start..end).unwrap_or_default();
                return Ok(Some(Frame {
                    header,
                    payload,
                    fds,
                }));
            }
            if !self.fill(socket.as_fd())? {
                return Ok(None);
            }
        }
    }

    fn stream_pos(&self, index: usize) -> u64 {
        self.base + index as u64
    }

    fn next_buffered(&mut self) -> Result<Buffered, FrameError> {
        if self.discard_end > self.stream_pos(self.head) {
            return Ok(Buffered::NeedMore);
        }
        let avail = self.buf.get(self.head..self.tail).unwrap_or_default();
        let Ok((raw, _)) = RawHeader::read_from_prefix(avail) else {
            return Ok(Buffered::NeedMore);
        };
        let available = avail.len();
        let header = Header::from_raw(&raw);
        let size = header.msg_size as usize;
        let msg_start = self.stream_pos(self.head);
        if size < HEADER_SIZE {
            self.state = State::Broken;
            return Err(FrameError::BadMessageSize { header });
        }
        if size > self.max_message {
            drop(self.take_fds(msg_start));
            // The buffer never holds more than `max_message` bytes, so all
            // of them belong to this message.
            self.discard_end = msg_start + u64::from(header.msg_size);
            self.head = self.tail;
            return Err(FrameError::Oversized {
                header,
                max: self.max_message,
            });
        }
        if available < size {
            return Ok(Buffered::NeedMore);
        }
        let start = self.head;
        self.head += size;
        let fds = match self.take_fds(msg_start) {
            None => FdList::new(),
            Some(pending) if pending.overflow => return Err(FrameError::TooManyFds { header }),
            Some(pending) => pending.fds,
        };
        Ok(Buffered::Frame {
            header,
            start: start + HEADER_SIZE,
            end: start + size,
            fds,
        })
    }

    fn take_fds(&mut self, msg_start: u64) -> Option<PendingFds> {
        self.pending
            .iter_mut()
            .find(|slot| slot.as_ref().is_some_and(|p| p.msg_start == msg_start))
            .and_then(Option::take)
    }

    /// One `recvmsg`; false at a clean end of stream.
    fn fill(&mut self, socket: BorrowedFd<'_>) -> Result<bool, FrameError> {
        if self.head > 0 {
            // Move the partial message to the front so that it has room to
            // complete: the buffer holds a whole message of the maximum size.
            self.buf.copy_within(self.head..self.tail, 0);
            self.base += self.head as u64;
            self.tail -= self.head;
            self.head = 0;
        }
        let mut batch = FdList::new();
        let (received, overflow) = loop {
            let free = self.buf.get_mut(self.tail..).unwrap_or_default();
            let mut iov = [IoSliceMut::new(free)];
            let mut control = RecvAncillaryBuffer::new(&mut self.cmsg);
            self.reads += 1;
            match recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
                Ok(msg) => {
                    let mut overflow = msg.flags.contains(ReturnFlags::CTRUNC);
                    for message in control.drain() {
                        if let RecvAncillaryMessage::ScmRights(fds) = message {
                            for fd in fds {
                                // A full list hands the fd back; dropping it closes it.
                                overflow |= batch.push(fd).is_err();
                            }
                        }
                    }
                    break (msg.bytes, overflow);
                }
                Err(Errno::INTR) => continue,
                Err(e) => {
                    let error = io::Error::from(e);
                    if error.kind() != io::ErrorKind::WouldBlock {
                        self.state = State::Broken;
                    }
                    return Err(FrameError::Io(error));
                }
            }
        };
        if received == 0 {
            let mid_message =
                self.tail > self.head || self.discard_end > self.stream_pos(self.head);
            self.pending = [None, None];
            if mid_message {
                self.state = State::Broken;
                return Err(FrameError::UnexpectedEof);
            }
            self.state = State::Eof;
            return Ok(false);
        }
        self.tail += received;
        let last_byte = self.stream_pos(self.tail) - 1;
        self.skip_discarded();
        if !batch.is_empty() || overflow {
            self.attribute(last_byte, batch, overflow);
        }
        Ok(true)
    }

    /// Drops received bytes that belong to an oversized message.
    fn skip_discarded(&mut self) {
        let head_pos = self.stream_pos(self.head);
        if self.discard_end <= head_pos {
            return;
        }
        let buffered = (self.tail - self.head) as u64;
        let skip = (self.discard_end - head_pos).min(buffered) as usize;
        self.head += skip;
        if self.head == self.tail {
            self.base += self.head as u64;
            self.head = 0;
            self.tail = 0;
        }
    }

    /// Gives a read's descriptors to the message holding the read's last byte.
    fn attribute(&mut self, last_byte: u64, batch: FdList, overflow: bool) {
        if last_byte < self.discard_end {
            return; // They came with the oversized message: dropping closes them.
        }
        let msg_start = self.message_containing(last_byte);
        if let Some(pending) = self
            .pending
            .iter_mut()
            .flatten()
            .find(|p| p.msg_start == msg_start)
        {
            pending.overflow |= overflow;
            for fd in batch {
                pending.overflow |= pending.fds.push(fd).is_err();
            }
            return;
        }
        // Two slots suffice: when a read starts, every message before the
        // one at `head` has been handed out with its descriptors, so only
        // that message and the one this read ends in can have any. If that
        // ever failed to hold, the descriptors are closed, never misattributed.
        if let Some(slot) = self.pending.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some(PendingFds {
                msg_start,
                fds: batch,
                overflow,
            });
        }
    }

    /// Stream offset of the start of the message that holds `pos` (a received byte).
    fn message_containing(&self, pos: u64) -> u64 {
        let mut index = self.head;
        loop {
            let start = self.stream_pos(index);
            let rest = self.buf.get(index..self.tail).unwrap_or_default();
            let Ok((raw, _)) = RawHeader::read_from_prefix(rest) else {
                return start;
            };
            let size = u64::from(raw.msg_size.get());
            // A size below the header breaks the stream when it is reached.
            if size < HEADER_SIZE as u64 || start + size > pos {
                return start;
            }
            index += size as usize;
        }
    }
}

/// Sends one message with one `sendmsg` (more only if the socket takes it
/// in parts), with `fds` attached to its first bytes as the receiver's
/// attribution rule needs. Retries on EINTR, waits for room on a
/// non-blocking socket, and never raises SIGPIPE.
pub fn send_message(socket: impl AsFd, message: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    send_message_vectored(socket, &[message], fds)
}

/// [`send_message`] for a message in up to [`MAX_SEND_PARTS`] parts (e.g. a
/// header and a data slice that is not copied).
pub fn send_message_vectored(
    socket: impl AsFd,
    parts: &[&[u8]],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let socket = socket.as_fd();
    if fds.len() > MAX_MSG_FDS || parts.len() > MAX_SEND_PARTS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many fds or parts",
        ));
    }
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if total == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty message"));
    }
    let mut slices = [IoSlice::new(&[]); MAX_SEND_PARTS];
    for (slot, part) in slices.iter_mut().zip(parts) {
        *slot = IoSlice::new(part);
    }
    let mut iov: &mut [IoSlice<'_>] = slices.get_mut(..parts.len()).unwrap_or_default();
    let mut fds_sent = fds.is_empty();
    let mut sent = 0;
    while sent < total {
        let mut space = [MaybeUninit::<u8>::uninit(); SEND_CMSG_SPACE];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds_sent && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "fds do not fit",
            ));
        }
        match sendmsg(socket, iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                fds_sent = true;
                sent += n;
                IoSlice::advance_slices(&mut iov, n);
            }
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => wait_writable(socket)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn wait_writable(socket: BorrowedFd<'_>) -> io::Result<()> {
    let mut fds = [PollFd::from_borrowed_fd(socket, PollFlags::OUT)];
    match poll(&mut fds, None) {
        Ok(_) | Err(Errno::INTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
