//! Version negotiation: the client's capability JSON, the server's limits,
//! and the session parameters both sides then use.
//!
//! The rules (spec, "VFIO_USER_VERSION"): the reply keeps the proposed
//! major, a minor no larger than the proposed one, and a subset of the
//! proposed capabilities. vgpud answers only the capabilities it implements
//! (`max_msg_fds`, `max_data_xfer_size`, `pgsizes`, `max_dma_maps`), and only
//! those the client proposed; `migration`, `write_multiple` and
//! `twin_socket` are left out, which tells the client they are not
//! supported.

use std::io::Write as _;

use serde_json::{Map, Value};

use crate::error::ProtocolError;

/// The protocol major version vgpud speaks.
pub const MAJOR: u16 = 0;
/// The highest protocol minor version vgpud speaks.
pub const MINOR: u16 = 0;

/// Spec default for `max_msg_fds` when a peer does not say.
pub const DEFAULT_MAX_MSG_FDS: u64 = 1;
/// Spec default for `max_data_xfer_size` (1 MiB).
pub const DEFAULT_MAX_DATA_XFER_SIZE: u64 = 1 << 20;
/// Spec default for `pgsizes` (4 KiB pages only).
pub const DEFAULT_PGSIZES: u64 = 4096;
/// Spec default for `max_dma_maps`.
pub const DEFAULT_MAX_DMA_MAPS: u64 = 65535;

/// What the client proposed in its `VFIO_USER_VERSION` capabilities; `None`
/// where it said nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCapabilities {
    /// File descriptors the client can receive in one message.
    pub max_msg_fds: Option<u64>,
    /// Largest data transfer the client accepts in one message, in bytes.
    pub max_data_xfer_size: Option<u64>,
    /// DMA page sizes the client supports, or'ed together.
    pub pgsizes: Option<u64>,
    /// DMA mappings the client may keep at once.
    pub max_dma_maps: Option<u64>,
    /// Whether the client proposed migration.
    pub migration: bool,
    /// Whether the client can send `REGION_WRITE_MULTI`.
    pub write_multiple: Option<bool>,
    /// Whether the client supports twin-socket mode.
    pub twin_socket: Option<bool>,
}

impl ClientCapabilities {
    /// Parses the NUL-terminated JSON that follows the version numbers (an
    /// empty string means "no capabilities"). Unknown keys are ignored; known
    /// keys of the wrong type are rejected.
    pub fn parse(data: &[u8]) -> Result<Self, ProtocolError> {
        if data.is_empty() {
            return Ok(Self::default());
        }
        let Some(nul) = data.iter().position(|&b| b == 0) else {
            return Err(invalid("capability string is not NUL-terminated"));
        };
        if nul + 1 != data.len() {
            return Err(invalid("bytes after the capability string's NUL"));
        }
        let text = data.get(..nul).unwrap_or_default();
        let text = std::str::from_utf8(text).map_err(|_| invalid("capabilities are not UTF-8"))?;
        let value: Value =
            serde_json::from_str(text).map_err(|e| ProtocolError::InvalidCapabilities {
                reason: "capabilities are not JSON",
                source: Some(e),
            })?;
        let Value::Object(top) = value else {
            return Err(invalid("capabilities are not a JSON object"));
        };
        let Some(caps) = top.get("capabilities") else {
            return Ok(Self::default());
        };
        let Value::Object(caps) = caps else {
            return Err(invalid("\"capabilities\" is not an object"));
        };
        Ok(Self {
            max_msg_fds: number(caps, "max_msg_fds")?,
            max_data_xfer_size: number(caps, "max_data_xfer_size")?,
            pgsizes: number(caps, "pgsizes")?,
            max_dma_maps: number(caps, "max_dma_maps")?,
            migration: match caps.get("migration") {
                None => false,
                Some(Value::Object(_)) => true,
                Some(_) => return Err(invalid("\"migration\" is not an object")),
            },
            write_multiple: boolean(caps, "write_multiple")?,
            twin_socket: match caps.get("twin_socket") {
                None => None,
                Some(Value::Object(twin)) => Some(boolean(twin, "supported")?.unwrap_or(false)),
                Some(_) => return Err(invalid("\"twin_socket\" is not an object")),
            },
        })
    }
}

fn invalid(reason: &'static str) -> ProtocolError {
    ProtocolError::InvalidCapabilities {
        reason,
        source: None,
    }
}

fn number(map: &Map<String, Value>, key: &'static str) -> Result<Option<u64>, ProtocolError> {
    match map.get(key) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid("a numeric capability is not an unsigned integer")),
    }
}

fn boolean(map: &Map<String, Value>, key: &'static str) -> Result<Option<bool>, ProtocolError> {
    match map.get(key) {
        None => Ok(None),
        Some(value) => value
            .as_bool()
            .map(Some)
            .ok_or_else(|| invalid("a boolean capability is not a boolean")),
    }
}

/// The server's limits, offered in the version reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerCapabilities {
    /// File descriptors the server accepts in one message (QEMU refuses more than 16).
    pub max_msg_fds: u32,
    /// Largest data transfer the server accepts in one message, in bytes
    /// (QEMU refuses more than 64 MiB).
    pub max_data_xfer_size: u32,
    /// DMA page sizes the server supports, or'ed together.
    pub pgsizes: u64,
    /// DMA mappings the server keeps at once (QEMU refuses more than 65535).
    pub max_dma_maps: u32,
}

impl Default for ServerCapabilities {
    fn default() -> Self {
        Self {
            max_msg_fds: 16,
            max_data_xfer_size: 1 << 20,
            pgsizes: DEFAULT_PGSIZES,
            max_dma_maps: DEFAULT_MAX_DMA_MAPS as u32,
        }
    }
}

/// The outcome of a version exchange: what the reply says and what both
/// sides hold to for the rest of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Major version of the reply (always [`MAJOR`]).
    pub major: u16,
    /// Minor version of the reply: the smaller of the client's and ours.
    pub minor: u16,
    /// File descriptors the server may accept in one message (told to the client).
    pub server_max_msg_fds: u32,
    /// File descriptors the server may send in one message (the client's limit).
    pub client_max_msg_fds: u32,
    /// Largest data transfer in either direction: the smaller of the two
    /// proposals, because QEMU applies the reply's value to the server's
    /// DMA requests as well as to its own region accesses.
    pub max_data_xfer_size: u32,
    /// DMA page sizes both support.
    pub pgsizes: u64,
    /// DMA mappings the client may create.
    pub max_dma_maps: u32,
    /// Which capabilities the client proposed, and so may be answered.
    proposed: Proposed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proposed {
    max_msg_fds: bool,
    max_data_xfer_size: bool,
    pgsizes: bool,
    max_dma_maps: bool,
}

/// Negotiates a session from the client's proposal and the server's limits.
pub fn negotiate(
    major: u16,
    minor: u16,
    client: &ClientCapabilities,
    ours: &ServerCapabilities,
) -> Result<Negotiated, ProtocolError> {
    if major != MAJOR {
        return Err(ProtocolError::UnsupportedVersion { major, minor });
    }
    let client_xfer = client
        .max_data_xfer_size
        .unwrap_or(DEFAULT_MAX_DATA_XFER_SIZE);
    if client_xfer == 0 {
        return Err(invalid("max_data_xfer_size is 0"));
    }
    let pgsizes = client.pgsizes.unwrap_or(DEFAULT_PGSIZES) & ours.pgsizes;
    if pgsizes == 0 {
        return Err(ProtocolError::IncompatibleCapabilities(
            "no common DMA page size",
        ));
    }
    let client_maps = client.max_dma_maps.unwrap_or(DEFAULT_MAX_DMA_MAPS);
    let client_fds = client.max_msg_fds.unwrap_or(DEFAULT_MAX_MSG_FDS);
    Ok(Negotiated {
        major: MAJOR,
        // The rule is min(client, ours); with ours at 0 that is always 0, but
        // spelling it out keeps it right when MINOR grows.
        #[allow(clippy::unnecessary_min_or_max)]
        minor: minor.min(MINOR),
        server_max_msg_fds: ours.max_msg_fds,
        client_max_msg_fds: u32::try_from(client_fds).unwrap_or(u32::MAX),
        max_data_xfer_size: u32::try_from(client_xfer.min(u64::from(ours.max_data_xfer_size)))
            .unwrap_or(ours.max_data_xfer_size),
        pgsizes,
        max_dma_maps: u32::try_from(client_maps.min(u64::from(ours.max_dma_maps)))
            .unwrap_or(ours.max_dma_maps),
        proposed: Proposed {
            max_msg_fds: client.max_msg_fds.is_some(),
            max_data_xfer_size: client.max_data_xfer_size.is_some(),
            pgsizes: client.pgsizes.is_some(),
            max_dma_maps: client.max_dma_maps.is_some(),
        },
    })
}

impl Negotiated {
    /// Appends the reply's capability JSON, NUL included, to `out`.
    ///
    /// The JSON is written compactly because QEMU receives the reply into a
    /// buffer the size of its own request, and refuses a larger reply.
    pub fn write_capabilities(&self, out: &mut Vec<u8>) {
        let mut entries: [Option<(&str, u64)>; 4] = [None; 4];
        if self.proposed.max_msg_fds {
            entries[0] = Some(("max_msg_fds", u64::from(self.server_max_msg_fds)));
        }
        if self.proposed.max_data_xfer_size {
            entries[1] = Some(("max_data_xfer_size", u64::from(self.max_data_xfer_size)));
        }
        if self.proposed.pgsizes {
            entries[2] = Some(("pgsizes", self.pgsizes));
        }
        if self.proposed.max_dma_maps {
            entries[3] = Some(("max_dma_maps", u64::from(self.max_dma_maps)));
        }
        out.extend_from_slice(b"{\"capabilities\":{");
        for (i, (key, value)) in entries.iter().flatten().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Writing to a Vec cannot fail.
            let _ = write!(out, "\"{key}\":{value}");
        }
        out.extend_from_slice(b"}}\0");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_PROPOSAL: &[u8] = b"{\"capabilities\":{\"migration\":{\"pgsize\":4096,\"max_bitmap_size\":268435456},\"max_msg_fds\":16,\"max_data_xfer_size\":1048576,\"pgsizes\":4096,\"max_dma_maps\":65535,\"write_multiple\":true}}\0";

    #[test]
    fn parses_qemu_proposal() {
        let caps = ClientCapabilities::parse(QEMU_PROPOSAL).unwrap();
        assert_eq!(
            caps,
            ClientCapabilities {
                max_msg_fds: Some(16),
                max_data_xfer_size: Some(1 << 20),
                pgsizes: Some(4096),
                max_dma_maps: Some(65535),
                migration: true,
                write_multiple: Some(true),
                twin_socket: None,
            }
        );
    }

    #[test]
    fn empty_string_means_defaults() {
        assert_eq!(
            ClientCapabilities::parse(b"").unwrap(),
            ClientCapabilities::default()
        );
        assert_eq!(
            ClientCapabilities::parse(b"{}\0").unwrap(),
            ClientCapabilities::default()
        );
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let caps = ClientCapabilities::parse(
            b"{\"capabilities\":{\"frobnicate\":[1],\"pgsizes\":8192},\"x\":1}\0",
        )
        .unwrap();
        assert_eq!(caps.pgsizes, Some(8192));
    }

    #[test]
    fn malformed_strings_are_rejected() {
        for bad in [
            &b"{}"[..],
            b"{}\0junk",
            b"{\xff}\0",
            b"{\"capabilities\":\0",
            b"[]\0",
            b"{\"capabilities\":3}\0",
            b"{\"capabilities\":{\"max_msg_fds\":\"16\"}}\0",
            b"{\"capabilities\":{\"max_msg_fds\":-1}}\0",
            b"{\"capabilities\":{\"pgsizes\":4096.5}}\0",
            b"{\"capabilities\":{\"write_multiple\":1}}\0",
            b"{\"capabilities\":{\"migration\":true}}\0",
            b"{\"capabilities\":{\"twin_socket\":{\"supported\":\"yes\"}}}\0",
        ] {
            let err = ClientCapabilities::parse(bad).unwrap_err();
            assert_eq!(err.errno(), 22, "{bad:?}");
        }
    }

    #[test]
    fn negotiation_takes_the_smaller_limits() {
        let client = ClientCapabilities {
            max_msg_fds: Some(8),
            max_data_xfer_size: Some(4096),
            pgsizes: Some(4096 | 2 << 20),
            max_dma_maps: Some(100_000),
            ..Default::default()
        };
        let n = negotiate(0, 3, &client, &ServerCapabilities::default()).unwrap();
        assert_eq!(n.minor, 0);
        assert_eq!(n.client_max_msg_fds, 8);
        assert_eq!(n.server_max_msg_fds, 16);
        assert_eq!(n.max_data_xfer_size, 4096);
        assert_eq!(n.pgsizes, 4096);
        assert_eq!(n.max_dma_maps, 65535);
    }

    #[test]
    fn major_other_than_zero_is_unsupported() {
        let err = negotiate(
            1,
            0,
            &ClientCapabilities::default(),
            &ServerCapabilities::default(),
        )
        .unwrap_err();
        assert_eq!(err.errno(), 95);
    }

    #[test]
    fn no_common_page_size_is_incompatible() {
        let client = ClientCapabilities {
            pgsizes: Some(2 << 20),
            ..Default::default()
        };
        let err = negotiate(0, 0, &client, &ServerCapabilities::default()).unwrap_err();
        assert!(matches!(err, ProtocolError::IncompatibleCapabilities(_)));
    }

    #[test]
    fn reply_answers_only_proposed_capabilities() {
        let caps = ClientCapabilities::parse(QEMU_PROPOSAL).unwrap();
        let n = negotiate(0, 0, &caps, &ServerCapabilities::default()).unwrap();
        let mut out = Vec::new();
        n.write_capabilities(&mut out);
        assert_eq!(
            out,
            b"{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576,\"pgsizes\":4096,\"max_dma_maps\":65535}}\0"
        );
        let only_fds = ClientCapabilities {
            max_msg_fds: Some(4),
            ..Default::default()
        };
        let n = negotiate(0, 0, &only_fds, &ServerCapabilities::default()).unwrap();
        out.clear();
        n.write_capabilities(&mut out);
        assert_eq!(out, b"{\"capabilities\":{\"max_msg_fds\":16}}\0");
    }

    #[test]
    fn reply_is_shorter_than_qemus_request() {
        let caps = ClientCapabilities::parse(QEMU_PROPOSAL).unwrap();
        let n = negotiate(0, 0, &caps, &ServerCapabilities::default()).unwrap();
        let mut out = Vec::new();
        n.write_capabilities(&mut out);
        assert!(out.len() <= QEMU_PROPOSAL.len());
    }
}
