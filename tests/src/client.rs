//! `RawClient`: an independent vfio-user client for driving a vGPU socket.
//!
//! It checks every reply (message id, command, reply type, error bit) and
//! turns error replies into [`ClientError::Refused`] with the errno, serves
//! the server's `DMA_READ`/`DMA_WRITE` requests from a local buffer while it
//! waits for a reply, and gives every receive a timeout. The typed commands
//! are in `commands`; `send_raw`/`recv_raw` let tests send malformed bytes.

mod commands;
#[cfg(test)]
mod tests;
mod transport;

use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use zerocopy::{FromBytes, IntoBytes};

pub use commands::{DmaMapRequest, Region};
use transport::Transport;
pub use transport::{MAX_BODY, MAX_RECV_FDS, TransportError};

use crate::wire::{self, DmaAccess, HEADER_SIZE, Header, command, flags};

/// Receive timeout of a new client: long enough for a loaded 2-core
/// machine, short enough that a silent server fails a test quickly.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// errno the client answers a server request with when it cannot serve it.
const EFAULT: u32 = libc::EFAULT as u32;

/// A failed client operation.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting to the socket failed.
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    /// Moving bytes failed, timed out, or the server closed the connection.
    #[error("transport")]
    Transport(#[from] TransportError),
    /// The server answered with an error reply carrying this errno.
    #[error("the server refused the request with errno {errno}")]
    Refused {
        /// The error field of the reply (0 if the server set none).
        errno: u32,
    },
    /// The reply does not match the request or the protocol.
    #[error("bad reply: {0}")]
    BadReply(String),
}

impl ClientError {
    /// The errno of an error reply, if this is one.
    pub fn errno(&self) -> Option<u32> {
        match self {
            ClientError::Refused { errno } => Some(*errno),
            _ => None,
        }
    }

    /// Whether the server closed (or reset) the connection.
    pub fn is_closed(&self) -> bool {
        matches!(self, ClientError::Transport(TransportError::Closed))
    }

    /// Whether nothing arrived before the receive timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Transport(TransportError::Timeout))
    }
}

/// What the server said in its `VERSION` reply.
#[derive(Clone, Debug)]
pub struct ServerVersion {
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
    /// The parsed JSON version data (`Null` if there was none).
    pub data: serde_json::Value,
}

impl ServerVersion {
    /// A number in the `capabilities` object.
    pub fn capability(&self, name: &str) -> Option<u64> {
        self.data.get("capabilities")?.get(name)?.as_u64()
    }
}

/// One message as received, for tests that look at raw replies.
#[derive(Debug)]
pub struct RawMessage {
    /// The header.
    pub header: Header,
    /// Everything after the header.
    pub body: Vec<u8>,
    /// Descriptors that came with it.
    pub fds: Vec<OwnedFd>,
}

/// Guest memory that the client exports without a file descriptor: the
/// server reaches it with `DMA_READ`/`DMA_WRITE` requests.
#[derive(Debug)]
struct RemoteMemory {
    iova: u64,
    bytes: Vec<u8>,
}

impl RemoteMemory {
    fn range(&self, address: u64, count: u64) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(address.checked_sub(self.iova)?).ok()?;
        let end = start.checked_add(usize::try_from(count).ok()?)?;
        (end <= self.bytes.len()).then_some(start..end)
    }
}

/// Counters of the server requests the client answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServedRequests {
    /// `DMA_READ` requests answered with data.
    pub dma_reads: u64,
    /// `DMA_WRITE` requests applied to the buffer.
    pub dma_writes: u64,
    /// Requests answered with an error (outside the buffer, malformed).
    pub refused: u64,
}

/// A vfio-user client connection.
#[derive(Debug)]
pub struct RawClient {
    transport: Transport,
    next_id: u16,
    remote: Option<RemoteMemory>,
    served: ServedRequests,
    version: Option<ServerVersion>,
}

impl RawClient {
    /// Connects and completes the `VERSION` handshake.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let mut client = Self::connect_without_handshake(path)?;
        client.handshake()?;
        Ok(client)
    }

    /// Connects without sending anything (for handshake tests).
    pub fn connect_without_handshake(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(ClientError::Connect)?;
        Self::from_stream(stream)
    }

    /// Wraps a connected stream; no handshake is sent.
    pub fn from_stream(stream: UnixStream) -> Result<Self, ClientError> {
        Ok(RawClient {
            transport: Transport::new(stream, DEFAULT_TIMEOUT)?,
            next_id: 0,
            remote: None,
            served: ServedRequests::default(),
            version: None,
        })
    }

    /// Serves the server's `DMA_READ`/`DMA_WRITE` requests for
    /// `iova..iova + bytes.len()` from `bytes`.
    pub fn with_remote_memory(mut self, iova: u64, bytes: Vec<u8>) -> Self {
        self.remote = Some(RemoteMemory { iova, bytes });
        self
    }

    /// The buffer served to the server, as it is now.
    pub fn remote_memory(&self) -> Option<&[u8]> {
        self.remote.as_ref().map(|remote| remote.bytes.as_slice())
    }

    /// Mutable access to the served buffer.
    pub fn remote_memory_mut(&mut self) -> Option<&mut [u8]> {
        self.remote
            .as_mut()
            .map(|remote| remote.bytes.as_mut_slice())
    }

    /// The server requests answered so far.
    pub fn served(&self) -> ServedRequests {
        self.served
    }

    /// The server's `VERSION` reply, once the handshake is done.
    pub fn version(&self) -> Option<&ServerVersion> {
        self.version.as_ref()
    }

    /// Changes the receive (and send) timeout.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        Ok(self.transport.set_timeout(timeout)?)
    }

    /// The socket, e.g. to poll it.
    pub fn stream(&self) -> &UnixStream {
        self.transport.stream()
    }

    /// Shuts the connection down (the server sees a disconnect).
    pub fn shutdown(&self) {
        self.transport.shutdown();
    }

    /// Sends `VERSION` 0.0 with the capabilities QEMU proposes.
    pub fn handshake(&mut self) -> Result<&ServerVersion, ClientError> {
        let json = serde_json::json!({
            "capabilities": {
                "max_msg_fds": 16,
                "max_data_xfer_size": 1048576,
                "pgsizes": 4096,
                "max_dma_maps": 65535,
            }
        })
        .to_string();
        let mut payload = wire::Version { major: 0, minor: 0 }.as_bytes().to_vec();
        payload.extend_from_slice(json.as_bytes());
        payload.push(0);
        self.request(command::VERSION, 0, &[&payload], &[])?;
        let body = self.transport.body();
        let (version, data) = wire::Version::read_from_prefix(body)
            .map_err(|_| ClientError::BadReply(format!("VERSION reply of {} bytes", body.len())))?;
        let data = match data.split_last() {
            None => serde_json::Value::Null,
            Some((0, json)) => serde_json::from_slice(json)
                .map_err(|error| ClientError::BadReply(format!("VERSION JSON: {error}")))?,
            Some(_) => {
                return Err(ClientError::BadReply(
                    "VERSION data is not NUL-terminated".into(),
                ));
            }
        };
        Ok(self.version.insert(ServerVersion {
            major: version.major,
            minor: version.minor,
            data,
        }))
    }

    /// The id the next request will carry.
    pub fn next_id(&self) -> u16 {
        self.next_id
    }

    fn take_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Sends a command built from `parts` and waits for its reply, serving
    /// server requests meanwhile. The reply body is then in [`Self::body`].
    pub fn request(
        &mut self,
        command: u16,
        extra_flags: u32,
        parts: &[&[u8]],
        fds: &[BorrowedFd<'_>],
    ) -> Result<Vec<OwnedFd>, ClientError> {
        let id = self.send_command(command, extra_flags, parts, fds)?;
        self.wait_reply(id, command)
    }

    /// Sends a command without waiting; returns its message id.
    pub fn send_command(
        &mut self,
        command: u16,
        extra_flags: u32,
        parts: &[&[u8]],
        fds: &[BorrowedFd<'_>],
    ) -> Result<u16, ClientError> {
        let size: usize = HEADER_SIZE + parts.iter().map(|part| part.len()).sum::<usize>();
        let id = self.take_id();
        let header = Header {
            id,
            command,
            size: u32::try_from(size)
                .map_err(|_| ClientError::BadReply("message over 4 GiB".into()))?,
            flags: flags::TYPE_COMMAND | extra_flags,
            error: 0,
        };
        let mut all = [&[][..]; transport::MAX_PARTS];
        all[0] = header.as_bytes();
        let count = parts.len() + 1;
        if count > all.len() {
            return Err(ClientError::BadReply("too many parts".into()));
        }
        all[1..count].copy_from_slice(parts);
        self.transport.send(&all[..count], fds)?;
        Ok(id)
    }

    /// The body of the last reply.
    pub fn body(&self) -> &[u8] {
        self.transport.body()
    }

    /// Receives messages until the reply to `id`, answering server requests.
    pub fn wait_reply(&mut self, id: u16, command: u16) -> Result<Vec<OwnedFd>, ClientError> {
        loop {
            let (header, fds) = self.transport.recv()?;
            if header.kind() == flags::TYPE_COMMAND {
                self.serve(&header)?;
                continue;
            }
            if header.kind() != flags::TYPE_REPLY {
                return Err(ClientError::BadReply(format!(
                    "message type {} is neither command nor reply",
                    header.kind()
                )));
            }
            if header.id != id || header.command != command {
                return Err(ClientError::BadReply(format!(
                    "reply id {} command {} to request id {id} command {command}",
                    header.id, header.command
                )));
            }
            if header.flags & flags::ERROR != 0 {
                return Err(ClientError::Refused {
                    errno: header.error,
                });
            }
            return Ok(fds);
        }
    }

    /// Answers one server request (`DMA_READ`/`DMA_WRITE`) from the buffer.
    fn serve(&mut self, request: &Header) -> Result<(), ClientError> {
        let body = self.transport.body();
        let access = DmaAccess::read_from_prefix(body)
            .ok()
            .map(|(access, _)| access);
        let range = access.and_then(|access| {
            let remote = self.remote.as_ref()?;
            remote.range(access.address, access.count)
        });
        let reply_to = |flags_extra: u32, error: u32, size: usize| Header {
            id: request.id,
            command: request.command,
            size: (HEADER_SIZE + size) as u32,
            flags: flags::TYPE_REPLY | flags_extra,
            error,
        };
        match (request.command, access, range) {
            (command::DMA_READ, Some(access), Some(range)) => {
                let remote = self.remote.as_ref().map(|r| &r.bytes[range]).unwrap_or(&[]);
                let header = reply_to(0, 0, size_of::<DmaAccess>() + remote.len());
                self.transport
                    .send(&[header.as_bytes(), access.as_bytes(), remote], &[])?;
                self.served.dma_reads += 1;
            }
            (command::DMA_WRITE, Some(access), Some(range))
                if body.len() == size_of::<DmaAccess>() + range.len() =>
            {
                let data = &body[size_of::<DmaAccess>()..];
                if let Some(remote) = self.remote.as_mut() {
                    remote.bytes[range].copy_from_slice(data);
                }
                let header = reply_to(0, 0, size_of::<DmaAccess>());
                self.transport
                    .send(&[header.as_bytes(), access.as_bytes()], &[])?;
                self.served.dma_writes += 1;
            }
            _ => {
                let header = reply_to(flags::ERROR, EFAULT, 0);
                self.transport.send(&[header.as_bytes()], &[])?;
                self.served.refused += 1;
            }
        }
        Ok(())
    }

    /// Sends bytes exactly as given, with `fds`.
    pub fn send_raw(&mut self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), ClientError> {
        Ok(self.transport.send(&[bytes], fds)?)
    }

    /// Receives the next message, whatever it is.
    pub fn recv_raw(&mut self) -> Result<RawMessage, ClientError> {
        let (header, fds) = self.transport.recv()?;
        Ok(RawMessage {
            header,
            body: self.transport.body().to_vec(),
            fds,
        })
    }
}
