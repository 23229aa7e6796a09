//! Who may connect to a socket the daemon serves: its owner, group and
//! file mode, resolved from the strings of the configuration file or of a
//! control request (`socket_owner`, `socket_group`, `socket_mode`).
//!
//! Users and groups are named or numeric. Names are looked up in the
//! system's user database when the string is resolved, so an unknown name
//! is refused there and then (at start-up, or in the reply to the request)
//! rather than when a socket is bound. Numeric ids are taken as they are:
//! an id with no name (common in containers) is a valid owner.

use std::fmt;

use nix::unistd::{Group, User};

/// Mode of a vGPU socket when nothing says otherwise: the VMM's user or
/// group must reach it.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// Mode of the control socket without `control_group`: the daemon's user
/// only.
pub const CONTROL_MODE_PRIVATE: u32 = 0o600;
/// Mode of the control socket with `control_group`: the daemon's user and
/// that group.
pub const CONTROL_MODE_GROUP: u32 = 0o660;

/// The owner, group and mode a socket is given before anyone can reach it
/// (see [`crate::socket::bind_unix`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketAccess {
    /// The owning uid; `None` keeps the daemon's own user.
    pub owner: Option<u32>,
    /// The owning gid; `None` keeps the daemon's primary group.
    pub group: Option<u32>,
    /// Permission bits (within 0o777, owner read and write always set when
    /// built by [`SocketAccess::resolve`]).
    pub mode: u32,
}

impl SocketAccess {
    /// A vGPU socket when the configuration file says nothing.
    pub const VGPU_DEFAULT: SocketAccess = SocketAccess {
        owner: None,
        group: None,
        mode: DEFAULT_SOCKET_MODE,
    };

    /// The control socket: the daemon's user only, or also the members of
    /// `group`.
    pub fn control(group: Option<u32>) -> SocketAccess {
        SocketAccess {
            owner: None,
            group,
            mode: if group.is_some() {
                CONTROL_MODE_GROUP
            } else {
                CONTROL_MODE_PRIVATE
            },
        }
    }

    /// `defaults` with each given string applied over it: a user name or
    /// uid, a group name or gid, octal mode digits. A `None` keeps the
    /// default's value. The first string that does not resolve is the
    /// error, whose message can be sent to a client as it is.
    pub fn resolve(
        owner: Option<&str>,
        group: Option<&str>,
        mode: Option<&str>,
        defaults: &SocketAccess,
    ) -> Result<SocketAccess, AccessError> {
        Ok(SocketAccess {
            owner: match owner {
                Some(owner) => Some(resolve_owner(owner)?),
                None => defaults.owner,
            },
            group: match group {
                Some(group) => Some(resolve_group(group)?),
                None => defaults.group,
            },
            mode: match mode {
                Some(mode) => parse_mode(mode)?,
                None => defaults.mode,
            },
        })
    }
}

impl fmt::Display for SocketAccess {
    /// `owner 107, group 110, mode 0660`, with "daemon's" for unset ids.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.owner {
            Some(uid) => write!(f, "owner {uid}, ")?,
            None => write!(f, "owner the daemon's, ")?,
        }
        match self.group {
            Some(gid) => write!(f, "group {gid}, ")?,
            None => write!(f, "group the daemon's, ")?,
        }
        write!(f, "mode {:04o}", self.mode)
    }
}

/// Why an owner, group or mode string was refused. The messages name the
/// key and the value, and [`AccessError::help`] says what would fix it.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("the user name is empty")]
    EmptyOwner,
    #[error("the group name is empty")]
    EmptyGroup,
    #[error("user \"{name}\" does not exist on this machine")]
    UnknownUser { name: String },
    #[error("group \"{name}\" does not exist on this machine")]
    UnknownGroup { name: String },
    /// The user database could not be read (not "no such name").
    #[error("cannot look up user \"{name}\"")]
    UserLookup {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot look up group \"{name}\"")]
    GroupLookup {
        name: String,
        #[source]
        source: nix::Error,
    },
    /// A numeric id that is not a valid uid or gid (too large, or the
    /// "no change" value 4294967295 of chown).
    #[error("{id} is not a valid user or group id")]
    BadId { id: String },
    #[error("socket_mode \"{mode}\" is not an octal mode")]
    NotOctal { mode: String },
    #[error("socket_mode \"{mode}\" sets bits outside 0777 (setuid, setgid or sticky)")]
    ExtraBits { mode: String },
    #[error("socket_mode \"{mode}\" does not give the owner read and write")]
    OwnerLocked { mode: String },
}

impl AccessError {
    /// What would fix it.
    pub fn help(&self) -> &'static str {
        match self {
            AccessError::EmptyOwner | AccessError::EmptyGroup => {
                "leave the key out to keep the default, or name one"
            }
            AccessError::UnknownUser { .. } => {
                "create the user first (e.g. the user QEMU runs as), fix the name, or give a numeric uid"
            }
            AccessError::UnknownGroup { .. } => {
                "create the group first, fix the name, or give a numeric gid"
            }
            AccessError::UserLookup { .. } | AccessError::GroupLookup { .. } => {
                "check the system's user database (/etc/passwd, /etc/group, NSS), or give a numeric id"
            }
            AccessError::BadId { .. } => "ids are 0 to 4294967294",
            AccessError::NotOctal { .. } | AccessError::ExtraBits { .. } => {
                "write 3 or 4 octal digits within 0777 as a string, e.g. socket_mode = \"0660\""
            }
            AccessError::OwnerLocked { .. } => {
                "the owner needs read and write (6) to connect, e.g. \"0600\" or \"0660\""
            }
        }
    }
}

/// A user name or a numeric uid.
pub fn resolve_owner(owner: &str) -> Result<u32, AccessError> {
    if owner.is_empty() {
        return Err(AccessError::EmptyOwner);
    }
    if let Some(id) = numeric_id(owner)? {
        return Ok(id);
    }
    match User::from_name(owner) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(AccessError::UnknownUser { name: owner.into() }),
        Err(source) => Err(AccessError::UserLookup {
            name: owner.into(),
            source,
        }),
    }
}

/// A group name or a numeric gid.
pub fn resolve_group(group: &str) -> Result<u32, AccessError> {
    if group.is_empty() {
        return Err(AccessError::EmptyGroup);
    }
    if let Some(id) = numeric_id(group)? {
        return Ok(id);
    }
    match Group::from_name(group) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(AccessError::UnknownGroup { name: group.into() }),
        Err(source) => Err(AccessError::GroupLookup {
            name: group.into(),
            source,
        }),
    }
}

/// Octal digits (1 to 4, an optional leading `0` included) within 0o777,
/// with read and write for the owner.
pub fn parse_mode(mode: &str) -> Result<u32, AccessError> {
    let not_octal = || AccessError::NotOctal { mode: mode.into() };
    if mode.is_empty() || mode.len() > 4 || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(not_octal());
    }
    let bits = u32::from_str_radix(mode, 8).map_err(|_| not_octal())?;
    if bits & !0o777 != 0 {
        return Err(AccessError::ExtraBits { mode: mode.into() });
    }
    if bits & 0o600 != 0o600 {
        return Err(AccessError::OwnerLocked { mode: mode.into() });
    }
    Ok(bits)
}

/// `Some(id)` if `text` is all digits; names never are (useradd refuses
/// them), so there is no ambiguity.
fn numeric_id(text: &str) -> Result<Option<u32>, AccessError> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match text.parse::<u32>() {
        Ok(id) if id != u32::MAX => Ok(Some(id)),
        _ => Err(AccessError::BadId { id: text.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unset_strings_keep_the_defaults() {
        let defaults = SocketAccess {
            owner: Some(7),
            group: Some(8),
            mode: 0o640,
        };
        assert_eq!(
            SocketAccess::resolve(None, None, None, &defaults).unwrap(),
            defaults
        );
    }

    #[test]
    fn given_strings_override_each_default() {
        let access = SocketAccess::resolve(
            Some("107"),
            Some("0"),
            Some("0600"),
            &SocketAccess::VGPU_DEFAULT,
        )
        .unwrap();
        assert_eq!(
            access,
            SocketAccess {
                owner: Some(107),
                group: Some(0),
                mode: 0o600
            }
        );
    }

    #[test]
    fn names_resolve_through_the_user_database() {
        // root is uid and gid 0 on every Linux system.
        assert_eq!(resolve_owner("root").unwrap(), 0);
        assert_eq!(resolve_group("root").unwrap(), 0);
    }

    #[test]
    fn unknown_names_are_refused_with_the_name() {
        let e = resolve_owner("no-such-user-vgpud").unwrap_err();
        assert_eq!(
            e.to_string(),
            "user \"no-such-user-vgpud\" does not exist on this machine"
        );
        let e = resolve_group("no-such-group-vgpud").unwrap_err();
        assert!(matches!(e, AccessError::UnknownGroup { .. }), "{e}");
    }

    #[test]
    fn ids_out_of_range_are_refused() {
        assert!(matches!(
            resolve_owner("4294967295"),
            Err(AccessError::BadId { .. })
        ));
        assert!(matches!(
            resolve_group("99999999999"),
            Err(AccessError::BadId { .. })
        ));
        assert_eq!(resolve_owner("4294967294").unwrap(), 4294967294);
    }

    #[test]
    fn empty_names_are_refused() {
        assert!(matches!(resolve_owner(""), Err(AccessError::EmptyOwner)));
        assert!(matches!(resolve_group(""), Err(AccessError::EmptyGroup)));
    }

    #[test]
    fn modes_are_octal_within_0777_with_owner_read_write() {
        assert_eq!(parse_mode("0660").unwrap(), 0o660);
        assert_eq!(parse_mode("660").unwrap(), 0o660);
        assert_eq!(parse_mode("0600").unwrap(), 0o600);
        assert_eq!(parse_mode("777").unwrap(), 0o777);
        for bad in ["", "0o660", "66a", "0x1b0", "00660", "-660", " 660", "0688"] {
            assert!(
                matches!(parse_mode(bad), Err(AccessError::NotOctal { .. })),
                "{bad:?}"
            );
        }
        for extra in ["4660", "2660", "1777"] {
            assert!(
                matches!(parse_mode(extra), Err(AccessError::ExtraBits { .. })),
                "{extra}"
            );
        }
        for locked in ["0460", "0260", "0066", "0"] {
            assert!(
                matches!(parse_mode(locked), Err(AccessError::OwnerLocked { .. })),
                "{locked}"
            );
        }
    }

    #[test]
    fn control_access_opens_to_a_group_only_when_named() {
        assert_eq!(
            SocketAccess::control(None),
            SocketAccess {
                owner: None,
                group: None,
                mode: 0o600
            }
        );
        assert_eq!(SocketAccess::control(Some(5)).mode, 0o660);
    }

    proptest! {
        /// Whatever a client sends, resolving answers (no panic), and an
        /// accepted mode is within 0o777 with owner read and write.
        #[test]
        fn any_strings_resolve_or_are_refused(
            owner in "\\PC{0,12}",
            group in "[0-9a-z_-]{0,12}",
            mode in "\\PC{0,6}",
        ) {
            let resolved = SocketAccess::resolve(
                Some(&owner),
                Some(&group),
                Some(&mode),
                &SocketAccess::VGPU_DEFAULT,
            );
            if let Ok(access) = resolved {
                prop_assert_eq!(access.mode & !0o777, 0);
                prop_assert_eq!(access.mode & 0o600, 0o600);
            }
        }
    }
}
