//! Checks of the keys that decide who can reach the daemon: the owner,
//! group and mode of the vGPU sockets (top level and per `[[vgpu]]`), the
//! control socket's group, and the metrics listener.

use std::net::SocketAddr;

use toml::Spanned;

use super::Checker;
use super::raw::RawMode;
use crate::access::{self, AccessError, SocketAccess};

/// A `socket_owner`, `socket_group`, `socket_mode` triple as written,
/// top level or in a `[[vgpu]]`.
pub(super) struct RawAccess<'r> {
    pub owner: Option<&'r Spanned<String>>,
    pub group: Option<&'r Spanned<String>>,
    pub mode: Option<&'r Spanned<RawMode>>,
}

impl Checker<'_> {
    /// `defaults` with the keys of `raw` applied; a key in error is
    /// reported at its value and leaves the default in place.
    pub(super) fn socket_access(
        &mut self,
        raw: RawAccess<'_>,
        defaults: &SocketAccess,
    ) -> SocketAccess {
        let mut access = *defaults;
        if let Some(owner) = raw.owner {
            match access::resolve_owner(owner.get_ref()) {
                Ok(uid) => access.owner = Some(uid),
                Err(e) => self.access_error(owner.span(), &e),
            }
        }
        if let Some(group) = raw.group {
            match access::resolve_group(group.get_ref()) {
                Ok(gid) => access.group = Some(gid),
                Err(e) => self.access_error(group.span(), &e),
            }
        }
        if let Some(mode) = raw.mode {
            match mode.get_ref() {
                RawMode::Text(text) => match access::parse_mode(text) {
                    Ok(bits) => access.mode = bits,
                    Err(e) => self.access_error(mode.span(), &e),
                },
                RawMode::Number(n) => self.error(
                    mode.span(),
                    format!("socket_mode {n} is a number, not a string of octal digits"),
                    Some(format!(
                        "quote it: socket_mode = \"{}\"",
                        if (0..=0o7777).contains(n) {
                            format!("{n:04o}")
                        } else {
                            "0660".into()
                        }
                    )),
                ),
            }
        }
        access
    }

    /// The control socket's access: private, or shared with `group`.
    pub(super) fn control_access(&mut self, group: Option<&Spanned<String>>) -> SocketAccess {
        let Some(group) = group else {
            return SocketAccess::control(None);
        };
        match access::resolve_group(group.get_ref()) {
            Ok(gid) => SocketAccess::control(Some(gid)),
            Err(e) => {
                self.access_error(group.span(), &e);
                SocketAccess::control(None)
            }
        }
    }

    /// `metrics_listen` and `metrics_allow_remote`: an address that other
    /// hosts can reach must be asked for by name, because the metrics are
    /// served without authentication.
    pub(super) fn metrics(
        &mut self,
        listen: Option<&Spanned<String>>,
        allow_remote: Option<&Spanned<bool>>,
    ) -> (Option<SocketAddr>, bool) {
        let allow_remote = allow_remote.is_some_and(|a| *a.get_ref());
        let Some(listen) = listen else {
            return (None, allow_remote);
        };
        let addr = match listen.get_ref().parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(e) => {
                self.error(
                    listen.span(),
                    format!(
                        "metrics_listen \"{}\" is not an IP address and port: {e}",
                        listen.get_ref()
                    ),
                    Some(
                        "write IP:PORT (no host names), e.g. \"127.0.0.1:9464\" or \"[::1]:9464\""
                            .into(),
                    ),
                );
                return (None, allow_remote);
            }
        };
        if !addr.ip().to_canonical().is_loopback() && !allow_remote {
            self.error(
                listen.span(),
                format!("metrics_listen {addr} is reachable from other hosts"),
                Some(
                    "metrics are served without authentication: listen on 127.0.0.1, or set \
                     metrics_allow_remote = true to serve them to the network"
                        .into(),
                ),
            );
            return (None, allow_remote);
        }
        (Some(addr), allow_remote)
    }

    fn access_error(&mut self, span: std::ops::Range<usize>, e: &AccessError) {
        // A lookup failure's cause (an NSS error) is worth its line too.
        let problem = match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        };
        self.error(span, problem, Some(e.help().into()));
    }
}
