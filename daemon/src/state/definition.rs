//! One vGPU definition and its file: rendering it as TOML, and reading it
//! back with every problem located at `file:line:column`.
//!
//! The file is read as a table of spanned keys rather than through a
//! `deny_unknown_fields` struct, because serde stops at the first unknown
//! key or wrong type and an operator editing by hand should see them all.

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;
use uuid::Uuid;

use crate::config::{Diagnostic, Location, SourceMap};

use super::{MAX_FILE_BYTES, MAX_VALUE_BYTES};

/// A persistent vGPU: what `define` recorded and `start` creates from.
///
/// The strings are stored as the operator gave them; whether a profile,
/// GPU, user, group or mode exists or makes sense is checked by whoever
/// starts the vGPU. Here they are only refused when they could not be
/// written and read back as one line of a file: empty, longer than
/// [`MAX_VALUE_BYTES`], or holding a control character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// Names the file: `vgpus/<uuid>.toml`.
    pub uuid: Uuid,
    /// The profile's name.
    pub profile: String,
    /// The GPU's id; `None`: chosen when the vGPU starts.
    pub gpu: Option<String>,
    /// Start it whenever the daemon starts.
    pub auto: bool,
    /// A user name or numeric uid, as given.
    pub socket_owner: Option<String>,
    /// A group name or numeric gid, as given.
    pub socket_group: Option<String>,
    /// Octal digits, e.g. "0660", as given.
    pub socket_mode: Option<String>,
}

/// The keys of a definition file, in the order they are written.
pub const KEYS: [&str; 6] = [
    "profile",
    "gpu",
    "auto",
    "socket_owner",
    "socket_group",
    "socket_mode",
];

const HEADER: &str = "\
# A vGPU definition, written by vgpud; the file name is the vGPU's UUID.
# Change it with `vgpuctl modify`; edit it by hand only while vgpud is stopped.
";

impl Definition {
    /// The text of its file; refuses values [`Definition::check`] refuses,
    /// so that everything saved loads back.
    pub(super) fn render(&self) -> Result<String, String> {
        self.check()?;
        let mut text = String::from(HEADER);
        let mut line = |key: &str, value: toml::Value| {
            text.push_str(&format!("{key} = {value}\n"));
        };
        line("profile", self.profile.clone().into());
        if let Some(gpu) = &self.gpu {
            line("gpu", gpu.clone().into());
        }
        line("auto", self.auto.into());
        for (key, value) in [
            ("socket_owner", &self.socket_owner),
            ("socket_group", &self.socket_group),
            ("socket_mode", &self.socket_mode),
        ] {
            if let Some(value) = value {
                line(key, value.clone().into());
            }
        }
        Ok(text)
    }

    /// The first value that could not be saved, as a sentence.
    pub fn check(&self) -> Result<(), String> {
        let values = [
            ("profile", Some(&self.profile)),
            ("gpu", self.gpu.as_ref()),
            ("socket_owner", self.socket_owner.as_ref()),
            ("socket_group", self.socket_group.as_ref()),
            ("socket_mode", self.socket_mode.as_ref()),
        ];
        for (key, value) in values {
            if let Some(value) = value {
                check_value(key, value).map_err(|(problem, _)| problem)?;
            }
        }
        Ok(())
    }

    /// Reads the file of vGPU `uuid`; `path` only names it in messages.
    /// Returns every problem found, in line order.
    pub(super) fn parse(path: &Path, uuid: Uuid, bytes: &[u8]) -> Result<Self, Vec<Diagnostic>> {
        let at_start = |problem: String, help: &str| {
            vec![Diagnostic {
                location: Location {
                    path: path.to_path_buf(),
                    line: 1,
                    column: 1,
                },
                problem,
                help: Some(help.into()),
            }]
        };
        if bytes.len() > MAX_FILE_BYTES {
            return Err(at_start(
                format!(
                    "the file is more than {MAX_FILE_BYTES} bytes, the most a definition may have"
                ),
                "it is not a file vgpud wrote: move it away, or define the vGPU again",
            ));
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                // The valid prefix is text, so it locates the bad byte.
                let valid = &bytes[..e.valid_up_to()];
                let prefix = std::str::from_utf8(valid).unwrap_or_default();
                let map = SourceMap::new(path, prefix);
                return Err(vec![map.diagnostic(
                    prefix.len()..prefix.len(),
                    format!("byte 0x{:02x} is not UTF-8 text", bytes[e.valid_up_to()]),
                    Some("definitions are UTF-8 TOML: rewrite the value".into()),
                )]);
            }
        };
        let map = SourceMap::new(path, text);
        let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
            toml::from_str(text).map_err(|e| {
                vec![map.diagnostic(
                    e.span().unwrap_or(0..0),
                    // One line per problem: the parser's own message
                    // may span several.
                    e.message().trim_end().replace('\n', "; "),
                    None,
                )]
            })?;

        let mut problems = Vec::new();
        let mut definition = Definition {
            uuid,
            profile: String::new(),
            gpu: None,
            auto: false,
            socket_owner: None,
            socket_group: None,
            socket_mode: None,
        };
        let mut has_profile = false;
        for (key, value) in &table {
            let slot = match key.get_ref().as_str() {
                "auto" => {
                    match value.get_ref() {
                        toml::Value::Boolean(b) => definition.auto = *b,
                        other => problems.push(map.diagnostic(
                            value.span(),
                            format!("auto must be true or false, found {}", other.type_str()),
                            Some("write auto = true or auto = false".into()),
                        )),
                    }
                    continue;
                }
                "profile" => {
                    has_profile = true;
                    None
                }
                "gpu" => Some(&mut definition.gpu),
                "socket_owner" => Some(&mut definition.socket_owner),
                "socket_group" => Some(&mut definition.socket_group),
                "socket_mode" => Some(&mut definition.socket_mode),
                unknown => {
                    problems.push(map.diagnostic(
                        key.span(),
                        format!("unknown key `{unknown}`"),
                        Some(format!("the keys are {}", KEYS.join(", "))),
                    ));
                    continue;
                }
            };
            let name = key.get_ref();
            let toml::Value::String(string) = value.get_ref() else {
                problems.push(map.diagnostic(
                    value.span(),
                    format!(
                        "{name} must be a string, found {}",
                        value.get_ref().type_str()
                    ),
                    Some(format!("quote it: {name} = \"...\"")),
                ));
                continue;
            };
            if let Err((problem, offset)) = check_value(name, string) {
                // Point into the string when the quotes hold it verbatim.
                let span = value.span();
                let inner = span.start + 1 + offset;
                let verbatim = text.get(span.start + 1..span.end.saturating_sub(1)) == Some(string);
                let span = if verbatim { inner..inner } else { span };
                problems.push(map.diagnostic(span, problem, None));
                continue;
            }
            match slot {
                Some(slot) => *slot = Some(string.clone()),
                None => definition.profile = string.clone(),
            }
        }
        if !has_profile {
            problems.push(map.diagnostic(
                0..0,
                "missing key `profile`",
                Some("add profile = \"<name>\", the profile it was defined with".into()),
            ));
        }
        if problems.is_empty() {
            Ok(definition)
        } else {
            problems.sort_by_key(|d| (d.location.line, d.location.column));
            Err(problems)
        }
    }
}

/// Why `value` of `key` could not be stored, and the byte offset to point
/// at.
fn check_value(key: &str, value: &str) -> Result<(), (String, usize)> {
    if value.is_empty() {
        let help = if key == "profile" {
            "name the profile"
        } else {
            "leave the key out instead"
        };
        return Err((format!("{key} is empty: {help}"), 0));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err((
            format!(
                "{key} is {} bytes long, more than the {MAX_VALUE_BYTES} a value may have",
                value.len()
            ),
            0,
        ));
    }
    if let Some((at, c)) = value.char_indices().find(|(_, c)| c.is_control()) {
        return Err((
            format!(
                "{key} holds the control character U+{:04X}, which a value may not",
                u32::from(c)
            ),
            at,
        ));
    }
    Ok(())
}
